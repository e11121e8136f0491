"""A member switching models does not make everyone wait for her loads: an inference worker takes answers for the model
it holds ahead of answers that need a load, charges loads to the member whose answers caused them, and passes over one
answer at most MTM_PLAYGROUND_MAX_PASS_OVERS times. The first test is answered by a real inference worker with two
real tiny Llamas; the others claim real rows (sent through the service) as a worker would, without generating."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from models_registry.demo import install_into_cache
from mtm.audit import Actor
from playground import lifecycle, services
from playground.models import Conversation, Generation, LoadedModel, PlaygroundSend
from tests.api_client import make_user_token
from tests.playground_helpers import inference_worker, wait_for_generation, wait_for_inference_worker
from tests.test_playground_fairness import new_conversation, send, worker_paused

GREEDY = {"temperature": 0, "max_new_tokens": 4}
OTHER_MODEL = "test-org/tiny-llama-b"


@pytest.fixture
def two_models(tiny_llama_in_cache, hf_cache, tiny_llama_dir) -> tuple[str, str]:
    """The tiny Llama under two names: two snapshots, so switching between them is a real load."""
    install_into_cache(tiny_llama_dir, hf_cache, OTHER_MODEL)
    return tiny_llama_in_cache[0], OTHER_MODEL


@pytest.fixture(scope="module")
def playground_worker(django_db_setup, django_db_blocker, celery_broker, tmp_path_factory):
    worker = inference_worker(celery_broker, tmp_path_factory.mktemp("switching") / "worker.log")
    try:
        yield worker.wait_ready(120)
    finally:
        worker.stop_and_forget(django_db_blocker)


def test_answers_for_the_loaded_model_go_before_a_members_switch(
    transactional_db, portal_roots, two_models, playground_worker
):
    loaded, other = two_models
    wait_for_inference_worker()
    alice, alice_token = make_user_token("alice")
    bob, bob_token = make_user_token("bob")
    bob_a = [new_conversation(bob_token, loaded) for _ in range(2)]
    alice_a, alice_b = new_conversation(alice_token, loaded), new_conversation(alice_token, other)

    # Bob's first answer loads the model on this fresh worker; it stays loaded.
    warm_up = wait_for_generation(send(bob_token, bob_a[0], **GREEDY).json()["id"])
    assert warm_up.status == "succeeded" and warm_up.cold is True

    with worker_paused(playground_worker):
        # Alice alternates between the two models; Bob keeps asking the loaded one.
        sent = [
            send(alice_token, alice_b, **GREEDY),
            send(bob_token, bob_a[0], **GREEDY),
            send(alice_token, alice_a, **GREEDY),
            send(bob_token, bob_a[1], **GREEDY),
        ]
        assert [r.status_code for r in sent] == [202] * 4, [r.content for r in sent]
    answers = [wait_for_generation(r.json()["id"]) for r in sent]
    assert {a.status for a in answers} == {"succeeded"}, [a.error_message for a in answers]
    loads = [a.pk for a in answers if a.cold]
    assert loads == [answers[0].pk], loads  # Alice's switch alone; in plain turns Bob's next answer loaded back too

    served = list(
        Generation.objects.exclude(pk=warm_up.pk)
        .order_by("started_at", "pk")
        .values_list("owner__username", "conversation__model_name", "cold")
    )
    # In plain turns: Alice's switch, Bob (a load back), Alice, Bob.
    assert served == [
        ("alice", loaded, False),
        ("bob", loaded, False),
        ("bob", loaded, False),
        ("alice", other, True),
    ], served
    # The one load is charged to Alice, whose answer needed it (and the warm-up to Bob).
    charged = list(PlaygroundSend.objects.filter(caused_load=True).values_list("generation_id", flat=True))
    assert sorted(charged) == sorted([warm_up.pk, answers[0].pk])
    assert LoadedModel.objects.get().target == Conversation.objects.get(pk=alice_b).target


# --- The choice on real rows, without generating -------------------------------------------------------------------

WORKER = "playground-rows@test"


@pytest.fixture
def rows(db, portal_roots, two_models):
    """Two members, the two models, and a live inference worker row so the service accepts messages (no task runs:
    the test's transaction never commits)."""
    from workers.models import Worker
    from workers.queues import INFERENCE_QUEUE

    Worker.objects.create(name=WORKER, host="test", queues=[INFERENCE_QUEUE])
    return {"alice": make_user_token("alice")[0], "bob": make_user_token("bob")[0], "models": two_models}


def queue(user, model: str) -> int:
    actor = Actor.command_line(user)
    conversation = services.start_conversation(actor=actor, model_name=model)
    return services.send_message(conversation, "hi", GREEDY, actor=actor).pk


def holds(model: str) -> None:
    """The worker holds `model` loaded, as the engine records it."""
    target = Conversation.objects.filter(model_name=model).first().target
    LoadedModel.objects.create(worker_name=WORKER, key=model, target=target, label=model, device="cpu")


def answer(generation_id: int) -> None:
    lifecycle.succeed(generation_id, reply="ok")


def test_an_answer_needing_a_load_is_passed_over_at_most_max_pass_overs_times(rows, settings):
    settings.MTM_PLAYGROUND_MAX_PASS_OVERS = 2
    settings.MTM_PLAYGROUND_LIVE_ANSWERS_PER_MEMBER = 3
    loaded, other = rows["models"]
    alice_switch = queue(rows["alice"], other)
    bob = [queue(rows["bob"], loaded)]
    holds(loaded)

    taken = []
    for _ in range(3):
        taken.append(lifecycle.claim_next(WORKER))
        answer(taken[-1])
        bob.append(queue(rows["bob"], loaded))  # Bob always has an answer for the loaded model waiting
    assert taken == [bob[0], bob[1], alice_switch]  # plain turns: Alice first, she sent first
    assert Generation.objects.get(pk=alice_switch).passed_over == 2


def test_a_load_goes_first_to_the_member_who_caused_fewer(rows):
    loaded, other = rows["models"]
    earlier = {name: queue(rows[name], loaded) for name in ("alice", "bob")}
    for name in ("alice", "bob"):
        assert lifecycle.claim(earlier[name], WORKER)
        answer(earlier[name])
    lifecycle.charge_load(earlier["alice"])
    now = timezone.now()
    # Alice was served longer ago than Bob, so in plain turns she goes first; but her answer cost a load 5 min ago.
    PlaygroundSend.objects.filter(generation_id=earlier["alice"]).update(served_at=now - timedelta(minutes=5))
    PlaygroundSend.objects.filter(generation_id=earlier["bob"]).update(served_at=now - timedelta(minutes=1))
    alice_next, bob_next = queue(rows["alice"], other), queue(rows["bob"], other)  # nothing held: both need a load

    assert lifecycle.claim_next(WORKER) == bob_next
    assert lifecycle.claim_next(WORKER) == alice_next


def test_a_load_older_than_the_window_is_no_longer_charged(rows, settings):
    settings.MTM_PLAYGROUND_LOAD_WINDOW_SECONDS = 600
    loaded, other = rows["models"]
    earlier = {name: queue(rows[name], loaded) for name in ("alice", "bob")}
    for name in ("alice", "bob"):
        assert lifecycle.claim(earlier[name], WORKER)
        answer(earlier[name])
    lifecycle.charge_load(earlier["alice"])
    now = timezone.now()
    PlaygroundSend.objects.filter(generation_id=earlier["alice"]).update(served_at=now - timedelta(minutes=11))
    PlaygroundSend.objects.filter(generation_id=earlier["bob"]).update(served_at=now - timedelta(minutes=1))
    alice_next, bob_next = queue(rows["alice"], other), queue(rows["bob"], other)

    assert lifecycle.claim_next(WORKER) == alice_next  # her turn, as in plain turns
    assert lifecycle.claim_next(WORKER) == bob_next


def test_no_pass_overs_keeps_the_plain_turns(rows, settings):
    settings.MTM_PLAYGROUND_MAX_PASS_OVERS = 0
    loaded, other = rows["models"]
    alice_switch, bob_loaded = queue(rows["alice"], other), queue(rows["bob"], loaded)
    holds(loaded)
    assert lifecycle.claim_next(WORKER) == alice_switch
    assert lifecycle.claim_next(WORKER) == bob_loaded
