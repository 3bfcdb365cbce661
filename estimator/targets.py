"""Turn a :data:`~estimator.method.Target` into the cotangent ``w`` of ``F(x) = <w, y(x)>`` (SPEC.md §1).

Imports numpy only.
"""

from __future__ import annotations

import numpy as np

from ._checks import check_float_array, check_int
from .errors import InvalidArgumentError
from .method import ClassTarget, CotangentTarget, PredictedClassTarget, Target

__all__ = ["needs_clean_outputs", "resolve_target"]


def needs_clean_outputs(target: Target) -> bool:
    """Whether the cotangent depends on the model's outputs at the clean input."""
    return isinstance(target, PredictedClassTarget)


def _one_hot(index: int, output_shape: tuple[int, ...]) -> np.ndarray:
    cotangent = np.zeros(output_shape, dtype=np.float32)
    cotangent[..., index] = 1.0
    return cotangent


def resolve_target(
    target: Target, output_shape: tuple[int, ...], outputs: np.ndarray | None = None
) -> tuple[np.ndarray, int | None]:
    """The cotangent of one instance's explained tensor and the class index it selects.

    Args:
        target: :class:`ClassTarget` (one-hot on the last output axis), :class:`PredictedClassTarget`
            (the arg-max class at the clean input; with more than one output axis the class scores are
            summed over the leading axes first), or :class:`CotangentTarget` (used as given).
        output_shape: shape of one instance of the explained tensor.
        outputs: the explained tensor at the clean input, ``output_shape``; required for
            :class:`PredictedClassTarget`.

    Returns:
        ``(cotangent, index)``: float32 array of ``output_shape``; the class index or ``None`` for an
        explicit cotangent (or a scalar output).

    Raises:
        InvalidArgumentError: index out of range, cotangent of the wrong shape or non-finite.
    """
    output_shape = tuple(output_shape)
    if isinstance(target, ClassTarget):
        if not output_shape:
            raise InvalidArgumentError(
                "target.index: expected no class index for a scalar output (use PredictedClassTarget "
                f"or CotangentTarget); got {target.index!r}"
            )
        index = check_int(target.index, "target.index")
        classes = output_shape[-1]
        if not 0 <= index < classes:
            raise InvalidArgumentError(
                f"target.index: expected an integer in [0, {classes - 1}]; got {index}"
            )
        return _one_hot(index, output_shape), index
    if isinstance(target, PredictedClassTarget):
        if not output_shape:
            return np.ones((), dtype=np.float32), None
        if outputs is None:
            raise ValueError(
                "resolve_target: outputs at the clean input are required for PredictedClassTarget"
            )
        scores = np.asarray(outputs, dtype=np.float64).reshape(-1, output_shape[-1]).sum(axis=0)
        index = int(np.argmax(scores))
        return _one_hot(index, output_shape), index
    if isinstance(target, CotangentTarget):
        cotangent = check_float_array(target.cotangent, "target.cotangent")
        if cotangent.shape != output_shape:
            raise InvalidArgumentError(
                f"target.cotangent: expected shape {output_shape} (the model's output shape); got {cotangent.shape}"
            )
        return cotangent.astype(np.float32), None
    raise InvalidArgumentError(
        f"target: expected ClassTarget, PredictedClassTarget or CotangentTarget; got {type(target).__name__}"
    )
