"""Runs scripts/bench_connection.py at tiny size and checks that it printed its figures (times are not asserted)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from it_helpers import REPO

pytestmark = [pytest.mark.double, pytest.mark.slow]


def test_benchmark_prints_figures(double_env, instance):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "bench_connection.py"),
            "--instance",
            instance,
            "--tasks",
            "1",
            "--repeat",
            "1",
        ],
        env=double_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"raw `multipass exec -- true`: \d+ ms", proc.stdout), proc.stdout
    for scenario in ("local", "multipass pipelining=on", "multipass pipelining=off"):
        assert re.search(rf"^{re.escape(scenario)}\s+[\d.]+\s+[\d.]+\s+-?\d+\s+[+-]\d+$", proc.stdout, re.M), (
            proc.stdout
        )
