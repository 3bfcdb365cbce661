"""Static shape and dtype knowledge for the builder, with the batch dimension told apart.

Shape inference runs twice with the batch dimension of the batched inputs pinned to two
different sizes (7 and 11). A dimension equal in both runs is static (an ``int``); one that
differs depends on the batch (a ``str`` such as ``"7:11"`` for the batch itself, ``"14:22"`` for
twice it), so rules never bake a batch size into the graph but can still tell a broadcast
dimension (static 1) from a batched one; ``None`` is unknown. Imports onnx and numpy only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import onnx

from models.gradient_graph.subgraphs import graph_outer_reads

__all__ = ["FLOAT_TYPES", "Dim", "ShapeTable", "TensorInfo", "infer_shape_table", "infer_subgraph_shapes"]

Dim = int | str | None

FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
)

_PROBE_BATCHES = (7, 11)
# Float initializers larger than this are replaced by typed graph inputs in the probe models:
# inference needs only their shapes, and copying weights twice would dominate the build time.
_STRIP_ELEMENTS = 64


@dataclass(frozen=True)
class TensorInfo:
    """The element type (``onnx.TensorProto`` enum, or ``None``) and shape (or ``None``) of a tensor."""

    elem_type: int | None
    shape: tuple[Dim, ...] | None


class ShapeTable:
    """Lookup of element types and shapes by tensor name."""

    def __init__(self, infos: Mapping[str, TensorInfo]) -> None:
        self._infos = dict(infos)

    def info(self, name: str) -> TensorInfo | None:
        return self._infos.get(name)

    def elem_type(self, name: str) -> int | None:
        info = self._infos.get(name)
        return None if info is None else info.elem_type

    def shape(self, name: str) -> tuple[Dim, ...] | None:
        info = self._infos.get(name)
        return None if info is None else info.shape

    def rank(self, name: str) -> int | None:
        shape = self.shape(name)
        return None if shape is None else len(shape)

    def is_float(self, name: str) -> bool:
        """True for float tensors, and for tensors of unknown type (assumed float, the safe side)."""
        elem = self.elem_type(name)
        return elem is None or elem in FLOAT_TYPES

    def set(self, name: str, info: TensorInfo) -> None:
        self._infos[name] = info


def _value_infos(graph: onnx.GraphProto) -> Iterable[onnx.ValueInfoProto]:
    yield from graph.input
    yield from graph.output
    yield from graph.value_info


def _read_type(value: onnx.ValueInfoProto) -> tuple[int | None, tuple[object, ...] | None]:
    if not value.type.HasField("tensor_type"):
        return None, None
    tensor = value.type.tensor_type
    elem = tensor.elem_type or None
    if not tensor.HasField("shape"):
        return elem, None
    dims: list[object] = []
    for d in tensor.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and not d.dim_param.startswith("unk__"):
            # onnx names dims it cannot infer "unk__<n>": unknown, not a shared symbol.
            dims.append("sym:" + d.dim_param)
        else:
            dims.append(None)
    return elem, tuple(dims)


def _probe_model(
    model: onnx.ModelProto, batch_inputs: Sequence[str], batch: int, shapes: Mapping[str, Sequence[Dim]]
) -> onnx.ModelProto:
    graph = model.graph
    probe = onnx.GraphProto(name=graph.name)
    probe.node.extend(graph.node)
    names_in_inputs = {i.name for i in graph.input}
    for value in graph.input:
        new = probe.input.add()
        new.CopyFrom(value)
        if value.name in shapes:
            _write_shape(
                new, [batch, *shapes[value.name][1:]] if value.name in batch_inputs else shapes[value.name]
            )
        elif value.name in batch_inputs and value.type.tensor_type.HasField("shape"):
            _write_shape(new, [batch, *_dims_of(value)[1:]])
    for init in graph.initializer:
        # External data stays in its file: inference (data propagation) would fail to read it.
        external = init.HasField("data_location") and init.data_location == onnx.TensorProto.EXTERNAL
        if external or (init.data_type in FLOAT_TYPES and _numel(init.dims) > _STRIP_ELEMENTS):
            if init.name not in names_in_inputs:
                probe.input.append(
                    onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
                )
        else:
            probe.initializer.append(init)
    for value in graph.output:
        # Declared output shapes may carry a stale static batch size; inference re-derives them.
        probe.output.append(
            onnx.helper.make_tensor_value_info(value.name, value.type.tensor_type.elem_type, None)
        )
    out = onnx.ModelProto(ir_version=model.ir_version, graph=probe)
    out.opset_import.extend(model.opset_import)
    return out


def _dims_of(value: onnx.ValueInfoProto) -> list[Dim]:
    out: list[Dim] = []
    for d in value.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _write_shape(value: onnx.ValueInfoProto, dims: Sequence[Dim]) -> None:
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        elif isinstance(d, str):
            dim.dim_param = d


def _numel(dims: Iterable[int]) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _infer(probe: onnx.ModelProto) -> onnx.ModelProto:
    for data_prop in (True, False):
        try:
            return onnx.shape_inference.infer_shapes(
                probe, check_type=False, strict_mode=False, data_prop=data_prop
            )
        except Exception:  # noqa: BLE001 - inference is best effort; rules report what they miss
            continue
    return probe


def _collect(model: onnx.ModelProto) -> dict[str, tuple[int | None, tuple[object, ...] | None]]:
    found: dict[str, tuple[int | None, tuple[object, ...] | None]] = {}
    for value in _value_infos(model.graph):
        read = _read_type(value)
        known = found.get(value.name)
        if (
            known is None or known[1] is None or read[1] is not None
        ):  # keep an input's shape over a bare output
            found[value.name] = read
    for init in model.graph.initializer:
        found[init.name] = (init.data_type, tuple(int(d) for d in init.dims))
    return found


def _merge_dim(a: object, b: object) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a if a == b else f"{a}:{b}"
    if isinstance(a, str) and a == b:
        return a
    return None


def infer_shape_table(
    model: onnx.ModelProto,
    batch_inputs: Sequence[str],
    pinned: Mapping[str, Sequence[Dim]] | None = None,
) -> ShapeTable:
    """Infer element types and shapes of every tensor of ``model``.

    Args:
        model: the (prepared) model.
        batch_inputs: graph inputs whose leading dimension is the batch.
        pinned: full shapes (batch dimension included, as any placeholder) of some graph inputs.

    Returns:
        A :class:`ShapeTable` where batch-dependent dimensions are strings and the batch itself
        is ``"7:11"``.
    """
    pinned = pinned or {}
    first, second = [_infer_run(_probe_model(model, batch_inputs, b, pinned)) for b in _PROBE_BATCHES]
    infos = _merge_runs(first, second)
    for init in model.graph.initializer:
        infos[init.name] = TensorInfo(init.data_type, tuple(int(d) for d in init.dims))
    return ShapeTable(infos)


_Run = dict[str, tuple[int | None, tuple[object, ...] | None]]


def _merge_runs(first: _Run, second: _Run) -> dict[str, TensorInfo]:
    """Tensor infos from the two probe runs: dims that differ between them depend on the batch."""
    infos: dict[str, TensorInfo] = {}
    for name, (elem, dims) in first.items():
        other = second.get(name)
        if other is None:
            infos[name] = TensorInfo(elem, None)
            continue
        elem2, dims2 = other
        elem_final = elem if elem == elem2 else (elem or elem2)
        if dims is None or dims2 is None or len(dims) != len(dims2):
            infos[name] = TensorInfo(elem_final, None)
        else:
            infos[name] = TensorInfo(
                elem_final, tuple(_merge_dim(a, b) for a, b in zip(dims, dims2, strict=False))
            )
    return infos


def _probe_dim(dim: Dim, run: int) -> object:
    """A table dimension as probe run ``run`` saw it: a batch-dependent ``"a:b"`` is ``a`` or ``b``."""
    if isinstance(dim, str) and not dim.startswith("sym:"):
        parts = dim.split(":")
        if len(parts) == 2 and all(p.lstrip("-").isdigit() for p in parts):
            return int(parts[run])
        return None
    return dim


def _onnx_dim(dim: object) -> int | str | None:
    """A dimension of a probe run as ``make_tensor_value_info`` takes it."""
    if isinstance(dim, int):
        return dim
    if isinstance(dim, str) and dim.startswith("sym:"):
        return dim[4:]
    return None


def _small_constants(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Initializers whose values shape inference may read (not external, small or not float)."""
    return {
        t.name: t
        for t in graph.initializer
        if t.data_location != onnx.TensorProto.EXTERNAL
        and (t.data_type not in FLOAT_TYPES or _numel(t.dims) <= _STRIP_ELEMENTS)
    }


