"""Where a batch job writes: an output folder of per-block shards, a manifest and an errors file.

Layout of ``OUT/``::

    manifest.json              the job (model, data, method, seed, block size, format) and, once
                               complete, its summary
    data/part-000012.parquet   explained rows of block 12 (or .npz), written once, atomically
    progress/block-000012.json the block's commit record: rows explained, failed rows with reasons
    errors.csv                 every failed row (id, source, reason, message), rewritten at the end

A block counts as done once its commit record exists; the record is renamed into place after its
shard, so a job killed at any point leaves only whole blocks behind and a rerun with the same job
skips them: no row is ever written twice. A rerun with a different job (another model, data,
method, seed or block size) in the same folder is refused.

Parquet shards hold one row per instance: ``id`` (the row's index in the dataset), ``source``,
``target`` and ``prediction`` (class indices, null when there is none), ``attribution``,
``standard_error`` and ``outputs`` as fixed-shape tensors (Arrow's ``arrow.fixed_shape_tensor``,
shapes also in the schema metadata under ``mollify``), ``samples``, ``gradient_evaluations``,
``seed``, ``inherent_noise``, ``relative_error``, ``zero_scale_fraction`` and ``provider``.
``.npz`` shards hold the same columns as arrays.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.batch.sources import RowError
from service.batch.work import BlockResult

__all__ = ["FORMATS", "BlockRecord", "JobConflictError", "OutputStore"]

FORMATS = ("parquet", "npz")
MANIFEST = "manifest.json"
ERRORS = "errors.csv"
_VERSION = 1


class JobConflictError(Exception):
    """The output folder holds another job's results."""


@dataclass(frozen=True)
class BlockRecord:
    """A committed block: rows explained, failed rows, and the sum of their relative errors."""

    index: int
    explained: int
    errors: tuple[RowError, ...]
    relative_error_sum: float


class OutputStore:
    """The output folder of one job (see the module docstring)."""

    def __init__(self, folder: Path, fmt: str, job: dict[str, Any]) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        self.folder = folder
        self.format = fmt
        self.job = job
        self.data = folder / "data"
        self.progress = folder / "progress"

    @staticmethod
    def recorded_job(folder: Path) -> dict[str, Any] | None:
        """The job recorded in ``folder``'s manifest, or ``None`` when there is none."""
        path = folder / MANIFEST
        if not path.is_file():
            return None
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise JobConflictError(
                f"{path} cannot be read ({err}); remove the folder or choose another --out"
            ) from err
        job = manifest.get("job") if isinstance(manifest, dict) else None
        return job if isinstance(job, dict) else None

    def open(self, blocks: int, rows: int) -> set[int]:
        """Create the folder (or check it holds this same job) and return the blocks already done.

        Raises:
            JobConflictError: the folder holds another job.
            OSError: the folder cannot be written.
        """
        recorded = self.recorded_job(self.folder)
        job = json.loads(json.dumps(self.job))  # as it reads back from JSON
        if recorded is not None and recorded != job:
            changed = sorted(k for k in set(recorded) | set(job) if recorded.get(k) != job.get(k))
            raise JobConflictError(
                f"{self.folder} holds the results of another job (it differs in {', '.join(changed)}); "
                "rerun with the same options to resume it, or choose another --out"
            )
        if recorded is None and self.folder.exists() and any(self.folder.iterdir()):
            raise JobConflictError(f"{self.folder} is not empty and holds no batch job; choose another --out")
        self.data.mkdir(parents=True, exist_ok=True)
        self.progress.mkdir(parents=True, exist_ok=True)
        if recorded is None:
            self._write_manifest({"blocks": blocks, "rows": rows, "complete": False})
        return {record.index for record in self.records()}

    def _write_manifest(self, extra: dict[str, Any]) -> None:
        manifest = {
            "version": _VERSION,
            "tool": "mollify batch",
            "format": self.format,
            "job": self.job,
            "data": "data/",
            "errors": ERRORS,
            **extra,
        }
        _replace_text(self.folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")

    def _marker(self, index: int) -> Path:
        return self.progress / f"block-{index:06d}.json"

    def records(self) -> Iterator[BlockRecord]:
        """Every committed block, in index order."""
        for path in sorted(self.progress.glob("block-*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            yield BlockRecord(
                int(data["block"]),
                int(data["explained"]),
                tuple(RowError(*e) for e in data["errors"]),
                float(data["relative_error_sum"]),
            )

    def commit(self, result: BlockResult, metadata: dict[str, Any]) -> BlockRecord | None:
        """Write ``result``'s shard, then its commit record; ``None`` (nothing written) if already done."""
        marker = self._marker(result.index)
        if marker.exists():
            return None
        file = None
        if result.rows:
            file = self.data / f"part-{result.index:06d}.{self.format}"
            if self.format == "parquet":
                _write_parquet(file, result, metadata)
            else:
                _write_npz(file, result)
        record = BlockRecord(
            result.index,
            result.rows,
            tuple(result.errors),
            float(np.sum(result.relative_error)) if result.rows else 0.0,
        )
        body = {
            "block": record.index,
            "explained": record.explained,
            "file": file.name if file else None,
            "errors": [[e.id, e.source, e.reason, e.message] for e in record.errors],
            "relative_error_sum": record.relative_error_sum,
        }
        _replace_text(marker, json.dumps(body) + "\n")
        return record

    def write_errors(self) -> Path:
        """(Re)write ``errors.csv`` from every committed block, sorted by row id."""
        errors = sorted((e for r in self.records() for e in r.errors), key=lambda e: e.id)
        path = self.folder / ERRORS
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "source", "reason", "message"])
            for error in errors:
                writer.writerow([error.id, error.source, error.reason, error.message])
        os.replace(tmp, path)
        return path

    def finish(self, blocks: int, rows: int, summary: dict[str, Any]) -> None:
        """Record the job as complete with its summary."""
        self._write_manifest({"blocks": blocks, "rows": rows, "complete": True, "summary": summary})


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _tensor_column(values: np.ndarray) -> Any:
    import pyarrow as pa

    if values.ndim < 2:
        return pa.array(values.reshape(len(values)))
    return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(values))


