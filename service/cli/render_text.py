"""Per-token attributions as coloured text: ANSI terminal colours and PNG figures.

Same conventions as :mod:`service.cli.render`: a diverging colour map (``RdBu_r``: red raises the
explained score, blue lowers it) centred exactly at 0 with symmetric limits ``±v``, ``v`` the
``clip_percentile``-th percentile of ``|attribution|``. The figure draws each token on a box of its
colour, wrapping lines like running text (as Captum's ``visualize_text``), with a colour bar.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.cli.render import (
    HeatmapStyle,
    _colorbar_label,
    _new_figure,
    _norm,
    _save,
    apply_polarity,
    color_limit,
)

__all__ = [
    "RESET",
    "colour_tokens",
    "plain_tokens",
    "render_token_comparison",
    "render_tokens",
    "token_colours",
]

RESET = "\x1b[0m"


def token_colours(values: np.ndarray, style: HeatmapStyle, limit: float | None = None) -> np.ndarray:
    """RGB colours in [0, 1] ``(n, 3)`` of per-token ``values`` under ``style`` (limit: ``±limit``)."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    shown = apply_polarity(np.asarray(values, dtype=np.float64).reshape(-1), style.polarity)
    if limit is None:
        norm = _norm(shown, style)
    else:
        norm = Normalize(vmin=-limit if style.polarity == "both" else 0.0, vmax=limit)
    return np.asarray(colormaps[style.colormap_name()](norm(shown)), dtype=np.float64)[:, :3]


