"""Celery tasks of datasets: the token count a dataset check queues (on the counts queue) and the periodic removal of
uploads no project references (Celery beat, CELERY_BEAT_SCHEDULE in mtm/settings.py)."""

from __future__ import annotations

from celery import shared_task

from projects.datasets.token_counting import count_tokens
from projects.datasets.token_stats import COUNT_TASK
from projects.datasets.uploads import cleanup_uploads as remove_unreferenced


@shared_task(name="projects.cleanup_uploads")
def cleanup_uploads() -> int:
    """Periodic (Celery beat): remove uploads no project references once past the grace period."""
    return len(remove_unreferenced())


@shared_task(name=COUNT_TASK, ignore_result=True)
def count_dataset_tokens(count_id: int, path: str, user_id: int | None) -> None:
    """Token lengths for a dataset check (on the counts queue): the web request only reads the file's start."""
    count_tokens(count_id, path, user_id)
