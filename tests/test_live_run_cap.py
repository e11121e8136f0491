"""The per-member cap on live runs (default MTM_LIVE_RUNS_PER_MEMBER = 2; staff change it in the portal settings): a
Start beyond it is refused naming the member's live runs, also when eight Starts arrive at once; and a queued run
says which runs are ahead of it and whose they are.

No worker consumes the queues here: every run started stays queued, so it is live until cancelled."""

from __future__ import annotations

import re
import threading

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from models_registry.models import PortalSettings
from mtm.models import AuditEvent
from projects.models import LIVE_STATUSES, RunStatus, TrainingProject, TrainingRun
from projects.runs.services import RunRefused
from tests.api_client import call, make_user_token
from tests.clients import secure_client
from tests.pipeline_helpers import FAST_HYPERPARAMETERS, QA_ROWS, cancel, start, write_jsonl
from workers.models import SchedulingSettings

MODEL = "test-org/tiny-llama"


def project(root, owner, name: str) -> TrainingProject:
    dataset = write_jsonl(root / "datasets" / f"{name}.jsonl", QA_ROWS)
    return TrainingProject.objects.create(
        name=name,
        owner=owner,
        model_name=MODEL,
        dataset_path=str(dataset),
        method="full",
        output_directory=str(root / "outputs" / name),
        hyperparameters=FAST_HYPERPARAMETERS,
    )


def live_of(user) -> list[TrainingRun]:
    return list(TrainingRun.objects.filter(started_by=user, status__in=LIVE_STATUSES).order_by("pk"))


def test_the_cap_starts_at_the_environments_value(db, settings):
    assert SchedulingSettings.load().live_runs_per_member == 2  # the default of MTM_LIVE_RUNS_PER_MEMBER
    SchedulingSettings.objects.all().delete()
    settings.MTM_LIVE_RUNS_PER_MEMBER = 5
    assert SchedulingSettings.load().live_runs_per_member == 5


def test_eight_parallel_starts_by_one_member_leave_two_live_runs_and_six_refusals(
    portal_roots, transactional_db, celery_broker
):
    """The count and the new run are one step under the member's lock: eight API Starts released together by one
    member (eight projects, so no other rule refuses them) end as two runs and six refusals naming those two."""
    member, token = make_user_token("eager")
    projects = [project(portal_roots, member, f"p{i}") for i in range(8)]
    gate = threading.Barrier(len(projects))
    answers: dict[int, tuple[int, dict]] = {}

    def press_start(pid: int) -> None:
        try:
            client = Client()
            gate.wait()
            response = call(client, "post", f"/projects/{pid}/runs", {}, token=token)
            answers[pid] = (response.status_code, response.json())
        finally:
            connection.close()

    threads = [threading.Thread(target=press_start, args=(p.pk,)) for p in projects]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert len(answers) == 8
    started = sorted(body["id"] for status, body in answers.values() if status == 201)
    refused = [body for status, body in answers.values() if status != 201]
    assert len(started) == 2 and [run.pk for run in live_of(member)] == started
    assert len(refused) == 6
    for body in refused:
        [error] = body["errors"]
        assert error["code"] == "live_run_cap"
        assert error["message"].startswith("You have 2 live runs, and one member may have at most 2 at once: ")
        assert sorted(int(pk) for pk in re.findall(r"#(\d+) of '", error["message"])) == started
        assert "Wait for one of them to end, or cancel one" in error["hint"] and "ask staff" in error["hint"]
    for run in live_of(member):
        cancel(run, member)


def test_a_start_beyond_the_cap_is_refused_on_the_page_and_passes_once_a_run_ends(portal_roots, db):
    member = User.objects.create_user("member")
    first, second = (start(project(portal_roots, member, name), member) for name in ("first", "second"))
    third = project(portal_roots, member, "third")
    client = secure_client(member)
    page = client.post(f"/projects/{third.pk}/start/", follow=True).content.decode()
    assert (
        f"You have 2 live runs, and one member may have at most 2 at once: #{first.pk} of &#x27;first&#x27; (queued) "
        f"and #{second.pk} of &#x27;second&#x27; (queued)." in page
    )
    assert not third.runs.exists()
    # Another member is not held back by this member's runs.
    other = User.objects.create_user("other")
    assert start(project(portal_roots, other, "others"), other).status == RunStatus.QUEUED

    cancel(first, member)
    assert client.post(f"/projects/{third.pk}/start/").status_code == 302
    assert third.runs.get().status == RunStatus.QUEUED