def _foreground(rgb: np.ndarray) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones (relative luminance, ITU-R BT.709)."""
    luminance = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    return (0, 0, 0) if luminance > 0.5 else (255, 255, 255)


def colour_tokens(tokens: Sequence[str], values: np.ndarray, style: HeatmapStyle | None = None) -> str:
    """The tokens on 24-bit ANSI background colours of their attribution, space-separated.

    Each token is ``ESC[48;2;R;G;Bm ESC[38;2;r;g;bm token ESC[0m``; the text colour keeps it readable.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(tokens) != values.size:
        raise ValueError(f"tokens: expected {values.size} tokens (one per value), got {len(tokens)}")
    colours = token_colours(values, style or HeatmapStyle())
    parts = []
    for token, rgb in zip(tokens, colours, strict=True):
        r, g, b = (int(round(255 * c)) for c in rgb)
        fr, fg, fb = _foreground(rgb)
        parts.append(f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;{fr};{fg};{fb}m {token} {RESET}")
    return "".join(parts)


def plain_tokens(tokens: Sequence[str], values: np.ndarray, standard_errors: np.ndarray | None = None) -> str:
    """``token(+0.123)`` per token, or ``token(+0.123±0.004)`` with standard errors, space-separated."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(tokens) != values.size:
        raise ValueError(f"tokens: expected {values.size} tokens (one per value), got {len(tokens)}")
    errors = None if standard_errors is None else np.asarray(standard_errors, dtype=np.float64).reshape(-1)
    parts = []
    for index, token in enumerate(tokens):
        error = f"±{errors[index]:.3g}" if errors is not None else ""
        parts.append(f"{token}({values[index]:+.3g}{error})")
    return " ".join(parts)


def _layout_lines(widths: Sequence[float], line_width: float, gap: float) -> list[list[int]]:
    lines: list[list[int]] = [[]]
    used = 0.0
    for index, width in enumerate(widths):
        if lines[-1] and used + gap + width > line_width:
            lines.append([])
            used = 0.0
        used += (gap if lines[-1] else 0.0) + width
        lines[-1].append(index)
    return lines


def _token_width(token: str, points: float) -> float:
    """Width in inches of a token's box: about 0.6 em per character plus padding."""
    return 0.6 * points / 72.0 * max(1, len(token)) + 0.12


def render_tokens(
    path: Path,
    tokens: Sequence[str],
    values: np.ndarray,
    *,
    title: str = "",
    style: HeatmapStyle | None = None,
    line_width_in: float = 7.0,
) -> Path:
    """Draw the tokens as running text on boxes coloured by ``values`` ``(len(tokens),)``, with a
    colour bar; lines wrap at ``line_width_in`` inches. Returns ``path``."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable

    style = style or HeatmapStyle()
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(tokens) != values.size or not tokens:
        raise ValueError(
            f"tokens: expected {values.size} tokens (one per value, at least one), got {len(tokens)}"
        )
    points, gap, line_h = 13.0, 0.06, 0.34
    widths = [_token_width(t, points) for t in tokens]
    lines = _layout_lines(widths, line_width_in, gap)
    top = 0.25 + (0.22 * (title.count("\n") + 1) if title else 0.0)
    bar_room = 0.95
    width = line_width_in + 0.5
    height = top + line_h * len(lines) + 0.15 + bar_room
    figure = _new_figure(width, height)
    colours = token_colours(values, style)
    for row, line in enumerate(lines):
        x = 0.25
        y = height - top - line_h * (row + 0.5)
        for index in line:
            rgb = colours[index]
            text_rgb = tuple(c / 255 for c in _foreground(rgb))
            figure.text(
                (x + widths[index] / 2) / width,
                y / height,
                tokens[index],
                ha="center",
                va="center",
                fontsize=points,
                family="DejaVu Sans Mono",
                color=text_rgb,
                bbox={
                    "boxstyle": "round,pad=0.25",
                    "facecolor": tuple(rgb),
                    "edgecolor": "#bbbbbb",
                    "linewidth": 0.5,
                },
            )
            x += widths[index] + gap
    shown = apply_polarity(values, style.polarity)
    limit = color_limit(shown, style.clip_percentile)
    low = -limit if style.polarity == "both" else 0.0
    mappable = ScalarMappable(cmap=colormaps[style.colormap_name()])
    mappable.set_clim(low, limit)
    bar_axes = figure.add_axes((0.25 / width, 0.55 / height, (line_width_in - 0.5) / width, 0.14 / height))
    colorbar = figure.colorbar(mappable, cax=bar_axes, orientation="horizontal")
    colorbar.set_label(_colorbar_label(style).replace("\n", " "), fontsize=8)
    colorbar.ax.tick_params(labelsize=8)
    if title:
        figure.suptitle(title, fontsize=10, y=1 - 0.1 / height, va="top")
    return _save(figure, path)


def render_token_comparison(
    path: Path,
    tokens: Sequence[str],
    panels: Sequence[tuple[str, np.ndarray]],
    *,
    title: str = "",
) -> Path:
    """Methods × tokens: one row per ``(method title, values (len(tokens),))``, each row scaled to its
    own max |value| (signed, ``RdBu_r`` centred at 0), tokens as column labels."""
    from matplotlib import colormaps

    if not panels:
        raise ValueError("comparison: expected at least one method, got none")
    matrix = np.stack([np.asarray(values, dtype=np.float64).reshape(-1) for _, values in panels])
    if matrix.shape[1] != len(tokens):
        raise ValueError(f"comparison: expected {matrix.shape[1]} tokens, got {len(tokens)}")
    scales = np.max(np.abs(matrix), axis=1, keepdims=True)
    scaled = matrix / np.where(scales > 0, scales, 1.0)
    cell_w = max(0.45, 0.09 * max(len(t) for t in tokens) + 0.15)
    cell_h = 0.32
    label_room = 0.25 + 0.075 * max(len(name) for name, _ in panels)
    top_room = 0.35 + 0.09 * max(len(t) for t in tokens) + (0.3 if title else 0.0)
    width = max(label_room + cell_w * len(tokens) + 1.4, 0.075 * len(title) + 0.4)
    height = top_room + cell_h * len(panels) + 0.3
    figure = _new_figure(width, height)
    axes = figure.add_axes(
        (label_room / width, 0.3 / height, cell_w * len(tokens) / width, cell_h * len(panels) / height)
    )
    image = axes.imshow(
        scaled, cmap=colormaps["RdBu_r"], vmin=-1.0, vmax=1.0, aspect="auto", interpolation="nearest"
    )
    axes.set_yticks(np.arange(len(panels)), [name for name, _ in panels], fontsize=8)
    axes.set_xticks(np.arange(len(tokens)), list(tokens), fontsize=9, rotation=45, ha="left")
    axes.xaxis.tick_top()
    for row in range(matrix.shape[0]):
        for column in range(matrix.shape[1]):
            colour = "white" if abs(scaled[row, column]) > 0.6 else "black"
            axes.text(
                column, row, f"{matrix[row, column]:.2g}", ha="center", va="center", fontsize=6, color=colour
            )
    colorbar_axes = figure.add_axes(
        (
            (label_room + cell_w * len(tokens) + 0.2) / width,
            0.3 / height,
            0.16 / width,
            cell_h * len(panels) / height,
        )
    )
    colorbar = figure.colorbar(image, cax=colorbar_axes)
    colorbar.set_label("attribution / max |attribution| of its row", fontsize=7)
    colorbar.ax.tick_params(labelsize=7)
    if title:
        figure.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    return _save(figure, path)
