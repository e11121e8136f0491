"""The run page's DPO curves: each reward metric of the logged points drawn as the loss chart draws the loss.

Pure Python; the SVG comes from projects.runs.charts.loss, which escapes every text it writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from projects.runs.charts.loss import loss_chart_svg
from projects.runs.columns import read_metrics

# Drawn at about the size a half-width column shows it, so its labels stay legible (a 960-wide chart shrunk into
# a column made them about 4 px high).
CHART_WIDTH = 480
CHART_HEIGHT = 240


@dataclass(frozen=True)
class Series:
    field: str  # the MetricPoint field
    name: str
    axis: str
    reading: str  # how to read it, one line under the chart


SERIES = (
    Series(
        "reward_margin",
        "Reward margin",
        "margin",
        "Chosen reward minus rejected reward, averaged over a step's pairs: rising means the model separates them.",
    ),
    Series(
        "reward_accuracy",
        "Reward accuracy",
        "accuracy",
        "Share of a step's pairs whose chosen answer gets the higher reward (0.5 is chance, 1 is every pair).",
    ),
    Series(
        "reward_chosen",
        "Chosen reward",
        "reward",
        "beta times how much more likely the chosen answers are than under the reference (the base model).",
    ),
    Series(
        "reward_rejected",
        "Rejected reward",
        "reward",
        "The same for the rejected answers: it usually falls while the chosen reward holds or rises.",
    ),
)


@dataclass(frozen=True)
class DpoChart:
    series: Series
    svg: str  # escaped; safe to embed


def dpo_charts(metrics: Any, resumed_at: int | None = None) -> list[DpoChart]:
    """A chart for each DPO series the run's points carry; none for an SFT run."""
    points = read_metrics(metrics)
    charts = []
    for series in SERIES:
        values = [
            {"step": p.step, "loss": p.series(series.field)} for p in points if p.series(series.field) is not None
        ]
        if values:
            svg = loss_chart_svg(
                values,
                width=CHART_WIDTH,
                height=CHART_HEIGHT,
                resumed_at=resumed_at,
                name=series.name,
                axis=series.axis,
            )
            charts.append(DpoChart(series, svg))
    return charts
