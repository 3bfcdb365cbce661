"""Draw the figures of ``docs/method.md``: ``python docs/make_method_figures.py [--out DIR]``.

- ``method_kernels.png``: the five unit-scale kernels (density and distribution function), as
  :mod:`estimator.kernels` defines them.
- ``method_scales.png``: on the domain [−2.12, 2.64], the noise scale ε(x) and the inherent noise
  A(x) of SmoothGrad (fixed, α = 0.2) and AdaptGrad (adaptive, c = 0.95, both quantile rules),
  computed by :mod:`estimator.scales`; the legend gives each policy's mean over a uniform x.

Every curve comes from the estimator's own functions, so the pictures follow the code. Deterministic;
a few seconds on one CPU core. Needs matplotlib (a dependency of the package).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first
import numpy as np  # noqa: E402
from scipy import integrate  # noqa: E402

from estimator.kernels import KERNEL_NAMES, get_kernel  # noqa: E402
from estimator.scales import adaptive_scale, fixed_scale, inherent_noise  # noqa: E402

# The AdaptGrad paper's illustration: ImageNet-normalised pixels span about [−2.12, 2.64].
LOWER, UPPER = -2.12, 2.64
ALPHA = 0.2
CONFIDENCE = 0.95


def draw_kernels(path: Path) -> None:
    """Density and CDF of every kernel at unit scale, on ``t`` in [−4, 4]."""
    t = np.linspace(-4.0, 4.0, 801)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.4), dpi=100)
    for name in KERNEL_NAMES:
        kernel = get_kernel(name)
        left.plot(t, kernel.pdf(t), label=name)
        right.plot(t, kernel.cdf(t), label=name)
    left.set_title("density k(t), unit scale")
    right.set_title("distribution function CDF(t)")
    for axis in (left, right):
        axis.set_xlabel("t = u / ε")
        axis.grid(alpha=0.3)
    left.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _policies() -> dict[str, object]:
    """Name → function of ``x`` returning ε, for the three policies drawn."""
    fixed = float(fixed_scale(LOWER, UPPER, ALPHA))
    return {
        f"fixed, α = {ALPHA:g} (SmoothGrad)": lambda x: np.full_like(x, fixed),
        f"adaptive one_sided, c = {CONFIDENCE:g}": lambda x: adaptive_scale(x, LOWER, UPPER, CONFIDENCE),
        f"adaptive two_sided, c = {CONFIDENCE:g}": lambda x: adaptive_scale(
            x, LOWER, UPPER, CONFIDENCE, rule="two_sided"
        ),
    }


def _mean_inherent_noise(scale_of: object) -> float:
    """Mean of A(x) over x uniform on the domain (adaptive quadrature, as the tests do)."""

    def at(x: float) -> float:
        xs = np.array([x])
        return float(inherent_noise(xs, LOWER, UPPER, scale_of(xs))[0])  # type: ignore[operator]

    value, _ = integrate.quad(at, LOWER, UPPER, limit=200)
    return value / (UPPER - LOWER)


def draw_scales(path: Path) -> None:
    """ε(x) and A(x) across the domain for SmoothGrad and both AdaptGrad rules (gaussian kernel)."""
    x = np.linspace(LOWER, UPPER, 961)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.4), dpi=100)
    for label, scale_of in _policies().items():
        eps = scale_of(x)  # type: ignore[operator]
        left.plot(x, eps, label=label)
        mean = _mean_inherent_noise(scale_of)
        right.plot(x, inherent_noise(x, LOWER, UPPER, eps), label=f"{label}: mean {mean:.4f}")
    left.set_title("noise scale ε(x), gaussian kernel")
    right.set_title("inherent noise A(x)")
    right.set_yscale("log")
    right.set_ylim(1e-4, 1.0)
    for axis in (left, right):
        axis.set_xlabel(f"x in [{LOWER}, {UPPER}]")
        axis.grid(alpha=0.3)
    left.legend(fontsize=7)
    right.legend(fontsize=7, loc="lower center")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "images")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    draw_kernels(args.out / "method_kernels.png")
    draw_scales(args.out / "method_scales.png")
    print(f"wrote {args.out / 'method_kernels.png'} and {args.out / 'method_scales.png'}")


if __name__ == "__main__":
    main()
