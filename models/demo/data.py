"""The demo data sets and their seeded train / held-out splits.

Shared by the build script and the tests, so that the held-out accuracy can be re-measured from
the shipped model files. scikit-learn is imported lazily (it belongs to the ``torch`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "BREAST_CANCER_SPLIT_SEED",
    "DIGITS_SPLIT_SEED",
    "TEST_FRACTION",
    "BreastCancerData",
    "DigitsData",
    "breast_cancer_data",
    "digits_data",
]

DIGITS_SPLIT_SEED = 20240611
BREAST_CANCER_SPLIT_SEED = 20240612
TEST_FRACTION = 0.25


@dataclass(frozen=True)
class DigitsData:
    """scikit-learn's digits, split once.

    Attributes:
        train_pixels, test_pixels: ``(n, 8, 8)`` uint8 raw pixels, 0..16 (ink is high).
        train_labels, test_labels: ``(n,)`` int64 digit classes.
    """

    train_pixels: np.ndarray
    train_labels: np.ndarray
    test_pixels: np.ndarray
    test_labels: np.ndarray

    @staticmethod
    def to_input(pixels: np.ndarray) -> np.ndarray:
        """Raw ``(n, 8, 8)`` pixels 0..16 → model input ``(n, 1, 8, 8)`` float32 = pixel / 16."""
        return (np.asarray(pixels, dtype=np.float32) / np.float32(16.0))[:, None, :, :]


@dataclass(frozen=True)
class BreastCancerData:
    """The Wisconsin diagnostic breast-cancer data, split once, with training statistics.

    Attributes:
        train_features, test_features: ``(n, 30)`` float64 raw features.
        train_labels, test_labels: ``(n,)`` int64, 0 = malignant, 1 = benign.
        feature_names: the 30 feature names.
        label_names: ``["malignant", "benign"]``.
        mean, std: ``(30,)`` float64 training mean and population standard deviation.
    """

    train_features: np.ndarray
    train_labels: np.ndarray
    test_features: np.ndarray
    test_labels: np.ndarray
    feature_names: list[str]
    label_names: list[str]
    mean: np.ndarray
    std: np.ndarray

    def to_input(self, features: np.ndarray) -> np.ndarray:
        """Raw ``(n, 30)`` features → standardized model input, float32."""
        centred = np.asarray(features, dtype=np.float64) - self.mean
        standardized: np.ndarray = (centred / self.std).astype(np.float32)
        return standardized


def _split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * TEST_FRACTION))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def digits_data(seed: int = DIGITS_SPLIT_SEED) -> DigitsData:
    """Load the digits and split them with a permutation drawn from ``default_rng(seed)``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.asarray(bunch.images, dtype=np.float64).round().astype(np.uint8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    train, test = _split(len(labels), seed)
    return DigitsData(pixels[train], labels[train], pixels[test], labels[test])


def breast_cancer_data(seed: int = BREAST_CANCER_SPLIT_SEED) -> BreastCancerData:
    """Load the breast-cancer data and split it with a permutation drawn from ``default_rng(seed)``."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    features = np.asarray(bunch.data, dtype=np.float64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    train, test = _split(len(labels), seed)
    mean = features[train].mean(axis=0)
    std = features[train].std(axis=0)
    return BreastCancerData(
        features[train],
        labels[train],
        features[test],
        labels[test],
        [str(name) for name in bunch.feature_names],
        [str(name) for name in bunch.target_names],
        mean,
        std,
    )
