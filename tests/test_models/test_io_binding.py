"""models.runtime: the I/O-binding path of GradientSession (on the CPU provider) and the CUDA options."""

from __future__ import annotations

import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from estimator import explain
from estimator.errors import InvalidArgumentError
from estimator.method import Method
from models.gradient_graph import build_gradient_model
from models.instance_session import BoundInstance
from models.runtime import (
    CUDA_PROVIDER,
    DeviceUnavailableError,
    GradientSession,
    RuntimeOptions,
    available_providers,
    parse_device,
)

ON = RuntimeOptions(io_binding="on")
OFF = RuntimeOptions(io_binding="off")


def _conv_model(seed: int = 0) -> onnx.ModelProto:
    """``logits = Gemm(Flatten(Relu(Conv(x * mask))))`` on ``(B, 2, 6, 6)`` with an extra ``mask`` input."""
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(4, 2, 3, 3)).astype(np.float32)
    weight = rng.normal(size=(4 * 4 * 4, 5)).astype(np.float32)
    bias = rng.normal(size=(5,)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "mask"], ["masked"]),
            helper.make_node("Conv", ["masked", "K"], ["conv"]),
            helper.make_node("Relu", ["conv"], ["relu"]),
            helper.make_node("Flatten", ["relu"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "b"], ["logits"]),
        ],
        "masked_conv",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 6, 6]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", 2, 6, 6]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])],
        [
            numpy_helper.from_array(kernel, "K"),
            numpy_helper.from_array(weight, "W"),
            numpy_helper.from_array(bias, "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return build_gradient_model(model, inputs=["x"], explained="logits")


@pytest.fixture(scope="module")
def gradient() -> onnx.ModelProto:
    return _conv_model()


def _data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2, 6, 6)).astype(np.float32)
    w = rng.normal(size=(rows, 5)).astype(np.float32)
    mask = (rng.random((2, 6, 6)) > 0.3).astype(np.float32)
    return x, w, mask


def test_io_binding_is_off_on_cpu_by_default_and_selectable(gradient: onnx.ModelProto) -> None:
    assert not GradientSession(gradient, device="cpu", extra_inputs=["mask"]).io_binding
    assert GradientSession(gradient, device="cpu", extra_inputs=["mask"], options=ON).io_binding
    assert not GradientSession(gradient, device="cpu", extra_inputs=["mask"], options=OFF).io_binding


def test_bound_calls_equal_plain_calls_bit_for_bit_across_reused_buffers(gradient: onnx.ModelProto) -> None:
    plain = GradientSession(gradient, device="cpu", extra_inputs=["mask"], options=OFF)
    bound = GradientSession(gradient, device="cpu", extra_inputs=["mask"], options=ON)
    kept = []
    # Same shape twice (the buffers are reused), then another shape, then the first again.
    for rows, seed in ((7, 1), (7, 2), (3, 3), (7, 4)):
        x, w, mask = _data(rows, seed)
        expected = plain(x, w, extras={"mask": mask})
        got = bound(x, w, extras={"mask": mask})
        np.testing.assert_array_equal(got.outputs, expected.outputs)
        np.testing.assert_array_equal(got.gradients, expected.gradients)
        kept.append((got, expected))
    # Results handed out earlier are copies: later calls into the same buffers leave them alone.
    for got, expected in kept:
        np.testing.assert_array_equal(got.gradients, expected.gradients)
        np.testing.assert_array_equal(got.outputs, expected.outputs)
    assert 1 <= bound._clean.idle_buffer_sets <= 4  # type: ignore[attr-defined]


def test_bound_calls_with_weight_overrides_equal_plain_calls(gradient: onnx.ModelProto) -> None:
    plain = GradientSession(gradient, device="cpu", extra_inputs=["mask"], options=OFF)
    bound = GradientSession(gradient, device="cpu", extra_inputs=["mask"], options=ON)
    x, w, mask = _data(6, 5)
    rng = np.random.default_rng(9)
    for _ in range(2):
        overrides = {
            name: value + rng.normal(0, 0.1, value.shape).astype(value.dtype)
            for name, value in plain.weights.items()
        }
        expected = plain(x, w, overrides, extras={"mask": mask})
        got = bound(x, w, overrides, extras={"mask": mask})
        np.testing.assert_array_equal(got.gradients, expected.gradients)
        np.testing.assert_array_equal(got.outputs, expected.outputs)
    clean = bound(x, w, extras={"mask": mask})
    assert not np.array_equal(clean.gradients, got.gradients)


def test_bound_calls_from_threads_at_once_keep_their_own_buffers(gradient: onnx.ModelProto) -> None:
    plain = GradientSession(gradient, device="cpu", extra_inputs=["mask"], options=OFF)
    bound = GradientSession(gradient, device="cpu", extra_inputs=["mask"], options=ON)
    cases = [_data(8, seed) for seed in range(12)]
    expected = [plain(x, w, extras={"mask": m}).gradients for x, w, m in cases]
    results: dict[int, np.ndarray] = {}

    def work(index: int) -> None:
        for _ in range(5):
            x, w, m = cases[index]
            results[index] = bound(x, w, extras={"mask": m}).gradients
            np.testing.assert_array_equal(results[index], expected[index])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, value in enumerate(expected):
        np.testing.assert_array_equal(results[index], value)


