"""Local input files → model input tensors, following the model's ``config.json`` preprocessing.

Accepted inputs (one instance or a batch per file):

- ``.npy``: an array of one input's shape, or ``(B, *input_shape)``; singleton axes may be missing
  (an ``(8, 8)`` array for a ``(1, 8, 8)`` input).
- ``.npz``: every array in it, each as a ``.npy`` file would be, in key order.
- ``.png`` / ``.jpg`` / ``.jpeg`` / ``.bmp`` / ``.gif``: an image, composited on white if it has
  transparency, converted to grayscale or RGB (``channels``), resized to ``size`` (area averaging
  when shrinking, bicubic when enlarging), optionally inverted (``255 − pixel``), then
  ``(pixel · scale − mean) / std``, then clipped to the model's input domain ``[lower, upper]``:
  8-bit pixels can encode values the model's domain excludes (pure black ink in a drawing, say),
  and a smoothing method's noise scale is only meaningful for inputs inside the domain.
- ``.csv``: one instance per row. A header row (any non-numeric cell) maps columns to the model's
  ``feature_names`` by name (extra columns such as a label are ignored); without a header each row
  must hold exactly one value per feature, in order. Values are ``(value · scale − mean) / std``.

Imports the standard library, numpy, pillow and ``models.config`` only.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np

from models.config import Preprocessing
from service.cli.output import BadInputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif"})
ARRAY_SUFFIXES = frozenset({".npy", ".npz"})
TABLE_SUFFIXES = frozenset({".csv"})

RenderKind = Literal["image", "tabular", "tensor"]


@dataclass(frozen=True)
class InputSpec:
    """What the CLI must know about a model to turn files into its input tensors.

    Attributes:
        input_shape: shape of one instance, without the batch axis.
        preprocessing: the model config's preprocessing.
        feature_names: tabular models: one name per feature (may be empty).
        lower: the input domain's lower bound, broadcastable to ``input_shape``; ``None`` if unbounded.
        upper: the upper bound, like ``lower``.
    """

    input_shape: tuple[int, ...]
    preprocessing: Preprocessing
    feature_names: tuple[str, ...] = ()
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None

    @classmethod
    def from_model_info(cls, info: Any) -> InputSpec:
        """Build from a client ``ModelInfo`` (``input_shape``, ``preprocessing`` dict, ``feature_names``)."""
        return cls(
            input_shape=tuple(int(d) for d in info.input_shape),
            preprocessing=preprocessing_from_dict(dict(info.preprocessing or {})),
            feature_names=tuple(info.feature_names or ()),
            lower=_bound(info.lower),
            upper=_bound(info.upper),
        )


@dataclass(frozen=True)
class LoadedInput:
    """One model input read from a file.

    Attributes:
        name: a file-name-safe stem for the outputs of this instance (``digit_3``, ``rows_row2``).
        source: where it came from, for humans (``digit_3.png``, ``rows.csv row 2``).
        tensor: the model input, ``input_shape``, float32.
        kind: how its explanation is drawn: ``image`` (heatmap), ``tabular`` (ranked bars), ``tensor``.
        raw_features: tabular inputs: the values as written in the file, ``(n_features,)``; else ``None``.
        label: ``source`` without its folder, for figure titles.
    """

    name: str
    source: str
    tensor: np.ndarray
    kind: RenderKind
    raw_features: np.ndarray | None = None

    @property
    def label(self) -> str:
        return Path(self.source).name or self.source


def _bound(value: Any) -> np.ndarray | None:
    array = np.asarray(value, dtype=np.float32)
    return array if array.size else None


def preprocessing_from_dict(data: Mapping[str, Any]) -> Preprocessing:
    """A :class:`Preprocessing` from its JSON form, ignoring keys this version does not know."""
    known = {item.name for item in fields(Preprocessing)}
    # Empty values ("" kind, [] mean) are how protobuf says "unset": keep the defaults for them.
    options = {
        key: value
        for key, value in data.items()
        if key in known
        and value is not None
        and not (isinstance(value, str | list | tuple) and len(value) == 0)
    }
    if options.get("size") is not None:
        options["size"] = tuple(int(v) for v in options["size"])
    return Preprocessing(**options)


def image_layout(input_shape: Sequence[int], channels: int = 1) -> tuple[int | None, int, int] | None:
    """Where the channels and the spatial axes are in one image input.

    Returns:
        ``(channel_axis, height, width)`` with ``channel_axis`` 0 (CHW), 2 (HWC) or ``None`` (HW),
        or ``None`` when the shape is not an image's.
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 2 and min(shape) > 1:
        return None, shape[0], shape[1]
    if len(shape) == 3:
        # Channels-first is what PyTorch exports; prefer it when both readings fit (e.g. (3, 3, 3)).
        if shape[0] in (1, 3, channels) and min(shape[1:]) > 1:
            return 0, shape[1], shape[2]
        if shape[2] in (1, 3, channels) and min(shape[:2]) > 1:
            return 2, shape[0], shape[1]
    return None


