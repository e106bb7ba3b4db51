"""The run's ``profile`` (result.json): where the time went, on the host's monotonic clock."""

from __future__ import annotations

import pytest

from agentvm.run.assemble import profile


def task(name: str, start: float, end: float | None) -> dict:
    return {"task": name, "uuid": name, "start": start, "end": end}


CASES = {
    "full run": (
        {"validate": 0.1234, "queue": 0.0, "collect": 0.05, "run_start": 100.0, "runner_start": 100.4},
        [task("[clone] a", 101.0, 103.5), task("[agent] b", 103.6, 104.0)],
        104.3,
        {"validate": 0.123, "queue": 0.0, "collect": 0.05, "prepare": 0.4, "runner_startup": 0.6,
         "runner_shutdown": 0.3,
         "tasks": [{"task": "[clone] a", "seconds": 2.5, "at": 1.0}, {"task": "[agent] b", "seconds": 0.4, "at": 3.6}]},
    ),
    "an unfinished task is left out; no playbook end, no shutdown": (
        {"run_start": 10.0, "runner_start": 11.0},
        [task("[clone] a", 12.0, 13.0), task("[start] b", 13.0, None)],
        None,
        {"prepare": 1.0, "runner_startup": 1.0, "tasks": [{"task": "[clone] a", "seconds": 1.0, "at": 2.0}]},
    ),
    "no run start: no prepare and no at": (
        {"runner_start": 5.0},
        [task("[clone] a", 6.0, 7.0)],
        7.5,
        {"runner_startup": 1.0, "runner_shutdown": 0.5, "tasks": [{"task": "[clone] a", "seconds": 1.0}]},
    ),
    "the playbook never started": ({"validate": 0.2, "run_start": 1.0}, [], None, {"validate": 0.2, "tasks": []}),
}  # fmt: skip


@pytest.mark.parametrize(("marks", "tasks", "end", "expected"), CASES.values(), ids=CASES.keys())
def test_profile(marks, tasks, end, expected):
    assert profile(marks, tasks, end) == expected
