#!/usr/bin/env python3
"""`make test` / `make test-unit`: the suite through pytest, with the settings the suite needs.

- `make test`: everything, in parallel (pytest-xdist, `--dist loadfile`: the tests of one module run on one
  worker, in order, so a module-scoped fixture (whole runs, a service, an instance) is made once; `loadgroup`
  cannot be used with pytest 9.2, whose node ids no longer take xdist 3.8's group suffix), the 25 slowest
  tests listed at the end, and a last line saying how many real-instance tests of the Multipass double ran.
  Where the double cannot run (not root, no systemd-nspawn), its tests fail with the reason instead of being
  skipped.
- `make test-unit`: only what needs no root and no double (`-m "not double"`), in one process.
Extra pytest arguments: PYTEST_ADDOPTS (pytest's own variable). Workers: AGENTVM_TEST_WORKERS (default:
the CPU count, at least 2).
"""

from __future__ import annotations

import os
import sys

MIN_WORKERS = 2


def workers() -> str:
    raw = os.environ.get("AGENTVM_TEST_WORKERS", "")
    if raw:
        if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
            print(f"run_tests: AGENTVM_TEST_WORKERS must be a positive whole number, got {raw!r}", file=sys.stderr)
            raise SystemExit(2)
        return raw
    return str(max(MIN_WORKERS, os.cpu_count() or 1))


def main(argv: list[str]) -> int:
    if argv == ["--unit"]:
        os.environ["AGENTVM_UNIT_ONLY"] = "1"
        args = ["-m", "not double", "-p", "no:xdist"]
    else:
        args = ["-n", workers(), "--dist", "loadfile", "--durations=25"]
    os.execv(sys.executable, [sys.executable, "-m", "pytest", *args])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
