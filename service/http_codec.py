"""JSON bodies of the HTTP front end to and from the domain's values; no HTTP, no status logic.

Two request shapes, one meaning:

- KServe v1: ``{"instances": [instance, ...], "parameters": {...}}``, each instance a nested list
  of numbers of the model's input shape (as KServe clients send them), or, for a model with
  several inputs (token ids + attention mask), an object naming each of its request inputs
  (``{"input_ids": [...], "attention_mask": [...]}``);
- Open Inference Protocol (OIP, KServe v2): ``{"inputs": [{"name", "datatype", "shape", "data"}],
  "parameters": {...}}``, the batch first; ``data`` flat in row-major order or nested. One tensor
  is the model's first request input; a model with several inputs takes one tensor per request
  input, by name.

Integer inputs (token ids, masks) travel as integers: a v1 instance's numbers are read in the
model's input dtype (integers refused when not whole), an OIP tensor in its datatype (INT64,
INT32, UINT8, BOOL or a float type). Integers sent for a float input mean their values.

``parameters`` holds the ``mollify.v1`` request fields by their proto names: every ``Method``
field at the top level (``"mode": "SMOOTHING_MODE_INPUT"`` or just ``"input"``, ``"samples": 50``,
``"alpha": 0.2``, ``"sigma": 0.1``, ...), plus ``"target"`` (a ``Target`` as proto JSON, e.g.
``{"class_index": 3}`` or ``{"top_k": 2}``), ``"seed"``, ``"lower"``, ``"upper"`` and
``"explained_input"`` (a tensor name). Tensor-valued
fields take a number or a nested list. The parameters become an ``ExplainRequest`` message decoded
by ``service/queries.py`` exactly as a gRPC request is, so both front ends read the same fields
with the same checks, and the same seed gives bitwise the same explanation.

Responses carry float32 values as JSON numbers that read back to the same float32; values that
are not finite (an undefined standard error) are ``null``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from estimator import check_seed
from protos.mollify.v1 import explainer_pb2 as pb
from service import codec
from service.errors import InvalidRequestError
from service.explainer import ExplainQuery
from service.queries import query_from_proto
from service.vocabulary import InstanceExplanation, ModelInfo, TensorDescription

__all__ = [
    "OIP_DATATYPES",
    "PARAMETER_NAMES",
    "model_metadata",
    "oip_query",
    "oip_response",
    "parse_body",
    "to_json",
    "v1_query",
    "v1_response",
]

_METHOD_FIELDS = pb.Method.DESCRIPTOR.fields_by_name
_REQUEST_FIELDS = ("target", "seed", "lower", "upper", "explained_input")
PARAMETER_NAMES: tuple[str, ...] = tuple(sorted(_METHOD_FIELDS)) + _REQUEST_FIELDS
"""Every key ``parameters`` may hold."""
OIP_DATATYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "FP16": np.dtype(np.float16),
    "INT64": np.dtype(np.int64),
    "INT32": np.dtype(np.int32),
    "UINT8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
"""OIP datatypes a request input may have."""
_OIP_NAMES = {str(dtype): name for name, dtype in OIP_DATATYPES.items()}
_TENSOR = pb.Tensor.DESCRIPTOR


def parse_body(body: bytes) -> Any:
    """The JSON document of a request body; raises ``InvalidRequestError`` when it is not JSON."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidRequestError(f"the request body is not valid JSON ({err}); send a JSON object") from None


def to_json(document: Any) -> bytes:
    """``document`` as compact JSON (no NaN: callers map non-finite values to ``None`` first)."""
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()


# ------------------------------------------------------------------------------------ requests


