"""transformers' own verdict on a model (models_registry.deep_verdict): cached per snapshot, computed in a limited
child that a hanging, memory-hungry or crashing check cannot take the worker down with, wired into the resolve
stage, and filled by a Celery task on a real worker. Real model folders made from the tiny Llama."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from models_registry.deep_verdict import cached_verdict, compute_verdict, deep_verdict, fingerprint
from models_registry.demo import install_into_cache
from models_registry.models import ModelVerdict
from models_registry.resolution import resolve
from tests.unprivileged import call_unprivileged

# A model's own configuration code (staff trusted it with an override): the body of its config class's __init__.
OWN_CODE = """
from transformers import LlamaConfig


class OwnConfig(LlamaConfig):
    model_type = "mtm_own"

    def __init__(self, **kwargs):
{body}
        super().__init__(**kwargs)
"""


def own_code_model(tiny: Path, dest: Path, body: str) -> Path:
    """The tiny Llama with config.json pointing at the model's own config class, whose __init__ runs `body`."""
    shutil.copytree(tiny, dest)
    config = json.loads((dest / "config.json").read_text())
    config.update(model_type="mtm_own", auto_map={"AutoConfig": "configuration_own.OwnConfig"})
    (dest / "config.json").write_text(json.dumps(config))
    (dest / "configuration_own.py").write_text(OWN_CODE.format(body=body))
    return dest


def added_tokens(folder: Path, *contents: str) -> Path:
    """Tokens added to the tokenizer (ids 384, 385...) without resizing the 384-row embedding."""
    data = json.loads((folder / "tokenizer.json").read_text())
    for i, content in enumerate(contents, start=384):
        data["added_tokens"].append(
            {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False}
            | {"normalized": False, "special": False}
        )
    (folder / "tokenizer.json").write_text(json.dumps(data))
    return folder


