"""``agentvm service | worker | submit | status | cancel`` (docs/service.md).

``agentvm.cli`` hands these commands to :func:`exit_with`; tests call :func:`main`. Exit codes: the run's own code
for ``submit --wait`` (docs/run.md: 0, 1, 3, 4, 130), 2 for bad input (nothing was submitted), 3 when the service
cannot be reached, 1 for an unknown workflow id.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from agentvm.errors import Exit, UsageError
from agentvm.service import config, naming
from agentvm.service.spec import DEFAULT_ATTEMPTS, DEFAULT_HEARTBEAT_TIMEOUT, RunSpec, encode_prompt, validate
from agentvm.settings import parse_bool, parse_int, role_defaults

UNAVAILABLE_EXIT = 3
NOT_FOUND_EXIT = 1
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 180.0
CANCEL_WAIT = 120.0


def _say(text: str) -> None:
    print(f"agentvm: {text}", file=sys.stderr, flush=True)


# --- argument parsing -------------------------------------------------------------------------------------------


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
    s.add_argument("--agent")
    s.add_argument("--timeout")
    s.add_argument("--workspace", help="a git URL (https://, ssh://, file://), or a folder on the host given by --host")
    s.add_argument("--ref", help="the branch, tag or commit of a git workspace (default: the remote's HEAD)")
    s.add_argument("--model")
    s.add_argument("--max-turns")
    s.add_argument("--agent-command")
    s.add_argument("--agent-credentials", help="names of the worker host's variables to deliver (custom agent)")
    s.add_argument("--keep", action="store_true")
    s.add_argument("--json", action="store_true", help="print the record (with --wait) or the id as JSON on stdout")
    s.add_argument("--host", help="run on this worker host only (its AGENTVM_HOST)")
    s.add_argument("--key", help="idempotency key: the workflow id; submitting the same key again starts no new run")
    s.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="a label for the run (repeatable)")
    s.add_argument(
        "--attempts", help=f"attempts for infra failures (default $AGENTVM_SERVICE_ATTEMPTS or {DEFAULT_ATTEMPTS})"
    )
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

    c = sub.add_parser("cancel", help="cancel a run (its VM is deleted; the record says interrupted)")
    c.add_argument("workflow_id")
    c.add_argument("--no-wait", action="store_true", help="return once the cancel is requested")
    return p


# --- submit -----------------------------------------------------------------------------------------------------


def _int(value: str | None, what: str) -> int | None:
    return parse_int(what, value, None)


def _prompt(args: argparse.Namespace, env: Mapping[str, str], stdin: IO[bytes] | None) -> bytes:
    text = args.prompt if args.prompt not in (None, "-") else None
    prompt_file = args.prompt_file or (env.get("PROMPT_FILE") if args.prompt is None else None)
    if text is None and args.prompt is None and not prompt_file and env.get("PROMPT"):
        text = env["PROMPT"]
    if text is not None and prompt_file:
        raise UsageError("give either a prompt or a prompt file, not both")
    if prompt_file:
        try:
            return Path(prompt_file).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read the prompt file {prompt_file}: {exc.strerror}") from None
    if text is not None:
        return text.encode("utf-8", errors="surrogateescape")
    if args.prompt == "-" and stdin is not None:
        return stdin.read()
    return b""


def build_spec(args: argparse.Namespace, env: Mapping[str, str], stdin: IO[bytes] | None = None) -> RunSpec:
    """The run request from ``agentvm submit``'s options and the environment (like ``agentvm run``). Checks
    everything that can be checked here; raises UsageError before anything is submitted."""
    from agentvm.run.profiles import ARGV_PROMPT_LIMIT, get_profile

    default_timeout = int(role_defaults("agent_run")["agent_run_timeout"])

    prompt = _prompt(args, env, stdin)
    agent = args.agent or env.get("AGENT") or None
    command = args.agent_command or env.get("AGENT_COMMAND") or None
    credentials = args.agent_credentials or env.get("AGENT_CREDENTIALS") or None
    profile = get_profile(agent or "claude", command, credentials)
    if profile.prompt == "argv" and len(prompt) > ARGV_PROMPT_LIMIT:
        raise UsageError(f"agent {profile.name} takes the prompt as an argument: at most {ARGV_PROMPT_LIMIT} bytes")
    workspace = args.workspace or env.get("WORKSPACE") or None
    git = path = None
    if workspace:
        if "://" in workspace:
            git = workspace
        else:
            path = str(Path(workspace).expanduser().resolve())
    attempts = _int(args.attempts or env.get("AGENTVM_SERVICE_ATTEMPTS"), "--attempts (AGENTVM_SERVICE_ATTEMPTS)")
    heartbeat = _int(env.get("AGENTVM_HEARTBEAT_TIMEOUT"), "AGENTVM_HEARTBEAT_TIMEOUT")
    host = args.host or None
    if host is not None:
        naming.check_host(host, "--host")
    from agentvm.service.spec import parse_labels

    spec = RunSpec(
        prompt_b64=encode_prompt(prompt),
        agent=agent,
        agent_command=command,
        agent_credentials=credentials,
        model=args.model or env.get("MODEL") or None,
        max_turns=_int(args.max_turns or env.get("MAX_TURNS"), "MAX_TURNS"),
        timeout=_int(args.timeout or env.get("TIMEOUT"), "TIMEOUT") or default_timeout,
        workspace_git=git,
        workspace_ref=args.ref,
        workspace_path=path,
        keep=args.keep or parse_bool("KEEP", env.get("KEEP")),
        labels=parse_labels(args.label),
        host=host,
        attempts=attempts or DEFAULT_ATTEMPTS,
        heartbeat_timeout=heartbeat or DEFAULT_HEARTBEAT_TIMEOUT,
        trigger={"kind": "submit", "name": None, "id": None},
    )
    return validate(spec)


def summary(record: dict[str, Any]) -> str:
    where = record.get("location") or {}
    text = (record.get("result_text") or "").strip().splitlines()
    lines = [
        f"{'status:':<14}{record['status']} (exit {record['exit_code']})",
        f"{'attempt:':<14}{record.get('attempt', 1)}",
        f"{'duration:':<14}{record['timings']['total']:.1f} s",
        f"{'folder:':<14}{where.get('host', '?')}:{where.get('folder', '?')}",
    ]
    if record.get("error"):
        lines.append(f"{'error:':<14}{record['error']['message']}")
        lines.append(f"{'what to do:':<14}{record['error']['hint']}")
    if text:
        lines.append("result:")
        lines.extend(f"  {line}" for line in text[:8])
    return "\n".join(lines)


async def _submit(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from agentvm.run.request import new_run_id
    from agentvm.service import client as svc

    spec = build_spec(args, env, sys.stdin.buffer if args.prompt == "-" else None)
    workflow_id = naming.workflow_id(args.key, new_run_id())
    spec.trigger = {"kind": "submit", "name": None, "id": workflow_id}
    settings = config.load(env, need_host=False)
    client = await config.connect(settings, env)
    submitted = await svc.submit(client, settings, spec, workflow_id)
    if not submitted.created:
        _say(f"a run with the id {workflow_id} exists already: no new run was started")
    if args.json and not (args.wait or args.follow):
        print(json.dumps({"workflow_id": workflow_id, "created": submitted.created}))
    elif args.json:
        _say(f"submitted {workflow_id}")
    else:
        print(workflow_id, flush=True)
    if not (args.wait or args.follow):
        return 0
    result = await svc.wait(client, workflow_id, follow=_say if args.follow else None)
    return _report(result, args.json)


def _report(result: Any, as_json: bool) -> int:
    if result.record is not None:
        print(summary(result.record), file=sys.stderr)
        if as_json:
            print(json.dumps(result.record, indent=2, ensure_ascii=False))
    else:
        _say(f"run {result.workflow_id}: {result.temporal_status.lower()}: {result.message}")
    return result.exit_code


# --- status and cancel ------------------------------------------------------------------------------------------


async def _status(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from agentvm.service import client as svc

    settings = config.load(env, need_host=False)
    client = await config.connect(settings, env)
    if not args.workflow_id:
        runs = await svc.list_runs(client, args.limit)
        print(json.dumps([r.as_dict() for r in runs], indent=2) if args.json else svc.format_runs(runs))
        return 0
    naming.check_workflow_id(args.workflow_id)
    try:
        if args.wait or args.follow:
            return _report(await svc.wait(client, args.workflow_id, follow=_say if args.follow else None), args.json)
        info = await svc.snapshot(client, args.workflow_id)
    except Exception as exc:
        if "not found" in str(exc).lower():
            _say(f"no run with the id {args.workflow_id} (see `agentvm status`)")
            return NOT_FOUND_EXIT
        raise
    record = None
    if info["temporal_status"] == "COMPLETED":
        record = await client.get_workflow_handle(args.workflow_id, result_type=dict).result()
    if args.json:
        print(json.dumps({**info, "record": record}, indent=2, ensure_ascii=False))
        return 0
    print(describe(info, record))
    return 0


def describe(info: dict[str, Any], record: dict[str, Any] | None) -> str:
    """``agentvm status ID``: the workflow's state, then the record's summary when there is one."""
    labels = {"started_at": "started", "closed_at": "closed", "last_failure": "last failure"}
    lines = [
        f"{'run:':<14}{info['workflow_id']}",
        f"{'state:':<14}{info['status'] or '?'} (Temporal: {info['temporal_status']})",
    ]
    for key in ("agent", "host", "attempt", "phase", "last_failure", "started_at", "closed_at"):
        if info.get(key):
            lines.append(f"{labels.get(key, key) + ':':<14}{info[key]}")
    run = info.get("run") or {}
    if record is None and run.get("folder"):
        lines.append(f"{'folder:':<14}{run.get('host')}:{run['folder']}")
    if record is None and run.get("error"):
        lines.append(f"{'error:':<14}{run['error']}")
    if record is not None:
        lines.append(summary(record))
    return "\n".join(lines)


async def _cancel(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from agentvm.service import client as svc

    naming.check_workflow_id(args.workflow_id)
    settings = config.load(env, need_host=False)
    client = await config.connect(settings, env)
    try:
        await svc.cancel(client, args.workflow_id)
    except Exception as exc:
        if "not found" in str(exc).lower():
            _say(f"no run with the id {args.workflow_id} (see `agentvm status`)")
            return NOT_FOUND_EXIT
        raise
    _say(f"cancel requested for {args.workflow_id}")
    if args.no_wait:
        return 0
    try:
        result = await asyncio.wait_for(svc.wait(client, args.workflow_id), CANCEL_WAIT)
    except TimeoutError:
        _say(f"the run has not ended after {CANCEL_WAIT:.0f} s (is a worker running?); it ends when one takes it")
        return 0
    _say(f"run {args.workflow_id}: {result.temporal_status.lower()}")
    return 0


# --- worker and service ----------------------------------------------------------------------------------------


def _logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # A failed attempt that will be retried is reported by the worker's own lines; the SDK's traceback is noise.
    logging.getLogger("temporalio.activity").setLevel(logging.ERROR)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def handler(signum: int) -> None:
        if not stop.is_set():
            _say(f"{signal.Signals(signum).name}: stopping (interrupting running runs; their VMs are deleted)")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, handler, sig)


async def _worker(env: Mapping[str, str]) -> int:
    from agentvm.service import worker

    settings = config.load(env)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    await worker.serve(settings, stop)
    return 0


def _lock_path(settings: config.Settings) -> Path:
    return settings.service_dir / "service.lock"


def _read_lock(settings: config.Settings) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(_lock_path(settings).read_text() or "{}")
    return {}


def _write_lock(fh: IO[str], data: dict[str, Any]) -> None:
    fh.seek(0)
    fh.truncate(0)
    fh.write(json.dumps(data))
    fh.flush()


async def _service(env: Mapping[str, str]) -> int:
    from agentvm import slots
    from agentvm.service import devserver, worker

    settings = config.load(env)
    settings.service_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = slots.hold(_lock_path(settings))
    if lock is None:
        pid = _read_lock(settings).get("pid")
        raise UsageError(f"the service already runs (pid {pid}): stop it with `make service-stop`")
    info: dict[str, Any] = {"pid": os.getpid(), "address": settings.address, "host": settings.host, "ready": False}
    _write_lock(lock, info)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    server = None
    watcher = None
    try:
        if settings.embedded:
            log = open(settings.service_dir / "temporal.log", "ab")  # noqa: SIM115 - open for the server's life
            server = devserver.DevServer(settings, log)
            server.start()
            await devserver.wait_ready(server)
            info["server_pid"] = server.proc.pid if server.proc is not None else None
            _say(
                f"Temporal dev server on {settings.address} (UI {settings.ui_url or 'off'}; state"
                f" {server.db}); not for production: see docs/service.md"
            )
            watcher = asyncio.create_task(_watch_server(server, stop))
        else:
            _say(f"using the Temporal cluster at {settings.address} (namespace {settings.namespace}); no local server")

        def ready() -> None:
            _write_lock(lock, {**info, "ready": True, "ui": settings.ui_url if settings.embedded else None})

        await worker.serve(settings, stop, on_ready=ready)
    finally:
        if watcher is not None:
            watcher.cancel()
        if server is not None:
            server.stop()
            _say("Temporal dev server stopped")
        _write_lock(lock, {})
        lock.close()
    return 0


async def _watch_server(server: Any, stop: asyncio.Event) -> None:
    while not stop.is_set():
        code = server.exited()
        if code is not None:
            _say(f"the Temporal dev server exited (code {code}): stopping the worker")
            stop.set()
            return
        await asyncio.sleep(1)


def _detach(env: Mapping[str, str]) -> int:
    from agentvm import slots

    settings = config.load(env)
    settings.service_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if slots.is_locked(_lock_path(settings)):
        _say(f"the service already runs (pid {_read_lock(settings).get('pid')})")
        return Exit.USAGE
    log_path = settings.service_dir / "service.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentvm.service.cli", "service"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env),
        )
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        data = _read_lock(settings)
        if data.get("pid") == proc.pid and data.get("ready"):
            where = f"UI {data['ui']}" if data.get("ui") else f"Temporal {data.get('address')}"
            _say(
                f"service running in the background (pid {proc.pid}; {where}; log {log_path}); stop: make service-stop"
            )
            return 0
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            _say(f"the service exited with code {proc.returncode}:\n" + "\n".join(tail))
            return proc.returncode or 1
        time.sleep(0.2)
    _say(f"the service did not become ready in {READY_TIMEOUT:.0f} s; see {log_path}")
    return 1


def _stop(env: Mapping[str, str]) -> int:
    from agentvm import slots

    settings = config.load(env, need_host=False)
    path = _lock_path(settings)
    pid = _read_lock(settings).get("pid")
    if not slots.is_locked(path) or not isinstance(pid, int):
        _say("no service is running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while slots.is_locked(path) and time.monotonic() < deadline:
        time.sleep(0.2)
    if slots.is_locked(path):
        _say(f"the service (pid {pid}) is still stopping after {STOP_TIMEOUT:.0f} s; see its log")
        return 1
    _say(f"service stopped (pid {pid})")
    return 0


# --- entry ------------------------------------------------------------------------------------------------------


def main(argv: list[str], env: Mapping[str, str] | None = None) -> int:
    args = parser().parse_args(argv)
    env = os.environ if env is None else env
    try:
        if args.command == "service":
            if args.stop:
                return _stop(env)
            if args.detach:
                return _detach(env)
            _logging()
            return asyncio.run(_service(env))
        if args.command == "worker":
            _logging()
            return asyncio.run(_worker(env))
        if args.command == "submit":
            return asyncio.run(_submit(args, env))
        if args.command == "status":
            return asyncio.run(_status(args, env))
        return asyncio.run(_cancel(args, env))
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
