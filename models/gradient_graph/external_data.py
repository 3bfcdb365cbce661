"""ONNX external data: weights stored in files beside the model, read where they lie.

``torch.onnx.export`` (the dynamo exporter, PyTorch's default) writes ``model.onnx`` plus
``model.onnx.data``, and a model over 2 GB can only be stored that way (protobuf messages stop at
2 GB). Mollify keeps such weights on disk: a model loaded with ``load_model(path,
external_data=False)`` keeps its tensors' references (a ``location`` relative to the model's
folder, an ``offset`` and a ``length``), values are read only where needed (small constants,
NoiseGrad weights as read-only memory maps) and ONNX Runtime reads the files itself. Imports onnx
and numpy only.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import Message
from onnx import helper, numpy_helper

from models.gradient_graph.errors import InvalidModelError

__all__ = [
    "INLINE_LIMIT_BYTES",
    "check_model",
    "data_files",
    "data_locations",
    "has_external_data",
    "inline_small_tensors",
    "map_tensor",
    "read_tensor",
    "resolve_data_file",
    "save_model",
    "uses_external_data",
]

#: A model whose serialized size exceeds this is written with its weights in ``<file>.data``:
#: protobuf cannot serialize 2 GB, and each in-memory copy of a large model costs its size again.
INLINE_LIMIT_BYTES = 1 << 30
# Tensors smaller than this stay inline when a model is moved to external data (onnx's default).
_TENSOR_THRESHOLD_BYTES = 1024
# inline_small_tensors reads integer tensors up to this size and float tensors up to this many
# values into the model: shape arithmetic and scalars, never weights.
_SMALL_TENSOR_BYTES = 64 * 1024
_SMALL_FLOAT_VALUES = 64
_FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
)


def uses_external_data(tensor: onnx.TensorProto) -> bool:
    """Whether ``tensor``'s values live in a file (``data_location == EXTERNAL``)."""
    return tensor.HasField("data_location") and tensor.data_location == onnx.TensorProto.EXTERNAL


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _graph_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _graph_tensors(subgraph)


def _external_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    return (tensor for tensor in _graph_tensors(model.graph) if uses_external_data(tensor))


def has_external_data(model: onnx.ModelProto) -> bool:
    """Whether any tensor of ``model`` (initializers, Constant values, subgraphs) references a file."""
    return next(_external_tensors(model), None) is not None


