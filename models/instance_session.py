"""Models fed more than the explained tensor: extra graph inputs, or an intermediate explained tensor.

:class:`InstanceSession` serves a model whose request carries a *sent input* (float features, or
integer token ids) plus named *extra inputs* (an attention mask, token type ids), and whose
*explained input* (where noise is added and gradients are taken) is either the sent input itself
or a float tensor inside the graph (:mod:`models.cut`). Per instance, :meth:`InstanceSession.bind`
runs the prefix once on the clean inputs and returns a :class:`BoundInstance`: an
:class:`estimator.gradient_model.GradientModel` over the explained input that feeds the instance's
extra tensors, unchanged, with every noisy sample. The estimator never sees the difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from estimator.errors import InvalidArgumentError
from estimator.gradient_model import GradientBatch

if TYPE_CHECKING:  # onnxruntime is imported only where sessions are opened
    from models.runtime import ForwardSession, GradientSession

__all__ = ["BoundInstance", "InputSpec", "InstanceSession"]


@dataclass(frozen=True)
class InputSpec:
    """A graph input a request sends: its name, numpy dtype and one instance's shape (no batch)."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]


class BoundInstance:
    """One instance's view of an :class:`InstanceSession`: a gradient model of the explained input
    with the instance's extra tensors fed to every row.

    Attributes:
        value: the explained input of the instance at its clean inputs, float32, ``input_shape``.
    """

    def __init__(self, gradient: GradientSession, feeds: Mapping[str, np.ndarray], value: np.ndarray) -> None:
        self._gradient = gradient
        self._feeds = dict(feeds)
        self.value = value

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._gradient.input_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self._gradient.output_shape

    @property
    def bytes_per_sample(self) -> int:
        return self._gradient.bytes_per_sample

    @property
    def weights(self) -> Mapping[str, np.ndarray]:
        return self._gradient.weights

    def __call__(
        self,
        inputs: np.ndarray,
        cotangents: np.ndarray,
        weight_overrides: Mapping[str, np.ndarray] | None = None,
    ) -> GradientBatch:
        return self._gradient(inputs, cotangents, weight_overrides, extras=self._feeds)


class InstanceSession:
    """A served model whose explained input is computed per instance (see the module docstring).

    Args:
        gradient: the gradient session of the suffix (or of the whole model when ``prefix`` is
            ``None``), opened with ``extra_inputs`` = every graph input besides the explained one.
        sent: the input a request carries in ``inputs``.
        extras: the other graph inputs a request carries by name.
        prefix: computes the explained input from ``prefix_inputs``; ``None`` when the explained
            input is ``sent`` itself.
        explained_input: the tensor noise is added at.
        baseline_token_id: fill value of ``sent`` whose explained input is the default IG baseline
            (a padding token); ``None``: no such default.
        lower: bounds of the explained input, :attr:`input_shape`, float32.
        upper: like ``lower``.
        channel_axis: the axis attributions are reduced over when a request names none.
        channel_reduction: the reduction over ``channel_axis`` (``"none"`` when it is ``None``).
    """

    def __init__(
        self,
        gradient: GradientSession,
        sent: InputSpec,
        extras: Sequence[InputSpec],
        *,
        prefix: ForwardSession | None = None,
        prefix_inputs: Sequence[str] = (),
        explained_input: str = "",
        baseline_token_id: int | None = None,
        lower: np.ndarray | None = None,
        upper: np.ndarray | None = None,
        channel_axis: int | None = None,
        channel_reduction: str = "none",
    ) -> None:
        self._gradient = gradient
        self.sent_input = sent
        self.extra_inputs = tuple(extras)
        self._prefix = prefix
        self._prefix_inputs = tuple(prefix_inputs)
        self.explained_input = explained_input or sent.name
        self.baseline_token_id = baseline_token_id
        shape = gradient.input_shape
        self.lower = np.zeros(shape, np.float32) if lower is None else np.asarray(lower, np.float32)
        self.upper = np.ones(shape, np.float32) if upper is None else np.asarray(upper, np.float32)
        #: token ids must lie in [0, index_limit) (the embedding table's rows); None: unchecked.
        self.index_limit: int | None = None
        #: False: ``lower``/``upper`` are placeholders (an intermediate tensor a request named that is
        #: not an embedding lookup); requests must then send their own bounds.
        self.bounds_known = True
        self.channel_axis = channel_axis
        self.channel_reduction = channel_reduction if channel_axis is not None else "none"

    # GradientModel (through bind) ------------------------------------------------------

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One instance of the explained input (where noise is added), no batch dimension."""
        return self._gradient.input_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self._gradient.output_shape

    @property
    def bytes_per_sample(self) -> int:
        return self._gradient.bytes_per_sample

    @property
    def weights(self) -> Mapping[str, np.ndarray]:
        return self._gradient.weights

    @property
    def provider(self) -> str:
        return self._gradient.provider

    @property
    def batching(self) -> str:
        return self._gradient.batching

    @property
    def fixed_batch_size(self) -> int | None:
        return self._gradient.fixed_batch_size

    def __call__(
        self,
        inputs: np.ndarray,
        cotangents: np.ndarray,
        weight_overrides: Mapping[str, np.ndarray] | None = None,
    ) -> GradientBatch:
        raise InvalidArgumentError(
            "this model takes extra inputs or explains an intermediate tensor: bind(instance, extras) first"
        )

    # Per instance ----------------------------------------------------------------------

    def explained_value(self, instance: np.ndarray, extras: Mapping[str, np.ndarray]) -> np.ndarray:
        """The explained input of one instance at its clean inputs (float32, :attr:`input_shape`)."""
        if self._prefix is None:
            return np.asarray(instance, dtype=np.float32)
        available = {self.sent_input.name: instance, **extras}
        feed = {name: _batch_of_one(available[name]) for name in self._prefix_inputs}
        value = self._prefix.run(feed, [self.explained_input])[self.explained_input]
        return np.asarray(value[0], dtype=np.float32)

    def bind(self, instance: np.ndarray, extras: Mapping[str, np.ndarray]) -> BoundInstance:
        """The gradient model of one instance.

        Args:
            instance: the sent input of one instance, :attr:`sent_input`'s shape and dtype.
            extras: one instance of each of :attr:`extra_inputs`, by name.
        """
        available = {self.sent_input.name: instance, **extras}
        feeds = {name: available[name] for name in self._gradient.extra_inputs}
        return BoundInstance(self._gradient, feeds, self.explained_value(instance, extras))

    def default_baseline(self, instance: np.ndarray, extras: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """The explained input when every token is :attr:`baseline_token_id` (``None`` when not set)."""
        if self.baseline_token_id is None:
            return None
        filled = np.full_like(np.asarray(instance), self.baseline_token_id)
        return self.explained_value(filled, extras)


def _batch_of_one(value: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(value)[None])
