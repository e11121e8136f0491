"""A LoRA run merged after training, end to end: a real worker on the real Redis broker, the real trainer on the CPU,
the tiny Llama in a temp HF cache. Nothing of ours is mocked."""

from __future__ import annotations

from pathlib import Path

import pytest

from projects.models import RunStatus
from tests.pipeline_helpers import make_project, start, wait_for_end

pytestmark = pytest.mark.slow


def test_lora_with_merge(portal, tiny_llama_in_cache, celery_worker):
    project = make_project(
        portal,
        tiny_llama_in_cache[0],
        method="lora",
        name="lora",
        # Enough training for the adapter to answer in words: the inference test fails garbled text.
        hyper={"merge_after_training": True, "lora_r": 4, "lora_alpha": 8, "learning_rate": 0.05, "max_steps": 24},
    )
    run = wait_for_end(start(project, portal["user"]).pk)
    assert run.status == RunStatus.SUCCEEDED, (run.error_message, run.log_tail[-3000:])
    out = Path(run.run_folder)
    assert (out / "adapter_config.json").is_file() and (out / "merged" / "config.json").is_file()
    assert all(c["passed"] for c in run.validation["checks"])
