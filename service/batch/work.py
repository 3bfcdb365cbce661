"""One block of rows explained by one gradient session: the unit of work of every engine.

:class:`BlockWorker` holds the session (opened on first use, so a worker process or Ray actor
opens it once) and turns a :class:`~service.batch.sources.BlockSpec` into a :class:`BlockResult`.
Each row is explained alone with its own seed (:func:`service.batch.seeds.row_seed`), so a
result never depends on which other rows share its block.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from estimator import explain
from estimator.errors import InvalidArgumentError, ModelEvaluationError
from estimator.explain import DEFAULT_MEMORY_BUDGET_BYTES
from estimator.method import (
    ClassTarget,
    DetectionTarget,
    Explanation,
    Method,
    PredictedClassTarget,
    RegionTarget,
    Target,
)
from estimator.targets import format_region
from service.batch.model import BatchModel, open_session
from service.batch.seeds import row_seed
from service.batch.sources import BlockSpec, RowBlock, RowError, Source

if TYPE_CHECKING:
    from models.runtime.backend import Backend

__all__ = ["BatchTarget", "BlockResult", "BlockWorker", "WorkSpec", "explain_row", "target_record"]

BatchTarget = int | RegionTarget | DetectionTarget | None
"""What every row explains: a class index, ``None`` (the class predicted at the clean input), a
region of the explained tensor, or one class score of one detection of a detector head."""


@dataclass(frozen=True)
class WorkSpec:
    """Everything a worker needs, picklable: the model, the data, and how to explain.

    Attributes:
        target: the class to explain, ``None`` for the class predicted at the clean input, or a
            :class:`~estimator.method.RegionTarget` / :class:`~estimator.method.DetectionTarget`
            applied to every row (frozen dataclasses, so the spec stays picklable).
        seed: the job's seed; row ``i`` uses ``row_seed(seed, i)``.
        memory_budget_bytes: memory one row's chunk of samples may use (sizes the model calls).
        intra_op_threads: ONNX Runtime threads of each worker's session.
        device: ONNX Runtime's device of each worker's session.
        backend: runs each worker's session instead of ONNX Runtime on ``device`` and
            ``intra_op_threads`` (a :class:`models.runtime.backend.Backend`; picklable for the
            process and Ray engines, which send it to every worker unopened).
    """

    model: BatchModel
    source: Source
    method: Method
    target: BatchTarget
    seed: int
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES
    intra_op_threads: int = 1
    device: str = "cpu"
    backend: Backend | None = None


@dataclass
class BlockResult:
    """The explained rows of one block, as columns (row ``k`` of every array is ``ids[k]``).

    ``attribution`` and ``standard_error``: ``(n, *attribution_shape)`` float32; ``outputs``:
    ``(n, *output_shape)`` float32; ``target``/``prediction``: ``(n,)`` int64, -1 for none
    (``target`` is the explained class: -1 for a region, the detection's class for a detection).
    """

    index: int
    ids: np.ndarray
    sources: list[str]
    target: np.ndarray
    prediction: np.ndarray
    attribution: np.ndarray
    standard_error: np.ndarray
    outputs: np.ndarray
    samples: np.ndarray
    gradient_evaluations: np.ndarray
    seed: np.ndarray
    inherent_noise: np.ndarray
    relative_error: np.ndarray
    zero_scale_fraction: np.ndarray
    provider: str
    errors: list[RowError] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return int(len(self.ids))


def estimator_target(target: BatchTarget) -> Target:
    if target is None:
        return PredictedClassTarget()
    if isinstance(target, RegionTarget | DetectionTarget):
        return target
    return ClassTarget(target)


def target_record(target: BatchTarget) -> Any:
    """The job record's description of ``target``: ``"predicted"``, a class index, or a JSON object.

    Regions: ``{"kind": "region", "region": ":,10:20,5", "reduction": "sum"}``, or with a mask its
    ``mask_sha256`` and ``mask_elements`` instead of ``region``. Detections: ``{"kind": "detection",
    "detection": I or "best", "class": C or "best", "layout": ..., "box_values": ...}``.
    """
    if target is None:
        return "predicted"
    if isinstance(target, RegionTarget):
        if target.mask is None:
            where: dict[str, Any] = {"region": format_region(target.axes)}
        else:
            mask = np.asarray(target.mask) != 0
            where = {
                "mask_sha256": hashlib.sha256(
                    np.packbits(mask).tobytes() + repr(mask.shape).encode()
                ).hexdigest(),
                "mask_elements": int(np.count_nonzero(mask)),
            }
        return {"kind": "region", **where, "reduction": target.reduction}
    if isinstance(target, DetectionTarget):
        return {
            "kind": "detection",
            "detection": "best" if target.index is None else target.index,
            "class": "best" if target.class_index is None else target.class_index,
            "layout": target.layout,
            "box_values": target.box_values,
        }
    return target


def explain_row(session: Any, spec: WorkSpec, row: int, x: np.ndarray) -> Explanation:
    """Explain row ``row`` (its input ``x``, one instance's shape) with its own seed."""
    return explain(
        session,
        x,
        spec.method,
        estimator_target(spec.target),
        lower=spec.model.lower,
        upper=spec.model.upper,
        seed=row_seed(spec.seed, row),
        memory_budget_bytes=spec.memory_budget_bytes,
    )


def _prediction(outputs: np.ndarray) -> int:
    flat = np.asarray(outputs)
    return int(np.argmax(flat)) if flat.ndim == 1 and flat.size > 1 else -1


class BlockWorker:
    """Explains blocks with one session (opened on the first block)."""

    def __init__(self, spec: WorkSpec) -> None:
        self.spec = spec
        self._session: Any = None

    @property
    def session(self) -> Any:
        if self._session is None:
            self._session = open_session(
                self.spec.model,
                device=self.spec.device,
                intra_op_threads=self.spec.intra_op_threads,
                backend=self.spec.backend,
            )
        return self._session

    def __call__(self, block: BlockSpec) -> BlockResult:
        from threadpoolctl import threadpool_limits

        rows = self.spec.source.read(block)
        # One BLAS thread: worker processes share the cores, and the same thread count everywhere
        # keeps the estimator's float sums, hence every result, identical across engines.
        with threadpool_limits(1):
            return self.explain_rows(rows)

    def explain_rows(self, rows: RowBlock) -> BlockResult:
        explained: list[tuple[int, str, Explanation]] = []
        errors = list(rows.errors)
        for row, where, x in zip(rows.ids.tolist(), rows.sources, rows.inputs, strict=True):
            try:
                explained.append((row, where, explain_row(self.session, self.spec, row, x)))
            except InvalidArgumentError as err:
                errors.append(RowError(row, where, "rejected", str(err)))
            except ModelEvaluationError as err:
                errors.append(RowError(row, where, "model_error", str(err)))
        errors.sort(key=lambda e: e.id)
        return _columns(rows.index, explained, errors, self.session.provider)


def _columns(
    index: int, explained: list[tuple[int, str, Explanation]], errors: list[RowError], provider: str
) -> BlockResult:
    def stack(name: str) -> np.ndarray:
        return np.stack([np.asarray(getattr(e, name), np.float32) for _, _, e in explained])

    def column(values: list[Any], dtype: Any) -> np.ndarray:
        return np.asarray(values, dtype=dtype)

    if not explained:
        empty = np.zeros((0,), np.float32)
        return BlockResult(
            index,
            column([], np.int64),
            [],
            column([], np.int64),
            column([], np.int64),
            empty,
            empty,
            empty,
            column([], np.int64),
            column([], np.int64),
            column([], np.int64),
            column([], np.float64),
            column([], np.float64),
            column([], np.float64),
            provider,
            errors,
        )
    results = [e for _, _, e in explained]
    return BlockResult(
        index=index,
        ids=column([row for row, _, _ in explained], np.int64),
        sources=[where for _, where, _ in explained],
        target=column([-1 if e.target_index is None else e.target_index for e in results], np.int64),
        prediction=column([_prediction(e.outputs) for e in results], np.int64),
        attribution=stack("attribution"),
        standard_error=stack("standard_error"),
        outputs=stack("outputs"),
        samples=column([e.samples for e in results], np.int64),
        gradient_evaluations=column([e.gradient_evaluations for e in results], np.int64),
        seed=column([e.seed for e in results], np.int64),
        inherent_noise=column([e.inherent_noise for e in results], np.float64),
        relative_error=column([e.relative_error for e in results], np.float64),
        zero_scale_fraction=column([e.zero_scale_fraction for e in results], np.float64),
        provider=provider,
        errors=errors,
    )
