"""The playground through the API and the pages, answered by a real inference worker (`manage.py runworker --cpu
--inference`) with the real tiny Llama: streaming, the model kept loaded, runs and registry models, bad input,
other members' conversations, the rate limit, a model that fails to load, and the GPUs page."""

from __future__ import annotations

import pytest
from django.utils.html import escape

from mtm.models import AuditEvent
from mtm.shared.claims import identity_of
from playground.models import Conversation, Generation, LoadedModel
from projects.models import RunStatus, TrainingProject, TrainingRun
from tests.api_client import call, codes, make_user_token
from tests.clients import secure_client
from tests.playground_helpers import inference_worker, wait_for_generation, wait_for_inference_worker

GREEDY = {"temperature": 0, "max_new_tokens": 40}


@pytest.fixture(scope="module")
def playground_worker(django_db_setup, django_db_blocker, celery_broker, tmp_path_factory):
    worker = inference_worker(celery_broker, tmp_path_factory.mktemp("playground") / "worker.log")
    try:
        yield worker.wait_ready(120)
    finally:
        worker.stop_and_forget(django_db_blocker)


@pytest.fixture
def members(transactional_db, portal_roots, tiny_llama_in_cache, playground_worker):
    alice, alice_token = make_user_token("alice")
    mallory, mallory_token = make_user_token("mallory")
    wait_for_inference_worker()
    return {
        "alice": (alice, alice_token),
        "mallory": (mallory, mallory_token),
        "model": tiny_llama_in_cache[0],
        "snapshot": tiny_llama_in_cache[1],
        "root": portal_roots,
    }


def new_conversation(token: str, **body) -> dict:
    response = call(secure_client(), "POST", "/playground/conversations", body, token=token)
    assert response.status_code == 201, response.content
    return response.json()


def read_until_done(token: str, generation_id: int) -> tuple[dict, list[str]]:
    """Poll as a client would: ask for what is new after what was read; returns the last answer and the deltas."""
    import time

    read, deltas = 0, []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body = call(secure_client(), "GET", f"/playground/generations/{generation_id}?after={read}", token=token).json()
        assert body["offset"] == min(read, len(body["reply"]))
        if body["delta"]:
            deltas.append(body["delta"])
            read += len(body["delta"])
        if body["status"] in ("succeeded", "failed"):
            return body, deltas
        time.sleep(0.05)
    raise AssertionError(f"generation {generation_id} did not end")


def test_api_chat_with_a_registry_model_streams_and_keeps_the_model_loaded(members):
    _, token = members["alice"]
    conversation = new_conversation(token, model_name=members["model"])
    assert conversation["kind"] == "model" and conversation["target"] == members["model"]

    path = f"/playground/conversations/{conversation['id']}/messages"
    sent = call(secure_client(), "POST", path, {"message": "Say hello:", **GREEDY}, token=token)
    assert sent.status_code == 202, sent.content
    first, deltas = read_until_done(token, sent.json()["id"])
    assert first["status"] == "succeeded", first["error"]
    assert first["new_tokens"] > 0 and first["reply"].strip()
    assert "".join(deltas) == first["reply"]  # what the client read piece by piece is the whole answer
    assert first["cold"] is True and first["load_seconds"] > 0
    assert first["time_to_first_token"] is not None and first["prompt_tokens"] > 0
    assert first["finish_reason"] in ("stop", "length") and first["device"] == "cpu"
    assert first["worker"].startswith("playground-test-")

    # The model stays loaded on the worker, counted on its device; the next message reuses it, with the history.
    held = LoadedModel.objects.get(worker_name=first["worker"])
    assert held.bytes > 0 and held.device == "cpu" and members["model"] in held.label
    sent = call(secure_client(), "POST", path, {"message": "And again:", **GREEDY}, token=token)
    second, _ = read_until_done(token, sent.json()["id"])
    assert second["status"] == "succeeded" and second["cold"] is False and second["load_seconds"] is None
    assert second["prompt_tokens"] > first["prompt_tokens"] + 3  # the first turn is part of the prompt
    if second["new_tokens"] >= 2:
        assert second["tokens_per_second"] > 0

    # Greedy is repeatable: a new conversation with the same message answers the same.
    again = new_conversation(token, model_name=members["model"])
    sent = call(
        secure_client(),
        "POST",
        f"/playground/conversations/{again['id']}/messages",
        {"message": "Say hello:", **GREEDY},
        token=token,
    )
    assert read_until_done(token, sent.json()["id"])[0]["reply"] == first["reply"]

    listed = call(secure_client(), "GET", f"/playground/conversations/{conversation['id']}", token=token).json()
    assert [t["message"] for t in listed["turns"]] == ["Say hello:", "And again:"]
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"playground.start", "playground.message"} <= actions
    assert AuditEvent.objects.filter(action="playground.message", via="api").count() == 3

    # The GPUs page shows what the playground worker holds.
    page = secure_client(members["alice"][0]).get("/gpus/")
    assert b"playground" in page.content and members["model"].encode() in page.content


