"""Analytic :class:`~estimator.gradient_model.GradientModel` implementations with known gradients.

For tests and examples (here and in the service's tests): each model computes its outputs and exact
vector-Jacobian products in numpy, counts its calls, and is *batch invariant* (a sample's result
does not depend on the other samples in its batch, bit for bit), so chunking can be tested exactly.
Imports numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .gradient_model import GradientBatch

__all__ = ["CallRecord", "LinearModel", "QuadraticModel", "ReluShiftModel", "TinyMLP"]


@dataclass
class CallRecord:
    """What a fake model saw: one entry per call."""

    batch_sizes: list[int] = field(default_factory=list)
    inputs: list[np.ndarray] = field(default_factory=list)
    overrides: list[dict[str, np.ndarray] | None] = field(default_factory=list)
    keep_inputs: bool = False

    @property
    def calls(self) -> int:
        return len(self.batch_sizes)

    def log(self, inputs: np.ndarray, overrides: Mapping[str, np.ndarray] | None) -> None:
        self.batch_sizes.append(int(inputs.shape[0]))
        if self.keep_inputs:
            self.inputs.append(np.array(inputs))
        self.overrides.append(None if overrides is None else {k: np.array(v) for k, v in overrides.items()})


class _Fake:
    def __init__(self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> None:
        self._input_shape = tuple(input_shape)
        self._output_shape = tuple(output_shape)
        self.record = CallRecord()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._input_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self._output_shape

    @property
    def bytes_per_sample(self) -> int:
        return 8 * (int(np.prod(self._input_shape)) + int(np.prod(self._output_shape)))

    @property
    def weights(self) -> Mapping[str, np.ndarray]:
        return {}

    def _flat(self, inputs: np.ndarray) -> np.ndarray:
        return np.asarray(inputs, dtype=np.float64).reshape(inputs.shape[0], -1)

    def _batch(self, outputs: np.ndarray, gradients: np.ndarray) -> GradientBatch:
        b = outputs.shape[0]
        return GradientBatch(
            outputs=outputs.reshape((b, *self._output_shape)).astype(np.float32),
            gradients=gradients.reshape((b, *self._input_shape)).astype(np.float32),
        )


class ReluShiftModel(_Fake):
    """``y = Σ_j ReLU(x_j − t_j)`` (output shape ``(1,)``), gradient ``1[x_j > t_j]``.

    Smoothed with a symmetric kernel of scale ``ε_j`` the gradient is ``CDF((x_j − t_j)/ε_j)``.
    """

    def __init__(self, threshold: np.ndarray | float, input_shape: tuple[int, ...] = (1,)) -> None:
        super().__init__(input_shape, (1,))
        self.threshold = np.broadcast_to(np.asarray(threshold, dtype=np.float64), input_shape).reshape(-1)

    def __call__(
        self,
        inputs: np.ndarray,
        cotangents: np.ndarray,
        weight_overrides: Mapping[str, np.ndarray] | None = None,
    ) -> GradientBatch:
        self.record.log(inputs, weight_overrides)
        x = self._flat(inputs)
        shifted = x - self.threshold
        outputs = np.maximum(shifted, 0.0).sum(axis=1, keepdims=True)
        gradients = (shifted > 0.0) * np.asarray(cotangents, dtype=np.float64).reshape(-1, 1)
        return self._batch(outputs, gradients)


class QuadraticModel(_Fake):
    """``y = ½ xᵀ A x`` (output shape ``(1,)``, ``A`` symmetric), gradient ``A x``: linear, so every
    zero-mean smoothing leaves its expectation unchanged."""

    def __init__(self, a: np.ndarray) -> None:
        a = np.asarray(a, dtype=np.float64)
        super().__init__((a.shape[0],), (1,))
        self.a = 0.5 * (a + a.T)

    def __call__(
        self,
        inputs: np.ndarray,
        cotangents: np.ndarray,
        weight_overrides: Mapping[str, np.ndarray] | None = None,
    ) -> GradientBatch:
        self.record.log(inputs, weight_overrides)
        x = self._flat(inputs)
        ax = (x[:, None, :] * self.a[None, :, :]).sum(axis=2)
        outputs = 0.5 * (x * ax).sum(axis=1, keepdims=True)
        gradients = ax * np.asarray(cotangents, dtype=np.float64).reshape(-1, 1)
        return self._batch(outputs, gradients)


class LinearModel(_Fake):
    """``y = W x + b`` with ``W`` of shape ``(C, D)``: gradient ``Wᵀ w`` whatever the input."""

    def __init__(
        self, w: np.ndarray, b: np.ndarray | None = None, input_shape: tuple[int, ...] | None = None
    ) -> None:
        w = np.asarray(w, dtype=np.float64)
        super().__init__(input_shape or (w.shape[1],), (w.shape[0],))
        self.w = w
        self.b = np.zeros(w.shape[0]) if b is None else np.asarray(b, dtype=np.float64)

    def __call__(
        self,
        inputs: np.ndarray,
        cotangents: np.ndarray,
        weight_overrides: Mapping[str, np.ndarray] | None = None,
    ) -> GradientBatch:
        self.record.log(inputs, weight_overrides)
        x = self._flat(inputs)
        outputs = (x[:, None, :] * self.w[None, :, :]).sum(axis=2) + self.b
        cot = np.asarray(cotangents, dtype=np.float64).reshape(x.shape[0], -1)
        gradients = (cot[:, :, None] * self.w[None, :, :]).sum(axis=1)
        return self._batch(outputs, gradients)


class TinyMLP(_Fake):
    """``y = W2 tanh(W1 x + b1) + b2`` with its weights exposed for NoiseGrad (names ``w1, b1, w2, b2``).

    ``weight_overrides`` replace weights for one call; the clean arrays are never written to.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        inputs: int = 4,
        hidden: int = 8,
        outputs: int = 3,
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        if input_shape is not None:
            inputs = int(np.prod(input_shape))
        super().__init__(input_shape or (inputs,), (outputs,))
        self._weights = {
            "w1": rng.standard_normal((hidden, inputs)).astype(np.float32),
            "b1": (0.1 * rng.standard_normal(hidden)).astype(np.float32),
            "w2": rng.standard_normal((outputs, hidden)).astype(np.float32),
            "b2": (0.1 * rng.standard_normal(outputs)).astype(np.float32),
        }
        for array in self._weights.values():
            array.setflags(write=False)

    @property
    def weights(self) -> Mapping[str, np.ndarray]:
        return self._weights

    def __call__(
        self,
        inputs: np.ndarray,
        cotangents: np.ndarray,
        weight_overrides: Mapping[str, np.ndarray] | None = None,
    ) -> GradientBatch:
        self.record.log(inputs, weight_overrides)
        p = {
            k: np.asarray((weight_overrides or {}).get(k, v), dtype=np.float64)
            for k, v in self._weights.items()
        }
        x = self._flat(inputs)
        pre = (x[:, None, :] * p["w1"][None]).sum(axis=2) + p["b1"]
        hidden = np.tanh(pre)
        outputs = (hidden[:, None, :] * p["w2"][None]).sum(axis=2) + p["b2"]
        cot = np.asarray(cotangents, dtype=np.float64).reshape(x.shape[0], -1)
        d_hidden = (cot[:, :, None] * p["w2"][None]).sum(axis=1) * (1.0 - hidden * hidden)
        gradients = (d_hidden[:, :, None] * p["w1"][None]).sum(axis=1)
        return self._batch(outputs, gradients)
