"""A playground worker lost mid-answer (SIGKILL) and a message no worker takes: the periodic reaper ends both with a
clear error, so no generation stays "running" or "queued"."""

from __future__ import annotations

import time

import pytest

from playground.models import Generation
from playground.tasks import reap_lost_generations
from tests.api_client import call, make_user_token
from tests.clients import secure_client
from tests.playground_helpers import inference_worker, wait_for_generation, wait_for_inference_worker


@pytest.fixture
def worker(transactional_db, portal_roots, tiny_llama_in_cache, celery_broker, tmp_path):
    started = inference_worker(celery_broker, tmp_path / "worker.log")
    try:
        yield started.wait_ready(120)
    finally:
        started.stop()


def test_a_worker_lost_mid_generation_ends_it_with_an_error(worker, tiny_llama_in_cache, settings):
    alice, token = make_user_token("alice")
    wait_for_inference_worker()
    client = secure_client()
    conversation = call(
        client, "POST", "/playground/conversations", {"model_name": tiny_llama_in_cache[0]}, token=token
    ).json()
    path = f"/playground/conversations/{conversation['id']}/messages"
    sent = call(client, "POST", path, {"message": "Tell a long story:", "max_new_tokens": 400}, token=token)
    assert sent.status_code == 202
    generation_id = sent.json()["id"]
    taken = wait_for_generation(generation_id, until=lambda g: g.status == "running")
    assert taken.status == "running", "the worker answered before it could be killed"
    worker.kill()  # SIGKILL: no warm shutdown, no last write

    settings.MTM_PLAYGROUND_HEARTBEAT_TIMEOUT = 1
    deadline = time.monotonic() + 30
    while generation_id not in reap_lost_generations() and time.monotonic() < deadline:
        time.sleep(0.3)
    lost = Generation.objects.get(pk=generation_id)
    assert lost.status == "failed" and lost.error_code == "worker_lost"
    assert "stopped answering" in lost.error_message and "Send the message again" in lost.error_hint
    assert lost.finished_at is not None

    # The client reading it sees the end and the reason.
    body = call(client, "GET", f"/playground/generations/{generation_id}", token=token).json()
    assert body["status"] == "failed" and body["error"]["code"] == "worker_lost"
    page = secure_client(alice).get(f"/playground/{conversation['id']}/")
    assert b"worker_lost" in page.content and b"hx-trigger" not in page.content

    # A message sent while no worker is left to take it (the dead one's last report still looks live) is queued,
    # then failed by the reaper once it has waited MTM_PLAYGROUND_QUEUE_TIMEOUT.
    waiting = call(client, "POST", path, {"message": "anyone?"}, token=token)
    assert waiting.status_code == 202
    settings.MTM_PLAYGROUND_QUEUE_TIMEOUT = 0
    assert waiting.json()["id"] in reap_lost_generations()
    never = Generation.objects.get(pk=waiting.json()["id"])
    assert never.status == "failed" and never.error_code == "no_worker" and "runworker --inference" in never.error_hint
    assert not Generation.objects.filter(status__in=("queued", "running")).exists()
