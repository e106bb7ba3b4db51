"""``agentvm service | worker | submit | status | cancel`` (docs/service.md); ``agentvm schedule``,
``agentvm webhook`` and ``agentvm mcp`` (docs/triggers.md).

``agentvm.cli`` hands these commands to :func:`exit_with`; tests call :func:`main`. Exit codes: the run's own code
for ``submit --wait`` (docs/run.md: 0, 1, 3, 4, 130), 2 for bad input (nothing was submitted), 3 when the service
cannot be reached, 1 for an unknown workflow id or schedule (or a schedule name taken already).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping
from typing import Any

from agentvm.errors import Exit, UsageError
from agentvm.service import config, mcpserver, schedspec, schedules, servicecli, submitcli
from agentvm.service.spec import DEFAULT_ATTEMPTS
from agentvm.settings import parse_bool

UNAVAILABLE_EXIT = 3
NOT_FOUND_EXIT = 1
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 180.0
CANCEL_WAIT = 120.0


def _say(text: str) -> None:
    print(f"agentvm: {text}", file=sys.stderr, flush=True)


# --- argument parsing -------------------------------------------------------------------------------------------


def run_options(p: argparse.ArgumentParser) -> None:
    """The run options of `submit` (and of a schedule's runs): submitcli.TRIGGER_OPTIONS."""
    p.add_argument("--agent")
    p.add_argument("--timeout")
    p.add_argument("--workspace", help="a git URL (https://, ssh://, file://), or a folder on the host given by --host")
    p.add_argument("--ref", help="the branch, tag or commit of a git workspace (default: the remote's HEAD)")
    p.add_argument("--model")
    p.add_argument("--max-turns")
    p.add_argument("--agent-command")
    p.add_argument("--agent-credentials", help="names of the worker host's variables to deliver (custom agent)")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--host", help="run on this worker host only (its AGENTVM_HOST)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="a label for the run (repeatable)")
    p.add_argument(
        "--attempts", help=f"attempts for infra failures (default $AGENTVM_SERVICE_ATTEMPTS or {DEFAULT_ATTEMPTS})"
    )


def schedule_parser(sub: Any) -> None:
    """`agentvm schedule ...` (schedules.py, docs/triggers.md)."""
    sch = sub.add_parser("schedule", help="recurring runs on Temporal Schedules (add, list, show, pause, ...)")
    acts = sch.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = acts.add_parser("add", help="add a schedule: its runs start the way `submit` does, on the cron or interval")
    a.add_argument("name", help="lower-case letters, digits and '-' (the Temporal schedule is agentvm-NAME)")
    when = a.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help='five fields, e.g. "0 6 * * 1-5" (or @daily, @hourly, ..., @every 15m)')
    when.add_argument("--every", help="an interval: seconds, or a duration like 90s, 15m, 2h, 1d")
    a.add_argument("--timezone", help="the time zone of --cron (IANA name, default UTC)")
    text = a.add_mutually_exclusive_group(required=True)
    text.add_argument("--prompt", help="the prompt text (data: never templated or expanded)")
    text.add_argument("--prompt-file", help="a file whose bytes are the prompt (read once, now)")
    run_options(a)
    a.add_argument(
        "--overlap",
        default=schedspec.DEFAULT_OVERLAP,
        choices=schedspec.OVERLAP_POLICIES,
        help="when a run is due while the last still runs (default skip)",
    )
    a.add_argument("--paused", action="store_true", help="add it paused (`resume` starts it)")
    a.add_argument("--note", help="a note shown by `show` and in the Temporal UI")
    ls = acts.add_parser("list", help="the schedules, their state and next run")
    ls.add_argument("--json", action="store_true")
    sh = acts.add_parser("show", help="one schedule: times, overlap, state, next and recent runs, the run request")
    sh.add_argument("name")
    sh.add_argument("--json", action="store_true")
    for action, text_ in (("pause", "stop starting runs (runs already started go on)"), ("resume", "start again")):
        pr = acts.add_parser(action, help=text_)
        pr.add_argument("name")
        pr.add_argument("--note", help="why (shown by `show` and in the Temporal UI)")
    t = acts.add_parser("trigger", help="start one run now (also when paused); prints its workflow id")
    t.add_argument("name")
    t.add_argument("--overlap", choices=schedspec.OVERLAP_POLICIES, help="instead of the schedule's policy")
    acts.add_parser("delete", help="delete the schedule (runs already started go on)").add_argument("name")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentvm", description="agentvm's service: durable runs on Temporal.")
    sub = p.add_subparsers(dest="command", required=True)
    svc = sub.add_parser(
        "service",
        help="the Temporal dev server and this host's worker (with TEMPORAL_ADDRESS: only the worker)",
    )
    mode = svc.add_mutually_exclusive_group()
    mode.add_argument("--detach", action="store_true", help="run in the background (log and pid in the state folder)")
    mode.add_argument("--stop", action="store_true", help="stop the background service")
    sub.add_parser("worker", help="this host's worker only (polls the shared queue and its own host queue)")

    s = sub.add_parser("submit", help="submit a run to the service (same options as `agentvm run`)")
    s.add_argument("prompt", nargs="?", help="the prompt, or - to read it from stdin (default: $PROMPT / $PROMPT_FILE)")
    s.add_argument("--prompt-file")
    run_options(s)
    s.add_argument("--json", action="store_true", help="print the record (with --wait) or the id as JSON on stdout")
    s.add_argument("--key", help="idempotency key: the workflow id; submitting the same key again starts no new run")
    waiting = s.add_mutually_exclusive_group()
    waiting.add_argument("--wait", action="store_true", help="wait for the run; exit with its exit code")
    waiting.add_argument("--follow", action="store_true", help="like --wait, printing each change of state")

    st = sub.add_parser("status", help="one run's state and record, or (without an id) the recent service runs")
    st.add_argument("workflow_id", nargs="?")
    st.add_argument("--json", action="store_true")
    st.add_argument("-n", "--limit", type=int, default=20)
    st_wait = st.add_mutually_exclusive_group()
    st_wait.add_argument("--wait", action="store_true", help="wait for the run to end; exit with its exit code")
    st_wait.add_argument("--follow", action="store_true", help="like --wait, printing each change of state")

    w = sub.add_parser("webhook", help="the signed webhook receiver: deliveries become runs (docs/triggers.md)")
    w.add_argument("--routes", help="the routes file (default: $AGENTVM_WEBHOOK_ROUTES)")
    w.add_argument("--listen", help="HOST:PORT to listen on (default: $AGENTVM_WEBHOOK_LISTEN, else 127.0.0.1:8788)")

    c = sub.add_parser("cancel", help="cancel a run (its VM is deleted; the record says interrupted)")
    c.add_argument("workflow_id")
    c.add_argument("--no-wait", action="store_true", help="return once the cancel is requested")
    schedule_parser(sub)
    mcpserver.add_parser(sub)
    return p


