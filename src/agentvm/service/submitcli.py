"""`agentvm submit`, `status` and `cancel`: the client side of the service."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from agentvm.errors import UsageError
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


def build_spec(
    args: argparse.Namespace, env: Mapping[str, str], stdin: IO[bytes] | None = None, prompt: bytes | None = None
) -> RunSpec:
    """The run request from ``agentvm submit``'s options and the environment (like ``agentvm run``); ``prompt``
    given, the options' and environment's prompt are not read. Checks everything that can be checked here;
    raises UsageError before anything is submitted."""
    from agentvm.run.profiles import ARGV_PROMPT_LIMIT, get_profile

    default_timeout = int(role_defaults("agent_run")["agent_run_timeout"])

    prompt = _prompt(args, env, stdin) if prompt is None else prompt
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


# The run options a trigger (a schedule, a webhook route, an MCP call) may set: `agentvm submit`'s own options.
TRIGGER_OPTIONS = (
    "agent",
    "timeout",
    "workspace",
    "ref",
    "model",
    "max_turns",
    "agent_command",
    "agent_credentials",
    "keep",
    "host",
    "label",
    "attempts",
)


def trigger_spec(
    prompt: bytes, options: Mapping[str, Any], env: Mapping[str, str], trigger: Mapping[str, str | None]
) -> RunSpec:
    """The run request of a trigger: ``prompt`` (bytes, data), ``options`` as `agentvm submit` takes them (keys of
    TRIGGER_OPTIONS; values are strings, numbers, booleans, or a list of KEY=VALUE for ``label``) and the
    trigger's ``{"kind", "name", "id"}``. The environment supplies what the options do not, as for `submit`.
    Raises UsageError before anything is submitted."""
    unknown = sorted(set(options) - set(TRIGGER_OPTIONS))
    if unknown:
        raise UsageError(f"unknown run option(s) {', '.join(unknown)}: choose from {', '.join(TRIGGER_OPTIONS)}")
    values: dict[str, Any] = {name: None for name in TRIGGER_OPTIONS}
    values.update(keep=False, label=[])
    for name, value in options.items():
        if name == "label":
            if isinstance(value, Mapping):
                value = [f"{k}={v}" for k, v in value.items()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise UsageError("the run option label takes a list of KEY=VALUE strings (or a mapping)")
        elif name == "keep":
            value = parse_bool("keep", value if isinstance(value, str) else str(bool(value)).lower())
        elif value is not None:
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise UsageError(f"the run option {name} takes a string or a number, got {type(value).__name__}")
            value = str(value)
        values[name] = value
    args = argparse.Namespace(prompt=None, prompt_file=None, **values)
    spec = build_spec(args, env, prompt=prompt)  # the trigger's text is the prompt, never $PROMPT or $PROMPT_FILE
    spec.trigger = dict(trigger)
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
