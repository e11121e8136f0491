"""Chat datasets trained end to end: a real worker on the real Redis broker, the real trainer on the CPU, tiny Llamas
in a temp HF cache. Nothing of ours is mocked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from projects.models import RunStatus
from tests.pipeline_helpers import FAST_HYPERPARAMETERS, make_project, start, wait_for_end, write_jsonl

pytestmark = pytest.mark.slow


def test_chat_messages_dataset(portal, tiny_llama_in_cache, celery_worker):
    rows = [{"messages": [{"role": "user", "content": "Say hello"}, {"role": "assistant", "content": "Hello world!"}]}]
    project = make_project(portal, tiny_llama_in_cache[0], rows=rows, name="chat")
    run = wait_for_end(start(project, portal["user"]).pk)
    assert run.status == RunStatus.SUCCEEDED, (run.error_message, run.log_tail[-3000:])
    # No validation prompt on the project: the dataset's first prompt, rendered with the chat template, is used.
    assert run.validation["prompt"].startswith("<|user|>\nSay hello")


def test_a_messages_file_trains_on_a_base_model_with_the_chatml_template(
    portal, hf_cache, tmp_path_factory, celery_worker
):
    from models_registry.demo import build_tiny_llama, install_into_cache
    from mtm.audit import Actor, Channel
    from projects.services import ProjectInvalid, create_project

    base = build_tiny_llama(tmp_path_factory.mktemp("base") / "model", chat_template=False)
    install_into_cache(base, hf_cache, "test-org/tiny-base")
    rows = [{"messages": [{"role": "user", "content": "Say hello"}, {"role": "assistant", "content": "Hello world!"}]}]
    data = {
        "name": "chatml",
        "model_name": "test-org/tiny-base",
        "dataset_path": str(write_jsonl(portal["root"] / "datasets" / "chat.jsonl", rows * 8)),
        "output_directory": str(portal["root"] / "outputs" / "chatml"),
        "method": "full",
        "hyperparameters": FAST_HYPERPARAMETERS,
    }
    actor = Actor(portal["user"], Channel.CLI)
    with pytest.raises(ProjectInvalid) as refused:  # the model's own template: it has none
        create_project(data, actor=actor)
    assert [p.code for p in refused.value.check.errors["dataset_path"]] == ["no_chat_template"]
    project = create_project(
        {**data, "hyperparameters": {**FAST_HYPERPARAMETERS, "chat_template": "chatml"}}, actor=actor
    )
    run = wait_for_end(start(project, portal["user"]).pk)
    assert run.status == RunStatus.SUCCEEDED, (run.error_message, run.log_tail[-3000:])
    assert run.validation["prompt"] == "<|im_start|>user\nSay hello<|im_end|>\n<|im_start|>assistant\n"
    saved = json.loads((Path(run.run_folder) / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in (saved.get("chat_template") or (Path(run.run_folder) / "chat_template.jinja").read_text())
