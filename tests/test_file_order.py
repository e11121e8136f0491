"""The order in which the test files run (tests/file_order.py): the longest first by the last times recorded, a
file never timed first if it holds a slow test and last if not, each file's tests together and in their order."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.file_order import longest_files_first


@dataclass
class Collected:
    """What longest_files_first reads of a collected test: its node id and its slow mark."""

    nodeid: str
    slow: bool = False

    def get_closest_marker(self, name: str):
        return pytest.mark.slow.mark if name == "slow" and self.slow else None


def files(items: list[Collected]) -> list[str]:
    order: list[str] = []
    for item in items:
        path = item.nodeid.split("::")[0]
        if not order or order[-1] != path:
            order.append(path)
    return order


def test_the_longest_file_runs_first_and_an_untimed_slow_file_before_it():
    items = [
        Collected("tests/test_a.py::test_one"),
        Collected("tests/test_b.py::test_one"),
        Collected("tests/test_b.py::test_two"),
        Collected("tests/test_c.py::test_one", slow=True),
        Collected("tests/test_d.py::test_one"),
        Collected("tests/test_e.py::test_one", slow=True),
    ]
    recorded = {"tests/test_a.py": 1.0, "tests/test_b.py": 90.0, "tests/test_e.py": 30.0}
    longest_files_first(items, recorded)  # test_d.py was never timed and holds no slow test
    assert files(items) == [
        "tests/test_c.py",
        "tests/test_b.py",
        "tests/test_e.py",
        "tests/test_a.py",
        "tests/test_d.py",
    ]
    assert [item.nodeid for item in items][1:3] == ["tests/test_b.py::test_one", "tests/test_b.py::test_two"]


def test_files_of_equal_times_keep_their_collection_order():
    items = [
        Collected("tests/test_z.py::t"),
        Collected("tests/test_y.py::t", slow=True),
        Collected("tests/test_x.py::t"),
    ]
    longest_files_first(items, {})
    assert files(items) == ["tests/test_y.py", "tests/test_z.py", "tests/test_x.py"]
