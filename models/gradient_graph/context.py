"""The emitter that vector-Jacobian rules write ONNX nodes through.

A rule sees the forward node, the names of its output gradients and which inputs need a
gradient; it calls the helpers here to add nodes and constants and returns the names of its
input gradients. The context knows static shapes (:mod:`models.gradient_graph.shapes`), the
constant tensors the model cannot override, and the opset the emitted nodes must conform to.
Imports onnx and numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from models.gradient_graph.errors import GradientGraphError, UnsupportedOpError, describe_node, unsupported_op
from models.gradient_graph.shapes import Dim, ShapeTable, TensorInfo

__all__ = ["SubgraphDifferentiator", "VjpContext", "get_attr"]

_PREFIX = "mollify_vjp/"

PIN_HINT = (
    "Pin the input shapes (build_gradient_model(..., input_shapes={name: per-sample shape}) "
    "or `--shape` on the command line) so that every non-batch dimension is static"
)
DEFAULT_HINT = (
    "Re-export the model with supported ops (see models.gradient_graph.supported_ops()), "
    "pin input shapes, or ask for the op to be added"
)


def get_attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of attribute ``name`` of ``node`` (ints/floats/strings decoded), else ``default``."""
    for attr in node.attribute:
        if attr.name == name:
            value = helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return default


#: ``(ctx, graph, seeds, targets, where) -> gradients``: differentiates a subgraph (an If branch)
#: into ``ctx`` from ``(tensor, gradient)`` seeds, returning the gradient of each target (an outer
#: tensor the subgraph reads, ``None`` where none flows); ``where`` names the subgraph in errors.
SubgraphDifferentiator = Callable[
    ["VjpContext", onnx.GraphProto, Sequence[tuple[str, str]], Sequence[str], str], dict[str, "str | None"]
]

