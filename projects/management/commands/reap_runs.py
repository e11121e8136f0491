from __future__ import annotations

from django.core.management.base import BaseCommand

from projects.runs.liveness import reap_stale_runs


class Command(BaseCommand):
    help = (
        "Fail live runs whose worker stopped beating (MTM_HEARTBEAT_TIMEOUT), once. Celery beat sends the same job "
        "every MTM_REAP_SECONDS; use this when no beat runs."
    )

    def handle(self, *args, **options) -> None:
        reaped = reap_stale_runs()
        self.stdout.write(f"failed {len(reaped)} run(s) whose worker was lost" + (f": {reaped}" if reaped else ""))