def test_stop_strings_cut_the_answer(members):
    _, token = members["alice"]
    conversation = new_conversation(token, model_name=members["model"])
    path = f"/playground/conversations/{conversation['id']}/messages"
    sent = call(secure_client(), "POST", path, {"message": "Say hello:", **GREEDY}, token=token)
    full = read_until_done(token, sent.json()["id"])[0]["reply"]
    assert len(full.strip()) >= 4
    stop = full.strip()[2:4]
    other = new_conversation(token, model_name=members["model"])
    sent = call(
        secure_client(),
        "POST",
        f"/playground/conversations/{other['id']}/messages",
        {"message": "Say hello:", **GREEDY, "stop": [stop]},
        token=token,
    )
    cut = read_until_done(token, sent.json()["id"])[0]
    assert cut["status"] == "succeeded" and cut["finish_reason"] == "stop_string"
    assert stop not in cut["reply"] and full.startswith(cut["reply"])


def test_bad_input_is_refused_clearly(members, settings):
    _, token = members["alice"]
    client = secure_client()
    unknown = call(client, "POST", "/playground/conversations", {"model_name": "nobody/nothing"}, token=token)
    assert unknown.status_code == 422 and codes(unknown.json()["errors"]) == ["model_not_found"]
    assert "not found" in unknown.json()["errors"][0]["message"]
    neither = call(client, "POST", "/playground/conversations", {}, token=token)
    assert neither.status_code == 422 and codes(neither.json()["errors"]) == ["no_target"]
    missing_run = call(client, "POST", "/playground/conversations", {"run_id": 987654}, token=token)
    assert missing_run.status_code == 404 and codes(missing_run.json()["errors"]) == ["run_not_found"]

    alice = members["alice"][0]
    project = TrainingProject.objects.create(
        name="p", owner=alice, model_name=members["model"], dataset_path="/x.jsonl", output_directory="/o/p"
    )
    failed = TrainingRun.objects.create(project=project, status=RunStatus.FAILED)
    refused = call(client, "POST", "/playground/conversations", {"run_id": failed.pk}, token=token)
    assert refused.status_code == 422 and codes(refused.json()["errors"]) == ["run_not_succeeded"]
    assert f"Run {failed.pk} is failed" in refused.json()["errors"][0]["message"]

    conversation = new_conversation(token, model_name=members["model"])
    path = f"/playground/conversations/{conversation['id']}/messages"
    for body, where in (
        ({"message": "hi", "max_new_tokens": 0}, "max_new_tokens"),
        ({"message": "hi", "max_new_tokens": settings.MTM_PLAYGROUND_MAX_NEW_TOKENS + 1}, "max_new_tokens"),
        ({"message": "hi", "temperature": 5}, "temperature"),
        ({"message": "hi", "top_p": 0}, "top_p"),
        ({"message": "hi", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"message": "hi", "max_new_tokens": "many"}, "max_new_tokens"),
    ):
        response = call(client, "POST", path, body, token=token)
        assert response.status_code == 422, (body, response.content)
        assert where in response.json()["errors"][0]["message"]
    bounded = call(client, "POST", path, {"message": "hi", "max_new_tokens": 0}, token=token).json()
    assert f"from 1 to {settings.MTM_PLAYGROUND_MAX_NEW_TOKENS}" in bounded["errors"][0]["message"]
    for empty in ("", "   \n"):
        response = call(client, "POST", path, {"message": empty}, token=token)
        assert response.status_code == 422 and codes(response.json()["errors"]) == ["empty_message"]
    assert not Generation.objects.exists()  # nothing was queued by any of them