def test_a_valid_model_is_checked_once_and_again_only_when_a_file_changes(db, hf_cache, tiny_llama_dir):
    snapshot = install_into_cache(tiny_llama_dir, hf_cache, "test-org/tiny-llama")
    res = resolve("test-org/tiny-llama", cache_dir=hf_cache)
    assert cached_verdict(res.path) is None  # never checked

    first = deep_verdict(res)
    assert first.valid and first.errors == [], first.errors
    assert first.facts["weight_files"] == ["model.safetensors"] and first.facts["embedding_rows"] == 384
    assert set(first.versions) >= {"transformers", "torch", "tokenizers", "peft"}
    row = ModelVerdict.objects.get()
    assert (row.folder, row.fingerprint, row.valid) == (str(snapshot), first.fingerprint, True)

    again = deep_verdict(resolve("test-org/tiny-llama", cache_dir=hf_cache))
    assert again.checked_at == first.checked_at  # read from the cache, not computed again

    blob = Path(os.path.realpath(snapshot / "tokenizer_config.json"))
    stat = blob.stat()
    os.utime(blob, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert cached_verdict(res.path) is None  # the snapshot changed: the verdict no longer holds
    changed = deep_verdict(res)
    assert changed.fingerprint != first.fingerprint and changed.checked_at > first.checked_at
    assert ModelVerdict.objects.count() == 1  # one row per folder, replaced


def test_the_fingerprint_follows_modes_blob_names_and_the_trust_setting(tmp_path, tiny_llama_dir):
    folder = shutil.copytree(tiny_llama_dir, tmp_path / "model")
    before = fingerprint(folder)
    assert fingerprint(folder) == before
    assert fingerprint(folder, trust_remote_code=True) != before
    (folder / "tokenizer.json").chmod(0o600)
    assert fingerprint(folder) != before
    (folder / "tokenizer.json").chmod(0o644)
    (folder / "extra.txt").symlink_to("tokenizer.json")
    assert fingerprint(folder) != before


def test_a_refusal_is_cached_and_fails_the_resolve_stage_with_transformers_words(team, hf_cache, tiny_llama_dir):
    from projects.models import RunStatus, TrainingProject, TrainingRun
    from projects.runs.config import RunConfig
    from projects.runs.stages import resolve_stage

    folder = added_tokens(shutil.copytree(tiny_llama_dir, team["root"] / "tool-tokens"), "<|tool_call|>", "<|tool|>")
    install_into_cache(folder, hf_cache, "test-org/tool-tokens")
    assert resolve("test-org/tool-tokens", cache_dir=hf_cache).valid  # the instant rules accept it
    project = TrainingProject.objects.create(
        name="tools",
        owner=team["alice"],
        model_name="test-org/tool-tokens",
        dataset_path=str(team["root"] / "datasets" / "qa.jsonl"),
        output_directory=str(team["root"] / "outputs" / "tools"),
    )
    run = TrainingRun.objects.create(
        project=project, started_by=team["alice"], config=RunConfig.of_project(project).model_dump()
    )
    assert resolve_stage(run.pk) is False
    run.refresh_from_db()
    assert (run.status, run.stage_failed, run.error_code) == (
        RunStatus.FAILED,
        "resolve",
        "tokenizer_exceeds_embedding",
    )
    assert "385 ('<|tool|>')" in run.error_message and "384 rows" in run.error_message
    assert "resize_token_embeddings" in run.error_hint
    [row] = ModelVerdict.objects.all()
    assert row.valid is False and row.result["errors"][0]["code"] == "tokenizer_exceeds_embedding"


def test_an_unreadable_file_is_named_unreadable_by_the_workers_user_never_not_downloaded(tiny_llama_dir):
    """chmod 000 on the weights: as root the check runs in a child that drops to nobody (tests/unprivileged.py)."""
    scratch = Path(tempfile.mkdtemp(prefix="mtm-unreadable-", dir="/tmp"))
    try:
        scratch.chmod(0o755)
        folder = shutil.copytree(tiny_llama_dir, scratch / "model")
        (folder / "model.safetensors").chmod(0)
        found = call_unprivileged("tests.unprivileged_transformers:examine", str(folder), False, "test-org/locked")
        judged = call_unprivileged("tests.unprivileged_transformers:judge", str(folder))
    finally:
        shutil.rmtree(scratch)
    assert judged["loads"] is False  # transformers cannot read it either
    [error] = found["errors"]
    uid = 65534 if os.getuid() == 0 else os.getuid()
    assert error["code"] == "model_unreadable"
    assert (
        f"unreadable by the worker's user (uid {uid})" in error["message"] and "model.safetensors" in error["message"]
    )
    assert "download" not in error["message"] and "Nothing needs to be downloaded again" in error["hint"]


@pytest.mark.parametrize(
    ("body", "code", "said"),
    [
        ("        while True:\n            pass", "verdict_too_slow", "more than 2 s of CPU time"),
        ("        self.hoard = bytearray(8 * 1024**3)", "verdict_out_of_memory", "more than 256 MB of memory"),
        ("        import ctypes\n        ctypes.string_at(0)", "verdict_out_of_memory", "or its check process crashed"),
    ],
    ids=["hangs", "eats-memory", "segfaults"],
)
def test_a_check_that_hangs_eats_memory_or_crashes_gets_a_verdict_naming_it(
    settings, tmp_path, tiny_llama_dir, body, code, said
):
    settings.MTM_VERDICT_CPU_SECONDS = 2
    settings.MTM_VERDICT_MEMORY_MB = 256
    folder = own_code_model(tiny_llama_dir, tmp_path / "own", body)
    verdict = compute_verdict(folder, trust_remote_code=True, model_name="test-org/own")
    assert verdict.valid is False
    [error] = verdict.errors
    assert error.code == code and said in error.message and "the worker is unaffected" in error.message
    # This process (the worker's, in production) goes on checking other models.
    assert compute_verdict(tiny_llama_dir, model_name="test-org/tiny-llama").valid


def test_the_celery_task_fills_the_cache_on_a_worker_that_survives_a_crashing_check(
    transactional_db, celery_worker, tiny_llama_dir
):
    from models_registry.tasks import check_model_deep

    scratch = Path(tempfile.mkdtemp(prefix="mtm-deep-task-"))
    try:
        crashing = own_code_model(tiny_llama_dir, scratch / "own", "        import ctypes\n        ctypes.string_at(0)")
        intact = shutil.copytree(tiny_llama_dir, scratch / "intact")
        crashed = check_model_deep.delay(str(crashing), True, "test-org/own").get(timeout=120)
        assert crashed["valid"] is False and crashed["errors"][0]["code"] == "verdict_out_of_memory"
        assert celery_worker.process.poll() is None  # the worker is still running
        checked = check_model_deep.delay(str(intact), False, "test-org/tiny-llama").get(timeout=120)
        assert checked["valid"] is True
        rows = {row.folder: row for row in ModelVerdict.objects.all()}
        assert rows[str(intact)].valid and rows[str(intact)].fingerprint == checked["fingerprint"]
        assert rows[str(crashing)].valid is False
    finally:
        shutil.rmtree(scratch)