def _entries(tensor: onnx.TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def resolve_data_file(folder: Path, location: str, tensor_name: str) -> Path:
    """The file ``location`` names (relative to ``folder``), checked to be a regular file inside it.

    Raises:
        InvalidModelError: the location is empty, absolute, leaves the folder or names no regular file.
    """
    if not location:
        raise InvalidModelError(f"tensor {tensor_name!r} is stored externally but names no location")
    relative = Path(location)
    if relative.is_absolute() or ".." in relative.parts:
        raise InvalidModelError(
            f"tensor {tensor_name!r} names the external data file {location!r}; it must be a path "
            "relative to the model's folder, inside it"
        )
    path = folder / relative
    try:
        resolved = path.resolve(strict=True)
    except (FileNotFoundError, RuntimeError) as err:
        raise InvalidModelError(
            f"tensor {tensor_name!r} is stored in {location!r}, which does not exist beside the model "
            f"(in {str(folder)!r}); copy the model together with its data files"
        ) from err
    if not resolved.is_relative_to(folder.resolve()):
        raise InvalidModelError(
            f"the external data file {location!r} of tensor {tensor_name!r} resolves outside the model's folder"
        )
    if not resolved.is_file():
        raise InvalidModelError(
            f"the external data file {location!r} of tensor {tensor_name!r} is not a regular file"
        )
    return path


def data_locations(model: onnx.ModelProto) -> list[str]:
    """The ``location`` of every external data file ``model`` references, unchecked, in first-use order."""
    seen: dict[str, None] = {}
    for tensor in _external_tensors(model):
        seen.setdefault(_entries(tensor).get("location", ""), None)
    return list(seen)


def data_files(model: onnx.ModelProto, folder: str | os.PathLike[str]) -> list[Path]:
    """The external data files ``model`` references, resolved in ``folder``, in first-use order.

    Raises:
        InvalidModelError: a location is absolute, leaves the folder, or names no regular file.
    """
    base = Path(folder)
    seen: dict[str, Path] = {}
    for tensor in _external_tensors(model):
        location = _entries(tensor).get("location", "")
        if location not in seen:
            seen[location] = resolve_data_file(base, location, tensor.name)
    return list(seen.values())


def read_tensor(tensor: onnx.TensorProto, folder: str | os.PathLike[str] | None) -> np.ndarray:
    """The values of ``tensor``, read from its external file in ``folder`` if it has one (a new array).

    Raises:
        InvalidModelError: the tensor is external and ``folder`` is ``None``, or its file is unusable.
    """
    if not uses_external_data(tensor):
        return numpy_helper.to_array(tensor)
    if folder is None:
        raise InvalidModelError(
            f"tensor {tensor.name!r} is stored in an external data file, but the model was given without "
            "its folder; load it from its path (or pass external_data_dir)"
        )
    resolve_data_file(Path(folder), _entries(tensor).get("location", ""), tensor.name)
    try:
        return numpy_helper.to_array(tensor, base_dir=str(folder))
    except (OSError, ValueError) as err:
        raise InvalidModelError(f"the external data of tensor {tensor.name!r} cannot be read: {err}") from err


def map_tensor(tensor: onnx.TensorProto, folder: str | os.PathLike[str] | None) -> np.ndarray:
    """A read-only array of ``tensor``'s values: a memory map of its external file where possible.

    Mapping keeps a multi-gigabyte weight on disk until pages are touched; tensors stored inline
    or in a layout numpy cannot map (non-native types, string tensors) are read into memory.
    """
    if uses_external_data(tensor) and folder is not None:
        entries = _entries(tensor)
        path = resolve_data_file(Path(folder), entries.get("location", ""), tensor.name)
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
        except (KeyError, TypeError):
            dtype = None
        if dtype is not None and dtype.kind in "fiub":
            shape = tuple(int(d) for d in tensor.dims)
            count = int(np.prod(shape, dtype=np.int64))
            offset = int(entries.get("offset", "0") or 0)
            length = entries.get("length")
            size = path.stat().st_size
            if length is not None and int(length) != count * dtype.itemsize:
                raise InvalidModelError(
                    f"tensor {tensor.name!r}: its external data length {length} does not match its shape "
                    f"{list(shape)} of {dtype} ({count * dtype.itemsize} bytes)"
                )
            if offset < 0 or offset + count * dtype.itemsize > size:
                raise InvalidModelError(
                    f"tensor {tensor.name!r}: its external data (offset {offset}, {count * dtype.itemsize} bytes) "
                    f"runs past the end of {path.name!r} ({size} bytes)"
                )
            if count == 0:
                return np.zeros(shape, dtype)
            # A plain ndarray view of the read-only map (the map stays alive as its base).
            return np.asarray(np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape))
    array = read_tensor(tensor, folder)
    array.setflags(write=False)
    return array


def _stored_bytes(tensor: onnx.TensorProto) -> int | None:
    length = _entries(tensor).get("length")
    if length is not None:
        return int(length)
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError):
        return None
    return int(np.prod([int(d) for d in tensor.dims], dtype=np.int64)) * itemsize


def inline_small_tensors(model: onnx.ModelProto, folder: str | os.PathLike[str]) -> int:
    """Read small external initializers into ``model`` (in place); return how many.

    Shape constants (Reshape targets, Resize scales, Pad widths) may sit in the data file when a
    model was saved with a low threshold; shape inference in onnx and ONNX Runtime reads their
    values and cannot read them from a file. Non-float tensors up to 64 KiB and float tensors of
    at most 64 values are read; weights stay where they are.
    """
    count = 0
    for tensor in model.graph.initializer:
        if not uses_external_data(tensor):
            continue
        size = _stored_bytes(tensor)
        values = int(np.prod([int(d) for d in tensor.dims], dtype=np.int64))
        if tensor.data_type in _FLOAT_TYPES:
            small = values <= _SMALL_FLOAT_VALUES
        else:
            small = size is not None and size <= _SMALL_TENSOR_BYTES
        if not small:
            continue
        inline = numpy_helper.from_array(read_tensor(tensor, folder), tensor.name)
        inline.data_type = tensor.data_type
        tensor.CopyFrom(inline)
        count += 1
    return count


