"""A run on N devices of one host: the trainer started N times by torchrun (DDP; gloo on the CPU, NCCL on GPUs).

`python -m torch.distributed.run --standalone --nproc_per_node N -m projects.trainer SPEC.json` starts one process
per device (a rank); the Hugging Face Trainer sees RANK/WORLD_SIZE/LOCAL_RANK and wraps the model in DDP. Here:
- only rank 0 speaks (events) and writes (the final model, the manifest; the Trainer saves checkpoints on rank 0
  only); every rank reports its own error, tagged with its rank, so a rank that dies fails the run with its error;
- a cancel request (the cancel file or SIGTERM) seen by any rank stops every rank at the same step, and the
  reported tokens per second count every rank's tokens;
- a rank dies with torchrun (and so with the worker): each asks the kernel for SIGKILL when its parent dies;
- the supervisor's view of the launcher: a cancelled run exits 3 even though torchrun says 1, and a rank killed by a
  signal (no error event of its own) is named from torchrun's failure summary.

No Django; torch is imported only where it is needed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from projects.trainer.errors import EXIT_CANCELLED
from workers.devices import CPU_PROCESSES_ENV

FAULT_RANK_ENV = "MTM_FAULT_RANK"  # with MTM_FAULT_RAISE_AT_STEP: only this rank raises (fault tests, rehearsals)
_PR_SET_PDEATHSIG = 1


def world_size() -> int:
    return _env_int("WORLD_SIZE", 1)


def rank() -> int:
    return _env_int("RANK", 0)


def is_main() -> bool:
    return rank() == 0


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def launch_command(spec_path: str | Path, devices: int, python: str | None = None) -> list[str]:
    """The argv that starts the trainer on `devices` devices (one process when 1)."""
    python = python or sys.executable
    if devices <= 1:
        return [python, "-m", "projects.trainer", str(spec_path)]
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(devices),
        "-m",
        "projects.trainer",
        str(spec_path),
    ]


def owned_devices() -> int | None:
    """How many devices this worker owns, from what runworker set: --cpu --processes N (MTM_CPU_PROCESSES), or the
    GPUs of --gpus (CUDA_VISIBLE_DEVICES). A CPU worker without --processes owns one; None when unknown (a plain
    Celery worker on a GPU host sees every GPU: torch decides)."""
    raw = os.environ.get(CPU_PROCESSES_ENV, "").strip()
    if raw.isdigit() and int(raw) >= 1:
        return int(raw)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return None
    return max(1, len([p for p in visible.split(",") if p.strip()]))


def speaks(kind: str) -> bool:
    """Rank 0 reports everything; the other ranks only their own errors."""
    return is_main() or kind == "error"


def tag_error(fields: dict[str, Any]) -> dict[str, Any]:
    """An error of one rank of several says which rank it was."""
    if world_size() <= 1:
        return fields
    tagged = dict(fields, rank=rank())
    tagged["message"] = f"Rank {rank()} of {world_size()}: {fields.get('message', '')}"
    return tagged


def tie_to_launcher() -> None:
    """A rank dies when torchrun dies (torchrun starts each rank in a session of its own, so a signal to the
    worker's process group does not reach it; the kernel's parent-death signal does)."""
    if world_size() <= 1 or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() == 1:  # torchrun died before the request was made
        os._exit(1)


def leave() -> None:
    """Tear this rank's process group down before the interpreter exits. Left to the exit handlers, gloo's threads
    can abort a rank that finished well ("terminate called without an active exception", SIGABRT), and torchrun
    then fails the whole run."""
    if world_size() <= 1:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def faults_here() -> bool:
    """Whether the injected fault (MTM_FAULT_RAISE_AT_STEP) applies to this rank."""
    wanted = os.environ.get(FAULT_RANK_ENV, "").strip()
    return not wanted or wanted == str(rank())


def threads_share(threads: int) -> int:
    """CPU threads per rank: the worker's threads shared out, so N ranks use what one process would."""
    return max(1, threads // max(1, world_size()))


def device_label(label: str) -> str:
    return label if world_size() <= 1 else f"{world_size()} × {label} (DDP)"


def rank_sync_callback(reporter: Any, local_tokens: Callable[[], int]) -> Any:
    """A Trainer callback, added before the reporter, that makes every rank agree once per optimizer step (one small
    all-reduce): a cancel request (the cancel file or SIGTERM) seen by any rank stops every rank at this step (one
    rank stopping alone would leave the others waiting forever in their next all-reduce), and the reporter counts
    the real tokens of all ranks, not only rank 0's."""
    import torch
    import torch.distributed as dist
    from transformers import TrainerCallback

    cancel_file, reporter.cancel_file = reporter.cancel_file, None  # read here only, by every rank at the same step

    class RankSync(TrainerCallback):
        total_tokens = 0
        cancel_requested = False  # set by this rank's SIGTERM handler; the reporter's flag is set here only

        def on_step_end(self, args, state, control, **kwargs):
            if not (dist.is_available() and dist.is_initialized()):
                self.total_tokens = local_tokens()
                return control
            asked = self.cancel_requested or reporter.cancel_requested
            asked = asked or bool(cancel_file and os.path.exists(cancel_file))
            both = torch.tensor([int(asked), local_tokens()], dtype=torch.int64, device=args.device)
            dist.all_reduce(both, op=dist.ReduceOp.SUM)
            self.total_tokens = int(both[1].item())
            reporter.cancel_requested = bool(both[0].item())
            return control

    sync = RankSync()
    reporter.real_tokens = lambda: sync.total_tokens
    return sync


# -- the supervisor's side ---------------------------------------------------------------------------------------

_ROOT_CAUSE = re.compile(
    r"Root Cause \(first observed failure\):.*?rank\s*:\s*(?P<rank>\d+)\s*\(local_rank:[^\n]*\n"
    r"\s*exitcode\s*:\s*(?P<code>-?\d+)",
    re.DOTALL,
)


def root_cause(log_text: str) -> tuple[int, int] | None:
    """(rank, exit code) of the first failure torchrun observed, from the summary it prints when a rank fails; a
    negative code is the signal that killed it. None when there is no summary."""
    found = list(_ROOT_CAUSE.finditer(log_text))
    return (int(found[-1].group("rank")), int(found[-1].group("code"))) if found else None


def launcher_outcome(
    returncode: int, cancelled: bool, errors: list[dict[str, Any]], log_text: str, devices: int
) -> tuple[int, dict[str, Any] | None]:
    """The exit code and the error a run on `devices` devices ends with, read from what torchrun and the ranks
    said. One process: as it said. Several: a cancel that every rank obeyed is a cancel (torchrun reports any
    non-zero exit as 1); otherwise the rank torchrun names as the root cause is the cause (its peers fail after it,
    with a lost connection, and torchrun then stops them): its own error, or the signal that killed it. Without a
    summary, the first rank to report an error."""
    if devices <= 1:
        return returncode, errors[-1] if errors else None
    if returncode != 0 and cancelled and not errors:
        return EXIT_CANCELLED, None
    cause = root_cause(log_text) if returncode != 0 else None
    if cause is not None:
        dead_rank, code = cause
        own = [e for e in errors if e.get("rank") == dead_rank]
        if own:
            return returncode, own[0]
        if code < 0:
            name = _signal_name(-code)
            why = " (usually the kernel's out-of-memory killer)" if -code == signal.SIGKILL else ""
            return returncode, {
                "code": "trainer_killed",
                "message": f"Rank {dead_rank} of {devices} was killed by {name}{why}; the other ranks stopped with it.",
                "hint": "Lower batch_size or max_seq_length, or train with LoRA; then resume from the latest "
                "checkpoint.",
                "rank": dead_rank,
            }
    return returncode, errors[0] if errors else None


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
