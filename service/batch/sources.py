"""Datasets read in blocks of rows: CSV and Parquet tables, image folders, ``.npy`` and ``.npz`` arrays.

A source is built once by the driver (:func:`open_source`: it checks the file against the model
and counts the rows), cut into :class:`BlockSpec` ranges (:meth:`Source.plan`), pickled to the
workers, and each worker reads only its blocks (:meth:`Source.read`): nothing ever holds the whole
dataset. Rows are numbered 0, 1, ... in dataset order (data rows of a table, files of a folder in
sorted path order, rows of the arrays of a ``.npz`` in key order).

A row that cannot become an input (a table row of the wrong width or with a cell that is not a
number, NaN or infinity, an unreadable image) is returned as a :class:`RowError` with its reason
instead of stopping the job; a file that does not fit the model at all raises :class:`SourceError`.
Preprocessing follows the model's config like ``mollify explain`` (:mod:`service.cli.inputs`).
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.batch.model import BatchModel
from service.cli import inputs as input_files
from service.cli.output import BadInputError

__all__ = ["BlockSpec", "RowBlock", "RowError", "Source", "SourceError", "open_source"]


class SourceError(Exception):
    """The dataset cannot be read for this model at all (missing, wrong kind, wrong shape)."""


@dataclass(frozen=True)
class BlockSpec:
    """Rows ``[start, stop)`` of the dataset, block ``index``; ``offset``/``line``: where a CSV block begins."""

    index: int
    start: int
    stop: int
    offset: int = 0
    line: int = 0


@dataclass(frozen=True)
class RowError:
    """A row that was not explained: its id, where it is, a reason key and a message for humans.

    Reasons: ``wrong_width``, ``not_a_number``, ``not_finite``, ``unreadable`` (sources),
    ``rejected`` (the estimator refused the input), ``model_error`` (the model failed on it).
    """

    id: int
    source: str
    reason: str
    message: str


@dataclass
class RowBlock:
    """The readable rows of one block: ``ids`` ``(n,)`` int64, ``inputs`` ``(n, *input_shape)`` float32."""

    index: int
    ids: np.ndarray
    sources: list[str]
    inputs: np.ndarray
    errors: list[RowError] = field(default_factory=list)


class _Rows:
    """Collects the rows of one block, checking each is finite."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.ids: list[int] = []
        self.sources: list[str] = []
        self.tensors: list[np.ndarray] = []
        self.errors: list[RowError] = []

    def add(self, row: int, source: str, values: np.ndarray) -> None:
        if not np.all(np.isfinite(values)):
            self.fail(row, source, "not_finite", "expected finite values, got NaN or infinity")
            return
        self.ids.append(row)
        self.sources.append(source)
        self.tensors.append(np.asarray(values, dtype=np.float32).reshape(self.shape))

    def fail(self, row: int, source: str, reason: str, message: str) -> None:
        self.errors.append(RowError(row, source, reason, message))

    def block(self, index: int) -> RowBlock:
        inputs = np.stack(self.tensors) if self.tensors else np.zeros((0, *self.shape), np.float32)
        return RowBlock(index, np.asarray(self.ids, dtype=np.int64), self.sources, inputs, self.errors)


class Source(ABC):
    """A dataset of ``rows`` rows for one model."""

    rows: int

    def plan(self, block_rows: int) -> list[BlockSpec]:
        """The blocks of ``block_rows`` rows (the last may be shorter) covering every row."""
        return [
            BlockSpec(i, start, min(start + block_rows, self.rows))
            for i, start in enumerate(range(0, self.rows, block_rows))
        ]

    @abstractmethod
    def read(self, block: BlockSpec) -> RowBlock:
        """The rows of ``block`` (readable ones as inputs, the others as errors)."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What identifies the data (path, size, modification time), recorded in the manifest."""


