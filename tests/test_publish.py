"""Publishing a succeeded run's model under a name, and downloading a LoRA adapter, under attack: someone else's
run, a name that shadows a cache model or an override, a run that kept no model, a manifest or folder swapped for
a path elsewhere, an unpublish by a stranger, a download by nobody, and links planted in a run's folder.

The runs here are rows whose folders hold what a run leaves (the real tiny Llama saved as a full fine-tune, or
adapter files and a manifest): the publishing checks read files, not training. tests/test_publish_training.py
trains for real and builds a second project on the published model."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from models_registry.lookup import resolve_model
from models_registry.models import ModelOverride, PublishedModel
from mtm.audit import Actor, Channel
from mtm.models import AuditEvent
from mtm.shared.claims import identity_of
from projects.models import RunStatus, TrainingProject, TrainingRun
from projects.publishing.services import PublishRefused, publish_run
from projects.runs.config import RunConfig
from tests.api_client import call, make_user_token
from tests.clients import secure_client

SHA = "ab" * 32


def manifest(model_dir: str | None, method: str = "full") -> dict:
    return {
        "format": 1,
        "base_model": {"name": "test-org/tiny-llama", "revision": "0123456789abcdef", "path": "/cache/x"},
        "method": method,
        "dataset": {"path": "/data/qa.jsonl", "sha256": SHA},
        "layout": {"model_dir": model_dir, "adapter_dir": None if method == "full" else "."},
        "finished_at": "2026-12-01T10:00:00+00:00",
    }


def finished_run(project: TrainingProject, *, status: str = RunStatus.SUCCEEDED) -> TrainingRun:
    run = TrainingRun.objects.create(project=project, started_by=project.owner, status=status)
    run.run_folder = str(Path(project.output_directory) / f"run-{run.pk}")
    run.save(update_fields=["run_folder"])
    return run


def project_of(team: dict, owner, name: str, model_name: str = "test-org/tiny-llama", **fields) -> TrainingProject:
    """Another project on the team's dataset, its output directory under the portal's root."""
    return TrainingProject.objects.create(
        name=name,
        owner=owner,
        model_name=model_name,
        dataset_path=team["project"].dataset_path,
        output_directory=str(team["root"] / "outputs" / name),
        **fields,
    )


def as_created(run: TrainingRun) -> TrainingRun:
    """The run's folder recorded on its row, as the train stage records the folder it creates."""
    run.run_folder_identity = identity_of(run.run_folder)
    run.save(update_fields=["run_folder_identity"])
    return run


def full_fine_tune_run(project: TrainingProject, model_dir: Path) -> TrainingRun:
    """A succeeded full fine-tune as the trainer leaves it: a complete model at the top of its folder, a manifest."""
    run = finished_run(project)
    shutil.copytree(model_dir, run.run_folder)
    (Path(run.run_folder) / "mtm_manifest.json").write_text(json.dumps(manifest(".")))
    return as_created(run)


@pytest.fixture
def team(portal_roots, tiny_llama_in_cache, tiny_llama_dir):
    alice, alice_token = make_user_token("alice")
    mallory, mallory_token = make_user_token("mallory")
    staff, staff_token = make_user_token("boss", staff=True)
    project = TrainingProject.objects.create(
        name="support",
        owner=alice,
        model_name=tiny_llama_in_cache[0],
        dataset_path=str(portal_roots / "datasets" / "qa.jsonl"),
        output_directory=str(portal_roots / "outputs" / "support"),
        method="full",
    )
    run = full_fine_tune_run(project, tiny_llama_dir)
    return {
        "root": portal_roots,
        "alice": alice,
        "mallory": mallory,
        "staff": staff,
        "tokens": {"alice": alice_token, "mallory": mallory_token, "staff": staff_token},
        "project": project,
        "run": run,
    }


@pytest.fixture
def api(team, client):
    def publish(who: str, run: TrainingRun, name: str, **body):
        return call(client, "post", f"/runs/{run.pk}/publish", {"model_name": name, **body}, team["tokens"][who])

    return publish


