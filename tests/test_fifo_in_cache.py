"""A FIFO planted in the model cache (where a config, tokenizer, weights file or ref belongs) is that model's
problem: the listing, validate-model and the models pages answer instead of waiting forever for a writer.
Real HF cache layouts with real FIFOs (os.mkfifo)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from models_registry.models import PortalSettings
from models_registry.names import repo_folder_name
from tests.api_client import call, make_user_token
from tests.clients import secure_client
from tests.hfcache import make_model_repo

GUARD_SECONDS = 60  # only so that a regression fails the suite instead of hanging it


def plant_fifo(cache: Path, name: str, rel: str) -> Path:
    """Replace `rel` of the model's repo folder (a snapshot file or refs/main) by a FIFO."""
    snapshot = make_model_repo(cache, name)
    path = cache / repo_folder_name(name) / rel if rel.startswith("refs/") else snapshot / rel
    path.unlink()
    os.mkfifo(path)
    return path


def answered(fifo: Path, ask: Callable[[], object]) -> object:
    """ask()'s answer. Should it hang on the FIFO, a writer is opened to free it and the test fails."""
    result: dict[str, object] = {}
    worker = threading.Thread(target=lambda: result.setdefault("answer", ask()), daemon=True)
    worker.start()
    worker.join(GUARD_SECONDS)
    if worker.is_alive():
        for _ in range(300):  # each blocked open of the FIFO returns once a writer opens it
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            worker.join(0.1)
            if not worker.is_alive():
                break
        pytest.fail(f"reading the model cache blocked on the FIFO {fifo}")
    assert "answer" in result, "the request raised"
    return result["answer"]


@pytest.fixture
def cache(transactional_db, hf_cache):
    row = PortalSettings.load()
    row.model_cache_path = str(hf_cache)
    row.save()
    make_model_repo(hf_cache, "org/good")
    return hf_cache


@pytest.mark.parametrize("rel", ["config.json", "tokenizer_config.json", "model.safetensors", "refs/main"])
def test_a_fifo_in_the_cache_is_that_models_problem_everywhere(cache, rel):
    fifo = plant_fifo(cache, "evil/fifo3", rel)
    user, token = make_user_token("member")
    client = secure_client(user)

    def ask() -> dict:
        listed = call(client, "get", "/projects/models/available", token=token)
        validated = call(client, "post", "/projects/validate-model", {"model_name": "evil/fifo3"}, token)
        return {
            "listed": (listed.status_code, listed.json()),
            "validated": (validated.status_code, validated.json()),
            "page": client.get("/models/"),
            "detail": client.get("/models/evil/fifo3/"),
        }

    answers = answered(fifo, ask)
    status, listed = answers["listed"]
    assert status == 200, listed
    by_name = {m["model_name"]: m for m in listed["models"]}
    assert by_name["org/good"]["valid"] is True
    status, validated = answers["validated"]
    assert status == 200, validated
    assert answers["page"].status_code == 200 and "org/good" in answers["page"].content.decode()
    assert answers["detail"].status_code == 200
    if rel == "refs/main":  # the ref is unreadable, the only snapshot is still checked (and is fine)
        assert validated["valid"] is True
        return
    assert validated["valid"] is False
    [problem] = [p for p in validated["errors"] if rel in p["message"]]
    assert "a FIFO, not a regular file" in problem["message"] and "rm " in problem["hint"], problem
    if rel == "config.json":  # the listing reads only config.json (and an index) of each model
        assert by_name["evil/fifo3"]["valid"] is False
        assert "a FIFO, not a regular file" in by_name["evil/fifo3"]["errors"][0]["message"]
