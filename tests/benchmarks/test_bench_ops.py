"""Runs `make bench`'s script at the smallest size: it must complete and print every section's table (the
figures themselves are printed, never asserted)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.double

SMALLEST = {"BENCH_RUNS": "1", "BENCH_BATCHES": "1,2", "BENCH_CAPS": "2", "BENCH_LATENCY": "", "BENCH_PROXY_N": "20"}
N = r"\d+\.\d\d"
SECTIONS = {
    "(a) overhead and the shell baseline": r"^\(a\) overhead \d+(\.\d+)? s, shell \d+(\.\d+)? s, ratio \d+(\.\d+)?x$",
    "(b) the per-phase breakdown": rf"^\(b\) agentvm's own overhead by phase .*\n(.*\n)*?\s+ansible-runner .* {N}$",
    "(b) each task": rf"^\(b\)\s+\.\.\. each task\n(.*\n)*?\s+\[agent\] .* {N}$",
    "(c) prompt -> agent, without and with a pool": rf"^\(c\) prompt -> agent .*\n.*\n\s+no pool .* {N} .* 0/1\n"
    rf"\s+warm pool\s+{N}\s+{N}\s+1/1$",
    "(d) exec vs ssh": rf"^\(d\) connection: .*\n.*\n\s+exec .* {N}\n\s+ssh .* {N}$",
    "(e) the batch table": rf"^\(e\) batch wall time .*\n.*MAX_VMS=2\n\s+1 run\(s\)\s+{N}\n\s+2 run\(s\)\s+{N}\n"
    rf"\s+ratio 2 / 1\s+{N}x$",
    "(f) the proxy": r"^\(f\) the credential proxy's added latency\n(.*\n)*?\s+added\s+median",
}


def test_ops_benchmark_prints_every_section(double_env, capsys):
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_ops.py")],
        env={**double_env, **SMALLEST},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with capsys.disabled():  # the figures go to the terminal (and CI's log) on every run
        print("\n" + proc.stdout)
    missing = [name for name, pattern in SECTIONS.items() if not re.search(pattern, proc.stdout, re.M)]
    assert missing == [], proc.stdout
