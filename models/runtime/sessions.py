"""The sessions the estimator and the service use, on any :class:`~models.runtime.backend.Backend`:
:class:`GradientSession` runs a gradient model built by :func:`models.gradient_graph.build_gradient_model`
and satisfies :class:`estimator.gradient_model.GradientModel`; :class:`ForwardSession` runs any ONNX
model forward (benchmarks, predictions, the prefix of a cut model).

Metadata, validation, weight overrides and fixed batches live here; opening and running a graph is
the backend's job (default: :class:`~models.runtime.ort_backend.OrtBackend`, ONNX Runtime on the
device and execution providers given).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np
import onnx

from estimator.errors import InvalidArgumentError, ModelEvaluationError
from estimator.gradient_model import GradientBatch
from models.gradient_graph import GradientMetadata, InvalidModelError, read_gradient_metadata
from models.gradient_graph.external_data import map_tensor
from models.runtime.backend import Backend, BackendModel, OutputSpecs
from models.runtime.batches import run_in_batches
from models.runtime.graph import (
    ELEMENT_DTYPES,
    FLOAT_TYPES,
    ModelSource,
    forward_model,
    freeze_weights,
    instance_shape,
    to_model,
)
from models.runtime.memory import estimate_bytes_per_sample
from models.runtime.ort_backend import OrtBackend, OrtModel
from models.runtime.providers import Device, RuntimeOptions

__all__ = ["ForwardSession", "GradientSession"]


def _backend(
    backend: Backend | None, device: Device, intra_op_threads: int | None, options: RuntimeOptions | None
) -> Backend:
    """``backend``, or the ONNX Runtime backend configured by the other arguments."""
    if backend is None:
        return OrtBackend(device=device, intra_op_threads=intra_op_threads, options=options)
    if device != "auto" or intra_op_threads is not None or options is not None:
        raise InvalidArgumentError(
            "device, intra_op_threads and options configure the default ONNX Runtime backend; "
            f"with backend={type(backend).__name__} configure the backend itself"
        )
    return backend


class _RunnerAdapter:
    """A :class:`ForwardSession` as a :class:`~models.runtime.batches.Runner` (``run(names, feed)`` → list)."""

    def __init__(self, forward: ForwardSession) -> None:
        self._forward = forward

    def run(self, names: Sequence[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        results = self._forward.run(feed, names)
        return [results[name] for name in names]


class ForwardSession:
    """An ordinary ONNX model run forward on a backend (ONNX Runtime by default).

    Args:
        model: a model, its serialized bytes, or a path to a ``.onnx`` file (external data beside it).
        device: ``"auto"`` (CUDA when it really loads, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        intra_op_threads: ONNX Runtime's intra-op thread count; ``None`` lets it choose.
        external_data_dir: for a ``ModelProto`` referencing external data files: their folder.
        options: the CUDA provider's options and execution providers (see :class:`RuntimeOptions`).
        backend: runs the model; default: :class:`~models.runtime.ort_backend.OrtBackend` on
            ``device`` with ``intra_op_threads`` and ``options`` (which must then stay unset).
    """

    def __init__(
        self,
        model: ModelSource,
        *,
        device: Device = "auto",
        intra_op_threads: int | None = None,
        external_data_dir: str | os.PathLike[str] | None = None,
        options: RuntimeOptions | None = None,
        backend: Backend | None = None,
    ) -> None:
        proto, folder = to_model(model, external_data_dir)
        self._backend = _backend(backend, device, intra_op_threads, options)
        self._opened = self._backend.open(proto, external_data_dir=folder)
        self._required = [
            value.name
            for value in proto.graph.input
            if value.name not in {init.name for init in proto.graph.initializer}
        ]

    @property
    def provider(self) -> str:
        """The execution provider really in use (e.g. ``"CUDAExecutionProvider"`` or ``"CPUExecutionProvider"``)."""
        return self._opened.provider

    @property
    def input_names(self) -> list[str]:
        """Inputs that must be fed (graph inputs without an initializer default)."""
        return list(self._required)

    @property
    def output_names(self) -> list[str]:
        return [output.name for output in self._opened.outputs]

    def run(
        self, feed: np.ndarray | Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the model.

        Args:
            feed: one array when the model has a single required input, else a name → array mapping.
            outputs: names of the outputs to return; default: every graph output.

        Returns:
            Output name → array.
        """
        if isinstance(feed, np.ndarray):
            if len(self._required) != 1:
                raise InvalidArgumentError(
                    f"feed must be a mapping for a model with inputs {self._required}, got one array"
                )
            feed = {self._required[0]: feed}
        missing = [name for name in self._required if name not in feed]
        if missing:
            raise InvalidArgumentError(f"feed lacks the inputs {missing}; the model needs {self._required}")
        names = list(outputs) if outputs is not None else self.output_names
        try:
            values = self._opened.run(names, dict(feed))
        except Exception as err:
            raise ModelEvaluationError(f"{self._backend.name} failed to run the model: {err}") from err
        return {name: np.asarray(value) for name, value in zip(names, values, strict=True)}


class GradientSession:
    """A gradient model run by a backend (ONNX Runtime by default), as an
    :class:`estimator.gradient_model.GradientModel`.

    One call on a batch of ``B`` inputs and ``B`` cotangents returns the explained tensor and
    ``J^T · cotangent`` for every sample (reverse mode over the ONNX graph, models.gradient_graph).

    Performance notes (measured on the 2-core CPU host): calls without weight overrides run a session
    in which the weights are constants, which made the ResNet-18 gradient graph about 25% faster
    (1.57 s vs 2.10 s at N = 50) than with the weights as overridable inputs; the first call with
    overrides opens a second session over the overridable graph (the weights are then held twice).
    On CPU, plain ``InferenceSession.run`` was as fast as IO binding with pre-allocated outputs
    (digits CNN: 1.53 ms vs 1.59 ms at N = 50, 0.046 ms vs 0.054 ms at N = 1), so it is used there
    by default; CUDA sessions use I/O binding (device buffers reused across calls of one shape,
    see :class:`RuntimeOptions`), which gives the same numbers bit for bit.

    A model whose batch is fixed (exported without a dynamic batch axis; metadata ``batching ==
    "fixed"``) is run ``batch_size`` rows per ONNX Runtime call, the last call padded with copies of
    its last row whose results are dropped, so callers may pass any number of rows.

    Args:
        model: a gradient model (built by :func:`models.gradient_graph.build_gradient_model` or
            ``mollify gradify``), its bytes, or a path to it (external data files beside it stay
            on disk: onnxruntime reads them, and :attr:`weights` maps them read-only).
        input_name: the differentiated input to use; default: the only one the model has.
        device: ``"auto"`` (CUDA when it really loads, else CPU), ``"cpu"``, ``"cuda"`` (GPU 0) or
            ``"cuda:N"`` (raises :class:`DeviceUnavailableError` when CUDA does not load).
        intra_op_threads: ONNX Runtime's intra-op thread count; ``None`` lets it choose.
        external_data_dir: for a ``ModelProto`` referencing external data files: their folder.
        extra_inputs: other graph inputs fed with every call (an attention mask, token ids read
            only for their shape): one instance each, repeated for every row (see :meth:`__call__`).
        options: I/O binding, the CUDA provider's options and the execution providers (see
            :class:`RuntimeOptions`).
        backend: opens and runs the graphs; default: :class:`~models.runtime.ort_backend.OrtBackend`
            on ``device`` with ``intra_op_threads`` and ``options`` (which must then stay unset).

    Raises:
        InvalidModelError: the model has no gradient metadata, needs inputs this wrapper cannot feed,
            or has a non-static instance shape.
    """

    def __init__(
        self,
        model: ModelSource,
        *,
        input_name: str | None = None,
        device: Device = "auto",
        intra_op_threads: int | None = None,
        external_data_dir: str | os.PathLike[str] | None = None,
        extra_inputs: Sequence[str] = (),
        options: RuntimeOptions | None = None,
        backend: Backend | None = None,
    ) -> None:
        proto, folder = to_model(model, external_data_dir)
        self._backend = _backend(backend, device, intra_op_threads, options)
        self._external_data_dir = folder
        self._extra_names = tuple(extra_inputs)
        metadata = read_gradient_metadata(proto)
        self._metadata = metadata
        self._input_name = self._choose_input(metadata, input_name)
        self._gradient_name = metadata.gradients[self._input_name]
        graph = proto.graph
        inputs = {value.name: value for value in graph.input}
        initializers = {init.name: init for init in graph.initializer}
        self._check_feedable(inputs, initializers, metadata)
        self._input_dtype = self._float_dtype(inputs[self._input_name], "input")
        self._cotangent_dtype = self._float_dtype(inputs[metadata.cotangent], "cotangent")
        self._input_shape = instance_shape(inputs[self._input_name], "input")
        self._output_shape = instance_shape(inputs[metadata.cotangent], "cotangent")
        self._extra_specs = {
            name: (
                ELEMENT_DTYPES.get(inputs[name].type.tensor_type.elem_type),
                instance_shape(inputs[name], "input"),
            )
            for name in self._extra_names
        }
        weights: dict[str, np.ndarray] = {}
        for name in metadata.weights:
            if name not in initializers:
                raise InvalidModelError(f"metadata lists the weight {name!r}, which is not an initializer")
            weights[name] = map_tensor(initializers[name], folder)
        self._weights = MappingProxyType(weights)
        self._original_outputs = [
            output.name for output in graph.output if output.name not in set(metadata.gradients.values())
        ]
        self._model = proto
        # Two sessions over one graph: the clean one sees the weights as constants, so onnxruntime
        # may pre-pack them and pick its blocked-layout convolutions; a weight that is also a graph
        # input is never constant to it. The overridable one is opened on the first override.
        # onnxruntime runs every node of a graph whatever outputs are asked for, so the sessions get
        # only the part that computes the explained tensor and the gradient (no Softmax head, no labels).
        self._frozen = freeze_weights(proto, metadata.weights)
        wanted = [metadata.explained, self._gradient_name]
        self._output_specs: OutputSpecs = {
            metadata.explained: (self._output_shape, self._cotangent_dtype),
            self._gradient_name: (self._input_shape, self._input_dtype),
        }
        self._clean = self._backend.open(
            forward_model(self._frozen, wanted), external_data_dir=folder, output_specs=self._output_specs
        )
        self._override: BackendModel | None = None
        self._override_inputs: set[str] = set()
        self._forward: ForwardSession | None = None
        self._bytes_per_sample: int | None = None

    @staticmethod
    def _choose_input(metadata: GradientMetadata, input_name: str | None) -> str:
        differentiated = list(metadata.gradients)
        if input_name is None:
            if len(differentiated) != 1:
                raise InvalidArgumentError(
                    f"input_name must pick one of the differentiated inputs {differentiated}, got None"
                )
            return differentiated[0]
        if input_name not in metadata.gradients:
            raise InvalidArgumentError(
                f"input_name must be one of the differentiated inputs {differentiated}, got {input_name!r}"
            )
        return input_name

    def _check_feedable(
        self,
        inputs: Mapping[str, onnx.ValueInfoProto],
        initializers: Mapping[str, onnx.TensorProto],
        metadata: GradientMetadata,
    ) -> None:
        if metadata.cotangent not in inputs:
            raise InvalidModelError(f"the cotangent input {metadata.cotangent!r} is not a graph input")
        fed = {self._input_name, metadata.cotangent, *self._extra_names}
        unknown = [name for name in self._extra_names if name not in inputs or name in initializers]
        if unknown:
            raise InvalidModelError(f"extra_inputs {unknown} are not graph inputs of the gradient model")
        others = [name for name in inputs if name not in fed and name not in initializers]
        if others:
            raise InvalidModelError(
                f"the gradient model needs the inputs {others} besides {self._input_name!r} and the "
                "cotangent; GradientSession feeds one input: rebuild the gradient model with only "
                f"{self._input_name!r} as a graph input (e.g. fold the others into constants)"
            )

    @staticmethod
    def _float_dtype(value: onnx.ValueInfoProto, role: str) -> np.dtype:
        elem_type = value.type.tensor_type.elem_type
        if elem_type not in FLOAT_TYPES:
            raise InvalidModelError(
                f"{role} {value.name!r} must be a float tensor, got element type "
                f"{onnx.TensorProto.DataType.Name(elem_type)}"
            )
        return FLOAT_TYPES[elem_type]

    # GradientModel ------------------------------------------------------------------

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input instance, without the batch dimension."""
        return self._input_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one instance of the explained tensor, without the batch dimension."""
        return self._output_shape

    @property
    def weights(self) -> Mapping[str, np.ndarray]:
        """Clean float weights that :meth:`__call__` may override, by name (read-only arrays)."""
        return self._weights

    @property
    def bytes_per_sample(self) -> int:
        """Estimated activation memory of one sample in a gradient run, in bytes.

        The peak of the per-sample sizes of the tensors alive at once while the graph runs, with
        headroom for onnxruntime's workspaces (see :func:`estimate_bytes_per_sample`; ResNet-18 at
        224²: estimate 20.2 MiB, measured peak-RSS growth 17.3 MiB per sample). Computed on first use.
        """
        if self._bytes_per_sample is None:
            self._bytes_per_sample = estimate_bytes_per_sample(
                self._model,
                [self._input_name, self._metadata.cotangent],
                fixed_batch=self._metadata.batch_size,
            )
        return self._bytes_per_sample

    def __call__(
        self,
        inputs: np.ndarray,
        cotangents: np.ndarray,
        weight_overrides: Mapping[str, np.ndarray] | None = None,
        *,
        extras: Mapping[str, np.ndarray] | None = None,
    ) -> GradientBatch:
        """Run the model and its gradient graph on a batch.

        Args:
            inputs: ``(B, *input_shape)`` float array (cast to the model's float type, float32 usually).
            cotangents: ``(B, *output_shape)`` float array; row b weights the explained tensor of sample b.
            weight_overrides: replacement values for some of :attr:`weights` (same shapes, float), for this
                call only; ``None`` runs with the clean weights.
            extras: one instance (no batch dimension) of each of the session's ``extra_inputs``,
                repeated for all ``B`` rows; required when it has any.

        Returns:
            ``GradientBatch(outputs (B, *output_shape), gradients (B, *input_shape))``, float32.

        Raises:
            InvalidArgumentError: a shape, dtype or weight name is wrong (the message says which).
            ModelEvaluationError: ONNX Runtime failed to run the graph.
        """
        x = self._checked_array(inputs, "inputs", self._input_shape, self._input_dtype)
        w = self._checked_array(cotangents, "cotangents", self._output_shape, self._cotangent_dtype)
        if w.shape[0] != x.shape[0]:
            raise InvalidArgumentError(
                f"cotangents must have the batch size of inputs ({x.shape[0]}), got {w.shape[0]}"
            )
        feed: dict[str, np.ndarray] = {self._input_name: x, self._metadata.cotangent: w}
        feed.update(self._tiled_extras(extras, x.shape[0]))
        overrides = self._checked_overrides(weight_overrides)
        session = self._clean
        if overrides:
            if self._override is None:
                pruned = forward_model(self._model, [self._metadata.explained, self._gradient_name])
                self._override = self._backend.open(
                    pruned, external_data_dir=self._external_data_dir, output_specs=self._output_specs
                )
                self._override_inputs = {value.name for value in pruned.graph.input}
            # Weights that only feed other outputs (a head past the explained tensor) are not in
            # the pruned graph; overriding them cannot change this result.
            used = {name: value for name, value in overrides.items() if name in self._override_inputs}
            if used:
                feed.update(used)
                session = self._override
        wanted = [self._metadata.explained, self._gradient_name]
        # Pruning may have dropped an extra input the explained tensor does not need.
        if self._extra_names:
            accepted = {value.name for value in session.inputs}
            feed = {
                name: value
                for name, value in feed.items()
                if name not in self._extra_names or name in accepted
            }
        extras_fed = [name for name in self._extra_names if name in feed]
        try:
            outputs, gradients = run_in_batches(
                session,
                wanted,
                feed,
                [self._input_name, self._metadata.cotangent, *extras_fed],
                self._metadata.batch_size,
                zero_padded=[self._metadata.cotangent],
            )
        except Exception as err:
            raise ModelEvaluationError(
                f"{self._backend.name} failed to run the gradient graph: {err}"
            ) from err
        return GradientBatch(
            outputs=np.asarray(outputs, dtype=np.float32), gradients=np.asarray(gradients, dtype=np.float32)
        )

    # Extras -------------------------------------------------------------------------

    @property
    def io_binding(self) -> bool:
        """Whether calls run through I/O binding (:class:`RuntimeOptions`: ``auto`` is on for CUDA; never
        on a backend other than ONNX Runtime)."""
        return isinstance(self._clean, OrtModel) and self._clean.io_binding

    @property
    def backend(self) -> Backend:
        """The backend that opened and runs the graphs."""
        return self._backend

    @property
    def batching(self) -> str:
        """``"dynamic"``, ``"symbolic"`` (a fixed export batch made symbolic, checked) or ``"fixed"``."""
        return self._metadata.batching

    @property
    def fixed_batch_size(self) -> int | None:
        """The rows per ONNX Runtime call when :attr:`batching` is ``"fixed"``, else ``None``."""
        return self._metadata.batch_size

    @property
    def input_name(self) -> str:
        """The differentiated graph input fed by :meth:`__call__`."""
        return self._input_name

    @property
    def explained_name(self) -> str:
        """The tensor whose cotangent :meth:`__call__` takes (e.g. pre-Softmax ``logits``)."""
        return self._metadata.explained

    @property
    def gradient_name(self) -> str:
        """The graph output holding ``J^T · cotangent`` for :attr:`input_name`."""
        return self._gradient_name

    @property
    def metadata(self) -> GradientMetadata:
        return self._metadata

    @property
    def provider(self) -> str:
        """The execution provider really in use (e.g. ``"CUDAExecutionProvider"`` or ``"CPUExecutionProvider"``)."""
        return self._clean.provider

    @property
    def output_names(self) -> list[str]:
        """The original model's outputs (and the explained tensor), as :meth:`run_outputs` returns them."""
        return list(self._original_outputs)

    def run_outputs(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Run the forward part only (no cotangent, no VJP) and return every non-gradient output.

        Args:
            inputs: ``(B, *input_shape)`` float array.

        Returns:
            Output name → array with a leading batch dimension, e.g. ``{"probabilities": (B, 10), "logits": (B, 10)}``.
        """
        x = self._checked_array(inputs, "inputs", self._input_shape, self._input_dtype)
        if self._forward is None:
            self._forward = ForwardSession(
                forward_model(self._frozen, self._original_outputs),
                external_data_dir=self._external_data_dir,
                backend=self._backend,
            )
        forward = self._forward
        names = forward.output_names
        results = run_in_batches(
            _RunnerAdapter(forward),
            names,
            {self._input_name: x},
            [self._input_name],
            self._metadata.batch_size,
        )
        return dict(zip(names, results, strict=True))

    # Validation ---------------------------------------------------------------------

    @staticmethod
    def _checked_array(
        array: np.ndarray, field: str, instance_shape: tuple[int, ...], dtype: np.dtype
    ) -> np.ndarray:
        if not isinstance(array, np.ndarray):
            raise InvalidArgumentError(f"{field} must be a numpy array, got {type(array).__name__}")
        if array.dtype.kind != "f":
            raise InvalidArgumentError(f"{field} must have a float dtype, got {array.dtype}")
        expected = ("B", *instance_shape)
        if array.ndim != len(expected) or tuple(array.shape[1:]) != instance_shape:
            raise InvalidArgumentError(f"{field} must have shape {expected}, got {array.shape}")
        if array.shape[0] < 1:
            raise InvalidArgumentError(f"{field} must hold at least one sample, got batch size 0")
        return np.ascontiguousarray(array, dtype=dtype)

    def _tiled_extras(self, extras: Mapping[str, np.ndarray] | None, rows: int) -> dict[str, np.ndarray]:
        """The extra inputs, one instance each, repeated for ``rows`` rows in the graph's dtypes."""
        given = dict(extras or {})
        missing = [name for name in self._extra_names if name not in given]
        unknown = sorted(set(given) - set(self._extra_names))
        if missing or unknown:
            raise InvalidArgumentError(
                f"extras must hold exactly the inputs {list(self._extra_names)}; missing {missing}, unknown {unknown}"
            )
        tiled: dict[str, np.ndarray] = {}
        for name, (dtype, shape) in self._extra_specs.items():
            value = np.asarray(given[name])
            if tuple(value.shape) != shape:
                raise InvalidArgumentError(f"extras[{name!r}] must have shape {shape}, got {value.shape}")
            value = value.astype(dtype, copy=False) if dtype is not None else value
            tiled[name] = np.ascontiguousarray(np.broadcast_to(value[None], (rows, *shape)))
        return tiled

    @property
    def extra_inputs(self) -> tuple[str, ...]:
        """The graph inputs besides the differentiated one fed with every call."""
        return self._extra_names

    def _checked_overrides(self, overrides: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        if not overrides:
            return {}
        feed: dict[str, np.ndarray] = {}
        for name, value in overrides.items():
            if name not in self._weights:
                known = sorted(self._weights)
                shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
                raise InvalidArgumentError(
                    f"weight_overrides names {name!r}, which is not an overridable weight (known: {shown})"
                )
            clean = self._weights[name]
            array = np.asarray(value)
            if not np.issubdtype(array.dtype, np.floating):
                raise InvalidArgumentError(
                    f"weight_overrides[{name!r}] must have a float dtype, got {array.dtype}"
                )
            if array.shape != clean.shape:
                raise InvalidArgumentError(
                    f"weight_overrides[{name!r}] must have shape {clean.shape}, got {array.shape}"
                )
            feed[name] = np.ascontiguousarray(array, dtype=clean.dtype)
        return feed