def render_kind(spec: InputSpec) -> RenderKind:
    """How explanations of this model's inputs are drawn."""
    kind = spec.preprocessing.kind
    if kind == "tabular" or len(spec.input_shape) == 1:
        return "tabular"
    if image_layout(spec.input_shape, spec.preprocessing.channels) is not None:
        return "image"
    return "tensor"


def load_inputs(paths: Sequence[str | Path], spec: InputSpec) -> list[LoadedInput]:
    """Read every file in ``paths`` (see the module docstring) into model inputs, in order."""
    if not paths:
        raise BadInputError("inputs: expected at least one input file, got none")
    loaded: list[LoadedInput] = []
    for item in paths:
        path = Path(item)
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise BadInputError(f"input {str(path)!r} {what}; expected a .npy, .npz, image or .csv file")
        suffix = path.suffix.lower()
        if suffix in ARRAY_SUFFIXES:
            loaded.extend(_load_array_file(path, spec))
        elif suffix in IMAGE_SUFFIXES:
            loaded.append(_load_image(path, spec))
        elif suffix in TABLE_SUFFIXES:
            loaded.extend(_load_csv(path, spec))
        else:
            known = ", ".join(sorted(ARRAY_SUFFIXES | IMAGE_SUFFIXES | TABLE_SUFFIXES))
            raise BadInputError(
                f"input {str(path)!r}: expected a file ending in {known}, got {suffix or 'no suffix'!r}"
            )
    return _unique_names(loaded)


def stack(inputs: Sequence[LoadedInput]) -> np.ndarray:
    """The batch ``(B, *input_shape)`` float32 of ``inputs``."""
    return np.stack([item.tensor for item in inputs]).astype(np.float32, copy=False)


def display_image(tensor: np.ndarray, spec: InputSpec) -> np.ndarray | None:
    """What an image input looks like: ``(H, W)`` grayscale or ``(H, W, 3)`` RGB in [0, 1].

    Image models undo their preprocessing (so the picture looks like the file that was read);
    other image-shaped tensors are min-max scaled. ``None`` when the input is not image-shaped.
    """
    pre = spec.preprocessing
    layout = image_layout(spec.input_shape, pre.channels)
    if layout is None:
        return None
    picture = _to_hwc(np.asarray(tensor, dtype=np.float64).reshape(spec.input_shape), layout[0])
    if pre.kind == "image" and pre.scale != 0:
        picture = picture * _per_channel(pre.std, picture.shape[-1]) + _per_channel(
            pre.mean, picture.shape[-1]
        )
        picture = picture / pre.scale
        if pre.invert:
            picture = 255.0 - picture
        picture = np.clip(picture / 255.0, 0.0, 1.0)
    else:
        low, high = float(picture.min()), float(picture.max())
        picture = (picture - low) / (high - low) if high > low else np.zeros_like(picture)
    if picture.shape[-1] == 1:
        return picture[..., 0]
    return picture[..., :3]


