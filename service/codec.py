"""Conversions between ``mollify.v1`` protobuf messages and the domain's numpy / dataclass values.

Used on both sides of the wire: the servicer decodes requests and encodes responses, the client
does the reverse. Imports protobuf messages but never grpc. Decoding raises
:class:`service.errors.InvalidRequestError` naming the field, the expected and the actual value.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from estimator.method import (
    ClassTarget,
    CotangentTarget,
    DetectionTarget,
    Method,
    PredictedClassTarget,
    RegionTarget,
)
from protos.mollify.v1 import explainer_pb2 as pb
from service.errors import InvalidRequestError
from service.vocabulary import (
    ExplainProgress,
    ExplainTarget,
    InstanceExplanation,
    ModelInfo,
    ReloadResult,
    Selection,
    TensorDescription,
    TopKTarget,
)

# Little-endian on the wire whatever the host's byte order.
_NUMPY_DTYPES: dict[int, np.dtype[Any]] = {
    pb.DATA_TYPE_FP32: np.dtype("<f4"),
    pb.DATA_TYPE_FP64: np.dtype("<f8"),
    pb.DATA_TYPE_FP16: np.dtype("<f2"),
    pb.DATA_TYPE_INT32: np.dtype("<i4"),
    pb.DATA_TYPE_INT64: np.dtype("<i8"),
    pb.DATA_TYPE_UINT8: np.dtype("u1"),
    pb.DATA_TYPE_BOOL: np.dtype("?"),
}
_FLOAT_TYPES = (pb.DATA_TYPE_FP32, pb.DATA_TYPE_FP64)
_DTYPE_NAMES = {
    "float32": pb.DATA_TYPE_FP32,
    "float64": pb.DATA_TYPE_FP64,
    "float16": pb.DATA_TYPE_FP16,
    "int32": pb.DATA_TYPE_INT32,
    "int64": pb.DATA_TYPE_INT64,
    "uint8": pb.DATA_TYPE_UINT8,
    "bool": pb.DATA_TYPE_BOOL,
}

# Datatype of each numpy dtype that can be encoded (native and little-endian spellings alike).
_DATATYPE_OF_DTYPE: dict[np.dtype[Any], pb.DataType] = {}
for _name, _number in _DTYPE_NAMES.items():
    _DATATYPE_OF_DTYPE[np.dtype(_name)] = _number
    _DATATYPE_OF_DTYPE[_NUMPY_DTYPES[_number]] = _number

# Method fields carried by an enum: (proto enum wrapper, value prefix). Enum value 0
# (*_UNSPECIFIED) always means "the Method default".
_ENUM_FIELDS: dict[str, tuple[Any, str]] = {
    "base": (pb.BaseMethod, "BASE_METHOD_"),
    "mode": (pb.SmoothingMode, "SMOOTHING_MODE_"),
    "scale": (pb.ScalePolicy, "SCALE_POLICY_"),
    "adaptive_rule": (pb.AdaptiveRule, "ADAPTIVE_RULE_"),
    "ig_rule": (pb.IntegrationRule, "INTEGRATION_RULE_"),
    "ig_smoothing": (pb.IGSmoothing, "IG_SMOOTHING_"),
    "transform": (pb.Transform, "TRANSFORM_"),
    "channel_reduction": (pb.ChannelReduction, "CHANNEL_REDUCTION_"),
    "sampler": (pb.Sampler, "SAMPLER_"),
}
# Per enum field: method value -> number and number -> method value (e.g. "gaussian" <-> 1).
_ENUM_TO_NUMBER = {
    name: {enum.Name(number)[len(prefix) :].lower(): number for number in enum.values() if number}
    for name, (enum, prefix) in _ENUM_FIELDS.items()
}
_ENUM_TO_VALUE = {
    name: {number: value for value, number in table.items()} for name, table in _ENUM_TO_NUMBER.items()
}
# Method fields carried by a proto3 `optional` scalar of the same name (unset = Method default).
_OPTIONAL_FIELDS = (
    "alpha",
    "confidence",
    "samples",
    "weight_draws",
    "weight_sigma",
    "ig_steps",
    "channel_axis",
    "replicates",
)
_DEFAULT_METHOD = Method()


# ---------------------------------------------------------------------------------------- tensors

MAX_DIMENSIONS = 32
"""Most dimensions of a request tensor (numpy allows 64; no model input comes near)."""
# Elements of any shape a request may describe: a gRPC message is smaller than 2 GiB.
_MAX_ELEMENTS = 2**31 - 1


def array_to_tensor(array: np.ndarray | float | int, *, keep_float64: bool = False) -> pb.Tensor:
    """Encode an array as a little-endian ``Tensor``.

    Float arrays travel as FP32 unless ``keep_float64`` (method parameters such as σ, which must
    reach the estimator exactly as the caller wrote them); a Python float then travels as FP64.
    """
    value = np.asarray(array)
    if value.dtype.kind == "f" and not (keep_float64 and value.dtype == np.float64):
        value = value.astype("<f4", copy=False)
    datatype = _DATATYPE_OF_DTYPE.get(value.dtype)
    if datatype is None:
        raise InvalidRequestError(
            f"cannot encode an array of dtype {value.dtype.name}; expected one of {sorted(_DTYPE_NAMES)}"
        )
    wire = _NUMPY_DTYPES[datatype]
    return pb.Tensor(
        datatype=datatype,
        shape=value.shape,
        raw_contents=np.ascontiguousarray(value, dtype=wire).tobytes(),
    )


def _wire_array(tensor: pb.Tensor, field: str) -> np.ndarray:
    """The tensor's raw contents as a read-only array of its wire dtype and shape, after checking
    the number of dimensions, the shape and the byte length (its datatype already checked)."""
    if len(tensor.shape) > MAX_DIMENSIONS:
        raise InvalidRequestError(
            f"{field}.shape has {len(tensor.shape)} dimensions; at most {MAX_DIMENSIONS} are supported"
        )
    shape = tuple(tensor.shape)
    if shape and min(shape) < 0:
        raise InvalidRequestError(f"{field}.shape must hold non-negative dimensions, got {list(shape)}")
    if math.prod(max(d, 1) for d in shape) > _MAX_ELEMENTS:
        raise InvalidRequestError(
            f"{field}.shape {list(shape)} describes more than 2**31 - 1 elements (a 0 dimension counted as 1), "
            "more than any gRPC message can carry; send the shape of the data in raw_contents"
        )
    wire = _NUMPY_DTYPES[tensor.datatype]
    expected = math.prod(shape) * wire.itemsize
    raw = tensor.raw_contents  # read once: each read of a bytes field makes a new bytes object
    if len(raw) != expected:
        raise InvalidRequestError(
            f"{field}.raw_contents holds {len(raw)} bytes; shape {list(shape)} of "
            f"{pb.DataType.Name(tensor.datatype)} needs {expected}"
        )
    return np.frombuffer(raw, dtype=wire).reshape(shape)


def tensor_to_array(tensor: pb.Tensor, field: str, *, keep_float64: bool = False) -> np.ndarray:
    """Decode a ``Tensor`` holding floats into a float32 array of its shape.

    Args:
        tensor: the message; FP32 or FP64 (FP64 is rounded to float32 unless ``keep_float64``).
        field: the request field it came from, named in error messages (e.g. ``"inputs"``).
        keep_float64: decode FP64 as float64 (method parameters).

    Raises:
        InvalidRequestError: unknown or non-float datatype, negative dimension, more than
            :data:`MAX_DIMENSIONS` dimensions, a shape no message can carry, a byte length that
            does not match the shape, or a finite FP64 value beyond the float32 range (when
            rounded to float32).
    """
    if tensor.datatype not in _FLOAT_TYPES:
        actual = (
            pb.DataType.Name(tensor.datatype)
            if tensor.datatype in pb.DataType.values()
            else str(tensor.datatype)
        )
        raise InvalidRequestError(f"{field}.datatype must be DATA_TYPE_FP32 or DATA_TYPE_FP64, got {actual}")
    array = _wire_array(tensor, field)
    wire = array.dtype
    native = np.float64 if keep_float64 and wire.itemsize == 8 else np.float32
    if native is np.float64 or wire.itemsize == 4:
        return array.astype(native)
    with np.errstate(over="ignore"):
        rounded = array.astype(native)
    overflowed = np.isfinite(array) & ~np.isfinite(rounded)
    if overflowed.any():
        where = tuple(int(i) for i in np.argwhere(overflowed)[0])
        at = f" at index {list(where)}" if where else ""
        raise InvalidRequestError(
            f"{field} holds {float(array[where]):g}{at}, beyond the float32 range (magnitude at most "
            f"{float(np.finfo(np.float32).max):.7g}) the model computes in; scale it into that range"
        )
    return rounded


def tensor_to_any_array(tensor: pb.Tensor, field: str) -> np.ndarray:
    """Decode a ``Tensor`` of any supported datatype: floats as :func:`tensor_to_array` does, other
    datatypes (integer token ids, boolean masks) in their own dtype.

    Raises:
        InvalidRequestError: as :func:`tensor_to_array`, or an unknown datatype.
    """
    if tensor.datatype in _FLOAT_TYPES:
        return tensor_to_array(tensor, field)
    if tensor.datatype not in _NUMPY_DTYPES:
        actual = (
            pb.DataType.Name(tensor.datatype)
            if tensor.datatype in pb.DataType.values()
            else str(tensor.datatype)
        )
        known = [pb.DataType.Name(number) for number in _NUMPY_DTYPES]
        raise InvalidRequestError(f"{field}.datatype must be one of {known}, got {actual}")
    array = _wire_array(tensor, field)
    return array.astype(array.dtype.newbyteorder("="))


def _float_or_array(tensor: pb.Tensor, field: str) -> float | np.ndarray:
    array = tensor_to_array(tensor, field, keep_float64=True)
    return float(array) if array.ndim == 0 else array


# ----------------------------------------------------------------------------------------- method


def method_to_proto(method: Method) -> pb.Method:
    """Encode a :class:`estimator.Method`; every field is written explicitly, defaults included."""
    numbers = {}
    for name, table in _ENUM_TO_NUMBER.items():
        value = str(getattr(method, name))
        if value not in table:
            raise InvalidRequestError(f"method.{name} must be one of {sorted(table)}, got {value!r}")
        numbers[name] = table[value]
    message = pb.Method(kernel=method.kernel, weight_exclude=list(method.weight_exclude), **numbers)
    for name in _OPTIONAL_FIELDS:
        value = getattr(method, name)
        if value is not None:
            setattr(message, name, value)
    if method.sigma is not None:
        message.sigma.CopyFrom(array_to_tensor(method.sigma, keep_float64=True))
    if isinstance(method.ig_baseline, str):
        message.ig_baseline = pb.Baseline.Value("BASELINE_" + method.ig_baseline.upper())
    else:
        message.ig_baseline_tensor.CopyFrom(array_to_tensor(method.ig_baseline, keep_float64=True))
    if method.tol is not None:
        message.target_relative_error = method.tol
    if method.max_samples is not None:
        message.max_samples = method.max_samples
    return message


def method_from_proto(message: pb.Method, field: str = "method") -> Method:
    """Decode a ``Method`` message; unset fields take :class:`estimator.Method`'s defaults.

    Only the encoding is checked here (enum values known to this server, tensors well formed);
    the estimator validates the values themselves.
    """
    values: dict[str, Any] = {}
    for name, table in _ENUM_TO_VALUE.items():
        number = getattr(message, name)
        if number == 0:
            continue
        if number not in table:
            enum = _ENUM_FIELDS[name][0]
            known = [v.name for v in enum.DESCRIPTOR.values if v.number != 0]
            raise InvalidRequestError(
                f"{field}.{name} must be one of {known}, got the unknown value {number}"
            )
        values[name] = table[number]
    for name in _OPTIONAL_FIELDS:
        if message.HasField(name):
            values[name] = getattr(message, name)
    if message.kernel:
        values["kernel"] = message.kernel
    if message.weight_exclude:
        values["weight_exclude"] = tuple(message.weight_exclude)
    if message.HasField("sigma"):
        values["sigma"] = _float_or_array(message.sigma, f"{field}.sigma")
    if message.ig_baseline != 0:
        if message.ig_baseline not in pb.Baseline.values():
            raise InvalidRequestError(
                f"{field}.ig_baseline must be BASELINE_ZERO, BASELINE_BLACK or BASELINE_WHITE, "
                f"got the unknown value {message.ig_baseline}"
            )
        values["ig_baseline"] = pb.Baseline.Name(message.ig_baseline)[len("BASELINE_") :].lower()
    if message.HasField("ig_baseline_tensor"):
        values["ig_baseline"] = tensor_to_array(
            message.ig_baseline_tensor, f"{field}.ig_baseline_tensor", keep_float64=True
        )
    if message.HasField("target_relative_error"):
        values["tol"] = message.target_relative_error
    if message.HasField("max_samples"):
        values["max_samples"] = message.max_samples
    return dataclasses.replace(_DEFAULT_METHOD, **values)


# ----------------------------------------------------------------------------------------- target


def target_to_proto(target: ExplainTarget) -> pb.Target:
    message = pb.Target(output=target.output)
    selection = target.selection
    if isinstance(selection, ClassTarget):
        message.class_index = selection.index
    elif isinstance(selection, TopKTarget):
        message.top_k = selection.k
    elif isinstance(selection, CotangentTarget):
        message.cotangent.CopyFrom(array_to_tensor(selection.cotangent))
    elif isinstance(selection, RegionTarget):
        message.region.CopyFrom(_region_to_proto(selection))
    elif isinstance(selection, DetectionTarget):
        message.detection.CopyFrom(_detection_to_proto(selection))
    else:
        message.predicted.SetInParent()
    return message


def target_from_proto(message: pb.Target, field: str = "target") -> ExplainTarget:
    """Decode a ``Target``; no selection means the predicted class."""
    kind = message.WhichOneof("selection")
    selection: Selection
    if kind == "class_index":
        selection = ClassTarget(int(message.class_index))
    elif kind == "top_k":
        if message.top_k < 1:
            raise InvalidRequestError(f"{field}.top_k must be at least 1, got {message.top_k}")
        selection = TopKTarget(int(message.top_k))
    elif kind == "cotangent":
        selection = CotangentTarget(tensor_to_array(message.cotangent, f"{field}.cotangent"))
    elif kind == "region":
        selection = _region_from_proto(message.region, f"{field}.region")
    elif kind == "detection":
        selection = _detection_from_proto(message.detection, f"{field}.detection")
    else:
        selection = PredictedClassTarget()
    return ExplainTarget(selection=selection, output=message.output)


# Region reductions and detection layouts: domain value <-> enum number (0 means the default).
_REGION_REDUCTIONS = {"sum": pb.REGION_REDUCTION_SUM, "mean": pb.REGION_REDUCTION_MEAN}
_DETECTION_LAYOUTS = {
    "channels_first": pb.DETECTION_LAYOUT_CHANNELS_FIRST,
    "anchors_first": pb.DETECTION_LAYOUT_ANCHORS_FIRST,
}
_MASK_TYPES = (pb.DATA_TYPE_BOOL, pb.DATA_TYPE_UINT8, pb.DATA_TYPE_FP32, pb.DATA_TYPE_FP64)


def _region_to_proto(region: RegionTarget) -> pb.Region:
    if region.reduction not in _REGION_REDUCTIONS:
        raise InvalidRequestError(
            f"target.region.reduction must be one of {sorted(_REGION_REDUCTIONS)}, got {region.reduction!r}"
        )
    message = pb.Region(reduction=_REGION_REDUCTIONS[region.reduction])
    for axis, entry in enumerate(region.axes):
        item = message.axes.add()
        if isinstance(entry, slice):
            item.slice.SetInParent()
            for part in ("start", "stop", "step"):
                bound = getattr(entry, part)
                if bound is not None:
                    setattr(item.slice, part, _wire_int(bound, f"target.region.axes[{axis}].{part}"))
        else:
            item.index = _wire_int(entry, f"target.region.axes[{axis}]")
    if region.mask is not None:
        mask = np.asarray(region.mask)
        message.mask.CopyFrom(array_to_tensor(mask if mask.dtype.kind in "bf" else mask.astype(np.float32)))
    return message


def _wire_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidRequestError(f"{field} must be an integer, got {value!r}")
    return int(value)


def _region_from_proto(message: pb.Region, field: str) -> RegionTarget:
    axes: list[int | slice] = []
    for axis, item in enumerate(message.axes):
        kind = item.WhichOneof("range")
        if kind == "index":
            axes.append(int(item.index))
        elif kind == "slice":
            bounds = [
                getattr(item.slice, part) if item.slice.HasField(part) else None
                for part in ("start", "stop", "step")
            ]
            axes.append(slice(*bounds))
        else:
            raise InvalidRequestError(
                f"{field}.axes[{axis}] must set index or slice (an empty slice takes the whole axis), got neither"
            )
    reduction = _enum_value(
        message.reduction, _REGION_REDUCTIONS, pb.RegionReduction, f"{field}.reduction", "sum"
    )
    mask = _mask_to_array(message.mask, f"{field}.mask") if message.HasField("mask") else None
    return RegionTarget(axes=tuple(axes), mask=mask, reduction=reduction)  # type: ignore[arg-type]


def _mask_to_array(tensor: pb.Tensor, field: str) -> np.ndarray:
    """A region mask: BOOL or UINT8 as they are, FP32/FP64 as float32 (0/1 is checked by the estimator)."""
    if tensor.datatype not in _MASK_TYPES:
        actual = (
            pb.DataType.Name(tensor.datatype)
            if tensor.datatype in pb.DataType.values()
            else str(tensor.datatype)
        )
        raise InvalidRequestError(
            f"{field}.datatype must be DATA_TYPE_BOOL, DATA_TYPE_UINT8, DATA_TYPE_FP32 or DATA_TYPE_FP64, got {actual}"
        )
    if tensor.datatype in _FLOAT_TYPES:
        return tensor_to_array(tensor, field)
    shape = tuple(tensor.shape)
    if shape and min(shape) < 0:
        raise InvalidRequestError(f"{field}.shape must hold non-negative dimensions, got {list(shape)}")
    raw = tensor.raw_contents
    if len(raw) != math.prod(shape):
        raise InvalidRequestError(
            f"{field}.raw_contents holds {len(raw)} bytes; shape {list(shape)} of "
            f"{pb.DataType.Name(tensor.datatype)} needs {math.prod(shape)}"
        )
    return np.frombuffer(raw, dtype=_NUMPY_DTYPES[tensor.datatype]).reshape(shape).copy()


def _detection_to_proto(detection: DetectionTarget) -> pb.Detection:
    if detection.layout not in _DETECTION_LAYOUTS:
        raise InvalidRequestError(
            f"target.detection.layout must be one of {sorted(_DETECTION_LAYOUTS)}, got {detection.layout!r}"
        )
    message = pb.Detection(
        layout=_DETECTION_LAYOUTS[detection.layout],
        box_values=_wire_int(detection.box_values, "target.detection.box_values"),
    )
    if detection.index is not None:
        message.index = _wire_int(detection.index, "target.detection.index")
    if detection.class_index is not None:
        message.class_index = _wire_int(detection.class_index, "target.detection.class_index")
    return message


def _detection_from_proto(message: pb.Detection, field: str) -> DetectionTarget:
    layout = _enum_value(
        message.layout, _DETECTION_LAYOUTS, pb.DetectionLayout, f"{field}.layout", "channels_first"
    )
    return DetectionTarget(
        index=int(message.index) if message.HasField("index") else None,
        class_index=int(message.class_index) if message.HasField("class_index") else None,
        layout=layout,  # type: ignore[arg-type]
        box_values=int(message.box_values) if message.HasField("box_values") else DetectionTarget.box_values,
    )


def _enum_value(number: int, table: Mapping[str, int], enum: Any, field: str, default: str) -> str:
    """The domain value of an enum number; 0 (unspecified) is ``default``."""
    if number == 0:
        return default
    for value, known in table.items():
        if known == number:
            return value
    names = [v.name for v in enum.DESCRIPTOR.values if v.number != 0]
    raise InvalidRequestError(f"{field} must be one of {names}, got the unknown value {number}")


# ---------------------------------------------------------------------------------------- results


def explanation_to_proto(explanation: InstanceExplanation) -> pb.InstanceExplanation:
    message = pb.InstanceExplanation(
        instance_index=explanation.instance_index,
        rank=explanation.rank,
        attribution=array_to_tensor(explanation.attribution),
        outputs=array_to_tensor(explanation.outputs),
        output=explanation.output,
        samples=explanation.samples,
        gradient_evaluations=explanation.gradient_evaluations,
        seed=explanation.seed,
        inherent_noise=explanation.inherent_noise,
        queued_ms=explanation.queued_ms,
        computing_ms=explanation.computing_ms,
        execution_provider=explanation.provider,
        method_description=explanation.description,
        zero_scale_fraction=explanation.zero_scale_fraction,
        standard_error_note=explanation.standard_error_note,
    )
    # An undefined standard error (NaN in the domain) is left unset on the wire, never sent as NaN.
    if explanation.standard_error_defined:
        message.standard_error.CopyFrom(array_to_tensor(explanation.standard_error))
        message.relative_error = explanation.relative_error
    if explanation.cotangent is not None:
        message.cotangent.CopyFrom(array_to_tensor(explanation.cotangent))
    if explanation.target_index is not None:
        message.target_index = explanation.target_index
    return message


def explanation_from_proto(message: pb.InstanceExplanation) -> InstanceExplanation:
    attribution = tensor_to_array(message.attribution, "attribution")
    if message.HasField("standard_error"):
        standard_error = tensor_to_array(message.standard_error, "standard_error")
    else:
        standard_error = np.full(attribution.shape, np.nan, dtype=np.float32)
    return InstanceExplanation(
        attribution=attribution,
        standard_error=standard_error,
        outputs=tensor_to_array(message.outputs, "outputs"),
        target_index=int(message.target_index) if message.HasField("target_index") else None,
        samples=int(message.samples),
        gradient_evaluations=int(message.gradient_evaluations),
        seed=int(message.seed),
        inherent_noise=float(message.inherent_noise),
        relative_error=float(message.relative_error) if message.HasField("relative_error") else math.nan,
        queued_ms=float(message.queued_ms),
        computing_ms=float(message.computing_ms),
        provider=message.execution_provider,
        description=message.method_description,
        instance_index=int(message.instance_index),
        rank=int(message.rank),
        output=message.output,
        cotangent=tensor_to_array(message.cotangent, "cotangent") if message.HasField("cotangent") else None,
        zero_scale_fraction=float(message.zero_scale_fraction),
        standard_error_note=message.standard_error_note,
    )


def progress_to_proto(progress: ExplainProgress) -> pb.ExplainProgress:
    return pb.ExplainProgress(**dataclasses.asdict(progress))


def progress_from_proto(message: pb.ExplainProgress) -> ExplainProgress:
    return ExplainProgress(
        instance_index=int(message.instance_index),
        rank=int(message.rank),
        explanations_total=int(message.explanations_total),
        samples_done=int(message.samples_done),
        samples_planned=int(message.samples_planned),
        relative_error=float(message.relative_error),
    )


# ----------------------------------------------------------------------------------------- models


def _tensor_info_to_proto(info: TensorDescription) -> pb.TensorInfo:
    return pb.TensorInfo(
        name=info.name,
        datatype=_DTYPE_NAMES.get(info.dtype, pb.DATA_TYPE_UNSPECIFIED),
        shape=list(info.shape),
    )


_DTYPE_BY_NUMBER = {number: name for name, number in _DTYPE_NAMES.items()}


def _tensor_info_from_proto(message: pb.TensorInfo) -> TensorDescription:
    return TensorDescription(
        name=message.name,
        shape=tuple(int(d) for d in message.shape),
        dtype=_DTYPE_BY_NUMBER.get(message.datatype, "unspecified"),
    )


def _as_list(value: Any) -> list[float]:
    return [float(v) for v in np.atleast_1d(np.asarray(value, dtype=np.float64))]


def model_info_to_proto(info: ModelInfo) -> pb.ModelInfo:
    pre = info.preprocessing
    return pb.ModelInfo(
        name=info.name,
        ready=info.ready,
        error=info.error,
        input=pb.TensorInfo(
            name=info.input_name,
            datatype=_DTYPE_NAMES.get(
                info.request_inputs[0].dtype if info.request_inputs else "float32", pb.DATA_TYPE_UNSPECIFIED
            ),
            shape=list(info.input_shape),
        ),
        output=pb.TensorInfo(
            name=info.output_name, datatype=pb.DATA_TYPE_FP32, shape=list(info.output_shape)
        ),
        graph_inputs=[_tensor_info_to_proto(t) for t in info.graph_inputs],
        graph_outputs=[_tensor_info_to_proto(t) for t in info.graph_outputs],
        lower=array_to_tensor(info.lower),
        upper=array_to_tensor(info.upper),
        labels=list(info.labels),
        feature_names=list(info.feature_names),
        preprocessing=pb.Preprocessing(
            kind=str(pre.get("kind", "tensor")),
            size=list(pre.get("size") or ()),
            channels=int(pre.get("channels", 1)),
            scale=float(pre.get("scale", 1.0)),
            invert=bool(pre.get("invert", False)),
            mean=_as_list(pre.get("mean", 0.0)),
            std=_as_list(pre.get("std", 1.0)),
        ),
        execution_provider=info.provider,
        description=info.description,
        weights=list(info.weights),
        batching=info.batching,
        fixed_batch_size=info.fixed_batch_size,
        stale=info.stale,
        candidate_error=info.candidate_error,
        version=info.version,
        config_source=info.config_source,
        layout=info.layout,
        request_inputs=[_tensor_info_to_proto(t) for t in info.request_inputs],
        explained_input=_tensor_info_to_proto(info.explained_input) if info.explained_input else None,
        tokenizer=info.tokenizer,
        has_tokenizer=info.has_tokenizer,
    )


def _unlist(values: Any) -> float | list[float]:
    floats = [float(v) for v in values]
    return floats[0] if len(floats) == 1 else floats


def model_info_from_proto(message: pb.ModelInfo) -> ModelInfo:
    pre = message.preprocessing
    return ModelInfo(
        name=message.name,
        ready=message.ready,
        error=message.error,
        input_name=message.input.name,
        input_shape=tuple(int(d) for d in message.input.shape),
        output_name=message.output.name,
        output_shape=tuple(int(d) for d in message.output.shape),
        lower=tensor_to_array(message.lower, "lower"),
        upper=tensor_to_array(message.upper, "upper"),
        labels=list(message.labels),
        feature_names=list(message.feature_names),
        preprocessing={
            "kind": pre.kind,
            "size": tuple(int(d) for d in pre.size) if pre.size else None,
            "channels": int(pre.channels),
            "scale": float(pre.scale),
            "invert": bool(pre.invert),
            "mean": _unlist(pre.mean),
            "std": _unlist(pre.std),
        },
        provider=message.execution_provider,
        description=message.description,
        graph_inputs=tuple(_tensor_info_from_proto(t) for t in message.graph_inputs),
        graph_outputs=tuple(_tensor_info_from_proto(t) for t in message.graph_outputs),
        weights=tuple(message.weights),
        batching=message.batching,
        fixed_batch_size=int(message.fixed_batch_size),
        stale=message.stale,
        candidate_error=message.candidate_error,
        version=message.version,
        config_source=message.config_source,
        layout=message.layout,
        request_inputs=tuple(_tensor_info_from_proto(t) for t in message.request_inputs),
        explained_input=_tensor_info_from_proto(message.explained_input)
        if message.HasField("explained_input")
        else None,
        tokenizer=message.tokenizer,
        has_tokenizer=message.has_tokenizer,
    )


def reload_result_to_proto(result: ReloadResult) -> pb.ReloadModelsResponse:
    return pb.ReloadModelsResponse(
        models=[model_info_to_proto(m) for m in result.models],
        added=result.added,
        reloaded=result.reloaded,
        removed=result.removed,
    )


def reload_result_from_proto(message: pb.ReloadModelsResponse) -> ReloadResult:
    return ReloadResult(
        models=[model_info_from_proto(m) for m in message.models],
        added=list(message.added),
        reloaded=list(message.reloaded),
        removed=list(message.removed),
    )