# --- submit -----------------------------------------------------------------------------------------------------


def _make_variables(args: argparse.Namespace, env: Mapping[str, str]) -> None:
    """`make submit WAIT=1 HOST=h KEY=k`: the make variables of the flags that were not given."""
    if not (args.wait or args.follow) and parse_bool("WAIT", env.get("WAIT")):
        args.follow = True
    args.host = args.host or env.get("HOST") or None
    args.key = args.key or env.get("KEY") or None


def main(argv: list[str], env: Mapping[str, str] | None = None) -> int:
    args = parser().parse_args(argv)
    env = os.environ if env is None else env
    try:
        if args.command == "service":
            if args.stop:
                return servicecli._stop(env)
            if args.detach or parse_bool("DETACH", env.get("DETACH")):
                return servicecli._detach(env)
            servicecli._logging()
            return asyncio.run(servicecli._service(env))
        if args.command == "worker":
            servicecli._logging()
            return asyncio.run(servicecli._worker(env))
        if args.command == "submit":
            _make_variables(args, env)
            return asyncio.run(submitcli._submit(args, env))
        if args.command == "schedule":
            return asyncio.run(schedules.main(args, env))
        if args.command == "mcp":
            return asyncio.run(mcpserver.serve(mcpserver.backend_kind(args, env), env))
        if args.command == "webhook":
            from agentvm.service.webhook import server

            return asyncio.run(server.main(args.routes, args.listen, env))
        if args.command == "status":
            return asyncio.run(submitcli._status(args, env))
        return asyncio.run(submitcli._cancel(args, env))
    except UsageError as exc:
        _say(str(exc))
        return Exit.USAGE
    except config.Unavailable as exc:
        _say(str(exc))
        return UNAVAILABLE_EXIT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `agentvm status | head`
        return 0
    except Exception as exc:
        from temporalio.service import RPCError

        if not isinstance(exc, RPCError):
            raise
        _say(f"Temporal refused the request: {exc}")
        return UNAVAILABLE_EXIT


def exit_with(argv: list[str]) -> None:
    """Run a service command and end the process. It exits with ``os._exit`` after flushing: the Temporal SDK's
    native threads can crash the interpreter's finalisation (seen with temporalio 1.35 after a worker ran)."""
    code = main(argv)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_with(sys.argv[1:])
