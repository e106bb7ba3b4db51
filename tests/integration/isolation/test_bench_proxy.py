"""Runs scripts/bench_proxy.py at a small size: it must complete and print its figures (never judged)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO


def test_proxy_benchmark_prints_direct_proxy_and_added_figures(capsys):
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_proxy.py"), "-n", "20"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with capsys.disabled():
        print("\n" + proc.stdout)
    number = r"-?\d+\.\d{3}"
    for kind in ("direct", "proxy", "added"):
        assert len(re.findall(rf"^  {kind} +median {number} ms   p95 {number} ms$", proc.stdout, re.M)) == 3
