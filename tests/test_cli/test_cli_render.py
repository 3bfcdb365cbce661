"""Figures: sizes, non-blank, colour scale centred at 0, polarity, clipping, ranking."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.cli.render import (
    HeatmapStyle,
    add_render_arguments,
    apply_polarity,
    color_limit,
    ranked_order,
    ranked_table,
    render_bar_chart,
    render_comparison,
    render_feature_comparison,
    render_heatmap,
    style_from_args,
    to_map,
    validate_style,
)

RNG = np.random.default_rng(0)
DIGIT = RNG.random((8, 8))


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def test_heatmap_of_a_small_image_is_large_and_not_blank(tmp_path: Path) -> None:
    path = render_heatmap(
        tmp_path / "h.png", DIGIT, RNG.normal(size=(8, 8)), title="model · x.png\nSmoothGrad"
    )
    pixels = _pixels(path)
    height, width, _ = pixels.shape
    assert height >= 256 + 40 and width >= 3 * 256
    assert pixels.std() > 20


def test_signed_map_is_centred_at_zero(tmp_path: Path) -> None:
    # Left half strongly positive, right half zero: zero must be drawn white, not a mid colour.
    attribution = np.zeros((8, 8))
    attribution[:, :4] = 5.0
    path = render_heatmap(tmp_path / "h.png", DIGIT, attribution, style=HeatmapStyle(panel_px=128))
    pixels = _pixels(path)
    height, width, _ = pixels.shape
    # The attribution panel is the second of three equal panels; sample inside its halves.
    row = height // 2 + 10
    panel_left = int(round((0.2 + 1.28 + 0.2) * 100))
    positive = pixels[row, panel_left + 20]
    zero = pixels[row, panel_left + 100]
    assert positive[0] > 100 and positive[0] > positive[2] + 50  # red
    np.testing.assert_allclose(zero, [247, 247, 247], atol=12)  # RdBu_r's centre is (almost) white


def test_polarity_and_clipping() -> None:
    values = np.array([[-2.0, 1.0], [0.0, 4.0]])
    np.testing.assert_array_equal(apply_polarity(values, "positive"), [[0, 1], [0, 4]])
    np.testing.assert_array_equal(apply_polarity(values, "negative"), [[2, 0], [0, 0]])
    np.testing.assert_array_equal(apply_polarity(values, "absolute"), [[2, 1], [0, 4]])
    assert color_limit(np.arange(101.0), 90) == pytest.approx(90.0)
    assert color_limit(np.array([0.0] * 99 + [3.0]), 50) == 3.0  # mostly zero: fall back to the max
    assert color_limit(np.zeros(4), 99) == 1.0


def test_channels_are_summed() -> None:
    chw = np.stack([np.ones((4, 5)), 2 * np.ones((4, 5)), -np.ones((4, 5))])
    np.testing.assert_array_equal(to_map(chw, 0), 2 * np.ones((4, 5)))
    np.testing.assert_array_equal(to_map(np.moveaxis(chw, 0, -1), 2), 2 * np.ones((4, 5)))
    np.testing.assert_array_equal(to_map(np.ones((1, 4, 5)), None), np.ones((4, 5)))


@pytest.mark.parametrize(
    ("style", "message"),
    [
        (HeatmapStyle(polarity="up"), "polarity"),  # type: ignore[arg-type]
        (HeatmapStyle(clip_percentile=0), "clip percentile"),
        (HeatmapStyle(cmap="no_such_map"), "colour map"),
        (HeatmapStyle(interpolation="lanczos"), "interpolation"),
        (HeatmapStyle(panel_px=4), "panel size"),
    ],
)
def test_bad_styles_are_named(style: HeatmapStyle, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_style(style)


def test_rgb_heatmap_keeps_the_aspect_ratio(tmp_path: Path) -> None:
    image = RNG.random((30, 60, 3))
    path = render_heatmap(
        tmp_path / "wide.png", image, RNG.normal(size=(30, 60)), style=HeatmapStyle(polarity="absolute")
    )
    height, width, _ = _pixels(path).shape
    assert width > 3 * 256 and height < width / 2.5  # side by side, a colour bar beneath: a wide figure
    with pytest.raises(ValueError, match="expected shape"):
        render_heatmap(tmp_path / "bad.png", image, np.zeros((8, 8)))


def test_ranking_and_table() -> None:
    attribution = np.array([0.1, -3.0, 2.0, 0.0])
    assert ranked_order(attribution).tolist() == [1, 2, 0, 3]
    table = ranked_table(
        ["a", "b", "c", "d"], attribution, np.full(4, 0.01), np.array([1.0, 2.0, 3.0, 4.0]), top=2
    )
    lines = table.splitlines()
    assert len(lines) == 4  # header, rule, two rows
    assert lines[2].split()[:4] == ["1", "b", "2", "-3"]
    assert lines[2].rstrip().endswith("#|") and lines[3].rstrip().endswith("|" + "#" * 11)


def test_bar_chart_and_comparisons(tmp_path: Path) -> None:
    names = [f"feature {i}" for i in range(12)]
    bars = render_bar_chart(
        tmp_path / "b.png", names, RNG.normal(size=12), np.full(12, 0.1), RNG.random(12), top=5
    )
    assert _pixels(bars).std() > 20
    panels = [(f"m{i}", RNG.normal(size=(8, 8))) for i in range(6)]
    grid = render_comparison(tmp_path / "c.png", DIGIT, panels, columns=3, title="t")
    height, width, _ = _pixels(grid).shape
    assert width > height > 200
    matrix = render_feature_comparison(
        tmp_path / "f.png", names, [(t, RNG.normal(size=12)) for t, _ in panels]
    )
    assert _pixels(matrix).std() > 20
    with pytest.raises(ValueError, match="expected 12 names"):
        render_bar_chart(tmp_path / "x.png", names[:3], np.zeros(12), np.zeros(12))


def test_style_flags_default_to_signed_unless_the_maps_are_nonnegative() -> None:
    parser = argparse.ArgumentParser()
    add_render_arguments(parser)
    assert style_from_args(parser.parse_args([])).polarity == "both"
    assert style_from_args(parser.parse_args([]), nonnegative=True).polarity == "absolute"
    chosen = style_from_args(
        parser.parse_args(["--polarity", "negative", "--cmap", "viridis"]), nonnegative=True
    )
    assert (chosen.polarity, chosen.colormap_name()) == ("negative", "viridis")
