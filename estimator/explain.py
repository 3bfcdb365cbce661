"""The estimator's entry point: Monte Carlo gradient mollification of one instance (docs/method.md §2).

``explain`` validates a request, lays its gradient evaluations out as rows (:mod:`estimator.plan`),
runs them through the model in memory-bounded chunks, and streams per-unit statistics into
shifted-sum moments (:mod:`estimator.moments`). Noise depends only on ``(seed, draw coordinates)``
(:mod:`estimator.noise`), so results do not depend on the chunk size. Imports numpy and scipy only.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import secrets
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from ._checks import check_bounds, check_int, check_seed
from .bases import SampleRows, get_base_method
from .describe import describe_valid
from .errors import (
    CancelledError,
    InvalidArgumentError,
    LimitExceededError,
    ModelEvaluationError,
    NonFiniteNoisyGradientsError,
)
from .gradient_model import GradientModel
from .kernels import get_kernel
from .method import Explanation, Method, PredictedClassTarget, Progress, Target
from .moments import StatisticLayout
from .noise import InputNoise
from .parallel import for_each_slice, thread_budget
from .plan import Plan, make_plan, normalized_channel_axis, reuses_clean_row, validate_method
from .samplers import SampledDraws, get_sampler
from .scales import adaptive_quantile_level, domain_slack
from .smoothing import get_smoothing
from .targets import check_target, needs_clean_outputs, resolve_target
from .weights import perturbable_weights, weight_draw

__all__ = ["DEFAULT_MEMORY_BUDGET_BYTES", "ESTIMATOR_BYTES_PER_FEATURE", "explain"]

DEFAULT_MEMORY_BUDGET_BYTES = 256 * 2**20
# The estimator's own working set per row and feature: float64 centers, uniforms, noisy points (of
# two chunks: the next one is built while the model runs this one) and gradients, plus the float32
# batch handed to the model.
ESTIMATOR_BYTES_PER_FEATURE = 5 * 8 + 4
_MODEL_ATTRIBUTES = ("input_shape", "output_shape", "bytes_per_sample", "weights")
# Path points summarised at once after an inner-smoothed IG run (bounds its memory, float64 values).
_SUMMARY_BLOCK_VALUES = 1 << 20


@dataclass(frozen=True)
class _Request:
    model: GradientModel
    method: Method
    target: Target
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    x: np.ndarray  # (D,) float64
    seed: int
    plan: Plan
    chunk_rows: int
    noise: InputNoise | None
    cotangent: np.ndarray | None  # known in advance, else None
    target_index: int | None
    sample_rows: SampleRows  # the base method's rows of this request (holds the open sample)
    weights: tuple[tuple[int, str], ...]
    layout: StatisticLayout
    should_stop: Callable[[], bool] | None
    on_progress: Callable[[Progress], None] | None


def explain(
    model: GradientModel,
    x: np.ndarray,
    method: Method = Method(),  # noqa: B008 - frozen dataclass, safe as a default
    target: Target = PredictedClassTarget(),  # noqa: B008 - frozen dataclass, safe as a default
    *,
    lower: float | np.ndarray,
    upper: float | np.ndarray,
    seed: int | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    max_evaluations: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    chunk_size: int | None = None,
    threads: int | None = None,
) -> Explanation:
    """Explain one instance with a (smoothed) gradient method.

    Computes ``θ = T(mean_i a_i)`` where ``a_i`` is the base attribution (gradient, gradient × input, or
    integrated gradients; docs/method.md §6) of draw ``i`` under input noise (SmoothGrad, Smilkov et al.
    2017; AdaptGrad, Zhou et al. 2024; any kernel of docs/method.md §3), weight noise (NoiseGrad, Bykov et al. 2022) or
    both (FusionGrad), and ``T`` the output transform and channel reduction, together with the
    per-feature standard error of ``θ``.

    Args:
        model: the batched vector-Jacobian product (:class:`~estimator.gradient_model.GradientModel`).
        x: one instance, float array of shape ``model.input_shape`` (no batch axis), finite.
        method: what to compute (:class:`~estimator.method.Method`).
        target: the explained scalar: a class, the predicted class, or an explicit cotangent.
        lower, upper: the data domain Ω, scalars or arrays broadcastable to one instance, finite,
            ``lower < upper`` everywhere. Used by every noise scale, the black/white IG baselines and
            the inherent noise.
        seed: determines every random draw; ``None`` draws a fresh 63-bit seed from OS entropy (echoed
            in the result). Must be in ``[0, 2**64)``.
        memory_budget_bytes: rows per model call are ``budget // (model.bytes_per_sample + 44·D)``.
        max_evaluations: :class:`LimitExceededError` before any work when the plan needs more gradient
            evaluations (:func:`~estimator.plan.planned_evaluations`).
        should_stop: polled before every model call; returning true raises :class:`CancelledError`.
        on_progress: called after every chunk with a :class:`~estimator.method.Progress`.
        chunk_size: rows per model call, overriding the memory budget (tests, benchmarks).
        threads: threads the estimator's own numpy work (noise, moments) may use, the calling one
            included; ``None``: the caller's :func:`~estimator.parallel.thread_budget`, else the CPUs
            this process may run on (at most 8). Results do not depend on it.

    Returns:
        An :class:`~estimator.method.Explanation`; ``attribution`` and ``standard_error`` are float64 of
        one instance's shape (without ``channel_axis`` when reduced). The standard error is 0 for
        deterministic methods and NaN when a stochastic method drew a single unit. ``inherent_noise``
        is averaged over the path points for inner-smoothed IG. ``extras`` holds ``model_calls``,
        ``chunk_rows``, ``units``, ``stopped_early``, ``mean_scale`` (mean ε, input noise only) and
        ``standard_error_note`` when cross-channel covariances had to be dropped.

    Units and stopping: the standard error treats as i.i.d. one input draw (input mode), one weight
    draw (parameter mode) or one weight draw with its ``samples`` inner input draws averaged (fusion
    mode). With ``method.tol`` the rule ``‖SE‖₂/‖θ‖₂ ≤ tol`` is evaluated after every completed unit
    (from the second on), so the stopping point does not depend on the chunk size; rows already run
    in the stopping chunk count in ``gradient_evaluations``. Fusion stops on whole weight draws, capped
    by ``weight_draws``; input mode is capped by ``max_samples`` (default ``samples``).

    Raises:
        InvalidArgumentError: any invalid argument (the message names the field).
        LimitExceededError: the plan needs more than ``max_evaluations``, or one row exceeds the budget.
        CancelledError: ``should_stop()`` returned true.
        ModelEvaluationError: the model failed or returned wrong shapes or non-finite values.
    """
    if threads is not None:
        threads = check_int(threads, "threads", minimum=1)
    with thread_budget(threads):
        request = _prepare(
            model,
            x,
            method,
            target,
            lower=lower,
            upper=upper,
            seed=seed,
            memory_budget_bytes=memory_budget_bytes,
            max_evaluations=max_evaluations,
            should_stop=should_stop,
            on_progress=on_progress,
            chunk_size=chunk_size,
        )
        return _Run(request).execute()


def _shape(value: Any, field: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in value)
    except TypeError as err:
        raise InvalidArgumentError(f"{field}: expected a tuple of ints; got {value!r}") from err
    if any(d < 1 for d in shape):
        raise InvalidArgumentError(f"{field}: expected positive dimensions; got {shape}")
    return shape


def _prepare(
    model: GradientModel,
    x: Any,
    method: Method,
    target: Target,
    *,
    lower: Any,
    upper: Any,
    seed: int | None,
    memory_budget_bytes: int,
    max_evaluations: int | None,
    should_stop: Callable[[], bool] | None,
    on_progress: Callable[[Progress], None] | None,
    chunk_size: int | None,
) -> _Request:
    """Validate every argument of :func:`explain`, in order, and resolve what the run needs."""
    input_shape, output_shape = _model_shapes(model)
    validate_method(method, input_shape)
    check_target(target, output_shape)
    xs = _instance(x, input_shape)
    lo, hi = check_bounds(lower, upper, input_shape)
    seed = secrets.randbits(63) if seed is None else check_seed(seed)
    budget = check_int(memory_budget_bytes, "memory_budget_bytes", minimum=1)
    if max_evaluations is not None:
        max_evaluations = check_int(max_evaluations, "max_evaluations", minimum=1)
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    _check_hooks(should_stop=should_stop, on_progress=on_progress)

    cotangent, target_index = (None, None)
    if not needs_clean_outputs(target):
        cotangent, target_index = resolve_target(target, output_shape)
    plan = make_plan(method)
    _check_evaluations(method, target, plan, max_evaluations)
    if chunk_size is None:
        chunk_size = _budget_rows(model, input_shape, budget)

    flat_x = xs.astype(np.float64).reshape(-1)
    noise = _input_noise(method, input_shape, lo, hi, flat_x) if plan.input_noise else None
    sample_rows = get_base_method(method.base).rows(method, flat_x.reshape(input_shape), lo, hi)
    weights = _perturbable_weights(model, method) if plan.weight_noise else ()
    layout = StatisticLayout(
        input_shape, method.transform, method.channel_reduction, normalized_channel_axis(method, input_shape)
    )
    return _Request(
        model=model,
        method=method,
        target=target,
        input_shape=input_shape,
        output_shape=output_shape,
        x=flat_x,
        seed=seed,
        plan=plan,
        chunk_rows=chunk_size,
        noise=noise,
        cotangent=cotangent,
        target_index=target_index,
        sample_rows=sample_rows,
        weights=weights,
        layout=layout,
        should_stop=should_stop,
        on_progress=on_progress,
    )


def _model_shapes(model: GradientModel) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """One instance's input and output shapes of a :class:`GradientModel`."""
    # The attribute test of ``isinstance(model, GradientModel)``, without typing's slow protocol check.
    if not callable(model) or not all(hasattr(model, name) for name in _MODEL_ATTRIBUTES):
        raise InvalidArgumentError(
            f"model: expected a GradientModel (input_shape, output_shape, bytes_per_sample, weights, __call__); "
            f"got {type(model).__name__}"
        )
    return _shape(model.input_shape, "model.input_shape"), tuple(int(d) for d in model.output_shape)