def _to_hwc(array: np.ndarray, channel_axis: int | None) -> np.ndarray:
    if channel_axis is None:
        return array[..., np.newaxis]
    if channel_axis == 0:
        return np.moveaxis(array, 0, -1)
    return array


def _per_channel(value: float | Sequence[float], count: int) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64).reshape(-1)
    if array.size not in (1, count):
        raise BadInputError(
            f"model preprocessing: expected 1 or {count} mean/std values (one per channel), got {array.size}"
        )
    return array


def _load_array_file(path: Path, spec: InputSpec) -> list[LoadedInput]:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise BadInputError(f"input {str(path)!r} is not a readable {path.suffix} file: {err}") from err
    if isinstance(data, np.ndarray):
        named = [(path.stem, data, str(path))]
    else:
        with data:
            named = [(f"{path.stem}_{key}", data[key], f"{path}[{key}]") for key in sorted(data.files)]
        if not named:
            raise BadInputError(f"input {str(path)!r} holds no arrays")
    kind = render_kind(spec)
    loaded = []
    for stem, array, source in named:
        batch = _as_batch(array, spec.input_shape, source)
        if len(batch) == 1:
            loaded.append(LoadedInput(stem, source, batch[0], kind))
        else:
            loaded.extend(
                LoadedInput(f"{stem}_{i}", f"{source}[{i}]", row, kind) for i, row in enumerate(batch)
            )
    return loaded


def _as_batch(array: np.ndarray, input_shape: tuple[int, ...], source: str) -> np.ndarray:
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise BadInputError(f"input {source!r}: expected a numeric array, got dtype {array.dtype}")
    squeezed = tuple(d for d in input_shape if d != 1)
    if array.shape == input_shape or (array.shape == squeezed and array.size == int(np.prod(input_shape))):
        batch = array.reshape((1, *input_shape))
    elif (
        array.ndim >= 1
        and (array.shape[1:] == input_shape or array.shape[1:] == squeezed)
        and array.shape[0] > 0
    ):
        batch = array.reshape((array.shape[0], *input_shape))
    else:
        raise BadInputError(
            f"input {source!r}: expected shape {input_shape} or (batch, *{input_shape}), got {array.shape}"
        )
    batch = batch.astype(np.float32)
    if not np.all(np.isfinite(batch)):
        raise BadInputError(f"input {source!r}: expected finite values, got NaN or infinity")
    return batch


