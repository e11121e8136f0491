"""The trainer child process, run exactly as the pipeline runs it (`python -m projects.trainer SPEC.json`), on the
CPU with the tiny Llama; plus its hyperparameters, its event protocol and its packing."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from projects.hyperparameters import Hyperparameters
from projects.trainer.batching import IGNORE_INDEX, PackedCollator, PaddedCollator, pack_examples
from projects.trainer.errors import TrainerError
from projects.trainer.events import (
    EXIT_CANCELLED,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    format_event,
    parse_event,
    trainer_command,
)
from projects.trainer.spec import TrainerSpec, read_spec

REPO = Path(__file__).resolve().parent.parent
QA = {"prompt": "Question: what is two plus two? Answer:", "completion": " four."}


# -- helpers ---------------------------------------------------------------------------------------------------


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


def make_spec(model: Path, data: Path, out: Path, method: str = "full", **hyper) -> dict:
    """A spec as the supervisor writes it, read back as the JSON object a test may change before the child reads it."""
    defaults = {"max_steps": 20, "learning_rate": 0.01, "batch_size": 4, "logging_steps": 5, "save_steps": 1000}
    return TrainerSpec(
        model_path=model,
        model_name="test-org/tiny-llama",
        revision="0123456789abcdef0123456789abcdef01234567",
        dataset_path=data,
        output_dir=out,
        method=method,
        hyperparameters={**defaults, **hyper},
        device="cpu",
    ).model_dump(mode="json")


def synthetic_examples(lengths: list[int], prompt: int = 3) -> list[dict]:
    """Examples shaped like projects.datasets.build_examples' output: ids, labels -100 over the prompt."""
    examples = []
    for n, length in enumerate(lengths):
        ids = [1000 * (n + 1) + i for i in range(length)]
        examples.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return examples


# -- hyperparameters ---------------------------------------------------------------------------------------------


def test_hyperparameter_defaults_round_trip():
    values, problems = Hyperparameters.from_dict(Hyperparameters().to_dict())
    assert problems == []
    assert values == Hyperparameters()
    assert values.to_dict()["lora_target_modules"] == "all-linear"


@pytest.mark.parametrize(
    ("field_name", "value", "allowed"),
    [
        ("learning_rate", -1, "greater than 0 and at most 1"),
        ("batch_size", 0, "at least 1 and at most 4096"),
        ("batch_size", 2.5, "a whole number"),
        ("epochs", "many", "greater than 0"),
        ("precision", "bf32", "auto, bf16, fp16, fp32"),
        ("packing", "maybe", "true or false"),
        ("lora_target_modules", [], "'all-linear' or a list"),
        ("max_seq_length", 4, "at least 8"),
        ("lora_dropout", 1.5, "at most 0.9"),
    ],
)
def test_hyperparameter_errors_name_field_value_and_range(field_name, value, allowed):
    values, problems = Hyperparameters.from_dict({field_name: value})
    assert len(problems) == 1
    problem = problems[0]
    assert problem.code == "invalid_hyperparameter"
    assert f"'{field_name}'" in problem.message
    assert (repr(value) if isinstance(value, str) else json.dumps(value)) in problem.message
    assert allowed in problem.message
    assert field_name in problem.hint
    assert getattr(values, field_name) == getattr(Hyperparameters(), field_name)


def test_hyperparameters_unknown_and_conflicting_fields():
    _, problems = Hyperparameters.from_dict({"learnin_rate": 0.1})
    assert [p.code for p in problems] == ["invalid_hyperparameter"]
    assert "'learnin_rate'" in problems[0].message and "learning_rate" in problems[0].hint
    _, problems = Hyperparameters.from_dict({"warmup_ratio": 0.1, "warmup_steps": 10})
    assert "warmup_ratio" in problems[0].message and "warmup_steps" in problems[0].message


def test_hyperparameters_accept_form_strings():
    values, problems = Hyperparameters.from_dict(
        {"epochs": "2", "learning_rate": "1e-4", "packing": "on", "lora_target_modules": "q_proj, v_proj"}
    )
    assert problems == []
    assert (values.epochs, values.learning_rate, values.packing) == (2.0, 1e-4, True)
    assert values.lora_target_modules == ["q_proj", "v_proj"]


