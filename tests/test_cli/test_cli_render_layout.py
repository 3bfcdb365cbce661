"""Heatmap layout follows the input's aspect ratio: wide (48×192, 16×64), tall (192×48) and square (28×28)
inputs give figures without clipped text and without large blank margins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.cli.render import HeatmapStyle, heatmap_figure, heatmap_layout, render_heatmap

TITLE = "text_detector · line_0042.png\nSmoothGrad(gaussian, α=0.2) · the sum over 0,10:20,5:40 · N=50"
SHAPES = [(48, 192), (192, 48), (16, 64), (28, 28)]
DPI = 100


def _inputs(shape: tuple[int, int], scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(sum(shape))
    return rng.random(shape), rng.normal(size=shape) * scale


def _ink(path: Path) -> np.ndarray:
    """True where the PNG is not (nearly) white."""
    return np.asarray(Image.open(path).convert("L"), dtype=np.float64) < 245


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_no_large_blank_margins(tmp_path: Path, shape: tuple[int, int]) -> None:
    image, attribution = _inputs(shape)
    ink = _ink(render_heatmap(tmp_path / "h.png", image, attribution, title=TITLE))
    rows, columns = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    height, width = ink.shape
    # The outer border: at most a quarter inch of white on each side.
    assert rows[0] <= 25 and height - 1 - rows[-1] <= 25, (rows[0], height - 1 - rows[-1])
    assert columns[0] <= 25 and width - 1 - columns[-1] <= 25, (columns[0], width - 1 - columns[-1])
    # Inside: few rows or columns without any ink (gaps between title, panels and colour bar).
    assert (~ink.any(axis=1)).mean() < 0.2
    assert (~ink.any(axis=0)).mean() < 0.2


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("scale", [1.0, 1e-4, 3e4])
def test_every_text_and_the_colour_bar_label_lie_inside_the_figure(
    shape: tuple[int, int], scale: float
) -> None:
    image, attribution = _inputs(shape, scale)
    for style in (HeatmapStyle(), HeatmapStyle(polarity="negative", panel_px=96)):
        figure = heatmap_figure(image, attribution, title=TITLE, style=style)
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
        bounds = figure.bbox
        colorbar_axes = figure.axes[-1]
        label = (
            colorbar_axes.yaxis.label if colorbar_axes.yaxis.label.get_text() else colorbar_axes.xaxis.label
        )
        assert "saturates at the 99th percentile" in label.get_text()
        box = label.get_window_extent(renderer)
        assert bounds.x0 <= box.x0 and box.x1 <= bounds.x1 and bounds.y0 <= box.y0 and box.y1 <= bounds.y1, (
            box,
            bounds,
        )
        # Everything drawn (titles, tick labels, the offset of large or small scales) stays inside.
        tight = figure.get_tightbbox(renderer)
        assert tight is not None
        assert tight.x0 >= 0 and tight.y0 >= 0 and tight.x1 <= figure.get_figwidth() + 1e-6
        assert tight.y1 <= figure.get_figheight() + 1e-6


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_figure_follows_the_aspect_ratio(tmp_path: Path, shape: tuple[int, int]) -> None:
    image, attribution = _inputs(shape)
    title = "model · x.png"  # shorter than the panels: the figure's width is the layout's
    figure = heatmap_figure(image, attribution, title=title)
    panels = figure.axes[:3]
    height, width = shape
    panel_w, panel_h = (256 * width / max(shape), 256 * height / max(shape))
    for axes in panels:  # every panel keeps the input's aspect ratio at the asked size
        box = axes.get_position()
        assert box.width * figure.get_figwidth() * DPI == pytest.approx(panel_w, abs=0.5)
        assert box.height * figure.get_figheight() * DPI == pytest.approx(panel_h, abs=0.5)
    png_height, png_width = _ink(render_heatmap(tmp_path / "h.png", image, attribution, title=title)).shape
    lefts = sorted(axes.get_position().x0 for axes in panels)
    if width >= 2.5 * height:  # wide: stacked, the figure is about one panel wide
        assert max(lefts) - min(lefts) < 1e-6
        assert png_width < panel_w + 200
        assert png_height > 3 * panel_h
    else:  # square or tall: side by side, the figure is about one panel high
        assert lefts[1] - lefts[0] >= panel_w / png_width
        assert png_height < panel_h + 120
        assert png_width > 3 * panel_w


def test_small_panels_put_the_colour_bar_below() -> None:
    wide_row = heatmap_layout(
        (30, 60),
        256,
        "",
        ("input", "attribution", "overlay"),
        "attribution\n(saturates at the 99th percentile)",
    )
    assert wide_row.orientation == "horizontal" and not wide_row.stacked
    square = heatmap_layout(
        (28, 28),
        256,
        "",
        ("input", "attribution", "overlay"),
        "attribution\n(saturates at the 99th percentile)",
    )
    assert square.orientation == "vertical"
    bar_x, bar_y, bar_w, _ = wide_row.colorbar
    assert (
        bar_y < min(panel[1] for panel in wide_row.panels) and bar_x >= 0 and bar_x + bar_w <= wide_row.width
    )