def _file_identity(path: Path, kind: str) -> dict[str, Any]:
    stat = path.stat()
    return {"kind": kind, "path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _tabular_scale(model: BatchModel, size: int) -> tuple[float, np.ndarray, np.ndarray]:
    pre = model.preprocessing
    try:
        return pre.scale, input_files._per_feature(pre.mean, size), input_files._per_feature(pre.std, size)
    except BadInputError as err:
        raise SourceError(err.message) from None


# ----------------------------------------------------------------------------------- CSV


def _is_data_line(cells: Sequence[str]) -> bool:
    return bool(cells) and any(c.strip() for c in cells) and not cells[0].lstrip().startswith("#")


def _parse_line(raw: bytes) -> list[str]:
    text = raw.decode("utf-8-sig")
    return [cell.strip() for cell in next(csv.reader([text]), [])]


class CsvSource(Source):
    """One instance per data row; a header (any non-numeric cell) maps columns to feature names."""

    def __init__(self, path: Path, model: BatchModel) -> None:
        self.path = path
        self.shape = model.input_shape
        self.size = int(np.prod(model.input_shape))
        self.scale, self.mean, self.std = _tabular_scale(model, self.size)
        self.columns: list[int] | None = None
        self.header_cells = 0
        self.rows = 0
        self._blocks: dict[int, list[BlockSpec]] = {}
        try:
            with path.open("rb") as handle:
                for raw in handle:
                    cells = _parse_line(raw)
                    if not _is_data_line(cells):
                        continue
                    if not all(input_files._is_number(c) for c in cells):
                        try:
                            self.columns = input_files._columns_for(
                                cells, model.feature_names, self.size, path
                            )
                        except BadInputError as err:
                            raise SourceError(err.message) from None
                        self.header_cells = len(cells)
                    break
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise SourceError(f"{str(path)!r} is not a readable CSV file: {err}") from err
        self.plan(1 << 62)  # counts the rows

    def plan(self, block_rows: int) -> list[BlockSpec]:
        if block_rows in self._blocks:
            return self._blocks[block_rows]
        starts: list[tuple[int, int]] = []  # (byte offset, line) of every block's first data row
        row, offset, header_seen = 0, 0, self.columns is None
        try:
            with self.path.open("rb") as handle:
                for line, raw in enumerate(handle, start=1):
                    if _is_data_line(_parse_line(raw)):
                        if not header_seen:
                            header_seen = True
                        else:
                            if row % block_rows == 0:
                                starts.append((offset, line))
                            row += 1
                    offset += len(raw)
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise SourceError(f"{str(self.path)!r} is not a readable CSV file: {err}") from err
        blocks = [
            BlockSpec(i, i * block_rows, min((i + 1) * block_rows, row), where, line)
            for i, (where, line) in enumerate(starts)
        ]
        self.rows = row
        self._blocks[block_rows] = blocks
        return blocks

    def read(self, block: BlockSpec) -> RowBlock:
        rows = _Rows(self.shape)
        row, line = block.start, block.line
        with self.path.open("rb") as handle:
            handle.seek(block.offset)
            while row < block.stop:
                raw = handle.readline()
                if not raw:
                    break
                cells = _parse_line(raw)
                if _is_data_line(cells):
                    self._row(rows, row, f"{self.path} line {line}", cells)
                    row += 1
                line += 1
        return rows.block(block.index)

    def _row(self, rows: _Rows, row: int, where: str, cells: list[str]) -> None:
        if self.columns is None and len(cells) != self.size:
            rows.fail(
                row, where, "wrong_width", f"expected {self.size} values (one per feature), got {len(cells)}"
            )
            return
        if self.columns is not None and len(cells) != self.header_cells:
            rows.fail(
                row,
                where,
                "wrong_width",
                f"the header has {self.header_cells} columns, this row {len(cells)}",
            )
            return
        picked = cells if self.columns is None else [cells[i] for i in self.columns]
        try:
            raw = np.array([float(c) for c in picked], dtype=np.float64)
        except ValueError:
            bad = next(c for c in picked if not input_files._is_number(c))
            rows.fail(row, where, "not_a_number", f"expected a number, got {bad!r}")
            return
        rows.add(row, where, (raw * self.scale - self.mean) / self.std)

    def identity(self) -> dict[str, Any]:
        return _file_identity(self.path, "csv")


# ------------------------------------------------------------------------------- Parquet


class ParquetSource(Source):
    """Columns named like the model's features (preprocessed like CSV cells), or one list column
    holding whole instances (used as they are)."""

    def __init__(self, path: Path, model: BatchModel) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self.shape = model.input_shape
        self.size = int(np.prod(model.input_shape))
        try:
            parquet = pq.ParquetFile(path)
        except Exception as err:  # noqa: BLE001 - pyarrow raises several kinds for a bad file
            raise SourceError(f"{str(path)!r} is not a readable Parquet file: {err}") from err
        schema = parquet.schema_arrow
        self.rows = parquet.metadata.num_rows
        self.group_rows = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
        names = list(schema.names)
        lists = [n for n in names if _is_list(schema.field(n).type)]
        self.tensor_column: str | None = None
        self.columns: list[str] = []
        if model.feature_names:
            lookup = {input_files._normalise_name(n): n for n in names}
            missing = [f for f in model.feature_names if input_files._normalise_name(f) not in lookup]
            if not missing:
                self.columns = [lookup[input_files._normalise_name(f)] for f in model.feature_names]
        if not self.columns:
            if len(lists) == 1:
                self.tensor_column = lists[0]
            else:
                numeric = [n for n in names if _is_number_type(schema.field(n).type)]
                if model.feature_names or len(numeric) != self.size:
                    raise SourceError(
                        f"{str(path)!r}: expected a column per model feature ({self.size}, named like the model's "
                        f"features when it names them) or one list column of whole instances; it has {names}"
                    )
                self.columns = numeric
        self.scale, self.mean, self.std = _tabular_scale(model, self.size)

    def read(self, block: BlockSpec) -> RowBlock:
        import pyarrow as pa
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(self.path)
        groups, first, position = [], None, 0
        for i, count in enumerate(self.group_rows):
            if position < block.stop and position + count > block.start:
                groups.append(i)
                first = position if first is None else first
            position += count
        wanted = [self.tensor_column] if self.tensor_column else self.columns
        table = parquet.read_row_groups(groups, columns=wanted)
        table = table.slice(block.start - (first or 0), block.stop - block.start)
        rows = _Rows(self.shape)
        if self.tensor_column:
            cells = table.column(self.tensor_column).to_pylist()
            for offset, value in enumerate(cells):
                row = block.start + offset
                where = f"{self.path} row {row}"
                if value is None or len(value) != self.size:
                    got = "null" if value is None else f"{len(value)} values"
                    rows.fail(row, where, "wrong_width", f"expected {self.size} values, got {got}")
                    continue
                rows.add(row, where, np.array([np.nan if v is None else v for v in value], dtype=np.float64))
            return rows.block(block.index)
        matrix = (
            np.column_stack(
                [table.column(c).cast(pa.float64()).to_numpy(zero_copy_only=False) for c in self.columns]
            )
            if self.columns
            else np.zeros((table.num_rows, 0))
        )
        for offset, raw in enumerate(matrix):
            row = block.start + offset
            rows.add(row, f"{self.path} row {row}", (raw * self.scale - self.mean) / self.std)
        return rows.block(block.index)

    def identity(self) -> dict[str, Any]:
        return _file_identity(self.path, "parquet")


def _is_list(kind: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind))


