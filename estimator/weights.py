"""NoiseGrad weight draws (Bykov et al. 2022, "NoiseGrad: enhancing explanations by introducing
stochasticity to model weights"; docs/method.md §7).

Draw ``m`` multiplies each perturbable weight tensor by ``1 + σ_w z``, ``z ~ N(0, 1)``, always starting
from the clean tensors: the result is a dict of *new* arrays passed as ``weight_overrides``, so the
model's weights are never mutated and draws never compound (two defects of the reference code).
Imports numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase

import numpy as np

from .errors import InvalidArgumentError
from .noise import WEIGHT_STREAM, stream_generator

__all__ = ["perturbable_weights", "weight_draw"]


def perturbable_weights(
    weights: Mapping[str, np.ndarray], exclude: tuple[str, ...]
) -> tuple[tuple[int, str], ...]:
    """The float weights a draw perturbs, as ``(stream index, name)`` in sorted name order.

    The stream index is the position among *all* sorted names, so excluding a tensor does not change
    the noise drawn for the others.

    Raises:
        InvalidArgumentError: nothing is left to perturb.
    """
    names = sorted(weights)
    chosen = tuple(
        (index, name)
        for index, name in enumerate(names)
        if np.issubdtype(np.asarray(weights[name]).dtype, np.floating)
        and not any(fnmatchcase(name, pattern) for pattern in exclude)
    )
    if not chosen:
        raise InvalidArgumentError(
            "weight_exclude: expected at least one float weight tensor left to perturb for parameter/fusion "
            f"noise; got {len(names)} weights exposed by the model, none left after excluding {list(exclude)}"
        )
    return chosen


def weight_draw(
    weights: Mapping[str, np.ndarray],
    chosen: tuple[tuple[int, str], ...],
    sigma: float,
    seed: int,
    draw: int,
) -> dict[str, np.ndarray]:
    """Weight overrides of draw ``draw``: ``w ⊙ (1 + σ z)`` per chosen tensor, in the tensor's dtype."""
    overrides: dict[str, np.ndarray] = {}
    for index, name in chosen:
        clean = np.asarray(weights[name])
        z = stream_generator(seed, WEIGHT_STREAM, index, draw).standard_normal(clean.shape)
        overrides[name] = (clean.astype(np.float64) * (1.0 + sigma * z)).astype(clean.dtype)
    return overrides
