"""Opening models with extra inputs or an intermediate explained input (``models.instance_session``).

A model needs this path when its graph has inputs besides ``input_name`` (an attention mask) or
its config names an ``explained_input`` inside the graph. Its gradient graph is that of the
suffix (:func:`models.cut.cut_model`) with respect to the explained input, built and cached like
any other (:mod:`service.graphs`); the prefix runs in a plain forward session.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from models.config import CONFIG_FILE_NAME, ModelConfig
from models.cut import cut_model, embedding_bounds, embedding_table
from models.gradient_graph import InvalidModelError
from models.gradient_graph.external_data import has_external_data
from models.instance_session import InputSpec, InstanceSession
from service.graphs import gradient_graph_for

if TYPE_CHECKING:
    from models.runtime.backend import Backend

__all__ = ["needs_instance_session", "open_instance_session"]

_DTYPES: dict[int, np.dtype] = {
    onnx.TensorProto.FLOAT: np.dtype(np.float32),
    onnx.TensorProto.DOUBLE: np.dtype(np.float64),
    onnx.TensorProto.FLOAT16: np.dtype(np.float16),
    onnx.TensorProto.INT32: np.dtype(np.int32),
    onnx.TensorProto.INT64: np.dtype(np.int64),
    onnx.TensorProto.UINT8: np.dtype(np.uint8),
    onnx.TensorProto.BOOL: np.dtype(np.bool_),
}


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    weights = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in weights]


def needs_instance_session(model: onnx.ModelProto, config: ModelConfig) -> bool:
    """Whether ``config`` names an intermediate explained input or the graph has other inputs."""
    if config.explained_input and config.explained_input != config.input_name:
        return True
    return any(value.name != config.input_name for value in _graph_inputs(model))


def _spec(
    value: onnx.ValueInfoProto,
    sent: onnx.ValueInfoProto | None,
    sent_shape: Sequence[int],
    config: ModelConfig,
) -> InputSpec:
    elem = value.type.tensor_type.elem_type
    if elem not in _DTYPES:
        raise InvalidModelError(
            f"graph input {value.name!r} has element type {onnx.TensorProto.DataType.Name(elem)}, which requests "
            f"cannot carry (supported: {sorted(str(d) for d in set(_DTYPES.values()))})"
        )
    if sent is None:
        return InputSpec(value.name, _DTYPES[elem], tuple(int(d) for d in sent_shape))
    given = config.extra_input_shapes.get(value.name)
    if given is not None:
        return InputSpec(value.name, _DTYPES[elem], tuple(int(d) for d in given))
    symbols = {
        d.dim_param: size
        for d, size in zip(sent.type.tensor_type.shape.dim[1:], sent_shape, strict=False)
        if d.dim_param
    }
    shape: list[int] = []
    for axis, dim in enumerate(value.type.tensor_type.shape.dim[1:], start=1):
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        elif dim.dim_param in symbols:
            shape.append(symbols[dim.dim_param])
        else:
            raise InvalidModelError(
                f"graph input {value.name!r} leaves dimension {axis} ({dim.dim_param or 'unnamed'}) unknown and "
                f"{config.input_name!r} shares no dimension of that name; give its shape in {CONFIG_FILE_NAME} as "
                f'"extra_input_shapes": {{"{value.name}": [...]}} (one instance, no batch dimension)'
            )
    return InputSpec(value.name, _DTYPES[elem], tuple(shape))


def _dummy(spec: InputSpec) -> np.ndarray:
    return (
        np.ones(spec.shape, dtype=spec.dtype) if spec.dtype.kind in "fb" else np.zeros(spec.shape, spec.dtype)
    )


def open_instance_session(
    model_path: Path,
    model: onnx.ModelProto,
    config: ModelConfig,
    cache_dir: Path,
    *,
    device: Any = "auto",
    intra_op_threads: int | None = None,
    options: Any = None,
    backend: Backend | None = None,
    require_bounds: bool = True,
) -> InstanceSession:
    """Open the model described in the module docstring (its bounds and default channel
    reduction set: the bounds derived from the embedding table for an embedding lookup).

    ``backend`` runs the prefix and the suffix's gradient graph (a ``models.runtime.backend.Backend``);
    default: ONNX Runtime on ``device`` with ``intra_op_threads`` and ``options``, which must then
    stay unset.

    ``require_bounds`` False (an explained input a request names): bounds that can be neither
    derived nor read from the config leave ``bounds_known`` False instead of failing; requests
    then send their own.

    Raises:
        InvalidModelError: the explained input does not exist, is not float or not upstream of the
            explained tensor (the message lists candidates), an input cannot be carried by a
            request, or a bound cannot be derived.
        models.gradient_graph.GradientGraphError: the suffix cannot be differentiated.
    """
    from models.runtime import ForwardSession, GradientSession  # onnxruntime: only when serving

    inputs = {value.name: value for value in _graph_inputs(model)}
    if config.input_name not in inputs:
        raise InvalidModelError(
            f"input_name {config.input_name!r} is not a graph input; the inputs are {sorted(inputs)}"
        )
    sent_value = inputs[config.input_name]
    sent = _spec(sent_value, None, config.input_shape, config)
    extras = [
        _spec(value, sent_value, config.input_shape, config)
        for name, value in inputs.items()
        if name != config.input_name
    ]
    explained_input = config.explained_input or config.input_name
    folder = model_path.parent
    if explained_input == config.input_name:
        if sent.dtype.kind != "f":
            raise InvalidModelError(
                f"input_name {config.input_name!r} is {sent.dtype} and cannot be explained itself; name the float "
                f"tensor to explain (e.g. the embedding output) as explained_input in {CONFIG_FILE_NAME}"
            )
        prefix_inputs: tuple[str, ...] = ()
        suffix, suffix_inputs, prefix = model, [s.name for s in extras], None
        source: bytes | Path = model_path
        shape = sent.shape
    else:
        cut = cut_model(model, explained_input, config.explained_tensor)
        prefix = ForwardSession(
            cut.prefix,
            device=device,
            intra_op_threads=intra_op_threads,
            options=options,
            external_data_dir=folder if has_external_data(cut.prefix) else None,
            backend=backend,
        )
        specs = {spec.name: spec for spec in [sent, *extras]}
        probe = {name: _dummy(specs[name])[None] for name in cut.prefix_inputs}
        shape = tuple(int(d) for d in prefix.run(probe, [explained_input])[explained_input].shape[1:])
        cut = cut_model(model, explained_input, config.explained_tensor, shape)
        suffix, suffix_inputs, prefix_inputs = cut.suffix, list(cut.suffix_inputs), cut.prefix_inputs
        source = suffix.SerializeToString() if not has_external_data(suffix) else model_path
    extra_shapes = {spec.name: spec.shape for spec in [sent, *extras] if spec.name in suffix_inputs}
    graph = gradient_graph_for(
        source,
        explained_input,
        shape,
        config.explained_tensor,
        cache_dir,
        model=suffix,
        extra_shapes=extra_shapes,
    )
    gradient = GradientSession(
        graph.path if graph.path is not None else graph.model,  # type: ignore[arg-type]
        input_name=explained_input,
        device=device,
        intra_op_threads=intra_op_threads,
        external_data_dir=graph.external_data_dir,
        extra_inputs=suffix_inputs,
        options=options,
        backend=backend,
    )
    bounds = _bounds(model, config, explained_input, shape, folder, required=require_bounds)
    lower, upper, is_lookup = bounds if bounds is not None else (None, None, False)
    axis = config.channel_axis if config.channel_axis is not None else (-1 if is_lookup else None)
    reduction = config.channel_reduction or ("sum" if axis is not None else "none")
    if axis is None:
        reduction = "none"
    if config.baseline_token_id is not None and prefix is None:
        raise InvalidModelError(
            f"baseline_token_id applies to a model whose explained_input is computed from token ids; "
            f"{explained_input!r} is the sent input itself"
        )
    session = InstanceSession(
        gradient,
        sent,
        extras,
        prefix=prefix,
        prefix_inputs=prefix_inputs,
        explained_input=explained_input,
        baseline_token_id=config.baseline_token_id,
        lower=lower,
        upper=upper,
        channel_axis=axis,
        channel_reduction=reduction,
    )
    session.index_limit = _lookup_rows(model, sent.name) if prefix is not None else None
    session.bounds_known = bounds is not None
    return session


def _lookup_rows(model: onnx.ModelProto, ids: str) -> int | None:
    """The fewest rows of a table ``ids`` index directly (``Gather(weight, ids)``), else ``None``."""
    weights = {init.name: init for init in model.graph.initializer}
    rows = [
        int(weights[node.input[0]].dims[0])
        for node in model.graph.node
        if node.op_type == "Gather"
        and len(node.input) == 2
        and node.input[1] == ids
        and node.input[0] in weights
        and weights[node.input[0]].dims
    ]
    return min(rows) if rows else None


def _bounds(
    model: onnx.ModelProto,
    config: ModelConfig,
    tensor: str,
    shape: tuple[int, ...],
    folder: Path,
    *,
    required: bool = True,
) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """The bounds of the explained input, and whether it is an embedding lookup; ``None`` when
    they are unknown and not ``required``."""
    table = embedding_table(model, tensor) if tensor != config.input_name else None
    if tensor == config.input_name:
        return config.lower_array(), config.upper_array(), False
    if config.explained_lower is not None and config.explained_upper is not None:
        try:
            lower = np.broadcast_to(np.asarray(config.explained_lower, np.float32), shape).copy()
            upper = np.broadcast_to(np.asarray(config.explained_upper, np.float32), shape).copy()
        except ValueError as err:
            raise InvalidModelError(
                f"explained_lower / explained_upper in {CONFIG_FILE_NAME} do not broadcast to the shape {list(shape)} "
                f"of explained_input {tensor!r}"
            ) from err
        return lower, upper, table is not None
    if table is None:
        if not required:
            return None
        raise InvalidModelError(
            f"explained_input {tensor!r} is not an embedding lookup (a Gather of a weight), so its bounds cannot be "
            f"derived: give explained_lower and explained_upper in {CONFIG_FILE_NAME} (scalars or arrays "
            f"broadcastable to its instance shape {list(shape)})"
        )
    lower, upper = embedding_bounds(table, shape, folder)
    return lower, upper, True
