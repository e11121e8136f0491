"""Building on a result for real: a LoRA run trained by a real worker (the session's, tests.trained_runs.LORA,
copied as alice's) is published under a name, its adapter downloads as a .tar.gz of the files on disk, and another
member's project trains and validates on the published model (resolved from the portal) through a real worker.
Steps are kept to two for that run."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from projects.models import RunStatus, TrainingRun
from tests.api_client import call, make_user_token
from tests.pipeline_helpers import FAST_HYPERPARAMETERS, QA_ROWS, wait_for_end, write_jsonl
from tests.trained_runs import copy_trained_run

pytestmark = pytest.mark.slow
TWO_STEPS = {**FAST_HYPERPARAMETERS, "max_steps": 2, "save_steps": 100, "max_seq_length": 32}


def project_body(root: Path, name: str, model_name: str, method: str) -> dict:
    return {
        "name": name,
        "model_name": model_name,
        "dataset_path": str(root / "datasets" / "qa24.jsonl"),
        "output_directory": str(root / "outputs" / name),
        "method": method,
        "hyperparameters": TWO_STEPS,
        "validation_prompt": "Say hello:",
    }


def train(client, token: str, project_id: int) -> TrainingRun:
    started = call(client, "post", f"/projects/{project_id}/runs", {}, token)
    assert started.status_code == 201, started.content
    run = wait_for_end(started.json()["id"])
    assert run.status == RunStatus.SUCCEEDED, (run.error_code, run.error_message, run.log_tail[-3000:])
    return run


def test_a_published_model_is_the_base_of_another_members_project(
    portal_roots, tiny_llama_in_cache, transactional_db, trained_lora_run, celery_worker, client
):
    write_jsonl(portal_roots / "datasets" / "qa24.jsonl", QA_ROWS * 8)
    owner, alice = make_user_token("alice")
    _, bob = make_user_token("bob")
    first = copy_trained_run(trained_lora_run, owner, portal_roots)  # a LoRA run merged after training
    assert first.status == RunStatus.SUCCEEDED and first.config["hyperparameters"]["merge_after_training"] is True

    published = call(client, "post", f"/runs/{first.pk}/publish", {"model_name": "team/support-bot-v2"}, alice)
    assert published.status_code == 201, published.content
    body = published.json()
    assert body["path"] == str(Path(first.run_folder) / "merged") and body["method"] == "lora"
    assert body["base_model"] == tiny_llama_in_cache[0] and body["base_revision"] == first.resolved_revision
    assert body["dataset_sha256"] == first.config["dataset_sha256"] and body["validation"]["valid"] is True

    # The adapter, as it lies on disk, for any member; the merged model and checkpoints stay out.
    resp = call(client, "get", f"/runs/{first.pk}/adapter.tar.gz", None, bob)
    assert resp.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(b"".join(resp.streaming_content)), mode="r:gz") as tar:
        files = {Path(m.name).name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    folder = Path(first.run_folder)
    on_disk = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert files == on_disk
    assert {"adapter_config.json", "adapter_model.safetensors", "mtm_manifest.json"} <= set(files)

    second = call(client, "post", "/projects", project_body(portal_roots, "on-top", "team/support-bot-v2", "full"), bob)
    assert second.status_code == 201, second.content
    built = train(client, bob, second.json()["id"])
    assert (built.resolved_source, built.resolved_path) == ("portal", body["path"])
    assert built.validation["passed"] is True
    assert Path(built.run_folder, "model.safetensors").is_file()

    # Unpublishing stops the name resolving for new runs, at Start, whatever the worker's last report listed; the
    # first run's files stay.
    assert call(client, "delete", f"/published-models/{body['id']}", None, alice).status_code == 204
    assert Path(body["path"], "config.json").is_file()
    again = call(client, "post", f"/projects/{second.json()['id']}/runs", {}, bob)
    assert again.status_code == 422, again.content
    [error] = again.json()["errors"]
    assert error["code"] == "model_not_found" and "was unpublished by alice" in error["message"]
    assert not TrainingRun.objects.filter(project_id=second.json()["id"]).exclude(pk=built.pk).exists()
