"""A run's folder swapped after the run by a member who can write in the output directory: renamed away and a copy
with a planted chat template put at its path, or a link to another member's run put there. Publishing refuses it;
a name published before resolves invalid, never through the link (the resolver, validate-model, the published
model's API, the model list); the playground refuses to start or answer a conversation with it; the adapter
download and the run page say so. Rows from before the run folder was recorded are held to no link on the path
and a manifest with a finish time.

The runs are rows whose folders hold what a run leaves (tests/test_publish.py), recorded on the row as the train
stage records the folder it creates; nothing is trained here."""

# ruff: noqa: F811  (the fixtures imported from tests.test_publish are the tests' parameters)
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from models_registry.lookup import available_models, resolve_model
from models_registry.models import PublishedModel
from mtm.audit import Actor, Channel
from playground import engine
from playground.models import Conversation, Generation, GenerationStatus
from projects.models import TrainingRun
from projects.publishing.services import PublishRefused, publish_run
from tests.api_client import call
from tests.test_publish import api, full_fine_tune_run, lora_run, manifest, project_of, team  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db

PLANTED = '{{ "PWNED" }}'


def swap_for_a_copy(run: TrainingRun) -> Path:
    """The tester's swap: the run folder renamed away, a folder of hers with the same files (and a planted chat
    template) put at its path."""
    folder = Path(run.run_folder)
    folder.rename(folder.with_name(folder.name + ".orig"))
    shutil.copytree(folder.with_name(folder.name + ".orig"), folder)
    (folder / "chat_template.jinja").write_text(PLANTED)
    return folder


def swap_for_a_link(run: TrainingRun, target: str) -> Path:
    folder = Path(run.run_folder)
    folder.rename(folder.with_name(folder.name + ".orig"))
    folder.symlink_to(target, target_is_directory=True)
    return folder


def refused_as_changed(problems: list[dict], folder: str) -> None:
    assert [p["code"] for p in problems] == ["run_folder_changed"], problems
    assert folder in problems[0]["message"] and "replaced since the run" in problems[0]["message"]
    assert problems[0]["hint"]


def test_a_run_folder_swapped_for_a_copy_is_not_published(team, api):
    run = team["run"]
    swap_for_a_copy(run)
    resp = api("alice", run, "team/after-swap")
    assert resp.status_code == 422
    refused_as_changed(resp.json()["errors"], run.run_folder)
    assert not PublishedModel.objects.exists()


@pytest.mark.parametrize("swap", ["copy", "link"])
def test_a_published_name_whose_run_folder_was_swapped_resolves_invalid(team, api, client, tiny_llama_dir, swap):
    run = team["run"]
    bobs = full_fine_tune_run(project_of(team, team["mallory"], "bobs"), tiny_llama_dir)
    published = api("alice", run, "team/support-bot")
    assert published.status_code == 201 and resolve_model("team/support-bot").valid
    if swap == "copy":
        swap_for_a_copy(run)
    else:
        swap_for_a_link(run, bobs.run_folder)  # bob's run folder, a model that passes every format check

    resolution = resolve_model("team/support-bot")
    assert not resolution.valid and resolution.source == "portal" and resolution.path is None
    refused_as_changed([p.model_dump() for p in resolution.errors], run.run_folder)
    assert bobs.run_folder not in json.dumps(
        resolution.model_dump(mode="json")
    )  # nothing read or named through the link
    checked = call(
        client, "post", "/projects/validate-model", {"model_name": "team/support-bot"}, team["tokens"]["mallory"]
    )
    assert checked.status_code == 200 and checked.json()["valid"] is False
    refused_as_changed(checked.json()["errors"], run.run_folder)
    row = call(client, "get", f"/published-models/{published.json()['id']}", None, team["tokens"]["mallory"]).json()
    assert row["validation"]["valid"] is False
    refused_as_changed(row["validation"]["errors"], run.run_folder)
    listed = {m.model_name: m for m in available_models()[1]}
    assert not listed["team/support-bot"].valid and listed["team/support-bot"].errors[0].code == "run_folder_changed"
    # bob's own run is untouched by it: his folder is still his run's.
    assert api("mallory", bobs, "mallory/bobs-bot").status_code == 201


