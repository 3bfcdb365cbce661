"""Finite-difference harness for the VJP rules (``test_vjp_harness.py`` shows it catches wrong gradients).

The ``test_vjp_*`` files import this module (``from tests.test_models import vjp_harness as h``): it builds tiny
one-op ONNX models, turns them into gradient models and compares ``J^T w`` for a random
cotangent ``w`` with central finite differences of ``<w, y(x)>`` run through onnxruntime.
Float64 where onnxruntime has double kernels (tolerance 1e-6 of max|g|); float32 otherwise
(step and tolerance chosen per op by the caller).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from models.gradient_graph import UnsupportedOpError, build_gradient_model, read_gradient_metadata  # noqa: F401 - re-exported to users of the harness

F64 = TensorProto.DOUBLE
F32 = TensorProto.FLOAT


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # overridable-initializer warnings are expected
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def np_type(elem: int) -> Any:
    return helper.tensor_dtype_to_np_dtype(elem)


def one_op_model(
    op: str,
    inputs: Mapping[str, Sequence[int | str]],
    *,
    dtype: int = F64,
    attrs: Mapping[str, Any] | None = None,
    initializers: Mapping[str, np.ndarray] | None = None,
    input_order: Sequence[str] | None = None,
    n_outputs: int = 1,
    opset: int = 17,
) -> onnx.ModelProto:
    """A model with one node ``op``: graph inputs ``inputs`` (name -> shape), then initializers.

    ``input_order`` gives the node's input list (use ``""`` for an omitted optional input);
    by default graph inputs then initializers, in the given order.
    """
    initializers = dict(initializers or {})
    order = list(input_order) if input_order is not None else [*inputs, *initializers]
    outputs = [f"y{i}" if i else "y" for i in range(n_outputs)]
    node = helper.make_node(op, order, outputs, name=f"{op}_under_test", **dict(attrs or {}))
    graph = helper.make_graph(
        [node],
        f"one_{op}",
        [helper.make_tensor_value_info(name, dtype, list(shape)) for name, shape in inputs.items()],
        [helper.make_tensor_value_info("y", dtype, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def check_vjp(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    wrt: Sequence[str] | None = None,
    *,
    explained: str | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    eps: float = 1e-6,
    tol: float = 1e-6,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Assert that the gradient model's ``J^T w`` matches central differences; return the gradients.

    ``tol`` is relative to max|finite difference| (and to each element, whichever is larger).
    """
    gradient_model = build_gradient_model(model, wrt, explained, input_shapes=input_shapes)
    onnx.checker.check_model(gradient_model)
    meta = read_gradient_metadata(gradient_model)
    run = session(gradient_model)
    feed = {k: np.asarray(v) for k, v in feeds.items()}
    cot_info = next(i for i in run.get_inputs() if i.name == meta.cotangent)
    cot_dtype = np.float64 if cot_info.type == "tensor(double)" else np.float32

    def value(local_feed: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(
            run.run([meta.explained], {**local_feed, meta.cotangent: cotangent})[0], dtype=np.float64
        )

    forward_model = onnx.ModelProto()
    forward_model.CopyFrom(model)
    if meta.explained not in [o.name for o in model.graph.output]:
        forward_model.graph.output.append(
            helper.make_tensor_value_info(meta.explained, cot_info_type(cot_info), None)
        )
    forward = session(forward_model)
    graph_inputs = {i.name for i in model.graph.input}
    explained_ref = forward.run([meta.explained], {k: v for k, v in feed.items() if k in graph_inputs})[0]
    rng = np.random.default_rng(seed)
    cotangent = rng.standard_normal(explained_ref.shape).astype(cot_dtype)
    np.testing.assert_allclose(
        value(feed), explained_ref, rtol=1e-6, atol=1e-6, err_msg="forward value changed"
    )
    outputs = run.run([meta.gradients[name] for name in meta.inputs], {**feed, meta.cotangent: cotangent})
    analytic = dict(zip(meta.inputs, outputs, strict=True))
    for name in meta.inputs:
        base = feed[name]
        numeric = np.zeros(base.shape, dtype=np.float64)
        for index in np.ndindex(base.shape):
            plus, minus = base.copy(), base.copy()
            plus[index] += eps
            minus[index] -= eps
            f_plus = (value({**feed, name: plus}) * cotangent).sum()
            f_minus = (value({**feed, name: minus}) * cotangent).sum()
            numeric[index] = (f_plus - f_minus) / (2 * eps)
        got = analytic[name]
        assert got.shape == base.shape, f"gradient of {name} has shape {got.shape}, expected {base.shape}"
        scale = max(float(np.abs(numeric).max()), 1e-12)
        np.testing.assert_allclose(got, numeric, rtol=tol, atol=tol * scale, err_msg=f"gradient of {name}")
    return analytic


def cot_info_type(info: Any) -> int:
    return F64 if info.type == "tensor(double)" else F32


def randn(*shape: int, seed: int = 1, dtype: Any = np.float64) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)