def test_no_playground_worker_is_a_clear_refusal(members, settings):
    _, token = members["alice"]
    conversation = new_conversation(token, model_name=members["model"])
    settings.MTM_WORKER_GONE_SECONDS = 0  # every worker's last report is now too old: none is live
    response = call(
        secure_client(),
        "POST",
        f"/playground/conversations/{conversation['id']}/messages",
        {"message": "hi"},
        token=token,
    )
    assert response.status_code == 409 and codes(response.json()["errors"]) == ["no_inference_worker"]
    assert "runworker --inference" in response.json()["errors"][0]["hint"]
    assert not Generation.objects.exists()


def test_conversations_are_their_owners_alone(members):
    _, alice_token = members["alice"]
    mallory, mallory_token = members["mallory"]
    conversation = new_conversation(alice_token, model_name=members["model"], system_prompt="secret plan")
    sent = call(
        secure_client(),
        "POST",
        f"/playground/conversations/{conversation['id']}/messages",
        {"message": "my secret", **GREEDY},
        token=alice_token,
    )
    generation_id = sent.json()["id"]
    wait_for_generation(generation_id)
    client = secure_client()
    cid = conversation["id"]
    for method, path, body in (
        ("GET", f"/playground/conversations/{cid}", None),
        ("POST", f"/playground/conversations/{cid}/messages", {"message": "hijack"}),
        ("DELETE", f"/playground/conversations/{cid}", None),
        ("GET", f"/playground/generations/{generation_id}", None),
    ):
        response = call(client, method, path, body, token=mallory_token)
        assert response.status_code == 404, (method, path, response.status_code)
        assert b"secret" not in response.content
    assert call(client, "GET", "/playground/conversations", token=mallory_token).json() == []
    assert Conversation.objects.filter(pk=cid).exists() and Generation.objects.count() == 1

    pages = secure_client(mallory)
    for url in (f"/playground/{cid}/", f"/playground/turns/{generation_id}/"):
        response = pages.get(url, HTTP_HX_REQUEST="true")
        assert response.status_code == 404 and b"secret" not in response.content
    assert pages.post(f"/playground/{cid}/send/", {"message": "hijack"}).status_code == 404
    assert pages.post(f"/playground/{cid}/delete/").status_code == 404
    assert b"secret" not in pages.get("/playground/").content
    anonymous = call(client, "GET", f"/playground/conversations/{cid}")
    assert anonymous.status_code == 401


