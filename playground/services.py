"""The one way in for the playground: start a conversation, send a message, delete a conversation. The page and the
API adapt these; each takes the Actor, owns validation, the per-member rate limit and cap on live answers, the audit
record and the enqueue after commit."""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from pydantic import ValidationError

from mtm import audit
from mtm.audit import Actor
from mtm.shared.problems import Problem
from playground import lifecycle
from playground.models import LIVE_GENERATION, Conversation, Generation, PlaygroundSend, TargetKind
from playground.params import GenerationParams, check_message, describe
from playground.targets import TargetError, for_model, for_run
from projects.models import TrainingRun
from workers.queues import INFERENCE_QUEUE

log = logging.getLogger(__name__)
RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1}
MAX_SYSTEM_PROMPT_CHARS = 4000


class Refused(Exception):
    """Why a playground request is refused, with the HTTP status the API answers (the page shows the message)."""

    def __init__(self, problem: Problem, status: int = 422):
        super().__init__(problem.message)
        self.problem = problem
        self.status = status


def _member(actor: Actor) -> Any:
    user = actor.authenticated_user
    if user is None or not user.is_active:
        raise Refused(Problem("not_signed_in", "Sign in to use the playground."), 401)
    return user


def conversation_of(user: Any, conversation_id: Any) -> Conversation | None:
    """The member's own conversation, or None (another member's is as absent as one that never existed)."""
    if not isinstance(conversation_id, int) or not 0 < conversation_id < 2**63:
        return None
    return Conversation.objects.select_related("run").filter(pk=conversation_id, owner=user).first()


def generation_of(user: Any, generation_id: Any) -> Generation | None:
    if not isinstance(generation_id, int) or not 0 < generation_id < 2**63:
        return None
    return Generation.objects.select_related("conversation").filter(pk=generation_id, owner=user).first()


def _system_prompt(text: Any) -> str:
    if text is None or text == "":
        return ""
    if not isinstance(text, str) or len(text) > MAX_SYSTEM_PROMPT_CHARS or "\x00" in text:
        raise Refused(
            Problem(
                "invalid_system_prompt",
                f"The system prompt must be text of at most {MAX_SYSTEM_PROMPT_CHARS} characters without NUL.",
            )
        )
    return text


def start_conversation(
    *, actor: Actor, run_id: int | None = None, model_name: str = "", revision: str = "", system_prompt: str = ""
) -> Conversation:
    """A new conversation with a succeeded run's model or a valid registry model (exactly one of them)."""
    user = _member(actor)
    system_prompt = _system_prompt(system_prompt)
    if (run_id is None) == (not model_name):
        raise Refused(
            Problem(
                "no_target",
                "Pick either a succeeded run or a registry model to chat with (exactly one).",
                "Give run_id, or model_name (with an optional revision).",
            )
        )
    try:
        if run_id is not None:
            run = (
                TrainingRun.objects.select_related("project").filter(pk=run_id).first() if 0 < run_id < 2**63 else None
            )
            if run is None:  # every member sees every project's runs
                raise Refused(
                    Problem("run_not_found", f"No run with id {run_id}.", "List the runs on the Runs page."), 404
                )
            for_run(run)
            fields = {"kind": TargetKind.RUN, "run": run, "model_name": run.project.model_name}
        else:
            for_model(model_name, revision)
            fields = {"kind": TargetKind.MODEL, "model_name": model_name, "revision": revision}
    except TargetError as exc:
        raise Refused(exc.problem, exc.status) from None
    with transaction.atomic():
        conversation = Conversation.objects.create(owner=user, system_prompt=system_prompt, **fields)
        audit.record_change(actor, "playground.start", conversation, {"target": [None, conversation.target_label]})
    return conversation


def _rate_limit(user: Any) -> None:
    """Counts the member's sends of the last minute, which deleting conversations does not remove."""
    per_minute = int(settings.MTM_PLAYGROUND_MESSAGES_PER_MINUTE)
    if per_minute < 1:
        return
    since = timezone.now() - timedelta(minutes=1)
    recent = list(
        PlaygroundSend.objects.filter(owner=user, sent_at__gt=since)
        .order_by("-sent_at")[:per_minute]
        .values_list("sent_at", flat=True)
    )
    if len(recent) >= per_minute:
        wait = math.ceil((recent[-1] + timedelta(minutes=1) - timezone.now()).total_seconds())
        raise Refused(
            Problem(
                "rate_limited",
                f"You sent {per_minute} playground messages in the last minute, this portal's limit "
                f"(MTM_PLAYGROUND_MESSAGES_PER_MINUTE). Try again in {max(1, wait)} s.",
                "Wait for the answers you asked for; staff can raise the limit.",
            ),
            429,
        )


