"""Runs `make bench`'s script at the smallest size: it must complete and print both kinds of figure."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.double


def test_ops_benchmark_prints_overhead_and_batch_figures(double_env, capsys):
    env = {**double_env, "BENCH_RUNS": "1", "BENCH_BATCHES": "2", "BENCH_CAPS": "1", "BENCH_LATENCY": ""}
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_ops.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with capsys.disabled():  # the figures go to the terminal (and CI's log) on every run
        print("\n" + proc.stdout)
    number = r"\d+(\.\d+)?"
    assert re.search(rf"^\(a\) per run .*overhead {number} s; shell script .*ratio {number}x$", proc.stdout, re.M)
    assert re.search(rf"^\(b\) batch of 2 with MAX_VMS=1: {number} s$", proc.stdout, re.M)
