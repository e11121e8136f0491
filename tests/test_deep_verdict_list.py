"""The model list (page and API) with transformers' verdict read from the cache: done (valid, or refused with its
reason first), checking (one poll for the whole list, every 5 s, skipped while the tab is hidden) or not checked
yet; read in a constant number of queries. And no GET writes: only a POST asks a worker for a check."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from models_registry import lookup
from models_registry.demo import install_into_cache
from models_registry.models import VerdictRequest
from models_registry.resolution import resolve
from models_registry.tasks import check_model_deep
from tests.api_client import call, codes, make_user_token
from tests.broker_checks import broker, queued_checks  # noqa: F401 - the broker fixture, cleaned after
from tests.clients import secure_client
from tests.test_verdict_differential import NEW_CASES

ADDED = NEW_CASES["added_tokens_beyond_vocab"]  # the instant rules accept it; transformers refuses it


@pytest.fixture
def member(team):
    return secure_client(team["alice"])


@pytest.fixture
def token(db) -> str:
    return make_user_token("api-member")[1]


def listed(client, token: str, **query) -> dict:
    response = call(client, "get", f"/projects/models/available?{urlencode(query)}", None, token)
    assert response.status_code == 200, response.content
    return {m["model_name"]: m for m in response.json()["models"]}


def test_the_list_shows_each_models_deep_state_with_transformers_reason_first(
    member, token, hf_cache, tiny_llama_dir, tmp_path
):
    (tmp_path / "scratch").mkdir()
    ADDED.build(hf_cache, tiny_llama_dir, tmp_path / "scratch")
    for name in ("test-org/loads", "test-org/asked", "test-org/never"):
        install_into_cache(tiny_llama_dir, hf_cache, name)
    check_model_deep(resolve("test-org/loads", cache_dir=hf_cache).path, False, "test-org/loads")
    check_model_deep(resolve(ADDED.name, cache_dir=hf_cache).path, False, ADDED.name)
    asked = call(member, "post", "/projects/validate-model", {"model_name": "test-org/asked"}, token)
    assert asked.json()["deep"]["state"] == "checking"  # a POST asked a worker (its message is never sent here)

    models = listed(member, token)
    states = {name: (m["deep"]["state"], m["deep"]["valid"]) for name, m in models.items()}
    assert states == {
        "test-org/loads": ("done", True),
        ADDED.name: ("done", False),
        "test-org/asked": ("checking", None),
        "test-org/never": ("unchecked", None),
    }
    refused = models[ADDED.name]
    assert refused["valid"] is False and codes(refused["errors"])[0] == "tokenizer_exceeds_embedding"
    assert "384 rows" in refused["deep"]["errors"][0]["message"] and refused["deep"]["checked_at"]
    assert set(listed(member, token, valid="false")) == {ADDED.name}

    page = member.get(reverse("registry:models")).content.decode()
    assert "transformers: loads and trains" in page
    assert "transformers refuses: Model &#x27;test-org/d-added&#x27;: its tokenizer gives token ids" in page
    assert "checking with transformers…" in page and "not checked by transformers yet" in page
    assert "hx-trigger=\"every 5s [document.visibilityState === 'visible']\"" in page
    assert "A worker is checking 1 model with transformers" in page and 'href="/models/?q=&amp;valid="' in page
    assert VerdictRequest.objects.count() == 1  # the list only read


def test_the_list_polls_only_while_a_worker_is_checking(member, token, hf_cache, tiny_llama_dir):
    install_into_cache(tiny_llama_dir, hf_cache, "test-org/tiny")
    rows = member.get(reverse("registry:models"), HTTP_HX_REQUEST="true").content.decode()
    assert "not checked by transformers yet" in rows and "every 5s" not in rows  # nobody asked: nothing to wait for
    call(member, "post", "/projects/validate-model", {"model_name": "test-org/tiny"}, token)
    rows = member.get(reverse("registry:models"), {"q": "tiny"}, HTTP_HX_REQUEST="true").content.decode()
    assert 'class="deep-poll"' in rows and 'hx-get="/models/?q=tiny&amp;valid="' in rows
    check_model_deep(resolve("test-org/tiny", cache_dir=hf_cache).path, False, "test-org/tiny")
    rows = member.get(reverse("registry:models"), {"q": "tiny"}, HTTP_HX_REQUEST="true").content.decode()
    assert "transformers: loads and trains" in rows and "deep-poll" not in rows


def test_reading_the_list_takes_the_same_queries_for_two_models_or_six(db, hf_cache, tiny_llama_dir):
    def queries() -> list[str]:
        with CaptureQueriesContext(connection) as seen:
            lookup.available_models()
        return [q["sql"] for q in seen.captured_queries]

    queries()  # the first look creates the settings row
    for i in range(2):
        install_into_cache(tiny_llama_dir, hf_cache, f"test-org/m{i}")
    two = queries()
    for i in range(2, 6):
        install_into_cache(tiny_llama_dir, hf_cache, f"test-org/m{i}")
    six = queries()
    assert len(six) == len(two)
    assert sum("models_registry_modelverdict" in sql for sql in six) == 1  # one query for every verdict
    assert sum("models_registry_verdictrequest" in sql for sql in six) == 1


def test_no_get_asks_for_a_check_and_the_polls_post_asks_once(
    member,
    hf_cache,
    tiny_llama_dir,
    broker,  # noqa: F811 - the fixture imported above
    django_capture_on_commit_callbacks,
):
    folder = str(install_into_cache(tiny_llama_dir, hf_cache, "test-org/tiny"))
    before = len(queued_checks(broker))
    query = urlencode({"model_name": "test-org/tiny", "revision": "", "view": "page"})
    status_url = f"{reverse('registry:verdict-status')}?{query}"
    with django_capture_on_commit_callbacks(execute=True):
        page = member.get(reverse("registry:model-detail", kwargs={"name": "test-org/tiny"})).content.decode()
        member.get(reverse("registry:validate-field"), {"model_name": "test-org/tiny"})
        member.get(reverse("registry:models"))
        polled = member.get(status_url, HTTP_HX_REQUEST="true")
        member.get(status_url.replace("view=page", "view=field"), HTTP_HX_REQUEST="true")
    assert polled.status_code == 200 and "Checking with transformers…" in polled.content.decode()
    assert VerdictRequest.objects.count() == 0 and queued_checks(broker)[before:] == []  # five GETs wrote nothing
    assert f'hx-post="{status_url.replace("&", "&amp;")}"' in page  # the page's poll is the one that asks

    with django_capture_on_commit_callbacks(execute=True):
        first = member.post(status_url, HTTP_HX_REQUEST="true")
        again = member.post(status_url, HTTP_HX_REQUEST="true")
    assert first.status_code == again.status_code == 200
    checks = queued_checks(broker)[before:]
    assert len(checks) == 1 and folder in checks[0], checks
    assert VerdictRequest.objects.get().folder == folder
