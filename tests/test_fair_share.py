"""Fair share: with a per-member limit of one live run, a member's second run waits "queued", saying why, while a
worker is free (another member's run takes that worker), and starts once the first has ended."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from mtm.models import AuditEvent
from projects.models import RunStatus, TrainingProject, TrainingRun
from tests.clients import secure_client
from tests.pipeline_helpers import FAST_HYPERPARAMETERS, QA_ROWS, cancel, start, wait_for_end, write_jsonl
from workers.models import RunPlacement, SchedulingSettings

pytestmark = pytest.mark.slow

LONG = {"max_steps": 2000, "save_steps": 1000, "learning_rate": 0.001}
WAITING = "its owner's other runs to end (at most 1 live run per member)"


def project(root, owner, name):
    dataset = write_jsonl(root / "datasets" / f"{name}.jsonl", QA_ROWS * 8)
    return TrainingProject.objects.create(
        name=name,
        owner=owner,
        model_name="test-org/tiny-llama",
        dataset_path=str(dataset),
        method="full",
        output_directory=str(root / "outputs" / name),
        hyperparameters={**FAST_HYPERPARAMETERS, **LONG},
    )


@pytest.mark.database
def test_a_members_second_run_waits_for_the_first_while_a_worker_is_free(
    portal_roots, transactional_db, tiny_llama_in_cache, start_worker
):
    staff = User.objects.create_user("boss", is_staff=True)
    member, other = User.objects.create_user("member"), User.objects.create_user("other")
    # Both runs are started while the limit (2 by default) allows them, since a Start beyond it is refused at once;
    # it is lowered to 1 while they wait queued, before any worker runs.
    first = start(project(portal_roots, member, "first"), member)
    second = start(project(portal_roots, member, "second"), member)
    refused = secure_client(member, raise_request_exception=False).post(
        "/gpus/live-run-limit/", {"live_runs_per_member": "1"}
    )
    assert refused.status_code == 403 and SchedulingSettings.load().live_runs_per_member == 2
    assert secure_client(staff).post("/gpus/live-run-limit/", {"live_runs_per_member": "1"}).status_code == 302
    assert AuditEvent.objects.filter(action="scheduling.update", actor=staff).exists()
    # The run held back is offered again every 0.2 s, so it is offered far more often than Celery's default
    # limit of 3 retries before it may start (the attack: after 4 offers it was dropped and stayed queued forever).
    env = {"MTM_HEARTBEAT_SECONDS": "1", "MTM_FAIR_SHARE_RETRY_SECONDS": "0.2"}
    workers = [start_worker(queues="training", extra_env=env).wait_ready()]
    wait_for_end(first.pk, until=lambda r: r.status == RunStatus.TRAINING)  # the first in the queue, taken first
    workers.append(start_worker(queues="training", extra_env=env).wait_ready())
    wait_for_end(second.pk, until=lambda r: r.placement.waiting_for == WAITING)
    # The other worker is free: another member's run takes it while the member's second run keeps waiting.
    third = start(project(portal_roots, other, "third"), other)
    wait_for_end(third.pk, until=lambda r: r.status == RunStatus.TRAINING)
    second.refresh_from_db()
    assert second.status == RunStatus.QUEUED
    page = secure_client(member).get(f"/projects/runs/{second.pk}/").content.decode()
    assert f"waiting for {WAITING}".replace("'", "&#x27;") in page

    cancel(third, other)
    assert wait_for_end(third.pk).status == RunStatus.CANCELLED
    # A worker is free again: the held-back run is offered to it over and over, well past Celery's default limit of
    # 3 retries, and still waits, queued, while its owner's first run trains.
    wait_for_end(second.pk, until=lambda r: sum(w.log_text().count("retry: Retry in") for w in workers) >= 8)
    second.refresh_from_db()
    assert second.status == RunStatus.QUEUED and second.placement.waiting_for == WAITING
    cancel(first, member)
    assert wait_for_end(first.pk).status == RunStatus.CANCELLED
    wait_for_end(second.pk, until=lambda r: r.status == RunStatus.TRAINING)
    cancel(second, member)
    assert wait_for_end(second.pk).status == RunStatus.CANCELLED
    assert wait_for_end(third.pk).status == RunStatus.CANCELLED


@pytest.mark.database
def test_two_workers_taking_one_members_runs_at_once_cannot_exceed_the_limit(portal_roots, transactional_db):
    """The limit is checked and the run taken under one lock: while one worker's take of the member's first run is
    not yet committed, another worker's take of the second run waits for it, then counts it, and leaves its run
    queued. (Without the lock the second take counted no live run and started too.)"""
    import threading

    from django.db import connection, transaction

    from projects.runs.scheduling.fair_share import take

    member = User.objects.create_user("member")
    first, second = (
        start(project(portal_roots, member, name), member) for name in ("first", "second")
    )  # no worker consumes the queue: both stay queued until taken here
    SchedulingSettings.objects.update_or_create(pk=1, defaults={"live_runs_per_member": 1})  # lowered after Start
    outcome: dict[str, object] = {}

    def second_worker_takes() -> None:
        try:
            outcome["second"] = take(second.pk, "worker-b:2", "b@host")
        finally:
            connection.close()

    thread = threading.Thread(target=second_worker_takes)
    with transaction.atomic():
        assert take(first.pk, "worker-a:1", "a@host") == ""
        thread.start()
        thread.join(3)  # the other take runs now, against the uncommitted first one (it blocks when it must)
    thread.join(60)
    assert outcome == {"second": WAITING}
    statuses = dict(TrainingRun.objects.filter(pk__in=(first.pk, second.pk)).values_list("pk", "status"))
    assert statuses == {first.pk: RunStatus.RESOLVING, second.pk: RunStatus.QUEUED}
    assert RunPlacement.objects.get(run=first).worker_name == "a@host"
    assert (
        RunPlacement.objects.get(run=second).waiting_for == WAITING
        and not RunPlacement.objects.get(run=second).worker_name
    )
    assert take(first.pk, "worker-c:3") is None  # taken already: nobody takes it twice