def _load_image(path: Path, spec: InputSpec) -> LoadedInput:
    from PIL import Image, UnidentifiedImageError

    pre = spec.preprocessing
    layout = image_layout(spec.input_shape, pre.channels)
    if layout is None:
        raise BadInputError(
            f"input {str(path)!r} is an image, but the model's input shape {spec.input_shape} is not an "
            f"image's (expected (C, H, W), (H, W, C) or (H, W))"
        )
    channel_axis, height, width = layout
    channels = 1 if channel_axis is None else spec.input_shape[channel_axis]
    if pre.size is not None and tuple(pre.size) != (height, width):
        raise BadInputError(
            f"model preprocessing: size {tuple(pre.size)} does not match the input shape {spec.input_shape}"
        )
    image: Image.Image
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()
    except (UnidentifiedImageError, OSError) as err:
        raise BadInputError(f"input {str(path)!r} is not a readable image: {err}") from err
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Drawings with a transparent background mean "nothing here": show them on white paper.
        rgba = image.convert("RGBA")
        page = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(page, rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        shrinking = image.size[0] >= width and image.size[1] >= height
        # Area averaging keeps thin strokes when a large drawing becomes an 8×8 digit.
        resample = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
        image = image.resize((width, height), resample=resample)
    pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim == 2:
        pixels = pixels[..., np.newaxis]
    if pre.invert:
        pixels = 255.0 - pixels
    values = (pixels * pre.scale - _per_channel(pre.mean, channels)) / _per_channel(pre.std, channels)
    if channel_axis is None:
        values = values[..., 0]
    elif channel_axis == 0:
        values = np.moveaxis(values, -1, 0)
    tensor = values.reshape(spec.input_shape)
    if spec.lower is not None or spec.upper is not None:
        tensor = np.clip(tensor, spec.lower, spec.upper)
    return LoadedInput(path.stem, str(path), tensor.astype(np.float32), "image")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _load_csv(path: Path, spec: InputSpec) -> list[LoadedInput]:
    size = int(np.prod(spec.input_shape))
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = [
                (number, [cell.strip() for cell in row])
                for number, row in enumerate(csv.reader(handle), start=1)
                if row and any(cell.strip() for cell in row) and not row[0].lstrip().startswith("#")
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise BadInputError(f"input {str(path)!r} is not a readable CSV file: {err}") from err
    if not rows:
        raise BadInputError(f"input {str(path)!r} holds no rows")
    columns: list[int] | None = None
    if not all(_is_number(cell) for cell in rows[0][1]):
        header = rows.pop(0)[1]
        columns = _columns_for(header, spec.feature_names, size, path)
        if not rows:
            raise BadInputError(f"input {str(path)!r} has a header but no data rows")
    pre = spec.preprocessing
    scale = pre.scale
    mean = _per_feature(pre.mean, size)
    std = _per_feature(pre.std, size)
    loaded = []
    for data_index, (line, cells) in enumerate(rows, start=1):
        picked = cells if columns is None else [cells[i] if i < len(cells) else "" for i in columns]
        if len(picked) != size:
            raise BadInputError(
                f"input {str(path)!r} line {line}: expected {size} values (one per feature), got {len(picked)}"
            )
        raw = np.empty(size, dtype=np.float64)
        for position, cell in enumerate(picked):
            try:
                raw[position] = float(cell)
            except ValueError:
                feature = (
                    spec.feature_names[position]
                    if position < len(spec.feature_names)
                    else f"column {position + 1}"
                )
                raise BadInputError(
                    f"input {str(path)!r} line {line}, {feature}: expected a number, got {cell!r}"
                ) from None
        if not np.all(np.isfinite(raw)):
            raise BadInputError(
                f"input {str(path)!r} line {line}: expected finite values, got NaN or infinity"
            )
        tensor = ((raw * scale - mean) / std).reshape(spec.input_shape).astype(np.float32)
        loaded.append(
            LoadedInput(
                f"{path.stem}_row{data_index}",
                f"{path} row {data_index}",
                tensor,
                "tabular",
                raw_features=raw.astype(np.float32),
            )
        )
    return loaded


def _per_feature(value: float | Sequence[float], size: int) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64).reshape(-1)
    if array.size not in (1, size):
        raise BadInputError(f"model preprocessing: expected 1 or {size} mean/std values, got {array.size}")
    return array


def _columns_for(header: Sequence[str], feature_names: Sequence[str], size: int, path: Path) -> list[int]:
    if not feature_names:
        if len(header) != size:
            raise BadInputError(
                f"input {str(path)!r}: the model names no features, so the header must have {size} columns, "
                f"got {len(header)}"
            )
        return list(range(size))
    lookup = {_normalise_name(name): index for index, name in enumerate(header)}
    missing = [name for name in feature_names if _normalise_name(name) not in lookup]
    if missing:
        shown = ", ".join(repr(name) for name in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise BadInputError(
            f"input {str(path)!r}: the header lacks {len(missing)} of the model's features: {shown}"
        )
    return [lookup[_normalise_name(name)] for name in feature_names]


def _normalise_name(name: str) -> str:
    return re.sub(r"[\s_]+", " ", name.strip().lower())


def _unique_names(loaded: list[LoadedInput]) -> list[LoadedInput]:
    used: set[str] = set()
    result = []
    for item in loaded:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", item.name).strip("._") or "input"
        name, count = base, 1
        while name in used:
            count += 1
            name = f"{base}_{count}"
        used.add(name)
        result.append(LoadedInput(name, item.source, item.tensor, item.kind, item.raw_features))
    return result
