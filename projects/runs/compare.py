"""Comparing 2 to 5 runs: which runs a member picked (checked, and only runs they may see), what differs in their
settings, and their curves, final metrics, throughput, duration and validation side by side. The page and the API
both read a `Comparison`; a bad selection is a `CompareRefused` with a Problem a person can act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils import timezone
from pydantic import BaseModel, Field

from mtm.shared.problems import Problem
from projects.access import visible_runs
from projects.models import TrainingRun
from projects.runs.columns import RunProgress, RunSummary, ValidationReport, read_eval_points, read_metrics
from projects.runs.config import RunConfig, config_rows, run_config
from projects.runs.display import before_after_short_label, eval_set_text, format_seconds
from projects.runs.evaluation import EvalOverview, eval_overview

MIN_RUNS = 2
MAX_RUNS = 5
MAX_SELECTION_CHARS = 200  # five ids and their commas are far shorter: anything longer is not a selection
PICK_HINT = (
    "Tick 2 to 5 runs on the Runs page (/projects/runs/) and press Compare selected, or ask for e.g. ?runs=12&runs=15."
)
NOT_COMPARED = {"resolved_path"}  # differs whenever the revision does


class CompareRefused(Exception):
    def __init__(self, problem: Problem, status: int) -> None:
        super().__init__(problem.message)
        self.problem = problem
        self.status = status


def parse_selection(values: list[str]) -> list[int]:
    """Run ids from the query: `runs=12,15` or `runs=12&runs=15` (duplicates counted once), in the order given."""
    raw = ",".join(values)
    if len(raw) > MAX_SELECTION_CHARS:
        raise CompareRefused(
            Problem("invalid_selection", f"The selection of runs is {len(raw)} characters long.", PICK_HINT), 422
        )
    tokens = [token.strip() for token in raw.split(",") if token.strip()]
    bad = next((token for token in tokens if not (token.isdigit() and len(token) < 19)), None)
    if bad is not None:
        shown = bad if len(bad) <= 40 else bad[:37] + "..."
        raise CompareRefused(Problem("invalid_run_id", f"{shown!r} is not a run id (a run's number).", PICK_HINT), 422)
    ids = list(dict.fromkeys(int(token) for token in tokens))
    if not MIN_RUNS <= len(ids) <= MAX_RUNS:
        picked = "no run was" if not ids else ("1 run was" if len(ids) == 1 else f"{len(ids)} runs were")
        raise CompareRefused(
            Problem(
                "wrong_number_of_runs", f"Compare needs {MIN_RUNS} to {MAX_RUNS} runs; {picked} picked.", PICK_HINT
            ),
            422,
        )
    return ids


def select_runs(user: Any, ids: list[int]) -> list[TrainingRun]:
    """The runs, in the order asked for. A run that does not exist and one `user` may not see are refused with the
    same message, so the answer never tells whether another member's run exists."""
    found = {run.pk: run for run in visible_runs(user).filter(pk__in=ids)}
    missing = [run_id for run_id in ids if run_id not in found]
    if missing:
        names = ", ".join(f"#{run_id}" for run_id in missing)
        raise CompareRefused(
            Problem("run_not_found", f"No run {names} that you can see.", "Check the numbers; " + PICK_HINT), 404
        )
    return [found[run_id] for run_id in ids]


@dataclass
class ComparedRun:
    run: TrainingRun
    index: int  # its colour in the chart
    config: RunConfig
    summary: RunSummary
    evaluation: EvalOverview
    validation: ValidationReport | None
    final_loss: float | None
    tokens_per_second: float | None
    duration_seconds: float | None

    @property
    def label(self) -> str:
        return f"#{self.run.pk} {self.run.project.name}"

    @property
    def duration(self) -> str:
        return format_seconds(self.duration_seconds)

    @property
    def eval_set(self) -> str:
        return eval_set_text(self.evaluation.source, self.evaluation.split)

    @property
    def before_after_label(self) -> str:
        return before_after_short_label(self.evaluation.source)

    @property
    def validation_result(self) -> str:
        if self.validation is None:
            return "not validated"
        if not self.validation.passed:
            return "failed"
        return "passed with a warning" if self.validation.warnings else "passed"


