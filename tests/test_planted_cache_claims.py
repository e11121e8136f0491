"""Folders a member plants in the shared Hugging Face cache claim no published name and no organisation.

Members can write in the cache: an empty `models--team--x/` made there took the organisation 'team' from every
member, and `models--alice--x/` took alice's own name from her. A cache folder counts only when the model list shows
it as a model (a snapshot that passes the checks), and never over an organisation the portal has recorded as the
team's: a member's own username, or one the team has published under. A model downloaded from the Hub still
reserves its organisation and its name."""

from __future__ import annotations

from pathlib import Path

import pytest

from models_registry.demo import install_into_cache
from models_registry.models import PublishedModel
from models_registry.names import repo_folder_name
from tests.hfcache import COMMIT_A, add_file, set_ref
from tests.test_publish import api, codes, full_fine_tune_run, project_of, team  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db


def plant_empty(cache: Path, name: str) -> Path:
    """What `mkdir` alone leaves: a repo folder with nothing in it."""
    folder = cache / repo_folder_name(name)
    folder.mkdir()
    return folder


def plant_husk(cache: Path, name: str) -> Path:
    """A repo folder with refs/main and a snapshot holding one file: the layout, with no model in it."""
    add_file(cache, name, "README.md", "not a model\n")
    set_ref(cache, name, COMMIT_A)
    return cache / repo_folder_name(name)


@pytest.mark.parametrize("plant", [plant_empty, plant_husk])
def test_a_cache_folder_with_no_model_reserves_no_organisation(team, api, hf_cache, plant):  # noqa: F811
    """The attack: mallory ran `mkdir models--team--x` in the cache, and nobody could publish under 'team'."""
    plant(hf_cache, "team/x")
    resp = api("alice", team["run"], "team/support-bot")
    assert resp.status_code == 201, resp.content
    assert PublishedModel.objects.get().model_name == "team/support-bot"


@pytest.mark.parametrize("plant", [plant_empty, plant_husk])
def test_a_cache_folder_with_no_model_takes_no_name(team, api, hf_cache, plant):  # noqa: F811
    plant(hf_cache, "team/support-bot")
    assert api("alice", team["run"], "team/support-bot").status_code == 201


def test_a_members_own_name_is_hers_whatever_the_cache_holds(team, api, hf_cache, tiny_llama_dir):  # noqa: F811
    """A model copied into `models--alice--x` by another member does not take alice's own organisation from her;
    to others her name is still hers (organisation_is_a_member)."""
    plant_empty(hf_cache, "alice/x")
    install_into_cache(tiny_llama_dir, hf_cache, "alice/y")
    assert api("alice", team["run"], "alice/support-bot").status_code == 201, "alice's own name"
    mallorys = full_fine_tune_run(project_of(team, team["mallory"], "theirs"), tiny_llama_dir)
    refused = api("mallory", mallorys, "alice/other-bot")
    assert refused.status_code == 422 and codes(refused) == ["organisation_is_a_member"], refused.content


def test_an_organisation_the_team_published_under_stays_the_teams(team, api, hf_cache, tiny_llama_dir):  # noqa: F811
    """Once the team has published under 'team', a model planted later as `models--team--x` does not stop the next
    publish there; a model of that very name still shadows nothing (its name is refused)."""
    assert api("alice", team["run"], "team/first").status_code == 201
    install_into_cache(tiny_llama_dir, hf_cache, "team/x")
    assert api("alice", team["run"], "team/second").status_code == 201, "the team's recorded organisation"
    taken = api("alice", team["run"], "team/x")
    assert taken.status_code == 409 and codes(taken) == ["model_name_taken"]


def test_a_downloaded_model_still_reserves_its_organisation_and_name(team, api, hf_cache, tiny_llama_dir):  # noqa: F811
    install_into_cache(tiny_llama_dir, hf_cache, "smol-lab/tiny")
    plant_empty(hf_cache, "smol-lab/x")
    resp = api("alice", team["run"], "smol-lab/support-bot")
    assert resp.status_code == 422 and codes(resp) == ["organisation_reserved"], resp.content
    assert "organisation of 'smol-lab/tiny' in the Hugging Face cache" in resp.json()["errors"][0]["message"]
    taken = api("alice", team["run"], "smol-lab/tiny")
    assert taken.status_code == 409 and codes(taken) == ["model_name_taken"]