def codes(resp) -> list[str]:
    return [e["code"] for e in resp.json()["errors"]]


# --- publishing --------------------------------------------------------------------------------------------------


def test_a_published_model_resolves_from_the_portal_with_its_facts(team, api, client):
    resp = api("alice", team["run"], "team/support-bot-v2", note="first try")
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert body["path"] == team["run"].run_folder and body["run_id"] == team["run"].pk
    assert (body["base_model"], body["base_revision"], body["dataset_sha256"]) == (
        "test-org/tiny-llama",
        "0123456789abcdef",
        SHA,
    )
    assert body["validation"]["valid"] is True and body["validation"]["source"] == "portal"
    resolution = resolve_model("team/support-bot-v2")
    assert (resolution.valid, resolution.source, resolution.path) == (True, "portal", team["run"].run_folder)
    checked = call(
        client, "post", "/projects/validate-model", {"model_name": "team/support-bot-v2"}, team["tokens"]["mallory"]
    )
    assert checked.json()["source"] == "portal" and checked.json()["valid"] is True
    listed = call(client, "get", "/projects/models/available?q=support-bot", None, team["tokens"]["mallory"]).json()
    assert [(m["model_name"], m["source"], m["valid"]) for m in listed["models"]] == [
        ("team/support-bot-v2", "portal", True)
    ]
    page = secure_client(team["mallory"]).get("/models/team/support-bot-v2/").content.decode()
    assert 'badge-portal">portal</span>' in page and f"run #{team['run'].pk}</a> of" in page
    assert "0123456789abcdef" in page and SHA in page and "Train this model" in page
    assert "Unpublish" not in page  # mallory neither published it nor owns the project
    event = AuditEvent.objects.get(action="published_model.create")
    assert (event.actor, event.via, event.changes["model_name"]) == (
        team["alice"],
        "api",
        [None, "team/support-bot-v2"],
    )


def test_publishing_someone_elses_run_is_refused_everywhere(team, api):
    resp = api("mallory", team["run"], "mallory/stolen")
    assert resp.status_code == 403 and codes(resp) == ["permission_denied"]
    assert "Only the owner of project 'support' (alice) or staff" in resp.json()["errors"][0]["message"]
    page = secure_client(team["mallory"]).post(
        f"/projects/runs/{team['run'].pk}/publish/", {"model_name": "mallory/stolen"}
    )
    assert page.status_code == 403
    with pytest.raises(PublishRefused) as refused:
        publish_run(team["run"], "mallory/stolen", actor=Actor(team["mallory"], Channel.CLI))
    assert refused.value.status == 403
    assert (
        not PublishedModel.objects.exists() and not AuditEvent.objects.filter(action__startswith="published").exists()
    )
    assert api("staff", team["run"], "team/by-staff").status_code == 201  # staff may


@pytest.mark.parametrize("name", ["test-org/tiny-llama", "Test-Org/Tiny-Llama"])
def test_a_name_that_shadows_a_cache_model_is_refused(team, api, name):
    resp = api("alice", team["run"], name)
    assert resp.status_code == 409 and codes(resp) == ["model_name_taken"]
    assert "names a model in the Hugging Face cache" in resp.json()["errors"][0]["message"]
    assert resolve_model("test-org/tiny-llama").source == "cache" and not PublishedModel.objects.exists()


def test_a_name_an_override_or_another_published_model_holds_is_refused(team, api, client, tiny_llama_dir):
    ModelOverride.objects.create(model_name="team/overridden", path=str(tiny_llama_dir), enabled=False)
    resp = api("alice", team["run"], "team/Overridden")
    assert resp.status_code == 409 and "Model Override" in resp.json()["errors"][0]["message"]
    assert api("alice", team["run"], "team/bot").status_code == 201
    again = api("alice", team["run"], "TEAM/bot")
    assert again.status_code == 409 and "already published" in again.json()["errors"][0]["message"]
    # And an override may not take a published name afterwards.
    body = {"model_name": "team/bot", "path": str(tiny_llama_dir)}
    refused = call(client, "post", "/model-overrides", body, team["tokens"]["staff"])
    assert refused.status_code == 409 and "published from a run" in refused.json()["errors"][0]["message"]
    assert resolve_model("team/bot").source == "portal"


