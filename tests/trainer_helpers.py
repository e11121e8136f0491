"""Running the trainer child process as the pipeline runs it (`python -m projects.trainer SPEC.json`), for the tests
of the trainer on the CPU with the tiny Llama."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from projects.trainer.events import EXIT_CANCELLED, EXIT_ERROR, parse_event, trainer_command
from projects.trainer.spec import TrainerSpec

REPO = Path(__file__).resolve().parent.parent
QA = {"prompt": "Question: what is two plus two? Answer:", "completion": " four."}


@dataclass
class ChildRun:
    returncode: int
    events: list[dict] = field(default_factory=list)
    log: str = ""

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["event"] == kind]

    def one(self, kind: str) -> dict:
        found = self.of(kind)
        assert len(found) == 1, f"expected one {kind!r} event, got {len(found)}; log tail:\n{self.log[-3000:]}"
        return found[0]


def run_child(spec: dict, spec_path: Path, on_event=None) -> ChildRun:
    """`spec` is the file's content, so that a test can also write one the supervisor would refuse to."""
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(
        trainer_command(spec_path),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run = ChildRun(returncode=-1)
    log = []
    for line in proc.stdout:
        event = parse_event(line)
        if event is None:
            log.append(line)
            continue
        run.events.append(event)
        if on_event is not None:
            on_event(event, proc)
    run.returncode = proc.wait(timeout=600)
    run.log = "".join(log)
    return run


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def spec_of(model: Path, data: Path, out: Path, method: str, hyperparameters: dict, **fields) -> dict:
    """A spec of the tiny Llama on the CPU as the supervisor writes it, read back as the JSON object a test may change
    before the child reads it; `fields` are the spec's other fields."""
    return TrainerSpec(
        model_path=model,
        model_name="test-org/tiny-llama",
        dataset_path=data,
        output_dir=out,
        method=method,
        hyperparameters=hyperparameters,
        device="cpu",
        **fields,
    ).model_dump(mode="json")


def make_spec(model: Path, data: Path, out: Path, method: str = "full", **hyper) -> dict:
    """An SFT spec: a few steps unless `hyper` says otherwise."""
    defaults = {"max_steps": 20, "learning_rate": 0.01, "batch_size": 4, "logging_steps": 5, "save_steps": 1000}
    revision = "0123456789abcdef0123456789abcdef01234567"
    return spec_of(model, data, out, method, {**defaults, **hyper}, revision=revision)


def run_until_cancelled(spec: dict, folder: Path) -> ChildRun:
    """Run the child on `spec` with a cancel file that appears at its first progress event, as a member's Cancel
    would; the child must end cancelled. The file is removed after, so that `spec` can resume."""
    cancel = folder / "cancel-run"
    spec["cancel_file"] = str(cancel)

    def cancel_after_first_progress(event, proc):
        if event["event"] == "progress":
            cancel.touch()

    run = run_child(spec, folder / "spec.json", on_event=cancel_after_first_progress)
    assert run.returncode == EXIT_CANCELLED, run.log[-3000:]
    cancel.unlink()
    return run


def generates(folder: Path) -> str:
    """Load the model saved in `folder`, check it generates past QA's prompt, and return what it generates."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    inputs = tokenizer(QA["prompt"], return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]
    return tokenizer.decode(output[0])


def error_of(run: ChildRun) -> dict:
    """The one error event of a child that exited with EXIT_ERROR: its last event, with a message, hint and traceback."""
    assert run.returncode == EXIT_ERROR, run.log[-3000:]
    error = run.one("error")
    assert error["message"] and error["hint"] and error["traceback"]
    assert run.events[-1] is error
    return error
