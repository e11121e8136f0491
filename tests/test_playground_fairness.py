"""The playground is fair: the rate limit counts sends that deleting conversations cannot remove, a member has at most
MTM_PLAYGROUND_LIVE_ANSWERS_PER_MEMBER answers queued or live (parallel sends included), the answer of a deleted
conversation stops generating, and members waiting for the one inference worker are served in turn. Answered by a
real inference worker (`manage.py runworker --cpu --inference`) with the real tiny Llama."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator

import pytest
from django.db import connection, transaction
from django.utils.html import escape

from playground import lifecycle
from playground.models import Generation, GenerationStatus
from tests.api_client import call, codes, make_user_token
from tests.clients import secure_client
from tests.playground_helpers import inference_worker, wait_for_generation, wait_for_inference_worker

GREEDY = {"temperature": 0, "max_new_tokens": 8}


@pytest.fixture(scope="module")
def playground_worker(django_db_setup, django_db_blocker, celery_broker, tmp_path_factory):
    # Flushing every 50 ms: an answer whose row is gone stops within a few tokens.
    worker = inference_worker(
        celery_broker, tmp_path_factory.mktemp("fairness") / "worker.log", {"MTM_PLAYGROUND_FLUSH_MS": "50"}
    )
    try:
        yield worker.wait_ready(120)
    finally:
        worker.stop_and_forget(django_db_blocker)


@pytest.fixture
def members(transactional_db, portal_roots, tiny_llama_in_cache, playground_worker):
    wait_for_inference_worker()
    return {
        "alice": make_user_token("alice"),
        "bob": make_user_token("bob"),
        "model": tiny_llama_in_cache[0],
        "worker": playground_worker,
    }


@contextlib.contextmanager
def worker_paused(worker) -> Iterator[None]:
    """The worker stops taking messages from the inference queue (Celery's cancel_consumer) while the block runs, so
    what is sent meanwhile waits queued; then it consumes again."""
    from mtm.celery import app
    from workers.models import Worker
    from workers.queues import INFERENCE_QUEUE

    name = Worker.objects.filter(name__startswith=worker.name).values_list("name", flat=True).get()
    assert app.control.cancel_consumer(INFERENCE_QUEUE, destination=[name], reply=True, timeout=10)
    try:
        yield
    finally:
        assert app.control.add_consumer(INFERENCE_QUEUE, destination=[name], reply=True, timeout=10)


def new_conversation(token: str, model: str) -> int:
    response = call(secure_client(), "POST", "/playground/conversations", {"model_name": model}, token=token)
    assert response.status_code == 201, response.content
    return response.json()["id"]


def send(token: str, conversation_id: int, message: str = "hi", **params):
    body = {"message": message, **(params or GREEDY)}
    return call(secure_client(), "POST", f"/playground/conversations/{conversation_id}/messages", body, token=token)


def wait_all_ended() -> None:
    for generation in Generation.objects.all():
        wait_for_generation(generation.pk)


def test_deleting_conversations_does_not_reset_the_rate_limit(members, settings):
    _, token = members["alice"]
    settings.MTM_PLAYGROUND_MESSAGES_PER_MINUTE = 2
    settings.MTM_PLAYGROUND_LIVE_ANSWERS_PER_MEMBER = 5
    for _ in range(2):
        conversation = new_conversation(token, members["model"])
        assert send(token, conversation).status_code == 202
        assert (
            call(secure_client(), "DELETE", f"/playground/conversations/{conversation}", token=token).status_code == 204
        )
    assert not Generation.objects.exists()  # the sends' turns went with their conversations

    fresh = new_conversation(token, members["model"])
    refused = send(token, fresh)
    assert refused.status_code == 429 and codes(refused.json()["errors"]) == ["rate_limited"]
    assert "2 playground messages in the last minute" in refused.json()["errors"][0]["message"]


def test_a_send_beyond_the_live_answers_cap_is_refused_even_in_parallel(members, settings):
    alice, token = members["alice"]
    settings.MTM_PLAYGROUND_LIVE_ANSWERS_PER_MEMBER = 2
    conversations = [new_conversation(token, members["model"]) for _ in range(4)]
    statuses: list[int] = []
    bodies: list[dict] = []
    start = threading.Barrier(3)

    def send_in_parallel(conversation_id: int) -> None:
        try:
            start.wait(10)
            response = send(token, conversation_id)
            statuses.append(response.status_code)
            bodies.append(response.json())
        finally:
            connection.close()

    with worker_paused(members["worker"]):
        threads = [threading.Thread(target=send_in_parallel, args=(c,)) for c in conversations[:3]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(statuses) == [202, 202, 429], statuses
        assert Generation.objects.filter(owner=alice, status=GenerationStatus.QUEUED).count() == 2
        refusal = next(b for b in bodies if "errors" in b)["errors"][0]
        assert refusal["code"] == "too_many_live_answers"
        assert "2 answers queued or being generated" in refusal["message"]
        assert "the most one member may have at once on this portal (2)" in refusal["message"]
        assert "Wait for one of them to finish" in refusal["hint"] and "deleting its conversation" in refusal["hint"]

        # The page says the same, word for word.
        page = secure_client(alice).post(
            f"/playground/{conversations[3]}/send/",
            {"message": "a message typed with care", "temperature": "0", "max_new_tokens": "8", "stop": ""},
            follow=True,
        )
        assert escape(refusal["message"]).encode() in page.content
        assert escape(refusal["hint"]).encode() in page.content
        assert b">a message typed with care</textarea>" in page.content  # back in the box, not lost
        # Bob is not held by Alice's answers.
        bob_conversation = new_conversation(members["bob"][1], members["model"])
        assert send(members["bob"][1], bob_conversation).status_code == 202
    wait_all_ended()
    assert set(Generation.objects.values_list("status", flat=True)) == {"succeeded"}
    assert send(token, conversations[3]).status_code == 202  # answered: her slots are free again
    wait_all_ended()


def stopped_after(log: str, generation_id: int) -> int | None:
    found = re.search(rf"generation {generation_id} stopped after (\d+) new tokens", log)
    return int(found.group(1)) if found else None


def test_the_answer_of_a_deleted_conversation_stops_generating(members):
    _, token = members["alice"]
    long = {"temperature": 0, "max_new_tokens": 400}
    story = "Tell a long story:"
    # The same message answered in full: greedy, so the deleted one would produce the same tokens.
    whole_conversation = new_conversation(token, members["model"])
    whole = wait_for_generation(send(token, whole_conversation, story, **long).json()["id"])
    assert whole.status == "succeeded" and whole.finish_reason == "length", (whole.finish_reason, whole.error_message)
    assert whole.new_tokens > 100

    deleted = new_conversation(token, members["model"])
    generation_id = send(token, deleted, story, **long).json()["id"]
    deadline = time.monotonic() + 120
    while True:
        # Holding the row (the whole database on SQLite) keeps the worker at its next write of the answer, so the
        # conversation is deleted while the answer is partway, however fast the model is.
        with transaction.atomic():
            row = Generation.objects.select_for_update().get(pk=generation_id)
            if row.status == GenerationStatus.RUNNING and row.new_tokens > 0:
                gone = call(secure_client(), "DELETE", f"/playground/conversations/{deleted}", token=token)
                assert gone.status_code == 204
                break
        assert row.is_live, "the answer ended before its conversation could be deleted"
        assert time.monotonic() < deadline, "no worker took the message"
        time.sleep(0.02)
    written = row.new_tokens

    # The worker answers one message at a time: once the next one is answered, the deleted one has ended.
    following = wait_for_generation(send(token, whole_conversation, **GREEDY).json()["id"])
    assert following.status == "succeeded"
    produced = stopped_after(members["worker"].log_text(), generation_id)
    assert produced is not None, "the worker did not stop the deleted answer"
    assert written <= produced < whole.new_tokens // 2, (written, produced, whole.new_tokens)


def test_members_waiting_are_served_in_turn(members, settings):
    alice, alice_token = members["alice"]
    bob, bob_token = members["bob"]
    settings.MTM_PLAYGROUND_LIVE_ANSWERS_PER_MEMBER = 3
    with worker_paused(members["worker"]):
        for _ in range(3):
            assert send(alice_token, new_conversation(alice_token, members["model"])).status_code == 202
        assert send(bob_token, new_conversation(bob_token, members["model"])).status_code == 202
    wait_all_ended()
    served = list(Generation.objects.order_by("started_at", "pk").values_list("owner__username", "status"))
    assert served == [
        ("alice", "succeeded"),
        ("bob", "succeeded"),
        ("alice", "succeeded"),
        ("alice", "succeeded"),
    ], served
    assert alice.pk != bob.pk


def test_parallel_claims_never_take_the_same_answer(members, settings):
    _, token = members["alice"]
    settings.MTM_PLAYGROUND_LIVE_ANSWERS_PER_MEMBER = 6
    claimed: list[int | None] = []
    start = threading.Barrier(6)

    def claim(n: int) -> None:
        try:
            start.wait(10)
            claimed.append(lifecycle.claim_next(f"claimer-{n}"))
        finally:
            connection.close()

    with worker_paused(members["worker"]):
        sent = [send(token, new_conversation(token, members["model"])).json()["id"] for _ in range(5)]
        threads = [threading.Thread(target=claim, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        # Five answers, six claimers: each answer is taken once, the sixth finds none left.
        assert sorted(c for c in claimed if c is not None) == sorted(sent) and claimed.count(None) == 1
        taken_by = dict(Generation.objects.values_list("pk", "worker_name"))
        assert len(set(taken_by.values())) == 5 and all(name.startswith("claimer-") for name in taken_by.values())
        for pk in sent:
            lifecycle.fail(pk, lifecycle.WORKER_LOST)  # nobody generates them: end them as a lost worker would


def test_the_reaper_forgets_old_sends_only(members):
    from datetime import timedelta

    from django.utils import timezone

    from playground.models import SEND_RECORD_HOURS, PlaygroundSend
    from playground.tasks import reap_lost_generations

    _, token = members["alice"]
    for _ in range(2):
        assert send(token, new_conversation(token, members["model"])).status_code == 202
    wait_all_ended()
    old, recent = PlaygroundSend.objects.order_by("pk")
    assert old.served_at is not None and recent.served_at is not None  # a worker took each answer
    # The first send as it stands a day later.
    PlaygroundSend.objects.filter(pk=old.pk).update(
        sent_at=timezone.now() - timedelta(hours=SEND_RECORD_HOURS, minutes=1)
    )
    reap_lost_generations()
    assert list(PlaygroundSend.objects.values_list("pk", flat=True)) == [recent.pk]