def test_a_run_that_failed_or_kept_only_an_adapter_is_refused(team, api):
    failed = finished_run(team["project"], status=RunStatus.FAILED)
    resp = api("alice", failed, "team/failed")
    assert resp.status_code == 422 and codes(resp) == ["run_not_succeeded"]
    adapter_only = finished_run(team["project"])
    folder = Path(adapter_only.run_folder)
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "mtm_manifest.json").write_text(json.dumps(manifest(None, method="lora")))
    resp = api("alice", as_created(adapter_only), "team/adapter")
    assert resp.status_code == 422 and codes(resp) == ["adapter_not_merged"]
    assert "Download the adapter" in resp.json()["errors"][0]["hint"]
    assert api("alice", team["run"], "bad name!").status_code == 422


def test_a_run_that_failed_after_writing_its_model_is_refused_with_why_and_what_to_do(team, api):
    """A worker lost after its trainer wrote the final model and manifest (the reaper fails the run at train): the
    refusal says the model is on disk but was never validated, and how to go on."""
    run = finished_run(team["project"], status=RunStatus.FAILED)
    run.stage_failed, run.error_code, run.error_message = "train", "worker_lost", "Worker lost: no heartbeat."
    run.save()
    shutil.copytree(team["run"].run_folder, run.run_folder)
    written = {**manifest("."), "finished_at": "2025-01-02T03:04:05+00:00"}
    (Path(run.run_folder) / "mtm_manifest.json").write_text(json.dumps(written))
    resp = api("alice", run, "team/late")
    assert resp.status_code == 422 and codes(resp) == ["run_not_succeeded"]
    error = resp.json()["errors"][0]
    assert (
        f"Run {run.pk} failed at the train stage (worker_lost: Worker lost: no heartbeat.) after its trainer had "
        "written the final model and mtm_manifest.json (finished at 2025-01-02T03:04:05+00:00), so that model was "
        "never validated" in error["message"]
    )
    assert "Start a new run of project 'support'" in error["hint"]
    assert f"Model Override (a name of your team's organisation) that points at {run.run_folder}:" in error["hint"]
    assert not PublishedModel.objects.exists()


def test_a_manifest_or_folder_that_points_elsewhere_is_refused(team, api, tiny_llama_dir, tmp_path):
    run = team["run"]
    folder = Path(run.run_folder)
    (folder / "mtm_manifest.json").write_text(json.dumps(manifest("../../../../elsewhere")))
    resp = api("alice", run, "team/escape")
    assert resp.status_code == 422 and codes(resp) == ["manifest_invalid"]
    # A LoRA run's merged/ folder swapped for a link to a model elsewhere.
    (folder / "mtm_manifest.json").write_text(json.dumps(manifest("merged", method="lora")))
    (folder / "merged").symlink_to(tiny_llama_dir)
    resp = api("alice", run, "team/linked-merged")
    assert resp.status_code == 422 and codes(resp) == ["run_files_missing"]
    # The run folder itself swapped for a link.
    moved = tmp_path / "moved"
    folder.rename(moved)
    folder.symlink_to(moved)
    resp = api("alice", run, "team/linked-run")
    assert resp.status_code == 422 and codes(resp) == ["run_folder_changed"]
    assert not PublishedModel.objects.exists()


def test_a_published_folder_that_fails_the_format_checks_is_refused(team, api):
    (Path(team["run"].run_folder) / "config.json").unlink()
    resp = api("alice", team["run"], "team/broken")
    assert resp.status_code == 422 and "model_format_invalid" in codes(resp)


