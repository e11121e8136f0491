"""Where and in which precision the child trains, and how many CPU threads torch may use."""

from __future__ import annotations

import os
from dataclasses import dataclass

from projects.trainer.errors import TrainerError

THREADS_ENV = "MTM_TORCH_THREADS"


@dataclass(frozen=True)
class Placement:
    use_cpu: bool
    label: str  # "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3)"
    precision: str  # effective: "bf16" | "fp16" | "fp32"


def cpu_threads() -> int:
    """MTM_TORCH_THREADS when set, else the CPUs this process may run on (not the machine's total)."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw:
        try:
            return max(1, int(raw))
        except ValueError:
            raise TrainerError(
                "invalid_environment",
                f"{THREADS_ENV}={raw!r} is not a whole number.",
                f"Set {THREADS_ENV} to the number of CPU threads the trainer may use, or unset it.",
            )
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def configure_threads(per_rank: bool = False) -> int:
    """Set torch's threads; `per_rank` (on the CPU): this process's share when the run spans several processes."""
    import torch

    from projects.trainer.ranks import threads_share

    threads = threads_share(cpu_threads()) if per_rank else cpu_threads()
    torch.set_num_threads(threads)
    return threads


def choose_placement(device: str, precision: str) -> Placement:
    """`device` is the spec's auto|cpu|cuda, `precision` the hyperparameter auto|bf16|fp16|fp32."""
    import torch

    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise TrainerError(
            "device_unavailable",
            "The spec asks for a CUDA GPU but torch sees none on this worker.",
            "Run the training queue on a GPU worker, or let the device be chosen automatically.",
        )
    on_cuda = has_cuda and device != "cpu"
    if not on_cuda:
        if precision == "fp16":
            raise TrainerError(
                "invalid_hyperparameter",
                "Hyperparameter 'precision' = 'fp16' needs a CUDA GPU, and this run trains on the CPU.",
                "Set precision to auto (fp32 on a CPU) or bf16, or run on a GPU worker.",
            )
        return Placement(True, "cpu", "bf16" if precision == "bf16" else "fp32")
    index = torch.cuda.current_device()
    label = f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    bf16_ok = torch.cuda.is_bf16_supported()
    if precision == "bf16" and not bf16_ok:
        raise TrainerError(
            "invalid_hyperparameter",
            f"Hyperparameter 'precision' = 'bf16' is not supported by {label}.",
            "Set precision to auto (fp16 on this card) or fp16.",
        )
    if precision == "auto":
        precision = "bf16" if bf16_ok else "fp16"
    return Placement(False, label, precision)