def _branch_probe(
    branch: onnx.GraphProto, found: _Run, values: Mapping[str, onnx.TensorProto], model: onnx.ModelProto
) -> onnx.ModelProto:
    """A model of its own for a subgraph: each outer tensor it reads is an initializer when ``values``
    holds it (shape computations need values), else an input typed as ``found`` (one probe run) says."""
    probe = onnx.GraphProto(name=branch.name or "subgraph")
    probe.node.extend(branch.node)
    probe.initializer.extend(branch.initializer)
    for name in sorted(graph_outer_reads(branch)):
        if name in values:
            probe.initializer.append(values[name])
            continue
        elem, dims = found.get(name, (None, None))
        shape = None if dims is None else [_onnx_dim(d) for d in dims]
        probe.input.append(onnx.helper.make_tensor_value_info(name, elem or onnx.TensorProto.FLOAT, shape))
    for value in branch.output:
        probe.output.append(
            onnx.helper.make_tensor_value_info(value.name, value.type.tensor_type.elem_type, None)
        )
    out = onnx.ModelProto(ir_version=model.ir_version, graph=probe)
    out.opset_import.extend(model.opset_import)
    return out


def _if_hints(probe: onnx.ModelProto, found: _Run, depth: int) -> list[onnx.ValueInfoProto]:
    """Types of If outputs onnx could not infer, from their branches (probed as models of their own).

    onnx infers a branch without the values of the outer constants it reads (reduction axes,
    reshape targets), so an If output often stays unknown although each branch alone is static.
    A dimension the two branches disagree on is unknown.
    """
    values = _small_constants(probe.graph)
    hints: list[onnx.ValueInfoProto] = []
    for node in probe.graph.node:
        if node.op_type != "If" or node.domain not in ("", "ai.onnx"):
            continue
        unknown = [i for i, out in enumerate(node.output) if out and found.get(out, (None, None))[1] is None]
        if not unknown:
            continue
        branches = {a.name: a.g for a in node.attribute if a.name in ("then_branch", "else_branch")}
        if len(branches) != 2:
            continue
        runs = {
            key: _infer_run(_branch_probe(g, found, values, probe), depth + 1) for key, g in branches.items()
        }
        for i in unknown:
            then_info = runs["then_branch"].get(branches["then_branch"].output[i].name, (None, None))
            else_info = runs["else_branch"].get(branches["else_branch"].output[i].name, (None, None))
            (elem_t, dims_t), (elem_e, dims_e) = then_info, else_info
            if dims_t is None or dims_e is None or len(dims_t) != len(dims_e):
                continue
            dims = [_onnx_dim(a) if a == b else None for a, b in zip(dims_t, dims_e, strict=True)]
            elem = elem_t or elem_e or onnx.TensorProto.FLOAT
            hints.append(onnx.helper.make_tensor_value_info(node.output[i], elem, dims))
    return hints


