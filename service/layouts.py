"""Model repository layouts, so that Mollify can share another server's model volume:

- Mollify's: ``<root>/<name>/model.onnx`` (+ ``config.json``);
- Triton's: ``<root>/<name>/config.pbtxt`` and ``<root>/<name>/<version>/model.onnx``; the highest
  version is served unless ``config.pbtxt`` pins others (``version_policy: { specific: { versions:
  [...] } }``: the highest of those present);
- KServe's single-model folder (``--model_dir``, where the storage initializer puts the model):
  ``<root>/model.onnx`` directly, served as ``--model_name`` (default: the folder's name).

A model folder without ``config.json`` gets its config inferred from the graph (:func:`infer_config`):
the first float graph input and its shape past the batch axis, the first float output as the
explained tensor, and the bounds of the ``inferred_lower`` / ``inferred_upper`` settings. What was
inferred is reported as the model's ``config_source``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import onnx

from models.config import CONFIG_FILE_NAME, MODEL_FILE_NAME, ModelConfig, ModelConfigError

__all__ = ["TRITON_CONFIG", "ModelSource", "infer_config", "load_config", "scan"]

_log = logging.getLogger("mollify.service.repository")
TRITON_CONFIG = "config.pbtxt"
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_FLOATS = (
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
)
_SPECIFIC = re.compile(r"specific\s*:?\s*\{[^}]*?versions\s*:\s*\[?([0-9,\s]+)\]?", re.S)


@dataclass(frozen=True)
class ModelSource:
    """Where one model's files are and how they were found.

    Attributes:
        folder: the folder holding ``model.onnx`` (a Triton model's version folder).
        layout: ``"mollify"``, ``"kserve"`` or ``"triton version 3 of [1, 3]"``.
    """

    folder: Path
    layout: str


def scan(root: Path, model_name: str | None = None) -> dict[str, ModelSource]:
    """The models under ``root`` by name, whichever layout each folder has (see the module docstring)."""
    if (root / MODEL_FILE_NAME).is_file():
        name = model_name or root.name
        if not _NAME.fullmatch(name):
            _log.warning(
                "the model folder's name is not a valid model name; set --model-name",
                extra={"path": str(root)},
            )
            return {}
        return {name: ModelSource(root, "kserve")}
    found: dict[str, ModelSource] = {}
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        if (folder / MODEL_FILE_NAME).exists() or (folder / CONFIG_FILE_NAME).exists():
            source = ModelSource(folder, "mollify")
        else:
            triton = _triton_version(folder)
            if triton is None:
                continue
            source = triton
        if not _NAME.fullmatch(folder.name):
            _log.warning(
                "skipping a folder whose name is not a valid model name", extra={"path": str(folder)}
            )
            continue
        found[folder.name] = source
    return found


def _triton_version(folder: Path) -> ModelSource | None:
    """The version folder to serve of a Triton model folder, or ``None`` if it is not one."""
    versions = sorted(
        int(v.name)
        for v in folder.iterdir()
        if v.is_dir() and v.name.isdigit() and (v / MODEL_FILE_NAME).exists()
    )
    if not versions:
        return None
    chosen = versions[-1]
    pinned = _pinned_versions(folder / TRITON_CONFIG)
    if pinned:
        present = [v for v in versions if v in pinned]
        if not present:
            _log.warning(
                "config.pbtxt pins versions none of which is present; serving the highest",
                extra={"path": str(folder), "pinned": sorted(pinned), "present": versions},
            )
        else:
            chosen = present[-1]
    return ModelSource(folder / str(chosen), f"triton version {chosen} of {versions}")


def _pinned_versions(config: Path) -> set[int]:
    """The versions a Triton ``config.pbtxt`` pins with ``version_policy { specific { versions } }``."""
    try:
        text = config.read_text()
    except OSError:
        return set()
    match = _SPECIFIC.search(text)
    return {int(v) for v in re.findall(r"\d+", match.group(1))} if match else set()


def load_config(folder: Path, name: str, lower: float, upper: float) -> tuple[ModelConfig, str]:
    """The model's config and where it came from: ``config.json`` in ``folder`` when there is one,
    else inferred from ``folder/model.onnx`` (:func:`infer_config`)."""
    if (folder / CONFIG_FILE_NAME).exists():
        return ModelConfig.load(folder), CONFIG_FILE_NAME
    model = onnx.load(str(folder / MODEL_FILE_NAME), load_external_data=False)
    return infer_config(model, name, lower, upper)


def infer_config(model: onnx.ModelProto, name: str, lower: float, upper: float) -> tuple[ModelConfig, str]:
    """A config from the graph alone, and a sentence saying what was inferred.

    The explained input is the first float graph input (initializers excluded); its first axis is
    the batch, the others must have fixed sizes. The explained tensor is the first float output.

    Raises:
        ModelConfigError: no float input or output, or an instance dimension without a fixed size.
    """
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [
        v for v in graph.input if v.name not in initializers and v.type.tensor_type.elem_type in _FLOATS
    ]
    outputs = [v for v in graph.output if v.type.tensor_type.elem_type in _FLOATS]
    fix = f"add a {CONFIG_FILE_NAME} beside {MODEL_FILE_NAME} (see README 'Model repository')"
    if not inputs:
        raise ModelConfigError(f"cannot infer the config of {name!r}: the graph has no float input; {fix}")
    if not outputs:
        raise ModelConfigError(f"cannot infer the config of {name!r}: the graph has no float output; {fix}")
    explained_input = inputs[0]
    dims = list(explained_input.type.tensor_type.shape.dim)
    if len(dims) < 2:
        raise ModelConfigError(
            f"cannot infer the config of {name!r}: input {explained_input.name!r} has {len(dims)} dimensions; "
            f"a batch axis and an instance's axes are needed; {fix}"
        )
    shape: list[int] = []
    for axis, dim in enumerate(dims[1:], start=1):
        if not dim.HasField("dim_value") or dim.dim_value <= 0:
            raise ModelConfigError(
                f"cannot infer the config of {name!r}: axis {axis} of input {explained_input.name!r} has no fixed "
                f"size ({dim.dim_param or 'unknown'!r}); {fix}"
            )
        shape.append(int(dim.dim_value))
    output = outputs[0].name
    source = (
        f"inferred from the graph: input {explained_input.name!r} of shape {tuple(shape)} (its first float "
        f"input), explained tensor {output!r} (its first float output), bounds [{lower:g}, {upper:g}] "
        "(--inferred-lower / --inferred-upper)"
    )
    config = ModelConfig(
        name=name,
        input_name=explained_input.name,
        input_shape=tuple(shape),
        explained_tensor=output,
        lower=lower,
        upper=upper,
        description=source,
    )
    return config, source