def test_unpublishing_never_deletes_files_and_strangers_may_not(team, api, client):
    published = api("alice", team["run"], "team/keep").json()
    url = f"/published-models/{published['id']}"
    resp = call(client, "delete", url, None, team["tokens"]["mallory"])
    assert resp.status_code == 403 and PublishedModel.objects.filter(pk=published["id"]).exists()
    page = secure_client(team["mallory"]).post(f"/projects/published/{published['id']}/unpublish/")
    assert page.status_code == 403
    owner_page = secure_client(team["alice"]).get("/models/team/keep/").content.decode()
    assert "Unpublish" in owner_page
    assert call(client, "delete", url, None, team["tokens"]["alice"]).status_code == 204
    folder = Path(team["run"].run_folder)
    assert (folder / "config.json").is_file() and (folder / "mtm_manifest.json").is_file()
    gone = resolve_model("team/keep")
    assert not gone.valid and gone.errors[0].code == "model_not_found"
    assert AuditEvent.objects.filter(action="published_model.delete", actor=team["alice"]).count() == 1


def test_a_published_model_outlives_its_project_being_deleted(team, api):
    from projects.services import delete_project

    assert api("alice", team["run"], "team/lasting").status_code == 201
    delete_project(team["project"], actor=Actor(team["alice"], Channel.CLI))
    published = PublishedModel.objects.get()
    assert published.run is None and published.project_name == "support"
    assert resolve_model("team/lasting").valid
    page = secure_client(team["mallory"]).get("/models/team/lasting/").content.decode()
    assert "a run of project 'support' since deleted" in page
    assert "Unpublish" in secure_client(team["alice"]).get("/models/team/lasting/").content.decode()  # publisher


# --- provenance: a fine-tune never passes for an upstream model ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "code", "why"),
    [
        ("meta-llama/Llama-3.1-8B", "organisation_reserved", "is the Hugging Face Hub organisation 'meta-llama'"),
        ("Mistral_AI/Mistral-7B-v0.3", "organisation_reserved", "is the Hugging Face Hub organisation 'mistralai'"),
        ("Test-Org/support-tune", "organisation_reserved", "organisation of 'test-org/tiny-llama' in the Hugging Face"),
        ("gpt2", "published_name_needs_organisation", "has no organisation part"),
        # The hostile tester's look-alike (a capital I for the l) and another member's name as the organisation.
        ("Meta-LIama/Llama-3.2-1B", "organisation_reserved", "is the Hugging Face Hub organisation 'meta-llama'"),
        ("Mal1ory/my-model", "organisation_is_a_member", "which is the name of the member mallory"),
    ],
)
def test_a_name_that_could_pass_for_an_upstream_model_is_refused(team, api, name, code, why):
    """The attack: 'meta-llama/Llama-3.1-8B' was not in the cache, so a member published a fine-tune under it, and
    the next member who picked that name as a base model trained on the fine-tune without a word."""
    resp = api("alice", team["run"], name)
    assert resp.status_code == 422 and codes(resp) == [code], resp.content
    error = resp.json()["errors"][0]
    assert why in error["message"] and "Publish under your team's own organisation" in error["hint"]
    assert not PublishedModel.objects.exists() and not resolve_model(name).valid
    assert api("alice", team["run"], "team/support-tune").status_code == 201  # the team's own organisation


def test_a_published_model_says_it_is_a_portal_fine_tune_wherever_it_resolves(team, api, client):
    assert api("alice", team["run"], "team/support-bot-v2").status_code == 201
    said = (
        "'team/support-bot-v2' is a fine-tune published in this portal by alice on ",
        f"from run {team['run'].pk} of project 'support', on base model test-org/tiny-llama (revision 0123456789ab)",
        "It is not a model of that name from the Hugging Face Hub.",
    )
    resolution = resolve_model("team/support-bot-v2")
    assert resolution.source == "portal" and all(part in resolution.provenance for part in said)
    checked = call(
        client, "post", "/projects/validate-model", {"model_name": "team/support-bot-v2"}, team["tokens"]["mallory"]
    ).json()
    assert checked["valid"] is True and all(part in checked["provenance"] for part in said)
    bob = secure_client(team["mallory"])
    for url in ("/models/team/support-bot-v2/", "/models/validate-field/?model_name=team/support-bot-v2"):
        shown = bob.get(url).content.decode().replace("&#x27;", "'")
        assert all(part in shown for part in said), url
    assert "fine-tune" not in (resolve_model("test-org/tiny-llama").provenance or "")  # the cache model stays plain
    # A published model is one folder: its page offers no Revision box; a cache model's does.
    assert 'id="revision"' not in bob.get("/models/team/support-bot-v2/").content.decode()
    assert 'id="revision"' in bob.get("/models/test-org/tiny-llama/").content.decode()


