"""Targets for dense outputs: regions (sum or mean over indices, slices or a mask) and detections of
detector heads (class c of detection i), checked cotangent by cotangent and against torch autograd on
small real networks exported to ONNX."""

from __future__ import annotations

import numpy as np
import pytest

from estimator import DetectionTarget, InvalidArgumentError, Method, RegionTarget, explain
from estimator.method import ClassTarget
from estimator.targets import (
    check_target,
    detection_of,
    format_region,
    needs_clean_outputs,
    parse_region,
    region_indicator,
    resolve_target,
)

VANILLA = Method(mode="none")


# --------------------------------------------------------------------------------- region cotangents


def test_region_sum_is_the_indicator_of_the_slices() -> None:
    shape = (2, 30, 8)
    cotangent, index = resolve_target(RegionTarget(axes=(slice(None), slice(10, 20), 5)), shape)
    expected = np.zeros(shape, np.float32)
    expected[:, 10:20, 5] = 1.0
    assert index is None
    assert cotangent.dtype == np.float32
    np.testing.assert_array_equal(cotangent, expected)


def test_region_mean_divides_by_the_region_size() -> None:
    shape = (3, 4)
    cotangent, _ = resolve_target(RegionTarget(axes=(-1, slice(1, None)), reduction="mean"), shape)
    expected = np.zeros(shape, np.float32)
    expected[2, 1:] = 1.0 / 3.0
    np.testing.assert_allclose(cotangent, expected, rtol=1e-7)
    assert cotangent.sum() == pytest.approx(1.0)


def test_region_with_steps_and_missing_trailing_axes() -> None:
    shape = (6, 5)
    cotangent, _ = resolve_target(RegionTarget(axes=(slice(0, 6, 2),)), shape)
    expected = np.zeros(shape, np.float32)
    expected[0:6:2] = 1.0
    np.testing.assert_array_equal(cotangent, expected)
    whole, _ = resolve_target(RegionTarget(), shape)
    np.testing.assert_array_equal(whole, np.ones(shape, np.float32))


@pytest.mark.parametrize("mask_dtype", [bool, np.uint8, np.float32])
def test_region_mask_is_used_as_given(mask_dtype: type) -> None:
    mask = np.random.default_rng(0).random((4, 7)) > 0.6
    cotangent, index = resolve_target(RegionTarget(mask=mask.astype(mask_dtype)), (4, 7))
    np.testing.assert_array_equal(cotangent, mask.astype(np.float32))
    assert index is None
    mean, _ = resolve_target(RegionTarget(mask=mask.astype(mask_dtype), reduction="mean"), (4, 7))
    np.testing.assert_allclose(mean, mask / mask.sum(), rtol=1e-6)


def test_region_targets_need_no_clean_outputs() -> None:
    assert not needs_clean_outputs(RegionTarget(axes=(0,)))
    assert not needs_clean_outputs(DetectionTarget(index=3, class_index=1))
    assert needs_clean_outputs(DetectionTarget(index=3))
    assert needs_clean_outputs(DetectionTarget(class_index=1))
    assert needs_clean_outputs(DetectionTarget())


