"""Post-training validation, four checks: files, JSON, loading test and inference test.

The report is a `projects.runs.columns.ValidationReport`, stored on the run as its dict. Loading and inference
run in a child process (projects.runs.validation.child).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from models_registry.checks import MAX_JSON_BYTES, check_model_folder
from mtm.shared.bounded_walk import FolderTooLarge
from projects.runs.columns import BeforeAfter, PreferenceResult, ValidationCheck, ValidationReport
from projects.runs.folder_scan import foreign_entries, read_at, too_many_entries, walk
from projects.runs.validation.child import RESULT_PREFIX
from projects.trainer.outputs import MANIFEST_NAME

ADAPTER_FILES = ("adapter_config.json",)
FEW_PAIRS = 10  # below this many held-out pairs, one pair moves the preference accuracy by over 10 points
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
DEFAULT_PROMPT = "Hello"
CHILD_TIMEOUT = 1800
CHILD_MODULE = "projects.runs.validation.child"


def read_path(folder_fd: int) -> Path:
    """The path that reaches the folder `folder_fd` is open on, in this process and in a child it is passed to."""
    return Path(f"/proc/self/fd/{folder_fd}")


def _check(name: str, passed: bool, detail: str, started: float) -> ValidationCheck:
    return ValidationCheck(name=name, passed=passed, detail=detail, seconds=round(time.monotonic() - started, 3))


@contextlib.contextmanager
def _opened(shown: Path, folder_fd: int | None) -> Iterator[int | None]:
    """The descriptor the checks read through: the caller's, else the folder at `shown` opened here (None when there
    is no folder)."""
    if folder_fd is not None:
        yield folder_fd
        return
    try:
        own = os.open(shown, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield None
        return
    try:
        yield own
    finally:
        os.close(own)


def _layout(folder_fd: int | None, shown: Path) -> tuple[dict | None, str]:
    if folder_fd is None:
        return None, f"{MANIFEST_NAME} is missing from {shown}: the folder cannot be opened."
    try:
        manifest = json.loads(read_at(folder_fd, MANIFEST_NAME, MAX_JSON_BYTES))
        layout = manifest["layout"]
        return {"model_dir": layout.get("model_dir"), "adapter_dir": layout.get("adapter_dir")}, ""
    except FileNotFoundError:
        return None, f"{MANIFEST_NAME} is missing from {shown}."
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        return None, f"{MANIFEST_NAME} is unreadable or has no layout: {reason}."


def foreign_problem(folder_fd: int | None, shown: Path) -> str:
    """What the files check says about entries the trainer never writes (FIFOs, links, devices), or ''."""
    try:
        found = foreign_entries(folder_fd) if folder_fd is not None else []
    except FolderTooLarge as exc:
        return too_many_entries(exc, shown)
    if not found:
        return ""
    named = ", ".join(f"{entry.rel} ({entry.kind()})" for entry in found[:10])
    more = f" and {len(found) - 10} more" if len(found) > 10 else ""
    return (
        f"{shown} holds what a run never writes: {named}{more}. A run folder holds only folders and regular files; "
        "these were put there by someone else, and the run's output is not trusted. Start a fresh run."
    )


def files_check(output_dir: Path, layout: dict, trust_remote_code: bool = False) -> tuple[bool, str]:
    problems = []
    if layout.get("model_dir"):
        report = check_model_folder(output_dir / layout["model_dir"], trust_remote_code=trust_remote_code)
        problems += [p.message for p in report.errors]
        problems += [p.message for p in report.warnings if p.code == "no_weights"]
    if layout.get("adapter_dir"):
        adapter = output_dir / layout["adapter_dir"]
        problems += [f"missing {f} in {adapter}" for f in ADAPTER_FILES if not (adapter / f).is_file()]
        if not any((adapter / f).is_file() for f in ADAPTER_WEIGHTS):
            problems.append(f"no adapter weights ({' or '.join(ADAPTER_WEIGHTS)}) in {adapter}")
    if problems:
        return False, "; ".join(problems)
    where = " and ".join(f"{k.replace('_dir', '')} in {output_dir / v}" for k, v in layout.items() if v)
    return True, f"All required files present ({where})."


def _is_checkpoint(name: str) -> bool:
    return name.startswith("checkpoint-")


def json_check(folder_fd: int | None) -> tuple[bool, str]:
    """Every JSON file of the final output (checkpoints excluded) is a regular file that parses; each is read through
    the folder's descriptor, without following a link and up to a bound."""
    bad, count = [], 0
    try:
        for entry, dir_fd, name in walk(folder_fd, skip=_is_checkpoint) if folder_fd is not None else ():
            if entry.folder or not name.endswith(".json"):
                continue
            count += 1
            try:
                json.loads(read_at(dir_fd, name, MAX_JSON_BYTES).decode("utf-8"))
            except OSError as exc:
                bad.append(f"{entry.rel}: {'it is a link' if entry.kind() == 'a link' else exc.strerror or exc}")
            except (UnicodeDecodeError, ValueError) as exc:
                bad.append(f"{entry.rel}: {exc}")
    except FolderTooLarge as exc:
        return False, too_many_entries(exc, "The run folder")
    if bad:
        return False, "Invalid JSON: " + "; ".join(bad)
    return True, f"{count} JSON files parse."