def test_an_unpublished_name_says_who_unpublished_it_and_what_to_do(team, api, client):
    from projects.runs.stages import resolve_stage

    published = api("alice", team["run"], "team/retired").json()
    assert (
        call(client, "delete", f"/published-models/{published['id']}", None, team["tokens"]["alice"]).status_code == 204
    )
    said = (
        "Model 'team/retired' not found.",
        f"'team/retired' was a fine-tune published in this portal from run {team['run'].pk} of project 'support' "
        "and was unpublished by alice on ",
        f"Its files were not deleted: {team['run'].run_folder}.",
    )
    hint = f"publish it again from run {team['run'].pk}'s page (Publish as 'team/retired'), or pick another base"
    gone = resolve_model("team/retired")
    assert [e.code for e in gone.errors] == ["model_not_found"]
    assert all(part in gone.errors[0].message for part in said) and hint in gone.errors[0].hint
    # The API check, the form's check, the model page.
    body = call(client, "post", "/projects/validate-model", {"model_name": "team/retired"}, team["tokens"]["mallory"])
    assert all(part in body.json()["errors"][0]["message"] for part in said)
    bob = secure_client(team["mallory"])
    for url in ("/models/validate-field/?model_name=team/retired", "/models/team/retired/"):
        shown = bob.get(url).content.decode().replace("&#x27;", "'")
        assert all(part in shown for part in said) and hint in shown, url
    # Starting a run of a project built on it fails at resolve with the same words.
    project = project_of(team, team["mallory"], "on-top", "team/retired")
    run = TrainingRun.objects.create(
        project=project, started_by=team["mallory"], config=RunConfig.of_project(project).model_dump()
    )
    assert resolve_stage(run.pk) is False
    run.refresh_from_db()
    assert (run.status, run.stage_failed, run.error_code) == (RunStatus.FAILED, "resolve", "model_not_found")
    assert all(part in run.error_message for part in said) and hint in run.error_hint
    # Once its run is deleted, the way back is another base model (or an override), not the run's page.
    team["run"].delete()
    assert "Its run has been deleted" in resolve_model("team/retired").errors[0].hint
    assert Path(team["run"].run_folder, "config.json").is_file()


def test_a_freed_name_is_not_another_members_to_take(team, api, client, tiny_llama_dir):
    """The hostile tester unpublished alice's 'team/bot' and published mallory's run under it: bob's project on
    'team/bot' then trained on mallory's model without a word. A freed name stays its holders' (and staff's)."""
    published = api("alice", team["run"], "team/bot").json()
    call(client, "delete", f"/published-models/{published['id']}", None, team["tokens"]["alice"])
    other_run = full_fine_tune_run(project_of(team, team["mallory"], "theirs"), tiny_llama_dir)

    taken = api("mallory", other_run, "team/bot")
    assert taken.status_code == 409 and codes(taken) == ["model_name_held"]
    message = taken.json()["errors"][0]["message"]
    assert f"'team/bot' was published by alice from run {team['run'].pk} and unpublished since" in message
    assert api("mallory", other_run, "team/bot-mallory").status_code == 201  # a name of her own is hers
    assert api("alice", team["run"], "team/bot").status_code == 201  # its publisher may publish it again
    again = PublishedModel.objects.get(model_name="team/bot")
    call(client, "delete", f"/published-models/{again.id}", None, team["tokens"]["alice"])
    assert api("staff", other_run, "team/bot").status_code == 201  # staff decide


