"""The registry's part of a worker's report (workers.reporting.register_part, registered in this app's ready()):
which HF cache the worker reads and the valid models it holds there, so a run is sent only to a worker that holds
its model."""

from __future__ import annotations

from typing import Any

from models_registry.lookup import available_models, current_cache_dir


def report_part() -> dict[str, Any]:
    path, source = current_cache_dir()
    return {
        "hf_cache": f"{path} ({source})",
        "held_models": sorted(m.model_name for m in available_models(valid=True)[1]),
    }