def test_smoothgrad_and_noisegrad_through_bound_calls_are_identical(gradient: onnx.ModelProto) -> None:
    plain = GradientSession(gradient, device="cpu", extra_inputs=["mask"], options=OFF)
    bound = GradientSession(gradient, device="cpu", extra_inputs=["mask"], options=ON)
    x, _, mask = _data(1, 11)
    # A budget of a few rows per chunk: many model calls, the next chunk built while one runs.
    budget = 5 * plain.bytes_per_sample
    for method in (Method(samples=40, alpha=0.2), Method(mode="parameter", weight_draws=6, weight_sigma=0.1)):
        runs = [
            explain(
                BoundInstance(session, {"mask": mask}, x[0]),
                x[0],
                method,
                lower=-3.0,
                upper=3.0,
                seed=7,
                memory_budget_bytes=budget,
            )
            for session in (plain, bound, bound)
        ]
        assert int(runs[0].extras["chunk_rows"]) < 6
        for run in runs[1:]:
            np.testing.assert_array_equal(run.attribution, runs[0].attribution)
            np.testing.assert_array_equal(run.standard_error, runs[0].standard_error)


def test_fixed_batch_models_run_bound_in_padded_calls() -> None:
    model = _conv_model(seed=3)
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_param"):
            dims[0].dim_value = 4
    fixed = build_gradient_model(_fixed(model), inputs=["x"], explained="logits")
    plain = GradientSession(fixed, device="cpu", extra_inputs=["mask"], options=OFF)
    bound = GradientSession(fixed, device="cpu", extra_inputs=["mask"], options=ON)
    assert bound.fixed_batch_size == 4
    x, w, mask = _data(10, 2)
    expected = plain(x, w, extras={"mask": mask})
    got = bound(x, w, extras={"mask": mask})
    np.testing.assert_array_equal(got.gradients, expected.gradients)
    assert got.gradients.shape == (10, 2, 6, 6)


def _fixed(gradient_model: onnx.ModelProto) -> onnx.ModelProto:
    """The original (non-gradient) part of ``gradient_model`` with its batch fixed to 4 rows."""
    original = onnx.ModelProto()
    original.CopyFrom(gradient_model)
    graph = original.graph
    keep = {"x", "mask"}
    del graph.input[:]
    for name in ("x", "mask"):
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [4, 2, 6, 6]))
    nodes = [node for node in graph.node if node.output[0] in {"masked", "conv", "relu", "flat", "logits"}]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [4, 5]))
    del graph.value_info[:]
    kept = [init for init in graph.initializer if init.name in {"K", "W", "b"} | keep]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del original.metadata_props[:]
    return original


def test_runtime_options_validate_and_give_the_cuda_provider_options() -> None:
    options = RuntimeOptions()
    assert options.cuda_provider_options(0) == {
        "device_id": "0",
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "use_tf32": "0",
    }
    tuned = RuntimeOptions(cudnn_conv_algo_search="HEURISTIC", gpu_mem_limit=2 << 30, allow_tf32=True)
    assert tuned.cuda_provider_options(3) == {
        "device_id": "3",
        "cudnn_conv_algo_search": "HEURISTIC",
        "use_tf32": "1",
        "gpu_mem_limit": str(2 << 30),
    }
    assert options.binds_io(CUDA_PROVIDER) and not options.binds_io("CPUExecutionProvider")
    assert not OFF.binds_io(CUDA_PROVIDER) and ON.binds_io("CPUExecutionProvider")
    with pytest.raises(InvalidArgumentError, match="io_binding must be one of"):
        RuntimeOptions(io_binding="yes")
    with pytest.raises(InvalidArgumentError, match="cudnn_conv_algo_search must be one of"):
        RuntimeOptions(cudnn_conv_algo_search="fast")
    with pytest.raises(InvalidArgumentError, match="gpu_mem_limit must be a byte count"):
        RuntimeOptions(gpu_mem_limit=-1)


def test_device_spellings() -> None:
    assert parse_device("cuda:1") == ("cuda", 1)
    assert parse_device("cuda") == ("cuda", 0)
    assert parse_device("cpu") == ("cpu", 0) and parse_device("auto") == ("auto", 0)
    for bad in ("cpu:1", "cuda:", "cuda:-1", "gpu", "CUDA"):
        with pytest.raises(InvalidArgumentError, match="device must be one of"):
            parse_device(bad)


def test_cuda_n_on_a_host_without_cuda_is_device_unavailable(gradient: onnx.ModelProto) -> None:
    if CUDA_PROVIDER in available_providers():
        pytest.skip("this host has a working CUDA provider")
    with pytest.raises(DeviceUnavailableError, match="device='cuda:1' was asked for"):
        GradientSession(gradient, device="cuda:1", extra_inputs=["mask"])
