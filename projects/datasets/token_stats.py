"""Token lengths of a dataset check, counted on a worker and kept for every later check of the same bytes.

A check in a web request reads only the start of the file (report.read_dataset) and asks here for the counts:
`request_count` answers the TokenCount row for (the part read's sha256, the resolved tokenizer, max_seq_length,
max_prompt_length, the chat template choice), creating it "pending" and queueing `projects.count_dataset_tokens`
when there is none. The task calls token_counting.count_tokens on the worker, which re-checks the path for the
member who asked, loads the tokenizer, reads the same part of the file and stores the lengths, their warnings and any
row the tokenizer or chat template refuses. Nothing here loads a tokenizer in the web process.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import timedelta
from typing import Any

from celery import current_app
from django.db import IntegrityError, transaction
from django.utils import timezone

from models_registry.lookup import dataset_roots
from models_registry.resolution import Resolution
from mtm.request_limits import per_member_limit
from mtm.shared.problems import Problem
from projects.datasets.chat_templates import BUILT_IN
from projects.datasets.errors import DatasetError
from projects.datasets.loading import open_dataset
from projects.datasets.paths import check_dataset_path
from projects.datasets.report import DatasetRead, DatasetReport, TokenStats, sample_key_of
from projects.models import TokenCount

log = logging.getLogger(__name__)

# A pending count nobody has finished by then (its message lost, a worker killed) is queued again by the next check.
REQUEUE_AFTER = timedelta(minutes=5)


COUNT_TASK = "projects.count_dataset_tokens"
SUPERSEDED = (
    "Token lengths were not counted: newer checks of yours came first (a member's waiting counts are bounded). "
    "Check the dataset again to count them."
)


def tokenizer_identity(resolution: Resolution) -> str:
    """What decides the tokenizer: the resolved model folder and its revision."""
    return f"{resolution.path}@{resolution.revision or ''}"


def template_key(choice: str) -> str:
    """The chat template a count is keyed by: a built-in one's name, or "" for the model's own."""
    return choice if choice in BUILT_IN else ""


def count_key(
    sample_key: str, tokenizer: str, max_seq_length: int | None, max_prompt_length: int | None, chat_template: str
) -> str:
    parts = [sample_key, tokenizer, max_seq_length, max_prompt_length, chat_template]
    return hashlib.sha256(json.dumps(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _enqueue(count_id: int, path: str, user_id: int | None) -> None:
    try:  # by name: projects.datasets.tasks imports this module
        current_app.send_task(COUNT_TASK, (count_id, path, user_id), retry=False)
    except Exception as exc:  # kombu raises OperationalError and friends, depending on the transport
        log.warning("broker unavailable for token count %s: %s", count_id, exc)
        finish(
            count_id,
            TokenCount.State.UNAVAILABLE,
            {
                "note": "Token lengths could not be counted: the task broker did not answer. They are counted when "
                "the dataset is checked again once Redis (REDIS_URL) is running."
            },
        )


def request_count(
    read: DatasetRead,
    path: str,
    user: Any,
    resolution: Resolution,
    *,
    model_name: str,
    revision: str,
    max_seq_length: int | None,
    max_prompt_length: int | None,
    chat_template: str,
) -> TokenCount | None:
    """The counts of the part of `path` that `read` read, for `user`'s check: done, or pending with a task queued
    (after commit) to count them. None when nothing of the file can be counted (no rows, or problems)."""
    if read.sample_key is None or not read.rows or not read.report.valid or not resolution.valid:
        return None
    identity = tokenizer_identity(resolution)
    key = count_key(read.sample_key, identity, max_seq_length, max_prompt_length, chat_template)
    fields = dict(  # keywords: the model's field names, not a list of hyperparameters
        sample_sha256=read.sample_key,
        tokenizer=identity[:4400],
        model_name=model_name[:200],
        revision=revision[:255],
        max_seq_length=max_seq_length,
        max_prompt_length=max_prompt_length,
        chat_template=chat_template[:40],
    )
    now = timezone.now()
    user_id = getattr(user, "pk", None)
    count = TokenCount.objects.filter(key=key).first()
    if count is None:
        try:
            with transaction.atomic():
                count = TokenCount.objects.create(key=key, requested_at=now, requested_by_id=user_id, **fields)
        except IntegrityError:  # another check of the same bytes created it first
            return TokenCount.objects.get(key=key)
    elif count.state == TokenCount.State.DONE or (
        count.state == TokenCount.State.PENDING and count.requested_at > now - REQUEUE_AFTER
    ):
        return count
    else:
        TokenCount.objects.filter(pk=count.pk).update(
            state=TokenCount.State.PENDING,
            result={},
            requested_at=now,
            requested_by_id=user_id,
            finished_at=None,
            **fields,
        )
        count.refresh_from_db()
    if user_id is not None:
        _supersede_waiting(user_id, count.pk)
    transaction.on_commit(lambda: _enqueue(count.pk, path, user_id))
    return count


def _supersede_waiting(user_id: int, newest: int) -> None:
    """A member's counts waiting for the worker are bounded (MTM_EXPENSIVE_REQUESTS_PER_MEMBER, the newest kept):
    the older ones are marked not counted, so their queued tasks end at once and a flood of checks with ever other
    settings cannot hold the counts queue (and the other members' counts behind them)."""
    limit = per_member_limit()
    if not limit:
        return
    waiting = TokenCount.objects.filter(requested_by_id=user_id, state=TokenCount.State.PENDING).exclude(pk=newest)
    older = list(waiting.order_by("-requested_at", "-pk").values_list("pk", flat=True)[limit - 1 :])
    if older:
        TokenCount.objects.filter(pk__in=older, state=TokenCount.State.PENDING).update(
            state=TokenCount.State.UNAVAILABLE,
            result={"note": SUPERSEDED},
            finished_at=timezone.now(),
        )


def finish(count_id: int, state: str, result: dict[str, Any]) -> None:
    """Store a count's end: done with its result, or unavailable with a note (the page polling for it stops)."""
    TokenCount.objects.filter(pk=count_id).update(state=state, result=result, finished_at=timezone.now())


def count_problems(count: TokenCount, key: str) -> list[Problem]:
    """The problems stored under `key` ("errors" or "warnings") of a finished count."""
    return [Problem(p["code"], p["message"], p.get("hint", "")) for p in count.result.get(key) or []]


def apply_count(report: DatasetReport, count: TokenCount | None) -> DatasetReport:
    """`report` with the counts of `count` when they are done (their warnings and the rows the tokenizer or chat
    template refused included), else marked "pending"."""
    if count is None:
        return report
    if count.state != TokenCount.State.DONE:
        report.token_stats_state = TokenCount.State.PENDING.value
        return report
    report.token_stats_state = TokenCount.State.DONE.value
    result = count.result
    if stats := result.get("token_stats"):
        report.token_stats = TokenStats.model_validate(stats)
    if pairs := result.get("pair_token_stats"):
        report.pair_token_stats = {part: TokenStats.model_validate(stats) for part, stats in pairs.items()}
    report.warnings.extend(count_problems(count, "warnings"))
    report.errors.extend(count_problems(count, "errors"))
    return report


def saved_count(
    path: str,
    *,
    model_name: str,
    revision: str,
    max_seq_length: int | None,
    max_prompt_length: int | None,
    chat_template: str,
) -> TokenCount | None:
    """The latest count of the part of `path` a check reads, for a project's saved settings; looked up, never
    asked for (a page shows what a save or a check asked for). None when the file cannot be read or none exists.
    Reads only the start of the file to hash it, without following links."""
    located = check_dataset_path(path, dataset_roots())
    if not located.valid or not located.path:
        return None
    try:
        with open_dataset(located.path) as file:
            sample_key = sample_key_of(file)
    except (DatasetError, OSError):
        return None
    found = TokenCount.objects.filter(
        sample_sha256=sample_key,
        model_name=model_name[:200],
        revision=revision[:255],
        max_seq_length=max_seq_length,
        max_prompt_length=max_prompt_length,
        chat_template=chat_template[:40],
    )
    return found.order_by("-requested_at", "-pk").first()