def _instance(x: Any, input_shape: tuple[int, ...]) -> np.ndarray:
    """``x`` if it is one finite float instance of ``input_shape``."""
    xs = np.asarray(x)
    if xs.dtype.kind != "f":
        raise InvalidArgumentError(f"x: expected a float array; got dtype {xs.dtype}")
    if xs.shape != input_shape:
        raise InvalidArgumentError(
            f"x: expected shape {input_shape} (one instance, no batch axis); got {xs.shape}"
        )
    if not np.all(np.isfinite(xs)):
        raise InvalidArgumentError(
            f"x: expected finite values; got {int(np.count_nonzero(~np.isfinite(xs)))} non-finite of {xs.size}"
        )
    return xs


def _check_hooks(**hooks: Callable[..., Any] | None) -> None:
    for name, hook in hooks.items():
        if hook is not None and not callable(hook):
            raise InvalidArgumentError(f"{name}: expected a callable or None; got {type(hook).__name__}")


def _check_evaluations(method: Method, target: Target, plan: Plan, max_evaluations: int | None) -> None:
    """:class:`LimitExceededError` when the plan needs more than ``max_evaluations`` gradient evaluations."""
    # planned_evaluations(method, target) without validating the method a second time.
    planned = 1 if reuses_clean_row(method, target) else 1 + plan.rows
    if max_evaluations is not None and planned > max_evaluations:
        raise LimitExceededError(
            f"max_evaluations: the method needs {planned} gradient evaluations ({describe_valid(method)}); "
            f"the limit is {max_evaluations}"
        )


