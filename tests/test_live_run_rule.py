"""One setting says how many live runs a member may have: Start refuses a run beyond it, and a worker leaves a
queued run waiting while its owner has that many taken. Staff change it on the Settings page, in the API or on the
GPUs page, and every one of them reads and writes the same value. The migration that made it one setting keeps
today's limit (the Start cap's, where both were set).

No worker consumes the queues here: runs stay queued until taken with the fair share's own `take`."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from models_registry.models import PortalSettings
from projects.models import RunStatus, TrainingProject, TrainingRun
from projects.runs.scheduling.fair_share import take
from projects.runs.services import RunRefused
from tests.api_client import call, make_user_token
from tests.clients import secure_client
from tests.pipeline_helpers import FAST_HYPERPARAMETERS, QA_ROWS, start, write_jsonl
from workers.models import SchedulingSettings

pytestmark = pytest.mark.django_db


def project(root, owner, name: str) -> TrainingProject:
    return TrainingProject.objects.create(
        name=name,
        owner=owner,
        model_name="test-org/tiny-llama",
        dataset_path=str(write_jsonl(root / "datasets" / f"{name}.jsonl", QA_ROWS)),
        method="full",
        output_directory=str(root / "outputs" / name),
        hyperparameters=FAST_HYPERPARAMETERS,
    )


def refused_at_start(root, member, name: str) -> str:
    with pytest.raises(RunRefused) as refused:
        start(project(root, member, name), member)
    assert refused.value.problem.code == "live_run_cap"
    return refused.value.problem.message


def waiting(limit: int) -> str:
    return f"its owner's other runs to end (at most {limit} live run{'s' if limit != 1 else ''} per member)"


def test_one_setting_caps_starts_and_the_fair_share_wherever_staff_set_it(portal_roots):
    staff, staff_token = make_user_token("ops", staff=True)
    member = User.objects.create_user("member")
    first, second = (start(project(portal_roots, member, name), member) for name in ("first", "second"))
    assert "at most 2 at once" in refused_at_start(portal_roots, member, "third")  # the default, 2

    # Lowered in the API: the Start cap and the fair share both read 1.
    answer = call(Client(), "patch", "/settings", {"live_runs_per_member": 1}, staff_token)
    assert answer.status_code == 200 and answer.json()["live_runs_per_member"] == 1
    assert 'name="live_runs_per_member" id="id_live_runs_per_member" value="1"' in (
        secure_client(staff).get("/gpus/").content.decode()
    )
    assert "at most 1 at once" in refused_at_start(portal_roots, member, "fourth")
    assert take(first.pk, "worker-a:1") == ""
    assert take(second.pk, "worker-b:2") == waiting(1)
    assert TrainingRun.objects.get(pk=second.pk).status == RunStatus.QUEUED

    # Raised on the GPUs page: the API, the Settings page, Start and the fair share all see 3.
    assert secure_client(staff).post("/gpus/live-run-limit/", {"live_runs_per_member": "3"}).status_code == 302
    assert call(Client(), "get", "/settings", token=staff_token).json()["live_runs_per_member"] == 3
    settings_page = secure_client(staff).get("/settings/").content.decode()
    assert 'name="live_runs_per_member"' in settings_page and 'value="3"' in settings_page
    assert take(second.pk, "worker-b:2") == ""
    third = start(TrainingProject.objects.get(name="third"), member)
    assert "at most 3 at once" in refused_at_start(portal_roots, member, "fifth")

    # Saved on the Settings page as 0: no limit at Start nor on the queues.
    assert SchedulingSettings.objects.count() == 1
    page = secure_client(staff).post("/settings/", {**_settings_form(), "live_runs_per_member": "0"})
    assert page.status_code == 302 and SchedulingSettings.load().live_runs_per_member == 0
    assert start(TrainingProject.objects.get(name="fifth"), member).status == RunStatus.QUEUED
    assert take(third.pk, "worker-c:3") == ""


def _settings_form() -> dict:
    row = PortalSettings.load()
    return {
        "model_cache_path": row.model_cache_path,
        "allowed_output_roots": "\n".join(row.allowed_output_roots),
        "allowed_dataset_roots": "\n".join(row.allowed_dataset_roots),
        "upload_quota_bytes": str(row.upload_quota_bytes),
    }


# --- the migration that made it one setting ----------------------------------------------------------------------

BEFORE = [("workers", "0003_worker_cpu_processes"), ("models_registry", "0007_verdictrequest")]
AFTER = [("workers", "0004_one_live_run_limit"), ("models_registry", "0008_live_runs_per_member_moved")]


def migrated(start_cap: int | None, fair_share: int | None) -> int | None:
    """The limit after migrating rows that held `start_cap` (PortalSettings) and `fair_share` (SchedulingSettings);
    None for a row that did not exist. None when no row exists afterwards."""
    executor = MigrationExecutor(connection)
    try:
        executor.migrate(BEFORE)
        old = executor.loader.project_state(BEFORE).apps
        # Only the rows this case names: a settings row an earlier test in this process left must not count.
        old.get_model("models_registry", "PortalSettings").objects.all().delete()
        old.get_model("workers", "SchedulingSettings").objects.all().delete()
        if start_cap is not None:
            old.get_model("models_registry", "PortalSettings").objects.create(pk=1, live_runs_per_member=start_cap)
        if fair_share is not None:
            old.get_model("workers", "SchedulingSettings").objects.create(pk=1, max_live_runs_per_user=fair_share)
        executor = MigrationExecutor(connection)
        executor.migrate(AFTER)
        new = executor.loader.project_state(AFTER).apps
        return (
            new.get_model("workers", "SchedulingSettings")
            .objects.values_list("live_runs_per_member", flat=True)
            .first()
        )
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.parametrize(
    ("start_cap", "fair_share", "kept"),
    [
        (5, 1, 5),  # both set: the Start cap's
        (0, 3, 0),  # both set, the Start cap off: off
        (4, None, 4),  # only the Start cap
        (None, 3, 3),  # only a fair-share limit staff set
        (None, 0, 2),  # the fair share's old "no limit" alone: the Start cap members met, MTM_LIVE_RUNS_PER_MEMBER
        (None, None, None),  # no row: the first load starts at the default
    ],
)
def test_the_migration_keeps_todays_limit(transactional_db, start_cap, fair_share, kept):
    assert migrated(start_cap, fair_share) == kept
