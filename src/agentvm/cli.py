"""``agentvm``: one command tree (``agentvm --help`` lists every subcommand). The Makefile's targets call it.

Each subcommand takes flags, and also reads the make/environment variable of each flag it does not get
(``make run AGENT=codex`` arrives as ``AGENT``); values are data, parsed strictly, never evaluated.
"""

from __future__ import annotations

import argparse
import sys

from agentvm import commands, options
from agentvm.errors import EXIT_MEANINGS, Exit, QueueTimeout, UsageError

#: The service's commands (src/agentvm/service/cli.py parses them; importing it loads the Temporal SDK).
SERVICE_HELP = {
    "service": "the Temporal dev server and this host's worker (make service, service-stop; docs/service.md)",
    "worker": "this host's worker only (the shared queue and its own host queue)",
    "submit": "submit a run to the service (the options of run; --wait, --follow, --host, --key)",
    "status": "one service run's state and record, or the recent service runs",
    "cancel": "cancel a service run (its VM is deleted; the record says interrupted)",
    "schedule": "recurring service runs on Temporal Schedules: add, list, show, pause, resume, trigger, delete",
    "mcp": "an MCP server on stdio handing tasks to VMs (via the service, else local runs; docs/triggers.md)",
    "webhook": "the signed webhook receiver: deliveries become service runs (AGENTVM_WEBHOOK_ROUTES; docs/triggers.md)",
}


def _epilog() -> str:
    lines = ["exit codes:"] + [f"  {code:>3}  {text}" for code, text in sorted(EXIT_MEANINGS.items())]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agentvm",
        description="Run an AI agent on a prompt in a disposable Multipass VM.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run one prompt in a fresh clone of the golden VM (make run)")
    run.add_argument(
        "prompt", nargs="?", help="the prompt, or - to read it from stdin (default: $PROMPT / $PROMPT_FILE)"
    )
    options.add_arguments(run)
    run.add_argument("--json", action="store_true", help="print result.json on stdout at the end")
    b = sub.add_parser("batch", help="run every prompt of a YAML file within MAX_VMS (make batch)")
    b.add_argument("prompts", nargs="?", help="the prompts file (default: $PROMPTS)")
    g = sub.add_parser("golden", help="build, verify, seal and promote the golden VM (make golden)")
    g.add_argument("--agents", help="comma-separated agents to install (AGENTS; default claude)")
    g.add_argument("--force", action="store_true", default=None, help="rebuild even when nothing changed (FORCE=1)")
    g.add_argument("--keep", action="store_true", default=None, help="keep a failed builder for debugging (KEEP=1)")
    sub.add_parser("verify-golden", help="boot a clone of the golden and check it (make verify-golden)")
    c = sub.add_parser(
        "clean", help="delete this host's leftover VMs of dead runs, stale locks and scratch (make clean)"
    )
    c.add_argument(
        "--all", action="store_true", default=None, help="also the golden, builders and old unknown runs (ALL=1)"
    )
    c.add_argument("--kept", action="store_true", default=None, help="also VMs kept with KEEP=1 (KEPT=1)")
    sub.add_parser("doctor", help="check Multipass, the golden VM, disk, memory and credentials (make doctor)")
    r = sub.add_parser("runs", help="list recent runs (make runs)")
    r.add_argument("-n", "--limit", help="how many (N; default 20)")
    pl = sub.add_parser("pool", help="keep N clones of the golden started and ready for runs (make pool, pool-stop)")
    pl.add_argument("--size", help="how many (POOL)")
    pl.add_argument("--detach", action="store_true", help="run the keeper in the background; return once filled")
    pl.add_argument("--stop", action="store_true", help="stop the keeper and delete the pool's VMs")
    pl.add_argument("--status", action="store_true", help="show the keeper and the ready VMs")
    for name, text in SERVICE_HELP.items():  # parsed by agentvm.service.cli (docs/service.md)
        sub.add_parser(name, help=text, add_help=False)
    s = sub.add_parser("show", help="print one run's summary (make show)")
    s.add_argument("run_id", nargs="?", help="a run id, a unique prefix of one, or `last` (RUN; default last)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SERVICE_HELP:
        from agentvm.service.cli import exit_with

        exit_with(argv)  # does not return (the Temporal SDK's threads must not run Python's shutdown)
    args = parser().parse_args(argv)
    try:
        return commands.dispatch(args)
    except UsageError as exc:
        print(f"agentvm: {exc}", file=sys.stderr)
        return Exit.USAGE
    except QueueTimeout as exc:
        print(f"agentvm: {exc}", file=sys.stderr)
        return Exit.QUEUE_TIMEOUT
    except KeyboardInterrupt:
        print("agentvm: interrupted before the run started; nothing was created", file=sys.stderr)
        return Exit.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
