"""Local files → model inputs: arrays, images through the config's preprocessing, CSV rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.config import ModelConfig, Preprocessing
from models.demo import repository_path, sample_path
from service.cli.inputs import (
    InputSpec,
    display_image,
    image_layout,
    load_inputs,
    preprocessing_from_dict,
    stack,
)
from service.cli.output import BadInputError

DIGITS = ModelConfig.load(repository_path() / "digits_cnn")
CANCER = ModelConfig.load(repository_path() / "breast_cancer_mlp")


def _spec(config: ModelConfig) -> InputSpec:
    return InputSpec(
        config.input_shape,
        config.preprocessing,
        tuple(config.feature_names),
        config.lower_array(),
        config.upper_array(),
    )


def test_digit_png_becomes_the_model_input_exactly(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 17, size=(8, 8))  # scikit-learn digits: 0..16
    Image.fromarray((255 - 15 * pixels).astype(np.uint8)).save(tmp_path / "digit.png")
    [item] = load_inputs([tmp_path / "digit.png"], _spec(DIGITS))
    assert item.kind == "image" and item.name == "digit"
    np.testing.assert_allclose(item.tensor, (pixels / 16.0).reshape(1, 8, 8), atol=1e-6)
    # Drawn back, the picture is the file again (dark ink on white paper).
    picture = display_image(item.tensor, _spec(DIGITS))
    assert picture is not None
    np.testing.assert_allclose(picture, (255 - 15 * pixels) / 255.0, atol=1e-6)


def test_bundled_digit_sample_is_in_range() -> None:
    [item] = load_inputs([sample_path("digit_3.png")], _spec(DIGITS))
    assert item.tensor.shape == (1, 8, 8) and item.tensor.min() >= 0.0 and item.tensor.max() <= 1.0
    assert item.tensor.max() > 0.5


def test_large_transparent_drawing_is_shrunk_on_white_and_clipped_to_the_domain(tmp_path: Path) -> None:
    drawing = np.zeros((64, 64, 4), dtype=np.uint8)  # fully transparent page...
    drawing[:, 24:40] = (0, 0, 0, 255)  # ...with one opaque black stroke over output columns 3 and 4
    drawing[:, 4:8] = (0, 0, 0, 255)  # and a thin one over half of output column 0
    Image.fromarray(drawing, "RGBA").save(tmp_path / "one.png")
    [item] = load_inputs([tmp_path / "one.png"], _spec(DIGITS))
    tensor = item.tensor[0]
    # Pure black is 255/240 after inversion: outside the model's [0, 1], so clipped to 1.
    np.testing.assert_array_equal(tensor[:, 3:5], 1.0)
    np.testing.assert_allclose(tensor[:, 0], 0.5 * 255 / 240, atol=0.01)  # area averaging keeps thin strokes
    np.testing.assert_array_equal(tensor[:, 5:], 0.0)  # the transparent page is blank paper, not ink


@pytest.mark.parametrize("shape", [(3, 4, 5), (4, 5, 3)])
def test_rgb_images_follow_the_layout_and_per_channel_normalisation(
    tmp_path: Path, shape: tuple[int, ...]
) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, size=(4, 5, 3)).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(tmp_path / "photo.png")
    pre = Preprocessing(
        kind="image", size=(4, 5), channels=3, scale=1 / 255, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.5]
    )
    spec = InputSpec(shape, pre)
    [item] = load_inputs([tmp_path / "photo.png"], spec)
    expected = (rgb / 255.0 - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.25, 0.5])
    if shape[0] == 3:
        expected = np.moveaxis(expected, -1, 0)
    np.testing.assert_allclose(item.tensor, expected, atol=1e-5)
    picture = display_image(item.tensor, spec)
    assert picture is not None
    np.testing.assert_allclose(picture, rgb / 255.0, atol=1e-5)


def test_image_layouts() -> None:
    assert image_layout((1, 8, 8)) == (0, 8, 8)
    assert image_layout((224, 224, 3), 3) == (2, 224, 224)
    assert image_layout((28, 28)) == (None, 28, 28)
    assert image_layout((30,)) is None
    assert image_layout((2, 3, 7)) is None


def test_arrays_one_batch_squeezed_and_npz(tmp_path: Path) -> None:
    spec = _spec(DIGITS)
    rng = np.random.default_rng(2)
    np.save(tmp_path / "one.npy", rng.random((1, 8, 8)))
    np.save(tmp_path / "flat.npy", rng.random((8, 8)))
    np.save(tmp_path / "batch.npy", rng.random((3, 1, 8, 8)))
    np.savez(tmp_path / "pack.npz", b=rng.random((1, 8, 8)), a=rng.random((2, 8, 8)))
    loaded = load_inputs([tmp_path / n for n in ("one.npy", "flat.npy", "batch.npy", "pack.npz")], spec)
    assert [item.name for item in loaded] == [
        "one",
        "flat",
        "batch_0",
        "batch_1",
        "batch_2",
        "pack_a_0",
        "pack_a_1",
        "pack_b",
    ]
    assert stack(loaded).shape == (8, 1, 8, 8) and stack(loaded).dtype == np.float32


def test_same_stem_twice_gets_distinct_names(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    np.save(tmp_path / "a.npy", np.zeros((1, 8, 8)))
    np.save(tmp_path / "x" / "a.npy", np.zeros((1, 8, 8)))
    names = [item.name for item in load_inputs([tmp_path / "a.npy", tmp_path / "x" / "a.npy"], _spec(DIGITS))]
    assert names == ["a", "a_2"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (np.zeros((2, 9, 9)), r"expected shape \(1, 8, 8\) or \(batch, \*\(1, 8, 8\)\), got \(2, 9, 9\)"),
        (np.array([["a"] * 8] * 8), "expected a numeric array"),
        (np.full((1, 8, 8), np.nan), "finite"),
    ],
)
def test_bad_arrays_name_expected_and_actual(tmp_path: Path, content: np.ndarray, message: str) -> None:
    np.save(tmp_path / "bad.npy", content)
    with pytest.raises(BadInputError, match=message):
        load_inputs([tmp_path / "bad.npy"], _spec(DIGITS))


def test_missing_folder_unknown_suffix_and_broken_files(tmp_path: Path) -> None:
    spec = _spec(DIGITS)
    with pytest.raises(BadInputError, match="does not exist"):
        load_inputs([tmp_path / "nope.png"], spec)
    with pytest.raises(BadInputError, match="is a folder"):
        load_inputs([tmp_path], spec)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(BadInputError, match=r"expected a file ending in .*got '.txt'"):
        load_inputs([tmp_path / "notes.txt"], spec)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(BadInputError, match="not a readable image"):
        load_inputs([tmp_path / "broken.png"], spec)
    with pytest.raises(BadInputError, match="is an image, but the model's input shape"):
        load_inputs([sample_path("digit_3.png")], _spec(CANCER))


def test_bundled_csv_rows_are_standardised_by_the_config() -> None:
    rows = load_inputs([sample_path("breast_cancer_rows.csv")], _spec(CANCER))
    assert [item.name for item in rows][:2] == ["breast_cancer_rows_row1", "breast_cancer_rows_row2"]
    first = rows[0]
    assert first.kind == "tabular" and first.tensor.shape == (30,)
    assert first.raw_features is not None and first.raw_features[0] == pytest.approx(17.99)
    mean, std = np.asarray(CANCER.preprocessing.mean), np.asarray(CANCER.preprocessing.std)
    np.testing.assert_allclose(first.tensor, (first.raw_features - mean) / std, rtol=1e-5)


def test_csv_header_maps_columns_by_name(tmp_path: Path) -> None:
    spec = InputSpec((3,), Preprocessing(kind="tabular"), ("Age", "body mass", "dose"))
    (tmp_path / "t.csv").write_text("label,dose,Body_Mass,age\n1,3.0,2.0,1.0\n# a comment\n\n0,6,5,4\n")
    rows = load_inputs([tmp_path / "t.csv"], spec)
    np.testing.assert_array_equal(stack(rows), [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])


def test_csv_errors_name_line_and_feature(tmp_path: Path) -> None:
    spec = InputSpec((3,), Preprocessing(kind="tabular"), ("a", "b", "c"))
    cases = {
        "a,b\n1,2\n": "lacks 1 of the model's features: 'c'",
        "1,2\n": "line 1: expected 3 values",
        "a,b,c\n1,x,3\n": "line 2, b: expected a number, got 'x'",
        "a,b,c\n": "header but no data rows",
        "": "holds no rows",
    }
    for index, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"case{index}.csv"
        path.write_text(text)
        with pytest.raises(BadInputError, match=message):
            load_inputs([path], spec)


def test_preprocessing_from_a_wire_dict_keeps_defaults_for_unset_values() -> None:
    pre = preprocessing_from_dict(
        {"kind": "", "size": None, "mean": [], "std": [2.0, 3.0], "channels": 3, "future": 1}
    )
    assert pre == Preprocessing(kind="tensor", channels=3, std=[2.0, 3.0])
    assert preprocessing_from_dict({"size": [8, 8]}).size == (8, 8)
