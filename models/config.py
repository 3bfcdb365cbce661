"""A model's small configuration file (``config.json`` beside ``model.onnx``).

Shared by the demo-model builder, the model repository of the service and the CLI.
Imports only the standard library and numpy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CONFIG_FILE_NAME = "config.json"
MODEL_FILE_NAME = "model.onnx"
# Text models: the Hugging Face ``tokenizers`` JSON beside ``model.onnx`` (served in ModelInfo).
TOKENIZER_FILE_NAME = "tokenizer.json"


class ModelConfigError(ValueError):
    """A config file is missing a field or holds a value of the wrong kind."""


@dataclass(frozen=True)
class Preprocessing:
    """How raw user data becomes the model's input tensor.

    Attributes:
        kind: ``"image"`` (PNG/JPEG: grayscale or RGB, resized to ``size``), ``"tabular"`` (CSV rows
            of ``feature_names``), or ``"tensor"`` (arrays given as they are).
        size: ``(height, width)`` an image is resized to.
        channels: 1 (grayscale) or 3 (RGB) for images.
        scale: multiplier applied after loading (e.g. 16/255 maps 8-bit pixels to the digits range).
        invert: images only: use ``255 - pixel`` before scaling (dark ink on a light page).
        mean: subtracted after scaling; a scalar or one value per channel / feature.
        std: divided after subtracting ``mean``; a scalar or one value per channel / feature.
    """

    kind: str = "tensor"
    size: tuple[int, int] | None = None
    channels: int = 1
    scale: float = 1.0
    invert: bool = False
    mean: list[float] | float = 0.0
    std: list[float] | float = 1.0


@dataclass(frozen=True)
class ModelConfig:
    """Everything the service needs to know about a model beyond its ONNX file.

    Attributes:
        name: the model's name in the repository (its folder name).
        input_name: the float graph input to explain.
        input_shape: shape of one instance, without the batch dimension, e.g. ``(1, 8, 8)``.
        explained_tensor: the tensor whose cotangent is given (any graph tensor, e.g. pre-softmax logits).
        lower: lower bound of the input domain, a scalar or a nested list broadcastable to one instance.
        upper: upper bound of the input domain, like ``lower``.
        labels: class names, indexed like the last axis of the explained tensor; empty if none.
        feature_names: tabular models: one name per input feature; empty otherwise.
        preprocessing: how raw data becomes the input tensor.
        description: one line for humans.
        explained_input: the float tensor noise is added at and attributions are computed for:
            ``""`` (default) is ``input_name`` itself; any float tensor of the graph upstream of
            ``explained_tensor`` (an embedding output, token + position embeddings, a convolutional
            feature map) explains that tensor while requests still send ``input_name`` (e.g. int64
            token ids). The graph up to it runs once per instance on the clean inputs.
        explained_lower: bounds of ``explained_input`` when it is an intermediate tensor, like
            ``lower``; ``None``: per dimension, the min over the embedding table when the tensor is a
            ``Gather`` of a weight (and ``lower``/``upper`` then describe nothing).
        explained_upper: like ``explained_lower`` (max over the table).
        extra_input_shapes: one instance's shape of other graph inputs whose dimensions the model
            leaves symbolic under names ``input_name`` does not share; by name.
        baseline_token_id: text models: the token (e.g. padding) whose embedding is the default
            Integrated Gradients baseline instead of zero; ``None``: zero.
        channel_axis: the axis of ``explained_input`` attributions are reduced over when a request
            names none; ``None``: the last axis for an embedding lookup (per-token results),
            no reduction otherwise.
        channel_reduction: the reduction used with the default ``channel_axis`` (``sum``, ``mean``,
            ``max_abs``); ``""``: ``sum`` (gradient × input summed over the embedding, as Captum's
            LayerIntegratedGradients users do).
    """

    name: str
    input_name: str
    input_shape: tuple[int, ...]
    explained_tensor: str
    lower: Any = 0.0
    upper: Any = 1.0
    labels: list[str] = field(default_factory=list)
    feature_names: list[str] = field(default_factory=list)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    description: str = ""
    explained_input: str = ""
    explained_lower: Any = None
    explained_upper: Any = None
    extra_input_shapes: dict[str, list[int]] = field(default_factory=dict)
    baseline_token_id: int | None = None
    channel_axis: int | None = None
    channel_reduction: str = ""

    def lower_array(self) -> np.ndarray:
        """``lower`` as float32, broadcast to ``input_shape``."""
        return _broadcast_bound(self.lower, self.input_shape, "lower")

    def upper_array(self) -> np.ndarray:
        """``upper`` as float32, broadcast to ``input_shape``."""
        return _broadcast_bound(self.upper, self.input_shape, "upper")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def save(self, folder: Path) -> Path:
        path = Path(folder) / CONFIG_FILE_NAME
        path.write_text(self.to_json())
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        try:
            pre = Preprocessing(**{**data.get("preprocessing", {})})
            if pre.size is not None:
                pre = Preprocessing(**{**asdict(pre), "size": tuple(pre.size)})
            return cls(
                **{
                    **data,
                    "input_shape": tuple(int(d) for d in data["input_shape"]),
                    "preprocessing": pre,
                }
            )
        except KeyError as err:
            raise ModelConfigError(f"model config lacks the field {err.args[0]!r}") from err
        except TypeError as err:
            raise ModelConfigError(f"model config is malformed: {err}") from err

    @classmethod
    def load(cls, folder: Path) -> ModelConfig:
        path = Path(folder) / CONFIG_FILE_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as err:
            raise ModelConfigError(f"no {CONFIG_FILE_NAME} in {folder}") from err
        except json.JSONDecodeError as err:
            raise ModelConfigError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise ModelConfigError(f"{path} must hold a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)


def _broadcast_bound(value: Any, shape: tuple[int, ...], field_name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float32)
    try:
        return np.broadcast_to(array, shape).copy()
    except ValueError as err:
        raise ModelConfigError(
            f"{field_name} has shape {array.shape}, which does not broadcast to the input shape {shape}"
        ) from err
