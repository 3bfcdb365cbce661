"""Detecting a batch size that a model bakes into Reshape constants (legacy exports).

``torch.onnx.export`` without a dynamic batch axis writes Reshape targets such as ``[1, 8, 4, 8]``
or ``[1, -1]``: such a model runs only at its export batch size. The builder then keeps that
size static (onnxruntime reports a wrong batch clearly) and records it in the metadata.
Imports onnx and numpy only.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from models.gradient_graph.errors import InvalidModelError, describe_node
from models.gradient_graph.prepare import PreparedModel
from models.gradient_graph.shapes import ShapeTable

__all__ = ["fixed_batch_size"]


def fixed_batch_size(prep: PreparedModel, shapes: ShapeTable) -> int | None:
    """The batch size a model bakes into a Reshape constant (legacy exports), else ``None``.

    A Reshape of a batch-dependent tensor to a constant shape without ``0`` or ``-1`` only works
    for the batch size the model was exported with. Then the inputs keep that static size
    (``prep`` is updated) so onnxruntime reports a wrong batch clearly.
    """
    graph = prep.model.graph
    constants = {t.name: t for t in graph.initializer}
    declared_batches = {(prep.declared.get(n) or [None])[0] for n in prep.batch_inputs}
    # Exported with a static batch b: a constant target starting with b (e.g. [1, -1]) fixes it too.
    static_batch = next(iter(declared_batches)) if len(declared_batches) == 1 else None
    batched = set(prep.batch_inputs)
    culprit: onnx.NodeProto | None = None
    for node in graph.node:
        if any(name in batched for name in node.input if name):
            batched.update(out for out in node.output if out)
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        target = numpy_helper.to_array(constants[node.input[1]]).reshape(-1)
        data = shapes.shape(node.input[0])
        static_data = data is not None and all(isinstance(d, int) for d in data)
        fixed = not np.isin(target, (0, -1)).any() or (
            isinstance(static_batch, int) and target.size > 0 and int(target[0]) == static_batch
        )
        if node.input[0] in batched and not static_data and fixed:
            culprit = node
            break
    if culprit is None:
        return None
    target_text = numpy_helper.to_array(constants[culprit.input[1]]).reshape(-1).tolist()
    sizes = set()
    for name in prep.batch_inputs:
        declared = prep.declared.get(name)
        sizes.add(declared[0] if declared and isinstance(declared[0], int) else None)
    if None in sizes or len(sizes) != 1:
        raise InvalidModelError(
            f"Reshape node {describe_node(culprit)!r} reshapes a batched tensor to the constant shape {target_text}, "
            "so the model only works for one batch size, but its inputs declare a dynamic batch. Re-export it "
            "with a dynamic batch axis (torch.onnx.export(..., dynamic_axes={name: {0: 'batch'}}) or dynamo=True)"
        )
    size = int(next(iter(sizes)))  # type: ignore[arg-type]
    for name in prep.batch_inputs:
        declared = prep.declared.get(name) or []
        pinned = prep.pinned.get(name)
        prep.pinned[name] = [size, *(pinned[1:] if pinned else declared[1:])]
    prep.batch_inputs = []
    return size
