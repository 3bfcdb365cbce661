"""An emitter for the body graph of a ``Scan`` the rules add to the backward graph.

Names come from the :class:`~models.gradient_graph.context.VjpContext` (unique in the whole
model, so a body never shadows an outer tensor); constants are the context's initializers,
which a body reads from the enclosing scope. Imports onnx and numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper

from models.gradient_graph.context import VjpContext

__all__ = ["BodyEmitter"]


class BodyEmitter:
    """Collects the nodes, inputs and outputs of one subgraph whose tensors all have one float type.

    Args:
        ctx: the context that names tensors and holds constants.
        elem_type: the ``onnx.TensorProto`` element type of the body's float tensors.
    """

    def __init__(self, ctx: VjpContext, elem_type: int) -> None:
        self.ctx = ctx
        self.elem_type = elem_type
        self.np_dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
        self.nodes: list[onnx.NodeProto] = []
        self._inputs: list[onnx.ValueInfoProto] = []

    def input(self, hint: str) -> str:
        """Declare the next body input (a state or a scan slice) and return its name."""
        name = self.ctx.fresh(hint)
        self._inputs.append(helper.make_tensor_value_info(name, self.elem_type, None))
        return name

    def op(self, op_type: str, inputs: Sequence[str], **attrs: Any) -> str:
        """Add a one-output node and return its output name."""
        out = self.ctx.fresh(op_type)
        clean = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(
            helper.make_node(op_type, list(inputs), [out], name=self.ctx.fresh(op_type + "_node"), **clean)
        )
        return out

    def scalar(self, value: float) -> str:
        """A rank-0 constant of the body's float type."""
        return self.ctx.const(np.asarray(value, dtype=self.np_dtype))

    def add(self, a: str, b: str) -> str:
        return self.op("Add", [a, b])

    def sub(self, a: str, b: str) -> str:
        return self.op("Sub", [a, b])

    def mul(self, a: str, b: str) -> str:
        return self.op("Mul", [a, b])

    def matmul(self, a: str, b: str) -> str:
        return self.op("MatMul", [a, b])

    def one_minus(self, a: str) -> str:
        return self.op("Sub", [self.scalar(1.0), a])

    def columns(self, x: str, start: int, stop: int) -> str:
        """``x[:, start:stop]`` of a matrix."""
        return self.op("Slice", [x, self.ctx.ints([start]), self.ctx.ints([stop]), self.ctx.ints([1])])

    def graph(self, outputs: Sequence[str], hint: str) -> onnx.GraphProto:
        """The body graph with ``outputs`` (states first, then scan outputs, as ``Scan`` orders them).

        An output that is a body input, an outer tensor, or listed twice is passed through an
        ``Identity``, so every body output is produced in the body under its own name.
        """
        produced = {out for node in self.nodes for out in node.output}
        final: list[str] = []
        for out in outputs:
            final.append(out if out in produced and out not in final else self.op("Identity", [out]))
        values = [helper.make_tensor_value_info(name, self.elem_type, None) for name in final]
        return helper.make_graph(list(self.nodes), self.ctx.fresh(hint), list(self._inputs), values)