def _write_parquet(path: Path, result: BlockResult, metadata: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def nullable(values: np.ndarray) -> Any:
        return pa.array(values, mask=values < 0, type=pa.int64())

    table = pa.table(
        {
            "id": pa.array(result.ids, pa.int64()),
            "source": pa.array(result.sources, pa.string()),
            "target": nullable(result.target),
            "prediction": nullable(result.prediction),
            "attribution": _tensor_column(result.attribution),
            "standard_error": _tensor_column(result.standard_error),
            "outputs": _tensor_column(result.outputs),
            "samples": pa.array(result.samples, pa.int64()),
            "gradient_evaluations": pa.array(result.gradient_evaluations, pa.int64()),
            "seed": pa.array(result.seed, pa.int64()),
            "inherent_noise": pa.array(result.inherent_noise, pa.float64()),
            "relative_error": pa.array(result.relative_error, pa.float64()),
            "zero_scale_fraction": pa.array(result.zero_scale_fraction, pa.float64()),
            "provider": pa.array([result.provider] * result.rows, pa.string()),
        }
    )
    shapes = {
        "attribution_shape": list(result.attribution.shape[1:]),
        "output_shape": list(result.outputs.shape[1:]),
    }
    table = table.replace_schema_metadata({"mollify": json.dumps({**metadata, **shapes})})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _write_npz(path: Path, result: BlockResult) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        np.savez(
            handle,
            id=result.ids,
            source=np.asarray(result.sources, dtype=str),
            target=result.target,
            prediction=result.prediction,
            attribution=result.attribution,
            standard_error=result.standard_error,
            outputs=result.outputs,
            samples=result.samples,
            gradient_evaluations=result.gradient_evaluations,
            seed=result.seed,
            inherent_noise=result.inherent_noise,
            relative_error=result.relative_error,
            zero_scale_fraction=result.zero_scale_fraction,
            provider=np.asarray([result.provider] * result.rows, dtype=str),
        )
    os.replace(tmp, path)