def _live_answers_cap(user: Any) -> None:
    """At most MTM_PLAYGROUND_LIVE_ANSWERS_PER_MEMBER answers queued or being generated per member, so one member's
    many conversations never hold the inference workers for everyone else."""
    cap = int(settings.MTM_PLAYGROUND_LIVE_ANSWERS_PER_MEMBER)
    live = Generation.objects.filter(owner=user, status__in=LIVE_GENERATION).count()
    if live >= cap:
        raise Refused(
            Problem(
                "too_many_live_answers",
                f"You already have {live} answers queued or being generated, the most one member may have at once "
                f"on this portal ({cap}), so this message was not sent; what you typed is kept.",
                "Wait for one of them to finish, or stop one by deleting its conversation, then send again.",
            ),
            429,
        )


def _a_worker_listens() -> None:
    from workers.models import Worker

    cutoff = timezone.now() - timedelta(seconds=settings.MTM_WORKER_GONE_SECONDS)
    live = Worker.objects.filter(stopped_at__isnull=True, last_seen__gte=cutoff).values_list("queues", flat=True)
    if not any(INFERENCE_QUEUE in (queues or []) for queues in live):
        raise Refused(
            Problem(
                "no_inference_worker",
                "No playground worker is running, so nothing would answer this message.",
                "Start one: python manage.py runworker --inference --cpu (or --gpus 0); `make run` starts one. "
                "The GPUs page lists the live workers.",
            ),
            409,
        )


def send_message(conversation: Conversation, message: Any, params: Any, *, actor: Actor) -> Generation:
    """Queue the member's message for the conversation's model; the worker streams the reply into the row."""
    user = _member(actor)
    if conversation.owner_id != user.pk:
        raise Refused(Problem("not_found", f"No conversation with id {conversation.pk}."), 404)
    try:
        text = check_message(message)
    except ValueError as exc:
        raise Refused(Problem("empty_message" if "empty" in str(exc) else "invalid_message", str(exc))) from None
    try:
        chosen = params if isinstance(params, GenerationParams) else GenerationParams.model_validate(params or {})
    except ValidationError as exc:
        raise Refused(
            Problem("invalid_params", f"Generation settings: {describe(exc)}.", "Change the setting and send again.")
        ) from None
    try:
        if conversation.kind == TargetKind.RUN:
            if conversation.run is None:
                raise Refused(Problem("run_gone", "The run this conversation talks to was deleted."), 409)
            for_run(conversation.run)
        else:
            for_model(conversation.model_name, conversation.revision)
    except TargetError as exc:
        raise Refused(exc.problem, exc.status) from None
    _a_worker_listens()
    with transaction.atomic():
        # The member's row first, then the conversation's: parallel sends of one member (from any conversation)
        # take turns here, so the limits below count every send committed before this one.
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        Conversation.objects.select_for_update().filter(pk=conversation.pk).first()
        if conversation.turns.filter(status__in=LIVE_GENERATION).exists():
            raise Refused(
                Problem(
                    "generation_in_progress",
                    "This conversation is still answering your previous message.",
                    "Wait for the answer to finish, then send the next message.",
                ),
                409,
            )
        _rate_limit(user)
        _live_answers_cap(user)
        generation = Generation.objects.create(
            conversation=conversation, owner=user, message=text, params=chosen.model_dump()
        )
        PlaygroundSend.objects.create(owner=user, sent_at=generation.created_at, generation=generation)
        Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now())
        audit.record_change(actor, "playground.message", generation, {"params": [None, chosen.model_dump()]})
        transaction.on_commit(lambda: enqueue(generation.pk))
    return generation


def enqueue(generation_id: int) -> bool:
    from playground.tasks import generate

    try:
        generate.apply_async((generation_id,), queue=INFERENCE_QUEUE, retry=True, retry_policy=RETRY_POLICY)
    except Exception as exc:
        log.warning("broker unavailable for generation %s: %s", generation_id, exc)
        lifecycle.fail(
            generation_id,
            Problem(
                "broker_unavailable",
                f"The message could not be queued: the task broker did not answer ({type(exc).__name__}).",
                "Check that Redis (REDIS_URL) is running, then send the message again.",
            ),
        )
        return False
    return True


def delete_conversation(conversation: Conversation, *, actor: Actor) -> None:
    user = _member(actor)
    if conversation.owner_id != user.pk:
        raise Refused(Problem("not_found", f"No conversation with id {conversation.pk}."), 404)
    with transaction.atomic():
        audit.record_change(actor, "playground.delete", conversation, {"target": [conversation.target_label, None]})
        conversation.delete()