def v1_query(model: str, document: Any, request_inputs: tuple[TensorDescription, ...] = ()) -> ExplainQuery:
    """A KServe v1 explain body as a query for ``model`` (``request_inputs``: the model's, from
    ``ModelInfo``; empty when unknown, then the instances are floats)."""
    body = _object(document, "the request body")
    _only(body, ("instances", "parameters"), "the request body")
    if "instances" not in body:
        raise InvalidRequestError(
            'the request body needs "instances": a list of instances, each a nested list'
        )
    instances = body["instances"]
    if not isinstance(instances, list):
        raise InvalidRequestError(f'"instances" must be a list of instances, got {type(instances).__name__}')
    if instances and all(isinstance(item, dict) for item in instances):
        return _named_instances(model, instances, body.get("parameters"), request_inputs)
    inputs = _typed_array(instances, "instances", request_inputs[0] if request_inputs else None)
    if inputs.ndim == 0:
        raise InvalidRequestError('"instances" must be a list of instances, got a single number')
    return _query(model, inputs, body.get("parameters"))


def _named_instances(
    model: str, instances: list[Any], parameters: Any, request_inputs: tuple[TensorDescription, ...]
) -> ExplainQuery:
    """v1 instances as objects, one key per request input of the model: the first is ``inputs``,
    the others ``extra_inputs``."""
    names = [t.name for t in request_inputs]
    if not names:
        raise InvalidRequestError(
            f"instances given as objects name a model's request inputs, but model {model!r} lists none"
        )
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for index, item in enumerate(instances):
        if set(item) != set(names):
            raise InvalidRequestError(
                f"instances[{index}] must name exactly the request inputs of model {model!r}: {names}; got "
                f"{sorted(item)}"
            )
        for name in names:
            columns[name].append(item[name])
    arrays = {t.name: _typed_array(columns[t.name], f"instances[*].{t.name}", t) for t in request_inputs}
    return _query(model, arrays[names[0]], parameters, {name: arrays[name] for name in names[1:]})


def oip_query(model: str, document: Any, request_inputs: tuple[TensorDescription, ...] = ()) -> ExplainQuery:
    """An Open Inference Protocol explain body (one tensor per request input, batch first) as a
    query for ``model`` (``request_inputs`` as for :func:`v1_query`)."""
    body = _object(document, "the request body")
    _only(body, ("id", "inputs", "outputs", "parameters"), "the request body")
    inputs = body.get("inputs")
    wanted = max(1, len(request_inputs))
    if not isinstance(inputs, list) or len(inputs) != wanted:
        count = len(inputs) if isinstance(inputs, list) else type(inputs).__name__
        named = f" ({', '.join(t.name for t in request_inputs)})" if wanted > 1 else " (the explained input)"
        raise InvalidRequestError(
            f'"inputs" must be a list of exactly {wanted} tensor{"s" if wanted > 1 else ""}'
            f"{named}, got {count}"
        )
    arrays = [_oip_array(index, tensor) for index, tensor in enumerate(inputs)]
    if wanted == 1:
        sent = arrays[0][1]
        if request_inputs and request_inputs[0].dtype.startswith("float") and sent.dtype.kind in "iub":
            sent = sent.astype(np.float32)  # integers for a float input mean their values
        return _query(model, sent, body.get("parameters"))
    by_name = dict(arrays)
    names = [t.name for t in request_inputs]
    if set(by_name) != set(names) or len(by_name) != len(arrays):
        raise InvalidRequestError(
            f"inputs must be named after the request inputs of model {model!r}, one each: {names}; got "
            f"{[name for name, _ in arrays]}"
        )
    return _query(
        model, by_name[names[0]], body.get("parameters"), {name: by_name[name] for name in names[1:]}
    )


