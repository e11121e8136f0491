"""Training hyperparameters: defaults, per-field validation with messages a person can act on, and a JSON form.

Plain Python (no Django, no torch): the form, the API and the trainer child process all use it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from mtm.shared.problems import Problem

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
ALL_LINEAR = "all-linear"
CODE = "invalid_hyperparameter"


@dataclass
class Hyperparameters:
    epochs: float = 3.0
    max_steps: int = 0  # 0 = train for `epochs`
    learning_rate: float = 2e-4
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_seq_length: int = 1024
    warmup_ratio: float = 0.0
    warmup_steps: int = 0  # > 0 wins over warmup_ratio
    weight_decay: float = 0.0
    seed: int = 42
    packing: bool = False
    precision: str = "auto"
    gradient_checkpointing: bool = False
    lora_r: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    lora_target_modules: str | list[str] = ALL_LINEAR
    merge_after_training: bool = True
    save_steps: int = 500
    save_total_limit: int = 2  # 0 = keep every checkpoint
    logging_steps: int = 10

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> tuple[Hyperparameters, list[Problem]]:
        """Validate `data` field by field. Missing fields take their defaults; a field that is wrong keeps its
        default in the returned object and gets one Problem naming the field, the value and what is allowed.
        The object is only fit to train with when the list is empty."""
        values = cls()
        problems: list[Problem] = []
        if data is None:
            return values, problems
        if not isinstance(data, dict):
            return values, [
                Problem(
                    CODE,
                    f"Hyperparameters must be a JSON object of name: value, not {type(data).__name__}.",
                    'Send e.g. {"epochs": 3, "learning_rate": 0.0002}.',
                )
            ]
        known = {f.name for f in fields(cls)}
        for name in sorted(set(data) - known):
            problems.append(
                Problem(
                    CODE,
                    f"Unknown hyperparameter '{name}'.",
                    "Remove it or use one of: " + ", ".join(sorted(known)) + ".",
                )
            )
        for name, rule in _RULES.items():
            if name not in data:
                continue
            value, problem = rule.check(name, data[name])
            if problem is not None:
                problems.append(problem)
            else:
                setattr(values, name, value)
        if not problems:
            problems.extend(values._cross_field_problems())
        return values, problems

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if isinstance(self.lora_target_modules, list):
            data["lora_target_modules"] = list(self.lora_target_modules)
        return data

    def _cross_field_problems(self) -> list[Problem]:
        """Checked on the parsed values: the form's "0" and "0.0" strings are as unset as 0."""
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
        return problems


@dataclass(frozen=True)
class _Rule:
    kind: str  # "int" | "float" | "bool" | "choice" | "modules"
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the low bound itself is not allowed
    choices: tuple[str, ...] = field(default_factory=tuple)
    example: str = ""

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

    def check(self, name: str, raw: Any) -> tuple[Any, Problem | None]:
        value = _coerce(self.kind, raw)
        ok = value is not None
        if ok and self.kind in ("int", "float"):
            ok = (value > self.low if self.low_open else value >= self.low) and value <= self.high
        if ok and self.kind == "choice":
            ok = value in self.choices
        if ok:
            return value, None
        shown = repr(raw) if isinstance(raw, str) else _fmt(raw)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        hint = f"Set {name} to {self.allowed()}" + (f", e.g. {self.example}." if self.example else ".")
        return None, Problem(CODE, f"Hyperparameter '{name}' = {shown} is not allowed: use {self.allowed()}.", hint)


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, (dict, list)) or value is None:
        import json

        return json.dumps(value)[:80]
    return str(value)[:80]


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def _coerce(kind: str, raw: Any) -> Any:
    """Parse a JSON value or an HTML form string; None when it is not of the kind."""
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, int) and raw in (0, 1):
            return bool(raw)
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        return None
    if kind == "choice":
        return raw.strip().lower() if isinstance(raw, str) else None
    if kind == "modules":
        return _coerce_modules(raw)
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str):
        try:
            raw = float(raw.strip()) if kind == "float" else int(raw.strip())
        except ValueError:
            return None
    if isinstance(raw, float) and not math.isfinite(raw):
        return None
    if kind == "int":
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        return raw if isinstance(raw, int) else None
    return float(raw) if isinstance(raw, (int, float)) else None


MAX_TARGET_MODULES = 64  # real models name a handful (q_proj, v_proj, ...); more is a mistake or an attack


def _coerce_modules(raw: Any) -> str | list[str] | None:
    if isinstance(raw, str):
        text = raw.strip()
        if text == ALL_LINEAR:
            return ALL_LINEAR
        raw = [part.strip() for part in text.split(",")]
    if not isinstance(raw, list) or not raw or len(raw) > MAX_TARGET_MODULES:
        return None
    names = [item for item in raw if isinstance(item, str) and item.strip() and len(item) <= 128]
    if len(names) != len(raw) or not all(name.replace("_", "").replace(".", "").isalnum() for name in names):
        return None
    return [name.strip() for name in names]


_RULES: dict[str, _Rule] = {
    "epochs": _Rule("float", 0, 1000, low_open=True, example="3"),
    "max_steps": _Rule("int", 0, 10_000_000, example="0 (train for 'epochs') or 1000"),
    "learning_rate": _Rule("float", 0, 1, low_open=True, example="0.0002 for LoRA or 0.00002 for a full fine-tune"),
    "batch_size": _Rule("int", 1, 4096, example="4"),
    "gradient_accumulation_steps": _Rule("int", 1, 1024, example="1"),
    "max_seq_length": _Rule("int", 8, 131_072, example="1024"),
    "warmup_ratio": _Rule("float", 0, 0.5, example="0.03"),
    "warmup_steps": _Rule("int", 0, 1_000_000, example="100"),
    "weight_decay": _Rule("float", 0, 1, example="0.01"),
    "seed": _Rule("int", 0, 2**32 - 1, example="42"),
    "packing": _Rule("bool"),
    "precision": _Rule("choice", choices=PRECISIONS, example="auto"),
    "gradient_checkpointing": _Rule("bool"),
    "lora_r": _Rule("int", 1, 1024, example="16"),
    "lora_alpha": _Rule("float", 0, 4096, low_open=True, example="32"),
    "lora_dropout": _Rule("float", 0, 0.9, example="0.05"),
    "lora_target_modules": _Rule("modules", example=f"'{ALL_LINEAR}'"),
    "merge_after_training": _Rule("bool"),
    "save_steps": _Rule("int", 1, 10_000_000, example="500"),
    "save_total_limit": _Rule("int", 0, 1000, example="2 (0 keeps every checkpoint)"),
    "logging_steps": _Rule("int", 1, 100_000, example="10"),
}

assert set(_RULES) == {f.name for f in fields(Hyperparameters)}, "every hyperparameter needs a validation rule"
