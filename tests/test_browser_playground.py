"""In headless Chromium, as a member would: a real LoRA run of the tiny Llama (the session's, trained on a real
worker: tests.trained_runs.LORA, copied as the member's), then the member opens the playground, picks the run and watches the answer arrive from the playground worker (the turn is
polled while it is live), with time to first token and tokens/s. Screenshots in test-artifacts/browser/<test>/."""

from __future__ import annotations

import pytest

from playground.models import Generation
from projects.models import RunStatus
from tests.browser_helpers import MEMBER, MEMBER_PASSWORD, why_no_browser
from tests.playground_helpers import inference_worker, wait_for_inference_worker
from tests.trained_runs import copy_trained_run

if (reason := why_no_browser()) is not None:
    pytest.skip(reason, allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

from tests.browser_helpers import Screenshots, chromium, log_in  # noqa: E402

# The live server as tests/test_browser.py starts it: with the HTTPS redirect off.
from tests.test_browser import _plain_http_while_server_starts, live_server  # noqa: E402, F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Every change of the turn: its status and how much of the answer is shown.
_RECORD_TURN = """() => {
  window.mtmTurn = [];
  const note = () => {
    const turn = document.querySelector('li.turn:last-of-type');
    if (!turn) return;
    const seen = {status: turn.dataset.status, chars: turn.querySelector('.reply').textContent.trim().length};
    const last = window.mtmTurn[window.mtmTurn.length - 1];
    if (!last || last.status !== seen.status || last.chars !== seen.chars) window.mtmTurn.push(seen);
  };
  note();
  new MutationObserver(note).observe(document.querySelector('#turns'), {childList: true, subtree: true});
}"""


def _expect_answered(turn, worker_log) -> None:
    """The turn ends answered; when it does not, the failure shows the turn as the page shows it (its problem) and
    the playground worker's log. No database here: Playwright's sync API runs an event loop in this thread."""
    try:
        expect(turn).to_have_attribute("data-status", "succeeded", timeout=120_000)
    except AssertionError as failed:
        shown = turn.inner_text()
        log = worker_log.read_text(errors="replace")[-8000:] if worker_log.exists() else "(no worker log)"
        raise AssertionError(f"{failed}\nthe turn shows: {shown}\nthe playground worker's log:\n{log}") from None


def test_the_playground_streams_an_answer_from_a_fine_tuned_model(
    browser_member,
    portal_roots,
    tiny_llama_in_cache,
    trained_lora_run,
    celery_broker,
    tmp_path,
    live_server,  # noqa: F811 - the fixture imported above
):
    answering = inference_worker(celery_broker, tmp_path / "playground.log")
    run = copy_trained_run(trained_lora_run, browser_member, portal_roots)
    assert run.status == RunStatus.SUCCEEDED and run.config["method"] == "lora", run.error_message
    answering.wait_ready(120)
    wait_for_inference_worker()

    base = live_server.url
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            shot = Screenshots(page, "test_the_playground_streams_an_answer_from_a_fine_tuned_model")
            log_in(page, base, MEMBER, MEMBER_PASSWORD)
            page.get_by_role("link", name="Playground", exact=True).click()
            expect(page.get_by_role("heading", name="Playground")).to_be_visible()
            page.get_by_label("Model", exact=True).select_option(f"run:{run.pk}")
            shot("pick-the-run")
            page.get_by_role("button", name="Start chatting").click()
            expect(page.get_by_role("heading", name=f"Chat with run {run.pk}")).to_be_visible()

            page.get_by_label("Message", exact=True).fill("Say hello:")
            page.locator("details.chat-settings summary").click()
            page.get_by_label("Temperature").fill("0")
            page.get_by_label("Max new tokens").fill("60")
            shot("message-typed")
            page.get_by_role("button", name="Send").click()
            page.evaluate(_RECORD_TURN)
            shot("answer-coming")
            turn = page.locator("li.turn").last
            _expect_answered(turn, tmp_path / "playground.log")
            expect(turn.locator(".turn-stats")).to_contain_text("first token after")
            expect(turn.locator(".turn-stats")).to_contain_text("model loaded for it")
            shown = turn.locator(".reply").inner_text().strip()
            seen = page.evaluate("() => window.mtmTurn")
            shot("answered")

            # A second message: the model is still loaded on the worker.
            page.get_by_label("Message", exact=True).fill("And once more:")
            page.get_by_role("button", name="Send").click()
            second = page.locator("li.turn").last
            _expect_answered(second, tmp_path / "playground.log")
            expect(second.locator(".turn-stats")).to_contain_text("model already loaded")
            shot("second-answer-warm")
    finally:
        answering.stop()
    first = Generation.objects.order_by("pk").first()
    assert first.status == "succeeded" and first.conversation.run_id == run.pk
    assert shown and " ".join(shown.split()) == " ".join(first.reply.split())
    # The page polled the live turn: it was seen live (queued or running) before it was seen answered.
    assert seen[0]["status"] in ("queued", "running") and seen[-1]["status"] == "succeeded", seen
    assert first.cold is True and Generation.objects.order_by("pk").last().cold is False
