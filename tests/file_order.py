"""The order in which a session's test files run: the longest first.

bin/test spreads the files over pytest-xdist processes (--dist loadfile --no-loadscope-reorder), which take whole
files in collection order, and a pass ends when its last file does: a long file taken last runs alone while the
other processes have nothing left. So the files are sorted by the seconds their tests took the last time they ran
on the same database engine (kept in pytest's cache, .pytest_cache), longest first. A file never timed goes first
if it holds a slow test (it may be long) and last otherwise. Under pytest-xdist the controller hands the times it
read to its processes, so that every process sorts alike: they must collect the same list.

A plugin: tests/conftest.py names this module in pytest_plugins.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest

WORKER_INPUT_KEY = "mtm_file_seconds"


def _cache_key() -> str:
    from django.conf import settings

    return f"mtm/file_seconds/{settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}"


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def recorded_seconds(config: pytest.Config) -> dict[str, float]:
    """Each file's seconds the last time it ran on this database engine."""
    if hasattr(config, "workerinput"):  # a pytest-xdist process: what its controller read
        return config.workerinput.get(WORKER_INPUT_KEY, {})
    cache = getattr(config, "cache", None)  # None with -p no:cacheprovider
    return cache.get(_cache_key(), {}) if cache is not None else {}


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    node.workerinput[WORKER_INPUT_KEY] = recorded_seconds(node.config)


def longest_files_first(items: list[pytest.Item], recorded: dict[str, float]) -> None:
    """Sort `items` file by file, the file `recorded` gives most seconds first; each file's tests stay together and
    in their order."""
    slow = {_file_of(item.nodeid) for item in items if item.get_closest_marker("slow")}
    first_seen: dict[str, int] = {}
    for index, item in enumerate(items):
        first_seen.setdefault(_file_of(item.nodeid), index)

    def expected_seconds(path: str) -> float:
        return recorded.get(path, math.inf if path in slow else 0.0)

    items.sort(key=lambda item: (-expected_seconds(_file_of(item.nodeid)), first_seen[_file_of(item.nodeid)]))


class FileTimes:
    """Adds up each file's seconds (setup, call and teardown of its tests) and keeps them in the cache at the end, in
    the process that reads the cache (the controller under pytest-xdist, which gets every process's reports)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.taken: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.taken[_file_of(report.nodeid)] += report.duration

    def pytest_sessionfinish(self) -> None:
        if self.taken and getattr(self.config, "cache", None) is not None:
            kept = self.config.cache.get(_cache_key(), {})
            self.config.cache.set(_cache_key(), {**kept, **{path: round(s, 1) for path, s in self.taken.items()}})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    longest_files_first(items, recorded_seconds(config))


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(FileTimes(config), "mtm-file-times")
