"""Runs on several devices of one host (DDP through torchrun), on the CPU with 2 processes (gloo): a cancel stops
every rank at one step with a checkpoint; a rank that raises fails the run with its own error."""

from __future__ import annotations

import pytest

from projects.trainer.events import EXIT_CANCELLED, EXIT_OK
from projects.trainer.outputs import MANIFEST_NAME
from tests.multi_device_helpers import child


@pytest.mark.slow
def test_a_cancelled_two_process_run_stops_every_rank_at_one_step_with_a_checkpoint(trainer_inputs):
    code, error, events, outcome = child(
        trainer_inputs, "cancelled", 2, cancel_at=2, batch_size=2, max_steps=2000, save_steps=1000
    )
    assert (code, error) == (EXIT_CANCELLED, None), outcome.tail[-3000:]
    cancelled = [e for e in events if e["event"] == "cancelled"]
    assert len(cancelled) == 1 and cancelled[0]["step"] >= 2
    step = cancelled[0]["step"]
    assert (trainer_inputs / "cancelled" / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert not (trainer_inputs / "cancelled" / MANIFEST_NAME).exists()


@pytest.mark.slow
def test_a_rank_that_raises_fails_the_run_with_its_own_error_not_its_peers_lost_connection(trainer_inputs):
    code, error, events, outcome = child(
        trainer_inputs,
        "raises",
        2,
        {"MTM_FAULT_RAISE_AT_STEP": "2", "MTM_FAULT_RANK": "1"},
        batch_size=2,
        max_steps=50,
    )
    assert code != EXIT_OK and outcome.returncode != EXIT_OK
    assert error["rank"] == 1, outcome.errors
    assert error["message"].startswith("Rank 1 of 2: Training crashed: RuntimeError: Injected fault at step 2")
    assert not any(e["event"] == "finished" for e in events)
