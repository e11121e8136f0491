"""Whether the LoRA target modules a project names exist in its model, answered at save from the safetensors headers.

The model's module names are its weights' names less '.weight'; a module LoRA can wrap has a weight of two or more
dimensions (a linear, embedding or convolution layer), never a norm's 1-D one. A listed name matches a module by
peft's rule (see _matches). This is the instant first answer; peft itself decides when the run starts
(projects.trainer.run.apply_lora).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from mtm.shared.problems import Problem
from projects.hyperparameters import ALL_LINEAR
from projects.runs.scheduling.memory_estimate import EMBEDDING_NAME, EstimateError, read_model_shape

UNKNOWN_TARGETS = "lora_target_modules_unknown"
# A model with tied embeddings keeps one tensor for both ends, but its output head is still a module of its own.
OUTPUT_HEAD = "lm_head"


@dataclass(frozen=True)
class ModuleNames:
    wrappable: frozenset[str]  # full names of the modules with a 2-D (or larger) weight
    other: frozenset[str]  # full names of the modules with a 1-D weight (norms)

    @staticmethod
    def short(names: frozenset[str]) -> list[str]:
        return sorted({name.rpartition(".")[2] for name in names})


def _config_stamp(folder: str) -> str:
    """What tells one config.json in `folder` from the next (an override's folder can be given another model)."""
    try:
        found = os.stat(Path(folder) / "config.json")
    except OSError:
        return ""
    return f"{found.st_ino}:{found.st_mtime_ns}"


@functools.lru_cache(maxsize=16)
def module_names(folder: str, revision_key: str = "", stamp: str = "") -> ModuleNames | None:
    """The module names of the model in `folder` (cached by folder, revision and config.json), or None when its
    safetensors headers cannot be read (no safetensors weights, say): then nothing is said at save."""
    try:
        tensors = read_model_shape(Path(folder)).tensors
    except (EstimateError, OSError):
        return None
    wrappable, other = set(), set()
    for tensor in tensors:
        module, _, parameter = tensor.name.rpartition(".")
        if not module or parameter != "weight":
            continue
        (wrappable if len(tensor.shape) >= 2 else other).add(module)
    if any(EMBEDDING_NAME.search(tensor.name) for tensor in tensors):
        wrappable.add(OUTPUT_HEAD)
    return ModuleNames(frozenset(wrappable), frozenset(other - wrappable))


def _some(names: list[str], shown: int = 40) -> str:
    """At most `shown` names, then how many more (a planted header can list a million)."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _matches(target: str, modules: frozenset[str]) -> bool:
    """peft's rule for a listed name (tuners_utils.check_target_module_exists): the module's full name is the target
    or ends with '.' + the target. Not asked of peft here: importing it loads torch into the web process."""
    return any(module == target or module.endswith("." + target) for module in modules)


def lora_target_problems(folder: str, revision: str, targets: str | list[str], model_name: str) -> list[Problem]:
    """Why the LoRA target modules `targets` do not fit the model in `folder`: names no layer of it ends like."""
    if targets == ALL_LINEAR or isinstance(targets, str):
        return []
    names = module_names(folder, revision or "", _config_stamp(folder))
    if names is None or not names.wrappable:
        return []
    unknown = [target for target in targets if not _matches(target, names.wrappable)]
    if not unknown:
        return []
    norms = [target for target in unknown if _matches(target, names.other)]
    why = f" ({', '.join(repr(n) for n in norms)}: a normalisation layer, which LoRA cannot wrap)" if norms else ""
    # peft stops at the start only when no name matches; otherwise it wraps the others and says nothing of a typo.
    outcome = (
        "training would stop at its start (peft finds no layer to wrap)"
        if len(unknown) == len(targets)
        else "peft would skip it silently and wrap only the others"
    )
    return [
        Problem(
            UNKNOWN_TARGETS,
            f"Hyperparameter 'lora_target_modules' names {', '.join(repr(t) for t in unknown)}, which no layer of "
            f"'{model_name}' that LoRA can wrap is called{why}; {outcome}.",
            f"Use '{ALL_LINEAR}', or names of this model's layers: {_some(ModuleNames.short(names.wrappable))}.",
            field="lora_target_modules",
        )
    ]
