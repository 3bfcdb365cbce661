"""Reverse-mode gradient graphs for ONNX models.

:func:`build_gradient_model` turns any ONNX model into one that also returns, for each
differentiated float input ``x``, the vector-Jacobian product ``J^T · cotangent`` of a chosen
explained tensor, for a whole batch in one run (one VJP rule per op: :mod:`.rules`; registered
graph passes, :mod:`.passes`, may differentiate chosen nodes otherwise).

Overriding weights per run (NoiseGrad, FusionGrad): with ``expose_weights=True`` (the default)
every float initializer with at least two elements (single numbers are constants of the
formula, not weights) is also declared as a graph input of the same name. An
initializer that shares its name with a graph input is that input's default value, so a run
that does not feed it uses the stored weight, and a run that feeds it (onnxruntime:
``session.run(None, {..., "conv1.weight": perturbed})``) uses the fed value for that run
only, without copying the model. ``read_gradient_metadata(model).weights`` lists these names.
The price: onnxruntime cannot constant-fold or pre-pack overridable weights (e.g. fuse
Conv+BatchNorm), so build with ``expose_weights=False`` when no weight is ever overridden.

Models stored with external data (``model.onnx`` + ``model.onnx.data``, PyTorch's default): load
them with ``load_model(path, external_data=False)`` and build with ``external_data_dir`` set to
their folder; weights then stay in their files (:mod:`.external_data`), which keeps models over
2 GB working. Exports with a fixed batch size are handled by :mod:`.batching`.

The builder imports onnx and numpy only; running the result is ``models.runtime``'s job.
"""

from __future__ import annotations

from models.gradient_graph.builder import build_gradient_model
from models.gradient_graph.errors import GradientGraphError, InvalidModelError, UnsupportedOpError
from models.gradient_graph.loading import load_model
from models.gradient_graph.metadata import GradientMetadata, read_gradient_metadata
from models.gradient_graph.names import BATCH_DIM, cotangent_name, gradient_name
from models.gradient_graph.rules import supported_ops

__all__ = [
    "BATCH_DIM",
    "GradientGraphError",
    "GradientMetadata",
    "InvalidModelError",
    "UnsupportedOpError",
    "build_gradient_model",
    "cotangent_name",
    "gradient_name",
    "load_model",
    "read_gradient_metadata",
    "supported_ops",
]