def test_a_cache_model_that_arrives_under_a_published_name_does_not_take_it_over(team, api, tiny_llama_dir):
    """The hostile tester downloaded a model as 'team/a' after alice published 'team/a': every project on the name
    silently trained on the cache copy. A published name now comes before the cache; the copy is a warning."""
    from models_registry.demo import install_into_cache
    from models_registry.lookup import current_cache_dir

    assert api("alice", team["run"], "team/a").status_code == 201
    assert resolve_model("team/a").source == "portal"
    copy = install_into_cache(tiny_llama_dir, current_cache_dir()[0], "team/a")
    resolved = resolve_model("team/a")
    assert resolved.source == "portal" and resolved.valid and resolved.path == team["run"].run_folder
    [warning] = [w for w in resolved.warnings if w.code == "cache_copy_ignored"]
    assert str(copy.parent.parent) in warning.message and "not used" in warning.message


def test_publish_and_unpublish_from_the_pages(team):
    page = secure_client(team["alice"])
    run_page = page.get(f"/projects/runs/{team['run'].pk}/").content.decode()
    assert "Publish as" in run_page and "Download the LoRA adapter" not in run_page  # a full fine-tune
    # The run page links to the playground, and the link picks the run there.
    chat = f'href="/playground/?run={team["run"].pk}"'
    assert chat in run_page
    playground = page.get(f"/playground/?run={team['run'].pk}").content.decode()
    assert f'<option value="run:{team["run"].pk}" selected>' in playground
    resp = page.post(f"/projects/runs/{team['run'].pk}/publish/", {"model_name": "test-org/tiny-llama"})
    assert resp.status_code == 302
    assert resp["Location"] == f"/projects/runs/{team['run'].pk}/?publish_name=test-org%2Ftiny-llama#build-on"
    shown = page.get(resp["Location"]).content.decode()
    assert "names a model in the Hugging Face cache" in shown
    # The refusal stands beside the box, with the name kept in it, not at the top of the page.
    errors = shown.split('<ul class="errorlist publish-errors" id="publish-errors">')[1].split("</ul>")[0]
    assert "names a model in the Hugging Face cache" in errors and 'value="test-org/tiny-llama"' in shown
    assert "names a model in the Hugging Face cache" not in shown.split('id="build-on"')[0]  # not at the top
    resp = page.post(f"/projects/runs/{team['run'].pk}/publish/", {"model_name": "team/from-page"})
    assert resp.status_code == 302 and resp["Location"] == "/models/team/from-page/"
    assert "Published as" in page.get(f"/projects/runs/{team['run'].pk}/").content.decode()
    published = PublishedModel.objects.get()
    assert page.post(f"/projects/published/{published.pk}/unpublish/").status_code == 302
    assert not PublishedModel.objects.exists() and Path(team["run"].run_folder, "config.json").is_file()


def test_staff_publish_and_unpublish_in_the_admin(team):
    admin = secure_client(User.objects.create_superuser("root-admin", password="x"))
    resp = admin.post(
        "/admin/models_registry/publishedmodel/add/",
        {"model_name": "test-org/tiny-llama", "run": team["run"].pk, "note": ""},
    )
    assert resp.status_code == 200 and "names a model in the Hugging Face cache" in resp.content.decode()
    resp = admin.post(
        "/admin/models_registry/publishedmodel/add/", {"model_name": "team/admin", "run": team["run"].pk, "note": ""}
    )
    assert resp.status_code == 302, resp.content.decode()[-2000:]
    published = PublishedModel.objects.get()
    assert AuditEvent.objects.get(action="published_model.create").via == "admin"
    assert admin.get("/admin/models_registry/publishedmodel/").status_code == 200
    shown = admin.get(f"/admin/models_registry/publishedmodel/{published.pk}/change/").content.decode()
    assert SHA in shown and 'name="model_name"' not in shown  # read-only: never edited in place
    resp = admin.post(f"/admin/models_registry/publishedmodel/{published.pk}/delete/", {"post": "yes"})
    assert resp.status_code == 302 and not PublishedModel.objects.exists()
    assert AuditEvent.objects.get(action="published_model.delete").via == "admin"
    assert Path(team["run"].run_folder, "config.json").is_file()