_MAX_DEPTH = 8


def _infer_run(probe: onnx.ModelProto, depth: int = 0) -> _Run:
    """One probe run: onnx's inference, then If outputs it left unknown taken from their branches."""
    found = _collect(_infer(probe))
    if depth > _MAX_DEPTH:
        return found
    for _ in range(sum(n.op_type == "If" for n in probe.graph.node)):
        hints = _if_hints(probe, found, depth)
        if not hints:
            break
        hinted = onnx.ModelProto()
        hinted.CopyFrom(probe)
        hinted.graph.value_info.extend(hints)
        probe = hinted
        found = _collect(_infer(probe))
    return found


def infer_subgraph_shapes(
    graph: onnx.GraphProto, outer: ShapeTable, model: onnx.ModelProto
) -> dict[str, TensorInfo]:
    """Element types and shapes of the tensors a subgraph (an If branch) of ``model`` computes.

    onnx's shape inference keeps no shapes of a subgraph's inner tensors, so the subgraph is
    probed as a model of its own: each outer tensor it reads is an input shaped as ``outer``
    says (batch-dependent dims at both probe sizes), or an initializer when it is a small
    constant of ``model`` (shape computations need the values). Returns the infos of the
    subgraph's own tensors, batch-dependent dims as in :func:`infer_shape_table`.
    """
    values = _small_constants(model.graph)
    reads = graph_outer_reads(graph)
    runs: list[_Run] = []
    for run in range(len(_PROBE_BATCHES)):
        found: _Run = {}
        for name in reads:
            info = outer.info(name)
            if info is not None:
                dims = None if info.shape is None else tuple(_probe_dim(d, run) for d in info.shape)
                found[name] = (info.elem_type, dims)
        runs.append(_infer_run(_branch_probe(graph, found, values, model)))
    infos = _merge_runs(runs[0], runs[1])
    for name in reads:
        infos.pop(name, None)
    return infos


#: The batch dimension as it appears in a :class:`ShapeTable`.
BATCH_PROBE = f"{_PROBE_BATCHES[0]}:{_PROBE_BATCHES[1]}"
