"""What accelerators this process sees: `python -m workers.probe` prints them as JSON (no Django).

nvidia-ml-py is asked first (it reads the driver and creates no CUDA context); without it torch is, in this short
child process only, so a Celery worker never initialises CUDA in a process that later forks its pool.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def _visible_indexes(count: int) -> list[int]:
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return list(range(count))
    picked = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        if not part.isdigit():
            return []  # UUIDs or MIG names: leave them to torch
        picked.append(int(part))
    return [i for i in picked if i < count]


def probe_nvml() -> dict[str, Any] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        devices = []
        for own_index, physical in enumerate(_visible_indexes(pynvml.nvmlDeviceGetCount())):
            handle = pynvml.nvmlDeviceGetHandleByIndex(physical)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            major, _ = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            devices.append(
                {
                    "index": own_index,
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "total_bytes": int(memory.total),
                    "free_bytes": int(memory.free),
                    "bf16": major >= 8,
                }
            )
        version = pynvml.nvmlSystemGetCudaDriverVersion()
        return {"source": "nvml", "cuda": f"{version // 1000}.{version % 1000 // 10}", "devices": devices}
    finally:
        pynvml.nvmlShutdown()


def probe_torch() -> dict[str, Any]:
    import torch

    devices = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            props = torch.cuda.get_device_properties(index)
            devices.append(
                {
                    "index": index,
                    "name": props.name,
                    "total_bytes": int(total),
                    "free_bytes": int(free),
                    "bf16": props.major >= 8,
                }
            )
    return {"source": "torch", "cuda": torch.version.cuda or "", "devices": devices}


def probe() -> dict[str, Any]:
    return probe_nvml() or probe_torch()


def probe_in_child(timeout: float = 120.0) -> dict[str, Any]:
    """The probe in a child process with this process's environment (CUDA_VISIBLE_DEVICES included)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return {"source": "none", "cuda": "", "devices": []}  # a CPU worker: nothing to ask
    try:
        done = subprocess.run(
            [sys.executable, "-m", "workers.probe"], capture_output=True, text=True, timeout=timeout, check=True
        )
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as exc:
        return {"source": "failed", "cuda": "", "devices": [], "error": f"{type(exc).__name__}: {exc}"}


if __name__ == "__main__":
    print(json.dumps(probe()))