# --- the adapter download --------------------------------------------------------------------------------------


@pytest.fixture
def lora_run(team, tmp_path):
    project = project_of(team, team["alice"], "lora", method="lora")
    run = finished_run(project)
    folder = Path(run.run_folder)
    (folder / "merged").mkdir(parents=True)
    (folder / "checkpoint-2").mkdir()
    files = {
        "adapter_config.json": b'{"peft_type": "LORA"}',
        "adapter_model.safetensors": os.urandom(300_000),
        "tokenizer.json": b"{}",
        "mtm_manifest.json": json.dumps(manifest("merged", method="lora")).encode(),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "merged" / "model.safetensors").write_bytes(b"merged weights")
    (folder / "checkpoint-2" / "optimizer.pt").write_bytes(b"optimizer")
    secret = tmp_path / "secret.txt"
    secret.write_text("THE-SECRET")
    (tmp_path / "secret-dir").mkdir()
    (tmp_path / "secret-dir" / "inside.txt").write_text("THE-SECRET")
    (folder / "leak.txt").symlink_to(secret)  # a link to a file outside
    (folder / "leak-dir").symlink_to(tmp_path / "secret-dir")  # and to a folder outside
    os.link(secret, folder / "hardlink.txt")  # another name for a file outside
    return as_created(run), files


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"<dir>") for m in tar.getmembers()}


def test_the_adapter_downloads_as_a_tar_gz_without_anything_a_link_reaches(team, lora_run, client):
    run, files = lora_run
    resp = call(client, "get", f"/runs/{run.pk}/adapter.tar.gz", None, team["tokens"]["mallory"])  # any member
    assert resp.status_code == 200 and resp.streaming and resp["Content-Type"] == "application/gzip"
    assert resp["Content-Disposition"] == f'attachment; filename="run-{run.pk}-adapter.tar.gz"'
    got = members(b"".join(resp.streaming_content))
    prefix = f"run-{run.pk}-adapter"
    assert got == {prefix: b"<dir>", **{f"{prefix}/{name}": data for name, data in files.items()}}
    assert not any(b"THE-SECRET" in data for data in got.values())
    page = secure_client(team["mallory"]).get(f"/projects/runs/{run.pk}/adapter.tar.gz")
    assert page.status_code == 200 and members(b"".join(page.streaming_content)) == got
    run_page = secure_client(team["mallory"]).get(f"/projects/runs/{run.pk}/").content.decode()
    assert "Download the LoRA adapter" in run_page and "Publish as" not in run_page  # not hers to publish


def test_the_adapter_is_not_for_strangers_or_runs_without_one(team, lora_run, client, tiny_llama_dir):
    run, _ = lora_run
    assert call(client, "get", f"/runs/{run.pk}/adapter.tar.gz").status_code == 401  # nobody signed in
    anonymous = secure_client().get(f"/projects/runs/{run.pk}/adapter.tar.gz")
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    team["mallory"].is_active = False
    team["mallory"].save()
    assert call(client, "get", f"/runs/{run.pk}/adapter.tar.gz", None, team["tokens"]["mallory"]).status_code == 401
    full = call(client, "get", f"/runs/{team['run'].pk}/adapter.tar.gz", None, team["tokens"]["alice"])
    assert full.status_code == 404 and codes(full) == ["adapter_unavailable"]
    failed = TrainingRun.objects.create(project=run.project, status=RunStatus.FAILED)
    refused = call(client, "get", f"/runs/{failed.pk}/adapter.tar.gz", None, team["tokens"]["alice"])
    assert refused.status_code == 404 and codes(refused) == ["adapter_unavailable"]
    assert f"Run {failed.pk} is failed: only a run that succeeded" in refused.text
    folder = Path(run.run_folder)
    moved = folder.with_name("moved")
    folder.rename(moved)
    folder.symlink_to(moved)  # the run's folder swapped for a link
    linked = call(client, "get", f"/runs/{run.pk}/adapter.tar.gz", None, team["tokens"]["alice"])
    assert linked.status_code == 409 and codes(linked) == ["run_folder_changed"]
    assert "is now a link" in linked.json()["errors"][0]["message"]
    assert call(client, "get", "/runs/999999/adapter.tar.gz", None, team["tokens"]["alice"]).status_code == 404