def _is_number_type(kind: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))


# --------------------------------------------------------------------------- .npy / .npz


def _rows_of(shape: tuple[int, ...], input_shape: tuple[int, ...], where: str) -> int:
    """Rows of an array of ``shape``: 1 for one instance, else its first axis."""
    squeezed = tuple(d for d in input_shape if d != 1)
    size = int(np.prod(input_shape))
    if shape == input_shape or (shape == squeezed and int(np.prod(shape)) == size):
        return 1
    if len(shape) >= 1 and (shape[1:] == input_shape or shape[1:] == squeezed):
        return int(shape[0])
    raise SourceError(f"{where}: expected shape {input_shape} or (rows, *{input_shape}), got {shape}")


@dataclass(frozen=True)
class _Member:
    """One array of an array file: its rows ``[first, first + rows)`` of the dataset."""

    key: str
    first: int
    rows: int
    dtype: str
    data_offset: int


class ArraySource(Source):
    """Rows of a ``.npy`` file, or of the arrays of a ``.npz`` file in key order (``keys``: only those)."""

    def __init__(self, path: Path, model: BatchModel, keys: Sequence[str] = ()) -> None:
        self.path = path
        self.shape = model.input_shape
        self.is_npz = path.suffix.lower() == ".npz"
        self.members: list[_Member] = []
        try:
            if self.is_npz:
                with zipfile.ZipFile(path) as archive:
                    names = sorted(n[:-4] for n in archive.namelist() if n.endswith(".npy"))
                    unknown = [k for k in keys if k not in names]
                    if unknown:
                        raise SourceError(
                            f"{str(path)!r} holds no array named {unknown[0]!r}; it holds {names}"
                        )
                    for key in [n for n in names if not keys or n in keys]:
                        with archive.open(key + ".npy") as stream:
                            self._add(key, stream, f"{path}[{key}]")
            else:
                if keys:
                    raise SourceError("--key selects arrays of a .npz file; a .npy file holds one")
                with path.open("rb") as stream:
                    self._add("", stream, str(path))
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise SourceError(f"{str(path)!r} is not a readable {path.suffix} file: {err}") from err
        if not self.members:
            raise SourceError(f"{str(path)!r} holds no arrays")
        self.rows = sum(m.rows for m in self.members)

    def _add(self, key: str, stream: Any, where: str) -> None:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        if dtype.hasobject or not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
            raise SourceError(f"{where}: expected a numeric array, got dtype {dtype}")
        rows = _rows_of(
            tuple(shape), self.shape, where + (" (select arrays with --key)" if self.is_npz else "")
        )
        if fortran and rows > 1:
            raise SourceError(f"{where}: a Fortran-ordered array cannot be read by rows; save it C-ordered")
        first = self.members[-1].first + self.members[-1].rows if self.members else 0
        self.members.append(_Member(key, first, rows, dtype.str, stream.tell()))

    def read(self, block: BlockSpec) -> RowBlock:
        rows = _Rows(self.shape)
        row_values = int(np.prod(self.shape))
        archive = zipfile.ZipFile(self.path) if self.is_npz else None
        try:
            for member in self.members:
                low, high = max(block.start, member.first), min(block.stop, member.first + member.rows)
                if low >= high:
                    continue
                dtype = np.dtype(member.dtype)
                stream = archive.open(member.key + ".npy") if archive else self.path.open("rb")
                with stream:
                    stream.seek(member.data_offset + (low - member.first) * row_values * dtype.itemsize)
                    data = stream.read((high - low) * row_values * dtype.itemsize)
                values = np.frombuffer(data, dtype=dtype).reshape(high - low, row_values).astype(np.float64)
                label = f"{self.path}[{member.key}]" if self.is_npz else str(self.path)
                for offset, value in enumerate(values):
                    local = low - member.first + offset
                    rows.add(low + offset, f"{label}[{local}]", value)
        finally:
            if archive is not None:
                archive.close()
        return rows.block(block.index)

    def identity(self) -> dict[str, Any]:
        return {
            **_file_identity(self.path, "npz" if self.is_npz else "npy"),
            "keys": [m.key for m in self.members],
        }