@pytest.mark.parametrize(
    ("target", "shape", "field", "fix"),
    [
        (RegionTarget(axes=(0, 0, 0)), (3, 4), "target.axes", "at most 2 entries"),
        (RegionTarget(axes=(3,)), (3, 4), "target.axes[0]", "[-3, 2]"),
        (RegionTarget(axes=(-4,)), (3, 4), "target.axes[0]", "[-3, 2]"),
        (RegionTarget(axes=(slice(None), slice(2, 9))), (3, 4), "target.axes[1].stop", "[-4, 4]"),
        (RegionTarget(axes=(slice(None, None, 0),)), (3, 4), "target.axes[0].step", "non-zero"),
        (RegionTarget(axes=(slice(2, 1),)), (3, 4), "selects no element", "check the slices"),
        (RegionTarget(axes=(1.5,)), (3, 4), "target.axes[0]", "integer"),  # type: ignore[arg-type]
        (RegionTarget(mask=np.ones((4, 3))), (3, 4), "target.mask", "(3, 4)"),
        (RegionTarget(mask=np.full((3, 4), 0.5)), (3, 4), "target.mask", "explicit cotangent"),
        (RegionTarget(mask=np.zeros((3, 4), bool)), (3, 4), "selects no element", "the mask"),
        (RegionTarget(axes=(0,), mask=np.ones((3, 4))), (3, 4), "either axes or a mask", "drop"),
        (RegionTarget(reduction="max"), (3, 4), "target.reduction", "sum, mean"),  # type: ignore[arg-type]
    ],
)
def test_bad_regions_name_the_field_and_the_fix(
    target: RegionTarget, shape: tuple[int, ...], field: str, fix: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        resolve_target(target, shape)
    assert field in str(caught.value) and fix in str(caught.value)
    with pytest.raises(InvalidArgumentError):
        check_target(target, shape)


def test_check_target_prefixes_the_field() -> None:
    with pytest.raises(InvalidArgumentError, match=r"target\.region\.axes\[1\]"):
        check_target(RegionTarget(axes=(0, 7)), (2, 3), "target.region")
    with pytest.raises(InvalidArgumentError, match="expected one of ClassTarget"):
        check_target("everything", (2, 3))


def test_parse_region_reads_numpy_indexing_text() -> None:
    assert parse_region(":,10:20,5") == (slice(None), slice(10, 20), 5)
    assert parse_region(" -1 , ::2, 3:") == (-1, slice(None, None, 2), slice(3, None))
    assert parse_region("") == () and parse_region(":") == (slice(None),)
    for text in (":,10:20,5", "-1,::2,3:", "0:4:-1"):
        assert format_region(parse_region(text)) == text
    assert format_region(()) == ":"


@pytest.mark.parametrize("text", ["a", "1:2:3:4", "1.5", "1,,2", ":x"])
def test_parse_region_rejects_what_is_not_an_index(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match="e.g. ':,10:20,5'"):
        parse_region(text)


# ------------------------------------------------------------------------------ detection cotangents


def _detector_outputs(classes: int = 3, anchors: int = 6, box_values: int = 4) -> np.ndarray:
    """``[box_values + classes, anchors]`` with known best detection (4) and classes."""
    rng = np.random.default_rng(1)
    outputs = np.zeros((box_values + classes, anchors), np.float32)
    outputs[:box_values] = rng.normal(size=(box_values, anchors)) * 50  # boxes: large, never scores
    scores = rng.uniform(0.0, 0.5, size=(classes, anchors))
    scores[2, 4] = 0.9  # the best detection overall: anchor 4, class 2
    scores[0, 1] = 0.8  # the best detection of class 0: anchor 1
    outputs[box_values:] = scores
    return outputs


def test_detection_defaults_pick_the_best_detection_and_its_class() -> None:
    outputs = _detector_outputs()
    target = DetectionTarget()
    cotangent, index = resolve_target(target, outputs.shape, outputs)
    expected = np.zeros_like(outputs)
    expected[4 + 2, 4] = 1.0
    np.testing.assert_array_equal(cotangent, expected)
    assert index == 2
    assert detection_of(target, cotangent) == (4, 2)


def test_detection_with_a_class_picks_that_class_best_detection() -> None:
    outputs = _detector_outputs()
    target = DetectionTarget(class_index=0)
    cotangent, index = resolve_target(target, outputs.shape, outputs)
    assert index == 0 and detection_of(target, cotangent) == (1, 0)
    assert cotangent[4 + 0, 1] == 1.0 and cotangent.sum() == 1.0


def test_detection_with_an_index_picks_its_highest_class() -> None:
    outputs = _detector_outputs()
    column = outputs[4:, 3]
    target = DetectionTarget(index=3)
    cotangent, index = resolve_target(target, outputs.shape, outputs)
    assert index == int(np.argmax(column)) and cotangent[4 + index, 3] == 1.0


def test_explicit_detection_needs_no_outputs() -> None:
    cotangent, index = resolve_target(DetectionTarget(index=5, class_index=1), (7, 6))
    assert index == 1 and cotangent[5, 5] == 1.0 and cotangent.sum() == 1.0


def test_anchors_first_with_objectness_and_a_leading_unit_axis() -> None:
    channels_first = _detector_outputs(box_values=5)  # (8, 6)
    outputs = channels_first.T[np.newaxis]  # (1, 6, 8): [A, 5 + C] with a leading axis of size 1
    target = DetectionTarget(layout="anchors_first", box_values=5)
    cotangent, index = resolve_target(target, outputs.shape, outputs)
    assert cotangent.shape == (1, 6, 8)
    expected = np.zeros_like(outputs)
    expected[0, 4, 5 + 2] = 1.0
    np.testing.assert_array_equal(cotangent, expected)
    assert index == 2 and detection_of(target, cotangent) == (4, 2)


@pytest.mark.parametrize(
    ("target", "shape", "field", "fix"),
    [
        (DetectionTarget(index=6), (7, 6), "target.index", "[0, 5]"),
        (DetectionTarget(index=-1), (7, 6), "target.index", "leave it unset"),
        (DetectionTarget(class_index=3), (7, 6), "target.class_index", "[0, 2]"),
        (DetectionTarget(box_values=7), (7, 6), "target.box_values", "fewer than the 7 values"),
        (DetectionTarget(box_values=-1), (7, 6), "target.box_values", ">= 0"),
        (DetectionTarget(layout="rows"), (7, 6), "target.layout", "channels_first, anchors_first"),  # type: ignore[arg-type]
        (DetectionTarget(), (84,), "target", "explain a region of it instead"),
        (DetectionTarget(), (2, 7, 6), "target", "leading axes of size 1"),
    ],
)
def test_bad_detections_name_the_field_and_the_range(
    target: DetectionTarget, shape: tuple[int, ...], field: str, fix: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        check_target(target, shape)
    message = str(caught.value)
    assert message.startswith(field) and fix in message


def test_bad_detection_is_refused_before_any_model_call() -> None:
    class CountingModel:
        input_shape, output_shape, bytes_per_sample, weights = (3,), (7, 6), 64, {}
        calls = 0

        def __call__(
            self, inputs: np.ndarray, cotangents: np.ndarray, weight_overrides: object = None
        ) -> None:
            CountingModel.calls += 1
            raise AssertionError("the model must not run")

    with pytest.raises(InvalidArgumentError, match="target.class_index"):
        explain(
            CountingModel(),
            np.zeros(3, np.float32),
            VANILLA,
            DetectionTarget(class_index=9),  # type: ignore[arg-type]
            lower=-1.0,
            upper=1.0,
            seed=0,
        )
    assert CountingModel.calls == 0


def test_region_indicator_is_shared_by_check_and_resolve() -> None:
    indicator = region_indicator(RegionTarget(axes=(1, slice(None, 2))), (2, 3))
    np.testing.assert_array_equal(indicator, [[False, False, False], [True, True, False]])


# ---------------------------------------------------------------------- against torch on real networks

torch = pytest.importorskip("torch")


def _session(module: torch.nn.Module, example: torch.Tensor) -> object:
    from models.export import export_torch_module
    from models.runtime import GradientSession

    _, gradient = export_torch_module(module, example, dynamo=False)
    return GradientSession(gradient, device="cpu")


def _seeded(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return module.eval()


def _torch_gradient(module: torch.nn.Module, x: np.ndarray, scalar: object) -> tuple[np.ndarray, np.ndarray]:
    inputs = torch.tensor(x[np.newaxis], requires_grad=True)
    outputs = module(inputs)[0]
    (gradient,) = torch.autograd.grad(scalar(outputs), inputs)  # type: ignore[operator]
    return gradient[0].numpy(), outputs.detach().numpy()


@pytest.fixture(scope="module")
def segmenter() -> tuple[torch.nn.Module, object]:
    """A fully convolutional net: ``(1, 12, 16)`` image → ``(2, 12, 16)`` class map."""
    module = _seeded(
        torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.Tanh(),
            torch.nn.Conv2d(4, 2, 3, padding=1),
        ),
        seed=3,
    )
    return module, _session(module, torch.zeros(2, 1, 12, 16))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_region_gradient_equals_torch_autograd_of_the_region_sum(
    segmenter: tuple[torch.nn.Module, object], reduction: str
) -> None:
    module, session = segmenter
    x = np.random.default_rng(2).uniform(0.0, 1.0, size=(1, 12, 16)).astype(np.float32)
    axes = parse_region("1, 3:7, 5:11")
    result = explain(
        session,
        x,
        VANILLA,
        RegionTarget(axes=axes, reduction=reduction),  # type: ignore[arg-type]
        lower=0.0,
        upper=1.0,
        seed=0,
    )

    def region(outputs: torch.Tensor) -> torch.Tensor:
        values = outputs[1, 3:7, 5:11]
        return values.sum() if reduction == "sum" else values.mean()

    expected, outputs = _torch_gradient(module, x, region)
    assert result.target_index is None
    np.testing.assert_allclose(result.outputs, outputs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.attribution, expected, rtol=1e-4, atol=1e-6)
    # Not the gradient of a single class index, which is what the default target would explain.
    predicted = explain(session, x, VANILLA, lower=0.0, upper=1.0, seed=0)  # type: ignore[arg-type]
    assert not np.allclose(predicted.attribution, result.attribution, atol=1e-4)


def test_mask_region_gradient_equals_torch_autograd(segmenter: tuple[torch.nn.Module, object]) -> None:
    module, session = segmenter
    x = np.random.default_rng(4).uniform(0.0, 1.0, size=(1, 12, 16)).astype(np.float32)
    mask = np.zeros((2, 12, 16), bool)
    mask[0, 2:9, 1:4] = True
    mask[1, 10, 12:] = True
    result = explain(session, x, VANILLA, RegionTarget(mask=mask), lower=0.0, upper=1.0, seed=0)  # type: ignore[arg-type]
    expected, _ = _torch_gradient(module, x, lambda y: (y * torch.tensor(mask)).sum())
    np.testing.assert_allclose(result.attribution, expected, rtol=1e-4, atol=1e-6)


class _YoloHead(torch.nn.Module):
    """A YOLOv8-style head: a conv backbone, then per grid cell 4 box values and C sigmoid class scores,
    flattened to ``[batch, 4 + C, anchors]`` (anchors = grid cells); ``anchors_first`` transposes."""

    def __init__(self, classes: int, anchors_first: bool = False) -> None:
        super().__init__()
        self.backbone = torch.nn.Sequential(
            torch.nn.Conv2d(1, 6, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(6, 8, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        )
        self.head = torch.nn.Conv2d(8, 4 + classes, 1)
        self.anchors_first = anchors_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(self.backbone(x)).flatten(2)  # [B, 4 + C, A]
        boxes, scores = features[:, :4], torch.sigmoid(features[:, 4:])
        out = torch.cat([boxes, scores], dim=1)
        return out.transpose(1, 2) if self.anchors_first else out


@pytest.mark.parametrize("anchors_first", [False, True], ids=["channels_first", "anchors_first"])
def test_detection_target_on_a_yolo_style_head(anchors_first: bool) -> None:
    classes = 3
    module = _seeded(_YoloHead(classes, anchors_first), seed=7)
    session = _session(module, torch.zeros(2, 1, 16, 24))
    anchors = (16 // 4) * (24 // 4)
    layout = "anchors_first" if anchors_first else "channels_first"
    assert tuple(session.output_shape) == (
        (anchors, 4 + classes) if anchors_first else (4 + classes, anchors)
    )  # type: ignore[attr-defined]
    x = np.random.default_rng(8).uniform(0.0, 1.0, size=(1, 16, 24)).astype(np.float32)

    with torch.no_grad():
        outputs = module(torch.tensor(x[np.newaxis]))[0].numpy()
    scores = outputs.T[4:].T if anchors_first else outputs[4:].T  # (A, C)
    best_anchor, best_class = np.unravel_index(int(np.argmax(scores)), scores.shape)

    target = DetectionTarget(layout=layout)
    result = explain(session, x, VANILLA, target, lower=0.0, upper=1.0, seed=0)  # type: ignore[arg-type]
    assert result.target_index == best_class
    assert detection_of(target, result.cotangent) == (best_anchor, best_class)

    def score(y: torch.Tensor, anchor: int = int(best_anchor), c: int = int(best_class)) -> torch.Tensor:
        return y[anchor, 4 + c] if anchors_first else y[4 + c, anchor]

    expected, _ = _torch_gradient(module, x, score)
    np.testing.assert_allclose(result.attribution, expected, rtol=1e-4, atol=1e-6)

    # An explicit detection and class, here not the best ones.
    other_anchor, other_class = (int(best_anchor) + 1) % anchors, (int(best_class) + 1) % classes
    explicit = explain(
        session,
        x,
        VANILLA,
        DetectionTarget(other_anchor, other_class, layout),  # type: ignore[arg-type]
        lower=0.0,
        upper=1.0,
        seed=0,
    )
    assert explicit.target_index == other_class
    expected, _ = _torch_gradient(module, x, lambda y: score(y, other_anchor, other_class))
    np.testing.assert_allclose(explicit.attribution, expected, rtol=1e-4, atol=1e-6)

    # The class target of the old vocabulary selects one index of the last axis across box values and
    # class scores of every detection: a different (meaningless) scalar.
    one_hot, _ = resolve_target(ClassTarget(0), tuple(outputs.shape))
    assert one_hot.sum() == outputs.shape[0] and not np.array_equal(one_hot, result.cotangent)
