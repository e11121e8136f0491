"""A model chatted with in the playground, from the shared Hugging Face cache in which members can write, changed
between the worker's resolve and its load: the snapshot's chat template swapped for a link to another member's
private upload. The worker loads the model only through the snapshot's files opened as the resolve check accepts
them (behind a private folder in its var/playground/), so the swap ends the answer with base_model_changed naming the
file, and nothing of the upload reaches the tokenizer or the prompt.

The engine as the inference worker runs it, in-process; the tiny Llama in a real HF cache layout; a real upload."""

from __future__ import annotations

from pathlib import Path

import pytest

from playground import engine
from playground.held_model import private_parent
from playground.models import Conversation, Generation, GenerationStatus, TargetKind
from playground.targets import for_model
from projects.runs.folder import RunFolderRefused
from tests.hfcache import make_model_repo, write_blob
from tests.test_cache_base_swaps import ALICES_SECRET, TEMPLATE, alices_upload, swap_for_link

pytestmark = pytest.mark.django_db


@pytest.fixture
def private_var(settings, tmp_path) -> Path:
    settings.VAR_DIR = tmp_path / "var"
    settings.VAR_DIR.mkdir(mode=0o700)
    return settings.VAR_DIR


@pytest.fixture
def unloaded():
    """No model left loaded by one test for the next."""
    yield
    with engine._lock:
        engine._unload_locked()


def test_a_snapshot_file_swapped_between_resolve_and_load_is_refused_and_not_read(
    team, tiny_llama_in_cache, private_var, unloaded
):
    name, snapshot = tiny_llama_in_cache
    secret = alices_upload(team)
    spec = for_model(name)  # the worker's resolve
    assert spec.model_dir == str(snapshot)
    swap_for_link(snapshot / TEMPLATE, secret)  # before the load

    with pytest.raises(RunFolderRefused) as refused, engine._lock:
        engine.loaded_for(spec, "test-worker", f"model:{name}@")
    problem = refused.value.problem
    assert problem.code == "base_model_changed", problem
    assert f"{snapshot}/{TEMPLATE}" in problem.message and "link" in problem.message
    assert "playground" in problem.message and "ALICE-SECRET" not in problem.message
    assert "hf download" in problem.hint and "send the message again" in problem.hint
    assert engine._loaded is None  # nothing loaded, nothing of her file in a tokenizer
    assert not list(private_parent().glob(".base-model-*"))  # the private folder went with the refusal


def test_a_whole_turn_ends_with_the_refusal_naming_the_file(team, tiny_llama_in_cache, hf_cache, private_var, unloaded):
    """A turn as the worker runs it, on a snapshot whose chat template is a link into another repo's blobs (which
    the resolver lets through, so the load is what refuses it): the answer fails with the Problem, and no reply is
    rendered from that file."""
    name, snapshot = tiny_llama_in_cache
    other = make_model_repo(hf_cache, "team/other", tokenizer=False).parent.parent
    theirs = write_blob(other, b"THEIRS {{ messages }}")
    swap_for_link(snapshot / TEMPLATE, f"../../../{other.name}/blobs/{theirs.name}")
    conversation = Conversation.objects.create(owner=team["mallory"], kind=TargetKind.MODEL, model_name=name)
    asked = Generation.objects.create(
        conversation=conversation, owner=team["mallory"], message="hi", params={}, status=GenerationStatus.RUNNING
    )  # claimed by this worker
    engine.run_generation(asked.pk, "test-worker")
    asked.refresh_from_db()
    assert (asked.status, asked.error_code) == (GenerationStatus.FAILED, "base_model_changed"), asked.error_message
    assert f"{snapshot}/{TEMPLATE}" in asked.error_message and "own blobs/" in asked.error_message
    assert "hf download" in asked.error_hint and "THEIRS" not in asked.reply
    assert engine._loaded is None


def test_a_clean_load_reads_the_held_files_and_lets_them_go(team, tiny_llama_in_cache, private_var, unloaded):
    name, snapshot = tiny_llama_in_cache
    secret = alices_upload(team)
    checked = (snapshot / TEMPLATE).read_text()
    spec = for_model(name)
    with engine._lock:
        loaded, seconds = engine.loaded_for(spec, "test-worker", f"model:{name}@")
    assert seconds is not None and loaded.tokenizer.chat_template == checked
    assert (private_parent().stat().st_mode & 0o777) == 0o700
    assert not list(private_parent().glob(".base-model-*"))  # released once loaded
    swap_for_link(snapshot / TEMPLATE, secret)  # after the load: the loaded model is what was checked
    rendered = loaded.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert "ALICE-SECRET" not in rendered and Path(snapshot, TEMPLATE).read_bytes() == ALICES_SECRET
