"""The JSON record a gradient model carries in ``metadata_props`` and its reader."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import onnx

from models.gradient_graph.errors import InvalidModelError
from models.gradient_graph.names import METADATA_KEY

__all__ = ["GradientMetadata", "read_gradient_metadata", "write_gradient_metadata"]

_FORMAT_VERSION = 1


@dataclass(frozen=True)
class GradientMetadata:
    """What a gradient model computes and how to feed it.

    Attributes:
        inputs: the differentiated graph inputs, in order.
        explained: the tensor whose cotangent is fed (a graph output of the gradient model).
        cotangent: the graph input holding the cotangent, shape of ``explained`` (batch first).
        gradients: differentiated input name -> graph output holding ``J^T · cotangent`` (shape of the input).
        weights: float initializers that are also optional graph inputs: feeding one of them overrides
            its stored value for that run only (NoiseGrad). Empty when built with ``expose_weights=False``.
        opset: the default-domain opset of the gradient model (after any upgrade).
        batch_size: ``None`` when any batch size works; otherwise the only one the model accepts
            (exports without a dynamic batch axis may bake it into the graph, e.g. Reshape constants).
        batching: ``"dynamic"`` (the model declares a symbolic batch), ``"symbolic"`` (it declares a
            static batch, but its graph was checked to work for any, so the batch was made symbolic) or
            ``"fixed"`` (only ``batch_size`` rows per run; ``models.runtime.GradientSession`` splits
            larger batches into runs of that size).
        format_version: version of this record's layout.
    """

    inputs: list[str]
    explained: str
    cotangent: str
    gradients: dict[str, str]
    weights: list[str] = field(default_factory=list)
    opset: int = 0
    batch_size: int | None = None
    batching: str = "dynamic"
    format_version: int = _FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def write_gradient_metadata(model: onnx.ModelProto, metadata: GradientMetadata) -> None:
    """Store ``metadata`` in ``model.metadata_props`` (replacing an older record)."""
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = metadata.to_json()


def read_gradient_metadata(model: onnx.ModelProto) -> GradientMetadata:
    """Read the record written by :func:`~models.gradient_graph.build_gradient_model`.

    Raises:
        InvalidModelError: the model carries no record (it is not a gradient model) or a malformed one.
    """
    raw = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    if raw is None:
        raise InvalidModelError(
            f"the model has no {METADATA_KEY!r} metadata: it is not a gradient model "
            "(build one with build_gradient_model)"
        )
    try:
        data: Any = json.loads(raw)
    except json.JSONDecodeError as err:
        raise InvalidModelError(f"{METADATA_KEY!r} metadata is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise InvalidModelError(f"{METADATA_KEY!r} metadata must be a JSON object, got {type(data).__name__}")
    try:
        metadata = GradientMetadata(
            inputs=[str(n) for n in data["inputs"]],
            explained=str(data["explained"]),
            cotangent=str(data["cotangent"]),
            gradients={str(k): str(v) for k, v in dict(data["gradients"]).items()},
            weights=[str(n) for n in data.get("weights", [])],
            opset=int(data.get("opset", 0)),
            batch_size=None if data.get("batch_size") is None else int(data["batch_size"]),
            batching=str(data.get("batching", "fixed" if data.get("batch_size") is not None else "dynamic")),
            format_version=int(data.get("format_version", _FORMAT_VERSION)),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidModelError(f"{METADATA_KEY!r} metadata is malformed: {err!r}") from err
    if metadata.batching not in ("dynamic", "symbolic", "fixed"):
        raise InvalidModelError(
            f"{METADATA_KEY!r} metadata has batching {metadata.batching!r}; expected dynamic, symbolic or fixed"
        )
    if (metadata.batching == "fixed") != (metadata.batch_size is not None) or (
        metadata.batch_size is not None and metadata.batch_size < 1
    ):
        raise InvalidModelError(
            f"{METADATA_KEY!r} metadata is inconsistent: batching {metadata.batching!r} with batch_size "
            f"{metadata.batch_size!r} (a positive batch_size goes with 'fixed' only)"
        )
    if metadata.format_version > _FORMAT_VERSION:
        raise InvalidModelError(
            f"{METADATA_KEY!r} metadata has format_version {metadata.format_version}; "
            f"this build reads at most {_FORMAT_VERSION}"
        )
    return metadata
