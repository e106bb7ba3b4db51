"""The handlers of ``agentvm``'s subcommands (cli.py builds the tree). Each reads its settings once."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Callable

from agentvm import api, options
from agentvm.errors import Exit, UsageError
from agentvm.host import batch, doctor, history, poolcli, slots
from agentvm.host.reaper import Reaper, format_report
from agentvm.multipass import Multipass
from agentvm.run import golden
from agentvm.run.request import RUN_ID_RE
from agentvm.run.summary import summary
from agentvm.settings import Settings, parse_bool, parse_int


def _flag_or_env(settings: Settings, value: bool | None, name: str) -> bool:
    return value if value is not None else parse_bool(name, settings.env.get(name))


_TRIGGER_KIND = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


def _chosen(settings: Settings) -> tuple[str | None, dict[str, str | None] | None]:
    """The run id a caller chose up front (``AGENTVM_RUN_ID``, e.g. ``agentvm mcp``) and the trigger kind it
    records (``AGENTVM_TRIGGER``); both checked, UsageError otherwise."""
    run_id = settings.env.get("AGENTVM_RUN_ID") or None
    if run_id is not None and not RUN_ID_RE.fullmatch(run_id):
        raise UsageError(f"AGENTVM_RUN_ID {run_id[:60]!r} is not a run id of the form 20261121t221500-3f9c1a")
    kind = settings.env.get("AGENTVM_TRIGGER") or None
    if kind is None:
        return run_id, None
    if not _TRIGGER_KIND.fullmatch(kind):
        raise UsageError(f"AGENTVM_TRIGGER {kind[:40]!r} must be a short lower-case word (mcp, ...)")
    return run_id, {"kind": kind, "name": None, "id": run_id}


def run(args: argparse.Namespace) -> int:
    settings = Settings.load()
    given = options.from_args(args)
    stdin = None
    if args.prompt == "-":
        stdin = sys.stdin.buffer
    elif args.prompt is not None:
        given = dataclasses.replace(given, prompt=args.prompt.encode("utf-8", "surrogateescape"))
    run_id, trigger = _chosen(settings)
    if trigger is not None:
        given = dataclasses.replace(given, trigger=trigger)
    result = api.run(given, settings=settings, stdin=stdin, out=sys.stderr, run_id=run_id)
    print(summary(result.record, result.run_dir), file=sys.stderr)
    if args.json:
        print(json.dumps(result.record, indent=2, ensure_ascii=False))
    return result.exit_code


def run_batch(args: argparse.Namespace) -> int:
    settings = Settings.load()
    path = args.prompts or settings.env.get("PROMPTS") or ""
    return batch.main(settings, path)


def run_golden(args: argparse.Namespace) -> int:
    settings = Settings.load()
    agents = args.agents if args.agents is not None else settings.env.get("AGENTS")
    force = _flag_or_env(settings, args.force, "FORCE")
    keep = _flag_or_env(settings, args.keep, "KEEP")
    return golden.build(settings, agents, force=force, keep=keep)


def verify_golden(_args: argparse.Namespace) -> int:
    return golden.verify(Settings.load())


def clean(args: argparse.Namespace) -> int:
    settings = Settings.load()
    everything = _flag_or_env(settings, args.all, "ALL")
    kept = _flag_or_env(settings, args.kept, "KEPT")
    mp = Multipass(settings.multipass_bin, settings.env)
    report = Reaper(settings, mp).reap(include_golden=everything, include_unknown=everything, include_kept=kept)
    print(format_report(report))
    return Exit.AGENT_FAILED if report.failed else Exit.SUCCEEDED


def run_doctor(_args: argparse.Namespace) -> int:
    text, code = doctor.report(doctor.run_checks(Settings.load()))
    print(text)
    return code


def runs(args: argparse.Namespace) -> int:
    settings = Settings.load()
    raw = args.limit if args.limit is not None else settings.env.get("N")
    limit = parse_int("N (--limit)", raw, 20)
    print(history.table(settings, limit or 20))
    if settings.env.get("TEMPORAL_ADDRESS") or slots.is_locked(settings.state_dir / "service" / "service.lock"):
        from agentvm.service.client import format_runs, recent_runs

        found = recent_runs(settings.env, limit or 20)
        print("\nservice runs:\n" + (format_runs(found) if found is not None else "the service does not answer"))
    return Exit.SUCCEEDED


def show(args: argparse.Namespace) -> int:
    settings = Settings.load()
    run_id = args.run_id or settings.env.get("RUN") or "last"
    try:
        print(history.show(settings, run_id))
    except LookupError as exc:
        print(f"agentvm: {exc}", file=sys.stderr)
        return Exit.AGENT_FAILED
    return Exit.SUCCEEDED


def pool(args: argparse.Namespace) -> int:
    settings = Settings.load()
    size = parse_int("POOL (--size)", args.size, None, minimum=0) if args.size is not None else None
    return poolcli.main(settings, size=size, background=args.detach, halt=args.stop, show=args.status)


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": run,
    "batch": run_batch,
    "golden": run_golden,
    "verify-golden": verify_golden,
    "clean": clean,
    "doctor": run_doctor,
    "runs": runs,
    "show": show,
    "pool": pool,
}


def dispatch(args: argparse.Namespace) -> int:
    return HANDLERS[args.command](args)
