"""For the tests of runs on several devices of one host (DDP through torchrun, on the CPU with 2 processes): the
trainer as the pipeline starts it, projects asking for several devices, and the processes of their ranks."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil

from projects.runs.supervisor import Supervision, supervise
from projects.trainer.events import trainer_command
from projects.trainer.ranks import launcher_outcome
from projects.trainer.spec import TrainerSpec, write_spec
from tests.pipeline_helpers import make_project
from workers.models import Worker

REPO = Path(__file__).resolve().parent.parent
MODEL = "test-org/tiny-llama"
ROWS = [{"prompt": f"Question {i}: what is {i} plus {i}? Answer:", "completion": f" {2 * i}."} for i in range(32)]


def child(tmp: Path, name: str, devices: int, extra_env: dict[str, str] | None = None, cancel_at=0, **hyper):
    """Run the trainer as the pipeline starts it (torchrun for several devices) and follow it with the supervisor."""
    model, data = tmp / "model", tmp / "data.jsonl"
    spec = TrainerSpec(
        model_path=model,
        model_name=MODEL,
        revision="0" * 40,
        dataset_path=data,
        output_dir=tmp / name,
        method="full",
        hyperparameters={
            "max_steps": 3,
            "learning_rate": 0.01,
            "logging_steps": 1,
            "save_steps": 1000,
            "max_seq_length": 64,
            "precision": "fp32",
            "devices": devices,
            **hyper,
        },
        device="cpu",
        cancel_file=tmp / f"{name}.cancel",
    )
    spec_path = write_spec(spec, tmp / f"{name}.json")
    events: list[dict] = []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "MTM_TORCH_THREADS": "2"}
    outcome = supervise(
        trainer_command(spec_path, sys.executable, devices),
        cwd=REPO,
        env={**env, **(extra_env or {})},
        cancel_file=tmp / f"{name}.cancel",
        log_path=tmp / f"{name}.log",
        sup=Supervision(
            on_event=events.append,
            should_cancel=lambda: bool(cancel_at) and any(e.get("step", 0) >= cancel_at for e in events),
            tick_seconds=0.5,
        ),
    )
    code, error = launcher_outcome(
        outcome.returncode, outcome.cancelled is not None, outcome.errors, outcome.tail, devices
    )
    return code, error, events, outcome


def project(root, owner, name, hyper=None):
    """A full fine-tune of `owner`'s on 2 devices, batch 2 on each, unless `hyper` says otherwise."""
    portal = {"root": root, "user": owner}
    return make_project(portal, MODEL, name=name, hyper={"devices": 2, "batch_size": 2, **(hyper or {})})


def wait_for_report(processes: int) -> Worker:
    """The first live worker that reported owning `processes` CPU processes (within 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if worker := Worker.objects.filter(cpu_processes=processes, stopped_at__isnull=True).first():
            return worker
        time.sleep(0.2)
    raise AssertionError(f"no worker reported owning {processes} processes")


def ranks_of(run, worker) -> list[psutil.Process]:
    """The rank processes of `run` on `worker` (a spec path in that worker's own var/: another test session may have
    a run with the same id)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if cmd.endswith(f"{worker.var_dir}/runs/{run.pk}/spec.json") and env_of(proc).get("RANK") in ("0", "1"):
            found.append(proc)
    return found


def env_of(proc: psutil.Process) -> dict[str, str]:
    """The environment of `proc`, empty once it is gone."""
    try:
        return proc.environ()
    except psutil.Error:
        return {}
