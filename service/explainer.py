"""The domain layer of the service: validate a decoded request against its model, admit it through
the scheduler, run :func:`estimator.explain` per instance (and per rank of a top-k target), and
return :class:`service.vocabulary.InstanceExplanation` values.

No grpc and no protobuf here: the servicer decodes before and encodes after. No numerics either,
beyond checking shapes and picking the top-k classes from the estimator's clean outputs.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from estimator import check_seed, explain, planned_evaluations
from estimator.errors import CancelledError, LimitExceededError
from estimator.explain import ESTIMATOR_BYTES_PER_FEATURE
from estimator.gradient_model import GradientModel
from estimator.method import (
    ClassTarget,
    CotangentTarget,
    DetectionTarget,
    Explanation,
    Method,
    PredictedClassTarget,
    Progress,
    RegionTarget,
    Target,
)
from estimator.targets import check_target
from models.instance_session import InstanceSession
from service.errors import InvalidRequestError, RequestLimitError
from service.memory import format_size
from service.repository import ModelEntry, ModelRepository, ServedModel
from service.request_inputs import checked_extra_inputs, checked_sent_inputs
from service.scheduler import Cancellation, Scheduler
from service.vocabulary import ExplainProgress, ExplainTarget, InstanceExplanation, TopKTarget

__all__ = ["ExplainQuery", "Explainer", "Limits", "WorkObserver"]


@dataclass(frozen=True)
class ExplainQuery:
    """A decoded explanation request.

    Attributes:
        model: the model's name.
        inputs: ``(batch, *input_shape)``: float32, or the model's own dtype for a model whose
            explained input is computed from it (token ids).
        target: what to explain.
        method: how.
        seed: seed of every random draw, shared by all instances; ``None``: the server draws one.
        lower: bound override, broadcastable to one instance; ``None``: the model's.
        upper: like ``lower``.
        extra_inputs: the model's other graph inputs by name, ``(batch, *shape)`` or one instance's
            shape shared by all instances.
        explained_input: the float tensor of the graph to explain with respect to; ``""``: the model's.
    """

    model: str
    inputs: np.ndarray
    target: ExplainTarget = ExplainTarget()
    method: Method = Method()
    seed: int | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    extra_inputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    explained_input: str = ""


@dataclass(frozen=True)
class Limits:
    """Per-request limits, each named after the setting that changes it."""

    max_instances: int = 64
    max_input_elements: int = 16_000_000
    max_evaluations: int = 500_000


class WorkObserver(Protocol):
    """Receives what every explanation cost (metrics)."""

    def explanation_done(
        self, model: str, samples: int, gradient_evaluations: int, seconds: float
    ) -> None: ...


@dataclass(frozen=True)
class _Run:
    """What every explanation of one admitted request shares."""

    entry: ModelEntry
    session: ServedModel
    query: ExplainQuery
    ranks: int
    seed: int
    lower: np.ndarray
    upper: np.ndarray
    queued_s: float
    cancellation: Cancellation
    on_progress: Callable[[ExplainProgress], None] | None
    extras: list[dict[str, np.ndarray]]


class Explainer:
    """Runs explanation requests against a model repository under a scheduler.

    Args:
        repository: where models come from.
        scheduler: admission control (computing slots and queue).
        limits: per-request limits.
        memory_budget_bytes: memory one chunk of samples may use (the estimator sizes chunks by it).
        threads: threads each explanation's own numpy work may use (the estimator's thread budget);
            ``None``: the CPUs the process may run on.
        observer: told what each explanation cost; ``None`` for no one.
    """

    def __init__(
        self,
        repository: ModelRepository,
        scheduler: Scheduler,
        limits: Limits,
        *,
        memory_budget_bytes: int,
        threads: int | None = None,
        observer: WorkObserver | None = None,
    ) -> None:
        self.repository = repository
        self.scheduler = scheduler
        self.limits = limits
        self.memory_budget_bytes = memory_budget_bytes
        self.threads = threads
        self._observer = observer

    def explain(
        self,
        query: ExplainQuery,
        cancellation: Cancellation,
        on_progress: Callable[[ExplainProgress], None] | None = None,
    ) -> list[InstanceExplanation]:
        """Explain every instance of ``query``; instance by instance, ranks in order.

        Raises:
            UnknownModelError, ModelNotReadyError: the model cannot serve.
            InvalidRequestError, estimator.errors.InvalidArgumentError: the request is malformed.
            RequestLimitError: it asks for more than a limit allows.
            OverloadedError, ShuttingDownError: no slot now.
            RequestCancelledError: the client cancelled or the deadline passed.
        """
        entry = self.repository.ready_entry(query.model)
        session = self.repository.session_for(entry, query.target.output, query.explained_input)
        default_lower, default_upper = entry.lower, entry.upper
        if isinstance(session, InstanceSession):
            default_lower, default_upper = session.lower, session.upper
            _check_bounds_given(query, session)
            inputs = checked_sent_inputs(query.inputs, session.sent_input, session.index_limit)
            inputs = self._checked_inputs(inputs, session.sent_input.shape, keep_dtype=True)
            extras = checked_extra_inputs(query.extra_inputs, session.extra_inputs, len(inputs), entry.name)
        else:
            if query.extra_inputs:
                raise InvalidRequestError(
                    f"extra_inputs: model {entry.name!r} has the one input {entry.info.input_name!r}; got "
                    f"{sorted(query.extra_inputs)}"
                )
            if query.inputs.dtype.kind != "f":
                raise InvalidRequestError(
                    f"inputs.datatype must be DATA_TYPE_FP32 or DATA_TYPE_FP64 for model {entry.name!r}, got "
                    f"{query.inputs.dtype}"
                )
            inputs = self._checked_inputs(query.inputs, session.input_shape)
            extras = [{} for _ in range(len(inputs))]
        lower = self._bound(query.lower, default_lower, session.input_shape, "lower")
        upper = self._bound(query.upper, default_upper, session.input_shape, "upper")
        _check_request_magnitudes(query)
        if not np.all(lower < upper):
            where = tuple(int(i) for i in np.argwhere(~(lower < upper))[0])
            raise InvalidRequestError(
                f"lower must be below upper everywhere; at feature {where} lower = {float(lower[where])} "
                f"and upper = {float(upper[where])}"
            )
        ranks = self._ranks(query.target, session)
        per_explanation = planned_evaluations(query.method)
        planned = per_explanation * len(inputs) * ranks
        if planned > self.limits.max_evaluations:
            raise RequestLimitError(
                f"the request plans {planned} gradient evaluations ({per_explanation} per explanation × "
                f"{len(inputs)} instances × {ranks} ranks); the limit is {self.limits.max_evaluations} "
                f"(setting --max-evaluations / MOLLIFY_MAX_EVALUATIONS)"
            )
        if query.seed is not None:
            check_seed(query.seed)
        self._check_row_fits(entry.name, session)
        with self.scheduler.slot(cancellation) as queued_s:
            run = _Run(
                entry=entry,
                session=session,
                query=query,
                ranks=ranks,
                # One seed for the whole request: instance i's result equals a one-instance request.
                seed=query.seed if query.seed is not None else secrets.randbits(63),
                lower=lower,
                upper=upper,
                queued_s=queued_s,
                cancellation=cancellation,
                on_progress=on_progress,
                extras=extras,
            )
            return [
                result for index, x in enumerate(inputs) for result in self._explain_instance(run, index, x)
            ]

    def _explain_instance(self, run: _Run, index: int, x: np.ndarray) -> list[InstanceExplanation]:
        """Explain one instance: one target, or the top k classes (the first found as the prediction)."""
        selection = run.query.target.selection
        targets: list[Target] = [PredictedClassTarget() if isinstance(selection, TopKTarget) else selection]
        results: list[InstanceExplanation] = []
        total = len(run.query.inputs) * run.ranks
        model: GradientModel = run.session
        method = run.query.method
        if isinstance(run.session, InstanceSession):
            bound = run.session.bind(x, run.extras[index])
            model, method = bound, _instance_method(method, run.session, x, run.extras[index])
            x = bound.value
        rank = 0
        while rank < len(targets):

            def report(progress: Progress, rank: int = rank) -> None:
                if run.on_progress is not None:
                    run.on_progress(
                        ExplainProgress(
                            index,
                            rank,
                            total,
                            progress.samples_done,
                            progress.samples_planned,
                            progress.relative_error,
                        )
                    )

            started = time.perf_counter()
            try:
                explanation = explain(
                    model,
                    x,
                    method,
                    targets[rank],
                    lower=run.lower,
                    upper=run.upper,
                    seed=run.seed,
                    memory_budget_bytes=self.memory_budget_bytes,
                    max_evaluations=self.limits.max_evaluations,
                    should_stop=run.cancellation.should_stop,
                    # Progress costs a norm per chunk (and wakes numpy's BLAS threads): only when listened to.
                    on_progress=report if run.on_progress is not None else None,
                    threads=self.threads,
                )
            except CancelledError:
                raise run.cancellation.error("computing") from None
            except LimitExceededError as err:
                raise RequestLimitError(
                    f"{err} (server settings --memory-budget-bytes / MOLLIFY_MEMORY_BUDGET_BYTES, "
                    "--max-evaluations / MOLLIFY_MAX_EVALUATIONS)"
                ) from err
            seconds = time.perf_counter() - started
            if self._observer is not None:
                self._observer.explanation_done(
                    run.entry.name, explanation.samples, explanation.gradient_evaluations, seconds
                )
            if rank == 0 and isinstance(selection, TopKTarget):
                targets.extend(
                    ClassTarget(c)
                    for c in _runner_up_classes(explanation.outputs, explanation.target_index, run.ranks)
                )
            results.append(
                InstanceExplanation(
                    attribution=np.asarray(explanation.attribution, dtype=np.float32),
                    standard_error=np.asarray(explanation.standard_error, dtype=np.float32),
                    outputs=np.asarray(explanation.outputs, dtype=np.float32),
                    target_index=explanation.target_index,
                    samples=explanation.samples,
                    gradient_evaluations=explanation.gradient_evaluations,
                    seed=explanation.seed,
                    inherent_noise=float(explanation.inherent_noise),
                    relative_error=float(explanation.relative_error),
                    queued_ms=run.queued_s * 1000.0,
                    computing_ms=seconds * 1000.0,
                    provider=run.session.provider,
                    description=explanation.description,
                    instance_index=index,
                    rank=rank,
                    output=run.query.target.output or run.entry.info.output_name,
                    cotangent=np.asarray(explanation.cotangent, dtype=np.float32),
                    zero_scale_fraction=float(explanation.zero_scale_fraction),
                    standard_error_note=_standard_error_note(explanation),
                )
            )
            rank += 1
        return results

    # ------------------------------------------------------------------------ checks

    def _checked_inputs(
        self, inputs: np.ndarray, input_shape: tuple[int, ...], *, keep_dtype: bool = False
    ) -> np.ndarray:
        expected = (-1, *input_shape)
        if inputs.ndim != len(expected) or tuple(inputs.shape[1:]) != tuple(input_shape):
            raise InvalidRequestError(
                f"inputs.shape must be [batch, {', '.join(map(str, input_shape))}], got {list(inputs.shape)}"
            )
        if len(inputs) < 1:
            raise InvalidRequestError("inputs must hold at least one instance, got a batch of 0")
        if len(inputs) > self.limits.max_instances:
            raise RequestLimitError(
                f"inputs holds {len(inputs)} instances; the limit is {self.limits.max_instances} "
                f"(setting --max-instances / MOLLIFY_MAX_INSTANCES)"
            )
        if inputs.size > self.limits.max_input_elements:
            raise RequestLimitError(
                f"inputs holds {inputs.size} elements; the limit is {self.limits.max_input_elements} "
                f"(setting --max-input-elements / MOLLIFY_MAX_INPUT_ELEMENTS)"
            )
        if keep_dtype and inputs.dtype.kind != "f":
            return inputs
        finite = np.isfinite(inputs)
        if not finite.all():
            where = tuple(int(i) for i in np.argwhere(~finite)[0])
            raise InvalidRequestError(
                f"inputs must be finite; instance {where[0]} holds {float(inputs[where])} at feature {where[1:]}"
            )
        huge = np.abs(inputs) > MAX_MAGNITUDE
        if huge.any():
            where = tuple(int(i) for i in np.argwhere(huge)[0])
            raise InvalidRequestError(
                f"inputs must be at most {MAX_MAGNITUDE:g} in magnitude{_MAGNITUDE_WHY}; instance {where[0]} "
                f"holds {float(inputs[where]):g} at feature {where[1:]}: rescale the data"
            )
        return inputs if keep_dtype else np.asarray(inputs, dtype=np.float32)

    @staticmethod
    def _bound(
        value: np.ndarray | None, default: np.ndarray, shape: tuple[int, ...], name: str
    ) -> np.ndarray:
        if value is None:
            return default
        try:
            bound = np.broadcast_to(np.asarray(value, dtype=np.float32), shape)
        except ValueError:
            raise InvalidRequestError(
                f"{name}.shape must broadcast to one instance's shape {list(shape)}, got {list(np.shape(value))}"
            ) from None
        if not np.isfinite(bound).all():
            raise InvalidRequestError(f"{name} must be finite")
        _check_magnitude(bound, name)
        return bound

    def _check_row_fits(self, model: str, session: ServedModel) -> None:
        """Refuse before any work when one gradient evaluation alone exceeds the memory budget.

        The estimator sizes its chunks as ``budget // (bytes_per_sample + ESTIMATOR_BYTES_PER_FEATURE·D)``
        rows; below one row nothing can run, and only the server's operator can raise the budget.
        """
        features = int(np.prod(session.input_shape, dtype=np.int64))
        needed = int(session.bytes_per_sample) + ESTIMATOR_BYTES_PER_FEATURE * features
        budget = self.memory_budget_bytes
        if needed > budget:
            mib = -(-needed // (1 << 20))
            raise RequestLimitError(
                f"one gradient evaluation of model {model!r} needs about {format_size(needed)} ({needed} bytes) "
                f"but the server's memory budget per explanation is {format_size(budget)} ({budget} bytes); "
                f"start the server with --memory-budget-bytes / MOLLIFY_MEMORY_BUDGET_BYTES of at least "
                f"{mib}MiB (or fewer --max-concurrent-requests, when the budget was chosen by default)"
            )

    @staticmethod
    def _ranks(target: ExplainTarget, session: ServedModel) -> int:
        selection = target.selection
        if isinstance(selection, RegionTarget):
            check_target(selection, tuple(session.output_shape), "target.region")
        elif isinstance(selection, DetectionTarget):
            check_target(selection, tuple(session.output_shape), "target.detection")
        if isinstance(selection, CotangentTarget) and tuple(selection.cotangent.shape) != tuple(
            session.output_shape
        ):
            raise InvalidRequestError(
                f"target.cotangent.shape must be the explained tensor's instance shape "
                f"{list(session.output_shape)}, got {list(selection.cotangent.shape)}"
            )
        if not isinstance(selection, TopKTarget):
            return 1
        shape = tuple(session.output_shape)
        classes = shape[-1] if shape else 1
        if int(np.prod(shape[:-1])) != 1:
            raise InvalidRequestError(
                f"target.top_k needs an explained tensor with one class axis, but its instance shape is {list(shape)}"
            )
        if not 1 <= selection.k <= classes:
            raise InvalidRequestError(f"target.top_k must be in [1, {classes}], got {selection.k}")
        return selection.k


MAX_MAGNITUDE = 1e19
"""Largest magnitude of a request value in input units (inputs, bounds, σ, IG baseline) or of a
cotangent. Float32 (what models compute in) ends at 3.4e38; the square of 1e19 still fits, so
noise, bound spans, variances and norms inside a model stay finite."""
_MAGNITUDE_WHY = (
    " (models compute in float32, whose range ends at 3.4e38; the squares of larger values overflow)"
)


def _check_magnitude(value: np.ndarray | float, field: str) -> None:
    """Raise :class:`InvalidRequestError` naming ``field`` when a value exceeds :data:`MAX_MAGNITUDE`."""
    array = np.asarray(value)
    huge = np.abs(array) > MAX_MAGNITUDE
    if huge.any():
        where = [int(i) for i in np.argwhere(huge)[0]] if array.ndim else []
        at = f" at index {where}" if where else ""
        raise InvalidRequestError(
            f"{field} must be at most {MAX_MAGNITUDE:g} in magnitude{_MAGNITUDE_WHY}; "
            f"got {float(array[tuple(where)]):g}{at}: rescale the data or the value"
        )


def _check_request_magnitudes(query: ExplainQuery) -> None:
    """The request's own float values beyond inputs and bounds: σ, the IG baseline, a cotangent."""
    method = query.method
    if method.sigma is not None:
        _check_magnitude(method.sigma, "method.sigma")
    if not isinstance(method.ig_baseline, str):
        _check_magnitude(method.ig_baseline, "method.ig_baseline_tensor")
    selection = query.target.selection
    if isinstance(selection, CotangentTarget):
        _check_magnitude(selection.cotangent, "target.cotangent")