_INT64_OUTPUTS = frozenset({"Shape", "Size", "NonZero", "ArgMax", "ArgMin"})
_BOOL_OUTPUTS = frozenset(
    {"Greater", "Less", "Equal", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Not", "Xor", "IsNaN", "IsInf"}
)


class VjpContext:
    """Collects the nodes and constants of the backward graph.

    Args:
        shapes: static knowledge of the forward tensors.
        constants: values of the tensors that cannot change between runs (non-overridable
            initializers), by name.
        opsets: the model's opset per domain (``""`` for the default domain).
        taken_names: every tensor and node name already used in the model.
        node_index: position of each forward node (by ``id``), to describe unnamed nodes.
        file_opsets: the opset per domain of the model file as given, which errors quote (the
            builder may have upgraded the default domain); default ``opsets``.
    """

    def __init__(
        self,
        shapes: ShapeTable,
        constants: Mapping[str, np.ndarray],
        opsets: Mapping[str, int],
        taken_names: set[str],
        node_index: Mapping[int, int] | None = None,
        file_opsets: Mapping[str, int] | None = None,
    ) -> None:
        self.shapes = shapes
        self._constants = constants
        self.opsets = dict(opsets)
        self.opset = int(opsets.get("", 0))
        self.file_opsets = dict(file_opsets) if file_opsets is not None else dict(opsets)
        self._taken = taken_names
        self._node_index = node_index or {}
        self._counter = [0]  # a list, so child contexts count on from the same number
        self.nodes: list[onnx.NodeProto] = []
        # (forward anchor, node) pairs placed right after their anchor (see early_op_multi).
        self.early_nodes: list[tuple[onnx.NodeProto, onnx.NodeProto]] = []
        # Forward node producing each forward tensor (set by the builder).
        self.forward_producers: dict[str, onnx.NodeProto] = {}
        self.initializers: list[onnx.TensorProto] = []
        self._const_cache: dict[tuple[int, tuple[int, ...], bytes], str] = {}
        self._shape_cache: dict[str, str] = {}
        self._dtypes: dict[str, int] = {}
        self._producer: dict[str, onnx.NodeProto] = {}
        self._consumers: dict[str, int] = {}
        # Set by the builder: how rules of subgraph-carrying ops (If) differentiate a subgraph.
        self.differentiate_subgraph: SubgraphDifferentiator | None = None

    def child(self) -> VjpContext:
        """A context for the nodes of a subgraph (an If branch of the backward graph).

        Names, constants, element types and shapes are shared with this context; the child has its
        own node list, and its shape probes are emitted in the subgraph (they may read the
        subgraph's own tensors), reusing those this context emitted so far.
        """
        sub = VjpContext.__new__(VjpContext)
        sub.__dict__.update(self.__dict__)
        sub.nodes = []
        sub.early_nodes = []
        sub.forward_producers = {}
        sub._shape_cache = dict(self._shape_cache)
        sub._producer = {}
        sub._consumers = {}
        return sub

    # ----------------------------------------------------------------- names and errors
    def fresh(self, hint: str = "t") -> str:
        """A tensor or node name not used anywhere in the model."""
        while True:
            self._counter[0] += 1
            name = f"{_PREFIX}{hint}_{self._counter[0]}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def describe(self, node: onnx.NodeProto) -> str:
        return describe_node(node, self._node_index.get(id(node)))

    def unsupported(self, node: onnx.NodeProto, reason: str, hint: str = DEFAULT_HINT) -> UnsupportedOpError:
        """The error a rule raises for a variant it cannot differentiate."""
        return unsupported_op(node, self.describe(node), self.file_opsets, self.opsets, reason, hint)

    def need_static(self, node: onnx.NodeProto, what: str) -> GradientGraphError:
        """The error a rule raises when a shape it needs is not static."""
        return self.unsupported(node, f"{what} is not known statically", PIN_HINT)

    # ----------------------------------------------------------------- emitting nodes
    def op(self, op_type: str, inputs: Sequence[str], *, domain: str = "", **attrs: Any) -> str:
        """Add a one-output node and return its output name."""
        return self.op_multi(op_type, inputs, 1, domain=domain, **attrs)[0]

    def op_multi(
        self, op_type: str, inputs: Sequence[str], n_outputs: int, *, domain: str = "", **attrs: Any
    ) -> list[str]:
        """Add a node with ``n_outputs`` outputs and return their names."""
        outputs = [self.fresh(op_type) for _ in range(n_outputs)]
        clean = {k: v for k, v in attrs.items() if v is not None}
        node = helper.make_node(
            op_type, list(inputs), outputs, name=self.fresh(op_type + "_node"), domain=domain, **clean
        )
        self.nodes.append(node)
        out_type = self._output_type(op_type, inputs, clean)
        for name in outputs:
            self._producer[name] = node
            if out_type:
                self._dtypes[name] = out_type
        for name in inputs:
            self._consumers[name] = self._consumers.get(name, 0) + 1
        return outputs

    def early_op_multi(
        self, anchor: onnx.NodeProto, op_type: str, inputs: Sequence[str], n_outputs: int, **attrs: Any
    ) -> list[str]:
        """:meth:`op_multi` for a node that reads only forward tensors available after ``anchor``:
        it is placed right after ``anchor`` instead of in the backward pass."""
        outputs = self.op_multi(op_type, inputs, n_outputs, **attrs)
        self.early_nodes.append((anchor, self.nodes.pop()))
        return outputs

    def _output_type(self, op_type: str, inputs: Sequence[str], attrs: Mapping[str, Any]) -> int:
        """The element type of an emitted node's outputs, so later constants can match it."""
        if op_type == "Cast":
            return int(attrs["to"])
        if op_type in _INT64_OUTPUTS:
            return onnx.TensorProto.INT64
        if op_type in _BOOL_OUTPUTS:
            return onnx.TensorProto.BOOL
        if op_type == "ConstantOfShape":
            value = attrs.get("value")
            return int(value.data_type) if value is not None else onnx.TensorProto.FLOAT
        if op_type == "Where" and len(inputs) > 1:
            return self.dtype(inputs[1])
        return self.dtype(inputs[0]) if inputs else 0

    def rename_output(self, name: str, new_name: str) -> bool:
        """Rename a tensor this context produced and nobody consumes; False when that is not safe."""
        node = self._producer.get(name)
        if node is None or self._consumers.get(name, 0):
            return False
        for i, out in enumerate(node.output):
            if out == name:
                node.output[i] = new_name
        del self._producer[name]
        self._producer[new_name] = node
        return True

    def request_output(
        self, node: onnx.NodeProto, index: int, elem_type: int, shape: tuple[Dim, ...] | None = None
    ) -> str:
        """The name of optional output ``index`` of a forward node, adding the output if it is absent."""
        while len(node.output) <= index:
            node.output.append("")
        if not node.output[index]:
            node.output[index] = self.fresh(f"{node.op_type}_out{index}")
            self.declare(node.output[index], elem_type, shape)
        name: str = node.output[index]
        return name

    # ----------------------------------------------------------------- constants
    def const(self, value: np.ndarray | float | int, dtype: Any = None) -> str:
        """A constant tensor (an initializer the model cannot override), deduplicated by value."""
        array = np.asarray(value, dtype=dtype)
        # ascontiguousarray returns at least 1-D: reshape keeps a rank-0 value a scalar.
        tensor = numpy_helper.from_array(np.ascontiguousarray(array).reshape(array.shape))
        key = (tensor.data_type, tuple(array.shape), array.tobytes())
        cached = self._const_cache.get(key)
        if cached is not None:
            return cached
        tensor.name = self.fresh("const")
        self.initializers.append(tensor)
        self._const_cache[key] = tensor.name
        self._dtypes[tensor.name] = tensor.data_type
        return tensor.name

    def ints(self, values: Sequence[int]) -> str:
        """A 1-D int64 constant."""
        return self.const(np.asarray(list(values), dtype=np.int64))

    def scalar(self, value: float, like: str) -> str:
        """A rank-0 constant with the element type of tensor ``like``."""
        return self.const(np.asarray(value, dtype=self.np_dtype(like)))

    def full_const(self, value: np.ndarray, like: str) -> str:
        """A constant array with the element type of tensor ``like``."""
        return self.const(np.asarray(value, dtype=self.np_dtype(like)))

    def const_value(self, name: str) -> np.ndarray | None:
        """The value of a tensor that is constant in every run (``None`` if dynamic or overridable)."""
        if not name:
            return None
        return self._constants.get(name)

    def const_ints(self, name: str) -> list[int] | None:
        value = self.const_value(name)
        return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]

    # ----------------------------------------------------------------- types and shapes
    def dtype(self, name: str) -> int:
        """The element type of a tensor (forward or emitted); float32 when unknown."""
        if name in self._dtypes:
            return self._dtypes[name]
        elem = self.shapes.elem_type(name)
        return elem if elem else onnx.TensorProto.FLOAT

    def np_dtype(self, name: str) -> np.dtype[Any]:
        return np.dtype(helper.tensor_dtype_to_np_dtype(self.dtype(name)))

    def shape(self, name: str) -> tuple[Dim, ...] | None:
        return self.shapes.shape(name)

    def rank(self, name: str) -> int | None:
        return self.shapes.rank(name)

    def require_rank(self, node: onnx.NodeProto, name: str) -> int:
        rank = self.rank(name)
        if rank is None:
            raise self.need_static(node, f"the rank of {name!r}")
        return rank

    def static_dims(self, name: str, axes: Sequence[int]) -> list[int] | None:
        """The sizes of ``axes`` of tensor ``name`` when all are static ints, else ``None``."""
        shape = self.shape(name)
        if shape is None:
            return None
        dims = [shape[a] for a in axes]
        if all(isinstance(d, int) for d in dims):
            return [int(d) for d in dims]  # type: ignore[arg-type]
        return None

    def shape_of(self, name: str) -> str:
        """``Shape(name)``, emitted once per tensor (beside a forward tensor's producer, see :meth:`_early_probe`)."""
        return self._early_probe("Shape", name)

    def size_of(self, name: str) -> str:
        """``Size(name)``, emitted once per tensor, like :meth:`shape_of`."""
        return self._early_probe("Size", name)

    def _early_probe(self, op_type: str, name: str) -> str:
        # A Shape or Size node keeps its input's buffer alive until it runs: right after a forward
        # tensor's producer, the backward pass does not hold a whole activation for its shape.
        key = f"{op_type}:{name}"
        cached = self._shape_cache.get(key)
        if cached is None:
            producer = self.forward_producers.get(name)
            if producer is None:
                cached = self.op(op_type, [name])
            else:
                cached = self.early_op_multi(producer, op_type, [name], 1)[0]
            self._dtypes[cached] = onnx.TensorProto.INT64
            self._shape_cache[key] = cached
        return cached

    def declare(self, name: str, elem_type: int, shape: tuple[Dim, ...] | None = None) -> None:
        """Record the type (and shape) of a tensor the rule created or requested."""
        self._dtypes[name] = elem_type
        self.shapes.set(name, TensorInfo(elem_type, shape))

    # ----------------------------------------------------------------- opset-portable helpers
    def reduce_sum(self, x: str, axes: Sequence[int] | str, keepdims: bool = True) -> str:
        """``ReduceSum`` over ``axes`` (a list or an int64 tensor name); axes as input from opset 13."""
        if self.opset >= 13:
            axes_name = axes if isinstance(axes, str) else self.ints(axes)
            return self.op("ReduceSum", [x, axes_name], keepdims=int(keepdims))
        if isinstance(axes, str):
            raise GradientGraphError(f"dynamic reduction axes need opset >= 13, the model has {self.opset}")
        return self.op("ReduceSum", [x], axes=list(axes), keepdims=int(keepdims))

    def reduce_mean(self, x: str, axes: Sequence[int], keepdims: bool = True) -> str:
        """``ReduceMean`` over ``axes``; axes as input from opset 18."""
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.ints(axes)], keepdims=int(keepdims))
        return self.op("ReduceMean", [x], axes=list(axes), keepdims=int(keepdims))

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.ints(axes)])
        return self.op("Unsqueeze", [x], axes=list(axes))

    def squeeze(self, x: str, axes: Sequence[int]) -> str:
        if self.opset >= 13:
            return self.op("Squeeze", [x, self.ints(axes)])
        return self.op("Squeeze", [x], axes=list(axes))

    def split(self, x: str, axis: int, sizes: Sequence[int] | str, n_outputs: int) -> list[str]:
        """``Split`` into ``n_outputs`` pieces of ``sizes`` (a list or an int64 tensor name)."""
        if self.opset >= 13:
            sizes_name = sizes if isinstance(sizes, str) else self.ints(sizes)
            return self.op_multi("Split", [x, sizes_name], n_outputs, axis=axis)
        if isinstance(sizes, str):
            raise GradientGraphError(f"dynamic split sizes need opset >= 13, the model has {self.opset}")
        return self.op_multi("Split", [x], n_outputs, axis=axis, split=list(sizes))

    def scatter_add(self, node: onnx.NodeProto, data: str, indices: str, updates: str, axis: int) -> str:
        """``ScatterElements`` with ``reduction="add"`` (opset 16 and later)."""
        if self.opset < 16:
            raise self.unsupported(
                node,
                f"its gradient needs ScatterElements with reduction='add' (opset 16); the model has opset {self.opset}",
                "Re-export the model with opset 16 or later",
            )
        return self.op("ScatterElements", [data, indices, updates], axis=axis, reduction="add")

    def mask(self, condition: str, like: str) -> str:
        """A boolean tensor cast to the element type of ``like`` (1 where true, 0 elsewhere)."""
        return self.op("Cast", [condition], to=self.dtype(like))

    def zeros_like(self, name: str) -> str:
        """Zeros with the shape and element type of tensor ``name``."""
        return self.zeros(self.shape_of(name), name)

    def zeros(self, shape: str, like: str) -> str:
        """Zeros of the run-time shape ``shape`` (an int64 tensor name) and the element type of ``like``."""
        zero = numpy_helper.from_array(np.zeros((1,), dtype=self.np_dtype(like)))
        out = self.op("ConstantOfShape", [shape], value=zero)
        self._dtypes[out] = self.dtype(like)
        return out

    def cast_like(self, x: str, like: str) -> str:
        return x if self.dtype(x) == self.dtype(like) else self.op("Cast", [x], to=self.dtype(like))

    # ----------------------------------------------------------------- broadcasting
    def reduce_to_shape(self, grad: str, operand: str, grad_shape: tuple[Dim, ...] | None) -> str:
        """Sum ``grad`` (shaped like the broadcast result ``grad_shape``) back to the shape of ``operand``.

        Static shapes decide the reduced axes at build time; where a dimension is unknown the
        axes are computed at run time (opset 13 and later).
        """
        target = self.shape(operand)
        if target is not None and grad_shape is not None and len(grad_shape) >= len(target):
            lead = len(grad_shape) - len(target)
            axes = list(range(lead))
            static = True
            for i, d in enumerate(target):
                if d == 1 and grad_shape[lead + i] != 1:
                    axes.append(lead + i)
                elif d is None:
                    # Unknown size: it may be a broadcast 1, so let the run decide.
                    static = False
                    break
                # Any other size (static > 1 or batch-dependent) equals the result's: nothing to sum.
            if static:
                if not axes:
                    return grad
                reduced = self.reduce_sum(grad, axes, keepdims=True)
                return self.squeeze(reduced, list(range(lead))) if lead else reduced
        return self._reduce_to_shape_dynamic(grad, operand, grad_shape)

    def _reduce_to_shape_dynamic(self, grad: str, operand: str, grad_shape: tuple[Dim, ...] | None) -> str:
        target_rank = self.rank(operand)
        grad_rank = None if grad_shape is None else len(grad_shape)
        if target_rank is None or grad_rank is None or self.opset < 13:
            raise GradientGraphError(
                f"cannot tell how {operand!r} is broadcast (its rank or the result's rank is unknown). {PIN_HINT}"
            )
        lead = grad_rank - target_rank
        shape_t = self.shape_of(operand)
        padded = self.op("Concat", [self.ints([1] * lead), shape_t], axis=0) if lead else shape_t
        one = self.ints([1])
        shape_g = self.op("Shape", [grad])
        broadcast = self.op(
            "And", [self.op("Equal", [padded, one]), self.op("Not", [self.op("Equal", [shape_g, one])])]
        )
        axes = self.op("Reshape", [self.op("NonZero", [broadcast]), self.ints([-1])])
        reduced = self.op("ReduceSum", [grad, axes], keepdims=1, noop_with_empty_axes=1)
        return self.op("Reshape", [reduced, shape_t])
