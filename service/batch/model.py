"""The model of a batch job: a model of a repository (as the server loads it) or a bare ONNX file.

:func:`resolve_model` runs once in the driver: it reads the config (``config.json``, or one
inferred from the ONNX graph and the flags), builds the gradient graph into the same content-hashed
cache the server uses (:func:`service.graphs.cached_gradient_graph`) and returns a small picklable
:class:`BatchModel`; each worker then opens its own session with :func:`open_session`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from models.config import CONFIG_FILE_NAME, MODEL_FILE_NAME, ModelConfig, ModelConfigError, Preprocessing
from models.gradient_graph import GradientGraphError, load_model
from service.graphs import cached_gradient_graph

if TYPE_CHECKING:
    from models.runtime import GradientSession
    from models.runtime.backend import Backend

__all__ = ["BatchModel", "ModelLoadError", "open_session", "resolve_model"]


class ModelLoadError(Exception):
    """The model cannot be used: the job stops before explaining anything."""


@dataclass(frozen=True)
class BatchModel:
    """What a worker needs to open the model, and what the driver needs to read data for it.

    Attributes:
        name: the model's name (its folder's, or the ONNX file's stem).
        graph_path: the cached gradient graph (``<cache>/<key>.onnx``, data files beside it).
        graph_key: the cache key (a sha256 over the model, the differentiated input and the builder).
        input_name: the differentiated graph input.
        input_shape: one instance's shape, no batch axis.
        explained: the explained tensor.
        lower: the input domain's lower bound, float32, ``input_shape``.
        upper: like ``lower``.
        preprocessing: how table cells and image pixels become inputs.
        feature_names: tabular models: one name per feature.
        labels: class names, indexed like the explained tensor's last axis.
    """

    name: str
    graph_path: Path
    graph_key: str
    input_name: str
    input_shape: tuple[int, ...]
    explained: str
    lower: np.ndarray
    upper: np.ndarray
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    feature_names: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()


def resolve_model(
    model: str,
    *,
    repository: Path,
    cache_dir: Path,
    input_name: str | None = None,
    lower: float | np.ndarray | None = None,
    upper: float | np.ndarray | None = None,
    tensor: str | None = None,
) -> BatchModel:
    """Find ``model`` and build (or find in the cache) its gradient graph.

    ``model`` is a model name of ``repository``, a model folder (``model.onnx`` + ``config.json``) or
    an ONNX file; an ONNX file without a ``config.json`` beside it gets a config inferred from its
    graph: the only float graph input (or ``input_name``), its static instance shape, the first graph
    output (or ``tensor``), and the bounds ``lower``/``upper``, which it then needs.

    Raises:
        ModelLoadError: the model is missing, its config or graph is invalid, its gradient graph
            cannot be built, or the bounds are missing or not below each other.
    """
    path = Path(model)
    if path.is_file() and path.suffix.lower() == ".onnx":
        folder, onnx_path = path.parent, path
        has_config = path.name == MODEL_FILE_NAME and (folder / CONFIG_FILE_NAME).is_file()
    elif path.is_dir():
        folder, onnx_path, has_config = path, path / MODEL_FILE_NAME, True
    elif len(path.parts) == 1 and (repository / model).is_dir():
        folder, onnx_path, has_config = repository / model, repository / model / MODEL_FILE_NAME, True
    else:
        raise ModelLoadError(
            f"--model: {model!r} is neither a model of the repository {str(repository)!r} nor an ONNX file "
            "or model folder (see `mollify models`, or pass --model-repository)"
        )
    if not onnx_path.is_file():
        raise ModelLoadError(f"--model: {str(folder)!r} holds no {MODEL_FILE_NAME}")
    try:
        proto = load_model(onnx_path, external_data=False)
    except (GradientGraphError, OSError, ValueError) as err:
        raise ModelLoadError(f"--model: {str(onnx_path)!r} is not a loadable ONNX model: {err}") from err
    try:
        config = (
            ModelConfig.load(folder)
            if has_config
            else _inferred_config(proto, onnx_path, input_name, lower, upper)
        )
        if tensor:
            config = ModelConfig(**{**config.__dict__, "explained_tensor": tensor})
        low, high = _bounds(config, lower, upper)
    except ModelConfigError as err:
        raise ModelLoadError(f"--model: {err}") from err
    try:
        graph_path = cached_gradient_graph(
            onnx_path, config.input_name, config.input_shape, config.explained_tensor, cache_dir, model=proto
        )
    except GradientGraphError as err:
        raise ModelLoadError(
            f"--model: the gradient graph of {str(onnx_path)!r} cannot be built: {err}"
        ) from err
    except OSError as err:
        raise ModelLoadError(
            f"--cache-dir: the gradient-graph cache {str(cache_dir)!r} cannot be written ({err}); choose another"
        ) from err
    return BatchModel(
        name=config.name or folder.name,
        graph_path=graph_path,
        graph_key=graph_path.stem,
        input_name=config.input_name,
        input_shape=tuple(config.input_shape),
        explained=config.explained_tensor,
        lower=low,
        upper=high,
        preprocessing=config.preprocessing,
        feature_names=tuple(config.feature_names),
        labels=tuple(config.labels),
    )


def _bounds(
    config: ModelConfig, lower: float | np.ndarray | None, upper: float | np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    shape = tuple(config.input_shape)
    try:
        low = (
            config.lower_array()
            if lower is None
            else np.broadcast_to(np.float32(lower), shape).astype(np.float32)
        )
        high = (
            config.upper_array()
            if upper is None
            else np.broadcast_to(np.float32(upper), shape).astype(np.float32)
        )
    except ValueError as err:
        raise ModelConfigError(
            f"--lower/--upper must broadcast to one instance's shape {list(shape)}: {err}"
        ) from err
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
        raise ModelConfigError(
            "the input domain needs finite bounds with lower < upper everywhere (--lower/--upper)"
        )
    return low, high


def _inferred_config(
    proto: onnx.ModelProto,
    path: Path,
    input_name: str | None,
    lower: float | np.ndarray | None,
    upper: float | np.ndarray | None,
) -> ModelConfig:
    graph = proto.graph
    initializers = {init.name for init in graph.initializer}
    floats = [
        v
        for v in graph.input
        if v.name not in initializers
        and v.type.tensor_type.elem_type
        in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)
    ]
    if input_name is None:
        if len(floats) != 1:
            raise ModelConfigError(
                f"{path.name} has {len(floats)} float inputs {[v.name for v in floats]}; pick one with --input-name"
            )
        chosen = floats[0]
    else:
        matches = [v for v in floats if v.name == input_name]
        if not matches:
            raise ModelConfigError(
                f"--input-name {input_name!r} is not a float input of {path.name}; its float inputs: "
                f"{[v.name for v in floats]}"
            )
        chosen = matches[0]
    dims = chosen.type.tensor_type.shape.dim[1:]
    if not dims and not chosen.type.tensor_type.shape.dim:
        raise ModelConfigError(f"input {chosen.name!r} of {path.name} has no shape; export it with one")
    if any(not d.HasField("dim_value") or d.dim_value < 1 for d in dims):
        raise ModelConfigError(
            f"input {chosen.name!r} of {path.name} has a non-static instance shape; add a config.json with "
            "input_shape beside the model"
        )
    if lower is None or upper is None:
        raise ModelConfigError(
            f"{path.name} has no {CONFIG_FILE_NAME} beside it, so the input domain is unknown: give --lower and "
            "--upper (numbers or .npy files)"
        )
    if not graph.output:
        raise ModelConfigError(f"{path.name} has no graph output")
    return ModelConfig(
        name=path.stem,
        input_name=chosen.name,
        input_shape=tuple(int(d.dim_value) for d in dims),
        explained_tensor=graph.output[0].name,
        lower=0.0,
        upper=1.0,
    )


def open_session(
    model: BatchModel, *, device: str = "cpu", intra_op_threads: int = 1, backend: Backend | None = None
) -> GradientSession:
    """A :class:`models.runtime.GradientSession` on the model's cached gradient graph, run by
    ``backend`` (default: ONNX Runtime on ``device`` with ``intra_op_threads``, which a given
    backend replaces).

    Raises:
        ModelLoadError: the backend cannot open the graph, or it is not the graph of ``model``.
    """
    from estimator.errors import InvalidArgumentError
    from models.runtime import DeviceUnavailableError, GradientSession  # onnxruntime only where sessions run

    try:
        if backend is not None:
            session = GradientSession(model.graph_path, input_name=model.input_name, backend=backend)
        else:
            session = GradientSession(
                model.graph_path,
                input_name=model.input_name,
                device=device,
                intra_op_threads=intra_op_threads,
            )
    except (GradientGraphError, DeviceUnavailableError, InvalidArgumentError, OSError) as err:
        raise ModelLoadError(f"the gradient graph {str(model.graph_path)!r} cannot be opened: {err}") from err
    if tuple(session.input_shape) != tuple(model.input_shape):
        raise ModelLoadError(
            f"the model takes instances of shape {session.input_shape}, but its config says {model.input_shape}"
        )
    return session
