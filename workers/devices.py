"""What a host's devices are, as the fleet and the trainer child both need it: how many one run may span, the variable
that tells a CPU worker's trainer how many processes it owns, and a device's index on its host. The trainer child
imports it, so it imports nothing of Django."""

from __future__ import annotations

MAX_DEVICES = 64  # devices of one host a run may span (torchrun --nproc_per_node)


CPU_PROCESSES_ENV = "MTM_CPU_PROCESSES"  # set by `runworker --cpu --processes N`: the "devices" a CPU worker owns


def physical_index(cuda_visible_devices: str, index: int) -> str:
    """The device's index on its host: the index-th entry of CUDA_VISIBLE_DEVICES, or the index itself."""
    parts = [p.strip() for p in (cuda_visible_devices or "").split(",") if p.strip()]
    return parts[index] if 0 <= index < len(parts) else str(index)
