"""The Models page: the list asks (by a POST, on load) for the checks of the unchecked models
it shows and then polls, so a new model shows "checking with transformers…" and its verdict without a reload; a
refusal is printed once; the Problems column shows what it counts, and a dash when there is nothing; a model's name
never wraps mid-word. Real caches of the tiny Llama, a real broker (nothing runs the queued checks unless a test
calls the check itself)."""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.urls import reverse

from models_registry.demo import install_into_cache
from models_registry.models import VerdictRequest
from models_registry.resolution import resolve
from models_registry.tasks import check_model_deep
from tests.broker_checks import broker, queued_checks  # noqa: F401 - the broker fixture, cleaned after
from tests.browser_helpers import MEMBER, MEMBER_PASSWORD, why_no_browser
from tests.clients import secure_client
from tests.hfcache import make_model_repo
from tests.test_verdict_differential import NEW_CASES

if why_no_browser() is None:  # the live server as tests/test_browser.py starts it (that module skips without a browser)
    from tests.test_browser import _plain_http_while_server_starts, live_server  # noqa: F401

ADDED = NEW_CASES["added_tokens_beyond_vocab"]  # the instant rules accept it; transformers refuses it
HX = {"HTTP_HX_REQUEST": "true"}
ASK_ON_LOAD = re.compile(r'<tr class="deep-ask" hx-post="([^"]+)" hx-trigger="load"')


@pytest.fixture
def member(team):
    return secure_client(team["alice"])


def rows_of(body: str) -> dict[str, str]:
    """Each model row's HTML by the model's name."""
    found = {}
    for row in re.findall(r"<tr>.*?</tr>", body, flags=re.S):
        name = re.search(r'<td class="name">\s*(?:<a [^>]*>)?([^<]+)<', row)
        if name:
            found[name.group(1).strip()] = row
    return found


def problems_cell(row: str) -> str:
    cell = re.search(r'<td class="problems">(.*?)</td>', row, flags=re.S).group(1)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", cell)).split())


def ask_url(body: str) -> str | None:
    found = ASK_ON_LOAD.search(body)
    return unescape(found.group(1)) if found else None


def test_the_list_asks_for_the_unchecked_models_it_shows_a_batch_at_a_time(
    member,
    hf_cache,
    tiny_llama_dir,
    settings,
    broker,  # noqa: F811 - the fixture imported above
    django_capture_on_commit_callbacks,
):
    settings.MTM_VERDICT_FILL_BATCH = 2
    names = ("test-org/a", "test-org/b", "test-org/c")
    folders = {name: str(install_into_cache(tiny_llama_dir, hf_cache, name)) for name in names}
    install_into_cache(tiny_llama_dir, hf_cache, "other-org/hidden")
    before = len(queued_checks(broker))

    page = member.get(reverse("registry:models"), {"q": "test-org"}).content.decode()
    assert page.count("not checked by transformers yet") == 3 and "every 5s" not in page
    assert "{#" not in page and "Asking a worker to check 2 models with transformers" in page
    url = ask_url(page)
    assert url == f"{reverse('registry:models-ask')}?q=test-org&valid="  # the page asks for what it shows, by a POST
    assert VerdictRequest.objects.count() == 0 and queued_checks(broker)[before:] == []  # the GET only read

    with django_capture_on_commit_callbacks(execute=True):
        asked = member.post(url, **HX)
    body = asked.content.decode()
    assert asked.status_code == 200 and "<html" not in body and "HX-Request" in asked["Vary"]
    assert body.count("checking with transformers…") == 2 and body.count("not checked by transformers yet") == 1
    assert 'class="deep-poll"' in body and "A worker is checking 2 models" in body
    assert ask_url(body) is None  # the answer to an ask never asks again by itself
    checks = queued_checks(broker)[before:]
    assert len(checks) == 2 and VerdictRequest.objects.count() == 2  # one batch (MTM_VERDICT_FILL_BATCH)
    first_two = sorted(row.folder for row in VerdictRequest.objects.all())
    assert all(folder in folders.values() for folder in first_two)  # never the model the filter hides

    with django_capture_on_commit_callbacks(execute=True):
        again = member.post(url, **HX).content.decode()
    assert VerdictRequest.objects.count() == 2 and "checking with transformers…" in again  # nothing asked twice

    for folder in first_two:  # what the worker does with the two messages
        name = next(n for n, f in folders.items() if f == folder)
        check_model_deep(folder, False, name)
    polled = member.get(reverse("registry:models"), {"q": "test-org"}, **HX).content.decode()
    assert polled.count("transformers: loads and trains") == 2 and "deep-poll" not in polled
    assert ask_url(polled) == url  # none is being checked and one is not: the rows ask for the next batch
    with django_capture_on_commit_callbacks(execute=True):
        last = member.post(url, **HX).content.decode()
    assert last.count("checking with transformers…") == 1 and VerdictRequest.objects.count() == 1
    [third] = [name for name, folder in folders.items() if folder not in first_two]
    assert VerdictRequest.objects.get().folder == folders[third]