class Difference(BaseModel):
    """A setting that is not the same for every compared run; its JSON (model_dump) is in the API's answer."""

    key: str
    label: str
    values: list[str] = Field(description="The shown value of each run, in the order of `runs`.")


@dataclass
class Comparison:
    runs: list[ComparedRun]
    differences: list[Difference]
    same: int  # settings that are the same for every run

    @property
    def ids(self) -> str:
        return ",".join(str(item.run.pk) for item in self.runs)


def _compared(run: TrainingRun, index: int) -> ComparedRun:
    config = run_config(run)
    summary = RunSummary.read(run.summary)
    losses = [point.loss for point in read_metrics(run.metrics) if point.loss is not None]
    progress = RunProgress.read(run.progress)
    duration = None
    if run.started_at is not None:
        duration = ((run.finished_at or timezone.now()) - run.started_at).total_seconds()
    return ComparedRun(
        run=run,
        index=index,
        config=config,
        summary=summary,
        evaluation=eval_overview(run, config),
        validation=ValidationReport.read(run.validation),
        final_loss=summary.final_loss if summary.final_loss is not None else (losses[-1] if losses else None),
        tokens_per_second=summary.tokens_per_second
        if summary.tokens_per_second is not None
        else progress.tokens_per_second,
        duration_seconds=duration,
    )


def differences(runs: list[ComparedRun]) -> tuple[list[Difference], int]:
    """The settings whose shown value is not the same for every run (a setting one run's method has and another's
    has not reads "(does not apply)"), and how many are the same."""
    tables = [{row.key: row for row in config_rows(item.run, item.config)} for item in runs]
    keys: dict[str, str] = {}
    for table in tables:
        for key, row in table.items():
            if key not in NOT_COMPARED:
                keys.setdefault(key, row.label)
    found, same = [], 0
    for key, label in keys.items():
        values = [table[key].value if key in table else "(does not apply)" for table in tables]
        if len(set(values)) > 1:
            found.append(Difference(key=key, label=label, values=values))
        else:
            same += 1
    return found, same


def compare(user: Any, values: list[str]) -> Comparison:
    """The comparison of the runs the query names; CompareRefused for a bad selection."""
    runs = [_compared(run, index) for index, run in enumerate(select_runs(user, parse_selection(values)))]
    found, same = differences(runs)
    return Comparison(runs=runs, differences=found, same=same)


def comparison_dict(comparison: Comparison) -> dict[str, Any]:
    """The API's answer (projects.schemas.ComparisonOut)."""
    return {
        "runs": [
            {
                "id": item.run.pk,
                "project_id": item.run.project_id,
                "project_name": item.run.project.name,
                "status": item.run.status,
                "method": item.config.method,
                "model_name": item.config.model_name,
                "final_loss": item.final_loss,
                "eval_loss": item.evaluation.last_eval_loss,
                "perplexity": item.evaluation.last_perplexity,
                "best_eval_step": item.evaluation.best_step,
                "best_eval_loss": item.evaluation.best_eval_loss,
                "result_step": item.evaluation.result_step,
                "tokens_per_second": item.tokens_per_second,
                "duration_seconds": item.duration_seconds,
                "summary": item.summary.model_dump(),
                "validation": None if item.validation is None else item.validation.model_dump(),
                "metrics": [point.model_dump() for point in read_metrics(item.run.metrics)],
                "eval_metrics": [point.model_dump() for point in read_eval_points(item.run.metrics)],
            }
            for item in comparison.runs
        ],
        "differences": [diff.model_dump() for diff in comparison.differences],
        "same_settings": comparison.same,
    }
