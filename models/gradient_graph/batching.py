"""Deciding whether a gradient model takes any batch size or only the one its graph fixes.

Exports without a dynamic batch axis (``torch.onnx.export`` with no ``dynamic_axes`` /
``dynamic_shapes``, common for detectors and layout models) declare a static batch, usually 1,
and may bake it into the graph: Reshape targets such as ``[1, 8, 4, 8]`` or ``[1, -1]``, constants
concatenated with batched tensors. Three outcomes:

* ``"dynamic"``: the inputs declare a symbolic batch; the gradient model keeps it.
* ``"symbolic"``: the inputs declare a static batch, but the graph was checked to work for any:
  no Reshape bakes the batch in, shape inference with the batch set to two other sizes succeeds
  for every tensor on the differentiated path where it succeeds at the declared size, and the
  explained tensor's leading dimension follows the batch. The batch is then made symbolic.
* ``"fixed"``: otherwise. The gradient model keeps the declared batch size ``b`` and its runner
  (``models.runtime.GradientSession``) feeds it ``b`` rows per call.

Imports onnx and numpy only.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

import numpy as np
import onnx

from models.gradient_graph.errors import InvalidModelError, describe_node
from models.gradient_graph.external_data import read_tensor
from models.gradient_graph.prepare import PreparedModel
from models.gradient_graph.shapes import BATCH_PROBE, ShapeTable, infer_shape_table

__all__ = ["BatchDecision", "decide_batch"]


@dataclass(frozen=True)
class BatchDecision:
    """How the gradient model is batched.

    Attributes:
        batching: ``"dynamic"``, ``"symbolic"`` or ``"fixed"`` (see the module docstring).
        batch_size: the only batch size the model accepts when ``"fixed"``, else ``None``.
        reason: why the batch is fixed (``""`` otherwise).
    """

    batching: str
    batch_size: int | None = None
    reason: str = ""


def _declared_batches(prep: PreparedModel) -> set[int | str | None]:
    return {(prep.declared.get(n) or [None])[0] for n in prep.batch_inputs}


def _reshape_culprit(prep: PreparedModel, shapes: ShapeTable) -> tuple[onnx.NodeProto, list[int]] | None:
    """A Reshape of a batch-dependent tensor to a constant shape that only fits one batch size."""
    graph = prep.model.graph
    constants = {t.name: t for t in graph.initializer}
    declared = _declared_batches(prep)
    # Exported with a static batch b: a constant target starting with b (e.g. [1, -1]) fixes it too.
    static_batch = next(iter(declared)) if len(declared) == 1 else None
    batched = set(prep.batch_inputs)
    for node in graph.node:
        if any(name in batched for name in node.input if name):
            batched.update(out for out in node.output if out)
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        target = read_tensor(constants[node.input[1]], prep.external_data_dir).reshape(-1)
        data = shapes.shape(node.input[0])
        static_data = data is not None and all(isinstance(d, int) for d in data)
        fixed = not np.isin(target, (0, -1)).any() or (
            isinstance(static_batch, int) and target.size > 0 and int(target[0]) == static_batch
        )
        if node.input[0] in batched and not static_data and fixed:
            return node, [int(v) for v in target.tolist()]
    return None


def _unfollowed(prep: PreparedModel, shapes: ShapeTable, path: Set[str]) -> str | None:
    """Why the batch cannot be made symbolic (a tensor that stops following it), else ``None``."""
    explained = shapes.shape(prep.explained)
    if explained is None or not explained or explained[0] != BATCH_PROBE:
        return f"the explained tensor {prep.explained!r} does not keep the batch as its first dimension"
    # The declared batch size in place of the builder's batch placeholder.
    pins = {
        name: [(prep.declared.get(name) or [None])[0] if name in prep.batch_inputs else dims[0], *dims[1:]]
        for name, dims in prep.pinned.items()
    }
    declared = infer_shape_table(prep.model, [], pins)
    for name in sorted(path):
        at_declared = declared.shape(name)
        if at_declared is None or any(d is None for d in at_declared):
            continue
        probed = shapes.shape(name)
        if probed is None or len(probed) != len(at_declared) or any(d is None for d in probed):
            return f"the shape of {name!r} cannot be inferred at another batch size"
    return None


def decide_batch(prep: PreparedModel, shapes: ShapeTable, path: Set[str]) -> BatchDecision:
    """Decide the batching of the gradient model; for ``"fixed"``, pin the inputs' batch in ``prep``.

    Args:
        prep: the prepared model; its ``pinned`` and ``batch_inputs`` are updated when fixed.
        shapes: the shape table inferred with the batch inputs at the probe sizes.
        path: the tensors on the differentiated path (from the inputs to the explained tensor).

    Raises:
        InvalidModelError: a Reshape bakes a batch size in, but the inputs declare a dynamic batch.
    """
    declared = _declared_batches(prep)
    sizes = {d if isinstance(d, int) else None for d in declared}
    static = len(sizes) == 1 and None not in sizes
    culprit = _reshape_culprit(prep, shapes)
    if culprit is not None:
        node, target = culprit
        reason = (
            f"Reshape node {describe_node(node)!r} reshapes a batched tensor to the constant shape {target}, "
            "so the model only works for one batch size"
        )
        if not static:
            raise InvalidModelError(
                f"{reason}, but its inputs declare a dynamic batch. Re-export it with a dynamic batch axis "
                "(torch.onnx.export(..., dynamic_axes={name: {0: 'batch'}}) or dynamo=True with dynamic_shapes)"
            )
        return _fix(prep, int(next(iter(sizes))), reason)  # type: ignore[arg-type]
    if not static or not prep.batch_inputs:
        return BatchDecision("dynamic")
    why = _unfollowed(prep, shapes, path)
    if why is not None:
        return _fix(prep, int(next(iter(sizes))), why)  # type: ignore[arg-type]
    return BatchDecision("symbolic")


def _fix(prep: PreparedModel, size: int, reason: str) -> BatchDecision:
    for name in prep.batch_inputs:
        declared = prep.declared.get(name) or []
        pinned = prep.pinned.get(name)
        prep.pinned[name] = [size, *(pinned[1:] if pinned else declared[1:])]
    prep.batch_inputs = []
    return BatchDecision("fixed", size, reason)
