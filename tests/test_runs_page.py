"""Runs at a glance: the Runs page with its filters, a member's recent runs on the home page, the full log."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from projects.models import RunStatus, TrainingProject, TrainingRun
from projects.runs.records import work_folder
from tests.clients import secure_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def team(portal_roots):
    alice = User.objects.create_user("alice", password="alice-pass-1234")
    bob = User.objects.create_user("bob", password="bob-pass-1234")
    projects = {}
    for name, owner in (("alpha", alice), ("beta", bob)):
        projects[name] = TrainingProject.objects.create(
            name=name,
            owner=owner,
            model_name="test-org/tiny-llama",
            dataset_path=str(portal_roots / "datasets" / "qa.jsonl"),
            output_directory=str(portal_roots / "outputs" / name),
        )
    runs = {
        "a1": TrainingRun.objects.create(
            project=projects["alpha"],
            started_by=alice,
            status=RunStatus.SUCCEEDED,
            progress={"step": 10, "total_steps": 10},
            metrics=[{"step": 5, "loss": 2.5}, {"step": 10, "loss": 1.25}],
        ),
        "a2": TrainingRun.objects.create(
            project=projects["alpha"],
            started_by=alice,
            status=RunStatus.FAILED,
            progress={"step": 3, "total_steps": 10},
        ),
        "b1": TrainingRun.objects.create(project=projects["beta"], started_by=bob, status=RunStatus.QUEUED),
    }
    return alice, bob, projects, runs


def rows(html: str) -> list[str]:
    body = html[html.index('<table class="table compact runs-table">') :]
    body = body[: body.index("</table>")]
    return [part.split('"', 1)[0] for part in body.split('href="/projects/runs/')[1:]]


def test_the_runs_page_lists_every_run_newest_first_with_progress_and_final_loss(team):
    alice, bob, projects, runs = team
    html = secure_client(bob).get("/projects/runs/").content.decode()
    assert rows(html) == [f"{runs[k].pk}/" for k in ("b1", "a2", "a1")]
    assert "1.2500" in html and "100%" in html and "30%" in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [("status=failed", ["a2"]), ("owner=bob", ["b1"]), ("project={alpha}", ["a2", "a1"]), ("status=nonsense", None)],
)
def test_the_runs_page_filters_by_status_owner_and_project(team, query, expected):
    alice, bob, projects, runs = team
    query = query.format(alpha=projects["alpha"].pk)
    html = secure_client(alice).get(f"/projects/runs/?{query}").content.decode()
    expected = expected or ["b1", "a2", "a1"]  # an unknown status filters nothing out
    assert rows(html) == [f"{runs[k].pk}/" for k in expected]


def test_the_home_page_shows_the_members_recent_runs(team):
    alice, bob, projects, runs = team
    html = secure_client(alice).get("/").content.decode()
    assert "Your recent runs" in html and rows(html) == [f"{runs[k].pk}/" for k in ("a2", "a1")]
    assert rows(secure_client(bob).get("/").content.decode()) == [f"{runs['b1'].pk}/"]


def test_the_full_log_can_be_downloaded(team, settings, tmp_path):
    alice, bob, projects, runs = team
    settings.VAR_DIR = tmp_path / "var"
    run = runs["a1"]
    client = secure_client(bob)  # every member may read every run
    missing = client.get(f"/projects/runs/{run.pk}/log/")
    assert missing.status_code == 404
    folder = work_folder(run.pk)
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"step {i} loss 1.0\n" for i in range(5000))
    (folder / "trainer.log").write_text(lines)
    response = client.get(f"/projects/runs/{run.pk}/log/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    assert f'filename="run-{run.pk}-trainer.log"' in response["Content-Disposition"]
    assert b"".join(response.streaming_content).decode() == lines


def test_the_run_page_names_the_worker_as_the_gpus_page_does(team):
    """The run page names the worker as the GPUs page does ("cpu@vm"), not by host and process ("vm:8981")."""
    from workers.models import RunPlacement

    alice, _, _, runs = team
    run = runs["a1"]
    run.worker_host = "vm:8981"
    run.save(update_fields=["worker_host"])
    RunPlacement.objects.create(run=run, queue="training", worker_name="cpu@vm")
    page = secure_client(alice).get(f"/projects/runs/{run.pk}/").content.decode()
    assert '<a href="/gpus/">cpu@vm</a> <span class="muted small">(process vm:8981)</span>' in page
    unplaced = secure_client(alice).get(f"/projects/runs/{runs['a2'].pk}/").content.decode()
    assert '<dd class="run-worker">—</dd>' in unplaced  # no worker took it: no name, no error
