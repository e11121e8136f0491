"""Who else holds a worker's device memory besides the run it trains: the apps above the fleet that load models onto
workers (the playground) register here in their AppConfig.ready(), so that scheduling and the GPUs page count that
memory without importing them.

A holder is two functions: what it holds per physical device, keyed by (host, the device's index on its host:
workers.devices.physical_index), CPU memory left out; and everything it holds per worker name. Each thing held has
at least `label` (what it is) and `bytes` (how much memory it takes); the GPUs page shows `device` and
`last_used_at` too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DeviceKey = tuple[str, str]  # (host, physical device index)


@dataclass(frozen=True)
class Holder:
    by_device: Callable[[], Mapping[DeviceKey, Sequence[Any]]]
    by_worker: Callable[[], Mapping[str, Sequence[Any]]]


_holders: list[Holder] = []


def register(
    by_device: Callable[[], Mapping[DeviceKey, Sequence[Any]]], by_worker: Callable[[], Mapping[str, Sequence[Any]]]
) -> None:
    """Add a holder (once: ready() may run again in a test's app registry reload)."""
    holder = Holder(by_device, by_worker)
    if holder not in _holders:
        _holders.append(holder)


def held_by_device() -> dict[DeviceKey, list[Any]]:
    """Everything the registered holders hold, per (host, physical device index)."""
    found: dict[DeviceKey, list[Any]] = defaultdict(list)
    for holder in _holders:
        for key, held in holder.by_device().items():
            found[key].extend(held)
    return found


def held_by_worker() -> dict[str, list[Any]]:
    """Everything the registered holders hold, per worker name."""
    found: dict[str, list[Any]] = defaultdict(list)
    for holder in _holders:
        for name, held in holder.by_worker().items():
            found[name].extend(held)
    return found
