"""The run page's Worker line names the worker that took the run, and its process only when one is recorded: while
the run is still being taken it shows no empty "(process )"."""

from __future__ import annotations

from mtm.audit import Actor
from projects.models import RunStatus, TrainingProject
from projects.services import create_project
from tests.clients import secure_client
from tests.test_owned_paths import fields
from tests.test_run_folder_attacks import run_of
from workers.models import RunPlacement


def test_the_worker_line_has_no_empty_brackets(team, tiny_llama_in_cache):
    data = fields(team["root"], tiny_llama_in_cache[0], name="alice's")
    project: TrainingProject = create_project(actor=Actor.command_line(team["alice"]), data=data)
    run = run_of(project, team["alice"], status=RunStatus.RESOLVING)
    RunPlacement.objects.create(run=run, queue="training", worker_name="gpu0@host", waiting_for="a free worker")
    client = secure_client(team["alice"])

    page = client.get(f"/projects/runs/{run.pk}/").content.decode()
    line = page[page.index('class="run-worker"') :][:400]
    assert "gpu0@host" in line and "(process" not in line

    run.worker_host = "host:1234"
    run.save(update_fields=["worker_host"])
    page = client.get(f"/projects/runs/{run.pk}/").content.decode()
    line = page[page.index('class="run-worker"') :][:400]
    assert "gpu0@host" in line and "(process host:1234)" in line
