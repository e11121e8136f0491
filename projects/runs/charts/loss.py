"""The run page's loss chart: metrics in, an inline SVG out. Pure Python, no chart library, no JavaScript.

Every piece of text that reaches the SVG is escaped here, so the result may be marked safe by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Any

from projects.runs.charts.axes import (
    HEIGHT,
    PAD_BOTTOM,
    PAD_LEFT,
    PAD_RIGHT,
    PAD_TOP,
    WIDTH,
    Tick,
    axis_labels_svg,
    fit_axes,
    frame_svg,
    number_label,
    ticks_svg,
)
from projects.runs.charts.legend import legend_svg
from projects.runs.columns import read_eval_points, read_metrics

MAX_POINTS = 600  # more points than pixels only makes the page heavier


@dataclass
class LossChart:
    """What the SVG is drawn from: useful on its own for tests and for other renderers."""

    points: list[tuple[float, float]] = field(default_factory=list)  # pixel (x, y) of each loss value
    eval_points: list[tuple[float, float]] = field(default_factory=list)  # pixel (x, y) of each eval loss
    last_eval_loss: float | None = None
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    first_loss: float | None = None
    last_loss: float | None = None
    last_step: int | None = None
    resume_x: float | None = None  # pixel x of the step a resumed run continued from
    resume_step: int | None = None
    ticks: list[str] = field(default_factory=list)  # the SVG of the grid and the ticks

    @property
    def empty(self) -> bool:
        return not self.points

    @property
    def polyline(self) -> str:
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in self.points)

    @property
    def eval_polyline(self) -> str:
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in self.eval_points)


def loss_series(metrics: Any) -> list[tuple[float, float]]:
    """(step, loss) pairs of the stored metrics points that have both, in step order."""
    points = read_metrics(metrics)
    pairs = [(float(p.step), p.loss) for p in points if p.step is not None and p.loss is not None]
    pairs.sort(key=lambda pair: pair[0])
    if len(pairs) > MAX_POINTS:
        stride = math.ceil(len(pairs) / MAX_POINTS)
        pairs = pairs[::stride] + ([pairs[-1]] if (len(pairs) - 1) % stride else [])
    return pairs


def eval_series(metrics: Any) -> list[tuple[float, float]]:
    """(step, eval loss) pairs of the stored metrics' evaluation points, in step order."""
    return [(float(p.step), p.eval_loss) for p in read_eval_points(metrics) if p.eval_loss is not None]


def build_loss_chart(
    metrics: Any, width: int = WIDTH, height: int = HEIGHT, resumed_at: int | None = None
) -> LossChart:
    pairs = loss_series(metrics)
    evals = eval_series(metrics)
    chart = LossChart()
    if not pairs:
        return chart
    axes = fit_axes(pairs + evals, width, height)
    chart.points = [(axes.x_of(s), axes.y_of(v)) for s, v in pairs]
    chart.eval_points = [(axes.x_of(s), axes.y_of(v)) for s, v in evals]
    chart.last_eval_loss = evals[-1][1] if evals else None
    chart.x_ticks, chart.y_ticks, chart.ticks = axes.x_ticks(), axes.y_ticks(), ticks_svg(axes)
    chart.first_loss, chart.last_loss, chart.last_step = pairs[0][1], pairs[-1][1], int(pairs[-1][0])
    if resumed_at is not None and axes.x_low <= resumed_at <= axes.x_high:
        chart.resume_x, chart.resume_step = axes.x_of(resumed_at), resumed_at
    return chart


def loss_chart_svg(
    metrics: Any,
    width: int = WIDTH,
    height: int = HEIGHT,
    resumed_at: int | None = None,
    *,
    name: str = "Training loss",
    axis: str = "loss",
) -> str:
    """The loss over the steps as an inline SVG element (escaped; safe to embed as HTML). `resumed_at`: the step a
    resumed run continued from, marked with a labelled line (the points before it are the earlier run's). `name`
    and `axis` label another series drawn the same way (its values given as the points' "loss")."""
    chart = build_loss_chart(metrics, width, height, resumed_at)
    bottom, right = height - PAD_BOTTOM, width - PAD_RIGHT
    title = (
        f"{name}: no values reported yet"
        if chart.empty
        else f"{name} from {number_label(chart.first_loss)} to {number_label(chart.last_loss)} at step {chart.last_step}"
    )
    if chart.last_eval_loss is not None:
        title += f"; eval loss {number_label(chart.last_eval_loss)} at the last evaluation"
    parts = [
        f'<svg class="loss-chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        *frame_svg(width, height),
    ]
    if chart.empty:
        parts.append(
            f'<text class="empty" x="{(PAD_LEFT + right) / 2:.0f}" y="{(PAD_TOP + bottom) / 2:.0f}" '
            'text-anchor="middle">No loss values yet: they appear once training reports its first steps.</text>'
        )
    parts.extend(chart.ticks)
    parts.extend(axis_labels_svg(width, height, axis))
    if chart.resume_x is not None:
        parts.append(
            f'<line class="resume-mark" x1="{chart.resume_x:.1f}" y1="{PAD_TOP}" x2="{chart.resume_x:.1f}" '
            f'y2="{bottom}" stroke-dasharray="4 3"/>'
        )
        parts.append(
            f'<text class="resume-label" x="{chart.resume_x + 4:.1f}" y="{PAD_TOP + 10}">'
            f"resumed at step {chart.resume_step}</text>"
        )
    if chart.points:
        parts.append(f'<polyline class="line" fill="none" points="{chart.polyline}"/>')
        x, y = chart.points[-1]
        parts.append(f'<circle class="last" cx="{x:.1f}" cy="{y:.1f}" r="3"/>')
    if chart.eval_points:
        parts.append(f'<polyline class="eval-line" fill="none" points="{chart.eval_polyline}"/>')
        parts.extend(f'<circle class="eval-point" cx="{x:.1f}" cy="{y:.1f}" r="3"/>' for x, y in chart.eval_points)
        parts.append(legend_svg(right, [("line", "training loss", ""), ("eval-line", "eval loss", "")]))
    parts.append("</svg>")
    return "".join(parts)
