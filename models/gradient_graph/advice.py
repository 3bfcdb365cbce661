"""What to do instead, for models the builder cannot differentiate as they are.

Two kinds of real models fail for a reason the user can work around, and the error says how:

* converted classical models (scikit-learn through skl2onnx, ...) whose ops are in the
  ``ai.onnx.ml`` domain: ``LinearClassifier``, ``TreeEnsembleClassifier``, ``SVMClassifier``...
  have no gradient rule, and tree ensembles are piecewise constant (gradient zero almost
  everywhere), so a gradient map of them says nothing;
* models whose graph input is integer (token or byte ids): there is no gradient with respect to
  an index, only with respect to a float tensor computed from it (the embedding lookup's output,
  or the input cast to float).

Imports onnx only.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from models.gradient_graph.errors import describe_node
from models.gradient_graph.shapes import FLOAT_TYPES, infer_shape_table

__all__ = ["ML_DOMAIN", "integer_input_advice", "ml_ops_hint", "no_default_domain_advice"]

ML_DOMAIN = "ai.onnx.ml"
_SHOWN = 4


def ml_ops_hint(op_types: Sequence[str]) -> str:
    """The remedy for ``ai.onnx.ml`` ops (``op_types``) on the differentiated path."""
    ops = ", ".join(sorted(set(op_types)))
    return (
        f"{ops} {'is an' if len(set(op_types)) == 1 else 'are'} {ML_DOMAIN} op"
        f"{'' if len(set(op_types)) == 1 else 's'} of a converted classical model, without a gradient "
        "(tree ensembles are piecewise constant: their gradient is zero almost everywhere). Explain the "
        "underlying network instead if there is one (export it so its graph uses default-domain ops, e.g. "
        "torch.onnx.export), or train a differentiable surrogate on this model's predictions (e.g. "
        "scikit-learn's MLPClassifier converted with skl2onnx, options={'zipmap': False}) and explain the "
        "surrogate; a linear model can be rebuilt exactly from its coefficients as MatMul + Add (+ Softmax)"
    )


def no_default_domain_advice(model: onnx.ModelProto) -> str:
    """Why a model importing no ``ai.onnx`` opset cannot be differentiated, naming its ops."""
    imports = (
        ", ".join(f"{entry.domain or 'ai.onnx'} {entry.version}" for entry in model.opset_import) or "none"
    )
    ops: dict[str, str] = {}
    for index, node in enumerate(model.graph.node):
        key = f"{node.op_type} ({node.domain or 'ai.onnx'})"
        ops.setdefault(key, describe_node(node, index))
    listed = ", ".join(f"{op} node {name!r}" for op, name in list(ops.items())[:_SHOWN])
    more = f" and {len(ops) - _SHOWN} more op types" if len(ops) > _SHOWN else ""
    text = (
        f"the model imports no default-domain (ai.onnx) opset (it imports {imports}), so none of its ops "
        f"has a gradient rule: {listed}{more}"
    )
    ml_ops = [node.op_type for node in model.graph.node if node.domain == ML_DOMAIN]
    if ml_ops:
        return f"{text}. {ml_ops_hint(ml_ops)}"
    return f"{text}. Export the model with default-domain (ai.onnx) ops"


def _float_successors(model: onnx.ModelProto, source: str) -> list[tuple[str, onnx.NodeProto, int, str]]:
    """The first float tensors computed from the integer tensor ``source``.

    Returns:
        ``(name, producer, producer index, per-sample dims as "AxB" or "DIMS" when not static)``.
    """
    shapes = infer_shape_table(model, [])
    reached = {source}
    found: list[tuple[str, onnx.NodeProto, int, str]] = []
    for index, node in enumerate(model.graph.node):
        if not any(name in reached for name in node.input if name):
            continue
        for out in node.output:
            if not out:
                continue
            if shapes.elem_type(out) in FLOAT_TYPES:
                shape = shapes.shape(out)
                static = shape is not None and len(shape) > 1 and all(isinstance(d, int) for d in shape[1:])
                dims = "x".join(str(d) for d in shape[1:]) if static and shape is not None else "DIMS"
                found.append((out, node, index, dims))
            else:
                reached.add(out)
    return found


def integer_input_advice(model: onnx.ModelProto, name: str, elem_type: str, explained: str | None) -> str:
    """The error for an integer graph input ``name``: why, and the float tensor to explain instead.

    Args:
        model: the (prepared) model.
        name: the integer graph input.
        elem_type: its element type's name, e.g. ``"INT64"``.
        explained: the explained tensor, if known (the cut model's output).
    """
    text = (
        f"{name!r} has element type {elem_type}, expected a float type: integer inputs (token or byte "
        "ids) have no gradient, so explain with respect to a float tensor computed from it"
    )
    try:
        candidates = _float_successors(model, name)
    except Exception:  # noqa: BLE001 - advice is best effort; the error stands without it
        candidates = []
    if not candidates:
        return (
            f"{text}. The builder differentiates graph inputs only: cut the model at that float tensor with "
            "onnx.utils.extract_model(src, dst, input_names=[TENSOR], output_names=[OUTPUT]) and serve the cut "
            "model with that tensor as its input"
        )
    first, producer, index, dims = candidates[0]
    others = [c[0] for c in candidates[1:_SHOWN]]
    also = f" (other float tensors computed from it: {others})" if others else ""
    outputs = [explained] if explained else [o.name for o in model.graph.output]
    role = {"Gather": ", the embedding lookup", "Cast": ", the input cast to float"}.get(producer.op_type, "")
    return (
        f"{text}, such as {first!r}, the output of {producer.op_type} node {describe_node(producer, index)!r}"
        f"{role}{also}. The builder differentiates graph inputs only, so cut "
        f"the model there first: python -c \"import onnx.utils; onnx.utils.extract_model('model.onnx', "
        f"'cut.onnx', input_names=[{first!r}], output_names={outputs!r})\", then use {first!r} as the input "
        f'(mollify gradify cut.onnx --input {first} --shape {first}={dims}, or "input_name": {first!r} in '
        "config.json with that tensor's per-sample shape). An embedding's attribution is per embedding value: "
        "sum it over the embedding axis for one score per token"
    )
