"""A run's evaluation as the pages and the API read it: the eval set (held out of the dataset or a separate file),
the last and the best eval loss, and which step's weights became the result. Read from the run's columns only (metrics, summary, config)."""

from __future__ import annotations

from dataclasses import dataclass

from projects.datasets.eval_split import describe_eval_file, describe_split, eval_size
from projects.models import TrainingRun
from projects.runs.columns import RunSummary, read_eval_points
from projects.runs.config import RunConfig, run_config


@dataclass(frozen=True)
class EvalOverview:
    enabled: bool
    source: str  # "file" (a separate eval file), "fraction" (a seeded share of the dataset) or "none"
    # "12 of 120 rows (10%), picked with seed 42, held out of training" or "separate file /data/eval.jsonl, 30 rows"
    split: str
    eval_rows: int | None
    eval_steps: int
    last_step: int | None
    last_eval_loss: float | None
    last_perplexity: float | None
    best_step: int | None
    best_eval_loss: float | None
    keep_best: bool
    result_step: int | None  # the step whose weights are the result, once training finished
    kept_best: bool  # the result is an earlier evaluation's checkpoint


def eval_overview(run: TrainingRun, config: RunConfig | None = None) -> EvalOverview:
    config = config or run_config(run)
    values = config.values
    points = read_eval_points(run.metrics)
    summary = RunSummary.read(run.summary)
    last = points[-1] if points else None
    best = min(points, key=lambda point: point.eval_loss or 0.0) if points else None
    rows = config.dataset_rows
    trainable_rows = None if rows is None else rows - (1 if config.held_out_row else 0)
    if config.eval_dataset_path:
        source, split = "file", describe_eval_file(config.eval_dataset_path, config.eval_dataset_rows)
        eval_rows = config.eval_dataset_rows
    else:
        source = "fraction" if values.eval_fraction > 0 else "none"
        split = describe_split(trainable_rows, values.eval_fraction, values.seed)
        eval_rows = None if trainable_rows is None else eval_size(trainable_rows, values.eval_fraction)
    return EvalOverview(
        enabled=source != "none",
        source=source,
        split=split,
        eval_rows=eval_rows,
        eval_steps=values.eval_steps,
        last_step=last.step if last else None,
        last_eval_loss=last.eval_loss if last else summary.eval_loss,
        last_perplexity=last.perplexity if last else None,
        best_step=summary.best_eval_step if summary.best_eval_step is not None else (best.step if best else None),
        best_eval_loss=summary.best_eval_loss
        if summary.best_eval_loss is not None
        else (best.eval_loss if best else None),
        keep_best=values.keep_best_eval,
        result_step=summary.result_step,
        kept_best=summary.kept_best,
    )
