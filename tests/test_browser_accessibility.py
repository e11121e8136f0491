"""axe-core (vendored in tests/vendor, pinned by its sha256) on the portal's pages in headless Chromium: no WCAG 2
A/AA violation on any of them. The pages hold real rows: a project, a succeeded run with its loss chart and
validation report, a failed run, a model in the cache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from models_registry.models import PublishedModel
from mtm.audit import Actor, Channel
from projects.models import RunStage, RunStatus, TrainingRun
from projects.services import create_project
from tests.browser_helpers import MEMBER, MEMBER_PASSWORD, why_no_browser
from tests.pipeline_helpers import start

if (reason := why_no_browser()) is not None:
    pytest.skip(reason, allow_module_level=True)

from tests.browser_helpers import chromium, log_in  # noqa: E402

# The live server as tests/test_browser.py starts it: with the HTTPS redirect off.
from tests.test_browser import _plain_http_while_server_starts, live_server  # noqa: E402, F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]
AXE = Path(__file__).parent / "vendor" / "axe-4.10.3.min.js"
AXE_SHA256 = "880970c081707360e64f34cea25ff91892f5bc95675b0776925b9709dd8a68bb"
RUN_AXE = """async () => {
  const result = await axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}});
  return result.violations.map(v => ({id: v.id, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
}"""


@pytest.fixture
def member(browser_member) -> User:
    """Staff: the settings and audit pages too."""
    browser_member.is_staff = browser_member.is_superuser = True
    browser_member.save(update_fields=["is_staff", "is_superuser"])
    return browser_member


def test_no_page_has_an_accessibility_violation(
    member,
    portal_roots,
    tiny_llama_in_cache,
    copy_of_tiny_llama,
    live_server,  # noqa: F811 - the fixture imported above
):
    assert hashlib.sha256(AXE.read_bytes()).hexdigest() == AXE_SHA256
    project = create_project(
        {
            "name": "a11y",
            "model_name": tiny_llama_in_cache[0],
            "dataset_path": str(portal_roots / "datasets" / "qa.jsonl"),
            "output_directory": str(portal_roots / "outputs" / "a11y"),
            "method": "lora",
            "hyperparameters": {"max_steps": 5, "max_seq_length": 16},
            "validation_prompt": "Say hello:",
        },
        actor=Actor(member, Channel.CLI),
    )
    done = start(project, member)
    validation = {
        "passed": True,
        "checks": [{"name": name, "passed": True, "detail": "ok", "seconds": 0.1} for name in ("files", "json", "load")]
        + [{"name": "inference", "passed": True, "detail": "ok", "warning": "Very repetitive.", "seconds": 0.2}],
        "sample_output": " Hello world!",
        "prompt": "Say hello:",
    }
    TrainingRun.objects.filter(pk=done.pk).update(
        status=RunStatus.SUCCEEDED,
        progress={"step": 5, "total_steps": 5, "loss": 1.5},
        metrics=[{"step": s, "loss": 3.0 - s * 0.3} for s in range(1, 6)],
        validation=validation,
        log_tail="step 5 loss 1.5",
    )
    failed = start(project, member)
    TrainingRun.objects.filter(pk=failed.pk).update(
        status=RunStatus.FAILED, stage_failed=RunStage.TRAIN, error_code="x", error_message="Broke.", error_hint="Fix."
    )
    PublishedModel.objects.create(
        model_name="team/a11y",
        path=str(copy_of_tiny_llama),
        run=TrainingRun.objects.get(pk=done.pk),
        project_name=project.name,
        method="lora",
        base_model=tiny_llama_in_cache[0],
        base_revision=tiny_llama_in_cache[1].name,
        dataset_sha256="ab" * 32,
        published_by=member,
    )
    pages = [
        "/",
        "/projects/",
        f"/projects/{project.pk}/",
        "/projects/new/",
        f"/projects/{project.pk}/edit/",
        f"/projects/runs/{done.pk}/",
        f"/projects/runs/{failed.pk}/",
        "/projects/runs/",
        "/models/",
        f"/models/{tiny_llama_in_cache[0]}/",
        "/models/team/a11y/",
        "/tokens/",
        "/settings/",
        "/audit/",
    ]
    base = live_server.url
    found = {}
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        log_in(page, base, MEMBER, MEMBER_PASSWORD)
        for path in pages:
            response = page.goto(base + path)
            assert response.status == 200, path
            page.add_script_tag(path=str(AXE))
            if violations := page.evaluate(RUN_AXE):
                found[path] = violations
    assert found == {}, json.dumps(found, indent=1)