# -- events and spec ---------------------------------------------------------------------------------------------


def test_events_round_trip_and_log_lines_are_not_events():
    line = format_event("progress", 0.0, step=3, loss=float("nan"), total_steps=10)
    event = parse_event(line + "\n")
    assert event["event"] == "progress" and event["step"] == 3 and event["loss"] is None
    assert parse_event(b"partial tqdm line\r" + line.encode()) == event
    assert parse_event("{'loss': 1.0, 'step': 3}") is None
    assert parse_event('MTM_EVENT {"event": "progress", "step"') is None
    assert parse_event('MTM_EVENT {"event": "gossip"}') is None


def test_spec_problems_are_named(tmp_path):
    spec = make_spec(tmp_path / "no-model", tmp_path / "no-data.jsonl", tmp_path / "out")
    spec["method"] = "qlora"
    spec["hyperparameters"]["lora_r"] = 0
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(TrainerError) as caught:
        read_spec(tmp_path / "spec.json")
    message = caught.value.message
    assert "'qlora'" in message
    assert "'lora_r'" in message
    assert str(tmp_path / "no-model") in message
    assert str(tmp_path / "no-data.jsonl") in message


# -- packing -----------------------------------------------------------------------------------------------------


def test_packing_fills_rows_without_crossing_example_boundaries():
    rng = random.Random(0)
    lengths = [rng.randint(4, 60) for _ in range(50)]
    examples = synthetic_examples(lengths)
    rows = pack_examples(examples, max_seq_length=64)

    assert len(rows) < len(examples)
    assert sum(len(r["input_ids"]) for r in rows) == sum(lengths)
    seen = []
    for row in rows:
        assert len(row["input_ids"]) <= 64
        assert len(row["labels"]) == len(row["position_ids"]) == len(row["input_ids"])
        starts = [i for i, position in enumerate(row["position_ids"]) if position == 0]
        for start, end in zip(starts, starts[1:] + [len(row["input_ids"])], strict=True):
            ids, labels = row["input_ids"][start:end], row["labels"][start:end]
            owner = ids[0] // 1000  # every token of a piece comes from one example
            assert all(token // 1000 == owner for token in ids)
            original = examples[owner - 1]
            assert ids == original["input_ids"]
            assert row["position_ids"][start:end] == list(range(end - start))
            # the first label is never a target: the previous example's last token must not predict it
            assert labels == [IGNORE_INDEX] + original["labels"][1:]
            seen.append(owner)
    assert sorted(seen) == list(range(1, 51))


def _loss_sum_and_count(model, batch) -> tuple[float, int]:
    import torch

    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
    logits = model(**inputs, use_cache=False).logits[:, :-1]  # as in training: a KV cache disables isolation
    targets = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss.item(), int((targets != IGNORE_INDEX).sum())


def test_packed_batches_give_the_same_loss_as_unpacked(tiny_llama_dir):
    """Attention stays inside each example (sdpa on the CPU) and the targets are exactly the unpacked ones."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from projects.datasets.examples import build_examples

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    rows = [
        {"prompt": "Question: " + "what is two plus two? " * (i % 4 + 1), "completion": " Answer: four." * (i % 3 + 1)}
        for i in range(12)
    ]
    examples = build_examples(rows, "prompt_completion", tokenizer, 128)
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        unpacked = [_loss_sum_and_count(model, PaddedCollator(pad)([e])) for e in examples]
        packed_rows = pack_examples(examples, 128)
        packed = _loss_sum_and_count(model, PackedCollator(pad)(packed_rows))

    assert len(packed_rows) < len(examples)
    assert packed[1] == sum(count for _, count in unpacked)
    assert packed[0] == pytest.approx(sum(total for total, _ in unpacked), rel=1e-4)


# -- the child process -------------------------------------------------------------------------------------------


@pytest.fixture
def qa_data(tmp_path) -> Path:
    return write_rows(tmp_path / "qa.jsonl", [QA] * 40)


def _generates(folder: Path) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    inputs = tokenizer(QA["prompt"], return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]
    return tokenizer.decode(output[0])


@pytest.mark.slow
def test_full_fine_tune_learns_and_leaves_a_complete_model(tiny_llama_dir, qa_data, tmp_path):
    out = tmp_path / "out"
    run = run_child(make_spec(tiny_llama_dir, qa_data, out), tmp_path / "spec.json")

    assert run.returncode == EXIT_OK, run.log[-3000:]
    started = run.one("started")
    assert started["device"] == "cpu" and started["total_steps"] == 20 and started["global_step"] == 0
    assert started["examples"] == 40 and started["format"] == "prompt_completion"
    logged = [e for e in run.of("progress") if e["logged"]]
    assert [e["step"] for e in logged] == [5, 10, 15, 20]  # logging_steps=5: the points of the loss curve
    losses = [e["loss"] for e in logged]
    assert losses[-1] < losses[0] * 0.7
    steps = [e["step"] for e in run.of("progress")]
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == 20
    assert all(e["tokens_per_second"] > 0 for e in run.of("progress"))

    finished = run.one("finished")
    assert finished["model_dir"] == str(out) and finished["adapter_dir"] is None
    assert finished["metrics"]["global_step"] == 20 and finished["metrics"]["real_tokens"] > 0
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "mtm_manifest.json"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "mtm_manifest.json").read_text())
    assert manifest["base_model"]["name"] == "test-org/tiny-llama"
    assert manifest["base_model"]["revision"] == "0123456789abcdef0123456789abcdef01234567"
    assert len(manifest["dataset"]["sha256"]) == 64
    assert manifest["hyperparameters"]["max_steps"] == 20
    assert set(manifest["versions"]) >= {"torch", "transformers", "peft"}
    assert manifest["metrics"]["final_loss"] == losses[-1]
    assert manifest["started_at"] <= manifest["finished_at"]
    assert json.loads((out / "config.json").read_text())["use_cache"] is True
    assert "four" in _generates(out)


@pytest.mark.slow
def test_lora_with_merge_writes_adapter_and_merged_model(tiny_llama_dir, qa_data, tmp_path):
    out = tmp_path / "out"
    spec = make_spec(tiny_llama_dir, qa_data, out, method="lora", max_steps=6, lora_r=4, lora_alpha=8)
    spec["hyperparameters"].update(packing=True, gradient_checkpointing=True, merge_after_training=True)
    run = run_child(spec, tmp_path / "spec.json")

    assert run.returncode == EXIT_OK, run.log[-3000:]
    assert run.one("started")["training_rows"] < 40  # packed
    finished = run.one("finished")
    assert finished["adapter_dir"] == str(out) and finished["model_dir"] == str(out / "merged")
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not (out / "config.json").exists()  # the adapter folder is not mistaken for a full model
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["base_model_name_or_path"] == str(tiny_llama_dir)
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json"):
        assert (out / "merged" / name).is_file(), name
    manifest = json.loads((out / "mtm_manifest.json").read_text())
    assert manifest["layout"] == {"model_dir": "merged", "adapter_dir": "."}
    _generates(out / "merged")


@pytest.mark.slow
def test_cancel_saves_a_checkpoint_and_resume_latest_continues_from_it(tiny_llama_dir, qa_data, tmp_path):
    out, cancel = tmp_path / "out", tmp_path / "cancel-run"
    # Far more steps than can pass before the cancel file appears, so the run cannot finish first.
    spec = make_spec(tiny_llama_dir, qa_data, out, max_steps=100_000, logging_steps=50)
    spec["cancel_file"] = str(cancel)

    def cancel_after_first_progress(event, proc):
        if event["event"] == "progress":
            cancel.touch()

    run = run_child(spec, tmp_path / "spec.json", on_event=cancel_after_first_progress)
    assert run.returncode == EXIT_CANCELLED, run.log[-3000:]
    cancelled = run.one("cancelled")
    step = cancelled["step"]
    assert 1 <= step < 100_000
    assert cancelled["checkpoint"] == str(out / f"checkpoint-{step}")
    assert run.one("checkpoint")["path"] == cancelled["checkpoint"]
    assert (out / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert not run.of("finished") and not (out / "mtm_manifest.json").exists()

    cancel.unlink()
    spec["resume_from_checkpoint"] = "latest"
    spec["hyperparameters"]["max_steps"] = step + 8  # a shorter finish line; the state still comes from the checkpoint
    resumed = run_child(spec, tmp_path / "spec-resume.json")
    assert resumed.returncode == EXIT_OK, resumed.log[-3000:]
    started = resumed.one("started")
    assert started["global_step"] == step
    assert started["resumed_from"] == str(out / f"checkpoint-{step}")
    assert resumed.of("progress")[0]["step"] == step + 1
    assert resumed.one("finished")["metrics"]["global_step"] == step + 8
    assert json.loads((out / "mtm_manifest.json").read_text())["resumed_from"] == started["resumed_from"]


@pytest.mark.slow
def test_sigterm_stops_like_a_cancel(tiny_llama_dir, qa_data, tmp_path):
    out = tmp_path / "out"

    def terminate_after_first_progress(event, proc):
        if event["event"] == "progress" and event["step"] == 1:
            proc.send_signal(signal.SIGTERM)

    spec = make_spec(tiny_llama_dir, qa_data, out, max_steps=100_000, logging_steps=50)
    run = run_child(spec, tmp_path / "spec.json", on_event=terminate_after_first_progress)
    assert run.returncode == EXIT_CANCELLED, run.log[-3000:]
    assert Path(run.one("cancelled")["checkpoint"]).is_dir()


@pytest.mark.slow
def test_a_cancel_stops_a_long_evaluation_pass_between_batches(tiny_llama_dir, qa_data, tmp_path):
    """The hostile tester's cancel during a pass over a big eval file went unheeded until the portal killed the
    trainer 600 s later: it is now heard between eval batches, and the run ends cancelled at the step before."""
    out, cancel = tmp_path / "out", tmp_path / "cancel-run"
    eval_file = write_rows(tmp_path / "eval.jsonl", [QA] * 4000)  # a pass of 1,000 batches: seconds, not steps
    spec = make_spec(tiny_llama_dir, qa_data, out, max_steps=100, eval_steps=1, logging_steps=50, save_steps=1000)
    spec["eval_dataset_path"] = str(eval_file)
    spec["cancel_file"] = str(cancel)

    def cancel_once_step_one_is_reported(event, proc):
        if event["event"] == "progress" and event["step"] == 1:  # reported before the step's eval pass begins
            cancel.touch()

    run = run_child(spec, tmp_path / "spec.json", on_event=cancel_once_step_one_is_reported)
    assert run.returncode == EXIT_CANCELLED, run.log[-3000:]
    assert run.one("cancelled")["step"] == 1
    assert not run.of("evaluation"), "the pass at step 1 was stopped, not finished"
    assert not run.of("finished") and not (out / "mtm_manifest.json").exists()


def _error(run: ChildRun) -> dict:
    assert run.returncode == EXIT_ERROR, run.log[-3000:]
    error = run.one("error")
    assert error["message"] and error["hint"] and error["traceback"]
    assert run.events[-1] is error
    return error


def test_vanished_dataset_is_an_error_event(tiny_llama_dir, tmp_path):
    data = write_rows(tmp_path / "gone.jsonl", [QA])
    spec = make_spec(tiny_llama_dir, data, tmp_path / "out")
    data.unlink()
    error = _error(run_child(spec, tmp_path / "spec.json"))
    assert error["code"] == "dataset_not_found"
    assert str(data) in error["message"]


def test_unknown_method_and_bad_hyperparameter_are_error_events(tiny_llama_dir, qa_data, tmp_path):
    spec = make_spec(tiny_llama_dir, qa_data, tmp_path / "out")
    spec["method"] = "dreambooth"
    spec["hyperparameters"]["learning_rate"] = 5
    error = _error(run_child(spec, tmp_path / "spec.json"))
    assert "'dreambooth'" in error["message"]
    assert "'learning_rate' = 5" in error["message"]


def test_unreadable_spec_and_usage(tmp_path):
    (tmp_path / "spec.json").write_text("{not json")
    proc = subprocess.run(trainer_command(tmp_path / "spec.json"), cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == EXIT_ERROR
    error = parse_event(proc.stdout.splitlines()[-1])
    assert error["event"] == "error" and error["code"] == "invalid_spec" and "not valid JSON" in error["message"]
    usage = subprocess.run(trainer_command("a")[:-1], cwd=REPO, capture_output=True, text=True)
    assert usage.returncode == EXIT_USAGE and "usage" in usage.stderr


@pytest.mark.slow
def test_lora_targets_that_do_not_fit_are_an_error_event(tiny_llama_dir, qa_data, tmp_path):
    out = tmp_path / "out"
    spec = make_spec(tiny_llama_dir, qa_data, out, method="lora", lora_target_modules=["no_such_proj"])
    error = _error(run_child(spec, tmp_path / "spec.json"))
    assert error["code"] == "invalid_hyperparameter" and "lora_target_modules" in error["message"]


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.slow
def test_bin_weights_load_only_as_plain_tensors(copy_of_tiny_llama, qa_data, tmp_path):
    """A pytorch_model.bin whose pickle would run code is refused (weights_only=True) and the code never runs."""
    import torch
    from safetensors.torch import load_file

    marker = tmp_path / "code-ran"
    weights = load_file(copy_of_tiny_llama / "model.safetensors")
    weights["model.payload"] = _RunsCodeWhenUnpickled(marker)
    torch.save(weights, copy_of_tiny_llama / "pytorch_model.bin")
    (copy_of_tiny_llama / "model.safetensors").unlink()

    error = _error(run_child(make_spec(copy_of_tiny_llama, qa_data, tmp_path / "out"), tmp_path / "spec.json"))
    assert error["code"] == "weights_invalid" and "weights_only=True" in error["message"]
    assert not marker.exists()


def test_resume_without_a_checkpoint_is_an_error_event(tiny_llama_dir, qa_data, tmp_path):
    out = tmp_path / "out"
    spec = make_spec(tiny_llama_dir, qa_data, out)
    spec["resume_from_checkpoint"] = "latest"
    error = _error(run_child(spec, tmp_path / "spec.json"))
    assert error["code"] == "no_checkpoint" and str(out) in error["message"]


def test_resume_from_a_checkpoint_at_the_last_step_is_refused(tiny_llama_dir, qa_data, tmp_path):
    out = tmp_path / "out"
    spec = make_spec(tiny_llama_dir, qa_data, out, max_steps=2, save_steps=2)
    assert run_child(spec, tmp_path / "spec.json").returncode == EXIT_OK
    spec["resume_from_checkpoint"] = "latest"  # the same max_steps: nothing is left to train
    resumed = run_child(spec, tmp_path / "spec-resume.json")
    error = _error(resumed)
    assert error["code"] == "nothing_to_resume"
    assert error["message"] == "Nothing left to train: checkpoint-2 is already at step 2, and this run ends at step 2."
    assert not resumed.of("started") and not resumed.of("finished")


def test_a_max_seq_length_above_the_models_context_is_cut_to_it_and_said_so(tiny_llama_dir, qa_data, tmp_path):
    spec = make_spec(tiny_llama_dir, qa_data, tmp_path / "out", max_steps=1, max_seq_length=4096)  # context: 512
    run = run_child(spec, tmp_path / "spec.json")
    assert run.returncode == EXIT_OK, run.log[-3000:]
    assert run.one("started")["max_seq_length_clamped_from"] == 4096
    assert "max_seq_length 4096 is above the context length of 'test-org/tiny-llama' (512 tokens)" in run.log
    manifest = json.loads((tmp_path / "out" / "mtm_manifest.json").read_text())
    assert manifest["hyperparameters"]["max_seq_length"] == 512


@pytest.mark.parametrize(
    "error",
    [
        FileNotFoundError(2, "No such file or directory"),
        RuntimeError("Parent directory ./checkpoint-18 does not exist."),
    ],
)
def test_an_output_folder_deleted_under_the_trainer_is_named_whatever_error_met_it(tmp_path, monkeypatch, error):
    """torch.save reports a deleted folder as a RuntimeError, Python as FileNotFoundError: both name the folder."""
    from projects.trainer.__main__ import _describe

    output_dir = tmp_path / "outputs" / "vanish"
    output_dir.mkdir(parents=True)
    monkeypatch.chdir(output_dir)
    os.rmdir(output_dir)
    code, message, _hint = _describe(error, output_dir)
    assert code == "output_directory_vanished"
    assert str(output_dir) in message