def test_the_rate_limit_refuses_clearly(members, settings):
    _, token = members["alice"]
    settings.MTM_PLAYGROUND_MESSAGES_PER_MINUTE = 2
    client = secure_client()
    for _ in range(2):
        conversation = new_conversation(token, model_name=members["model"])
        sent = call(
            client,
            "POST",
            f"/playground/conversations/{conversation['id']}/messages",
            {"message": "hi", **GREEDY},
            token=token,
        )
        assert sent.status_code == 202
    third = new_conversation(token, model_name=members["model"])
    refused = call(client, "POST", f"/playground/conversations/{third['id']}/messages", {"message": "hi"}, token=token)
    assert refused.status_code == 429 and codes(refused.json()["errors"]) == ["rate_limited"]
    assert "2 playground messages in the last minute" in refused.json()["errors"][0]["message"]
    assert "Try again in" in refused.json()["errors"][0]["message"]
    # The limit is per member: mallory may still send.
    _, mallory_token = members["mallory"]
    hers = new_conversation(mallory_token, model_name=members["model"])
    assert (
        call(
            client,
            "POST",
            f"/playground/conversations/{hers['id']}/messages",
            {"message": "hi", **GREEDY},
            token=mallory_token,
        ).status_code
        == 202
    )
    for generation in Generation.objects.all():
        wait_for_generation(generation.pk)


def test_a_second_message_waits_for_the_first(members):
    _, token = members["alice"]
    conversation = new_conversation(token, model_name=members["model"])
    path = f"/playground/conversations/{conversation['id']}/messages"
    assert call(secure_client(), "POST", path, {"message": "one", **GREEDY}, token=token).status_code == 202
    second = call(secure_client(), "POST", path, {"message": "two", **GREEDY}, token=token)
    if second.status_code == 409:  # the first was still being answered
        assert codes(second.json()["errors"]) == ["generation_in_progress"]
    else:  # the tiny model answered the first already
        assert second.status_code == 202
    for generation in Generation.objects.all():
        assert wait_for_generation(generation.pk).status == "succeeded"


def test_a_model_that_fails_to_load_ends_the_message_with_an_error(members):
    """The run succeeded, then its weights were damaged on disk: the web process (which never loads a model) lets the
    message through, the worker fails to load it and ends the message with the reason; nothing stays running."""
    import json
    import shutil

    alice, token = members["alice"]
    output = members["root"] / "outputs" / "damaged"
    shutil.copytree(members["snapshot"], output)  # the real files (the snapshot's links followed)
    (output / "mtm_manifest.json").write_text(json.dumps({"layout": {"model_dir": ".", "adapter_dir": None}}))
    (output / "model.safetensors").unlink()
    (output / "model.safetensors").write_bytes(b"not safetensors at all")
    project = TrainingProject.objects.create(
        name="d", owner=alice, model_name=members["model"], dataset_path="/x.jsonl", output_directory=str(output)
    )
    run = TrainingRun.objects.create(
        project=project,
        status=RunStatus.SUCCEEDED,
        run_folder=str(output),
        run_folder_identity=identity_of(output),
    )
    conversation = new_conversation(token, run_id=run.pk)
    assert conversation["kind"] == "run" and conversation["run_id"] == run.pk
    path = f"/playground/conversations/{conversation['id']}/messages"
    sent = call(secure_client(), "POST", path, {"message": "hi"}, token=token)
    assert sent.status_code == 202
    ended, _ = read_until_done(token, sent.json()["id"])
    assert ended["status"] == "failed" and ended["error"]["code"] == "model_load_failed"
    assert "could not load" in ended["error"]["message"] and ended["error"]["hint"]
    assert ended["finished_at"] is not None

    # Its output folder removed: refused before anything is queued.
    shutil.rmtree(output)
    gone = call(secure_client(), "POST", path, {"message": "hi"}, token=token)
    assert gone.status_code == 409 and codes(gone.json()["errors"]) == ["run_output_missing"]