def _oip_array(index: int, value: Any) -> tuple[str, np.ndarray]:
    """One OIP tensor's name and values, shaped and in its datatype."""
    field = f"inputs[{index}]"
    tensor = _object(value, field)
    for key in ("name", "datatype", "shape", "data"):
        if key not in tensor:
            raise InvalidRequestError(
                f'{field} needs "{key}" (an OIP tensor has name, datatype, shape and data)'
            )
    datatype = tensor["datatype"]
    if datatype not in OIP_DATATYPES:
        raise InvalidRequestError(
            f"{field}.datatype must be one of {sorted(OIP_DATATYPES)}, got {datatype!r}"
        )
    shape = tensor["shape"]
    if (
        not isinstance(shape, list)
        or not shape
        or len(shape) > codec.MAX_DIMENSIONS
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InvalidRequestError(
            f"{field}.shape must be a list of non-negative integers, batch first; got {shape!r}"
        )
    dtype = OIP_DATATYPES[datatype]
    data = (
        _integer_array(tensor["data"], f"{field}.data", dtype)
        if dtype.kind in "iub"
        else _float_array(tensor["data"], f"{field}.data", dtype)
    )
    if data.size != int(np.prod(shape, dtype=np.int64)):
        raise InvalidRequestError(
            f"{field}.data holds {data.size} values; shape {shape} needs {int(np.prod(shape, dtype=np.int64))}"
        )
    return str(tensor["name"]), data.reshape(shape)


def _typed_array(value: Any, field: str, description: TensorDescription | None) -> np.ndarray:
    """JSON numbers in the dtype of the request input they are for (float32 when unknown)."""
    dtype = (
        np.dtype(description.dtype) if description is not None and description.dtype in _OIP_NAMES else None
    )
    if dtype is not None and dtype.kind in "iub":
        return _integer_array(value, field, dtype)
    return _float_array(value, field)


def _query(
    model: str, inputs: np.ndarray, parameters: Any, extra_inputs: dict[str, np.ndarray] | None = None
) -> ExplainQuery:
    request = pb.ExplainRequest(model_name=model)
    for name, array in (extra_inputs or {}).items():
        request.extra_inputs[name].CopyFrom(codec.array_to_tensor(array))
    if parameters is not None:
        params = _object(parameters, '"parameters"')
        _only(params, PARAMETER_NAMES, '"parameters"')
        method = {k: v for k, v in params.items() if k in _METHOD_FIELDS}
        request.method.CopyFrom(_message(method, pb.Method, "parameters"))
        if "target" in params:
            request.target.CopyFrom(
                _message(_object(params["target"], "parameters.target"), pb.Target, "parameters.target")
            )
        if "seed" in params:
            request.seed = check_seed(params["seed"], "parameters.seed")
        for bound in ("lower", "upper"):
            if bound in params:
                getattr(request, bound).CopyFrom(_tensor(params[bound], f"parameters.{bound}"))
        if "explained_input" in params:
            tensor = params["explained_input"]
            if not isinstance(tensor, str):
                raise InvalidRequestError(
                    f"parameters.explained_input must be a tensor name (a string), got {type(tensor).__name__}"
                )
            request.explained_input = tensor
    return query_from_proto(request, inputs=inputs)


def _message(document: dict[str, Any], message_type: Any, field: str) -> Any:
    """``document`` (proto JSON; tensors as numbers or nested lists) as a ``message_type``."""
    try:
        return json_format.ParseDict(_proto_json(document, message_type.DESCRIPTOR, field), message_type())
    except json_format.ParseError as err:
        raise InvalidRequestError(f"{field}: {err}") from None


def _proto_json(value: Any, descriptor: Descriptor, field: str) -> Any:
    """Proto JSON with each ``Tensor`` given as numbers made a real ``Tensor`` and each enum given
    without its prefix (``"input"`` for ``SMOOTHING_MODE_INPUT``) spelled out."""
    if not isinstance(value, dict):
        return value
    converted: dict[str, Any] = {}
    for key, item in value.items():
        spec = descriptor.fields_by_name.get(key)
        where = f"{field}.{key}"
        if spec is not None and spec.message_type is _TENSOR and not isinstance(item, dict):
            converted[key] = json_format.MessageToDict(_tensor(item, where))
        elif spec is not None and spec.message_type is not None:
            converted[key] = _proto_json(
                _object(item, where) if item != {} else item, spec.message_type, where
            )
        elif spec is not None and spec.type == FieldDescriptor.TYPE_ENUM and isinstance(item, str):
            converted[key] = _enum_name(item, spec)
        else:
            converted[key] = item
    return converted


def _enum_name(value: str, spec: FieldDescriptor) -> str:
    names = spec.enum_type.values_by_name
    if value in names:
        return value
    prefix = next(iter(names)).removesuffix("UNSPECIFIED")
    full = prefix + value.upper().replace("-", "_")
    return full if full in names else value  # an unknown name: ParseDict names the valid ones


def _tensor(value: Any, field: str) -> pb.Tensor:
    return codec.array_to_tensor(_float_array(value, field, np.dtype(np.float64)), keep_float64=True)


def _float_array(value: Any, field: str, dtype: np.dtype[Any] | None = None) -> np.ndarray:
    """Numbers or equally shaped nested lists of numbers as an array (float32 unless ``dtype``)."""
    _check_numbers(value, field)
    try:
        with np.errstate(over="ignore"):
            array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidRequestError(
            f"{field} must be a number or equally shaped nested lists of numbers (a ragged list was sent)"
        ) from None
    if dtype is not None and dtype != np.float32:
        array = array.astype(dtype)
    return array.astype(np.float32) if dtype is None or dtype == np.float16 else array


def _integer_array(value: Any, field: str, dtype: np.dtype[Any]) -> np.ndarray:
    """Whole numbers (or equally shaped nested lists of them) as an array of ``dtype``; a boolean
    tensor takes 0/1 (or JSON booleans)."""
    if dtype.kind == "b":
        value = _booleans_as_numbers(value)
    _check_numbers(value, field)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidRequestError(
            f"{field} must be a number or equally shaped nested lists of numbers (a ragged list was sent)"
        ) from None
    if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
        raise InvalidRequestError(f"{field} must hold whole numbers for a {dtype} input (e.g. token ids)")
    info = np.iinfo(dtype) if dtype.kind in "iu" else None
    low, high = (info.min, info.max) if info is not None else (0, 1)
    if array.size and (array.min() < low or array.max() > high):
        raise InvalidRequestError(f"{field} holds values outside the {dtype} range [{low}, {high}]")
    if array.size and np.abs(array).max() >= 2**53:  # beyond float64's whole numbers: read exactly
        try:
            array = np.asarray(value, dtype=np.int64)
        except OverflowError:
            raise InvalidRequestError(
                f"{field} holds values outside the {dtype} range [{low}, {high}]"
            ) from None
    return array.astype(dtype)


def _booleans_as_numbers(value: Any) -> Any:
    if isinstance(value, list):
        return [_booleans_as_numbers(item) for item in value]
    return int(value) if isinstance(value, bool) else value


def _check_numbers(value: Any, field: str) -> None:
    """Refuse strings, booleans, objects and nulls anywhere in ``value`` (numpy would coerce some)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool) or not isinstance(item, int | float):
            raise InvalidRequestError(
                f"{field} must hold numbers only, got {type(item).__name__} {str(item)[:40]!r}"
            )


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{field} must be a JSON object, got {type(value).__name__}")
    return value


def _only(document: dict[str, Any], allowed: tuple[str, ...], field: str) -> None:
    unknown = sorted(set(document) - set(allowed))
    if unknown:
        raise InvalidRequestError(f"{field} has unknown keys {unknown}; allowed: {sorted(allowed)}")


# ----------------------------------------------------------------------------------- responses


def _values(array: np.ndarray) -> Any:
    """Nested lists of Python numbers, ``None`` where not finite."""
    if np.all(np.isfinite(array)):
        return array.tolist()
    values = array.astype(object)
    values[~np.isfinite(array)] = None
    return values.tolist()


def _number(value: float) -> float | None:
    return value if np.isfinite(value) else None


def v1_explanation(result: InstanceExplanation) -> dict[str, Any]:
    """One explanation as the KServe v1 response lists it."""
    document = {
        "instance_index": result.instance_index,
        "rank": result.rank,
        "attribution": _values(result.attribution),
        "standard_error": _values(result.standard_error) if result.standard_error_defined else None,
        "target": result.target_index,
        "output": result.output,
        "outputs": _values(result.outputs),
        "samples": result.samples,
        "gradient_evaluations": result.gradient_evaluations,
        "seed": result.seed,
        "inherent_noise": _number(result.inherent_noise),
        "relative_error": _number(result.relative_error),
        "zero_scale_fraction": result.zero_scale_fraction,
        "standard_error_note": result.standard_error_note,
        "method_description": result.description,
        "execution_provider": result.provider,
        "queued_ms": result.queued_ms,
        "computing_ms": result.computing_ms,
    }
    if result.cotangent is not None:
        document["cotangent"] = _values(result.cotangent)
    return document


def v1_response(model: str, results: list[InstanceExplanation], request_id: str) -> dict[str, Any]:
    """``{"explanations": [...]}``: one entry per instance (per rank of a top-k target)."""
    return {
        "model_name": model,
        "request_id": request_id,
        "explanations": [v1_explanation(r) for r in results],
    }


def _oip_tensor(name: str, datatype: str, array: np.ndarray) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": datatype,
        "shape": list(array.shape),
        "data": _values(array.reshape(-1)),
    }


def oip_response(
    model: str, version: str, results: list[InstanceExplanation], request_id: str
) -> dict[str, Any]:
    """The explanations as OIP output tensors, one row per explanation (instance × rank).

    ``attribution`` (FP32), ``standard_error`` (FP32; only when defined for every row, else
    ``parameters.standard_error_note`` says why), ``target`` (INT64, -1 where none), ``samples``,
    ``gradient_evaluations``, ``instance_index``, ``rank`` (INT64), ``seed`` (UINT64),
    ``inherent_noise`` (FP64).
    """
    rows = len(results)
    outputs = [_oip_tensor("attribution", "FP32", np.stack([r.attribution for r in results]))]
    if all(r.standard_error_defined for r in results):
        outputs.append(_oip_tensor("standard_error", "FP32", np.stack([r.standard_error for r in results])))
    columns: tuple[tuple[str, str, Any, Any], ...] = (
        ("target", "INT64", np.int64, lambda r: -1 if r.target_index is None else r.target_index),
        ("samples", "INT64", np.int64, lambda r: r.samples),
        ("gradient_evaluations", "INT64", np.int64, lambda r: r.gradient_evaluations),
        ("instance_index", "INT64", np.int64, lambda r: r.instance_index),
        ("rank", "INT64", np.int64, lambda r: r.rank),
        ("seed", "UINT64", np.uint64, lambda r: r.seed),
        ("inherent_noise", "FP64", np.float64, lambda r: r.inherent_noise),
    )
    for name, datatype, dtype, get in columns:
        outputs.append(
            _oip_tensor(name, datatype, np.array([get(r) for r in results], dtype=dtype).reshape(rows))
        )
    notes = sorted({r.standard_error_note for r in results if r.standard_error_note})
    parameters: dict[str, Any] = {"request_id": request_id}
    if notes:
        parameters["standard_error_note"] = "; ".join(notes)
    return {
        "model_name": model,
        "model_version": version,
        "id": request_id,
        "parameters": parameters,
        "outputs": outputs,
    }


def model_metadata(info: ModelInfo) -> dict[str, Any]:
    """OIP model metadata: the explained input and the explain outputs, plus Mollify's own fields."""
    shape = [-1, *info.input_shape]
    return {
        "name": info.name,
        "versions": [info.version] if info.version else [],
        "platform": "mollify_onnx",
        "inputs": [
            {"name": t.name, "datatype": _OIP_NAMES.get(t.dtype, "FP32"), "shape": [-1, *t.shape]}
            for t in info.request_inputs
        ]
        or [{"name": info.input_name, "datatype": "FP32", "shape": shape}],
        "outputs": [
            {"name": "attribution", "datatype": "FP32", "shape": shape},
            {"name": "standard_error", "datatype": "FP32", "shape": shape},
            {"name": "target", "datatype": "INT64", "shape": [-1]},
            {"name": "samples", "datatype": "INT64", "shape": [-1]},
            {"name": "seed", "datatype": "UINT64", "shape": [-1]},
            {"name": "inherent_noise", "datatype": "FP64", "shape": [-1]},
        ],
        "parameters": {
            "ready": info.ready,
            "error": info.error,
            "explained_tensor": info.output_name,
            "explained_tensor_shape": list(info.output_shape),
            "lower": _values(np.asarray(info.lower)),
            "upper": _values(np.asarray(info.upper)),
            "labels": list(info.labels),
            "execution_provider": info.provider,
            "description": info.description,
            "config_source": getattr(info, "config_source", ""),
            "layout": getattr(info, "layout", ""),
        },
    }
