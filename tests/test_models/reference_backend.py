"""A second backend for the runtime seam: onnx's pure-Python reference evaluator.

:class:`ReferenceBackend` is the worked example of a backend (CONTRIBUTING.md, "Adding a
backend"): open a model, describe its tensors, run it; the sessions do the rest. Tests of the
sessions (``tests/test_models/test_runtime_backends.py``) and of the server
(``tests/test_service/test_service_backend.py``) run it beside ONNX Runtime and compare.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper
from onnx.external_data_helper import load_external_data_for_model
from onnx.reference import ReferenceEvaluator

from models.runtime import TensorSpec
from models.runtime.backend import OutputSpecs
from models.runtime.graph import value_dims

__all__ = ["ReferenceBackend", "ReferenceModel"]


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    elem_type = value.type.tensor_type.elem_type
    dtype = helper.tensor_dtype_to_np_dtype(elem_type) if elem_type else None
    return TensorSpec(value.name, dtype, tuple(value_dims(value)))


class ReferenceModel:
    """One model run by ``onnx.reference.ReferenceEvaluator`` (a :class:`BackendModel`)."""

    provider = "onnx.reference"

    def __init__(self, model: onnx.ModelProto) -> None:
        self._model = model
        self._evaluator = ReferenceEvaluator(model)
        self._lock = threading.Lock()  # the evaluator keeps per-run state
        self.runs = 0

    @property
    def inputs(self) -> list[TensorSpec]:
        weights = {init.name for init in self._model.graph.initializer}
        return [_spec(value) for value in self._model.graph.input if value.name not in weights]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [_spec(value) for value in self._model.graph.output]

    def run(self, names: Sequence[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            self.runs += 1
            return [np.asarray(value) for value in self._evaluator.run(list(names), dict(feed))]


class ReferenceBackend:
    """A :class:`Backend` on onnx's reference evaluator: slow, pure Python, no onnxruntime.

    ``opened`` lists every model it opened, in order (tests check which graphs ran here). Picklable
    until it opens a model, as the batch engines need.
    """

    name = "onnx.reference"

    def __init__(self) -> None:
        self.opened: list[ReferenceModel] = []

    def open(
        self,
        model: onnx.ModelProto,
        *,
        external_data_dir: Path | None = None,
        output_specs: OutputSpecs | None = None,
    ) -> ReferenceModel:
        if external_data_dir is not None:
            loaded = onnx.ModelProto()
            loaded.CopyFrom(model)
            load_external_data_for_model(loaded, str(external_data_dir))
            model = loaded
        opened = ReferenceModel(model)
        self.opened.append(opened)
        return opened
