"""Training hyperparameters, each declared once: type, bounds, default, label, help, group.

Everything else derives from the declarations in `Hyperparameters`: the validation (pydantic's, on the model
itself), its errors as Problems a person can act on, each naming its field (`from_dict`), the project form's boxes
and fieldsets, the API schema (the model itself) and the labels of the project page (`HYPERPARAMETERS`). Adding a
hyperparameter is adding one field here.

Plain Python and pydantic (no Django, no torch): the form, the API and the trainer child process all use it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from annotated_types import Ge, Gt, Le
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo

from mtm.shared.problems import Problem
from workers.devices import MAX_DEVICES

ALL_LINEAR = "all-linear"
CODE = "invalid_hyperparameter"
MAX_TARGET_MODULES = 64  # real models name a handful (q_proj, v_proj, ...); more is a mistake or an attack
# The form's fieldsets, in page order; "lora" applies to LoRA only, "dpo" to the DPO objective only.
GROUPS = ("training", "checkpoints", "lora", "dpo")
Group = Literal["training", "checkpoints", "lora", "dpo"]


def _modules(raw: Any) -> str | list[str]:
    """'all-linear', or module names as a list or as text separated by commas."""
    if isinstance(raw, str):
        text = raw.strip()
        if text == ALL_LINEAR:
            return ALL_LINEAR
        raw = [part.strip() for part in text.split(",")]
    if not isinstance(raw, list) or not raw or len(raw) > MAX_TARGET_MODULES:
        raise ValueError(f"use '{ALL_LINEAR}' or a list of at most {MAX_TARGET_MODULES} module names")
    names = [item for item in raw if isinstance(item, str) and item.strip() and len(item) <= 128]
    if len(names) != len(raw) or not all(name.replace("_", "").replace(".", "").isalnum() for name in names):
        raise ValueError("module names are letters, digits, '_' and '.'")
    return [name.strip() for name in names]


Precision = Literal["auto", "bf16", "fp16", "fp32"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
ChatTemplate = Literal["model", "chatml"]  # the names of projects.datasets.chat_templates.BUILT_IN, and the model's own
TargetModules = str | list[str]
Objective = Literal["sft", "dpo"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
# The DPO losses offered, each with the line that explains it (TRL's names; TRL offers more).
DPO_LOSSES: dict[str, str] = {
    "sigmoid": "the original DPO loss, -log sigmoid(beta * margin)",
    "ipo": "IPO: pulls the margin towards 1/(2 beta) instead of ever higher, so clear-cut pairs overfit less",
    "hinge": "SLiC: a hinge on the margin; pairs already ahead by 1/beta stop pulling",
    "apo_zero": "APO-zero: pushes chosen up and rejected down in absolute terms; for chosen answers better than "
    "what the model writes now",
}
DpoLoss = Literal["sigmoid", "ipo", "hinge", "apo_zero"]


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}  # an unticked checkbox sends nothing, a cleared one ""


def _flag(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise ValueError("use true or false")


def _finite(raw: Any, parse: type) -> int | float:
    """A JSON number, or form text parsed with `parse` (int or float); never a bool, NaN or infinity."""
    if isinstance(raw, bool):
        raise ValueError("use a number, not true or false")
    if isinstance(raw, str):
        raw = parse(raw.strip())  # ValueError for text that is not a number
    if not isinstance(raw, (int, float)) or (isinstance(raw, float) and not math.isfinite(raw)):
        raise ValueError("use a finite number")
    return raw


def _whole(raw: Any) -> int:
    number = _finite(raw, int)
    if isinstance(number, float):
        if not number.is_integer():
            raise ValueError("use a whole number")
        return int(number)
    return number


def _real(raw: Any) -> float:
    try:
        return float(_finite(raw, float))
    except OverflowError:  # a whole number past the largest float (1 and 400 zeros): above every bound
        raise ValueError("use a number within the bounds") from None


def _choice(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError("use one of the names offered")
    return raw.strip().lower()


# What a box of each kind takes before pydantic checks type and bounds: JSON values and the form's text alike.
_PARSERS: dict[str, Any] = {"bool": _flag, "int": _whole, "float": _real, "choice": _choice, "modules": _modules}


def hyperparameter(
    default: Any,
    *,
    label: str,
    group: Group = "training",
    help: str = "",
    example: str = "",
    zero_means: str = "",
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
) -> Any:
    """One hyperparameter's declaration. `example` ends the hint of a refused value ("e.g. 3"); `zero_means` is
    what 0 stands for, shown next to it on the project page."""
    extra: dict[str, Any] = {"x-group": group}
    if example:
        extra["x-example"] = example
    if zero_means:
        extra["x-zero-means"] = zero_means
    return Field(default, gt=gt, ge=ge, le=le, title=label, description=help or None, json_schema_extra=extra)


class Hyperparameters(BaseModel):
    """The values training uses; in the order the project page lists them."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)

    objective: Objective = hyperparameter(
        "sft",
        label="Training objective",
        help="sft: learn the answers of the dataset (supervised fine-tuning); dpo: learn to prefer the chosen "
        "answer of each pair over the rejected one (Direct Preference Optimization, on a pairs dataset).",
        example="sft or dpo",
    )
    epochs: float = hyperparameter(3.0, gt=0, le=1000, label="Epochs", help="Passes over the dataset.", example="3")
    max_steps: int = hyperparameter(
        0,
        ge=0,
        le=10_000_000,
        label="Max steps",
        help="0: train for the epochs; more: stop after this many optimizer steps, whatever the epochs say "
        "(it overrides epochs).",
        zero_means="train for the epochs",
        example="0 (train for 'epochs') or 1000",
    )
    learning_rate: float = hyperparameter(
        2e-4,
        gt=0,
        le=1,
        label="Learning rate",
        help="e.g. 0.0002 for LoRA, 0.00002 for a full fine-tune.",
        example="0.0002 for LoRA or 0.00002 for a full fine-tune",
    )
    batch_size: int = hyperparameter(4, ge=1, le=4096, label="Batch size", example="4")
    gradient_accumulation_steps: int = hyperparameter(
        1, ge=1, le=1024, label="Gradient accumulation steps", example="1"
    )
    devices: int = hyperparameter(
        1,
        ge=1,
        le=MAX_DEVICES,
        label="Devices",
        help="GPUs one run trains on at once, on one host (data parallel, DDP): each device takes its own batch, so "
        "the effective batch is devices × batch size × gradient accumulation. The run waits for a worker that "
        "owns this many.",
        example="1, or 2 on a worker started with --gpus 0,1",
    )
    max_seq_length: int = hyperparameter(
        1024,
        ge=8,
        le=131_072,
        label="Max sequence length",
        help="Tokens per example; longer rows are truncated.",
        example="1024",
    )
    warmup_ratio: float = hyperparameter(0.0, ge=0, le=0.5, label="Warmup ratio", example="0.03")
    warmup_steps: int = hyperparameter(
        0,
        ge=0,
        le=1_000_000,
        label="Warmup steps",
        help="More than 0 wins over the warmup ratio.",
        zero_means="the warmup ratio applies",
        example="100",
    )
    weight_decay: float = hyperparameter(0.0, ge=0, le=1, label="Weight decay", example="0.01")
    seed: int = hyperparameter(42, ge=0, le=2**32 - 1, label="Seed", example="42")
    precision: Precision = hyperparameter(
        "auto", label="Precision", help="auto: bf16 on a GPU that supports it, else fp32.", example="auto"
    )
    chat_template: ChatTemplate = hyperparameter(
        "model",
        label="Chat template",
        help="For rows of chat messages: the template of the model itself, or ChatML for a base model without one.",
        example="chatml",
    )
    packing: bool = hyperparameter(
        False,
        label="Packing",
        help="Pack short examples together into full-length sequences (faster on short rows).",
    )
    gradient_checkpointing: bool = hyperparameter(
        False, label="Gradient checkpointing", help="Recompute activations in the backward pass: less memory, slower."
    )
    save_steps: int = hyperparameter(
        500, ge=1, le=10_000_000, group="checkpoints", label="Save a checkpoint every (steps)", example="500"
    )
    save_total_limit: int = hyperparameter(
        2,
        ge=0,
        le=1000,
        group="checkpoints",
        label="Checkpoints kept",
        help="0 keeps every checkpoint.",
        zero_means="every checkpoint is kept",
        example="2 (0 keeps every checkpoint)",
    )
    logging_steps: int = hyperparameter(
        10, ge=1, le=100_000, group="checkpoints", label="Log every (steps)", example="10"
    )
    eval_fraction: float = hyperparameter(
        0.0,
        ge=0,
        le=0.5,
        group="checkpoints",
        label="Eval set (share of the rows)",
        help="Rows held out of training, picked with the seed, to measure eval loss and perplexity; e.g. 0.1 for "
        "10%. Or give a separate eval file instead (not both).",
        zero_means="none held out",
        example="0.1",
    )
    eval_steps: int = hyperparameter(
        50,
        ge=1,
        le=10_000_000,
        group="checkpoints",
        label="Evaluate every (steps)",
        help="With an eval set: eval loss every this many steps, and at the last step.",
        example="50",
    )
    keep_best_eval: bool = hyperparameter(
        False,
        group="checkpoints",
        label="Keep the best eval checkpoint",
        help="With an eval set: the result is the model of the evaluation with the lowest eval loss, not the last "
        "step's.",
    )
    eval_prompts: int = hyperparameter(
        5,
        ge=0,
        le=50,
        group="checkpoints",
        label="Before/after prompts",
        help="Eval rows the validation answers with the base model and with the fine-tuned one, side by side.",
        zero_means="no before/after answers",
        example="5",
    )
    lora_r: int = hyperparameter(16, ge=1, le=1024, group="lora", label="LoRA r", example="16")
    lora_alpha: float = hyperparameter(32.0, gt=0, le=4096, group="lora", label="LoRA alpha", example="32")
    lora_dropout: float = hyperparameter(0.05, ge=0, le=0.9, group="lora", label="LoRA dropout", example="0.05")
    lora_target_modules: TargetModules = hyperparameter(
        ALL_LINEAR,
        group="lora",
        label="LoRA target modules",
        help="all-linear, or module names separated by commas (q_proj, v_proj).",
        example=f"'{ALL_LINEAR}'",
    )
    merge_after_training: bool = hyperparameter(
        True,
        group="lora",
        label="Merge after training",
        help="Also write the base model with the adapter merged in, in merged/.",
    )

    dpo_beta: float = hyperparameter(
        0.1,
        gt=0,
        le=10,
        group="dpo",
        label="DPO beta",
        help="How far the model may move from the reference (the base model): lower lets it move further.",
        example="0.1",
    )
    dpo_loss_type: DpoLoss = hyperparameter(
        "sigmoid",
        group="dpo",
        label="DPO loss",
        help="; ".join(f"{name}: {line}" for name, line in DPO_LOSSES.items()) + ".",
        example="sigmoid",
    )
    max_prompt_length: int = hyperparameter(
        0,
        ge=0,
        le=131_072,
        group="dpo",
        label="Max prompt length",
        help="Tokens of the prompt of a pair that are kept (its end, next to the answers); the max sequence length "
        "bounds prompt and answer together. 0: half the max sequence length.",
        zero_means="half the max sequence length",
        example="512",
    )
    preference_pairs: int = hyperparameter(
        16,
        ge=0,
        le=10_000,
        group="dpo",
        label="Held-out pairs for the preference check",
        help="Pairs kept out of training (at most a fifth of the dataset, from its end); after training, how often "
        "the model prefers chosen over rejected on them is measured before and after.",
        zero_means="no pairs held out, no preference check",
        example="16",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _parse(cls, raw: Any, info: ValidationInfo) -> Any:
        """A JSON value or the form's text ("3", "2e-4", "on", "q_proj, v_proj") as the field's type."""
        return _PARSERS[HYPERPARAMETERS[str(info.field_name)].kind](raw)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> tuple[Hyperparameters, list[Problem]]:
        """Validate `data`. Missing fields take their defaults; a field that is wrong keeps its default in the
        returned object and gets one Problem naming the field, the value and what is allowed (its `field` set).
        The object is only fit to train with when the list is empty."""
        if data is None:
            return cls(), []
        try:
            parsed = cls.model_validate(data)
        except ValidationError as exc:
            problems = _problems(exc, data)
            if not isinstance(data, dict):
                return cls(), problems
            refused = {problem.field for problem in problems}
            kept = {name: value for name, value in data.items() if name in HYPERPARAMETERS and name not in refused}
            return cls.model_validate(kept), problems
        return parsed, parsed.conflicts()

    @classmethod
    def from_stored(cls, stored: Any) -> Hyperparameters:
        """The values a project trains with: its stored ones that are valid, defaults for the rest."""
        values, _ = cls.from_dict(stored if isinstance(stored, dict) else {})
        return values

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @property
    def prompt_limit(self) -> int:
        """The prompt tokens a DPO pair keeps."""
        return self.max_prompt_length or self.max_seq_length // 2

    @property
    def effective_batch(self) -> int:
        """Examples per optimizer step: every device takes `batch_size`, `gradient_accumulation_steps` times."""
        return self.devices * self.batch_size * self.gradient_accumulation_steps

    @property
    def effective_batch_detail(self) -> str:
        devices = f"{self.devices} device{'s' if self.devices != 1 else ''}"
        return f"{devices} × batch {self.batch_size} × accumulation {self.gradient_accumulation_steps}"

    def conflicts(self) -> list[Problem]:
        """Settings that are each allowed but not together; checked on the parsed values, so the form's "0" and
        "0.0" strings are as unset as 0. A conflict that one box can resolve names that box as its field."""
        problems = []
        if self.warmup_ratio and self.warmup_steps:
            problems.append(
                Problem(
                    CODE,
                    f"Hyperparameters 'warmup_ratio' = {self.warmup_ratio} and 'warmup_steps' = {self.warmup_steps} "
                    "are both set.",
                    "Set only one of them: warmup_steps counts optimizer steps, warmup_ratio is a share of all steps.",
                )
            )
        if self.objective == "dpo" and self.packing:
            problems.append(
                Problem(
                    CODE,
                    "Hyperparameter 'packing' is on, but packing does not apply to the DPO objective (each pair is "
                    "trained as its own two sequences).",
                    "Turn packing off for a DPO project.",
                    field="packing",
                )
            )
        if self.objective == "dpo" and self.max_prompt_length >= self.max_seq_length:  # 0 (half) always fits
            problems.append(
                Problem(
                    CODE,
                    f"Hyperparameter 'max_prompt_length' = {self.max_prompt_length} leaves no room for the answers "
                    f"within 'max_seq_length' = {self.max_seq_length}.",
                    "Set max_prompt_length below max_seq_length, e.g. half of it.",
                    field="max_prompt_length",
                )
            )
        if self.objective == "dpo" and (self.eval_fraction or self.keep_best_eval):
            problems.append(
                Problem(
                    CODE,
                    "Hyperparameters 'eval_fraction' and 'keep_best_eval' apply to the SFT objective; a DPO run is "
                    "measured on its held-out pairs instead.",
                    "Set eval_fraction to 0 and keep_best_eval off, and choose how many pairs to hold out with "
                    "preference_pairs.",
                )
            )
        if self.objective == "dpo" and self.devices > 1:  # the DPO trainer has no rank handling (cancel, reports)
            problems.append(
                Problem(
                    CODE,
                    f"Hyperparameter 'devices' = {self.devices}, but a DPO run trains on one device in this version.",
                    "Set devices to 1 for a DPO project, or use the SFT objective to train on several devices.",
                    field="devices",
                )
            )
        return problems


Kind = Literal["int", "float", "bool", "choice", "modules"]
_KINDS: dict[Any, Kind] = {bool: "bool", int: "int", float: "float", str | list[str]: "modules"}


@dataclass(frozen=True)
class Declared:
    """One hyperparameter's declaration, read from its field: what the form, the page and the checks use."""

    name: str
    kind: Kind
    default: Any
    label: str
    help: str
    group: str
    example: str
    zero_means: str
    low: float | None = None
    low_open: bool = False  # the low bound itself is not allowed
    high: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def lora_only(self) -> bool:
        return self.group == "lora"

    @property
    def dpo_only(self) -> bool:
        return self.group == "dpo"

    def applies(self, method: str, objective: str) -> bool:
        """Whether the setting is used by a project of this method (full, lora) and objective (sft, dpo)."""
        return (method == "lora" or not self.lora_only) and (objective == "dpo" or not self.dpo_only)

    @classmethod
    def of(cls, name: str, info: FieldInfo) -> Declared:
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        low, low_open, high = None, False, None
        for rule in info.metadata:
            if isinstance(rule, Gt):
                low, low_open = float(rule.gt), True
            elif isinstance(rule, Ge):
                low = float(rule.ge)
            elif isinstance(rule, Le):
                high = float(rule.le)
        annotation = info.annotation
        choices: tuple[str, ...] = ()
        if get_origin(annotation) is Literal:
            kind: Kind = "choice"
            choices = get_args(annotation)
        elif annotation in _KINDS:
            kind = _KINDS[annotation]
        else:
            raise TypeError(f"Hyperparameter '{name}' has a type ({annotation}) that no form box or check knows.")
        return cls(
            name=name,
            kind=kind,
            default=info.default,
            label=info.title or name,
            help=info.description or "",
            group=str(extra.get("x-group", "training")),
            example=str(extra.get("x-example", "")),
            zero_means=str(extra.get("x-zero-means", "")),
            low=low,
            low_open=low_open,
            high=high,
            choices=choices,
        )

    def allowed(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "modules":
            return (
                f'\'{ALL_LINEAR}\' or a list of at most {MAX_TARGET_MODULES} module names such as ["q_proj", "v_proj"]'
            )
        what = "a whole number" if self.kind == "int" else "a number"
        low = f"greater than {_fmt(self.low)}" if self.low_open else f"at least {_fmt(self.low)}"
        return f"{what} {low} and at most {_fmt(self.high)}"

    def problem(self, raw: Any) -> Problem:
        """Why `raw` (a JSON value or the form's text) is refused: the field, the value as sent and what is allowed."""
        shown = repr(raw) if isinstance(raw, str) else _fmt(raw)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        hint = f"Set {self.name} to {self.allowed()}" + (f", e.g. {self.example}." if self.example else ".")
        return Problem(
            CODE, f"Hyperparameter '{self.name}' = {shown} is not allowed: use {self.allowed()}.", hint, self.name
        )


HYPERPARAMETERS: dict[str, Declared] = {
    name: Declared.of(name, info) for name, info in Hyperparameters.model_fields.items()
}

# Boxes whose value the form checks against the base model as it is typed: max_seq_length against its context
# length, lora_target_modules against its layers (projects.inline_checks.hyperparameter_status).
MODEL_FIT_BOXES = ("max_seq_length", "lora_target_modules")


def _fmt(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        # str() raises past 4300 digits, and a number this long is told by its length
        sign = "negative " if value < 0 else ""
        return f"a {sign}whole number of about {int(value.bit_length() * math.log10(2))} digits"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, (dict, list)) or value is None:
        return json.dumps(value)[:80]
    return str(value)[:80]


def _problems(exc: ValidationError, data: Any) -> list[Problem]:
    """pydantic's errors as Problems: hyperparameters not declared first (by name), then each refused field once,
    in declaration order, showing the value as it was sent."""
    if not isinstance(data, dict):
        return [
            Problem(
                CODE,
                f"Hyperparameters must be a JSON object of name: value, not {type(data).__name__}.",
                'Send e.g. {"epochs": 3, "learning_rate": 0.0002}.',
            )
        ]
    refused = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
    unknown = sorted(refused - set(HYPERPARAMETERS))
    problems = [
        Problem(
            CODE,
            f"Unknown hyperparameter '{name}'.",
            "Remove it or use one of: " + ", ".join(sorted(HYPERPARAMETERS)) + ".",
            name,
        )
        for name in unknown
    ]
    problems += [declared.problem(data[name]) for name, declared in HYPERPARAMETERS.items() if name in refused]
    return problems


# The "quick check" preset of a new project's form: a few steps, each logged, one checkpoint at the end, short
# sequences; enough to see that the model, the data and the output folder work before a long run.
QUICK_CHECK: dict[str, Any] = {
    "max_steps": 10,
    "logging_steps": 1,
    "save_steps": 10,
    "max_seq_length": 256,
}
