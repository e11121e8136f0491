"""The run page's loss chart: metrics in, an inline SVG out. Pure Python, no chart library, no JavaScript.

Every piece of text that reaches the SVG is escaped here, so the result may be marked safe by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Any

from projects.runs.columns import read_eval_points, read_metrics

WIDTH = 960
HEIGHT = 280
PAD_LEFT = 56
PAD_RIGHT = 16
PAD_TOP = 14
PAD_BOTTOM = 36
MAX_POINTS = 600  # more points than pixels only makes the page heavier


@dataclass
class Tick:
    position: float  # pixel coordinate along its axis
    label: str


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


def nice_ticks(low: float, high: float, count: int = 4, *, whole: bool = False) -> list[float]:
    """About `count` round values (1, 2, 2.5 or 5 times a power of ten) covering [low, high]; with `whole`,
    whole numbers only (for steps)."""
    if high <= low:
        return [low]
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    multiples = (1, 2, 2.5, 5, 10)
    if whole:
        magnitude = max(magnitude, 1)
        multiples = (1, 2, 5, 10) if magnitude == 1 else multiples
    step = min((m * magnitude for m in multiples), key=lambda candidate: abs(candidate - raw))
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _label(value: float, digits: int = 3) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 and float(value).is_integer() and abs(value) < 1e7:
        return f"{int(value):,}"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.{max(digits - 1, 2)}g}"
    return f"{value:.{digits}g}"


def distinct_labels(values: list[float]) -> list[str]:
    """Labels for tick values, with as many digits as it takes for no two to read the same."""
    for digits in range(3, 12):
        labels = [_label(value, digits) for value in values]
        if len(set(labels)) == len(labels):
            return labels
    return [repr(value) for value in values]


def build_loss_chart(
    metrics: Any, width: int = WIDTH, height: int = HEIGHT, resumed_at: int | None = None
) -> LossChart:
    pairs = loss_series(metrics)
    evals = eval_series(metrics)
    chart = LossChart()
    if not pairs:
        return chart
    steps, losses = [s for s, _ in pairs], [v for _, v in pairs]
    x_low, x_high = min(steps + [s for s, _ in evals]), max(steps + [s for s, _ in evals])
    y_low, y_high = min(losses + [v for _, v in evals]), max(losses + [v for _, v in evals])
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    if y_high == y_low:
        margin = abs(y_low) * 0.1 or 1.0
        y_low, y_high = y_low - margin, y_high + margin
    else:
        margin = (y_high - y_low) * 0.05
        y_low, y_high = y_low - margin, y_high + margin
    plot_w, plot_h = width - PAD_LEFT - PAD_RIGHT, height - PAD_TOP - PAD_BOTTOM

    def x_of(step: float) -> float:
        return PAD_LEFT + (step - x_low) / (x_high - x_low) * plot_w

    def y_of(loss: float) -> float:
        return PAD_TOP + (y_high - loss) / (y_high - y_low) * plot_h

    chart.points = [(x_of(s), y_of(v)) for s, v in pairs]
    chart.eval_points = [(x_of(s), y_of(v)) for s, v in evals]
    chart.last_eval_loss = evals[-1][1] if evals else None
    x_values, y_values = nice_ticks(x_low, x_high, 5, whole=True), nice_ticks(y_low, y_high, 4)
    chart.x_ticks = [Tick(x_of(v), label) for v, label in zip(x_values, distinct_labels(x_values), strict=True)]
    chart.y_ticks = [Tick(y_of(v), label) for v, label in zip(y_values, distinct_labels(y_values), strict=True)]
    chart.first_loss, chart.last_loss, chart.last_step = losses[0], losses[-1], int(steps[-1])
    if resumed_at is not None and x_low <= resumed_at <= x_high:
        chart.resume_x, chart.resume_step = x_of(resumed_at), resumed_at
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
        else f"{name} from {_label(chart.first_loss)} to {_label(chart.last_loss)} at step {chart.last_step}"
    )
    if chart.last_eval_loss is not None:
        title += f"; eval loss {_label(chart.last_eval_loss)} at the last evaluation"
    parts = [
        f'<svg class="loss-chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line class="axis" x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{PAD_LEFT}" y2="{bottom}"/>',
        f'<line class="axis" x1="{PAD_LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}"/>',
    ]
    if chart.empty:
        parts.append(
            f'<text class="empty" x="{(PAD_LEFT + right) / 2:.0f}" y="{(PAD_TOP + bottom) / 2:.0f}" '
            'text-anchor="middle">No loss values yet: they appear once training reports its first steps.</text>'
        )
    for tick in chart.y_ticks:
        parts.append(
            f'<line class="grid" x1="{PAD_LEFT}" y1="{tick.position:.1f}" x2="{right}" y2="{tick.position:.1f}"/>'
        )
        parts.append(
            f'<text class="tick" x="{PAD_LEFT - 6}" y="{tick.position + 4:.1f}" text-anchor="end">{escape(tick.label)}</text>'
        )
    for tick in chart.x_ticks:
        parts.append(
            f'<line class="tick-mark" x1="{tick.position:.1f}" y1="{bottom}" x2="{tick.position:.1f}" y2="{bottom + 4}"/>'
        )
        parts.append(
            f'<text class="tick" x="{tick.position:.1f}" y="{bottom + 16}" text-anchor="middle">{escape(tick.label)}</text>'
        )
    parts.append(
        f'<text class="axis-label" x="{(PAD_LEFT + right) / 2:.0f}" y="{height - 4}" text-anchor="middle">step</text>'
    )
    parts.append(
        f'<text class="axis-label" x="12" y="{(PAD_TOP + bottom) / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {(PAD_TOP + bottom) / 2:.0f})">{escape(axis)}</text>'
    )
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
        parts.append(_legend(right, [("line", "training loss"), ("eval-line", "eval loss")]))
    parts.append("</svg>")
    return "".join(parts)


def _legend(right: float, entries: list[tuple[str, str]], width: int = 150) -> str:
    """A small key in the top-right corner: a stroke of each series' class and its name."""
    box_height = len(entries) * 14 + 6
    # An opaque box under the key, so a curve that runs through the corner does not strike through its labels.
    parts = [
        '<g class="legend">',
        f'<rect class="legend-box" x="{right - width - 4}" y="{PAD_TOP}" width="{width + 4}" '
        f'height="{box_height}" rx="3"/>',
    ]
    for index, (css, name) in enumerate(entries):
        y = PAD_TOP + 8 + index * 14
        parts.append(f'<line class="{css}" x1="{right - width}" y1="{y}" x2="{right - width + 24}" y2="{y}"/>')
        parts.append(f'<text class="legend-label" x="{right - width + 30}" y="{y + 4}">{escape(name)}</text>')
    parts.append("</g>")
    return "".join(parts)


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
        f'<line class="axis" x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{PAD_LEFT}" y2="{bottom}"/>',
        f'<line class="axis" x1="{PAD_LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}"/>',
    ]
    if not values:
        parts.append(
            f'<text class="empty" x="{(PAD_LEFT + right) / 2:.0f}" y="{(PAD_TOP + bottom) / 2:.0f}" '
            'text-anchor="middle">None of these runs reported a loss.</text></svg>'
        )
        return "".join(parts)
    x_low, x_high = min(s for s, _ in values), max(s for s, _ in values)
    y_low, y_high = min(v for _, v in values), max(v for _, v in values)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    margin = (y_high - y_low) * 0.05 if y_high > y_low else abs(y_low) * 0.1 or 1.0
    y_low, y_high = y_low - margin, y_high + margin
    plot_w, plot_h = width - PAD_LEFT - PAD_RIGHT, height - PAD_TOP - PAD_BOTTOM

    def x_of(step: float) -> float:
        return PAD_LEFT + (step - x_low) / (x_high - x_low) * plot_w

    def y_of(loss: float) -> float:
        return PAD_TOP + (y_high - loss) / (y_high - y_low) * plot_h

    x_values, y_values = nice_ticks(x_low, x_high, 5, whole=True), nice_ticks(y_low, y_high, 4)
    for value, label in zip(y_values, distinct_labels(y_values), strict=True):
        y = y_of(value)
        parts.append(f'<line class="grid" x1="{PAD_LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}</text>')
    for value, label in zip(x_values, distinct_labels(x_values), strict=True):
        x = x_of(value)
        parts.append(f'<text class="tick" x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{escape(label)}</text>')
    parts.append(
        f'<text class="axis-label" x="{(PAD_LEFT + right) / 2:.0f}" y="{height - 4}" text-anchor="middle">step</text>'
    )
    keys = []
    for index, label, kind, pairs in curves:
        if not pairs:
            continue
        css = f"series-{index % 5}" + (" series-eval" if kind == "eval" else "")
        points = " ".join(f"{x_of(s):.1f},{y_of(v):.1f}" for s, v in pairs)
        name = f"{label} {'eval' if kind == 'eval' else 'training'} loss"
        parts.append(f'<polyline class="{css}" fill="none" points="{points}" data-run="{escape(label)}"/>')
        keys.append((css, name))
    parts.append(_legend(right + 20, keys, width=260))
    parts.append("</svg>")
    return "".join(parts)