def test_a_link_above_the_run_folder_is_not_followed_either(team, api, tiny_llama_dir):
    run = team["run"]
    bobs = full_fine_tune_run(project_of(team, team["mallory"], "bobs"), tiny_llama_dir)
    assert api("alice", run, "team/support-bot").status_code == 201
    # alice's output directory swapped for one of hers whose run-<id> is a copy of bob's run.
    outputs = Path(team["project"].output_directory)
    outputs.rename(outputs.with_name("support.orig"))
    planted = outputs.with_name("planted")
    shutil.copytree(bobs.run_folder, planted / Path(run.run_folder).name)
    outputs.symlink_to(planted, target_is_directory=True)
    resolution = resolve_model("team/support-bot")
    assert not resolution.valid and resolution.path is None
    refused_as_changed([p.model_dump() for p in resolution.errors], run.run_folder)


def test_the_playground_refuses_a_swapped_run_at_start_send_and_load(team, client):
    run, token = team["run"], team["tokens"]["mallory"]
    before = call(client, "post", "/playground/conversations", {"run_id": run.pk}, token)
    assert before.status_code == 201, before.content
    swap_for_a_copy(run)

    started = call(client, "post", "/playground/conversations", {"run_id": run.pk}, token)
    assert started.status_code == 409
    refused_as_changed(started.json()["errors"], run.run_folder)
    sent = call(client, "post", f"/playground/conversations/{before.json()['id']}/messages", {"message": "hi"}, token)
    assert sent.status_code == 409
    refused_as_changed(sent.json()["errors"], run.run_folder)
    # A message queued before the swap: the worker refuses it before loading anything from the folder.
    conversation = Conversation.objects.get(pk=before.json()["id"])
    queued = Generation.objects.create(conversation=conversation, owner=team["mallory"], message="hi", params={})
    engine.run_generation(queued.pk, "test-worker")
    queued.refresh_from_db()
    assert (queued.status, queued.error_code) == (GenerationStatus.FAILED, "run_folder_changed")
    assert run.run_folder in queued.error_message and PLANTED not in queued.reply


def test_the_adapter_download_and_run_page_say_the_folder_changed(team, lora_run, client):
    run, _ = lora_run
    token = team["tokens"]["alice"]
    assert call(client, "get", f"/runs/{run.pk}", None, token).json()["files_missing"] is False
    swap_for_a_copy(run)
    resp = call(client, "get", f"/runs/{run.pk}/adapter.tar.gz", None, token)
    assert resp.status_code == 409
    refused_as_changed(resp.json()["errors"], run.run_folder)
    assert call(client, "get", f"/runs/{run.pk}", None, token).json()["files_missing"] is True


def test_a_row_without_a_recorded_folder_needs_a_finished_manifest_and_no_link(team, tiny_llama_dir):
    alice = Actor(team["alice"], Channel.CLI)
    run = team["run"]
    TrainingRun.objects.filter(pk=run.pk).update(run_folder_identity="")  # trained before folders were recorded
    run.refresh_from_db()
    unfinished = {key: value for key, value in manifest(".").items() if key != "finished_at"}
    (Path(run.run_folder) / "mtm_manifest.json").write_text(json.dumps(unfinished))
    with pytest.raises(PublishRefused) as refused:
        publish_run(run, "team/legacy", actor=alice)
    assert [p.code for p in refused.value.problems] == ["run_folder_changed"]
    assert "finish time" in refused.value.problems[0].message
    (Path(run.run_folder) / "mtm_manifest.json").write_text(json.dumps(manifest(".")))  # a finish time
    assert publish_run(run, "team/legacy", actor=alice).path == run.run_folder
    assert resolve_model("team/legacy").valid
    bobs = full_fine_tune_run(project_of(team, team["mallory"], "bobs"), tiny_llama_dir)
    swap_for_a_link(run, bobs.run_folder)
    resolution = resolve_model("team/legacy")
    assert not resolution.valid and [e.code for e in resolution.errors] == ["run_folder_changed"]


def test_the_worker_loads_from_the_folder_it_checked_not_one_swapped_in_after(team):
    from playground.engine import pinned
    from playground.targets import for_run
    from projects.runs.folder import RunFolderRefused

    run = team["run"]
    spec = for_run(run)  # checked here, as the worker checks before each load
    with pinned(spec) as reached:
        assert reached.model_dir.startswith("/proc/self/fd/") and spec.model_dir == run.run_folder
        swap_for_a_copy(run)  # while the model loads
        template = Path(reached.model_dir) / "chat_template.jinja"
        assert (template.read_text() if template.exists() else "") != PLANTED  # still the folder the run made
        assert (Path(run.run_folder) / "chat_template.jinja").read_text() == PLANTED  # the path: hers
    with pytest.raises(RunFolderRefused) as refused, pinned(spec):  # swapped between the check and the load
        pass
    assert refused.value.problem.code == "run_folder_changed"
