"""Bounds computed in float64, inputs in float32: a pixel one rounding step beyond its bound is on it.

ImageNet normalisation ``(p − mean)/std`` gives bounds ``(0 − mean)/std`` and ``(1 − mean)/std`` in
float64; a black or white pixel normalised and sent as float32 lands up to one float32 step outside
them. AdaptGrad gives such a pixel zero noise, and the inherent noise must count it as inside the
domain (it once counted it as always outside: 0.428 reported instead of 0.0045 on a document).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from estimator import ClassTarget, Method, explain, inherent_noise
from estimator.scales import snap_to_domain
from estimator.testing import ReluShiftModel

MEAN = np.array([0.485, 0.456, 0.406])[:, None, None]
STD = np.array([0.229, 0.224, 0.225])[:, None, None]
LOWER = np.broadcast_to((0.0 - MEAN) / STD, (3, 16, 16))
UPPER = np.broadcast_to((1.0 - MEAN) / STD, (3, 16, 16))


def _document() -> np.ndarray:
    """Black ink on white paper, a few grey pixels; normalised in float64, sent as float32."""
    rng = np.random.default_rng(0)
    pixels = np.ones((1, 16, 16))
    pixels[:, 4:12, 7:9] = 0.0
    pixels[:, 2, :] = rng.uniform(0.2, 0.8, 16)
    return ((np.repeat(pixels, 3, axis=0) - MEAN) / STD).astype(np.float32)


def test_the_float32_pixels_really_land_outside_the_float64_bounds() -> None:
    x = _document().astype(np.float64)
    assert np.any(x < LOWER) and np.any(x > UPPER)


def test_adaptgrad_counts_pixels_within_rounding_of_a_bound_as_on_it() -> None:
    x = _document()
    model = ReluShiftModel(0.0, x.shape)
    result = explain(
        model, x, Method(scale="adaptive", samples=8), ClassTarget(0), lower=LOWER, upper=UPPER, seed=1
    )
    # Closed form (AdaptGrad, one-sided rule, c = 0.95): only the grey row can leave the domain.
    grey = x[:, 2, :].astype(np.float64)
    lo, hi = LOWER[:, 2, :], UPPER[:, 2, :]
    sigma = np.minimum(grey - lo, hi - grey) / norm.ppf((3 + 0.95) / 4)
    leave = 1.0 - (norm.cdf((hi - grey) / sigma) - norm.cdf((lo - grey) / sigma))
    assert abs(result.inherent_noise - leave.sum() / x.size) < 1e-12
    assert result.inherent_noise < 0.01


def test_inherent_noise_of_zero_scale_points_within_rounding_is_zero() -> None:
    x = _document().astype(np.float64)
    noise = inherent_noise(x, LOWER, UPPER, np.zeros(x.shape))
    assert np.all(noise == 0.0)
    # Clearly outside still counts as outside.
    assert inherent_noise(UPPER + 1e-3, LOWER, UPPER, np.zeros(x.shape)).min() == 1.0


def test_snap_to_domain_moves_only_rounding_excursions() -> None:
    x = _document().astype(np.float64)
    snapped = snap_to_domain(x, LOWER, UPPER)
    assert np.all((snapped >= LOWER) & (snapped <= UPPER))
    far = UPPER + 1e-3
    np.testing.assert_array_equal(snap_to_domain(far, LOWER, UPPER), far)
