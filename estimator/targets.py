"""Turn a :data:`~estimator.method.Target` into the cotangent ``w`` of ``F(x) = <w, y(x)>``.

``y`` is one instance of the explained tensor; ``F`` is the scalar whose gradient is explained.
Class targets are one-hot on the last axis; region targets are a region's indicator (sum) or the
indicator over the region's size (mean); detection targets are one-hot at one class score of one
detection of a dense detector head. Imports numpy only.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ._checks import check_choice, check_float_array, check_int
from .errors import InvalidArgumentError
from .method import (
    AxisSelection,
    ClassTarget,
    CotangentTarget,
    DetectionTarget,
    PredictedClassTarget,
    RegionTarget,
    Target,
)

__all__ = [
    "TARGET_TYPES",
    "check_target",
    "detection_of",
    "format_region",
    "needs_clean_outputs",
    "parse_region",
    "region_indicator",
    "resolve_target",
]

TARGET_TYPES = (ClassTarget, PredictedClassTarget, CotangentTarget, RegionTarget, DetectionTarget)
_REDUCTIONS = ("sum", "mean")
_LAYOUTS = ("channels_first", "anchors_first")
_INDEX = re.compile(r"^[+-]?\d+$")


def needs_clean_outputs(target: Target) -> bool:
    """Whether the cotangent depends on the model's outputs at the clean input."""
    if isinstance(target, DetectionTarget):
        return target.index is None or target.class_index is None
    return isinstance(target, PredictedClassTarget)


