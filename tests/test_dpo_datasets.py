"""Preference pairs for the DPO objective, on real files and the real tiny Llama tokenizer: the three row shapes in
JSONL, JSON and CSV, bad rows named by number, token lengths of prompt and answers, the objective/dataset match at
save, the DPO settings' checks and the memory estimate's frozen reference copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from mtm.audit import Actor, Channel
from projects.datasets import inspect_dataset
from projects.datasets.pairs import PREFERENCE, split_pair
from projects.hyperparameters import Hyperparameters
from projects.runs.scheduling.memory_estimate import estimate, read_model_shape, setup_for
from projects.services import ProjectInvalid, check_project, create_project
from tests.clients import secure_client
from tests.pipeline_helpers import write_jsonl

TEXT_PAIRS = [
    {"prompt": "Reply to the guest:", "chosen": " Welcome, please come in.", "rejected": " Go away."},
    {"prompt": "Answer the customer:", "chosen": " Thanks for asking.", "rejected": " Whatever."},
]
USER = {"role": "user", "content": "Hi, who are you?"}
GOOD = {"role": "assistant", "content": "A helpful assistant."}
BAD = {"role": "assistant", "content": "Nobody you need to know."}
SHARED_PROMPT = [{"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}] * 2
IMPLICIT_PROMPT = [{"chosen": [USER, GOOD], "rejected": [USER, BAD]}] * 2


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def write(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("rows", [TEXT_PAIRS, SHARED_PROMPT, IMPLICIT_PROMPT], ids=["text", "shared", "implicit"])
def test_each_pair_shape_is_read_with_prompt_and_answer_lengths(tmp_path, tokenizer, rows):
    report = inspect_dataset(write(tmp_path / "pairs.jsonl", rows), tokenizer, 64)
    assert report.valid, report.errors
    assert (report.format, report.rows, report.preview[0]) == (PREFERENCE, 2, rows[0])
    stats = report.pair_token_stats
    assert set(stats) == {"prompt", "chosen", "rejected"}
    assert all(stats[part].min > 0 for part in stats)
    # The whole pair is the prompt and the longer answer, measured against max_seq_length.
    assert report.token_stats.max == stats["prompt"].max + max(stats["chosen"].max, stats["rejected"].max)
    assert report.model_dump(mode="json")["pair_token_stats"]["prompt"]["max_seq_length"] == 32  # half of 64 by default


def test_implicit_prompt_is_the_messages_both_answers_start_with():
    assert split_pair(IMPLICIT_PROMPT[0]) == ([USER], [GOOD], [BAD])


def test_pairs_read_the_same_from_a_json_array_and_csv(tmp_path, tokenizer):
    (tmp_path / "pairs.json").write_text(json.dumps(TEXT_PAIRS))
    (tmp_path / "pairs.csv").write_text(
        "prompt,chosen,rejected\n" + "".join(f'"{r["prompt"]}","{r["chosen"]}","{r["rejected"]}"\n' for r in TEXT_PAIRS)
    )
    for name in ("pairs.json", "pairs.csv"):
        report = inspect_dataset(tmp_path / name, tokenizer, 64)
        assert report.valid and report.format == PREFERENCE and report.preview == TEXT_PAIRS, name


def test_bad_pairs_are_named_by_row_with_what_is_wrong(tmp_path, tokenizer):
    rows = [
        TEXT_PAIRS[0],
        {"prompt": "Say hi:", "chosen": " Hi.", "rejected": " Hi."},  # 2: the same answer twice
        {"prompt": "Say hi:", "chosen": "  ", "rejected": " Bye."},  # 3: an empty answer
        {"prompt": "Say hi:", "chosen": " Hi."},  # 4: no rejected
        {"chosen": " Hi.", "rejected": " Bye."},  # 5: text answers without a prompt
        {"prompt": [USER], "chosen": [GOOD], "rejected": [{"role": "assistant", "content": ""}]},  # 6: empty
        {"chosen": [USER, GOOD], "rejected": [USER, GOOD]},  # 7: the same conversation twice
        {"prompt": "Say hi:", "chosen": " Hi.", "rejected": [BAD]},  # 8: a string and a message list
        {"chosen": [USER, GOOD], "rejected": [{"role": "user", "content": "other"}, BAD]},  # 9: no shared prompt
        {"prompt": "Say hi:", "chosen": [GOOD], "rejected": [BAD]},  # 10: a text prompt for message answers
        {"prompt": [USER], "chosen": [], "rejected": []},  # 11: no answers at all (not "the same answer")
    ]
    report = inspect_dataset(write(tmp_path / "bad.jsonl", rows), tokenizer, 64)
    messages = [p.message for p in report.errors]
    assert [m.split(":")[0] for m in messages] == [f"Row {n} (line {n})" for n in range(2, 12)]
    assert "'chosen' and 'rejected' are the same answer" in messages[0]
    assert "'chosen' is empty" in messages[1]
    assert "missing 'rejected'" in messages[2]
    assert "missing 'prompt'" in messages[3]
    assert "'rejected' is empty" in messages[4]
    assert "the same answer" in messages[5]
    assert "both be strings or both be message lists" in messages[6]
    assert "do not start with the same messages" in messages[7]
    assert "'prompt' is a string but the answers are message lists" in messages[8]  # the attack's contradiction
    assert "'chosen' is empty" in messages[9]
    assert all(p.code == "dataset_bad_row" and "chosen" in p.hint for p in report.errors)


def test_a_first_row_missing_its_rejected_answer_is_named_too(tmp_path, tokenizer):
    report = inspect_dataset(write(tmp_path / "first.jsonl", [{"prompt": "x", "chosen": " y"}, *TEXT_PAIRS]), tokenizer)
    assert [p.message for p in report.errors] == ["Row 1 (line 1): missing 'rejected'."]


def test_long_prompts_and_pairs_are_warned_about_against_their_limits(tmp_path, tokenizer):
    rows = [{"prompt": "word " * 40, "chosen": " yes" * 50, "rejected": " no."}, TEXT_PAIRS[0]]
    report = inspect_dataset(write(tmp_path / "long.jsonl", rows), tokenizer, 48, max_prompt_length=16)
    assert report.valid and report.pair_token_stats["prompt"].over_max == 1
    codes = {p.code: p.message for p in report.warnings}
    assert (
        "1 of 2 pairs have a prompt longer than the max prompt length (16 tokens)" in codes["dataset_prompt_truncation"]
    )
    assert "1 of 2 pairs are longer than the max sequence length (48 tokens)" in codes["dataset_truncation"]


# --- the project: objective and dataset must fit ------------------------------------------------------------------


def project_data(root: Path, model_name: str, dataset: Path, **hyper) -> dict:
    return {
        "name": "prefs",
        "model_name": model_name,
        "dataset_path": str(dataset),
        "output_directory": str(root / "outputs" / "prefs"),
        "method": "lora",
        "hyperparameters": {"max_steps": 5, "max_seq_length": 64, **hyper},
    }


def test_a_dpo_project_on_pairs_is_created_and_mismatches_are_refused(portal_roots, tiny_llama_in_cache):
    name = tiny_llama_in_cache[0]
    pairs = write_jsonl(portal_roots / "datasets" / "pairs.jsonl", TEXT_PAIRS)
    qa = portal_roots / "datasets" / "qa.jsonl"
    owner = User.objects.create_user("pat")
    project = create_project(project_data(portal_roots, name, pairs, objective="dpo"), actor=Actor(owner, Channel.CLI))
    assert project.dataset_format == PREFERENCE and project.hyperparameters["dpo_loss_type"] == "sigmoid"

    sft_on_pairs = check_project(project_data(portal_roots, name, pairs))
    problem = sft_on_pairs.errors["dataset_path"][0]
    assert problem.code == "dataset_is_pairs" and "objective to dpo" in problem.hint
    dpo_on_qa = check_project(project_data(portal_roots, name, qa, objective="dpo"))
    problem = dpo_on_qa.errors["dataset_path"][0]
    assert problem.code == "dataset_not_pairs" and "'prompt_completion' rows" in problem.message
    with pytest.raises(ProjectInvalid):
        create_project(project_data(portal_roots, name, qa, objective="dpo"), actor=Actor(owner, Channel.CLI))


def test_dpo_settings_are_checked_with_messages_naming_them():
    _, problems = Hyperparameters.from_dict({"objective": "dpo", "packing": True})
    assert ["packing does not apply to the DPO objective" in p.message for p in problems] == [True]
    _, problems = Hyperparameters.from_dict({"objective": "dpo", "max_seq_length": 64, "max_prompt_length": 64})
    assert "leaves no room for the answers" in problems[0].message
    _, problems = Hyperparameters.from_dict({"objective": "ppo", "dpo_loss_type": "kto", "dpo_beta": 0})
    assert sorted(p.message.split("'")[1] for p in problems) == ["dpo_beta", "dpo_loss_type", "objective"]
    assert Hyperparameters(max_seq_length=64).prompt_limit == 32  # 0: half the max sequence length
    _, problems = Hyperparameters.from_dict({"objective": "dpo", "devices": 2})
    assert [p.message for p in problems] == [
        "Hyperparameter 'devices' = 2, but a DPO run trains on one device in this version."
    ]
    assert Hyperparameters.from_dict({"objective": "sft", "devices": 2})[1] == []
    _, problems = Hyperparameters.from_dict({"objective": "dpo", "eval_fraction": 0.1})
    assert ["apply to the SFT objective" in p.message for p in problems] == [True]


def test_the_new_form_carries_the_dpo_fieldset_and_a_pairs_project_page_lists_its_settings(
    portal_roots, tiny_llama_in_cache
):
    owner = User.objects.create_user("kim", password="pw")
    pairs = write_jsonl(portal_roots / "datasets" / "pairs.jsonl", TEXT_PAIRS)
    data = project_data(portal_roots, tiny_llama_in_cache[0], pairs, objective="dpo", dpo_beta=0.25)
    project = create_project(data, actor=Actor(owner, Channel.CLI))
    client = secure_client(owner)
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert "DPO beta" in page and "0.25" in page and "DPO loss" in page
    assert "· DPO</span>" in page and "· DPO</td>" in client.get("/projects/").content.decode()  # the objective shows
    assert '<fieldset class="dpo-fields">' in client.get("/projects/new/").content.decode()


# --- the memory estimate -------------------------------------------------------------------------------------------


def test_a_full_dpo_run_counts_its_frozen_reference_copy_and_lora_does_not(tiny_llama_dir):
    shape = read_model_shape(tiny_llama_dir)
    for method in ("full", "lora"):
        sft = estimate(shape, setup_for(method, Hyperparameters(), on_gpu=True))
        dpo = estimate(shape, setup_for(method, Hyperparameters(objective="dpo"), on_gpu=True))
        assert dpo.activations_bytes == 2 * sft.activations_bytes  # chosen and rejected: two sequences a pair
        if method == "full":
            assert dpo.reference_bytes == shape.parameters * 2  # bf16 on a GPU
            assert ("Reference model (frozen copy, DPO)", dpo.reference_bytes) in dpo.rows()
        else:
            assert dpo.reference_bytes == 0  # the base with the adapter disabled is the reference


def test_the_preference_check_warns_only_about_no_gain_or_too_few_pairs():
    """A base model already right on every held-out pair gets no "train longer" warning (nothing was left to gain),
    and a check on too few held-out pairs says so instead of judging them as if they were enough."""
    from projects.runs.validation.checks import preference_warning

    assert preference_warning(1.0, 1.0, 20) == ""  # nothing left to gain is not a failure to learn
    assert preference_warning(0.5, 0.9, 20) == ""
    assert "no more often than the base model" in preference_warning(0.6, 0.6, 20)
    assert "no more often than the base model" in preference_warning(0.8, 0.7, 20)
    assert preference_warning(1.0, 1.0, 4) == (
        "4 held-out pairs are too few to judge a difference: hold out more (preference_pairs) in a larger file."
    )
    assert preference_warning(0.5, 0.5, 1).endswith("not swapped. 1 held-out pair is too few to judge a difference.")


def test_the_configuration_panel_says_how_many_pairs_were_held_out():
    from projects.models import TrainingRun
    from projects.runs.config import RunConfig, config_rows

    config = RunConfig.model_validate(
        {"model_name": "m", "method": "lora", "hyperparameters": {"objective": "dpo"}, "held_out_pairs": 4}
    )
    rows = {row.key: row.value for row in config_rows(TrainingRun(), config)}
    assert rows["preference_pairs"] == "16 (held out: 4, at most a fifth of the file)"
