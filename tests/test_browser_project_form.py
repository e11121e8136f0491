"""The New project form in headless Chromium: one press on Create submits even when the checks as you type swap
their results into the page during that press (the box just typed in loses focus as the button is pressed, which
starts the checks that run on a change). Nothing trains: no worker is started."""

from __future__ import annotations

import re

import pytest

from projects.models import TrainingProject
from tests.browser_helpers import MEMBER, MEMBER_PASSWORD, why_no_browser

if (reason := why_no_browser()) is not None:
    pytest.skip(reason, allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

from tests.browser_helpers import Screenshots, chromium, log_in  # noqa: E402

# The live server as tests/test_browser.py starts it: with the HTTPS redirect off.
from tests.test_browser import _plain_http_while_server_starts, live_server  # noqa: E402, F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHECK_TIMEOUT_MS = 20_000
PROJECT_PAGE = re.compile(r"/projects/\d+/$")
# Note every region htmx swaps (by id) from now on.
NOTE_SWAPS = """() => {
  window.mtmSwapped = [];
  document.body.addEventListener('htmx:afterSettle', e => window.mtmSwapped.push(e.detail.target.id));
}"""
# All of `ids` swapped since NOTE_SWAPS and no request of htmx still in flight.
SWAPS_LANDED = """ids => ids.every(id => window.mtmSwapped.includes(id))
  && document.querySelectorAll('.htmx-request').length === 0"""


def _open_form(page, base: str, dataset: str) -> None:
    log_in(page, base, MEMBER, MEMBER_PASSWORD)
    page.goto(f"{base}/projects/new/")
    page.fill("#id_name", "faq-bot")
    page.fill("#id_dataset_path", dataset)
    expect(page.locator("#dataset-status")).to_contain_text("valid", timeout=CHECK_TIMEOUT_MS)
    expect(page.locator("#id_output_directory")).to_have_value(re.compile(r"/faq-bot$"), timeout=CHECK_TIMEOUT_MS)


def test_create_submits_when_the_checks_swap_their_results_in_during_the_press(
    browser_member,
    portal_roots,
    tiny_llama_in_cache,
    live_server,  # noqa: F811 - the fixture imported above
    request,
):
    """Type the base model, then press Create at once and hold it until every check that press started has drawn
    its result above the button (the model's check, the dataset's token lengths, the max sequence length's warning,
    the memory estimate); let go: the project is created. The window is as tall as the page, so nothing scrolls to
    hide a move."""
    base = live_server.url
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        shots = Screenshots(page, request.node.name)
        _open_form(page, base, str(portal_roots / "datasets" / "qa.jsonl"))
        page.set_viewport_size({"width": 1280, "height": page.evaluate("document.documentElement.scrollHeight") + 600})
        page.evaluate(NOTE_SWAPS)
        page.fill("#id_model_name", tiny_llama_in_cache[0])  # focus stays in the box: it blurs on the press
        create = page.get_by_role("button", name="Create project")
        box = create.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        landed = ["id_model_name-status", "dataset-status", "max_seq_length-status", "memory-estimate"]
        page.wait_for_function(SWAPS_LANDED, arg=landed, timeout=CHECK_TIMEOUT_MS)
        shots("pressed-after-the-swaps")
        under_pointer = page.evaluate("([x, y]) => document.elementFromPoint(x, y).textContent.trim()", [x, y])
        page.mouse.up()
        expect(page).to_have_url(PROJECT_PAGE, timeout=CHECK_TIMEOUT_MS)
        shots("created")
    assert under_pointer == "Create project"
    assert TrainingProject.objects.get().name == "faq-bot"


def test_the_dpo_settings_show_only_while_the_objective_is_dpo(
    browser_member,
    portal_roots,
    live_server,  # noqa: F811 - the fixture imported above
):
    base = live_server.url
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        log_in(page, base, MEMBER, MEMBER_PASSWORD)
        page.goto(f"{base}/projects/new/")
        dpo = page.locator("fieldset.dpo-fields")
        expect(page.locator("#id_objective")).to_have_value("sft")
        expect(dpo).to_be_hidden()
        page.select_option("#id_objective", "dpo")
        expect(dpo).to_be_visible()
        expect(page.locator("#id_dpo_beta")).to_be_visible()
        page.select_option("#id_objective", "sft")
        expect(dpo).to_be_hidden()
