"""Published names compared as people read them: a held or published name taken again by changing its case, a
look-alike model part ('aIice' for 'alice', 'alice_bot' for 'alice-bot'), a near-upstream organisation (an upstream
one with a version or suffix added, or a famous organisation's short form). Each is refused with a message that
names what it resembles; the holder still publishes her own name as she spelled it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from models_registry.models import ModelOverride, PublishedModel
from projects.models import TrainingRun
from tests.api_client import call
from tests.test_publish import api, codes, full_fine_tune_run, project_of, team  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db


def refusal(resp) -> str:
    [error] = resp.json()["errors"]
    return error["message"]


@dataclass(frozen=True)
class Scene:
    """alice's succeeded run, mallory's, and the API's publish and unpublish as either of them (or staff)."""

    team: dict
    publish: Callable[..., Any]
    alices_run: TrainingRun
    mallorys_run: TrainingRun
    client: Any

    def unpublish(self, who: str, name: str) -> None:
        published = PublishedModel.objects.get(model_name=name)
        token = self.team["tokens"][who]
        assert call(self.client, "delete", f"/published-models/{published.pk}", None, token).status_code == 204


@pytest.fixture
def scene(team, api, client, tiny_llama_dir) -> Scene:  # noqa: F811 - the fixtures imported above
    mallorys = full_fine_tune_run(project_of(team, team["mallory"], "theirs"), tiny_llama_dir)
    return Scene(team, api, team["run"], mallorys, client)


def test_one_key_reads_names_as_people_do():
    from models_registry.published import name_key

    assert name_key("Team/X") == name_key("team/x")
    assert name_key("team/aIice") == name_key("team/alice") == name_key("team/a1ice") == name_key("TEAM/Al1ce")
    assert name_key("team/alice_bot") == name_key("team/alice-bot") == name_key("team/alice.bot")
    assert name_key("tearn/rnodel-0") == name_key("team/model-o")
    assert name_key("team/alice-bot") != name_key("team/alice-bot-2")
    assert name_key("team/x") != name_key("teamx/") and name_key("a/bc") != name_key("ab/c")


def test_a_held_name_is_not_taken_again_by_changing_its_case(scene):
    """The attack: alice unpublished 'team/bot'; mallory published her own run as 'Team/Bot', and from then on
    alice could not publish 'team/bot' again ('already published')."""
    assert scene.publish("alice", scene.alices_run, "team/bot").status_code == 201
    scene.unpublish("alice", "team/bot")
    for spelling in ("Team/Bot", "TEAM/bot", "team/B0t", "team_/bot"):
        taken = scene.publish("mallory", scene.mallorys_run, spelling)
        assert taken.status_code == 409 and codes(taken) == ["model_name_held"], spelling
        message = refusal(taken)
        assert f"'{spelling}' reads the same as 'team/bot'" in message and "published by alice" in message
    assert not PublishedModel.objects.exists()
    assert scene.publish("alice", scene.alices_run, "team/bot").status_code == 201  # the holder, as she spelled it


@pytest.mark.parametrize(
    ("taken", "look_alike"),
    [
        ("team/alice", "team/aIice"),
        ("team/alice", "team/a1ice"),
        ("team/alice-bot", "team/alice_bot"),
        ("team/alice-bot", "Team/Alice.Bot"),
        ("team/model", "tearn/rnodel"),
        ("team/x", "Team/x"),
    ],
)
def test_a_published_name_is_not_taken_by_a_look_alike(scene, taken, look_alike):
    assert scene.publish("alice", scene.alices_run, taken).status_code == 201
    resp = scene.publish("mallory", scene.mallorys_run, look_alike)
    assert resp.status_code == 409 and codes(resp) == ["model_name_taken"], resp.content
    message = refusal(resp)
    assert f"'{look_alike}' reads the same as '{taken}'" in message and "already published" in message
    assert list(PublishedModel.objects.values_list("model_name", flat=True)) == [taken]
    assert scene.publish("mallory", scene.mallorys_run, f"{taken}-mallory").status_code == 201  # her own name


def test_a_look_alike_of_a_cache_model_or_an_override_is_refused(scene, tiny_llama_dir):
    resp = scene.publish("alice", scene.alices_run, "test_org/tiny_IIama")
    assert resp.status_code == 409 and codes(resp) == ["model_name_taken"]
    assert "'test_org/tiny_IIama' reads the same as 'test-org/tiny-llama'" in refusal(resp)
    assert "names a model in the Hugging Face cache" in refusal(resp)
    ModelOverride.objects.create(model_name="team/overridden", path=str(tiny_llama_dir))
    resp = scene.publish("alice", scene.alices_run, "team/over_ridden")
    assert resp.status_code == 409 and codes(resp) == ["model_name_taken"]
    assert "'team/over_ridden' reads the same as 'team/overridden'" in refusal(resp)
    assert "Model Override" in refusal(resp)