def test_a_run_answers_from_the_folder_it_made_and_is_refused_once_swapped(members):
    """The worker loads a run's model through a descriptor of the folder the run made; once a member swaps that
    folder for a copy with a chat template of her own, the next message is refused before anything is queued."""
    import json
    import shutil

    alice, token = members["alice"]
    output = members["root"] / "outputs" / "mine" / "run-1"
    shutil.copytree(members["snapshot"], output)  # the real files (the snapshot's links followed)
    (output / "mtm_manifest.json").write_text(json.dumps({"layout": {"model_dir": ".", "adapter_dir": None}}))
    project = TrainingProject.objects.create(
        name="m", owner=alice, model_name=members["model"], dataset_path="/x.jsonl", output_directory=str(output.parent)
    )
    run = TrainingRun.objects.create(
        project=project,
        status=RunStatus.SUCCEEDED,
        run_folder=str(output),
        run_folder_identity=identity_of(output),
    )
    path = f"/playground/conversations/{new_conversation(token, run_id=run.pk)['id']}/messages"
    sent = call(secure_client(), "POST", path, {"message": "Say hello:", **GREEDY}, token=token)
    assert sent.status_code == 202, sent.content
    ended, _ = read_until_done(token, sent.json()["id"])
    assert ended["status"] == "succeeded" and ended["reply"], ended
    output.rename(output.with_name("run-1.orig"))
    shutil.copytree(output.with_name("run-1.orig"), output)
    (output / "chat_template.jinja").write_text('{{ "PWNED" }}')
    refused = call(secure_client(), "POST", path, {"message": "Hello"}, token=token)
    assert refused.status_code == 409 and codes(refused.json()["errors"]) == ["run_folder_changed"]
    assert str(output) in refused.json()["errors"][0]["message"]


def test_chat_through_the_pages(members):
    alice, _ = members["alice"]
    model = members["model"]
    page = secure_client(alice)
    index = page.get("/playground/")
    assert f'value="model:{model}"'.encode() in index.content
    unknown = page.post("/playground/new/", {"target": "model:nobody/nothing"}, follow=True)
    assert b"not found" in unknown.content and not Conversation.objects.exists()
    created = page.post("/playground/new/", {"target": f"model:{model}", "system_prompt": "Be brief."})
    assert created.status_code == 302
    conversation = Conversation.objects.get(owner=alice)
    assert created["Location"] == f"/playground/{conversation.pk}/" and conversation.model_name == model

    empty = page.post(f"/playground/{conversation.pk}/send/", {"message": "  "}, follow=True)
    assert b"The message is empty" in empty.content and not Generation.objects.exists()
    too_many = page.post(
        f"/playground/{conversation.pk}/send/", {"message": "hi", "max_new_tokens": "99999"}, follow=True
    )
    assert b"max new tokens must be from 1 to" in too_many.content and not Generation.objects.exists()

    sent = page.post(
        f"/playground/{conversation.pk}/send/",
        {"message": "Say hello:", "temperature": "0", "max_new_tokens": "24", "stop": ""},
    )
    assert sent.status_code == 302
    generation = Generation.objects.get(conversation=conversation)
    shown = page.get(f"/playground/{conversation.pk}/")
    assert f'id="turn-{generation.pk}"'.encode() in shown.content
    # Poll the turn's partial as htmx does, until it answers 286 (stop polling) with the whole answer.
    import time

    deadline = time.monotonic() + 120
    while True:
        partial = page.get(f"/playground/turns/{generation.pk}/", HTTP_HX_REQUEST="true")
        if partial.status_code == 286 or time.monotonic() > deadline:
            break
        assert partial.status_code == 200 and b"hx-trigger" in partial.content
        time.sleep(0.1)
    assert partial.status_code == 286 and b"hx-trigger" not in partial.content
    generation.refresh_from_db()
    assert generation.status == "succeeded", generation.error_message
    assert generation.cold and b"tokens" in partial.content and b"first token after" in partial.content
    shown = page.get(f"/playground/{conversation.pk}/")
    assert escape(generation.reply.split()[0]).encode() in shown.content
    assert b"tokens/s" in shown.content or generation.new_tokens < 2
    assert AuditEvent.objects.filter(action="playground.message", via="web").count() == 1

    deleted = page.post(f"/playground/{conversation.pk}/delete/")
    assert deleted.status_code == 302 and not Conversation.objects.exists()
