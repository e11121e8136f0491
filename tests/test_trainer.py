"""The trainer child process, run exactly as the pipeline runs it (`python -m projects.trainer SPEC.json`), on the
CPU with the tiny Llama; plus its hyperparameters, its event protocol and its packing."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from projects.hyperparameters import Hyperparameters
from projects.trainer.batching import IGNORE_INDEX, PackedCollator, PaddedCollator, pack_examples
from projects.trainer.errors import TrainerError
from projects.trainer.events import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    format_event,
    parse_event,
    trainer_command,
)
from projects.trainer.spec import read_spec
from tests.trainer_helpers import QA, REPO, error_of, make_spec, run_child, write_rows

# -- helpers ---------------------------------------------------------------------------------------------------


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


def test_vanished_dataset_is_an_error_event(tiny_llama_dir, tmp_path):
    data = write_rows(tmp_path / "gone.jsonl", [QA])
    spec = make_spec(tiny_llama_dir, data, tmp_path / "out")
    data.unlink()
    error = error_of(run_child(spec, tmp_path / "spec.json"))
    assert error["code"] == "dataset_not_found"
    assert str(data) in error["message"]


def test_unknown_method_and_bad_hyperparameter_are_error_events(tiny_llama_dir, qa_data, tmp_path):
    spec = make_spec(tiny_llama_dir, qa_data, tmp_path / "out")
    spec["method"] = "dreambooth"
    spec["hyperparameters"]["learning_rate"] = 5
    error = error_of(run_child(spec, tmp_path / "spec.json"))
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
    error = error_of(run_child(spec, tmp_path / "spec.json"))
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

    error = error_of(run_child(make_spec(copy_of_tiny_llama, qa_data, tmp_path / "out"), tmp_path / "spec.json"))
    assert error["code"] == "weights_invalid" and "weights_only=True" in error["message"]
    assert not marker.exists()


def test_resume_without_a_checkpoint_is_an_error_event(tiny_llama_dir, qa_data, tmp_path):
    out = tmp_path / "out"
    spec = make_spec(tiny_llama_dir, qa_data, out)
    spec["resume_from_checkpoint"] = "latest"
    error = error_of(run_child(spec, tmp_path / "spec.json"))
    assert error["code"] == "no_checkpoint" and str(out) in error["message"]


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
