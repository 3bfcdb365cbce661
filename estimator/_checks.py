"""Small validators shared by the public entry points. Each raises InvalidArgumentError naming the field,
the expected and the actual value. Imports numpy only."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .errors import InvalidArgumentError


def describe_value(value: Any) -> str:
    """A short rendering of ``value`` for error messages (arrays by dtype and shape)."""
    if isinstance(value, np.ndarray):
        if value.size <= 4:
            return f"array({value.tolist()}, dtype={value.dtype})"
        return f"array of shape {value.shape}, dtype {value.dtype}"
    return repr(value)


def check_int(value: Any, field: str, minimum: int | None = None) -> int:
    """``value`` as an int (bools rejected), at least ``minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentError(f"{field}: expected an integer; got {describe_value(value)}")
    result = int(value)
    if minimum is not None and result < minimum:
        raise InvalidArgumentError(f"{field}: expected an integer >= {minimum}; got {result}")
    return result


SEED_LIMIT = 2**64
"""Seeds are integers in ``[0, SEED_LIMIT)``: they key 64-bit counter-based generators."""


def check_seed(value: Any, field: str = "seed") -> int:
    """``value`` as a seed: an integer in ``[0, 2**64)``."""
    seed = check_int(value, field, minimum=0)
    if seed >= SEED_LIMIT:
        raise InvalidArgumentError(f"{field}: expected an integer in [0, 2**64); got {seed}")
    return seed


def check_float(
    value: Any,
    field: str,
    *,
    positive: bool = False,
    non_negative: bool = False,
    open_unit: bool = False,
) -> float:
    """``value`` as a finite float with an optional sign or ``(0, 1)`` constraint."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"{field}: expected a real number; got {describe_value(value)}")
    result = float(value)
    if not math.isfinite(result):
        raise InvalidArgumentError(f"{field}: expected a finite number; got {result}")
    if positive and result <= 0.0:
        raise InvalidArgumentError(f"{field}: expected a number > 0; got {result}")
    if non_negative and result < 0.0:
        raise InvalidArgumentError(f"{field}: expected a number >= 0; got {result}")
    if open_unit and not 0.0 < result < 1.0:
        raise InvalidArgumentError(f"{field}: expected a number in the open interval (0, 1); got {result}")
    return result


def check_choice(value: Any, field: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise InvalidArgumentError(
            f"{field}: expected one of {', '.join(choices)}; got {describe_value(value)}"
        )
    return value


def check_float_array(value: Any, field: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``value`` as a finite float64 array, broadcastable to ``shape`` when given (not yet broadcast)."""
    try:
        array = np.asarray(value)
    except Exception as err:  # noqa: BLE001 - any conversion failure is the caller's input
        raise InvalidArgumentError(f"{field}: expected a float array; got {type(value).__name__}") from err
    if array.dtype.kind not in "fiu":
        raise InvalidArgumentError(f"{field}: expected a real-valued array; got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InvalidArgumentError(f"{field}: expected finite values; got {bad} non-finite of {array.size}")
    if shape is not None and array.shape != tuple(shape):
        try:
            broadcast = np.broadcast_shapes(array.shape, shape)
        except ValueError:
            broadcast = None
        if broadcast != tuple(shape):
            raise InvalidArgumentError(
                f"{field}: expected a scalar or an array broadcastable to {tuple(shape)}; got shape {array.shape}"
            )
    return array


def check_bounds(
    lower: Any, upper: Any, shape: tuple[int, ...] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a data domain ``[lower, upper]``: finite, broadcastable, ``lower < upper`` everywhere.

    Returns both bounds as float64 arrays broadcast to ``shape`` (or to their common shape).
    """
    if type(lower) is float and type(upper) is float and shape is not None:
        # The common case of two plain numbers: nothing to broadcast or scan.
        if not (math.isfinite(lower) and math.isfinite(upper)):
            field, value = ("lower", lower) if not math.isfinite(lower) else ("upper", upper)
            raise InvalidArgumentError(f"{field}: expected finite values; got {value}")
        if lower >= upper:
            raise InvalidArgumentError(
                f"lower: expected lower < upper everywhere; got lower={lower} >= upper={upper} (all features)"
            )
        return np.full(shape, lower), np.full(shape, upper)
    lo = check_float_array(lower, "lower", shape)
    hi = check_float_array(upper, "upper", shape)
    if shape is None:
        try:
            shape = np.broadcast_shapes(lo.shape, hi.shape)
        except ValueError as err:
            raise InvalidArgumentError(
                f"upper: expected a shape broadcastable with lower {lo.shape}; got {hi.shape}"
            ) from err
    lo_b = lo if lo.shape == tuple(shape) else np.broadcast_to(lo, shape)
    hi_b = hi if hi.shape == tuple(shape) else np.broadcast_to(hi, shape)
    bad = lo_b >= hi_b
    if np.any(bad):
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InvalidArgumentError(
            f"lower: expected lower < upper everywhere; got lower={lo_b[where]} >= upper={hi_b[where]}"
            f" at index {where} ({int(np.count_nonzero(bad))} features)"
        )
    return np.array(lo_b), np.array(hi_b)