def test_the_list_keeps_at_most_a_batch_of_its_models_being_checked_and_asks_nothing_when_the_fill_is_off(
    member,
    hf_cache,
    tiny_llama_dir,
    settings,
    broker,  # noqa: F811 - the fixture imported above
    django_capture_on_commit_callbacks,
):
    settings.MTM_VERDICT_FILL_BATCH = 2
    for name in ("test-org/a", "test-org/b", "test-org/c"):
        install_into_cache(tiny_llama_dir, hf_cache, name)
    url = ask_url(member.get(reverse("registry:models")).content.decode())
    with django_capture_on_commit_callbacks(execute=True):
        member.post(f"{reverse('registry:models-ask')}?q=test-org/a&valid=", **HX)  # a list filtered to "a" asked
    shown = member.get(reverse("registry:models")).content.decode()
    assert ask_url(shown) == url and "Asking a worker to check 1 model with transformers" in shown  # room for one
    with django_capture_on_commit_callbacks(execute=True):
        member.post(url, **HX)
    assert VerdictRequest.objects.count() == 2
    shown = member.get(reverse("registry:models"), **HX).content.decode()
    assert "deep-poll" in shown and ask_url(shown) is None  # the batch is full: the poll does not ask
    with django_capture_on_commit_callbacks(execute=True):
        member.post(url, **HX)  # nor does a second tab
    assert VerdictRequest.objects.count() == 2

    settings.MTM_VERDICT_FILL_BATCH = 0  # the operator turned the fill off: models are checked only when asked
    VerdictRequest.objects.all().delete()
    shown = member.get(reverse("registry:models")).content.decode()
    assert ask_url(shown) is None and "not checked by transformers yet" in shown
    with django_capture_on_commit_callbacks(execute=True):
        member.post(url, **HX)
    assert VerdictRequest.objects.count() == 0


def test_asking_without_htmx_comes_back_to_the_list_and_a_get_is_refused(
    member,
    hf_cache,
    tiny_llama_dir,
    broker,  # noqa: F811 - the fixture imported above
    django_capture_on_commit_callbacks,
):
    install_into_cache(tiny_llama_dir, hf_cache, "test-org/a")
    page = member.get(reverse("registry:models")).content.decode()
    assert f'<form method="post" action="{reverse("registry:models-ask")}?q=&amp;valid="' in page  # works without JS
    with django_capture_on_commit_callbacks(execute=True):
        plain = member.post(f"{reverse('registry:models-ask')}?q=a&valid=true")
    assert plain.status_code == 303 and plain["Location"] == f"{reverse('registry:models')}?q=a&valid=true"
    assert VerdictRequest.objects.count() == 1
    assert member.get(reverse("registry:models-ask")).status_code == 405
    assert secure_client().post(reverse("registry:models-ask")).status_code == 302  # signed-in members only


def test_a_refusal_is_printed_once(member, hf_cache, tiny_llama_dir, tmp_path):
    (tmp_path / "scratch").mkdir()
    ADDED.build(hf_cache, tiny_llama_dir, tmp_path / "scratch")
    check_model_deep(resolve(ADDED.name, cache_dir=hf_cache).path, False, ADDED.name)
    refused = rows_of(member.get(reverse("registry:models")).content.decode())[ADDED.name]
    assert "transformers refuses: Model &#x27;test-org/d-added&#x27;: its tokenizer gives token ids" in refused
    assert refused.count("its tokenizer gives token ids") == 1  # in Status; not again under Problems
    assert problems_cell(refused) == "—"  # transformers' reason was its only problem


def test_problems_show_every_warning_they_count(member, hf_cache):
    snapshot = make_model_repo(hf_cache, "acme/broken-model", weights=False, generation_config=False)
    (snapshot / "config.json").unlink()  # a tokenizer and nothing else
    broken = problems_cell(rows_of(member.get(reverse("registry:models")).content.decode())["acme/broken-model"])
    assert broken.startswith("Model format invalid: missing config.json")
    assert "No weights (*.safetensors or *.bin)" in broken and "No generation_config.json" in broken
    assert "2 warnings" not in broken  # no count beside a single warning: each warning is shown


def test_a_valid_model_without_problems_shows_a_dash(member, hf_cache, tiny_llama_dir):
    install_into_cache(tiny_llama_dir, hf_cache, "test-org/valid")
    row = rows_of(member.get(reverse("registry:models")).content.decode())["test-org/valid"]
    assert 'badge-ok">valid' in row and problems_cell(row) == "—"  # as other pages say nothing: not "None"


# Each model's name (its link) and revision as the browser lays them out: the text and how many lines it takes.
NAME_LINES = """() => [...document.querySelectorAll('#model-rows td.name a, #model-rows td.revision code')].map(
  a => [a.textContent.trim(), a.getClientRects().length])"""


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(why_no_browser() is not None, reason=str(why_no_browser()))
def test_model_names_and_revisions_are_not_broken_beside_a_long_refusal(
    browser_member,
    hf_cache,
    tiny_llama_dir,
    tmp_path,
    settings,
    live_server,  # noqa: F811 - the fixture imported above
):
    """A list with a transformers refusal that runs for several lines, a broken model with warnings and a
    valid one, in a 1280-pixel window. Layout is only seen in a browser."""
    from tests.browser_helpers import Screenshots, chromium, log_in

    settings.MTM_VERDICT_FILL_BATCH = 0  # the test is about the layout: nothing to ask for
    (tmp_path / "scratch").mkdir()
    ADDED.build(hf_cache, tiny_llama_dir, tmp_path / "scratch")
    check_model_deep(resolve(ADDED.name, cache_dir=hf_cache).path, False, ADDED.name)
    broken = make_model_repo(hf_cache, "acme/broken-model", weights=False, generation_config=False)
    (broken / "config.json").unlink()
    install_into_cache(tiny_llama_dir, hf_cache, "mtm-demo/tiny-random-llama")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        log_in(page, live_server.url, MEMBER, MEMBER_PASSWORD)
        page.goto(f"{live_server.url}/models/")
        names = page.evaluate(NAME_LINES)
        Screenshots(page, "models_list_names")("models")
    assert sorted(names) == [
        ["0123456789", 1],
        ["0123456789", 1],
        ["aaaaaaaaaa", 1],
        ["acme/broken-model", 1],
        ["mtm-demo/tiny-random-llama", 1],
        [ADDED.name, 1],
    ], names