def _budget_rows(model: GradientModel, input_shape: tuple[int, ...], budget: int) -> int:
    """Rows per model call that fit ``budget`` bytes (:data:`ESTIMATOR_BYTES_PER_FEATURE` per feature and row)."""
    features = int(np.prod(input_shape, dtype=np.int64))
    per_row = check_int(model.bytes_per_sample, "model.bytes_per_sample", minimum=0)
    per_row += ESTIMATOR_BYTES_PER_FEATURE * features
    rows = budget // per_row
    if rows < 1:
        raise LimitExceededError(
            f"memory_budget_bytes: one gradient evaluation needs about {per_row} bytes; the budget is {budget}"
        )
    return rows


def _perturbable_weights(model: GradientModel, method: Method) -> tuple[tuple[int, str], ...]:
    if not isinstance(model.weights, Mapping):
        raise InvalidArgumentError(
            f"model.weights: expected a mapping of name to array; got {type(model.weights).__name__}"
        )
    return perturbable_weights(model.weights, tuple(method.weight_exclude))


def _input_noise(
    method: Method, input_shape: tuple[int, ...], lo: np.ndarray, hi: np.ndarray, x: np.ndarray
) -> InputNoise:
    kernel = get_kernel(method.kernel, "method.kernel")
    if method.scale in ("adaptive", "truncated"):
        # Both policies are defined relative to the domain around x; a point well outside it is a
        # request error rather than something to smooth silently.
        flat_lo, flat_hi = lo.reshape(-1), hi.reshape(-1)
        slack = domain_slack(flat_lo, flat_hi)
        outside = (x < flat_lo - slack) | (x > flat_hi + slack)
        if np.any(outside):
            j = int(np.argmax(outside))
            raise InvalidArgumentError(
                f"x: expected values inside [lower, upper] for the {method.scale} scale policy; got "
                f"x={x[j]} outside [{flat_lo[j]}, {flat_hi[j]}] at flat index {j} "
                f"({int(np.count_nonzero(outside))} features outside)"
            )
    # fixed_scale(lo, hi, method.alpha, method.sigma) of an already validated method and domain.
    if method.sigma is not None:
        fixed = np.broadcast_to(np.asarray(method.sigma, dtype=np.float64), input_shape).reshape(-1)
    else:
        fixed = float(method.alpha) * (hi - lo).reshape(-1)
    quantile = math.nan
    if method.scale == "adaptive":
        quantile = float(kernel.ppf(adaptive_quantile_level(method.confidence, method.adaptive_rule)))
    return InputNoise(kernel, method.scale, lo.reshape(-1), hi.reshape(-1), fixed, quantile)