def check_model(model: onnx.ModelProto) -> None:
    """Run the ONNX checker on ``model`` without reading its external data or copying its weights.

    The checker wants external data files relative to a model file (an in-memory model has none)
    and serializes the model (impossible past 2 GB). A model with external data or larger than
    :data:`INLINE_LIMIT_BYTES` is therefore checked as its structure: every initializer that is
    external or of 1 KiB and more becomes a typed graph input.

    Raises:
        onnx.checker.ValidationError: the model is invalid.
    """
    if not has_external_data(model) and model.ByteSize() <= INLINE_LIMIT_BYTES:
        onnx.checker.check_model(model)
        return
    onnx.checker.check_model(_structure(model))


def _copy_fields(source: Message, target: Message, skip: str) -> None:
    """Copy every set field of ``source`` but ``skip`` into ``target`` (messages of one type)."""
    for descriptor, value in source.ListFields():
        if descriptor.name == skip:
            continue
        if descriptor.is_repeated:
            getattr(target, descriptor.name).extend(value)
        elif descriptor.type == descriptor.TYPE_MESSAGE:
            getattr(target, descriptor.name).CopyFrom(value)
        else:
            setattr(target, descriptor.name, value)


def _structure(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its large or external initializers as typed graph inputs (no weight copied)."""
    out = onnx.ModelProto()
    _copy_fields(model, out, "graph")
    _copy_fields(model.graph, out.graph, "initializer")
    declared = {value.name for value in out.graph.input}
    for tensor in model.graph.initializer:
        if uses_external_data(tensor) or tensor.ByteSize() >= _TENSOR_THRESHOLD_BYTES:
            if tensor.name not in declared:
                out.graph.input.append(
                    helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
                )
        else:
            out.graph.initializer.append(tensor)
    return out


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike[str],
    *,
    external_data_dir: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Write ``model`` to ``path`` with the external data it needs beside it; return the files written.

    * A model referencing external data (read from ``external_data_dir``) gets copies of those
      files beside ``path`` (``<name>.data``, or ``<name>.<i>.data`` for several), streamed file to
      file; ``model`` itself is not changed.
    * A self-contained model larger than :data:`INLINE_LIMIT_BYTES` is written with its tensors of
      1 KiB and more in ``<name>.data``; those tensors of ``model`` then reference that file
      (their values move to disk instead of being copied).
    * Otherwise one self-contained file is written.

    The model file comes last in the returned list, so a caller moving the files into place can
    move it last. Parent folders are created.

    Raises:
        InvalidModelError: ``model`` references external data and ``external_data_dir`` is ``None``
            or lacks the files.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if has_external_data(model):
        if external_data_dir is None:
            raise InvalidModelError(
                "the model references external data files; pass external_data_dir, the folder they are in"
            )
        return _save_with_copied_data(model, target, Path(external_data_dir))
    if model.ByteSize() <= INLINE_LIMIT_BYTES:
        target.write_bytes(model.SerializeToString())
        return [target]
    data = target.with_name(f"{target.name}.data")
    data.unlink(missing_ok=True)  # onnx appends to an existing file
    onnx.save_model(
        model,
        str(target),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=_TENSOR_THRESHOLD_BYTES,
    )
    return [data, target] if data.exists() else [target]


def _save_with_copied_data(model: onnx.ModelProto, target: Path, source_dir: Path) -> list[Path]:
    sources = data_files(model, source_dir)
    names = (
        [f"{target.name}.data"]
        if len(sources) == 1
        else [f"{target.name}.{i}.data" for i in range(len(sources))]
    )
    renamed = {
        source.relative_to(source_dir).as_posix(): name for source, name in zip(sources, names, strict=True)
    }
    written: list[Path] = []
    for source, name in zip(sources, names, strict=True):
        destination = target.with_name(name)
        shutil.copyfile(source, destination)
        written.append(destination)
    # The references are small: a copy of the model proto holds no weight that lives in a file.
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for tensor in _external_tensors(out):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = renamed[Path(entry.value).as_posix()]
    target.write_bytes(out.SerializeToString())
    written.append(target)
    return written
