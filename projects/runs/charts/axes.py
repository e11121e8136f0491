"""The axes every chart draws on: steps across, a value up; the range the values span, round tick values, their
labels, and the SVG of the frame, grid and ticks. Pure Python; every text written to the SVG is escaped here."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

WIDTH = 960
HEIGHT = 280
PAD_LEFT = 56
PAD_RIGHT = 16
PAD_TOP = 14
PAD_BOTTOM = 36


@dataclass
class Tick:
    position: float  # pixel coordinate along its axis
    label: str


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


def number_label(value: float, digits: int = 3) -> str:
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
        labels = [number_label(value, digits) for value in values]
        if len(set(labels)) == len(labels):
            return labels
    return [repr(value) for value in values]


@dataclass(frozen=True)
class Axes:
    """A plot of `width` x `height` pixels whose steps run from x_low to x_high and values from y_low to y_high."""

    x_low: float
    x_high: float
    y_low: float
    y_high: float
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def bottom(self) -> int:
        return self.height - PAD_BOTTOM

    @property
    def right(self) -> int:
        return self.width - PAD_RIGHT

    def x_of(self, step: float) -> float:
        return PAD_LEFT + (step - self.x_low) / (self.x_high - self.x_low) * (self.right - PAD_LEFT)

    def y_of(self, value: float) -> float:
        return PAD_TOP + (self.y_high - value) / (self.y_high - self.y_low) * (self.bottom - PAD_TOP)

    def x_ticks(self) -> list[Tick]:
        values = nice_ticks(self.x_low, self.x_high, 5, whole=True)
        return [Tick(self.x_of(v), label) for v, label in zip(values, distinct_labels(values), strict=True)]

    def y_ticks(self) -> list[Tick]:
        values = nice_ticks(self.y_low, self.y_high, 4)
        return [Tick(self.y_of(v), label) for v, label in zip(values, distinct_labels(values), strict=True)]


def fit_axes(points: list[tuple[float, float]], width: int = WIDTH, height: int = HEIGHT) -> Axes:
    """Axes that hold every (step, value) of `points` (at least one): the steps edge to edge (a single step gets one
    on each side), the values with 5 % room above and below (a single value gets 10 % of itself, or 1)."""
    steps, values = [s for s, _ in points], [v for _, v in points]
    x_low, x_high = min(steps), max(steps)
    y_low, y_high = min(values), max(values)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    margin = (y_high - y_low) * 0.05 if y_high > y_low else abs(y_low) * 0.1 or 1.0
    return Axes(x_low, x_high, y_low - margin, y_high + margin, width, height)


def frame_svg(width: int, height: int) -> list[str]:
    """The two axis lines (drawn for an empty chart too)."""
    bottom = height - PAD_BOTTOM
    return [
        f'<line class="axis" x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{PAD_LEFT}" y2="{bottom}"/>',
        f'<line class="axis" x1="{PAD_LEFT}" y1="{bottom}" x2="{width - PAD_RIGHT}" y2="{bottom}"/>',
    ]


def ticks_svg(axes: Axes) -> list[str]:
    """A grid line and a label at each value tick, a mark and a label at each step tick."""
    parts = []
    for tick in axes.y_ticks():
        parts.append(
            f'<line class="grid" x1="{PAD_LEFT}" y1="{tick.position:.1f}" x2="{axes.right}" y2="{tick.position:.1f}"/>'
        )
        parts.append(
            f'<text class="tick" x="{PAD_LEFT - 6}" y="{tick.position + 4:.1f}" text-anchor="end">'
            f"{escape(tick.label)}</text>"
        )
    for tick in axes.x_ticks():
        parts.append(
            f'<line class="tick-mark" x1="{tick.position:.1f}" y1="{axes.bottom}" x2="{tick.position:.1f}" '
            f'y2="{axes.bottom + 4}"/>'
        )
        parts.append(
            f'<text class="tick" x="{tick.position:.1f}" y="{axes.bottom + 16}" text-anchor="middle">'
            f"{escape(tick.label)}</text>"
        )
    return parts


def axis_labels_svg(width: int, height: int, value_name: str) -> list[str]:
    """ "step" under the steps, `value_name` up the side."""
    bottom, right = height - PAD_BOTTOM, width - PAD_RIGHT
    middle = (PAD_TOP + bottom) / 2
    return [
        f'<text class="axis-label" x="{(PAD_LEFT + right) / 2:.0f}" y="{height - 4}" text-anchor="middle">step</text>',
        f'<text class="axis-label" x="12" y="{middle:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {middle:.0f})">{escape(value_name)}</text>',
    ]
