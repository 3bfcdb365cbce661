"""Checking what a request sends to a model with several inputs (``models.instance_session``).

The instances in ``inputs`` come in the sent input's own dtype (float features, integer token
ids); every other graph input comes by name in ``extra_inputs``, one row per instance or one
instance's shape shared by all. No grpc, no numerics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from models.instance_session import InputSpec
from service.errors import InvalidRequestError

__all__ = ["checked_extra_inputs", "checked_sent_inputs"]


def _cast(value: np.ndarray, spec: InputSpec, field: str) -> np.ndarray:
    """``value`` in ``spec``'s dtype, refusing a change of kind (floats for ids) or out-of-range values."""
    kind, want = value.dtype.kind, spec.dtype.kind
    if want == "f":
        if kind not in "fiub":
            raise InvalidRequestError(
                f"{field} must hold numbers for the {spec.dtype} input {spec.name!r}, got {value.dtype}"
            )
        cast = value.astype(spec.dtype)
        if not np.isfinite(cast).all():
            raise InvalidRequestError(
                f"{field} must be finite (and fit {spec.dtype}) for the input {spec.name!r}"
            )
        return cast
    if want == "b":
        if kind not in "biu" or (kind != "b" and not np.isin(value, (0, 1)).all()):
            raise InvalidRequestError(
                f"{field} must be BOOL (or integers 0/1) for the boolean input {spec.name!r}, got {value.dtype}"
            )
        return value.astype(bool)
    if kind not in "iub":
        raise InvalidRequestError(
            f"{field} must be an integer datatype (DATA_TYPE_INT64 or DATA_TYPE_INT32) for the {spec.dtype} input "
            f"{spec.name!r} (e.g. token ids), got {value.dtype}"
        )
    info = np.iinfo(spec.dtype)
    if value.size and (int(value.min()) < info.min or int(value.max()) > info.max):
        raise InvalidRequestError(
            f"{field} holds values outside the {spec.dtype} range of the input {spec.name!r}"
        )
    return value.astype(spec.dtype)


def checked_sent_inputs(inputs: np.ndarray, spec: InputSpec, index_limit: int | None = None) -> np.ndarray:
    """The instances of ``inputs`` (``(batch, *spec.shape)``) in the input's dtype.

    Args:
        index_limit: token ids must lie in ``[0, index_limit)`` (the embedding table's rows).

    Raises:
        InvalidRequestError: wrong shape, kind of datatype, or an id outside the table.
    """
    if inputs.ndim != len(spec.shape) + 1 or tuple(inputs.shape[1:]) != spec.shape:
        raise InvalidRequestError(
            f"inputs.shape must be [batch, {', '.join(map(str, spec.shape))}] (the input {spec.name!r}), "
            f"got {list(inputs.shape)}"
        )
    cast = _cast(inputs, spec, "inputs")
    if index_limit is not None and cast.size and (cast.min() < 0 or cast.max() >= index_limit):
        bad = cast[(cast < 0) | (cast >= index_limit)].reshape(-1)[0]
        raise InvalidRequestError(
            f"inputs holds the id {int(bad)}, outside the embedding table of {index_limit} rows; ids must lie in "
            f"[0, {index_limit})"
        )
    return cast


def checked_extra_inputs(
    given: Mapping[str, np.ndarray], specs: Sequence[InputSpec], batch: int, model: str
) -> list[dict[str, np.ndarray]]:
    """Per instance, the extra inputs in their dtypes, one instance's shape each.

    Raises:
        InvalidRequestError: a missing or unknown name, a wrong shape or kind of datatype.
    """
    names = [spec.name for spec in specs]
    missing = [name for name in names if name not in given]
    unknown = sorted(set(given) - set(names))
    if missing or unknown:
        wanted = ", ".join(
            f"{s.name} ({s.dtype}, shape [batch, {', '.join(map(str, s.shape))}])" for s in specs
        )
        raise InvalidRequestError(
            f"extra_inputs must name exactly the other inputs of model {model!r}: {wanted or 'none'}; "
            f"missing {missing}, unknown {unknown}"
        )
    rows: list[dict[str, np.ndarray]] = [{} for _ in range(batch)]
    for spec in specs:
        field = f"extra_inputs[{spec.name!r}]"
        value = np.asarray(given[spec.name])
        if tuple(value.shape) == spec.shape:
            value = np.broadcast_to(value, (batch, *spec.shape))
        elif tuple(value.shape) != (batch, *spec.shape):
            raise InvalidRequestError(
                f"{field}.shape must be [{batch}, {', '.join(map(str, spec.shape))}] (one row per instance) or "
                f"[{', '.join(map(str, spec.shape))}] (shared), got {list(value.shape)}"
            )
        cast = _cast(value, spec, field)
        for index in range(batch):
            rows[index][spec.name] = cast[index]
    return rows
