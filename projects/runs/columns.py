"""The typed shapes of a run's JSON columns: progress, metrics and the validation report.

The worker writes each column through its model (`model_dump()`), and every reader (the run page, the loss
chart, the API) parses the stored JSON with the same model. Reading is forgiving, because a row may predate a
field or have been written by hand: a value of the wrong type or a number that is not finite reads as null
(0.0 for a check's seconds), and a list entry that is not an object is skipped. Plain pydantic, no Django.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from mtm.shared.text import storable

# The post-training checks, in the order they run, with the label the run page shows.
CHECK_LABELS = {
    "files": "File checks",
    "json": "Format validation (JSON)",
    "load": "Loading test",
    "inference": "Inference test",
}
# A DPO run adds its preference check after the four.
EXTRA_CHECK_LABELS = {"preference": "Preference check (DPO)"}


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _whole(value: Any) -> int | None:
    number = _finite(value)
    return int(number) if number is not None and number.is_integer() else None


def _text(value: Any) -> str:
    return "" if value is None else storable(str(value))


def _objects(value: Any) -> list[Any]:
    """The entries of a stored list that are objects (or already parsed models); the rest are skipped."""
    return [item for item in value if isinstance(item, dict | BaseModel)] if isinstance(value, list) else []


Number = Annotated[float | None, BeforeValidator(_finite)]
WholeNumber = Annotated[int | None, BeforeValidator(_whole)]
Seconds = Annotated[float, BeforeValidator(lambda value: _finite(value) or 0.0)]
Text = Annotated[str, BeforeValidator(_text)]
Flag = Annotated[bool, BeforeValidator(bool)]


class RunProgress(BaseModel):
    """Where training is: the latest progress event. `loss` and `learning_rate` are the last logged values;
    `eta_seconds` is null until two steps have run."""

    step: WholeNumber = None
    total_steps: WholeNumber = None
    epoch: Number = None
    loss: Number = None
    learning_rate: Number = None
    tokens_per_second: Number = None
    eta_seconds: Number = None

    @classmethod
    def read(cls, stored: Any) -> RunProgress:
        return cls.model_validate(stored if isinstance(stored, dict) else {})

    @property
    def started(self) -> bool:
        return self.step is not None

    @property
    def percent(self) -> float | None:
        if self.step is None or not self.total_steps:
            return None
        return max(0.0, min(100.0, self.step / self.total_steps * 100))


# The extra series a DPO run's metric points carry (TRL's reward metrics), stored only when reported.
DPO_SERIES = ("reward_margin", "reward_accuracy", "reward_chosen", "reward_rejected")


class MetricPoint(BaseModel):
    """One point of the loss curve: a logging step. A DPO run's points carry its reward metrics too, each a
    finite number and present only when reported: reward_margin (chosen reward - rejected reward, the mean over the
    step's pairs), reward_accuracy (the share of pairs whose chosen reward is higher), reward_chosen and
    reward_rejected."""

    model_config = ConfigDict(extra="allow")

    step: WholeNumber = None
    loss: Number = None
    learning_rate: Number = None
    tokens_per_second: Number = None

    @model_validator(mode="before")
    @classmethod
    def _known_series_only(cls, data: Any) -> Any:
        """Of the keys beyond the four, only the DPO series with a finite value are kept."""
        if not isinstance(data, dict):
            return data
        kept = {key: data[key] for key in ("step", "loss", "learning_rate", "tokens_per_second") if key in data}
        kept.update({key: value for key in DPO_SERIES if (value := _finite(data.get(key))) is not None})
        return kept

    def series(self, name: str) -> float | None:
        """A DPO series' value at this point (None when not reported)."""
        return (self.model_extra or {}).get(name)


class EvalPoint(BaseModel):
    """One evaluation of the eval set during training. Kept in the same metrics column as the loss points; an entry
    with an "eval_loss" key is an evaluation."""

    step: WholeNumber = None
    eval_loss: Number = None
    perplexity: Number = None


def _is_evaluation(entry: Any) -> bool:
    return isinstance(entry, EvalPoint) or (isinstance(entry, dict) and "eval_loss" in entry)


def read_metrics(stored: Any) -> list[MetricPoint]:
    """The loss points of the stored metrics (evaluations left out)."""
    return [MetricPoint.model_validate(point) for point in _objects(stored) if not _is_evaluation(point)]


def read_eval_points(stored: Any) -> list[EvalPoint]:
    """The evaluations of the stored metrics that have a loss, in step order."""
    points = [EvalPoint.model_validate(point) for point in _objects(stored) if _is_evaluation(point)]
    points = [point for point in points if point.step is not None and point.eval_loss is not None]
    return sorted(points, key=lambda point: point.step or 0)


class RunSummary(BaseModel):
    """What a finished training reported: the trainer's final metrics (its "finished" event)."""

    global_step: WholeNumber = None
    train_loss: Number = None
    final_loss: Number = None
    train_runtime: Number = None
    real_tokens: WholeNumber = None
    tokens_per_second: Number = None
    steady_tokens_per_second: Number = None
    eval_loss: Number = None
    best_eval_step: WholeNumber = None
    best_eval_loss: Number = None
    result_step: WholeNumber = None

    @classmethod
    def read(cls, stored: Any) -> RunSummary:
        return cls.model_validate(stored if isinstance(stored, dict) else {})

    @property
    def kept_best(self) -> bool:
        """The result is an earlier evaluation's checkpoint, not the last step's model."""
        return self.result_step is not None and self.global_step is not None and self.result_step < self.global_step


class ValidationCheck(BaseModel):
    name: Text = Field("", description="files, json, load, inference or (DPO) preference")
    passed: Flag = False
    detail: Text = ""
    warning: Text = Field("", description="Passed, but something looks wrong (e.g. a very repetitive sample).")
    seconds: Seconds = 0.0

    @property
    def label(self) -> str:
        return CHECK_LABELS.get(self.name) or EXTRA_CHECK_LABELS.get(self.name, self.name or "check")


class PreferenceResult(BaseModel):
    """The DPO preference check: on `pairs` held-out pairs, the share whose chosen answer the model finds more
    likely than the rejected one (summed log-probability), with the base model (before) and the tuned one (after)."""

    pairs: WholeNumber = None
    before: Number = None
    after: Number = None
    margin_before: Number = None  # mean log-probability of chosen minus rejected
    margin_after: Number = None


class PromptPair(BaseModel):
    """One eval prompt answered greedily by the base model and by the fine-tuned one."""

    prompt: Text = ""
    reference: Annotated[str | None, BeforeValidator(lambda value: value if isinstance(value, str) else None)] = None
    base: Text = ""
    tuned: Text = ""


class BeforeAfter(BaseModel):
    """Base model vs fine-tuned model on the run's eval set: eval loss of each, and answers side by side."""

    eval_rows: WholeNumber = None
    base_eval_loss: Number = None
    tuned_eval_loss: Number = None
    base_perplexity: Number = None
    tuned_perplexity: Number = None
    pairs: Annotated[list[PromptPair], BeforeValidator(_objects)] = Field(default_factory=list)
    detail: Text = Field("", description="Why part of it is missing (e.g. the base model did not load).")
    seconds: Seconds = 0.0


class ValidationReport(BaseModel):
    """The post-training validation: the four checks, what the model answered to the prompt, and (with eval
    prompts or an eval set) the base model and the fine-tuned one side by side."""

    passed: Flag = False
    preference: Annotated[
        PreferenceResult | None, BeforeValidator(lambda value: value if isinstance(value, dict | BaseModel) else None)
    ] = None
    checks: Annotated[list[ValidationCheck], BeforeValidator(_objects)] = Field(default_factory=list)
    sample_output: Text = ""
    prompt: Annotated[
        str | None, BeforeValidator(lambda value: storable(value) if isinstance(value, str) else None)
    ] = None
    before_after: Annotated[
        BeforeAfter | None, BeforeValidator(lambda value: value if isinstance(value, dict | BaseModel) else None)
    ] = None

    @classmethod
    def read(cls, stored: Any) -> ValidationReport | None:
        """The stored report, or None when the run has none (it ended before validation)."""
        return cls.model_validate(stored) if isinstance(stored, dict) else None

    @property
    def warnings(self) -> list[str]:
        return [check.warning for check in self.checks if check.warning]

    @property
    def first_failure(self) -> ValidationCheck | None:
        return next((check for check in self.checks if not check.passed), None)
