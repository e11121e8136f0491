"""In headless Chromium: a member publishes a run's model from its page, finds it on the model page (source
portal, with the run, base model and dataset hash), and trains a new project on it through "Train this model" on
a real worker. The published run is a row whose folder holds a full fine-tune as the trainer leaves it (the tiny
Llama and a manifest); tests/test_publish_training.py trains that first run for real.
Screenshots in test-artifacts/browser/<test>/."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from mtm.shared.claims import identity_of
from projects.datasets.samples import write_sample_dataset
from projects.models import RunStatus, TrainingProject, TrainingRun
from tests.browser_helpers import MEMBER, MEMBER_PASSWORD, why_no_browser

if (reason := why_no_browser()) is not None:
    pytest.skip(reason, allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

from tests.browser_helpers import Screenshots, chromium, log_in  # noqa: E402
from tests.test_browser import _plain_http_while_server_starts, live_server  # noqa: E402, F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SHA = "5e" * 32


def test_publish_a_run_and_train_a_new_project_on_it(
    browser_member,
    portal_roots,
    tiny_llama_in_cache,
    tiny_llama_dir,
    start_worker,
    request,
    live_server,  # noqa: F811 - the fixture imported above
):
    project = TrainingProject.objects.create(
        name="support",
        owner=browser_member,
        model_name=tiny_llama_in_cache[0],
        dataset_path=str(portal_roots / "datasets" / "qa.jsonl"),
        output_directory=str(portal_roots / "outputs" / "support"),
        method="full",
    )
    run = TrainingRun.objects.create(project=project, started_by=browser_member, status=RunStatus.SUCCEEDED)
    run.run_folder = str(Path(project.output_directory) / f"run-{run.pk}")
    run.save(update_fields=["run_folder"])
    shutil.copytree(tiny_llama_dir, run.run_folder)
    run.run_folder_identity = identity_of(run.run_folder)  # as the train stage records the folder it made
    run.save(update_fields=["run_folder_identity"])
    manifest = {
        "format": 1,
        "base_model": {"name": tiny_llama_in_cache[0], "revision": tiny_llama_in_cache[1].name},
        "method": "full",
        "dataset": {"path": project.dataset_path, "sha256": SHA},
        "layout": {"model_dir": ".", "adapter_dir": None},
    }
    Path(run.run_folder, "mtm_manifest.json").write_text(json.dumps(manifest))
    write_sample_dataset(portal_roots / "datasets")
    start_worker(extra_env={"MTM_TORCH_THREADS": "1"}).wait_ready()
    base = live_server.url
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        shot = Screenshots(page, request.node.name)
        log_in(page, base, MEMBER, MEMBER_PASSWORD)
        page.goto(f"{base}/projects/runs/{run.pk}/")
        build = page.locator("section.build-on")
        build.scroll_into_view_if_needed()
        build.get_by_label("Publish as").fill(tiny_llama_in_cache[0])  # a cache model's name first
        build.get_by_role("button", name="Publish").click()
        expect(page.locator(".publish-errors")).to_contain_text("names a model in the Hugging Face cache")
        expect(page.locator("section.build-on").get_by_label("Publish as")).to_have_value(tiny_llama_in_cache[0])
        shot("a-cache-models-name-is-refused")
        page.locator("section.build-on").get_by_label("Publish as").fill("team/support-bot-v2")
        page.locator("section.build-on").get_by_role("button", name="Publish").click()
        expect(page).to_have_url(f"{base}/models/team/support-bot-v2/")
        expect(page.locator("h1 .badge-portal")).to_have_text("portal")
        facts = page.locator("section.published-from")
        expect(facts).to_contain_text(f"run #{run.pk}")
        expect(facts.locator(".base-model")).to_contain_text(tiny_llama_in_cache[1].name)
        expect(facts.locator(".dataset-sha")).to_contain_text(SHA)
        shot("published-model-page")

        page.get_by_role("link", name="Train this model").click()
        expect(page.locator("#id_model_name")).to_have_value("team/support-bot-v2")
        expect(page.locator("#id_model_name-status .status-ok")).to_be_visible(timeout=20_000)
        page.get_by_role("button", name="Use the quick-check preset").click()
        expect(page.locator("#id_max_steps")).to_have_value("10")
        page.get_by_role("button", name="Use the sample dataset").click()
        expect(page.locator("#dataset-status .rows")).to_be_visible(timeout=20_000)
        page.locator("input[name=method][value=full]").check()
        page.get_by_label("Name", exact=True).fill("on-top")
        shot("new-project-on-the-published-model")
        page.get_by_role("button", name="Create project").click()
        expect(page.locator(".messages")).to_contain_text("Project 'on-top' created")
        page.get_by_role("button", name="Start", exact=True).click()
        expect(page).to_have_url(re.compile(r"/projects/runs/\d+/$"))
        expect(page.locator("#run-live .run-state .badge")).to_have_text("succeeded", timeout=180_000)
        expect(page.locator("#run-live .badge-portal")).to_have_text("portal")
        validation = page.locator("section.validation")
        expect(validation.locator("h2 .badge")).to_have_text(re.compile(r"^passed"))
        for check in ("files", "json", "load"):
            expect(validation.locator(f"tr.check-{check} .badge")).to_have_text("passed")
        shot("second-project-trained-on-it")
    built = TrainingRun.objects.exclude(pk=run.pk).get()
    assert (built.resolved_source, built.resolved_path) == ("portal", run.run_folder)
