"""End to end in headless Chromium: the portal's pages on pytest-django's live server, runs on a real Celery worker,
the tiny Llama in a temp HF cache. Each step's screenshot is kept in test-artifacts/browser/<test>/.

Each test starts its own worker (`start_worker`, stopped when the test ends) rather than sharing `celery_worker`, so
that its trainer can be given one CPU thread (see STEPS below) and no worker of these tests outlives them."""

from __future__ import annotations

import html
import re
import shutil

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from models_registry.models import PortalSettings
from models_registry.names import repo_folder_name
from projects.models import TrainingProject
from tests.browser_helpers import PLAIN_HTTP_SETTINGS, why_no_browser
from tests.pipeline_helpers import FAST_HYPERPARAMETERS, QA_ROWS, wait_until_a_worker_reports, write_jsonl

if (reason := why_no_browser()) is not None:
    pytest.skip(reason, allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

from tests.browser_helpers import Screenshots, chromium, csrf_token, log_in, log_out, record_progress  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "a long test password 7"
TRAINING_TIMEOUT_MS = 180_000
CHECK_TIMEOUT_MS = 20_000
# Steps logged one by one, each over the whole dataset (24 batches of one row, gradients accumulated), so that
# training outlasts several of the run page's 2-second polls even on a fast CPU and the bar is seen mid-way. The
# trainer uses one CPU thread: for a model this small more threads only add overhead, and fight other tests for CPUs.
STEPS = 100
BATCH_SIZE = 1
ACCUMULATION = 24


@pytest.fixture(scope="session")
def _plain_http_while_server_starts():
    """SecurityMiddleware reads SECURE_SSL_REDIRECT once, when the live server builds its handler: the setting must
    be off at that moment (the `settings` fixture below turns the per-request ones off for each test)."""
    override = override_settings(**PLAIN_HTTP_SETTINGS)
    override.enable()
    state = {"enabled": True}
    yield lambda: state.update(enabled=False) or override.disable()
    if state["enabled"]:
        override.disable()


@pytest.fixture(scope="session")
def live_server(_plain_http_while_server_starts, live_server):
    """pytest-django's live server, started while the HTTPS redirect is off."""
    _plain_http_while_server_starts()
    return live_server


@pytest.fixture
def portal(hf_cache, tmp_path, transactional_db, settings):
    """Settings the worker reads from the database, two members, and plain HTTP for the live server."""
    for name, value in PLAIN_HTTP_SETTINGS.items():
        setattr(settings, name, value)
    datasets, outputs = tmp_path / "datasets", tmp_path / "outputs"
    outputs.mkdir()
    # Uploads are stored under MEDIA_ROOT; the worker (its own var/) finds them because they are in a dataset root.
    settings.MEDIA_ROOT = str(datasets / "uploads")
    row = PortalSettings.load()
    row.model_cache_path = str(hf_cache)
    row.allowed_output_roots = [str(outputs)]
    row.allowed_dataset_roots = [str(datasets)]
    row.save()
    return {
        "a": User.objects.create_user("member-a", password=PASSWORD),
        "b": User.objects.create_user("member-b", password=PASSWORD),
        "datasets": datasets,
        "outputs": outputs,
        "elsewhere": tmp_path / "elsewhere",
        "dataset": write_jsonl(datasets / "qa.jsonl", QA_ROWS * 8),
    }


def test_create_train_validate_and_a_second_member_cannot_cancel(
    portal, tiny_llama_in_cache, start_worker, live_server, request
):
    model_name, snapshot = tiny_llama_in_cache
    start_worker(extra_env={"MTM_TORCH_THREADS": "1"}).wait_ready()
    base = live_server.url
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        shot = Screenshots(page, request.node.name)

        log_in(page, base, "member-a", PASSWORD)
        shot("logged-in-as-a")

        page.goto(f"{base}/projects/new/")
        expect(page.get_by_role("heading", name="New project")).to_be_visible()
        shot("new-project-form")

        model_box, model_status = page.locator("#id_model_name"), page.locator("#id_model_name-status")
        model_box.press_sequentially("test-org/no-such-model")
        expect(model_status.locator(".status-error")).to_contain_text(
            "Model 'test-org/no-such-model' not found. Please ensure the model is downloaded", timeout=CHECK_TIMEOUT_MS
        )
        expect(model_status.locator(".hint")).to_contain_text("hf download test-org/no-such-model")
        shot("model-not-found")

        model_box.fill("")
        model_box.press_sequentially(model_name)
        page.get_by_role("button", name="Validate Model").click()
        found = model_status.locator(".status-ok")
        expect(found).to_contain_text("Found in the cache at revision", timeout=CHECK_TIMEOUT_MS)
        expect(found.locator("code").first).to_have_text(snapshot.name[:10])
        expect(model_status.locator(".status-error")).to_have_count(0)
        shot("model-valid")

        output_box, output_status = page.locator("#id_output_directory"), page.locator("#output-status")
        expect(output_box).to_have_value(str(portal["outputs"] / "my-project"))  # pre-filled inside the root
        output_box.fill("")
        output_box.press_sequentially(str(portal["elsewhere"] / "run"))
        expect(output_status.locator(".status-error")).to_contain_text(
            "outside the allowed output roots", timeout=CHECK_TIMEOUT_MS
        )
        shot("output-outside-roots")
        output_box.fill("")
        output_dir = portal["outputs"] / "browser-run"
        output_box.press_sequentially(str(output_dir))
        expect(output_status.locator(".status-ok")).to_contain_text("will be created", timeout=CHECK_TIMEOUT_MS)
        expect(output_status.locator(".status-error")).to_have_count(0)
        shot("output-valid")

        page.get_by_label("Name", exact=True).fill("browser-e2e")
        page.get_by_label("Description").fill("Made by tests/test_browser.py")
        page.locator("input[name=method][value=full]").check()
        hyper = {
            **FAST_HYPERPARAMETERS,
            "max_steps": STEPS,
            "save_steps": 50,
            "batch_size": BATCH_SIZE,
            "gradient_accumulation_steps": ACCUMULATION,
        }
        for name in ("max_steps", "learning_rate", "batch_size", "gradient_accumulation_steps", "max_seq_length"):
            page.locator(f"#id_{name}").fill(str(hyper[name]))
        page.locator("#id_precision").select_option(hyper["precision"])
        page.locator("details.more > summary").click()
        page.locator("#id_logging_steps").fill(str(hyper["logging_steps"]))
        page.locator("#id_save_steps").fill(str(hyper["save_steps"]))
        page.get_by_label("Validation prompt").fill("Say hello:")

        dataset_status = page.locator("#dataset-status")
        page.locator("#id_dataset_path").press_sequentially(str(portal["dataset"]))
        expect(dataset_status.locator(".rows")).to_have_text("24 rows", timeout=CHECK_TIMEOUT_MS)
        expect(dataset_status.locator(".format")).to_have_text("prompt_completion")
        shot("dataset-path-preview")
        page.locator("#id_dataset_file").set_input_files(str(portal["dataset"]))
        expect(dataset_status).to_contain_text("uploaded as qa.jsonl", timeout=CHECK_TIMEOUT_MS)
        expect(dataset_status.locator(".rows")).to_have_text("24 rows")
        expect(page.locator(".preview-rows li")).not_to_have_count(0)
        uploads = str(portal["datasets"] / "uploads" / "datasets")
        expect(page.locator("#id_dataset_path")).to_have_value(re.compile(rf"^{re.escape(uploads)}/.+/qa\.jsonl$"))
        shot("dataset-uploaded")

        page.get_by_role("button", name="Create project").click()
        expect(page.locator(".messages")).to_contain_text("Project 'browser-e2e' created")
        expect(page.get_by_role("heading", name=re.compile("browser-e2e"))).to_be_visible()
        shot("project-created")

        page.get_by_role("button", name="Start", exact=True).click()
        expect(page).to_have_url(re.compile(r"/projects/runs/\d+/$"))
        run_url = page.url
        seen = record_progress(page)
        expect(page.get_by_role("button", name="Cancel")).to_be_visible()  # the owner may cancel a live run
        shot("run-started")

        # The bar's aria values as each poll swaps it in: a mid-run screenshot, then two steps seen before success.
        page.wait_for_function(
            "() => window.mtmSeen.some(s => (s.status === 'training' && s.step > 0) || !/ing|queued/.test(s.status || ''))",
            timeout=TRAINING_TIMEOUT_MS,
        )
        shot("run-progressing")
        badge = page.locator("#run-live .run-state .badge")
        expect(badge).to_have_text("succeeded", timeout=TRAINING_TIMEOUT_MS)
        steps_before_success = {s["step"] for s in seen() if s["status"] != "succeeded" and s["step"]}
        assert len(steps_before_success) >= 2, f"the progress bar was seen at steps {steps_before_success}: {seen()}"
        bar = page.get_by_role("progressbar", name="Training progress")
        expect(bar).to_have_attribute("aria-valuenow", str(STEPS))
        expect(bar).to_have_attribute("aria-valuemax", str(STEPS))
        expect(page.locator(".progress-line")).to_contain_text(f"step {STEPS} / {STEPS}")

        validation = page.locator("section.validation")
        validation.scroll_into_view_if_needed()
        expect(validation.locator("h2 .badge")).to_have_text("passed")
        for check in ("files", "json", "load", "inference"):
            expect(validation.locator(f"tr.check-{check} .badge")).to_have_text("passed")
        expect(validation.locator("pre.prompt")).to_have_text("Say hello:")
        sample = validation.locator("pre.sample-output")
        expect(sample).to_be_visible()
        expect(sample).not_to_have_text("(empty)")
        expect(page.get_by_role("button", name="Start a new run")).to_be_visible()  # the owner's actions
        expect(page.get_by_role("button", name="Cancel")).to_have_count(0)  # nothing left to cancel
        shot("run-succeeded-validation-report")

        log_out(page)
        log_in(page, base, "member-b", PASSWORD)
        page.goto(run_url)
        expect(page.locator("#run-live .run-state .badge")).to_have_text("succeeded")
        expect(page.locator("section.validation h2 .badge")).to_have_text("passed")
        expect(page.locator("#run-live .actions")).to_have_count(0)
        expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
        expect(page.get_by_role("button", name="Start a new run")).to_have_count(0)
        shot("member-b-sees-the-run")

        refused = page.request.post(
            run_url + "cancel/", headers={"X-CSRFToken": csrf_token(page)}, max_redirects=0, fail_on_status_code=False
        )
        refusal = html.unescape(refused.text())
        assert refused.status == 403, (refused.status, refusal[:500])
        assert "Only the owner of project 'browser-e2e' (member-a) or staff may cancel its runs." in refusal
        page.reload()
        expect(page.locator("#run-live .run-state .badge")).to_have_text("succeeded")
        shot("member-b-after-refused-cancel")


def test_model_removed_before_start_fails_at_resolve_with_the_hint(
    portal, tiny_llama_in_cache, hf_cache, start_worker, live_server, request
):
    model_name, _ = tiny_llama_in_cache
    # The worker reports once, at start, that it holds the model; the model then goes before its next report, so
    # Start places the run on it and the worker's own resolve finds the model gone.
    start_worker(extra_env={"MTM_WORKER_REPORT_SECONDS": "600"}).wait_ready()
    wait_until_a_worker_reports(model_name)
    project = TrainingProject.objects.create(
        name="model-gone",
        owner=portal["a"],
        model_name=model_name,
        dataset_path=str(portal["dataset"]),
        output_directory=str(portal["outputs"] / "model-gone"),
        method="full",
        hyperparameters=FAST_HYPERPARAMETERS,
    )
    shutil.rmtree(hf_cache / repo_folder_name(model_name))
    base = live_server.url
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        shot = Screenshots(page, request.node.name)
        log_in(page, base, "member-a", PASSWORD)
        page.goto(f"{base}/projects/{project.pk}/")
        shot("project-page")

        page.get_by_role("button", name="Start", exact=True).click()
        expect(page).to_have_url(re.compile(r"/projects/runs/\d+/$"))
        expect(page.locator("#run-live .run-state .badge")).to_have_text("failed", timeout=TRAINING_TIMEOUT_MS)
        failure = page.locator(".run-failure")
        expect(failure).to_contain_text("Failed at resolve")
        expect(failure).to_contain_text(f"Model '{model_name}' not found. Please ensure the model is downloaded")
        expect(failure.locator(".hint")).to_contain_text(f"hf download {model_name}")
        expect(page.locator("#run-live")).to_contain_text("No training step was reported.")
        expect(page.get_by_role("button", name="Start a new run")).to_be_visible()
        shot("run-failed-at-resolve")


def test_the_api_docs_render_offline_from_the_portals_own_files(portal, live_server, request):
    """Every request the Swagger page makes goes to the portal; anything else is blocked and would fail the test."""
    base = live_server.url
    elsewhere: list[str] = []

    def only_the_portal(route) -> None:
        if route.request.url.startswith(base + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.route("**/*", only_the_portal)
        page.goto(f"{base}/api/v1/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("Model Training Manager API")
        expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
        Screenshots(page, request.node.name)("api-docs")
    assert elsewhere == []