@pytest.mark.parametrize(
    ("organisation", "resembles"),
    [
        ("meta-llama3", "meta-llama"),
        ("metallama-2", "meta-llama"),
        ("Meta_Llama_v3.1", "meta-llama"),
        ("mistralai-v2", "mistralai"),
        ("mistral", "mistralai"),
        ("Mistral-7B-fans", "mistralai"),
        ("meta", "meta"),
        ("rneta-ai", "meta"),
        ("qwen", "Qwen"),
        ("qwen2.5", "Qwen"),
        ("google", "google"),
        ("google-research2", "google"),
        ("deepseek", "deepseek-ai"),
        ("openai-v2", "openai"),
        ("test-org2", "test-org/tiny-llama"),  # the organisation of a model in the Hugging Face cache, with a suffix
        ("fb", "facebook"),
        ("FB-research", "facebook"),
        ("msft", "microsoft"),
        ("ms_ai", "microsoft"),
        ("hf", "huggingface"),
        ("staff", "staff"),
        ("Portal", "portal"),
        ("mtm-official", "mtm"),
        ("admin", "admin"),
    ],
)
def test_a_near_upstream_organisation_is_refused(scene, organisation, resembles):
    resp = scene.publish("alice", scene.alices_run, f"{organisation}/support-tune")
    assert resp.status_code == 422 and codes(resp) == ["organisation_reserved"], resp.content
    error = resp.json()["errors"][0]
    assert f"under the organisation '{organisation}'" in error["message"]
    assert f"'{resembles}'" in error["message"], error["message"]
    assert "Publish under your team's own organisation" in error["hint"]
    assert not PublishedModel.objects.exists()


def test_an_organisation_made_of_another_members_name_is_refused(scene):
    for organisation in ("mallory", "Mallory_bot", "mallory-lab"):
        resp = scene.publish("alice", scene.alices_run, f"{organisation}/support-tune")
        assert resp.status_code == 422 and codes(resp) == ["organisation_is_a_member"], (organisation, resp.content)
        assert "the name of the member mallory" in refusal(resp)


@pytest.mark.parametrize("organisation", ["team", "support-team", "alice", "org-2", "mssql-fans", "hfx", "staffing"])
def test_the_teams_own_organisations_stay_free(scene, organisation):
    assert scene.publish("alice", scene.alices_run, f"{organisation}/support-tune").status_code == 201


def test_a_worker_report_from_before_an_unpublishing_no_longer_holds_the_name(scene):
    """CI's race: a worker reported while 'team/bot' was published; the name was unpublished before its next report,
    and Start took the stale list for a holder (the run was queued and failed at resolve) instead of refusing."""
    from django.utils import timezone

    from projects.models import TrainingProject
    from projects.runs.scheduling.fit import held_elsewhere, holds, unpublished_at
    from projects.runs.scheduling.placement import PlacementRefused, decide
    from workers.models import Worker

    assert scene.publish("alice", scene.alices_run, "team/bot").status_code == 201
    before = Worker.objects.create(name="before@host", host="host", queues=["training"], held_models=["team/bot"])
    scene.unpublish("alice", "team/bot")
    after = Worker.objects.create(name="after@host", host="host", queues=["training"], held_models=["team/bot"])
    assert before.last_seen < unpublished_at("team/bot") < after.last_seen
    assert not holds(before, "team/bot", unpublished_at("team/bot"))
    assert holds(after, "team/bot", unpublished_at("team/bot"))  # listed after: from its own cache

    after.delete()
    project = TrainingProject.objects.get(pk=scene.alices_run.project_id)
    project.model_name = "team/bot"
    with pytest.raises(PlacementRefused) as refused:
        decide(project)
    assert refused.value.problem.code == "model_not_found"
    assert "was unpublished by alice" in refused.value.problem.message
    from models_registry.lookup import resolve_model

    assert held_elsewhere("team/bot", resolve_model("team/bot")) is None
    Worker.objects.filter(pk=before.pk).update(last_seen=timezone.now())  # its next report, if it still listed it
    assert held_elsewhere("team/bot", resolve_model("team/bot")) is not None
