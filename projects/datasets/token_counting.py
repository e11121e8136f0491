"""The worker's side of a dataset check's token count (the task projects.count_dataset_tokens,
projects/datasets/tasks.py): the path checked again for the member who asked, the tokenizer loaded, the same part of
the file read, and the lengths, their warnings and the refused rows stored on the TokenCount row that
token_stats.request_count created. A JSON array's rows past the ones a request reads are counted here too, so one of
more than MTM_DATASET_MAX_ROWS rows is refused by the check, not first by the resolve stage."""

from __future__ import annotations

import logging
import os

from django.conf import settings
from django.contrib.auth import get_user_model

from models_registry.lookup import dataset_roots, resolve_model
from mtm.shared.problems import Problem
from projects.datasets.chat_templates import with_chat_template
from projects.datasets.errors import DatasetError
from projects.datasets.loading import json_rows_past, open_dataset
from projects.datasets.paths import check_dataset_path
from projects.datasets.report import add_token_stats, read_dataset
from projects.datasets.row_count import too_many_rows
from projects.datasets.token_stats import finish
from projects.datasets.uploads import upload_problems
from projects.models import TokenCount
from projects.services import load_tokenizer

log = logging.getLogger(__name__)


def _unavailable(count_id: int, note: str) -> None:
    finish(count_id, TokenCount.State.UNAVAILABLE, {"note": note})


def _array_rows_problems(path: str) -> list[Problem]:
    """A JSON array past MTM_DATASET_MAX_ROWS rows, found here rather than by the resolve stage: a request reads
    only the array's first rows, and the array may hold all of them on one line. Counted without decoding a row."""
    limit = settings.MTM_DATASET_MAX_ROWS
    try:
        with open_dataset(path) as file:
            past = json_rows_past(file, limit)
    except (DatasetError, OSError):
        return []  # the resolve stage reads the file again and names what is wrong with it
    return [too_many_rows(os.path.basename(path), limit)] if past else []


def count_tokens(count_id: int, path: str, user_id: int | None) -> None:
    """Count the tokens of the pending TokenCount `count_id` from the file at `path`, checked again for the member
    `user_id` (the path is a member's input: where it leads and whose upload it is may have changed). Whatever
    happens the row leaves "pending", so the page polling for it stops."""
    try:
        _count(count_id, path, user_id)
    except Exception as exc:
        log.exception("token count %s failed", count_id)
        _unavailable(count_id, f"Token lengths could not be counted ({type(exc).__name__}); check the file again.")


def _count(count_id: int, path: str, user_id: int | None) -> None:
    count = TokenCount.objects.filter(pk=count_id, state=TokenCount.State.PENDING).first()
    if count is None:  # counted already, or the row is gone
        return
    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    located = check_dataset_path(path, dataset_roots())
    if problems := located.errors or upload_problems(located, user, None):
        return _unavailable(count_id, f"Token lengths were not counted: {problems[0].message}")
    model = f"'{count.model_name}'"
    resolution = resolve_model(count.model_name, count.revision or None)
    if not resolution.valid:
        return _unavailable(count_id, f"Token lengths were not counted: the worker could not resolve {model}.")
    tokenizer = with_chat_template(load_tokenizer(resolution), count.chat_template)
    if tokenizer is None:
        return _unavailable(count_id, f"The tokenizer of {model} could not be loaded, so token lengths are not shown.")
    read = read_dataset(located.path or path)
    if read.sample_key != count.sample_sha256:
        return _unavailable(count_id, "The file changed while its tokens were counted: check it again.")
    report = read.report
    if report.valid and report.kind == "json" and not report.complete:
        report.errors.extend(_array_rows_problems(located.path or path))
    known = len(report.warnings)
    add_token_stats(
        report,
        read.rows,
        tokenizer,
        count.max_seq_length,
        model=model,
        max_prompt_length=count.max_prompt_length,
    )
    result = {
        "rows": report.rows,
        "complete": report.complete,
        "token_stats": report.token_stats.model_dump() if report.token_stats else None,
        "pair_token_stats": (
            {part: stats.model_dump() for part, stats in report.pair_token_stats.items()}
            if report.pair_token_stats
            else None
        ),
        "warnings": [p.model_dump() for p in report.warnings[known:]],
        "errors": [p.model_dump() for p in report.errors],
    }
    finish(count_id, TokenCount.State.DONE, result)