def _check_bounds_given(query: ExplainQuery, session: InstanceSession) -> None:
    """Refuse a request at an explained input whose bounds are unknown that sends none."""
    if session.bounds_known or (query.lower is not None and query.upper is not None):
        return
    raise InvalidRequestError(
        f"lower and upper are needed: explained_input {session.explained_input!r} is not an embedding lookup "
        f"(a Gather of a weight), so its bounds cannot be derived; send them as scalars or broadcastable to "
        f"its instance shape {list(session.input_shape)}"
    )


def _instance_method(
    method: Method, session: InstanceSession, x: np.ndarray, extras: Mapping[str, np.ndarray]
) -> Method:
    """``method`` with the model's defaults where the request left them unset: the channel
    reduction of an embedding (per-token sums), and the padding-token IG baseline."""
    if (
        method.channel_axis is None
        and method.channel_reduction == "none"
        and session.channel_axis is not None
    ):
        method = dataclasses.replace(
            method,
            channel_axis=session.channel_axis,
            channel_reduction=session.channel_reduction,  # type: ignore[arg-type]
        )
    if (
        method.base == "integrated_gradients"
        and isinstance(method.ig_baseline, str)
        and method.ig_baseline == "zero"
    ):
        baseline = session.default_baseline(x, extras)
        if baseline is not None:
            method = dataclasses.replace(method, ig_baseline=baseline)
    return method


def _runner_up_classes(outputs: np.ndarray, first: int | None, k: int) -> list[int]:
    """Classes ranked 2..k by score at the clean input; ties keep the lower index first."""
    order = [int(c) for c in np.argsort(-np.asarray(outputs).reshape(-1), kind="stable")]
    if first is not None:
        order.remove(first)
        order.insert(0, first)
    return order[1:k]


def _standard_error_note(explanation: Explanation) -> str:
    """Why the standard error is undefined or approximate; ``""`` when it is a plain standard error."""
    if not np.all(np.isfinite(explanation.standard_error)):
        return (
            "undefined: a single Monte Carlo unit has no sample variance (draw 2 or more samples, "
            "or weight draws for NoiseGrad/FusionGrad, to get a standard error)"
        )
    return str(explanation.extras.get("standard_error_note", ""))
