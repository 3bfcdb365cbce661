"""Graph surgery on ONNX models before a backend runs them: loading a model source, keeping only the
nodes some outputs need, freezing weights, and reading tensor shapes and dtypes from value infos.

Pure onnx and numpy: this module never imports onnxruntime, so a backend other than ONNX Runtime
(and any tool that only inspects graphs) can use it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from estimator.errors import InvalidArgumentError
from models.gradient_graph import InvalidModelError, load_model
from models.gradient_graph.external_data import has_external_data, inline_small_tensors

__all__ = [
    "ELEMENT_DTYPES",
    "FLOAT_TYPES",
    "ModelSource",
    "forward_model",
    "freeze_weights",
    "instance_shape",
    "subgraph_inputs",
    "to_model",
    "value_dims",
    "value_infos",
]

ModelSource = onnx.ModelProto | bytes | str | os.PathLike[str]
"""A model, its serialized bytes, or the path of a ``.onnx`` file (its external data beside it)."""

FLOAT_TYPES: dict[int, np.dtype] = {
    onnx.TensorProto.FLOAT: np.dtype(np.float32),
    onnx.TensorProto.DOUBLE: np.dtype(np.float64),
    onnx.TensorProto.FLOAT16: np.dtype(np.float16),
}
"""ONNX element type → numpy dtype of the float types a gradient model may take and return."""
ELEMENT_DTYPES: dict[int, np.dtype] = {
    **FLOAT_TYPES,
    onnx.TensorProto.INT32: np.dtype(np.int32),
    onnx.TensorProto.INT64: np.dtype(np.int64),
    onnx.TensorProto.UINT8: np.dtype(np.uint8),
    onnx.TensorProto.BOOL: np.dtype(np.bool_),
}
"""ONNX element type → numpy dtype of every type an extra input may have."""


def to_model(
    model: ModelSource, external_data_dir: str | os.PathLike[str] | None = None
) -> tuple[onnx.ModelProto, Path | None]:
    """The model and the folder of its external data (``None`` when it has none).

    A model read from a path keeps its external data in its files (its folder is returned), so a
    model over 2 GB is never copied into memory; onnxruntime reads the files itself.
    """
    folder = None if external_data_dir is None else Path(external_data_dir)
    if isinstance(model, (str, os.PathLike)):
        proto = load_model(model, external_data=False)
        folder = Path(model).parent
    elif isinstance(model, onnx.ModelProto):
        proto = model
    elif isinstance(model, (bytes, bytearray)):
        proto = load_model(model)
    else:
        raise InvalidArgumentError(
            f"model must be an onnx.ModelProto, bytes or a path, got {type(model).__name__}"
        )
    if not has_external_data(proto):
        return proto, None
    if folder is None:
        raise InvalidModelError(
            "the model references external data files but was given without their folder; "
            "pass its path, or external_data_dir"
        )
    if isinstance(model, onnx.ModelProto):
        # The caller's model stays as it is; without its weights in memory the copy is small.
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
    # onnxruntime's shape inference cannot read shape constants from a file.
    inline_small_tensors(proto, folder)
    return proto, folder


def value_infos(graph: onnx.GraphProto) -> dict[str, onnx.ValueInfoProto]:
    """Every value info of ``graph`` (intermediate tensors, inputs, outputs) by tensor name."""
    return {value.name: value for value in [*graph.value_info, *graph.input, *graph.output]}


def value_dims(value: onnx.ValueInfoProto) -> list[int | str | None]:
    """Dimensions of a tensor value: ints where static, the symbol where named, ``None`` where unknown."""
    shape = value.type.tensor_type.shape
    dims: list[int | str | None] = []
    for dim in shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return dims


def instance_shape(value: onnx.ValueInfoProto, role: str) -> tuple[int, ...]:
    """The static non-batch shape of a batched graph input, or a clear error."""
    if not value.type.tensor_type.HasField("shape"):
        raise InvalidModelError(f"{role} {value.name!r} has no shape; pin it with input_shapes / --shape")
    dims = value_dims(value)
    if not dims:
        raise InvalidModelError(f"{role} {value.name!r} is a scalar; expected a batch dimension first")
    rest = dims[1:]
    if not all(isinstance(d, int) for d in rest):
        raise InvalidModelError(
            f"{role} {value.name!r} has shape {dims}: every dimension after the batch must be static; "
            "pin it with input_shapes / --shape when building the gradient model"
        )
    return tuple(int(d) for d in rest)  # type: ignore[arg-type]


def subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If / Loop / Scan bodies) read from the enclosing scope."""
    names: set[str] = set()
    for attribute in node.attribute:
        graphs = list(attribute.graphs)
        if attribute.HasField("g"):
            graphs.append(attribute.g)
        for graph in graphs:
            for inner in graph.node:
                names.update(inner.input)
                names.update(subgraph_inputs(inner))
    return names


def forward_model(model: onnx.ModelProto, outputs: Sequence[str]) -> onnx.ModelProto:
    """The part of ``model`` needed to compute ``outputs``: nodes, inputs and initializers they depend on.

    Used to run the original outputs of a gradient model without feeding a cotangent, and to drop
    the nodes a gradient run does not need (onnxruntime would run them even when not asked for).
    Graph inputs that the kept nodes do not read are dropped too.
    """
    graph = model.graph
    producers = {name: node for node in graph.node for name in node.output if name}
    unknown = [
        name
        for name in outputs
        if name not in producers
        and name not in {v.name for v in graph.input}
        and name not in {i.name for i in graph.initializer}
    ]
    if unknown:
        raise InvalidModelError(f"outputs {unknown} are not tensors of the graph")
    needed: set[str] = set()
    kept: set[int] = set()
    stack = list(outputs)
    node_index = {id(node): i for i, node in enumerate(graph.node)}
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        node = producers.get(name)
        if node is not None and node_index[id(node)] not in kept:
            kept.add(node_index[id(node)])
            stack.extend(n for n in node.input if n)
            stack.extend(subgraph_inputs(node))
    infos = value_infos(graph)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    new_graph = result.graph
    del new_graph.node[:]
    new_graph.node.extend(node for i, node in enumerate(graph.node) if i in kept)
    kept_inputs = [value for value in graph.input if value.name in needed]
    del new_graph.input[:]
    new_graph.input.extend(kept_inputs)
    kept_initializers = [init for init in graph.initializer if init.name in needed]
    del new_graph.initializer[:]
    new_graph.initializer.extend(kept_initializers)
    del new_graph.output[:]
    for name in outputs:
        output = onnx.ValueInfoProto()
        if name in infos:
            output.CopyFrom(infos[name])
        else:
            output.name = name
        new_graph.output.append(output)
    kept_value_info = [value for value in graph.value_info if value.name in needed]
    del new_graph.value_info[:]
    new_graph.value_info.extend(kept_value_info)
    return result


def freeze_weights(model: onnx.ModelProto, weights: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` in which the initializers ``weights`` are no longer graph inputs (constants)."""
    names = set(weights)
    if not names:
        return model
    frozen = onnx.ModelProto()
    frozen.CopyFrom(model)
    kept = [value for value in frozen.graph.input if value.name not in names]
    del frozen.graph.input[:]
    frozen.graph.input.extend(kept)
    return frozen