def _as_shown(text: str, shown: dict[int, str]) -> str:
    """`text` with each /proc/self/fd/<n> path of a folder held open written as the path `shown[n]` it stands for."""
    return re.sub(r"/proc/self/fd/(\d+)", lambda m: shown.get(int(m.group(1)), m.group(0)), text)


def _base_read_path(base_model_path: str | None, base_fd: int | None) -> str | None:
    """The path the child loads the base model by: the folder held open at `base_fd`, else `base_model_path`."""
    return str(read_path(base_fd)) if base_fd is not None else base_model_path


def _run_child(spec: dict, check: str, *fds: int | None) -> dict:
    """The result of `check` (projects.runs.validation.child) run on `spec` in a child process, or {"error": ...}."""
    with tempfile.TemporaryDirectory(prefix="mtm-inference-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        try:
            proc = subprocess.run(
                [sys.executable, "-m", CHILD_MODULE, check, str(spec_path)],
                cwd=settings.BASE_DIR,
                env=env,
                capture_output=True,
                text=True,
                timeout=CHILD_TIMEOUT,
                check=False,
                pass_fds=tuple(fd for fd in fds if fd is not None),
            )
        except subprocess.TimeoutExpired:
            return {"error": f"The {check} check's child did not finish within {CHILD_TIMEOUT}s."}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    return {"error": f"The {check} check's child exited with code {proc.returncode}: {proc.stderr[-2000:]}"}


def validate_output(
    output_dir: str | Path,
    prompt: str,
    *,
    base_model_path: str | None,
    trust_remote_code: bool = False,
    max_new_tokens: int = 32,
    before_after: dict | None = None,
    folder_fd: int | None = None,
    base_fd: int | None = None,
) -> ValidationReport:
    """`before_after`: the eval rows to answer with the base and the fine-tuned model
    (projects.runs.validation.before_after's spec, without the base model path, which is `base_model_path`), or None.
    `folder_fd`: the run folder opened (and checked) by the caller; everything is then read through that descriptor,
    never through `output_dir` again. `base_fd`: the base model's folder held open by the caller
    (projects.runs.base_model_folder), which the child then loads it from; messages still name `base_model_path`."""
    shown = Path(output_dir)
    base_path = _base_read_path(base_model_path, base_fd)
    output_dir = read_path(folder_fd) if folder_fd is not None else shown
    checks: list[ValidationCheck] = []
    started = time.monotonic()
    with _opened(shown, folder_fd) as reading:
        layout, problem = _layout(reading, shown)
        if foreign := foreign_problem(reading, shown):
            checks.append(_check("files", False, foreign, started))
        elif layout is None:
            checks.append(_check("files", False, problem, started))
        else:
            checks.append(_check("files", *files_check(output_dir, layout, trust_remote_code), started))
        started = time.monotonic()
        checks.append(_check("json", *json_check(reading), started))
    sample = ""
    result: dict = {}
    prompt = prompt or DEFAULT_PROMPT
    if all(c.passed for c in checks):
        model_dir = output_dir / layout["model_dir"] if layout.get("model_dir") else None
        spec = {
            "model_dir": str(model_dir) if model_dir else None,
            "adapter_dir": str(output_dir / layout["adapter_dir"]) if layout.get("adapter_dir") else None,
            "base_model_path": base_path,
            "tokenizer_dir": str(model_dir or output_dir),
            "prompt": prompt,
            "max_new_tokens": max_new_tokens,
            "trust_remote_code": trust_remote_code,
            "before_after": (
                {**before_after, "base_model_path": base_path, "max_new_tokens": max_new_tokens}
                if before_after and base_model_path
                else None
            ),
        }
        result = _run_child(spec, "inference", folder_fd, base_fd)
        if "error" in result:
            checks.append(ValidationCheck(name="load", passed=False, detail=result["error"]))
            checks.append(ValidationCheck(name="inference", passed=False, detail="Not run."))
        else:
            for name in ("load", "inference"):
                checks.append(ValidationCheck.model_validate({**result[name], "name": name}))
            sample = result["inference"].get("text", "")
    else:
        for name in ("load", "inference"):
            checks.append(ValidationCheck(name=name, passed=False, detail="Not run: an earlier check failed."))
    compared = result.get("before_after")
    held = {fd: str(path) for fd, path in ((folder_fd, shown), (base_fd, base_model_path)) if fd is not None}
    for check in checks:
        check.detail = _as_shown(check.detail, held)
    return ValidationReport(
        passed=all(c.passed for c in checks),
        checks=checks,
        sample_output=sample,
        prompt=prompt,
        before_after=BeforeAfter.model_validate(compared) if isinstance(compared, dict) else None,
    )


def _share(value: float, pairs: int) -> str:
    return f"{value:.0%} ({round(value * pairs)} of {pairs})"


def preference_check(
    output_dir: str | Path,
    pairs: list[dict],
    *,
    base_model_path: str,
    trust_remote_code: bool = False,
    folder_fd: int | None = None,
    base_fd: int | None = None,
) -> tuple[ValidationCheck, PreferenceResult | None]:
    """The DPO preference check on held-out `pairs`: how often the base and the tuned model find the chosen
    answer more likely than the rejected one. Passes when it could be measured; a tuned model that prefers chosen
    no more often than the base passes with a warning that says so."""
    started = time.monotonic()
    shown = Path(output_dir)
    output_dir = read_path(folder_fd) if folder_fd is not None else shown
    with _opened(shown, folder_fd) as reading:
        layout, problem = _layout(reading, shown)
    if layout is None:
        return _check("preference", False, problem, started), None
    model_dir = output_dir / layout["model_dir"] if layout.get("model_dir") else None
    spec = {
        "base_model_path": _base_read_path(base_model_path, base_fd),
        "model_dir": str(model_dir) if model_dir else None,
        "adapter_dir": str(output_dir / layout["adapter_dir"]) if layout.get("adapter_dir") else None,
        "tokenizer_dir": str(model_dir or output_dir),
        "pairs": pairs,
        "trust_remote_code": trust_remote_code,
    }
    result = _run_child(spec, "preference", folder_fd, base_fd)
    if "error" in result:
        held = {fd: str(path) for fd, path in ((folder_fd, shown), (base_fd, base_model_path)) if fd is not None}
        return _check("preference", False, _as_shown(result["error"], held), started), None
    found = PreferenceResult.model_validate(result)
    count = found.pairs or len(pairs)
    detail = (
        f"On {count} held-out pair{'s' if count != 1 else ''} the model prefers the chosen answer "
        f"{_share(found.after or 0.0, count)} of the time after training, {_share(found.before or 0.0, count)} "
        f"before (mean log-probability margin {found.margin_before or 0.0:+.3f} -> {found.margin_after or 0.0:+.3f})."
    )
    check = _check("preference", True, detail, started)
    check.warning = preference_warning(found.before or 0.0, found.after or 0.0, count)
    return check, found


def preference_warning(before: float, after: float, pairs: int) -> str:
    """What the preference check warns about: no gain (unless the base was already always right), or too few pairs
    to tell."""
    warning = ""
    if after < before or (after == before < 1.0):
        warning = (
            "The tuned model prefers the chosen answers no more often than the base model did: train longer, raise "
            "the learning rate, or check that chosen and rejected are not swapped."
        )
    if pairs < FEW_PAIRS:
        few = f"{pairs} held-out pair{'s are' if pairs != 1 else ' is'} too few to judge a difference"
        warning = f"{warning} {few}." if warning else f"{few}: hold out more (preference_pairs) in a larger file."
    return warning
