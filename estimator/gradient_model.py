"""The one contract between the estimator and a model: a batched gradient function.

The estimator reaches a model only through an object satisfying :class:`GradientModel`.
Tests implement it with analytic functions; the service implements it with ONNX Runtime
(``models.runtime.GradientSession``). This module imports numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class GradientBatch:
    """The result of one batched gradient-graph run.

    Attributes:
        outputs: values of the explained tensor, shape ``(B, *output_shape)``, float32.
        gradients: ``J^T · cotangent`` per sample, shape ``(B, *input_shape)``, float32.
    """

    outputs: np.ndarray
    gradients: np.ndarray


@runtime_checkable
class GradientModel(Protocol):
    """A model seen as a batched vector-Jacobian product.

    Attributes:
        input_shape: shape of one instance, without the batch dimension.
        output_shape: shape of one instance of the explained tensor, without the batch dimension.
        bytes_per_sample: estimated peak memory of one sample in a gradient run, in bytes; the
            estimator divides its memory budget by this to size its chunks.
        weights: the clean float weight tensors that may be overridden per run (NoiseGrad),
            by name; empty when the model exposes none. Never mutated by callers.
    """

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    @property
    def output_shape(self) -> tuple[int, ...]: ...

    @property
    def bytes_per_sample(self) -> int: ...

    @property
    def weights(self) -> Mapping[str, np.ndarray]: ...

    def __call__(
        self,
        inputs: np.ndarray,
        cotangents: np.ndarray,
        weight_overrides: Mapping[str, np.ndarray] | None = None,
    ) -> GradientBatch:
        """Run the model and its gradient graph on a batch.

        Args:
            inputs: ``(B, *input_shape)`` float32.
            cotangents: ``(B, *output_shape)`` float32; row b weights the explained tensor of sample b.
            weight_overrides: replacement values for some of :attr:`weights` (same shapes), used
                for this call only; ``None`` runs with the clean weights.

        Returns:
            The explained tensor values and the input gradients of the batch.
        """
        ...
