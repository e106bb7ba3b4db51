#!/usr/bin/env python3
"""Benchmark of the Multipass test double: wall time of each lifecycle command, printed, never asserted.

Usage: bench_double.py [--runs N] [--execs M]   (uses MULTIPASS_BIN, default: the double in this repo)
Prints one line per command: ``<command>  n=<count>  median=<s>  min=<s>  max=<s>``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

DEFAULT_BIN = Path(__file__).resolve().parent / "bin" / "multipass"


def timed(binary: str, *args: str) -> float:
    start = time.monotonic()
    proc = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"`multipass {' '.join(args)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed


def report(name: str, samples: list[float]) -> str:
    return (
        f"{name:<10} n={len(samples):<3} median={statistics.median(samples):.3f}s "
        f"min={min(samples):.3f}s max={max(samples):.3f}s"
    )


def run(binary: str, runs: int, execs: int) -> list[str]:
    samples: dict[str, list[float]] = {k: [] for k in ("launch", "exec", "stop", "start", "clone", "delete")}
    for _ in range(runs):
        name = f"bench-{uuid.uuid4().hex[:6]}"
        clone = f"{name}-c"
        try:
            samples["launch"].append(timed(binary, "launch", "--name", name))
            samples["exec"] += [timed(binary, "exec", name, "--", "true") for _ in range(execs)]
            samples["stop"].append(timed(binary, "stop", name))
            samples["clone"].append(timed(binary, "clone", name, "--name", clone))
            samples["start"].append(timed(binary, "start", clone))
            samples["delete"].append(timed(binary, "delete", "--purge", name, clone))
        finally:
            subprocess.run([binary, "delete", "--purge", name, clone], capture_output=True, check=False)
    return [report(k, v) for k, v in samples.items() if v]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--execs", type=int, default=10)
    args = parser.parse_args(argv)
    binary = os.environ.get("MULTIPASS_BIN") or str(DEFAULT_BIN)
    print(f"Multipass double benchmark: {binary}, {args.runs} run(s), {os.cpu_count()} CPUs")
    for line in run(binary, args.runs, args.execs):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
