"""Runs the double's benchmark at small size: it must complete and print a figure per command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.double
SCRIPT = Path(__file__).resolve().parents[1] / "bench_double.py"


def test_benchmark_prints_a_figure_per_command(double_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--runs", "1", "--execs", "3"],
        capture_output=True,
        text=True,
        env=double_env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    with capsys.disabled():  # the figures go to the terminal (and CI's log) on every run
        print("\n" + proc.stdout)
    for command in ("launch", "exec", "stop", "clone", "start", "delete"):
        assert re.search(rf"^{command}\s+n=\d+\s+median=\d+\.\d+s min=\d+\.\d+s max=\d+\.\d+s$", proc.stdout, re.M), (
            command
        )
