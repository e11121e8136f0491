"""In headless Chromium, as a member would: a run with an eval set (the session's full fine-tune, trained on a real
worker: tests.trained_runs.FULL, copied as the member's) has its page draw the training and the eval loss and its
report put the base model's answers beside the fine-tuned one's; after she saves another learning rate and a second
run has it, she ticks both on the Runs page and compares them. Screenshots in test-artifacts/browser/<test>/."""

from __future__ import annotations

import pytest

from tests.browser_helpers import MEMBER, MEMBER_PASSWORD, why_no_browser
from tests.pipeline_helpers import FAST_HYPERPARAMETERS
from tests.trained_runs import copy_trained_run

if (reason := why_no_browser()) is not None:
    pytest.skip(reason, allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

from tests.browser_helpers import Screenshots, chromium, log_in  # noqa: E402

# The live server as tests/test_browser.py starts it: with the HTTPS redirect off.
from tests.test_browser import _plain_http_while_server_starts, live_server  # noqa: E402, F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_eval_curves_before_and_after_and_two_runs_side_by_side(
    browser_member,
    portal_roots,
    tiny_llama_in_cache,
    trained_full_run,
    live_server,  # noqa: F811 - the fixture imported above
    request,
):
    assert trained_full_run.project["hyperparameters"] == {
        **FAST_HYPERPARAMETERS, "max_steps": 8, "learning_rate": 0.02, "eval_fraction": 0.25, "eval_steps": 4,
        "eval_prompts": 2,
    }  # fmt: skip
    first = copy_trained_run(trained_full_run, browser_member, portal_roots)
    project = first.project
    base = live_server.url
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        shot = Screenshots(page, request.node.name)
        log_in(page, base, MEMBER, MEMBER_PASSWORD)

        page.goto(f"{base}/projects/runs/{first.pk}/")
        expect(page.locator("#run-live .run-state .badge")).to_have_text("succeeded")
        chart = page.locator("svg.loss-chart")
        expect(chart.locator("polyline.line")).to_have_count(1)
        expect(chart.locator("polyline.eval-line")).to_have_count(1)
        expect(chart.locator("circle.eval-point")).to_have_count(2)  # steps 4 and 8
        expect(chart.locator(".legend")).to_contain_text("eval loss")
        expect(chart.locator(".legend .legend-box")).to_have_count(1)  # the key's labels sit on an opaque box
        expect(page.locator(".eval-split")).to_have_text(
            "6 of 23 rows (25%), picked with seed 42, held out of training"
        )
        expect(page.locator(".eval-loss")).to_contain_text("at step 8")
        report = page.locator("section.validation")
        expect(report.locator("table.before-after tbody tr")).to_have_count(2)  # eval_prompts
        expect(report.locator(".tuned-eval-loss")).not_to_have_text("—")
        expect(report.locator(".base-eval-loss")).not_to_have_text("—")
        expect(report.locator("pre.reference").first).not_to_be_empty()
        chart.scroll_into_view_if_needed()
        shot("run-with-training-and-eval-curves")
        report.scroll_into_view_if_needed()
        shot("report-base-vs-fine-tuned")

        page.goto(f"{base}/projects/{project.pk}/edit/")
        page.locator("#id_learning_rate").fill("0.005")
        page.get_by_role("button", name="Save").click()
        expect(page.locator(".messages")).to_contain_text("saved")

    # The second run, with the learning rate she saved (the ORM is refused while Chromium's event loop runs).
    project.refresh_from_db()
    learning_rate = project.hyperparameters["learning_rate"]
    second = copy_trained_run(
        trained_full_run,
        browser_member,
        portal_roots,
        project=project,
        hyperparameters={"learning_rate": learning_rate},
    )
    first_id, second_id = first.pk, second.pk
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        shot.page = page  # the same numbered screenshots
        log_in(page, base, MEMBER, MEMBER_PASSWORD)
        page.goto(f"{base}/projects/runs/")
        page.get_by_label(f"Compare run #{first_id}").check()
        page.get_by_label(f"Compare run #{second_id}").check()
        shot("runs-page-two-picked")
        page.get_by_role("button", name="Compare selected").click()
        # The Runs page lists the newest first, so the ticked boxes send the second run first.
        expect(page).to_have_url(f"{base}/projects/runs/compare/?runs={second_id}&runs={first_id}")
        expect(page.get_by_role("heading", name="Compare runs")).to_be_visible()
        compared = page.locator("svg.compare-chart")
        expect(compared.locator("polyline")).to_have_count(4)  # each run's training and eval loss
        diff = page.locator("table.compare-diff")
        expect(diff.locator("tr.diff-learning_rate")).to_contain_text("0.02")
        expect(diff.locator("tr.diff-learning_rate")).to_contain_text("0.005")
        expect(diff.locator("tr")).to_have_count(2)  # the header and the one setting that differs
        expect(page.locator("table.compare-results .validation-result")).to_have_count(2)
        shot("compare-two-runs")

        page.goto(f"{base}/projects/runs/compare/?runs={first_id}")
        expect(page.locator(".compare-error")).to_contain_text("Compare needs 2 to 5 runs; 1 run was picked.")
        shot("compare-refuses-one-run")
