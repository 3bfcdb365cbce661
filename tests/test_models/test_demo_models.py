"""The shipped demo models: configs load, models run, accuracy holds, samples map to model inputs."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from models.config import MODEL_FILE_NAME, ModelConfig
from models.demo import DEMO_MODELS, repository_path, sample_path
from models.demo.build import DIGITS_PNG_STD, png_value
from models.demo.data import BreastCancerData, DigitsData, breast_cancer_data, digits_data
from models.gradient_graph import build_gradient_model
from models.runtime import ForwardSession, GradientSession


@pytest.fixture(scope="module")
def digits() -> DigitsData:
    return digits_data()


@pytest.fixture(scope="module")
def cancer() -> BreastCancerData:
    return breast_cancer_data()


def _session(name: str) -> ForwardSession:
    return ForwardSession(repository_path() / name / MODEL_FILE_NAME, device="cpu")


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_config_matches_the_model_file(name: str) -> None:
    folder = repository_path() / name
    config = ModelConfig.load(folder)
    assert config.name == name
    model = onnx.load(folder / MODEL_FILE_NAME)
    onnx.checker.check_model(model)
    assert model.ir_version <= 10
    (graph_input,) = model.graph.input
    assert graph_input.name == config.input_name
    dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim[1:]]
    assert tuple(dims) == config.input_shape
    assert [o.name for o in model.graph.output] == ["probabilities"]
    # The explained tensor is the intermediate before the final Softmax.
    assert config.explained_tensor == "logits"
    softmax = [node for node in model.graph.node if node.output[0] == "probabilities"]
    assert softmax and softmax[0].op_type == "Softmax" and softmax[0].input[0] == "logits"
    assert np.all(config.lower_array() < config.upper_array())
    assert len(config.labels) == 10 if name == "digits_cnn" else len(config.labels) == 2


def test_digits_cnn_held_out_accuracy_from_the_shipped_file(digits: DigitsData) -> None:
    probabilities = _session("digits_cnn").run(DigitsData.to_input(digits.test_pixels))["probabilities"]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == digits.test_labels))
    assert len(digits.test_labels) == 449
    assert accuracy >= 0.95, accuracy
    config = ModelConfig.load(repository_path() / "digits_cnn")
    assert f"{accuracy:.4f}" in config.description


def test_breast_cancer_mlp_held_out_accuracy(cancer: BreastCancerData) -> None:
    probabilities = _session("breast_cancer_mlp").run(cancer.to_input(cancer.test_features))["probabilities"]
    accuracy = float(np.mean(probabilities.argmax(axis=1) == cancer.test_labels))
    assert accuracy >= 0.93, accuracy
    config = ModelConfig.load(repository_path() / "breast_cancer_mlp")
    assert config.feature_names == cancer.feature_names
    assert config.labels == ["malignant", "benign"]
    train = cancer.to_input(cancer.train_features)
    np.testing.assert_allclose(config.lower_array(), train.min(axis=0), rtol=1e-6)
    np.testing.assert_allclose(config.upper_array(), train.max(axis=0), rtol=1e-6)


def test_digit_pngs_load_to_the_exact_model_input(digits: DigitsData) -> None:
    config = ModelConfig.load(repository_path() / "digits_cnn")
    pre = config.preprocessing
    assert (pre.kind, pre.channels, pre.invert, pre.size, pre.std) == (
        "image",
        1,
        True,
        (8, 8),
        DIGITS_PNG_STD,
    )
    session = _session("digits_cnn")
    for digit in range(10):
        pixels = np.asarray(Image.open(sample_path(f"digit_{digit}.png")))
        assert pixels.shape == (8, 8) and pixels.dtype == np.uint8
        mean, std = np.float32(pre.mean), np.float32(pre.std)  # type: ignore[arg-type]
        loaded = ((255.0 - pixels.astype(np.float32)) * np.float32(pre.scale) - mean) / std
        index = int(np.flatnonzero(digits.test_labels == digit)[0])
        np.testing.assert_array_equal(png_value(digits.test_pixels[index]), pixels)
        np.testing.assert_array_equal(
            loaded[None], DigitsData.to_input(digits.test_pixels[index : index + 1])[0]
        )
        probabilities = session.run(loaded[None, None].astype(np.float32))["probabilities"]
        assert probabilities.shape == (1, 10)


def test_breast_cancer_csv_maps_to_the_model_input(cancer: BreastCancerData) -> None:
    config = ModelConfig.load(repository_path() / "breast_cancer_mlp")
    with sample_path("breast_cancer_rows.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == config.feature_names
    raw = np.array(rows[1:], dtype=np.float64)
    np.testing.assert_array_equal(raw, cancer.test_features[: len(raw)])
    mean = np.asarray(config.preprocessing.mean)
    std = np.asarray(config.preprocessing.std)
    np.testing.assert_allclose((raw - mean) / std, cancer.to_input(raw), rtol=1e-6, atol=1e-6)


def test_sample_path_rejects_unknown_names() -> None:
    with pytest.raises(FileNotFoundError, match="digit_0.png"):
        sample_path("digit_10.png")
    with pytest.raises(FileNotFoundError):
        sample_path("../digits_cnn/config.json")


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_demo_models_differentiate_at_the_logits(name: str) -> None:
    folder = repository_path() / name
    config = ModelConfig.load(folder)
    gradient = build_gradient_model(
        onnx.load(folder / MODEL_FILE_NAME), [config.input_name], config.explained_tensor
    )
    session = GradientSession(gradient, device="cpu")
    assert session.input_shape == config.input_shape
    assert session.output_shape == (len(config.labels),)
    rng = np.random.default_rng(0)
    x = rng.uniform(config.lower_array(), config.upper_array(), size=(4, *config.input_shape)).astype(
        np.float32
    )
    cotangents = np.eye(len(config.labels), dtype=np.float32)[rng.integers(0, len(config.labels), size=4)]
    result = session(x, cotangents)
    np.testing.assert_allclose(result.outputs, session.run_outputs(x)["logits"], rtol=1e-5, atol=1e-6)
    # Central differences in float64 of the float32 model along a random direction, loose tolerance.
    direction = rng.normal(size=x.shape).astype(np.float32)
    step = 1e-2
    plus = session.run_outputs((x + step * direction).astype(np.float32))["logits"].astype(np.float64)
    minus = session.run_outputs((x - step * direction).astype(np.float32))["logits"].astype(np.float64)
    numeric = ((plus - minus) * cotangents).sum(axis=1) / (2 * step)
    analytic = (result.gradients.astype(np.float64) * direction).reshape(4, -1).sum(axis=1)
    np.testing.assert_allclose(analytic, numeric, rtol=0.05, atol=0.05 * np.abs(numeric).max())


def test_build_script_retrains_and_writes_every_file(tmp_path: Path) -> None:
    from models.demo.build import main

    assert main(["--out", str(tmp_path), "--seed", "1"]) == 0
    for name in DEMO_MODELS:
        # Everything but the description (which quotes the accuracy of this seed) matches the shipped config.
        rebuilt = dataclasses.replace(ModelConfig.load(tmp_path / name), description="")
        assert rebuilt == dataclasses.replace(ModelConfig.load(repository_path() / name), description="")
        onnx.checker.check_model(onnx.load(tmp_path / name / MODEL_FILE_NAME))
    shipped = sorted(p.name for p in (repository_path() / "samples").iterdir())
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == shipped
    digits = ModelConfig.load(tmp_path / "digits_cnn")
    accuracy = float(digits.description.split("held-out accuracy ")[1].split()[0])
    assert accuracy >= 0.95
