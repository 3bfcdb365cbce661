"""Fixtures of the batch tests: a private gradient-graph cache and small datasets built at test time."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from models.demo import repository_path
from service.batch.model import BatchModel, resolve_model


@pytest.fixture(scope="session")
def batch_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("batch-graph-cache")


@pytest.fixture(scope="session")
def mlp(batch_cache: Path) -> BatchModel:
    return resolve_model("breast_cancer_mlp", repository=repository_path(), cache_dir=batch_cache)


@pytest.fixture(scope="session")
def cnn(batch_cache: Path) -> BatchModel:
    return resolve_model("digits_cnn", repository=repository_path(), cache_dir=batch_cache)


@pytest.fixture(scope="session")
def cancer_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 rows of the Wisconsin breast-cancer table (scikit-learn's bundled copy), header + a label column."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    path = tmp_path_factory.mktemp("tables") / "cancer.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*data.feature_names, "label"])
        for row, label in zip(data.data[:40], data.target[:40], strict=True):
            writer.writerow([*(f"{v:.6g}" for v in row), int(label)])
    return path


@pytest.fixture(scope="session")
def digits() -> np.ndarray:
    """24 of scikit-learn's 8×8 digits as the CNN's inputs ``(24, 1, 8, 8)`` in [0, 1]."""
    from sklearn.datasets import load_digits

    images = load_digits().images[:24] / 16.0
    return images.reshape(24, 1, 8, 8).astype(np.float32)
