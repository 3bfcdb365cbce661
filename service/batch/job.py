"""A batch job from start to summary: check the model, plan the blocks, run an engine, commit, summarise."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from estimator.errors import InvalidArgumentError
from service.batch.output import OutputStore
from service.batch.sources import BlockSpec
from service.batch.work import BlockResult, BlockWorker, WorkSpec, explain_row, target_record
from service.cli.output import to_jsonable

__all__ = ["ENGINES", "BatchJob", "BatchSummary", "JobSetupError", "job_record", "run_batch"]

ENGINES = ("local", "ray")


class JobSetupError(Exception):
    """The method or target cannot be used with this model (found before any row is explained)."""


@dataclass(frozen=True)
class BatchJob:
    """A batch job: what to explain (``spec``), where to write it, and how to run it.

    Attributes:
        out: the output folder (see :mod:`service.batch.output`).
        format: ``parquet`` or ``npz``.
        block_rows: rows per block, the unit of work, of output files and of resumption.
        engine: ``local`` or ``ray``.
        workers: worker processes (local) or actors (Ray).
        ray_address: an existing Ray cluster; ``None`` starts a local Ray instance.
    """

    spec: WorkSpec
    out: Path
    format: str = "parquet"
    block_rows: int = 256
    engine: str = "local"
    workers: int = 1
    ray_address: str | None = None


@dataclass(frozen=True)
class BatchSummary:
    """What a run did. ``rows``: the dataset's; ``explained``/``failed``: over all runs of the job."""

    out: Path
    rows: int
    explained: int
    failed: int
    failures_by_reason: dict[str, int]
    mean_relative_error: float
    seconds: float
    rows_this_run: int
    blocks: int
    blocks_skipped: int
    errors_file: Path
    complete: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows_this_run / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = to_jsonable(dataclasses.asdict(self))
        data["out"], data["errors_file"] = str(self.out), str(self.errors_file)
        data["rows_per_second"] = self.rows_per_second
        return dict(data)


def job_record(spec: WorkSpec, block_rows: int, fmt: str) -> dict[str, Any]:
    """What identifies a job in its manifest: a rerun resumes only when all of it is equal."""
    model = spec.model
    record: dict[str, Any] = to_jsonable(
        {
            "model": {
                "name": model.name,
                "graph": model.graph_key,
                "input_name": model.input_name,
                "input_shape": list(model.input_shape),
                "explained": model.explained,
                "bounds_sha256": _digest(model.lower, model.upper),
            },
            "data": spec.source.identity(),
            "method": dataclasses.asdict(spec.method),
            "target": target_record(spec.target),
            "seed": spec.seed,
            "memory_budget_bytes": spec.memory_budget_bytes,
            "block_rows": block_rows,
            "format": fmt,
        }
    )
    return record


def _digest(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return digest.hexdigest()


def preflight(worker: BlockWorker) -> None:
    """Open the model and explain the centre of the input domain once, so that a model that does not
    load, or a method or target it cannot take, stops the job before any row.

    Raises:
        ModelLoadError: the model does not open.
        JobSetupError: the method or target is invalid for this model.
    """
    spec = worker.spec
    centre = ((spec.model.lower.astype(np.float64) + spec.model.upper) / 2).astype(np.float32)
    try:
        explain_row(worker.session, spec, 0, centre)
    except InvalidArgumentError as err:
        raise JobSetupError(str(err)) from err


def run_batch(
    job: BatchJob,
    *,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> BatchSummary:
    """Run (or resume) ``job`` and return its summary.

    Args:
        on_progress: called as ``(rows_done, rows_total, rows_just_finished)`` at the start and
            after every committed block.

    Raises:
        ModelLoadError, JobSetupError: before any work.
        service.batch.output.JobConflictError: the output folder holds another job.
        service.batch.engine_ray.RayMissingError: ``engine="ray"`` without Ray installed.
    """
    if job.engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {job.engine!r}")
    started = time.monotonic()
    spec = job.spec
    worker = BlockWorker(spec)
    preflight(worker)
    if job.engine == "ray":
        from service.batch.engine_ray import import_ray

        import_ray()  # fails now, with the install hint, rather than after the output folder is made
    blocks = spec.source.plan(job.block_rows)
    store = OutputStore(job.out, job.format, job_record(spec, job.block_rows, job.format))
    done = store.open(len(blocks), spec.source.rows)
    pending: list[BlockSpec] = [b for b in blocks if b.index not in done]
    rows_done = sum(b.stop - b.start for b in blocks if b.index in done)
    metadata = {
        "model": spec.model.name,
        "seed": spec.seed,
        "method": to_jsonable(dataclasses.asdict(spec.method)),
        "target": target_record(spec.target),
    }
    this_run = 0
    if on_progress is not None:
        on_progress(rows_done, spec.source.rows, 0)

    def commit(result: BlockResult) -> None:
        nonlocal rows_done, this_run
        record = store.commit(result, metadata)
        if record is None:
            return
        finished = record.explained + len(record.errors)
        rows_done += finished
        this_run += finished
        if on_progress is not None:
            on_progress(rows_done, spec.source.rows, finished)

    try:
        if job.engine == "ray":
            from service.batch.engine_ray import run_ray

            run_ray(spec, pending, commit, workers=job.workers, address=job.ray_address)
        else:
            from service.batch.engine_local import run_local

            run_local(spec, pending, commit, workers=job.workers, worker=worker)
    finally:
        errors_file = store.write_errors()
    records = list(store.records())
    explained = sum(r.explained for r in records)
    reasons = Counter(e.reason for r in records for e in r.errors)
    summary = BatchSummary(
        out=job.out,
        rows=spec.source.rows,
        explained=explained,
        failed=sum(reasons.values()),
        failures_by_reason=dict(sorted(reasons.items())),
        mean_relative_error=sum(r.relative_error_sum for r in records) / explained
        if explained
        else float("nan"),
        seconds=time.monotonic() - started,
        rows_this_run=this_run,
        blocks=len(blocks),
        blocks_skipped=len(done),
        errors_file=errors_file,
        complete=len(records) == len(blocks),
    )
    store.finish(len(blocks), spec.source.rows, summary.as_dict())
    return summary
