"""Dense-output targets over loopback gRPC: the sum or mean over a region of a segmentation map and
class c of detection i of a YOLOv8-style head, served from a temporary repository of two small ONNX
models; results equal ``estimator.explain`` called directly, and bad targets are INVALID_ARGUMENT
with the field, the valid range and the fix."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from estimator import explain
from estimator.method import DetectionTarget, Method, RegionTarget
from protos.mollify.v1 import explainer_pb2 as pb
from protos.mollify.v1 import explainer_pb2_grpc as pb_grpc
from service import codec
from service.client import ExplainerClient, ExplainTarget, MollifyError
from service.server import MollifyServer
from service.settings import Settings

SEED = 11
CLASSES = 3
GRID = 4  # the detector's 8×8 input becomes a 4×4 grid: 16 anchors
ANCHORS = GRID * GRID
VANILLA = Method(mode="none")


def _segmenter() -> onnx.ModelProto:
    """``x [B, 1, 6, 8]`` → Conv 3×3 → Tanh → Conv 3×3 → ``map [B, 2, 6, 8]`` (per-pixel class scores)."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "W1", "b1"], ["h"], pads=[1, 1, 1, 1]),
            helper.make_node("Tanh", ["h"], ["t"]),
            helper.make_node("Conv", ["t", "W2", "b2"], ["map"], pads=[1, 1, 1, 1]),
        ],
        "segmenter",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 6, 8])],
        [helper.make_tensor_value_info("map", TensorProto.FLOAT, ["batch", 2, 6, 8])],
        [
            numpy_helper.from_array(rng.normal(size=(3, 1, 3, 3)).astype(np.float32), "W1"),
            numpy_helper.from_array(rng.normal(size=(3,)).astype(np.float32), "b1"),
            numpy_helper.from_array(rng.normal(size=(2, 3, 3, 3)).astype(np.float32), "W2"),
            numpy_helper.from_array(rng.normal(size=(2,)).astype(np.float32), "b2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model


def _detector() -> onnx.ModelProto:
    """A YOLOv8-style head: ``x [B, 1, 8, 8]`` → Conv 2×2 stride 2 → ``[B, 4 + C, 4, 4]`` → reshape to
    ``[B, 4 + C, 16]`` → box values as they are, sigmoid class scores → ``detections [B, 4 + C, 16]``."""
    rng = np.random.default_rng(1)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "W", "b"], ["grid"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Reshape", ["grid", "flat_shape"], ["raw"]),
            helper.make_node("Split", ["raw", "split"], ["boxes", "logits"], axis=1),
            helper.make_node("Sigmoid", ["logits"], ["scores"]),
            helper.make_node("Concat", ["boxes", "scores"], ["detections"], axis=1),
        ],
        "detector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("detections", TensorProto.FLOAT, ["batch", 4 + CLASSES, ANCHORS])],
        [
            numpy_helper.from_array(rng.normal(size=(4 + CLASSES, 1, 2, 2)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.normal(size=(4 + CLASSES,)).astype(np.float32), "b"),
            numpy_helper.from_array(np.array([0, 4 + CLASSES, ANCHORS], np.int64), "flat_shape"),
            numpy_helper.from_array(np.array([4, CLASSES], np.int64), "split"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model


@pytest.fixture(scope="module")
def dense_server(
    tmp_path_factory: pytest.TempPathFactory, helpers: SimpleNamespace
) -> Iterator[MollifyServer]:
    root = tmp_path_factory.mktemp("dense-repository")
    helpers.write_model(
        root,
        "segmenter",
        _segmenter(),
        input_shape=[1, 6, 8],
        explained_tensor="map",
        lower=0.0,
        upper=1.0,
        labels=["background", "object"],
    )
    helpers.write_model(
        root,
        "detector",
        _detector(),
        input_shape=[1, 8, 8],
        explained_tensor="detections",
        lower=0.0,
        upper=1.0,
        labels=["x", "y", "w", "h"],
    )
    settings = Settings(
        address="127.0.0.1:0",
        model_repository=root,
        cache_dir=tmp_path_factory.mktemp("dense-cache"),
        device="cpu",
        intra_op_threads=1,
        memory_budget_bytes=4 << 20,
    )
    server: MollifyServer = helpers.start_server(settings)
    yield server
    server.stop(0).wait()


@pytest.fixture(scope="module")
def client(dense_server: MollifyServer) -> Iterator[ExplainerClient]:
    with ExplainerClient(f"127.0.0.1:{dense_server.port}", timeout=60) as c:
        yield c


def _inputs(shape: tuple[int, ...], count: int = 2, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=(count, *shape)).astype(np.float32)


def _direct(server: MollifyServer, model: str, x: np.ndarray, method: Method, target: Any) -> Any:
    entry = server.repository.ready_entry(model)
    session = server.repository.session_for(entry, "")
    return explain(
        session,
        x,
        method,
        target,
        lower=entry.lower,
        upper=entry.upper,
        seed=SEED,
        memory_budget_bytes=server.settings.memory_budget_bytes,
    )


def _same(remote: Any, direct: Any) -> None:
    for name in ("attribution", "outputs", "cotangent"):
        np.testing.assert_array_equal(
            getattr(remote, name), np.asarray(getattr(direct, name), np.float32), name
        )
    assert remote.target_index == direct.target_index


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (("region", "1, 2:5, 3:7"), (slice(1, 2), slice(2, 5), slice(3, 7))),
        (RegionTarget(axes=(0, slice(None), -1), reduction="mean"), (slice(0, 1), slice(None), slice(7, 8))),
    ],
)
def test_region_of_a_segmentation_map(
    client: ExplainerClient, dense_server: MollifyServer, target: Any, expected: tuple[slice, ...]
) -> None:
    x = _inputs((1, 6, 8))
    method = Method(samples=6)
    results = client.explain("segmenter", x, method=method, target=target, seed=SEED)
    assert len(results) == 2
    indicator = np.zeros((2, 6, 8), np.float32)
    indicator[expected] = 1.0
    mean = isinstance(target, RegionTarget) and target.reduction == "mean"
    for instance, result in enumerate(results):
        assert result.target_index is None
        np.testing.assert_allclose(
            result.cotangent, indicator / indicator.sum() if mean else indicator, rtol=1e-6
        )
        selection = (
            target if isinstance(target, RegionTarget) else RegionTarget(axes=(1, slice(2, 5), slice(3, 7)))
        )
        _same(result, _direct(dense_server, "segmenter", x[instance], method, selection))


def test_region_mask_travels_as_bool(client: ExplainerClient, dense_server: MollifyServer) -> None:
    mask = np.zeros((2, 6, 8), bool)
    mask[1, 1:4, 2:6] = True
    mask[0, 5, :] = True
    x = _inputs((1, 6, 8), count=1, seed=5)
    [result] = client.explain("segmenter", x, method=VANILLA, target=("region", mask), seed=SEED)
    np.testing.assert_array_equal(result.cotangent, mask.astype(np.float32))
    _same(result, _direct(dense_server, "segmenter", x[0], VANILLA, RegionTarget(mask=mask)))
    message = codec.target_to_proto(ExplainTarget(selection=RegionTarget(mask=mask)))
    assert message.region.mask.datatype == pb.DATA_TYPE_BOOL


def test_region_over_the_stream(client: ExplainerClient) -> None:
    x = _inputs((1, 6, 8), count=1)
    events = list(
        client.explain_stream("segmenter", x, method=Method(samples=4), target=("region", "1"), seed=SEED)
    )
    [result] = events[-1]  # type: ignore[misc]
    assert result.cotangent[1].sum() == 48 and result.cotangent[0].sum() == 0


def _best(outputs: np.ndarray) -> tuple[int, int]:
    scores = outputs[4:].T  # (A, C)
    anchor, cls = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return int(anchor), int(cls)


def test_detection_defaults_to_the_best_detection(
    client: ExplainerClient, dense_server: MollifyServer
) -> None:
    x = _inputs((1, 8, 8), count=3, seed=7)
    results = client.explain("detector", x, method=Method(samples=5), target="detection", seed=SEED)
    for instance, result in enumerate(results):
        anchor, cls = _best(result.outputs)
        assert result.outputs.shape == (4 + CLASSES, ANCHORS)
        assert result.target_index == cls
        expected = np.zeros((4 + CLASSES, ANCHORS), np.float32)
        expected[4 + cls, anchor] = 1.0
        np.testing.assert_array_equal(result.cotangent, expected)
        _same(result, _direct(dense_server, "detector", x[instance], Method(samples=5), DetectionTarget()))


def test_class_of_a_given_detection(client: ExplainerClient, dense_server: MollifyServer) -> None:
    x = _inputs((1, 8, 8), count=1, seed=9)
    target = DetectionTarget(index=5, class_index=2)
    [result] = client.explain("detector", x, method=VANILLA, target=target, seed=SEED)
    assert result.target_index == 2 and result.cotangent[4 + 2, 5] == 1.0 and result.cotangent.sum() == 1.0
    _same(result, _direct(dense_server, "detector", x[0], VANILLA, target))
    [highest] = client.explain("detector", x, method=VANILLA, target=("detection", 5), seed=SEED)
    assert highest.target_index == int(np.argmax(highest.outputs[4:, 5]))


def _raw_call(server: MollifyServer, target: pb.Target, model: str = "detector") -> grpc.RpcError:
    shape = (1, 1, 8, 8) if model == "detector" else (1, 1, 6, 8)
    request = pb.ExplainRequest(
        model_name=model,
        inputs=codec.array_to_tensor(np.full(shape, 0.5, np.float32)),
        target=target,
        method=codec.method_to_proto(VANILLA),
    )
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel, pytest.raises(grpc.RpcError) as caught:
        pb_grpc.ExplainerServiceStub(channel).Explain(request, timeout=30)
    return caught.value


@pytest.mark.parametrize(
    ("model", "target", "fragments"),
    [
        (
            "detector",
            pb.Target(detection=pb.Detection(class_index=3)),
            ["target.detection.class_index", "[0, 2]", "leave it unset"],
        ),
        ("detector", pb.Target(detection=pb.Detection(index=16)), ["target.detection.index", "[0, 15]"]),
        (
            "detector",
            pb.Target(detection=pb.Detection(box_values=7)),
            ["target.detection.box_values", "fewer than"],
        ),
        (
            "detector",
            pb.Target(detection=pb.Detection(layout=9)),
            ["target.detection.layout", "unknown value 9"],
        ),
        (
            "segmenter",
            pb.Target(detection=pb.Detection()),
            ["target.detection", "explain a region of it instead"],
        ),
        (
            "segmenter",
            pb.Target(region=pb.Region(axes=[pb.AxisRange(index=2)])),
            ["target.region.axes[0]", "[-2, 1]"],
        ),
        (
            "segmenter",
            pb.Target(region=pb.Region(axes=[pb.AxisRange(), pb.AxisRange()])),
            ["target.region.axes[0]", "must set index or slice"],
        ),
        (
            "segmenter",
            pb.Target(
                region=pb.Region(
                    axes=[pb.AxisRange(index=0), pb.AxisRange(slice=pb.AxisSlice(start=2, stop=9))]
                )
            ),
            ["target.region.axes[1].stop", "[-6, 6]"],
        ),
        (
            "segmenter",
            pb.Target(region=pb.Region(axes=[pb.AxisRange(slice=pb.AxisSlice(step=0))])),
            ["target.region.axes[0].step", "non-zero"],
        ),
        (
            "segmenter",
            pb.Target(region=pb.Region(axes=[pb.AxisRange(index=0)] * 4)),
            ["target.region.axes", "at most 3 entries"],
        ),
        (
            "segmenter",
            pb.Target(region=pb.Region(mask=codec.array_to_tensor(np.ones((6, 8), bool)))),
            ["target.region.mask", "(2, 6, 8)"],
        ),
        (
            "segmenter",
            pb.Target(region=pb.Region(mask=codec.array_to_tensor(np.full((2, 6, 8), 2.0, np.float32)))),
            ["target.region.mask", "only 0 and 1", "explicit cotangent"],
        ),
        (
            "segmenter",
            pb.Target(region=pb.Region(mask=codec.array_to_tensor(np.ones((2, 6, 8), np.int32)))),
            ["target.region.mask.datatype", "DATA_TYPE_BOOL"],
        ),
        (
            "segmenter",
            pb.Target(region=pb.Region(reduction=5)),
            ["target.region.reduction", "REGION_REDUCTION_MEAN"],
        ),
    ],
)
def test_bad_dense_targets_are_invalid_argument(
    dense_server: MollifyServer, model: str, target: pb.Target, fragments: list[str]
) -> None:
    error = _raw_call(dense_server, target, model)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    for fragment in fragments:
        assert fragment in (error.details() or ""), (fragment, error.details())


def test_bad_region_text_is_refused_by_the_client(client: ExplainerClient) -> None:
    with pytest.raises(MollifyError) as caught:
        client.explain("segmenter", _inputs((1, 6, 8), count=1), target=("region", "1;2"))
    assert caught.value.code == "INVALID_ARGUMENT" and "e.g. ':,10:20,5'" in caught.value.message


def test_codec_round_trips_dense_targets() -> None:
    for selection in (
        RegionTarget(axes=(1, slice(None), slice(2, -1, 3)), reduction="mean"),
        RegionTarget(),
        DetectionTarget(),
        DetectionTarget(index=7, class_index=0, layout="anchors_first", box_values=5),
    ):
        decoded = codec.target_from_proto(
            codec.target_to_proto(ExplainTarget(selection=selection, output="y"))
        )
        assert decoded == ExplainTarget(selection=selection, output="y")
    mask = np.eye(3, dtype=np.uint8)
    decoded = codec.target_from_proto(codec.target_to_proto(ExplainTarget(selection=RegionTarget(mask=mask))))
    assert isinstance(decoded.selection, RegionTarget) and decoded.selection.mask is not None
    np.testing.assert_array_equal(decoded.selection.mask, mask)


def test_the_dense_models_are_described(client: ExplainerClient) -> None:
    assert client.get_model("detector").output_shape == (4 + CLASSES, ANCHORS)
    assert client.get_model("segmenter").output_shape == (2, 6, 8)
