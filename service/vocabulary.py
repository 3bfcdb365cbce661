"""The service's public data types, shared by the server's domain layer and the Python client.

Plain frozen dataclasses over numpy arrays: no grpc, no protobuf. ``service/codec.py`` converts
them to and from the ``mollify.v1`` messages.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from estimator.method import ClassTarget, CotangentTarget, DetectionTarget, PredictedClassTarget, RegionTarget


@dataclass(frozen=True)
class TopKTarget:
    """Explain each of the ``k`` highest-scoring classes of the explained tensor at the clean input."""

    k: int


Selection = ClassTarget | PredictedClassTarget | TopKTarget | CotangentTarget | RegionTarget | DetectionTarget


@dataclass(frozen=True)
class ExplainTarget:
    """What to explain.

    Attributes:
        selection: a class index, the predicted class, the top k classes, an explicit cotangent,
            the sum or mean over a region (dense outputs) or a class of a detection (detector heads).
        output: the tensor to explain instead of the model's configured one (any graph tensor);
            ``""`` keeps the configured one.
    """

    selection: Selection = field(default_factory=PredictedClassTarget)
    output: str = ""


@dataclass(frozen=True)
class InstanceExplanation:
    """One explanation of one instance.

    Attributes:
        attribution: float32, one instance's shape (reduced over the channel axis when asked).
        standard_error: float32, per-feature standard error of ``attribution``, same shape; NaN
            where undefined (a single Monte Carlo unit: see ``standard_error_note``).
        outputs: float32, the explained tensor at the clean input, one instance's output shape.
        target_index: the class explained (also for detection targets); ``None`` for an explicit
            cotangent or a region.
        samples: Monte Carlo draws used (input draws × weight draws for fusion).
        gradient_evaluations: vector-Jacobian products evaluated, the clean pass included.
        seed: the seed that determines every random draw of this explanation.
        inherent_noise: mean probability that a noisy sample leaves the input domain (AdaptGrad
            paper, Eq. 9–10); 0 without input noise.
        relative_error: final ‖SE‖₂ / ‖attribution‖₂; 0 for deterministic methods, NaN when the
            standard error is undefined.
        queued_ms: milliseconds the request waited for a computing slot.
        computing_ms: milliseconds spent computing this explanation.
        provider: the ONNX Runtime execution provider that ran the model.
        description: a short human-readable name of the method.
        instance_index: position of the instance in the request's batch.
        rank: 0 for the first (or only) target; rank among the top k otherwise.
        output: name of the explained tensor.
        cotangent: float32, the cotangent explained (one-hot for a class), output shape.
        zero_scale_fraction: share of features whose input-noise scale is zero (0 to 1).
        standard_error_note: why the standard error is undefined or how it was approximated; ``""``
            for a plain per-feature standard error.
    """

    attribution: np.ndarray
    standard_error: np.ndarray
    outputs: np.ndarray
    target_index: int | None
    samples: int
    gradient_evaluations: int
    seed: int
    inherent_noise: float
    relative_error: float
    queued_ms: float
    computing_ms: float
    provider: str
    description: str
    instance_index: int = 0
    rank: int = 0
    output: str = ""
    cotangent: np.ndarray | None = None
    zero_scale_fraction: float = 0.0
    standard_error_note: str = ""

    @property
    def standard_error_defined(self) -> bool:
        """Whether ``standard_error`` holds numbers (false for a single Monte Carlo unit)."""
        return bool(np.all(np.isfinite(self.standard_error)))


@dataclass(frozen=True)
class ExplainProgress:
    """Reported during a streamed explanation after every chunk of samples.

    Attributes:
        instance_index: the instance being explained.
        rank: its rank among the top k (0 otherwise).
        explanations_total: explanations in the whole request (instances × ranks).
        samples_done: input draws done so far for this explanation.
        samples_planned: input draws planned (the cap when a target relative error is set).
        relative_error: current ‖SE‖₂ / ‖mean‖₂.
    """

    instance_index: int
    rank: int
    explanations_total: int
    samples_done: int
    samples_planned: int
    relative_error: float


@dataclass(frozen=True)
class TensorDescription:
    """A named tensor; ``-1`` marks a dimension of any size (the batch)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class ModelInfo:
    """What a client needs to know about a served model.

    Attributes:
        name: the model's folder name in the repository.
        ready: whether it can explain; when false, ``error`` says why.
        error: the load error, ``""`` when ready.
        input_name: the explained graph input.
        input_shape: one instance's shape, without the batch dimension.
        output_name: the configured explained tensor (may be an intermediate tensor such as logits).
        output_shape: one instance's shape of the explained tensor (``()`` when unknown).
        lower: float32 lower bound of the input domain, ``input_shape``.
        upper: float32 upper bound of the input domain, ``input_shape``.
        labels: class names indexed like the explained tensor's last axis.
        feature_names: tabular models: one name per input feature.
        preprocessing: how raw data becomes the input (``models.config.Preprocessing`` as a dict).
        provider: the execution provider the model runs on (``""`` when not ready).
        description: one line for humans.
        graph_inputs: the ONNX graph's inputs, batch included.
        graph_outputs: the ONNX graph's outputs, batch included.
        weights: names of the weight tensors parameter noise perturbs.
        batching: ``"dynamic"``, ``"symbolic"`` (a fixed export batch made symbolic, checked) or
            ``"fixed"`` (``fixed_batch_size`` rows per model call); ``""`` when not ready.
        fixed_batch_size: rows per model call when ``batching == "fixed"``, else 0.
        stale: whether the model's files changed since the served version was loaded and the new
            files failed to load (the served version keeps serving; ``candidate_error`` says why).
        candidate_error: the load error of those newer files, ``""`` when there are none.
        version: content hash (16 hex digits) of the files the served version was loaded from;
            ``""`` when not ready.
        config_source: ``"config.json"``, or what was inferred from the graph (no config.json).
        layout: how the repository holds it: ``"mollify"``, ``"kserve"`` (a single-model folder)
            or ``"triton version 3 of [1, 3]"``.
        request_inputs: what a request sends: the first in ``inputs`` (in its dtype, e.g. int64
            token ids), the others by name in ``extra_inputs``; one instance's shapes.
        explained_input: the tensor noise is added at (``input_name`` itself, or an intermediate
            tensor such as an embedding output); attributions have its shape before any channel
            reduction, and ``lower``/``upper`` are its bounds. ``None`` when not ready.
        tokenizer: text models: the Hugging Face ``tokenizers`` JSON saved beside the model
            (``tokenizer.json``); ``""`` when there is none, and in model lists (see :meth:`listed`).
        has_tokenizer: whether the model has a tokenizer (also in model lists).
    """

    name: str
    ready: bool
    error: str
    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    output_shape: tuple[int, ...]
    lower: np.ndarray
    upper: np.ndarray
    labels: list[str]
    feature_names: list[str]
    preprocessing: dict[str, Any]
    provider: str
    description: str
    graph_inputs: tuple[TensorDescription, ...] = ()
    graph_outputs: tuple[TensorDescription, ...] = ()
    weights: tuple[str, ...] = ()
    batching: str = ""
    fixed_batch_size: int = 0
    stale: bool = False
    candidate_error: str = ""
    version: str = ""
    config_source: str = ""
    layout: str = ""
    request_inputs: tuple[TensorDescription, ...] = ()
    explained_input: TensorDescription | None = None
    tokenizer: str = ""
    has_tokenizer: bool = False

    def listed(self) -> ModelInfo:
        """This info as model lists carry it: without the tokenizer's text (up to megabytes each)."""
        return dataclasses.replace(self, tokenizer="") if self.tokenizer else self


@dataclass(frozen=True)
class ReloadResult:
    """What a repository reload changed, and every model afterwards."""

    models: list[ModelInfo]
    added: list[str]
    reloaded: list[str]
    removed: list[str]
