"""The queues a training worker consumes, from what it owns: its own queue (a run sent to it by name), the shared
`training` queue, and capacity queues by device count and memory, so a run is sent where it fits and Celery
hands it to the first free worker able to host it."""

from __future__ import annotations

import re

TRAINING_QUEUE = "training"
CPU_QUEUE = "cpu"
# Memory tiers in GiB: a worker whose smallest device has M GiB consumes the tiers up to M.
MEMORY_TIERS_GIB = (4, 8, 12, 16, 24, 32, 40, 48, 64, 80, 96, 141, 192)
GIB = 1024**3


def own_queue(worker_name: str) -> str:
    """The queue only this worker consumes. Celery's worker names hold "@" (cpu@host), which the embedded broker
    (kombu's filesystem transport, `make run`) refuses in a queue name: every character beyond letters, digits, "."
    and "-" is written as "_" and its code point in hex, "_" included, so two names never share a queue."""
    return "worker." + re.sub(r"[^A-Za-z0-9.-]", lambda found: f"_{ord(found.group()):x}_", worker_name)


def capacity_queue(device_count: int, tier_gib: int) -> str:
    return f"gpus{device_count}.{tier_gib}g"


def capacity_queues(device_count: int, smallest_device_bytes: int) -> list[str]:
    if device_count < 1:
        return [CPU_QUEUE]
    return [capacity_queue(device_count, tier) for tier in MEMORY_TIERS_GIB if tier * GIB <= smallest_device_bytes]


def devices_queue(count: int) -> str:
    """Runs on `count` devices of one host (DDP) wait here; a worker owning M devices consumes devices2..devicesM."""
    return f"devices{count}"


def tier_for(need_bytes: int) -> int | None:
    """The smallest tier that holds `need_bytes`, or None when it is beyond every tier."""
    return next((tier for tier in MEMORY_TIERS_GIB if tier * GIB >= need_bytes), None)


def worker_queues(worker_name: str, device_count: int, smallest_device_bytes: int, cpu_processes: int = 1) -> list[str]:
    owned = device_count or cpu_processes
    multi = [devices_queue(n) for n in range(2, owned + 1)]
    return [own_queue(worker_name), TRAINING_QUEUE, *capacity_queues(device_count, smallest_device_bytes), *multi]


# Playground generations: consumed by inference workers (`runworker --inference`), never by a training worker.
INFERENCE_QUEUE = "inference"


def inference_worker_queues(worker_name: str) -> list[str]:
    return [own_queue(worker_name), INFERENCE_QUEUE]


# What each queue brings, the one table the GPUs page describes a worker from. The plain workers' queues are named
# in mtm/settings.py (CELERY_TASK_ROUTES, CELERY_TASK_DEFAULT_QUEUE); a test keeps this table in step with them.
CHECKS_QUEUE = "checks"
COUNTS_QUEUE = "counts"
PERIODIC_QUEUE = "default"
TRAINING_RUNS = "takes training runs"
QUEUE_DUTIES = {
    TRAINING_QUEUE: TRAINING_RUNS,
    CPU_QUEUE: TRAINING_RUNS,
    CHECKS_QUEUE: "runs model checks (transformers' check of a model, and their background fill)",
    COUNTS_QUEUE: "counts dataset tokens (the counts a dataset check waits for)",
    PERIODIC_QUEUE: "runs the periodic jobs (failing lost runs and generations, upload cleanup)",
    INFERENCE_QUEUE: "answers the playground",
}
# Capacity and device-count queues bring runs too (a run sent where it fits).
RUN_QUEUE_PATTERN = re.compile(r"gpus\d+\.\d+g|devices\d+")


def queue_duty(queue: str) -> str | None:
    """What the queue `queue` brings its worker, or None for a worker's own queue and a queue the portal sends nothing
    to."""
    if queue in QUEUE_DUTIES:
        return QUEUE_DUTIES[queue]
    return TRAINING_RUNS if RUN_QUEUE_PATTERN.fullmatch(queue) else None


def worker_duties(queues: list[str]) -> list[str]:
    """What a worker consuming `queues` does, each once, in QUEUE_DUTIES' order ("takes training runs" first)."""
    found = {duty for queue in queues if (duty := queue_duty(queue))}
    order = list(dict.fromkeys(QUEUE_DUTIES.values()))
    return sorted(found, key=order.index)


def run_queues(worker_name: str, queues: list[str], default_queue: str = PERIODIC_QUEUE) -> list[str]:
    """Those of a worker's `queues` that bring training runs: the training, CPU, capacity and device-count queues
    and, for a worker that takes runs, its own queue (a run sent to it by name). Not the checks, counts or periodic
    jobs' queues, nor the playground's. Draining a worker stops these: only a worker with some takes runs."""
    brings_runs = [q for q in queues if q != default_queue and queue_duty(q) == TRAINING_RUNS]
    if not brings_runs:
        return []
    mine = own_queue(worker_name)
    return [queue for queue in queues if queue in brings_runs or queue == mine]
