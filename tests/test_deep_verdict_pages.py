"""transformers' verdict as the pages, the API and Start see it: read from the cache (never computed in the web
process), "checking" with one check queued on the real broker until a worker has cached it, then overriding the
instant rules: its refusals shown as theirs are, and what it can judge downgraded where it loads the model."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.urls import reverse

from models_registry.models import ModelVerdict, VerdictRequest
from models_registry.resolution import resolve
from models_registry.tasks import check_model_deep
from tests.api_client import call, codes, make_user_token
from tests.broker_checks import broker, queued_checks  # noqa: F401 - the broker fixture, cleaned after
from tests.clients import secure_client
from tests.test_verdict_differential import NEW_CASES

ADDED = NEW_CASES["added_tokens_beyond_vocab"]  # the instant rules accept it; transformers refuses it
BROKEN_BIN = NEW_CASES["broken_bin_beside_safetensors"]  # the instant rules refuse it; transformers loads it


@pytest.fixture
def installed(hf_cache, tiny_llama_dir, tmp_path):
    """Lay the differential test's case into the portal's cache; returns its resolved folder."""

    def install(case) -> str:
        case.build(hf_cache, tiny_llama_dir, tmp_path / "scratch")
        return resolve(case.name, cache_dir=hf_cache).path

    (tmp_path / "scratch").mkdir()
    return install


@pytest.fixture
def member(team):
    return secure_client(team["alice"])


@pytest.fixture
def token(db) -> str:
    return make_user_token("api-member")[1]


def page(client, name: str) -> str:
    return client.get(reverse("registry:model-detail", kwargs={"name": name})).content.decode()


def field(client, name: str) -> str:
    return client.get(reverse("registry:validate-field"), {"model_name": name}).content.decode()


def validate(client, token: str, name: str) -> dict:
    response = call(client, "post", "/projects/validate-model", {"model_name": name}, token)
    assert response.status_code == 200, response.content
    return response.json()


def poll(client, name: str, view: str):
    query = urlencode({"model_name": name, "revision": "", "view": view})
    return client.get(f"{reverse('registry:verdict-status')}?{query}", HTTP_HX_REQUEST="true")


def test_a_never_checked_model_says_checking_and_asks_a_worker_once(
    member,
    token,
    installed,
    broker,  # noqa: F811 - the fixture imported above
    django_capture_on_commit_callbacks,
):
    folder = installed(ADDED)
    before = len(queued_checks(broker))
    with django_capture_on_commit_callbacks(execute=True):
        shown = page(member, ADDED.name)
    assert "Checking with transformers…" in shown and 'hx-trigger="every 2s"' in shown
    assert 'href="/models/test-org/d-added/"' in shown  # the polled region keeps an href
    with django_capture_on_commit_callbacks(execute=True):
        body = validate(member, token, ADDED.name)
        status = field(member, ADDED.name)
        page(member, ADDED.name)
    assert body["deep"] == {"state": "checking", "valid": None, "errors": [], "warnings": [], "checked_at": None}
    assert body["valid"] is True  # the instant answer, until transformers has spoken
    assert "Checking with transformers…" in status
    checks = queued_checks(broker)[before:]
    assert len(checks) == 1 and folder in checks[0], checks  # asked once for four looks
    assert VerdictRequest.objects.get().folder == folder
    assert ModelVerdict.objects.count() == 0  # nothing was computed in the web process


def test_once_checked_its_refusal_shows_as_the_instant_rules_do_and_the_poll_stops(member, token, installed, hf_cache):
    folder = installed(ADDED)
    assert resolve(ADDED.name, cache_dir=hf_cache).valid  # the instant rules accept it
    page(member, ADDED.name)
    waiting = poll(member, ADDED.name, "page")
    assert waiting.status_code == 200 and "Checking with transformers…" in waiting.content.decode()
    assert poll(member, ADDED.name, "field").status_code == 200

    check_model_deep(folder, False, ADDED.name)  # what the worker does with the queued message
    assert VerdictRequest.objects.count() == 0

    done = poll(member, ADDED.name, "page")
    assert done.status_code == 286 and done["HX-Refresh"] == "true"
    status = poll(member, ADDED.name, "field")
    assert status.status_code == 286
    assert "status-error" in status.content.decode() and "384 rows" in status.content.decode()
    shown = page(member, ADDED.name)
    assert "Checking with transformers" not in shown
    assert '<span class="badge badge-error">invalid</span>' in shown and "Train this model" not in shown
    assert '<span class="code">tokenizer_exceeds_embedding</span>' in shown and "resize_token_embeddings" in shown
    body = validate(member, token, ADDED.name)
    assert body["valid"] is False and "tokenizer_exceeds_embedding" in codes(body["errors"])
    deep = body["deep"]
    assert (deep["state"], deep["valid"], codes(deep["errors"])) == ("done", False, ["tokenizer_exceeds_embedding"])
    assert deep["checked_at"] and "resize_token_embeddings" in deep["errors"][0]["hint"]


def test_a_broken_file_transformers_never_opens_is_a_warning_once_it_has_loaded_the_model(member, token, installed):
    folder = installed(BROKEN_BIN)
    instant = validate(member, token, BROKEN_BIN.name)
    assert instant["valid"] is False and codes(instant["errors"]) == ["weights_invalid"]
    assert instant["deep"]["state"] == "checking"
    assert "Checking with transformers, which may load it all the same" in field(member, BROKEN_BIN.name)

    check_model_deep(folder, False, BROKEN_BIN.name)
    body = validate(member, token, BROKEN_BIN.name)
    assert body["valid"] is True and body["errors"] == [], body["errors"]
    assert {"weights_invalid", "unused_file_broken"} <= set(codes(body["warnings"]))
    [downgraded] = [w for w in body["warnings"] if w["code"] == "weights_invalid"]
    assert downgraded["message"].startswith("transformers loads and trains this model all the same")
    shown = page(member, BROKEN_BIN.name)
    assert '<span class="badge badge-ok">valid</span>' in shown and "Train this model" in shown
    assert "pytorch_model.bin" in shown


def test_an_unsafe_refusal_is_never_sent_to_transformers(member, token, hf_cache, tiny_llama_dir):
    from models_registry.demo import install_into_cache

    snapshot = install_into_cache(tiny_llama_dir, hf_cache, "test-org/escapes")
    (snapshot / "tokenizer.json").unlink()
    (snapshot / "tokenizer.json").symlink_to("/etc/passwd")
    body = validate(member, token, "test-org/escapes")
    assert "unsafe_symlink" in codes(body["errors"]) and body["deep"] is None
    assert VerdictRequest.objects.count() == 0


def project_on(team, model: str, name: str):
    from projects.models import TrainingProject

    return TrainingProject.objects.create(
        name=name,
        owner=team["alice"],
        model_name=model,
        dataset_path=str(team["root"] / "datasets" / "qa.jsonl"),
        output_directory=str(team["root"] / "outputs" / name),
    )


def test_the_resolve_stage_trains_past_a_broken_file_transformers_never_opens(team, installed):
    from projects.models import RunStatus, TrainingRun
    from projects.runs.config import RunConfig
    from projects.runs.stages import resolve_stage

    installed(BROKEN_BIN)
    project = project_on(team, BROKEN_BIN.name, "broken-bin")
    run = TrainingRun.objects.create(
        project=project, started_by=team["alice"], config=RunConfig.of_project(project).model_dump()
    )
    assert resolve_stage(run.pk) is True  # computed on the worker: transformers never opens the .bin
    run.refresh_from_db()
    assert run.status == RunStatus.RESOLVING and run.resolved_path and run.error_code == ""
    assert ModelVerdict.objects.get().valid is True


def test_start_is_refused_at_once_on_a_cached_refusal_and_goes_ahead_while_unchecked(team, installed):
    from mtm.audit import Actor, Channel
    from projects.models import RunStatus, TrainingRun
    from projects.runs.services import RunRefused, start_run

    folder = installed(ADDED)
    project = project_on(team, ADDED.name, "tools")
    (team["root"] / "outputs" / "tools").mkdir()
    actor = Actor(team["alice"], Channel.PAGE)
    waiting = start_run(project, actor=actor)  # not yet checked: the resolve stage will check it on the worker
    assert waiting.status == RunStatus.QUEUED
    waiting.delete()

    check_model_deep(folder, False, ADDED.name)
    with pytest.raises(RunRefused) as refused:
        start_run(project, actor=actor)
    assert refused.value.problem.code == "tokenizer_exceeds_embedding"
    assert "384 rows" in refused.value.problem.message
    assert TrainingRun.objects.filter(project=project).count() == 0


def test_the_run_page_says_the_resolve_stage_is_checking_the_model(team, installed):
    from projects.models import RunStatus, TrainingRun
    from projects.runs.config import RunConfig

    folder = installed(ADDED)
    project = project_on(team, ADDED.name, "waiting")
    run = TrainingRun.objects.create(
        project=project,
        started_by=team["alice"],
        status=RunStatus.RESOLVING,
        config=RunConfig.of_project(project).model_dump(),
    )
    client = secure_client(team["alice"])
    url = reverse("projects:run", kwargs={"pk": run.pk})
    assert "resolving: checking the model with transformers" in client.get(url).content.decode()
    check_model_deep(folder, False, ADDED.name)
    assert "checking the model with transformers" not in client.get(url).content.decode()


def test_a_check_that_could_not_finish_is_failed_and_refused_with_its_reason(member, token, tiny_llama_dir, tmp_path):
    from models_registry.models import ModelOverride
    from tests.test_deep_verdict import own_code_model

    crashing = own_code_model(tiny_llama_dir, tmp_path / "own", "        import ctypes\n        ctypes.string_at(0)")
    ModelOverride.objects.create(model_name="test-org/own", path=str(crashing), trust_remote_code=True)
    assert validate(member, token, "test-org/own")["deep"]["state"] == "checking"
    check_model_deep(str(crashing), True, "test-org/own")
    body = validate(member, token, "test-org/own")
    deep = body["deep"]
    assert (deep["state"], deep["valid"], codes(deep["errors"])) == ("failed", False, ["verdict_out_of_memory"])
    assert body["valid"] is False
    assert poll(member, "test-org/own", "field").status_code == 286
    shown = page(member, "test-org/own")
    assert "check failed" in shown and "the worker is unaffected" in shown


def test_a_project_saves_on_a_model_transformers_loads_despite_an_instant_refusal(team, installed):
    from mtm.audit import Actor
    from projects.services import ProjectInvalid, create_project
    from tests.test_owned_paths import fields

    folder = installed(BROKEN_BIN)
    data = fields(team["root"], BROKEN_BIN.name, name="broken-bin")
    with pytest.raises(ProjectInvalid):  # not checked yet: the instant refusal stands
        create_project(actor=Actor.command_line(team["alice"]), data=data)
    check_model_deep(folder, False, BROKEN_BIN.name)
    project = create_project(actor=Actor.command_line(team["alice"]), data=data)
    assert project.model_name == BROKEN_BIN.name
