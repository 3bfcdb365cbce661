"""Loading ONNX models from files or bytes with errors that say what is wrong."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from models.gradient_graph.errors import InvalidModelError
from models.gradient_graph.external_data import check_model, data_files, has_external_data

__all__ = ["load_model"]

ModelSource = str | os.PathLike[str] | bytes | bytearray | memoryview | onnx.ModelProto


def load_model(source: ModelSource, *, external_data: bool = True) -> onnx.ModelProto:
    """Load and check an ONNX model.

    Args:
        source: a path to a ``.onnx`` file (external data is read from its folder), the serialized
            bytes of a model, or a ``ModelProto`` (checked and returned as is).
        external_data: for a path, whether to read the external data files into the returned model
            (``True``) or to keep the tensors' references to them (``False``: the files are only
            checked to exist inside the model's folder; what reads the model later needs that
            folder, e.g. :func:`~models.gradient_graph.build_gradient_model`'s ``external_data_dir``).
            Keeping them is how models over 2 GB stay usable: no copy of their weights in memory.

    Returns:
        The checked model.

    Raises:
        InvalidModelError: the file is missing, truncated, not an ONNX model, fails the ONNX checker,
            or its external data files are missing (or, for bytes and protos, cannot be located).
    """
    if isinstance(source, onnx.ModelProto):
        model, origin = source, "the model"
    elif isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        origin = f"the model bytes ({len(data)} bytes)"
        model = _parse(data, origin)
        if has_external_data(model):
            raise InvalidModelError(
                f"{origin} reference external data files, which bytes cannot locate; load the model from its "
                "path (its data files beside it)"
            )
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        origin = f"model file {str(path)!r}"
        try:
            data = path.read_bytes()
        except FileNotFoundError as err:
            raise InvalidModelError(f"{origin} does not exist") from err
        except IsADirectoryError as err:
            raise InvalidModelError(f"{origin} is a directory, expected an .onnx file") from err
        except OSError as err:
            raise InvalidModelError(f"{origin} cannot be read: {err}") from err
        origin = f"{origin} ({len(data)} bytes)"
        model = _parse(data, origin)
        if has_external_data(model):
            try:
                data_files(model, path.parent)
            except InvalidModelError as err:
                raise InvalidModelError(f"{origin}: {err}") from err
            if external_data:
                try:
                    onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
                except (OSError, ValueError) as err:
                    raise InvalidModelError(
                        f"{origin}: its external weight data cannot be read: {err}"
                    ) from err
    else:
        raise InvalidModelError(
            f"source must be a path, bytes or onnx.ModelProto, got {type(source).__name__}"
        )
    _check(model, origin, Path(source) if isinstance(source, str | os.PathLike) else None)
    return model


def _parse(data: bytes, origin: str) -> onnx.ModelProto:
    if not data:
        raise InvalidModelError(f"{origin} is empty, expected a serialized ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise InvalidModelError(
            f"{origin} is truncated or is not an ONNX model (protobuf decoding failed: {err})"
        ) from err
    return model


def _check(model: onnx.ModelProto, origin: str, path: Path | None) -> None:
    if not model.HasField("graph") or not model.graph.node:
        raise InvalidModelError(
            f"{origin} holds no graph nodes: the file is truncated or is not an ONNX model"
        )
    if not model.opset_import:
        raise InvalidModelError(f"{origin} declares no opset_import: the file is truncated or invalid")
    try:
        # From a path the checker reads the file itself: no copy in memory, no 2 GB protobuf limit.
        if path is not None:
            onnx.checker.check_model(str(path))
        else:
            check_model(model)
    except (onnx.checker.ValidationError, ValueError) as err:
        raise InvalidModelError(
            f"{origin} fails the ONNX checker (truncated or invalid model): {err}"
        ) from err
