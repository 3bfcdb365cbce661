"""Which initializers a gradient model exposes as overridable weights, and the constants rules may read.

NoiseGrad (Bykov et al. 2022) perturbs every float weight per run. An initializer that is also a
graph input is that input's default value, so onnxruntime lets a run override it without
copying the model. Imports onnx and numpy only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

import numpy as np
import onnx

from models.gradient_graph.external_data import read_tensor
from models.gradient_graph.shapes import FLOAT_TYPES
from models.gradient_graph.subgraphs import node_subgraphs

__all__ = ["LazyConstants", "exposed_weights"]

# Float inputs of these op slots are parameters that must stay constant (scales, pads...),
# never weights to perturb, so they are not exposed as overridable inputs.
_STATIC_SLOTS: dict[str, frozenset[int]] = {
    "Resize": frozenset({1, 2, 3}),
    "Upsample": frozenset({1}),
    "Pad": frozenset({1, 2, 3}),
    "Range": frozenset({0, 1, 2}),
    "ConstantOfShape": frozenset({0}),
    "Clip": frozenset({1, 2}),
    "Pow": frozenset({1}),
}


class LazyConstants(Mapping[str, np.ndarray]):
    """Initializer values converted to numpy only when a rule asks for them.

    Tensors stored in external data files are read from ``external_data_dir`` then, one at a time.
    """

    def __init__(
        self, tensors: Mapping[str, onnx.TensorProto], external_data_dir: str | os.PathLike[str] | None = None
    ) -> None:
        self._tensors = tensors
        self._folder = external_data_dir
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = read_tensor(self._tensors[name], self._folder)
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def exposed_weights(graph: onnx.GraphProto) -> list[str]:
    """Names of the float initializers to expose, in graph order."""
    static_use: set[str] = set()
    for node in _all_nodes(graph):
        slots = _STATIC_SLOTS.get(node.op_type, frozenset())
        static_use.update(name for i, name in enumerate(node.input) if i in slots and name)
    # Single numbers are constants of the formula (scales, epsilons, exponents), not weights.
    return [
        t.name
        for t in graph.initializer
        if t.data_type in FLOAT_TYPES and int(np.prod(t.dims)) >= 2 and t.name not in static_use
    ]


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """The nodes of ``graph`` and of the subgraphs (If branches) nested in it."""
    for node in graph.node:
        yield node
        for sub in node_subgraphs(node):
            yield from _all_nodes(sub)