# ------------------------------------------------------------------------------ images


class ImageFolderSource(Source):
    """One row per image file under a folder (recursively), in sorted relative-path order."""

    def __init__(self, folder: Path, model: BatchModel) -> None:
        self.folder = folder
        self.files = sorted(
            (
                p.relative_to(folder).as_posix()
                for p in folder.rglob("*")
                if p.is_file() and p.suffix.lower() in input_files.IMAGE_SUFFIXES
            ),
        )
        if not self.files:
            raise SourceError(
                f"{str(folder)!r} holds no images ({', '.join(sorted(input_files.IMAGE_SUFFIXES))})"
            )
        if input_files.image_layout(model.input_shape, model.preprocessing.channels) is None:
            raise SourceError(
                f"{str(folder)!r} holds images, but the model's input shape {model.input_shape} "
                "is not an image's"
            )
        self.spec = input_files.InputSpec(
            model.input_shape, model.preprocessing, model.feature_names, model.lower, model.upper
        )
        self.rows = len(self.files)

    def read(self, block: BlockSpec) -> RowBlock:
        rows = _Rows(tuple(self.spec.input_shape))
        for row in range(block.start, block.stop):
            path = self.folder / self.files[row]
            try:
                loaded = input_files._load_image(path, self.spec)
            except BadInputError as err:
                rows.fail(row, str(path), "unreadable", re.sub(r"^input '.*?' ", "", err.message))
                continue
            rows.add(row, str(path), loaded.tensor)
        return rows.block(block.index)

    def identity(self) -> dict[str, Any]:
        digest = io.BytesIO()
        for name in self.files:
            digest.write(name.encode() + b"\0")
        import hashlib

        return {
            "kind": "images",
            "path": str(self.folder.resolve()),
            "files": len(self.files),
            "names_sha256": hashlib.sha256(digest.getvalue()).hexdigest(),
        }


def open_source(path: Path, model: BatchModel, *, keys: Sequence[str] = ()) -> Source:
    """The source for ``path``: a ``.csv``/``.parquet`` table, a ``.npy``/``.npz`` file or an image folder.

    Raises:
        SourceError: the path is missing, of an unknown kind, or does not fit ``model``.
    """
    if path.is_dir():
        return ImageFolderSource(path, model)
    if not path.is_file():
        raise SourceError(f"{str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return CsvSource(path, model)
    if suffix in (".parquet", ".pq"):
        return ParquetSource(path, model)
    if suffix in (".npy", ".npz"):
        return ArraySource(path, model, keys)
    raise SourceError(
        f"{str(path)!r}: expected a .csv, .parquet, .npy or .npz file or a folder of images, "
        f"got {suffix or 'no suffix'!r}"
    )