def check_target(target: Any, output_shape: tuple[int, ...], field: str = "target") -> None:
    """Validate ``target`` against one instance's output shape without the model's outputs.

    Everything a target can get wrong is found here, before any model call, except what only the
    clean outputs decide. ``field`` prefixes the names in error messages (``"target.region"``).

    Raises:
        InvalidArgumentError: an unknown target type, or a field out of range; the message names
            the field, the valid range and the fix.
    """
    output_shape = tuple(int(d) for d in output_shape)
    if isinstance(target, RegionTarget):
        region_indicator(target, output_shape, field)
    elif isinstance(target, DetectionTarget):
        _detection_geometry(target, output_shape, field)
    elif not isinstance(target, TARGET_TYPES):
        names = ", ".join(kind.__name__ for kind in TARGET_TYPES)
        raise InvalidArgumentError(f"{field}: expected one of {names}; got {type(target).__name__}")


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
            summed over the leading axes first), :class:`CotangentTarget` (used as given),
            :class:`RegionTarget` (the region's indicator, over its size for the mean) or
            :class:`DetectionTarget` (one-hot at a class score of a detection).
        output_shape: shape of one instance of the explained tensor.
        outputs: the explained tensor at the clean input, ``output_shape``; required when
            :func:`needs_clean_outputs` says so.

    Returns:
        ``(cotangent, index)``: float32 array of ``output_shape``; the class index (of the detection
        for a detection target), or ``None`` for an explicit cotangent, a region or a scalar output.

    Raises:
        InvalidArgumentError: index out of range, cotangent of the wrong shape or non-finite, a
            region or detection that does not fit the output.
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
    if isinstance(target, RegionTarget):
        indicator = region_indicator(target, output_shape)
        cotangent = indicator.astype(np.float32)
        if target.reduction == "mean":
            cotangent /= np.float32(np.count_nonzero(indicator))
        return cotangent, None
    if isinstance(target, DetectionTarget):
        return _resolve_detection(target, output_shape, outputs)
    check_target(target, output_shape)
    raise AssertionError("unreachable: check_target rejects unknown targets")


# ------------------------------------------------------------------------------------------ regions


def region_indicator(
    target: RegionTarget, output_shape: tuple[int, ...], field: str = "target"
) -> np.ndarray:
    """The bool array of ``output_shape`` that is true on the region of ``target``.

    Raises:
        InvalidArgumentError: both ``axes`` and ``mask`` given; more entries than axes; an index or
            a slice bound outside its axis; a zero step; a mask of the wrong shape or with values
            other than 0 and 1; an empty region; an unknown reduction.
    """
    output_shape = tuple(int(d) for d in output_shape)
    check_choice(target.reduction, f"{field}.reduction", _REDUCTIONS)
    if target.mask is not None:
        if len(target.axes):
            raise InvalidArgumentError(
                f"{field}: expected either axes or a mask; got both (drop the axes, or the mask)"
            )
        indicator = _mask(target.mask, output_shape, f"{field}.mask")
    else:
        indicator = np.zeros(output_shape, dtype=bool)
        indicator[_index(target.axes, output_shape, f"{field}.axes")] = True
    if not indicator.any():
        raise InvalidArgumentError(
            f"{field}: the region selects no element of the output of shape {output_shape}; "
            "expected at least one (check the slices or the mask)"
        )
    return indicator


def _mask(value: Any, output_shape: tuple[int, ...], field: str) -> np.ndarray:
    mask = np.asarray(value)
    if mask.dtype.kind not in "biuf":
        raise InvalidArgumentError(f"{field}: expected a bool or 0/1 array; got dtype {mask.dtype}")
    if mask.shape != output_shape:
        raise InvalidArgumentError(
            f"{field}: expected the output's instance shape {output_shape}; got {mask.shape}"
        )
    if mask.dtype.kind != "b":
        stray = ~((mask == 0) | (mask == 1))
        if stray.any():
            where = tuple(int(i) for i in np.argwhere(stray)[0])
            raise InvalidArgumentError(
                f"{field}: expected only 0 and 1; got {mask[where]!r} at {where} "
                "(for a weighted sum give an explicit cotangent instead)"
            )
    selected: np.ndarray = mask != 0
    return selected


def _index(axes: Any, output_shape: tuple[int, ...], field: str) -> tuple[int | slice, ...]:
    """``axes`` checked against ``output_shape``: every index and slice bound inside its axis."""
    if not isinstance(axes, tuple | list):
        raise InvalidArgumentError(
            f"{field}: expected a tuple of indices and slices; got {type(axes).__name__}"
        )
    if len(axes) > len(output_shape):
        raise InvalidArgumentError(
            f"{field}: expected at most {len(output_shape)} entries, one per axis of the output's instance "
            f"shape {output_shape}; got {len(axes)} (drop the extra ones)"
        )
    checked: list[int | slice] = []
    for axis, (entry, size) in enumerate(zip(axes, output_shape, strict=False)):
        name = f"{field}[{axis}]"
        if isinstance(entry, slice):
            bounds = []
            for part in ("start", "stop", "step"):
                bound = getattr(entry, part)
                bounds.append(None if bound is None else check_int(bound, f"{name}.{part}"))
            start, stop, step = bounds
            if step == 0:
                raise InvalidArgumentError(f"{name}.step: expected a non-zero step; got 0")
            for part, bound in (("start", start), ("stop", stop)):
                if bound is not None and not -size <= bound <= size:
                    raise InvalidArgumentError(
                        f"{name}.{part}: expected a bound in [{-size}, {size}] for axis {axis} of size {size} "
                        f"(output shape {output_shape}); got {bound}"
                    )
            checked.append(slice(start, stop, step))
        else:
            index = check_int(entry, name)
            if not -size <= index < size:
                raise InvalidArgumentError(
                    f"{name}: expected an index in [{-size}, {size - 1}] for axis {axis} of size {size} "
                    f"(output shape {output_shape}); got {index}"
                )
            checked.append(index)
    return tuple(checked)


def parse_region(text: str, field: str = "region") -> tuple[AxisSelection, ...]:
    """Parse numpy-style indexing text: ``":,10:20,5"`` → ``(slice(None), slice(10, 20), 5)``.

    One comma-separated entry per leading axis: an integer index, or ``start:stop[:step]`` with any
    part left out. ``""`` and ``":"`` alone select the whole tensor.

    Raises:
        InvalidArgumentError: an entry that is neither an integer nor a slice.
    """
    stripped = text.strip()
    if not stripped:
        return ()
    entries: list[AxisSelection] = []
    for axis, raw in enumerate(stripped.split(",")):
        part = raw.strip()
        if ":" in part:
            pieces = [piece.strip() for piece in part.split(":")]
            if len(pieces) > 3 or not all(piece == "" or _INDEX.match(piece) for piece in pieces):
                raise InvalidArgumentError(
                    f"{field}: entry {axis} ({part!r}) must be start:stop or start:stop:step with integers "
                    f"(any left out), e.g. ':,10:20,5'; got {text!r}"
                )
            bounds = [int(piece) if piece else None for piece in pieces] + [None] * (3 - len(pieces))
            entries.append(slice(*bounds))
        elif _INDEX.match(part):
            entries.append(int(part))
        else:
            raise InvalidArgumentError(
                f"{field}: entry {axis} ({part!r}) must be an integer index or a slice start:stop[:step], "
                f"e.g. ':,10:20,5'; got {text!r}"
            )
    return tuple(entries)


def format_region(axes: tuple[AxisSelection, ...]) -> str:
    """The text :func:`parse_region` reads back into ``axes`` (``":"`` for the whole tensor)."""
    if not axes:
        return ":"

    def one(entry: AxisSelection) -> str:
        if not isinstance(entry, slice):
            return str(int(entry))
        parts = ["" if bound is None else str(bound) for bound in (entry.start, entry.stop)]
        if entry.step is not None:
            parts.append(str(entry.step))
        return ":".join(parts)

    return ",".join(one(entry) for entry in axes)


# --------------------------------------------------------------------------------------- detections


def _detection_geometry(
    target: DetectionTarget, output_shape: tuple[int, ...], field: str = "target"
) -> tuple[int, int]:
    """``(anchors, classes)`` of a detector output, after checking every field of ``target``."""
    layout = check_choice(target.layout, f"{field}.layout", _LAYOUTS)
    box_values = check_int(target.box_values, f"{field}.box_values", minimum=0)
    core = _detection_core_shape(output_shape)
    if core is None:
        expected = (
            "[box_values + classes, anchors]"
            if layout == "channels_first"
            else "[anchors, box_values + classes]"
        )
        raise InvalidArgumentError(
            f"{field}: expected a detector output of instance shape {expected} ({layout}; leading axes of size 1 "
            f"allowed); got {output_shape} (explain a region of it instead)"
        )
    values, anchors = core if layout == "channels_first" else core[::-1]
    classes = values - box_values
    if classes < 1:
        other = "anchors_first" if layout == "channels_first" else "channels_first"
        raise InvalidArgumentError(
            f"{field}.box_values: expected fewer than the {values} values per detection of the {layout} output "
            f"{output_shape}, so that class scores remain; got {box_values} (lower box_values, or use layout "
            f"{other})"
        )
    if target.index is not None:
        index = check_int(target.index, f"{field}.index")
        if not 0 <= index < anchors:
            raise InvalidArgumentError(
                f"{field}.index: expected a detection index in [0, {anchors - 1}] ({anchors} detections in the "
                f"{layout} output {output_shape}); got {index} (leave it unset for the highest-scoring detection)"
            )
    if target.class_index is not None:
        class_index = check_int(target.class_index, f"{field}.class_index")
        if not 0 <= class_index < classes:
            raise InvalidArgumentError(
                f"{field}.class_index: expected a class in [0, {classes - 1}] ({classes} classes after "
                f"{box_values} box values); got {class_index} (leave it unset for the detection's highest class)"
            )
    return anchors, classes


def _detection_core_shape(output_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The last two axes of an output whose other axes have size 1, else ``None``."""
    if len(output_shape) < 2 or any(d != 1 for d in output_shape[:-2]):
        return None
    return output_shape[-2], output_shape[-1]


def _class_scores(target: DetectionTarget, outputs: np.ndarray) -> np.ndarray:
    """``(A, C)`` class scores of every detection."""
    core = np.asarray(outputs, dtype=np.float64).reshape(outputs.shape[-2:])
    scores = (
        core[target.box_values :, :].T if target.layout == "channels_first" else core[:, target.box_values :]
    )
    return scores


def _resolve_detection(
    target: DetectionTarget, output_shape: tuple[int, ...], outputs: np.ndarray | None
) -> tuple[np.ndarray, int]:
    _detection_geometry(target, output_shape)
    index, class_index = target.index, target.class_index
    if index is None or class_index is None:
        if outputs is None:
            raise ValueError(
                "resolve_target: outputs at the clean input are required for this DetectionTarget"
            )
        scores = _class_scores(target, np.asarray(outputs).reshape(output_shape))
        if index is None:
            per_detection = scores.max(axis=1) if class_index is None else scores[:, class_index]
            index = int(np.argmax(per_detection))
        if class_index is None:
            class_index = int(np.argmax(scores[index]))
    cotangent = np.zeros(output_shape, dtype=np.float32)
    position = (target.box_values + class_index, index)
    if target.layout == "anchors_first":
        position = position[::-1]
    cotangent.reshape(output_shape[-2:])[position] = 1.0
    return cotangent, int(class_index)


def detection_of(target: DetectionTarget, cotangent: np.ndarray) -> tuple[int, int]:
    """``(detection, class)`` that a resolved detection target's one-hot ``cotangent`` selects."""
    core = np.asarray(cotangent).reshape(np.shape(cotangent)[-2:])
    row, column = (int(i) for i in np.unravel_index(int(np.argmax(core)), core.shape))
    if target.layout == "channels_first":
        return column, row - target.box_values
    return row, column - target.box_values