def test_staff_are_held_to_the_cap_and_set_it_in_the_settings(portal_roots, db):
    staff, staff_token = make_user_token("ops", staff=True)
    member, member_token = make_user_token("member")
    for name in ("a", "b"):
        start(project(portal_roots, staff, name), staff)
    with pytest.raises(RunRefused) as refused:
        start(project(portal_roots, staff, "c"), staff)
    assert refused.value.problem.code == "live_run_cap"
    assert refused.value.problem.hint.endswith("or raise 'Live runs per member' in Settings.")

    answer = call(Client(), "patch", "/settings", {"live_runs_per_member": 3}, member_token)
    assert answer.status_code == 403 and SchedulingSettings.load().live_runs_per_member == 2
    answer = call(Client(), "patch", "/settings", {"live_runs_per_member": -1}, staff_token)
    assert answer.status_code == 422
    answer = call(Client(), "patch", "/settings", {"live_runs_per_member": 3}, staff_token)
    assert answer.status_code == 200 and answer.json()["live_runs_per_member"] == 3
    assert call(Client(), "get", "/settings", token=member_token).json()["live_runs_per_member"] == 3
    assert AuditEvent.objects.filter(action="portal_settings.update", actor=staff).exists()
    assert start(TrainingProject.objects.get(name="c"), staff).status == RunStatus.QUEUED

    # 0: no cap. Set on the Settings page, which keeps the other values.
    page = secure_client(staff)
    settings_form = page.get("/settings/").content.decode()
    assert "Live runs per member" in settings_form
    row = PortalSettings.load()
    posted = {
        "model_cache_path": row.model_cache_path,
        "allowed_output_roots": "\n".join(row.allowed_output_roots),
        "allowed_dataset_roots": "\n".join(row.allowed_dataset_roots),
        "upload_quota_bytes": str(row.upload_quota_bytes),
        "live_runs_per_member": "0",
    }
    assert page.post("/settings/", posted).status_code == 302
    assert SchedulingSettings.load().live_runs_per_member == 0
    assert start(project(portal_roots, staff, "d"), staff).status == RunStatus.QUEUED


def test_a_queued_run_names_the_runs_ahead_of_it_and_their_owners(portal_roots, db):
    alice, bob = User.objects.create_user("alice"), User.objects.create_user("bob")
    carol, carol_token = make_user_token("carol")
    ahead = [start(project(portal_roots, owner, f"{owner}-run"), owner) for owner in (alice, bob)]
    mine = start(project(portal_roots, carol, "carol-run"), carol)
    line = f"3rd in line, behind runs #{ahead[0].pk} (alice) and #{ahead[1].pk} (bob)"

    assert call(Client(), "GET", f"/runs/{mine.pk}", token=carol_token).json()["waiting"].endswith(f": {line}")
    assert line in secure_client(carol).get(f"/projects/runs/{mine.pk}/").content.decode()
    assert line in secure_client(carol).get("/gpus/").content.decode()
    second = secure_client(bob).get(f"/projects/runs/{ahead[1].pk}/").content.decode()
    assert f"2nd in line, behind run #{ahead[0].pk} (alice)" in second

    # A long line names the first five and counts the rest.
    SchedulingSettings.objects.filter(pk=1).update(live_runs_per_member=0)
    more = [start(project(portal_roots, alice, f"more{i}"), alice) for i in range(4)]
    last = start(project(portal_roots, carol, "last"), carol)
    names = ", ".join(f"#{run.pk} (alice)" for run in more[:2])
    expected = (
        f"8th in line, behind runs #{ahead[0].pk} (alice), #{ahead[1].pk} (bob), #{mine.pk} (carol), {names} and 2 more"
    )
    assert call(Client(), "GET", f"/runs/{last.pk}", token=carol_token).json()["waiting"].endswith(expected)
