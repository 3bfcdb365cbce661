"""Pictures and tables of explanations: image heatmaps, tabular bar charts, method comparisons.

Drawing conventions (the ones Captum's ``visualize_image_attr`` and Vertex AI overlays use):

- polarity ``both`` shows the signed attribution with a diverging colour map whose centre (white)
  is exactly 0 and whose limits are symmetric, ``±v``; ``positive`` / ``negative`` show only that
  part (the negative part as a magnitude); ``absolute`` shows ``|attribution|``.
- ``v`` is the ``clip_percentile``-th percentile of the shown magnitudes, so a few extreme pixels
  do not wash the rest out; values beyond ``v`` saturate (the colour bar says so).
- Multi-channel attributions are summed over channels before the polarity is applied.
- Small images are enlarged to ``panel_px`` (nearest neighbour keeps pixels square and honest;
  bicubic on request); rows go top to bottom as in the file, aspect ratio kept.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global figure state) and numpy.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap, Normalize
    from matplotlib.figure import Figure

Polarity = Literal["both", "positive", "negative", "absolute"]
POLARITIES: tuple[Polarity, ...] = ("both", "positive", "negative", "absolute")
INTERPOLATIONS = ("nearest", "bicubic")

DEFAULT_CMAPS: dict[str, str] = {
    "both": "RdBu_r",
    "positive": "Reds",
    "negative": "Blues",
    "absolute": "Purples",
}
_COLORBAR_LABELS = {
    "both": "attribution",
    "positive": "positive attribution",
    "negative": "negative attribution (magnitude)",
    "absolute": "|attribution|",
}
_DPI = 100
_MINUS = "\N{MINUS SIGN}"
_POSITIVE_COLOUR = "#b2182b"
_NEGATIVE_COLOUR = "#2166ac"


@dataclass(frozen=True)
class HeatmapStyle:
    """How an attribution map is coloured.

    Attributes:
        polarity: ``both``, ``positive``, ``negative`` or ``absolute``.
        cmap: a matplotlib colour-map name; ``None`` picks one for the polarity (``RdBu_r`` for signed).
        clip_percentile: percentile of the shown magnitudes that maps to the end of the colour scale, in (0, 100].
        interpolation: ``nearest`` (square pixels) or ``bicubic`` when images are enlarged.
        panel_px: size of the longer side of each image panel, in pixels.
    """

    polarity: Polarity = "both"
    cmap: str | None = None
    clip_percentile: float = 99.0
    interpolation: str = "nearest"
    panel_px: int = 256

    def colormap_name(self) -> str:
        return self.cmap or DEFAULT_CMAPS[self.polarity]


def validate_style(style: HeatmapStyle) -> None:
    """Raise ``ValueError`` naming the field when a style value is unusable."""
    from matplotlib import colormaps

    if style.polarity not in POLARITIES:
        raise ValueError(f"polarity: expected one of {', '.join(POLARITIES)}, got {style.polarity!r}")
    if not 0 < style.clip_percentile <= 100:
        raise ValueError(f"clip percentile: expected a value in (0, 100], got {style.clip_percentile}")
    if style.interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"interpolation: expected one of {', '.join(INTERPOLATIONS)}, got {style.interpolation!r}"
        )
    if style.cmap is not None and style.cmap not in colormaps:
        raise ValueError(
            f"colour map: expected a matplotlib colour map name such as RdBu_r, got {style.cmap!r}"
        )
    if not 16 <= style.panel_px <= 4096:
        raise ValueError(f"panel size: expected 16 to 4096 pixels, got {style.panel_px}")


def to_map(attribution: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """An image attribution as ``(H, W)``: summed over ``channel_axis`` (0 for CHW, 2 for HWC)."""
    values = np.asarray(attribution, dtype=np.float64)
    if channel_axis is not None and values.ndim == 3:
        values = values.sum(axis=channel_axis)
    return values.reshape(values.shape[-2:]) if values.ndim > 2 else values


def apply_polarity(values: np.ndarray, polarity: Polarity) -> np.ndarray:
    """The part of a signed map that ``polarity`` shows (``negative`` as a magnitude)."""
    if polarity == "both":
        return values
    shown: np.ndarray
    if polarity == "positive":
        shown = np.maximum(values, 0.0)
    elif polarity == "negative":
        shown = np.maximum(-values, 0.0)
    else:
        shown = np.abs(values)
    return shown


def color_limit(values: np.ndarray, clip_percentile: float) -> float:
    """The magnitude at the end of the colour scale: a percentile of ``|values|``, never 0."""
    magnitudes = np.abs(values[np.isfinite(values)])
    if magnitudes.size == 0:
        return 1.0
    limit = float(np.percentile(magnitudes, clip_percentile))
    if limit <= 0:
        # A mostly-zero map: fall back to its largest value so the non-zero pixels still show.
        limit = float(magnitudes.max())
    return limit if limit > 0 else 1.0


def _norm(values: np.ndarray, style: HeatmapStyle) -> Normalize:
    from matplotlib.colors import Normalize

    limit = color_limit(values, style.clip_percentile)
    if style.polarity == "both":
        return Normalize(vmin=-limit, vmax=limit)
    return Normalize(vmin=0.0, vmax=limit)


def _colorbar_label(style: HeatmapStyle, relative: bool = False, exponent: int = 0) -> str:
    label = _COLORBAR_LABELS[style.polarity]
    if relative:
        label += " / scale of its panel"
    if exponent:
        label += f" (×1e{exponent})".replace("-", _MINUS)
    if style.clip_percentile < 100:
        label += f"\n(saturates at the {style.clip_percentile:g}th percentile)"
    return label


def _new_figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), dpi=_DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=_DPI, facecolor="white")
    return path


def _panel_size(shape: tuple[int, int], panel_px: int) -> tuple[float, float]:
    height, width = shape
    longer = max(height, width)
    return panel_px * width / longer / _DPI, panel_px * height / longer / _DPI


def _show_image(axes: Axes, image: np.ndarray, interpolation: str) -> None:
    if image.ndim == 2:
        axes.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation=interpolation)
    else:
        axes.imshow(np.clip(image, 0.0, 1.0), interpolation=interpolation)


def _overlay(image: np.ndarray, values: np.ndarray, norm: Normalize, cmap: Colormap) -> np.ndarray:
    """The attribution's colours blended over a faded input, ``(H, W, 3)`` in [0, 1].

    Each pixel's colour opacity grows with the attribution's magnitude (relative to the colour
    limit), so a zero attribution shows the input and a strong one its pure colour, whatever the
    brightness beneath: dark ink, where a digit's evidence lies, does not dim the colours.
    """
    scaled = np.asarray(norm(values), dtype=np.float64)
    colours = np.asarray(cmap(scaled), dtype=np.float64)[..., :3]
    centre = 0.5 if norm.vmin is not None and norm.vmin < 0 else 0.0
    strength = np.clip(np.abs(scaled - centre) / (1.0 - centre), 0.0, 1.0)
    opacity = (0.9 * np.sqrt(strength))[..., np.newaxis]
    grey = image if image.ndim == 2 else image.mean(axis=2)
    # Fade the input towards white so it reads as a backdrop, not as part of the colour scale.
    backdrop = np.repeat((0.45 + 0.55 * np.clip(grey, 0.0, 1.0))[..., np.newaxis], 3, axis=2)
    blended: np.ndarray = (1.0 - opacity) * backdrop + opacity * colours
    return blended


def _strip(axes: Axes) -> None:
    axes.set_xticks([])
    axes.set_yticks([])


Box = tuple[float, float, float, float]  # (left, bottom, width, height) in inches


@dataclass(frozen=True)
class HeatmapLayout:
    """Where everything of a heatmap figure goes, in inches from the figure's bottom-left corner.

    Attributes:
        width, height: the figure's size.
        panels: the input, attribution and overlay panels (each of the input's aspect ratio).
        colorbar: the colour bar's box.
        orientation: ``vertical`` (right of the panels) or ``horizontal`` (below them).
        stacked: whether the panels are stacked top to bottom (wide inputs) instead of side by side.
    """

    width: float
    height: float
    panels: tuple[Box, Box, Box]
    colorbar: Box
    orientation: Literal["vertical", "horizontal"]
    stacked: bool


# Inputs at least this much wider than tall get their panels stacked: side by side they would
# make a thin strip whose colour bar is too short for its label.
STACK_ASPECT = 2.5
_MARGIN = 0.15
_GAP = 0.2
_STACK_GAP = 0.08
_BAR_THICKNESS = 0.16
_TICK_PAD = 0.12  # a tick and the gap to its label: 3.5 pt each
_TICK_ROWS = 0.2  # tick labels under a horizontal bar
_TITLE_PT, _PANEL_TITLE_PT, _LABEL_PT = 10.0, 10.0, 8.0


def text_extent(text: str, points: float) -> tuple[float, float]:
    """Width and height in inches of ``text`` (lines separated by ``\n``) as the Agg canvas draws it."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    if not text:
        return 0.0, 0.0
    renderer = RendererAgg(1, 1, _DPI)  # type: ignore[no-untyped-call]  # matplotlib's backend_agg is unannotated
    font = FontProperties(size=points)
    lines = text.split("\n")
    # matplotlib's backend_agg is unannotated.
    widths = [
        renderer.get_text_width_height_descent(line, font, ismath=False)[0]  # type: ignore[no-untyped-call]
        for line in lines
    ]
    # Matplotlib's default line spacing is 1.2 times the font size.
    return max(widths) / _DPI, len(lines) * 1.2 * points / 72


def heatmap_layout(
    shape: tuple[int, int],
    panel_px: int,
    title: str,
    panel_titles: Sequence[str],
    colorbar_label: str,
    tick_labels: Sequence[str] = ("−0.25",),
) -> HeatmapLayout:
    """Lay a heatmap figure out from the input's aspect ratio and the sizes of its texts.

    Square and tall inputs get three panels side by side; inputs at least :data:`STACK_ASPECT` times
    wider than tall get them stacked. The colour bar stands right of the panels when they are tall
    enough for its label, and lies below them otherwise. The figure is as large as its content plus
    a small margin: no text is clipped and no side is left blank.

    Args:
        shape: ``(H, W)`` of the input.
        panel_px: the longer side of each panel in pixels.
        title: the figure's title (may be empty; lines separated by ``\n``).
        panel_titles: the three panel titles.
        colorbar_label: the colour bar's label.
        tick_labels: the colour bar's tick labels, or the widest ones it may get.
    """
    panel_w, panel_h = _panel_size(shape, panel_px)
    stacked = panel_w >= STACK_ASPECT * panel_h
    lines = max(t.count("\n") + 1 for t in panel_titles)
    caption_h = lines * 1.2 * _PANEL_TITLE_PT / 72 + 0.08  # the panel titles and their padding
    columns = [max(panel_w, text_extent(t, _PANEL_TITLE_PT)[0] + 0.1) for t in panel_titles]
    label_len, label_thick = text_extent(colorbar_label, _LABEL_PT)
    title_w, title_h = text_extent(title, _TITLE_PT)
    top = title_h + 0.2 if title else 0.05

    if stacked:
        block_w = max(columns)
        block_h = 3 * (caption_h + panel_h) + 2 * _STACK_GAP
        bar_span = block_h - caption_h
    else:
        block_w = sum(columns) + 2 * _GAP
        block_h = caption_h + panel_h
        bar_span = panel_h
    vertical = bar_span >= label_len + 0.1
    if vertical:
        tick_room = (
            max(text_extent(tick, _LABEL_PT)[0] for tick in tick_labels) + _TICK_PAD if tick_labels else 0.0
        )
        side = _GAP + _BAR_THICKNESS + tick_room + label_thick + 0.05
        below = 0.0
    else:
        side = 0.0
        below = _GAP + _BAR_THICKNESS + _TICK_ROWS + label_thick + 0.05
    width = max(2 * _MARGIN + block_w + side, title_w + 2 * _MARGIN, label_len + 2 * _MARGIN)
    height = _MARGIN + below + block_h + top
    left = (width - side - block_w) / 2  # centred when the title or the label is the wider part

    panels: list[Box] = []
    for index in range(3):
        if stacked:
            bottom = height - top - (index + 1) * (caption_h + panel_h) - index * _STACK_GAP
            panels.append((left + (block_w - panel_w) / 2, bottom, panel_w, panel_h))
        else:
            x = left + sum(columns[:index]) + index * _GAP
            panels.append((x + (columns[index] - panel_w) / 2, _MARGIN + below, panel_w, panel_h))
    if vertical:
        bar_bottom = panels[2][1]
        colorbar: Box = (
            left + block_w + _GAP,
            bar_bottom,
            _BAR_THICKNESS,
            panels[0][1] + panel_h - bar_bottom,
        )
    else:
        bar_w = max(min(block_w, 3.0), min(label_len, width - 2 * _MARGIN))
        bar_x = (panels[1][0] + panel_w / 2) if not stacked else left + block_w / 2
        bar_x = min(max(bar_x - bar_w / 2, _MARGIN), width - _MARGIN - bar_w)
        colorbar = (bar_x, _MARGIN + below - _GAP - _BAR_THICKNESS, bar_w, _BAR_THICKNESS)
    return HeatmapLayout(
        width,
        height,
        (panels[0], panels[1], panels[2]),
        colorbar,
        "vertical" if vertical else "horizontal",
        stacked,
    )


def heatmap_figure(
    image: np.ndarray,
    attribution_map: np.ndarray,
    *,
    title: str = "",
    style: HeatmapStyle | None = None,
) -> Figure:
    """The figure :func:`render_heatmap` saves: input | attribution | overlay and a colour bar.

    Laid out by :func:`heatmap_layout`: side by side for square and tall inputs, stacked for wide ones.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    style = style or HeatmapStyle()
    values = apply_polarity(np.asarray(attribution_map, dtype=np.float64), style.polarity)
    if values.shape != image.shape[:2]:
        raise ValueError(f"attribution map: expected shape {image.shape[:2]}, got {values.shape}")
    norm = _norm(values, style)
    cmap = colormaps[style.colormap_name()]
    panel_w = _panel_size(values.shape, style.panel_px)[0]
    panel_titles = ("input", _wrapped(_COLORBAR_LABELS[style.polarity], panel_w), "overlay")
    # Ticks divided by a power of ten named in the label, rather than matplotlib's offset text,
    # which sits outside the bar's box where the layout cannot see it.
    exponent = _tick_exponent(float(norm.vmax or 1.0))
    label = _colorbar_label(style, exponent=exponent)
    formatter = FuncFormatter(lambda value, _: f"{value / 10.0**exponent:.3g}".replace("-", _MINUS))
    # At least the ticks matplotlib's auto locator can pick on this range (it picks among these steps).
    low, high = float(norm.vmin or 0.0), float(norm.vmax or 1.0)
    candidates = MaxNLocator(nbins=10, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
    ticks = [formatter(value) for value in candidates if low <= value <= high]
    layout = heatmap_layout(values.shape, style.panel_px, title, panel_titles, label, ticks)
    figure = _new_figure(layout.width, layout.height)

    def add(box: Box) -> Axes:
        x, y, w, h = box
        return figure.add_axes((x / layout.width, y / layout.height, w / layout.width, h / layout.height))

    axes_input, axes_map, axes_overlay = (add(box) for box in layout.panels)
    _show_image(axes_input, image, style.interpolation)
    axes_map.imshow(values, cmap=cmap, norm=norm, interpolation=style.interpolation)
    axes_overlay.imshow(_overlay(image, values, norm, cmap), interpolation=style.interpolation)
    for axes, panel_title in zip((axes_input, axes_map, axes_overlay), panel_titles, strict=True):
        axes.set_title(panel_title, fontsize=_PANEL_TITLE_PT)
        _strip(axes)

    colorbar = figure.colorbar(
        ScalarMappable(norm=norm, cmap=cmap), cax=add(layout.colorbar), orientation=layout.orientation
    )
    colorbar.set_label(label, fontsize=_LABEL_PT)
    colorbar.ax.tick_params(labelsize=_LABEL_PT)
    colorbar.formatter = formatter
    if title:
        figure.suptitle(title, fontsize=_TITLE_PT, y=1 - 0.08 / layout.height, va="top")
    return figure


def _wrapped(text: str, width: float) -> str:
    """``text`` on two lines, split at the space nearest its middle, when it is wider than ``width`` inches."""
    if " " not in text or text_extent(text, _PANEL_TITLE_PT)[0] <= width:
        return text
    spaces = [i for i, character in enumerate(text) if character == " "]
    cut = min(spaces, key=lambda i: abs(i - len(text) / 2))
    return text[:cut] + "\n" + text[cut + 1 :]


def _tick_exponent(limit: float) -> int:
    """The power of ten colour-bar ticks are divided by: 0 for limits in [0.01, 1000), as ScalarFormatter."""
    exponent = math.floor(math.log10(limit)) if limit > 0 else 0
    return exponent if exponent < -2 or exponent >= 3 else 0


def render_heatmap(
    path: Path,
    image: np.ndarray,
    attribution_map: np.ndarray,
    *,
    title: str = "",
    style: HeatmapStyle | None = None,
) -> Path:
    """Draw input | attribution | overlay with a colour bar and write a PNG.

    Args:
        path: the PNG to write (folders are created).
        image: the input as seen by the model, ``(H, W)`` grayscale or ``(H, W, 3)`` RGB in [0, 1].
        attribution_map: ``(H, W)`` attribution (see :func:`to_map`), any float dtype.
        title: one or two lines above the panels.
        style: colours, polarity, clipping, enlargement.

    Returns:
        ``path``. Square inputs give about ``3·panel_px + 180`` by ``panel_px + 80`` pixels; wide
        inputs stack their panels (:func:`heatmap_layout`).
    """
    return _save(heatmap_figure(image, attribution_map, title=title, style=style), path)


def ranked_order(attribution: np.ndarray, top: int | None = None) -> np.ndarray:
    """Feature indices by decreasing ``|attribution|`` (ties keep file order), at most ``top``."""
    values = np.asarray(attribution, dtype=np.float64).reshape(-1)
    order = np.argsort(-np.abs(values), kind="stable")
    return order if top is None else order[:top]


def ranked_table(
    names: Sequence[str],
    attribution: np.ndarray,
    standard_error: np.ndarray,
    values: np.ndarray | None = None,
    *,
    top: int | None = None,
    bar_width: int = 16,
) -> str:
    """A terminal table of features ranked by ``|attribution|``, with a signed text bar.

    ``values`` are the feature values as the user wrote them (shown beside the name).
    """
    from service.cli.output import format_table

    attribution = np.asarray(attribution, dtype=np.float64).reshape(-1)
    errors = np.asarray(standard_error, dtype=np.float64).reshape(-1)
    scale = float(np.max(np.abs(attribution))) or 1.0
    rows = []
    for rank, index in enumerate(ranked_order(attribution, top), start=1):
        value = attribution[index]
        length = int(round(bar_width * abs(value) / scale))
        bar = ("#" * length).rjust(bar_width) + "|" if value < 0 else " " * bar_width + "|" + "#" * length
        rows.append(
            [
                rank,
                names[index],
                "" if values is None else f"{float(np.reshape(values, -1)[index]):.4g}",
                f"{value:+.4g}",
                f"{errors[index]:.2g}",
                bar,
            ]
        )
    return format_table(
        ["#", "feature", "value", "attribution", "std err", "negative | positive"], rows, "rlrrrl"
    )


def render_bar_chart(
    path: Path,
    names: Sequence[str],
    attribution: np.ndarray,
    standard_error: np.ndarray,
    values: np.ndarray | None = None,
    *,
    title: str = "",
    top: int | None = 20,
) -> Path:
    """Horizontal bars of the ``top`` features by ``|attribution|``, largest on top, ±1.96·SE whiskers.

    Args:
        path: the PNG to write.
        names: one name per feature.
        attribution: ``(n_features,)`` signed attribution.
        standard_error: ``(n_features,)`` its standard error (whiskers are the 95% interval).
        values: ``(n_features,)`` the feature values as written by the user, shown in the labels.
        title: one or two lines above the chart.
        top: how many features to show; ``None`` shows all.
    """
    attribution = np.asarray(attribution, dtype=np.float64).reshape(-1)
    errors = np.asarray(standard_error, dtype=np.float64).reshape(-1)
    if len(names) != attribution.size or errors.size != attribution.size:
        raise ValueError(
            f"bar chart: expected {attribution.size} names and standard errors, got {len(names)} and {errors.size}"
        )
    order = ranked_order(attribution, top)
    shown = attribution[order]
    whiskers = 1.96 * errors[order]
    labels = [
        names[i] if values is None else f"{names[i]} = {float(np.reshape(values, -1)[i]):.4g}" for i in order
    ]
    label_room = 0.25 + 0.075 * max(len(label) for label in labels)
    plot_w, row_h = 4.6, 0.28
    top_room = 0.7 if "\n" in title else 0.45
    height = top_room + 0.6 + row_h * len(order)
    width = label_room + plot_w + 0.3
    figure = _new_figure(width, height)
    axes = figure.add_axes((label_room / width, 0.6 / height, plot_w / width, (row_h * len(order)) / height))
    positions = np.arange(len(order))
    colours = [_POSITIVE_COLOUR if v >= 0 else _NEGATIVE_COLOUR for v in shown]
    axes.barh(
        positions,
        shown,
        xerr=whiskers,
        color=colours,
        error_kw={"ecolor": "#444444", "capsize": 2, "lw": 0.8},
    )
    axes.set_yticks(positions, labels, fontsize=8)
    axes.invert_yaxis()
    axes.axvline(0.0, color="black", lw=0.8)
    reach = float(np.max(np.abs(shown) + whiskers)) if shown.size else 1.0
    reach = reach * 1.08 if reach > 0 else 1.0
    # Symmetric limits keep 0 in the middle, so the sign of every bar reads at a glance.
    axes.set_xlim(-reach, reach)
    axes.set_ylim(len(order) - 0.5, -0.5)
    axes.grid(axis="x", color="#dddddd", lw=0.6)
    axes.set_axisbelow(True)
    axes.tick_params(axis="x", labelsize=8)
    axes.set_xlabel("attribution (← lowers the score · raises the score →), whiskers ±1.96·SE", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    return _save(figure, path)


def render_comparison(
    path: Path,
    image: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray]],
    *,
    columns: int = 3,
    title: str = "",
    style: HeatmapStyle | None = None,
) -> Path:
    """The input and several attribution maps side by side, each scaled to its own range.

    Every map gets its own colour limit (its ``clip_percentile``-th magnitude), as in the papers'
    figures, so the shared colour bar reads "fraction of this panel's scale".

    Args:
        path: the PNG to write.
        image: ``(H, W)`` or ``(H, W, 3)`` in [0, 1], drawn in the first column of the first row.
        panels: ``(title, (H, W) attribution map)`` in reading order, ``columns`` per row.
        columns: maps per row.
        title: the figure's title.
        style: colours, polarity, clipping, enlargement (``panel_px`` is halved for grids).
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    style = style or HeatmapStyle()
    if not panels:
        raise ValueError("comparison: expected at least one panel, got none")
    columns = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // columns)
    cmap = colormaps[style.colormap_name()]
    panel_px = max(96, min(style.panel_px, 200))
    panel_w, panel_h = _panel_size(image.shape[:2], panel_px)
    left, gap_x, gap_y, bottom, bar_w, bar_room = 0.15, 0.15, 0.45, 0.15, 0.16, 1.3
    top = 0.45 + (0.3 if title else 0.0)
    width = left + (columns + 1) * (panel_w + gap_x) + 0.15 + bar_w + bar_room
    height = bottom + rows * (panel_h + gap_y) + top - gap_y
    figure = _new_figure(width, height)

    def add(row: int, column: int) -> Axes:
        x = left + column * (panel_w + gap_x) + (0.15 if column > 0 else 0.0)
        y = height - top - row * (panel_h + gap_y) - panel_h
        return figure.add_axes((x / width, y / height, panel_w / width, panel_h / height))

    axes_input = add(0, 0)
    _show_image(axes_input, image, style.interpolation)
    axes_input.set_title("input", fontsize=9)
    _strip(axes_input)
    relative_norm = Normalize(vmin=-1.0 if style.polarity == "both" else 0.0, vmax=1.0)
    for index, (panel_title, attribution_map) in enumerate(panels):
        values = apply_polarity(np.asarray(attribution_map, dtype=np.float64), style.polarity)
        if values.shape != image.shape[:2]:
            raise ValueError(
                f"comparison panel {panel_title!r}: expected shape {image.shape[:2]}, got {values.shape}"
            )
        limit = color_limit(values, style.clip_percentile)
        axes = add(index // columns, 1 + index % columns)
        axes.imshow(values / limit, cmap=cmap, norm=relative_norm, interpolation=style.interpolation)
        axes.set_title(panel_title, fontsize=9)
        _strip(axes)
    bar_x = left + (columns + 1) * (panel_w + gap_x) + 0.15
    bar_h = min(rows * (panel_h + gap_y) - gap_y, 3.0)
    colorbar_axes = figure.add_axes(
        (bar_x / width, (height - top - bar_h) / height, bar_w / width, bar_h / height)
    )
    colorbar = figure.colorbar(ScalarMappable(norm=relative_norm, cmap=cmap), cax=colorbar_axes)
    colorbar.set_label(_colorbar_label(style, relative=True), fontsize=8)
    colorbar.ax.tick_params(labelsize=8)
    if title:
        figure.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    return _save(figure, path)


def render_feature_comparison(
    path: Path,
    names: Sequence[str],
    panels: Sequence[tuple[str, np.ndarray]],
    *,
    title: str = "",
    top: int | None = 20,
) -> Path:
    """Tabular comparison: a features × methods matrix, each column scaled to its own max |value|.

    Rows are the ``top`` features ranked by the first method's ``|attribution|``; the colour is
    diverging and centred at 0 (red raises the score, blue lowers it).
    """
    from matplotlib import colormaps

    if not panels:
        raise ValueError("comparison: expected at least one method, got none")
    matrix = np.stack([np.asarray(values, dtype=np.float64).reshape(-1) for _, values in panels], axis=1)
    if matrix.shape[0] != len(names):
        raise ValueError(f"comparison: expected {matrix.shape[0]} feature names, got {len(names)}")
    order = ranked_order(matrix[:, 0], top)
    scales = np.max(np.abs(matrix), axis=0)
    scaled = matrix[order] / np.where(scales > 0, scales, 1.0)
    label_room = 0.25 + 0.075 * max(len(names[i]) for i in order)
    cell_w, cell_h = 0.62, 0.26
    top_room = 1.1 + (0.3 if title else 0.0)
    # Wide enough for the title too (about 0.075 in per character at 10 pt).
    width = max(label_room + cell_w * len(panels) + 1.4, 0.075 * len(title) + 0.4)
    height = top_room + 0.3 + cell_h * len(order)
    figure = _new_figure(width, height)
    axes = figure.add_axes(
        (label_room / width, 0.3 / height, cell_w * len(panels) / width, cell_h * len(order) / height)
    )
    image = axes.imshow(
        scaled, cmap=colormaps["RdBu_r"], vmin=-1.0, vmax=1.0, aspect="auto", interpolation="nearest"
    )
    axes.set_yticks(np.arange(len(order)), [names[i] for i in order], fontsize=8)
    axes.set_xticks(np.arange(len(panels)), [name for name, _ in panels], fontsize=8, rotation=35, ha="left")
    axes.xaxis.tick_top()
    bar_h = min(3.0, cell_h * len(order))
    colorbar_axes = figure.add_axes(
        (
            (label_room + cell_w * len(panels) + 0.2) / width,
            (0.3 + cell_h * len(order) - bar_h) / height,
            0.16 / width,
            bar_h / height,
        )
    )
    colorbar = figure.colorbar(image, cax=colorbar_axes)
    colorbar.set_label("attribution / max |attribution| of its column", fontsize=8)
    colorbar.ax.tick_params(labelsize=8)
    if title:
        figure.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    return _save(figure, path)


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the figure flags (colour map, polarity, clipping, enlargement) to ``parser``."""
    group = parser.add_argument_group("figures")
    group.add_argument(
        "--cmap",
        help="matplotlib colour map (default: RdBu_r for --polarity both, Reds/Blues/Purples for "
        "positive/negative/absolute)",
    )
    group.add_argument(
        "--polarity",
        choices=POLARITIES,
        help="which part of the attribution to draw: both (signed, colour scale centred at 0), positive, "
        "negative, absolute (default: both; absolute for the non-negative --transform abs, "
        "smoothgrad_sq and vargrad)",
    )
    group.add_argument(
        "--clip-percentile",
        type=float,
        default=99.0,
        metavar="P",
        help="the colour scale ends at the P-th percentile of |attribution|, so outliers saturate "
        "instead of washing the map out (default: 99; 100 disables clipping)",
    )
    group.add_argument(
        "--interpolation",
        choices=INTERPOLATIONS,
        default="nearest",
        help="how small images are enlarged: nearest keeps pixels square (default), bicubic smooths",
    )
    group.add_argument(
        "--panel-size",
        type=int,
        default=256,
        metavar="PIXELS",
        help="longer side of each image panel in pixels, e.g. an 8×8 digit becomes 256×256 (default: 256)",
    )


def style_from_args(args: argparse.Namespace, *, nonnegative: bool = False) -> HeatmapStyle:
    """The :class:`HeatmapStyle` of the parsed figure flags; ``ValueError`` names a bad one.

    ``nonnegative``: the maps cannot be negative (an ``abs``/``smoothgrad_sq``/``vargrad``
    transform), so without ``--polarity`` they are drawn ``absolute`` rather than on a diverging
    scale whose negative half would stay unused.
    """
    polarity: Polarity = args.polarity or ("absolute" if nonnegative else "both")
    style = HeatmapStyle(
        polarity=polarity,
        cmap=args.cmap,
        clip_percentile=args.clip_percentile,
        interpolation=args.interpolation,
        panel_px=args.panel_size,
    )
    validate_style(style)
    return style
