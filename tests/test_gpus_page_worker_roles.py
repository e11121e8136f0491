"""The GPUs page says what each worker does from the queues it consumes (workers.queues.QUEUE_DUTIES), offers Drain
only to workers that take training runs, and its intro names the checks, counts and periodic jobs' workers as they are
(the workers `make run` starts: checks, counts, periodic, cpu, playground-cpu)."""

from __future__ import annotations

import html

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from mtm.models import AuditEvent
from tests.clients import secure_client
from workers.models import Worker
from workers.queues import INFERENCE_QUEUE, own_queue


@pytest.fixture
def portal_workers(db):
    def make(name: str, queues: list[str]) -> Worker:
        return Worker.objects.create(name=name, host="vm", queues=queues)

    return {
        "checks": make("checks@vm", ["checks"]),
        "counts": make("counts@vm", ["counts"]),
        "periodic": make("periodic@vm", ["default"]),
        "cpu": make("cpu@vm", ["cpu", "training", own_queue("cpu@vm")]),
        "playground": make("playground-cpu@vm", [INFERENCE_QUEUE, own_queue("playground-cpu@vm")]),
    }


def worker_block(page: str, name: str) -> str:
    return page.split(f'data-worker="{name}"')[1].split('<div class="worker')[0].split("</section>")[0]


def test_every_queue_the_portal_sends_to_has_a_duty():
    from workers.queues import QUEUE_DUTIES

    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    assert routed | {settings.CELERY_TASK_DEFAULT_QUEUE} <= set(QUEUE_DUTIES)


def test_each_worker_says_what_its_queues_bring_and_only_training_workers_can_be_drained(portal_workers):
    page = secure_client(User.objects.create_user("boss", is_staff=True)).get("/gpus/").content.decode()
    page = html.unescape(page)
    blocks = {key: worker_block(page, worker.name) for key, worker in portal_workers.items()}
    assert (
        "Runs model checks (transformers' check of a model, and their background fill); takes no training run."
        in (blocks["checks"])
    )
    assert "Counts dataset tokens (the counts a dataset check waits for); takes no training run." in blocks["counts"]
    assert (
        "Runs the periodic jobs (failing lost runs and generations, upload cleanup); takes no training run."
        in (blocks["periodic"])
    )
    assert "Takes training runs." in blocks["cpu"]
    assert "Answers the playground; takes no training run." in blocks["playground"]
    assert ">Drain</button>" in blocks["cpu"]
    for key in ("checks", "counts", "periodic", "playground"):
        assert "Takes training runs" not in blocks[key]
        assert "Drain" not in blocks[key] and "No run." not in blocks[key]
    assert "model checks and periodic jobs" not in page
    assert "the checks worker (model checks), the token counts worker, the periodic jobs worker" in page


def test_the_checks_and_counts_workers_cannot_be_drained(portal_workers):
    client = secure_client(User.objects.create_user("boss", is_staff=True))
    for key in ("checks", "counts"):
        worker = portal_workers[key]
        answer = client.post(f"/gpus/workers/{worker.pk}/drain/", {"drained": "1"}, follow=True)
        assert f"{worker.name} takes no training run" in answer.content.decode()
        assert not Worker.objects.get(pk=worker.pk).drained
    assert not AuditEvent.objects.filter(action="worker.drain").exists()


def test_a_worker_taking_runs_and_periodic_jobs_says_both(db):
    Worker.objects.create(name="all@vm", host="vm", queues=["default", "training"])
    page = secure_client(User.objects.create_user("boss", is_staff=True)).get("/gpus/").content.decode()
    page = html.unescape(page)
    block = worker_block(page, "all@vm")
    assert "Takes training runs; runs the periodic jobs (failing lost runs and generations, upload cleanup)." in block
    assert ">Drain</button>" in block
