"""Operations subcommands of ``agentvm``: clean, doctor, runs, show, batch (``make clean`` etc. call them)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from agentvm import batch, doctor, history, reaper, slots
from agentvm.errors import USAGE_EXIT, UsageError
from agentvm.request import REPO, _multipass

COMMANDS = ("clean", "doctor", "runs", "show", "batch")


def _runs_dir() -> Path:
    return Path(os.environ.get("AGENTVM_RUNS_DIR") or REPO / "runs").resolve()


def _prefix() -> str:
    return os.environ.get("AGENTVM_PREFIX") or "agentvm"


def clean(include_golden: bool) -> int:
    binary = _multipass(os.environ)
    report = reaper.reap(binary, os.environ, _prefix(), include_golden=include_golden)
    print(reaper.format_report(report))
    return 1 if report.failed else 0


def runs(limit: int) -> int:
    print(history.table(_runs_dir(), limit, slots.state_dir(os.environ), _prefix()))
    return 0


def show(run_id: str) -> int:
    try:
        print(history.show(_runs_dir(), run_id))
    except LookupError as exc:
        print(f"agentvm: {exc}", file=sys.stderr)
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentvm")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("clean", help="delete every <prefix>-run-* instance whose run is not alive; stale locks")
    c.add_argument("--all", action="store_true", help="also delete the golden VM and golden builders")
    sub.add_parser("doctor", help="check Multipass, the golden VM, disk, memory and credentials")
    r = sub.add_parser("runs", help="list recent runs")
    r.add_argument("-n", "--limit", type=int, default=20)
    s = sub.add_parser("show", help="print one run's summary")
    s.add_argument("run_id", help="a run id, a unique prefix of one, or `last`")
    b = sub.add_parser("batch", help="run the prompts of a YAML file in parallel within MAX_VMS")
    b.add_argument("prompts")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "clean":
            return clean(args.all)
        if args.command == "doctor":
            text, code = doctor.report(doctor.run_checks(os.environ))
            print(text)
            return code
        if args.command == "runs":
            return runs(args.limit)
        if args.command == "show":
            return show(args.run_id)
        return batch.main(args.prompts)
    except UsageError as exc:
        print(f"agentvm: {exc}", file=sys.stderr)
        return USAGE_EXIT
    except RuntimeError as exc:
        print(f"agentvm: {exc}", file=sys.stderr)
        return 1