def _all_finite(array: np.ndarray) -> bool:
    """``np.all(np.isfinite(array))``; for float32 and smaller in one pass without a mask: any NaN
    or ±inf makes the float64 sum non-finite, and finite values that small cannot overflow it."""
    if array.dtype.itemsize <= 4:
        return math.isfinite(float(array.sum(dtype=np.float64)))
    return bool(np.all(np.isfinite(array)))


def _relative_error(theta: np.ndarray, se: np.ndarray) -> float:
    # Sums of squares rather than np.linalg.norm: no BLAS call (its threads are limited or spinning).
    se_norm = math.sqrt(float(np.square(se).sum()))
    if math.isnan(se_norm):
        return math.inf
    theta_norm = math.sqrt(float(np.square(theta).sum()))
    if se_norm == 0.0:
        return 0.0
    return se_norm / theta_norm if theta_norm > 0.0 else math.inf


class _Run:
    """Mutable state of one ``explain`` call: counters, partial samples, moments."""

    def __init__(self, request: _Request) -> None:
        self.r = request
        self.plan = request.plan
        # A stopping rule looks at the moments after every unit: no grouping then.
        self.moments = request.layout.new_moments(grouped=request.method.tol is None)
        self.cotangent = request.cotangent
        self.target_index = request.target_index
        self.calls = 0
        self.evaluations = 0
        self.samples_done = 0
        self.stopped = False
        self.clean_outputs: np.ndarray | None = None
        self._unit_sum: np.ndarray | None = None  # running Σ z of the open FusionGrad unit
        self._overrides: tuple[int, dict[str, np.ndarray]] | None = None
        self._rows = request.sample_rows
        self._stochastic = get_smoothing(request.method.mode).stochastic
        # Every row's center x as one broadcast view, sliced per chunk.
        self._x_rows = np.broadcast_to(
            request.x, (max(1, min(request.chunk_rows, self.plan.rows)), request.x.size)
        )
        self._streams = None
        if request.noise is not None:
            # Outer-smoothed IG repeats a sample's draw on each of its rows, possibly across chunks.
            sampler = get_sampler(request.method.sampler)
            self._streams = SampledDraws(
                request.noise,
                request.seed,
                sampler,
                sampler.unit_draws(int(request.method.samples), int(request.method.replicates)),
                repeats=self._rows.repeats_draws,
            )

    # -- model access ---------------------------------------------------------------------------
    def _check_stop(self) -> None:
        if self.r.should_stop is not None and self.r.should_stop():
            raise CancelledError(
                f"cancelled after {self.evaluations} gradient evaluations ({self.samples_done} samples)"
            )

    def _call(
        self, points: np.ndarray, cotangent: np.ndarray, overrides: Mapping[str, np.ndarray] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        self._check_stop()
        batch = points.shape[0]
        if points.dtype == np.float32 and points.flags.c_contiguous:
            inputs = points.reshape((batch, *self.r.input_shape))
        else:
            inputs = np.empty((batch, *self.r.input_shape), dtype=np.float32)
            rows = inputs.reshape(batch, -1)
            for_each_slice(
                lambda a, b: np.copyto(rows[a:b], points[a:b], casting="same_kind"), batch, rows.shape[1]
            )
        cotangents = np.empty((batch, *self.r.output_shape), dtype=np.float32)
        cotangents[...] = cotangent
        try:
            result = self.r.model(inputs, cotangents, weight_overrides=overrides)
        except (CancelledError, LimitExceededError, ModelEvaluationError):
            raise
        except Exception as err:
            # Including InvalidArgumentError: the estimator built this batch after validating the
            # request, so a model that rejects it is a model (or configuration) failure.
            raise ModelEvaluationError(f"model call on a batch of {batch} failed: {err!r}") from err
        self.calls += 1
        self.evaluations += batch
        outputs = np.asarray(getattr(result, "outputs", None))
        gradients = np.asarray(getattr(result, "gradients", None))
        for name, array, shape in (
            ("outputs", outputs, (batch, *self.r.output_shape)),
            ("gradients", gradients, (batch, *self.r.input_shape)),
        ):
            if array.shape != shape:
                raise ModelEvaluationError(f"model {name}: expected shape {shape}; got {array.shape}")
            if array.dtype.kind != "f":
                raise ModelEvaluationError(f"model {name}: expected a float array; got dtype {array.dtype}")
            if not _all_finite(array):
                if self.clean_outputs is not None and self.r.noise is not None:
                    self._non_finite_noisy(outputs, gradients)
                bad = int(np.count_nonzero(~np.isfinite(array)))
                raise ModelEvaluationError(
                    f"model {name}: expected finite values; got {bad} non-finite of {array.size} "
                    f"(batch of {batch})"
                )
        return outputs, gradients

    def _non_finite_noisy(self, outputs: np.ndarray, gradients: np.ndarray) -> NoReturn:
        batch = outputs.shape[0]
        finite = np.isfinite(outputs.reshape(batch, -1)).all(axis=1) & np.isfinite(
            gradients.reshape(batch, -1)
        ).all(axis=1)
        bad = batch - int(np.count_nonzero(finite))
        m = self.r.method
        raise NonFiniteNoisyGradientsError(
            f"method.kernel: the model is finite at the input but returned non-finite outputs or gradients "
            f"for {bad} of {batch} noisy samples ({100.0 * bad / batch:.1f}%) drawn with the {m.kernel!r} kernel "
            f"and the {m.scale!r} scale policy: the noise moves inputs where the model overflows. Use less "
            "noise (a smaller alpha or sigma), a lighter-tailed kernel (gaussian), or the 'truncated' or "
            "'adaptive' scale policy, which keep samples inside the input domain"
        )

    # -- the work -------------------------------------------------------------------------------
    def execute(self) -> Explanation:
        r = self.r
        if reuses_clean_row(r.method, r.target):
            # Vanilla gradient / gradient × input with a known target: the clean pass is the answer.
            assert self.cotangent is not None
            points = r.x[None, :]
            outputs, gradients = self._call(points, self.cotangent, None)
            self.clean_outputs = outputs[0]
            self._absorb(0, 1, points, points, gradients)
        else:
            known = self.cotangent is not None
            cotangent = self.cotangent if known else np.zeros(r.output_shape, dtype=np.float32)
            outputs, _ = self._call(r.x[None, :], cotangent, None)  # type: ignore[arg-type]
            self.clean_outputs = outputs[0]
            if not known:
                self.cotangent, self.target_index = resolve_target(r.target, r.output_shape, outputs[0])
            self._run_rows()
        return self._result()

    def _chunks(self) -> list[tuple[int, int]]:
        """``[start, stop)`` rows of every model call; a weight-noise call stays within one unit."""
        plan, chunks, start = self.plan, [], 0
        while start < plan.rows:
            stop = min(start + self.r.chunk_rows, plan.rows)
            if plan.weight_noise:
                # One weight draw per call: weight_overrides apply to the whole batch.
                stop = min(stop, (start // plan.rows_per_unit + 1) * plan.rows_per_unit)
            chunks.append((start, stop))
            start = stop
        return chunks

    def _run_rows(self) -> None:
        plan = self.plan
        chunks = self._chunks()
        # The next chunk's inputs are built in a second thread while the model runs this one: the
        # noise draws overlap the model's single-threaded stretches. Builds stay in chunk order.
        with contextlib.ExitStack() as stack:
            prefetch = None
            if len(chunks) > 1:
                prefetch = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="mollify-prefetch"))
            # The builds run in the caller's context: its thread budget applies to them too.
            context = contextvars.copy_context()
            upcoming = (
                prefetch.submit(self._build_in, context.copy(), *chunks[0]) if prefetch is not None else None
            )
            try:
                for index, (start, stop) in enumerate(chunks):
                    if upcoming is None:
                        points, endpoints = self._build(start, stop)
                    else:
                        points, endpoints = upcoming.result()
                        upcoming = None
                        if prefetch is not None and index + 1 < len(chunks):
                            upcoming = prefetch.submit(self._build_in, context.copy(), *chunks[index + 1])
                    overrides = (
                        self._weight_overrides(start // plan.rows_per_unit) if plan.weight_noise else None
                    )
                    assert self.cotangent is not None
                    _, gradients = self._call(points, self.cotangent, overrides)
                    self._absorb(start, stop, points, endpoints, gradients)
                    if self.r.on_progress is not None:
                        self.r.on_progress(
                            Progress(
                                samples_done=self.samples_done,
                                samples_planned=plan.samples,
                                relative_error=self._current_relative_error(),
                            )
                        )
                    if self.stopped:
                        break
            finally:
                if upcoming is not None:
                    upcoming.cancel()

    def _weight_overrides(self, draw: int) -> dict[str, np.ndarray]:
        if self._overrides is None or self._overrides[0] != draw:
            m = self.r.method
            self._overrides = (
                draw,
                weight_draw(self.r.model.weights, self.r.weights, float(m.weight_sigma), self.r.seed, draw),
            )
        return self._overrides[1]

    def _build_in(self, context: contextvars.Context, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        return context.run(self._build, start, stop)

    def _build(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Model inputs of rows ``[start, stop)`` and the end points ``x`` (or noisy ``x``) of their samples."""
        plan, r = self.plan, self.r
        rows = np.arange(start, stop)
        steps = rows % plan.rows_per_sample
        samples = rows // plan.rows_per_sample
        x_rows = self._x_rows[: rows.size]
        centers = self._rows.centers(steps, x_rows)
        points = np.array(centers) if r.noise is None else r.noise.noisy(self._draws(steps, samples), centers)
        return self._rows.inputs(steps, points, x_rows)

    def _noise_summary(self) -> tuple[float, float, float]:
        """Inherent noise, mean scale and share of zero scales, averaged over the noise centers
        (every path point for inner smoothing, in blocks that bound the memory, else ``x``)."""
        noise, r = self.r.noise, self.r
        assert noise is not None
        steps = self._rows.center_count
        if steps == 1:
            centers = r.x[None, :]
            scales = noise.scale_of(centers)
            return (
                noise.inherent_noise(centers),
                float(scales.mean()),
                float(np.count_nonzero(scales == 0.0)) / scales.size,
            )
        block = max(1, _SUMMARY_BLOCK_VALUES // max(1, r.x.size))
        inherent = scale_sum = zeros = 0.0
        for start in range(0, steps, block):
            step_block = np.arange(start, min(start + block, steps))
            centers = self._rows.centers(step_block, np.broadcast_to(r.x, (step_block.size, r.x.size)))
            scales = noise.scale_of(centers)
            inherent += noise.inherent_noise(centers) * centers.shape[0]
            scale_sum += float(scales.sum())
            zeros += float(np.count_nonzero(scales == 0.0))
        return inherent / steps, scale_sum / (steps * r.x.size), zeros / (steps * r.x.size)

    def _draws(self, steps: np.ndarray, samples: np.ndarray) -> np.ndarray:
        """The noise draws of rows with these path steps and samples, ``(rows, D)``.

        A draw's coordinates are ``(a, b, c)`` = (row step when the base method draws per row, as
        inner-smoothed IG does, else 0; unit for weight noise else 0; inner draw for weight noise else
        sample): other base methods draw once per sample.
        """
        plan = self.plan
        assert self._streams is not None
        if plan.rows_per_sample == 1 and not plan.weight_noise:
            return self._streams.rows(0, 0, int(samples[0]), int(samples[-1]) + 1)
        units, inners = np.divmod(samples, plan.samples_per_unit)
        a = steps if self._rows.noise_per_row else np.zeros_like(steps)
        b = units if plan.weight_noise else np.zeros_like(units)
        c = inners if plan.weight_noise else samples
        out = np.empty((samples.size, self.r.x.size), dtype=np.float64)
        pairs = np.stack([a, b], axis=1)
        for ai, bi in np.unique(pairs, axis=0).tolist():
            rows = np.flatnonzero((a == ai) & (b == bi))
            wanted, inverse = np.unique(c[rows], return_inverse=True)
            # Runs of consecutive draws become one request each.
            breaks = np.flatnonzero(np.diff(wanted) != 1) + 1
            drawn = np.concatenate(
                [
                    self._streams.rows(ai, bi, int(run[0]), int(run[-1]) + 1)
                    for run in np.split(wanted, breaks)
                ]
            )
            out[rows] = drawn[inverse]
        return out

    def _absorb(
        self, start: int, stop: int, points: np.ndarray, endpoints: np.ndarray, gradients: np.ndarray
    ) -> None:
        plan = self.plan
        flat = gradients.reshape(gradients.shape[0], -1)
        if plan.samples_per_unit == 1 and self.r.method.tol is None:
            # One unit per row and no stopping rule: the whole chunk in one vectorised step.
            values = self._rows.batch_values(points, flat)
            if values is not None:
                self.moments.add_many(self.r.layout.statistics(values))
                self.samples_done += stop - start
                return
        for b, row in enumerate(range(start, stop)):
            step, sample = row % plan.rows_per_sample, row // plan.rows_per_sample
            value = self._rows.row_value(step, points[b], endpoints[b], flat[b].astype(np.float64))
            if value is None:
                continue
            self._add_sample(sample, value)
            if self.stopped:
                return

    def _add_sample(self, sample: int, value: np.ndarray) -> None:
        layout, plan = self.r.layout, self.plan
        z = layout.statistic(value)
        self.samples_done += 1
        if plan.samples_per_unit == 1:
            self._add_unit(z)
            return
        inner = sample % plan.samples_per_unit
        if inner == 0:
            self._unit_sum = z
        else:
            assert self._unit_sum is not None
            self._unit_sum += z
        if inner == plan.samples_per_unit - 1:
            assert self._unit_sum is not None
            self._add_unit(self._unit_sum / plan.samples_per_unit)

    def _add_unit(self, z: np.ndarray) -> None:
        self.moments.add(z)
        tol = self.r.method.tol
        if tol is not None and self.moments.count >= 2 and self._current_relative_error() <= tol:
            self.stopped = True

    def _current_relative_error(self) -> float:
        if not self._stochastic:
            return 0.0
        if self.moments.count < 2:
            return math.inf
        theta, se = self.r.layout.finalize(self.moments)
        return _relative_error(theta, se)

    def _result(self) -> Explanation:
        r = self.r
        theta, se = r.layout.finalize(self.moments)
        if not self._stochastic:
            se = np.zeros_like(theta)
        inherent = zero_scale = 0.0
        mean_scale = None
        if r.noise is not None:
            inherent, mean_scale, zero_scale = self._noise_summary()
        extras: dict[str, Any] = {
            "model_calls": self.calls,
            "chunk_rows": r.chunk_rows,
            "units": self.moments.count,
            "stopped_early": self.stopped and self.moments.count < self.plan.units,
        }
        if mean_scale is not None:
            extras["mean_scale"] = mean_scale
        if r.layout.approximate:
            extras["standard_error_note"] = (
                "cross-channel covariances omitted from the standard error "
                f"({r.layout.full_pair_count} co-moment arrays would be needed)"
            )
        assert self.cotangent is not None and self.clean_outputs is not None
        return Explanation(
            attribution=theta,
            standard_error=se,
            outputs=np.array(self.clean_outputs),
            cotangent=np.array(self.cotangent),
            target_index=self.target_index,
            samples=self.moments.count * self.plan.samples_per_unit,
            gradient_evaluations=self.evaluations,
            seed=r.seed,
            inherent_noise=inherent,
            relative_error=_relative_error(theta, se),
            method=r.method,
            description=describe_valid(r.method),
            extras=extras,
            zero_scale_fraction=zero_scale,
        )
