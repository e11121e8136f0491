"""The compare page's chart: several runs' loss curves on one pair of axes. Every text it writes is escaped."""

from __future__ import annotations

from html import escape
from typing import Any

from projects.runs.charts.axes import (
    HEIGHT,
    PAD_BOTTOM,
    PAD_LEFT,
    PAD_RIGHT,
    PAD_TOP,
    WIDTH,
    axis_labels_svg,
    fit_axes,
    frame_svg,
    ticks_svg,
)
from projects.runs.charts.legend import legend_svg
from projects.runs.charts.loss import eval_series, loss_series


def compare_chart_svg(series: list[tuple[str, Any]], width: int = WIDTH, height: int = HEIGHT) -> str:
    """Several runs' curves on one pair of axes: each run's training loss (solid) and eval loss (dashed) in its
    own colour (CSS classes series-0 .. series-4), with a key. `series` is (label, stored metrics) per run."""
    curves = []
    for index, (label, metrics) in enumerate(series):
        curves.append((index, label, "train", loss_series(metrics)))
        curves.append((index, label, "eval", eval_series(metrics)))
    values = [pair for _, _, _, pairs in curves for pair in pairs]
    bottom, right = height - PAD_BOTTOM, width - PAD_RIGHT
    title = "Training and eval loss of runs " + ", ".join(label for label, _ in series)
    parts = [
        f'<svg class="loss-chart compare-chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        *frame_svg(width, height),
    ]
    if not values:
        parts.append(
            f'<text class="empty" x="{(PAD_LEFT + right) / 2:.0f}" y="{(PAD_TOP + bottom) / 2:.0f}" '
            'text-anchor="middle">None of these runs reported a loss.</text></svg>'
        )
        return "".join(parts)
    axes = fit_axes(values, width, height)
    parts.extend(ticks_svg(axes))
    parts.extend(axis_labels_svg(width, height, "loss"))
    keys = []
    for index, label, kind, pairs in curves:
        if not pairs:
            continue
        css = f"series-{index % 5}" + (" series-eval" if kind == "eval" else "")
        points = " ".join(f"{axes.x_of(s):.1f},{axes.y_of(v):.1f}" for s, v in pairs)
        parts.append(f'<polyline class="{css}" fill="none" points="{points}" data-run="{escape(label)}"/>')
        keys.append((css, label, " eval loss" if kind == "eval" else " training loss"))
    parts.append(legend_svg(right, keys, width=260))
    parts.append("</svg>")
    return "".join(parts)