def test_an_adapter_download_holds_one_of_the_members_expensive_request_slots_while_it_streams(
    team, lora_run, client, settings
):
    """Each download compresses the adapter in the web process for as long as it streams: a member's downloads in
    progress count against MTM_EXPENSIVE_REQUESTS_PER_MEMBER (the API's and the page's alike), and the slot is free
    again once the archive is sent. Another member is not held back."""
    settings.MTM_EXPENSIVE_REQUESTS_PER_MEMBER = 1
    run, files = lora_run
    url, token = f"/runs/{run.pk}/adapter.tar.gz", team["tokens"]["mallory"]
    streaming = call(client, "get", url, None, token)
    assert streaming.status_code == 200 and streaming.streaming  # not read yet: still streaming
    refused = call(client, "get", url, None, token)
    assert refused.status_code == 429 and refused["Retry-After"].isdigit()
    assert (
        codes(refused) == ["too_many_expensive_requests"]
        and "adapter downloads" in refused.json()["errors"][0]["message"]
    )
    page = secure_client(team["mallory"]).get(f"/projects{url}")
    assert page.status_code == 429 and "Try again in" in page.content.decode()
    others = call(client, "get", url, None, team["tokens"]["alice"])
    assert others.status_code == 200
    b"".join(others.streaming_content)
    prefix = f"run-{run.pk}-adapter"
    assert (
        members(b"".join(streaming.streaming_content))[f"{prefix}/adapter_config.json"] == files["adapter_config.json"]
    )
    again = secure_client(team["mallory"]).get(f"/projects{url}")  # sent: the slot is hers again
    assert again.status_code == 200 and members(b"".join(again.streaming_content))
    assert call(client, "get", url, None, token).status_code == 200


def test_an_adapter_whose_weights_are_a_link_is_refused_with_why_not_sent_without_them(team, lora_run, client):
    """The attack: adapter_model.safetensors replaced by a link (or a hard link, as `cp -al` backups make) gave a
    200 archive without the weights, which loads nothing."""
    run, files = lora_run
    folder = Path(run.run_folder)
    weights = folder / "adapter_model.safetensors"
    elsewhere = folder.parent / "weights-elsewhere.safetensors"
    weights.rename(elsewhere)
    weights.symlink_to(elsewhere)
    linked = call(client, "get", f"/runs/{run.pk}/adapter.tar.gz", None, team["tokens"]["alice"])
    assert linked.status_code == 404 and codes(linked) == ["adapter_unavailable"]
    assert "adapter_model.safetensors in " in linked.json()["errors"][0]["message"]
    assert "is a link or has other hard links" in linked.json()["errors"][0]["message"]
    weights.unlink()
    os.link(elsewhere, weights)  # a hard link: another name for a file the folder does not own alone
    hard = call(client, "get", f"/runs/{run.pk}/adapter.tar.gz", None, team["tokens"]["alice"])
    assert hard.status_code == 404 and "is a link or has other hard links" in hard.json()["errors"][0]["message"]
    weights.unlink()
    gone = call(client, "get", f"/runs/{run.pk}/adapter.tar.gz", None, team["tokens"]["alice"])
    assert gone.status_code == 404
    assert "there is no adapter_model.safetensors or adapter_model.bin in" in gone.json()["errors"][0]["message"]
