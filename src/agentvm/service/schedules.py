"""``agentvm schedule add | list | show | pause | resume | trigger | delete``: recurring runs on Temporal Schedules.

A schedule ``NAME`` is the Temporal schedule ``agentvm-NAME``; its action starts the ``AgentRun`` workflow with a
run request built once, at ``add``, by :func:`agentvm.service.submitcli.trigger_spec` (the prompt is data, stored
in the schedule; never templated or expanded). Temporal names each run ``agentvm-NAME-<time>``; the workflow puts
that id in the record's ``trigger`` (``{"kind": "schedule", "name": NAME, "id": ...}``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from agentvm.errors import UsageError
from agentvm.service import config, naming, schedspec, schedview, submitcli
from agentvm.service.spec import RunSpec

MEMO = "agentvm"
NOT_FOUND_EXIT = 1
EXISTS_EXIT = 1
TRIGGER_WAIT = 10.0


def _say(text: str) -> None:
    print(f"agentvm: {text}", file=sys.stderr, flush=True)


def _overlap(policy: str) -> Any:
    from temporalio.client import ScheduleOverlapPolicy

    return ScheduleOverlapPolicy[schedspec.check_overlap(policy).replace("-", "_").upper()]


def _policy_name(policy: Any) -> str:
    return policy.name.lower().replace("_", "-")


def _prompt(args: argparse.Namespace) -> bytes:
    if args.prompt is not None:
        return args.prompt.encode("utf-8", errors="surrogateescape")
    try:
        return Path(args.prompt_file).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the prompt file {args.prompt_file}: {exc.strerror}") from None


Planned = tuple[str, schedspec.Times, RunSpec]


def plan(args: argparse.Namespace, env: Mapping[str, str]) -> Planned:
    """Check everything ``add`` is given, before connecting: the schedule id, its times and the run request."""
    sid = schedspec.schedule_id(args.name)
    times = schedspec.times(args.cron, args.every, args.timezone)
    schedspec.check_overlap(args.overlap)
    schedspec.check_note(args.note)
    options: dict[str, Any] = {
        name: getattr(args, name) for name in submitcli.TRIGGER_OPTIONS if getattr(args, name) not in (None, [])
    }
    spec = submitcli.trigger_spec(_prompt(args), options, env, {"kind": "schedule", "name": args.name, "id": None})
    return sid, times, spec


def _is(exc: Exception, status: str) -> bool:
    from temporalio.service import RPCError, RPCStatusCode

    return isinstance(exc, RPCError) and exc.status == RPCStatusCode[status]


def _not_found(name: str) -> int:
    _say(f"no schedule named {name!r} (see `agentvm schedule list`)")
    return NOT_FOUND_EXIT


async def _add(client: Any, settings: config.Settings, args: argparse.Namespace, planned: Planned) -> int:
    from temporalio import client as tc

    from agentvm.service import client as svc

    sid, times, spec = planned
    action = tc.ScheduleActionStartWorkflow(
        naming.WORKFLOW_TYPE,
        spec,
        id=sid,
        task_queue=settings.task_queue,
        typed_search_attributes=svc.run_search_attributes(spec),
        static_summary=f"schedule {args.name}: " + svc.summary_line(spec.prompt, spec.agent),
    )
    when = tc.ScheduleSpec(
        cron_expressions=[times.cron] if times.cron else [],
        intervals=[tc.ScheduleIntervalSpec(every=timedelta(seconds=times.every))] if times.every else [],
        time_zone_name=times.timezone,
    )
    schedule = tc.Schedule(
        action=action,
        spec=when,
        policy=tc.SchedulePolicy(overlap=_overlap(args.overlap)),
        state=tc.ScheduleState(paused=args.paused, note=args.note or f"added with agentvm schedule add {args.name}"),
    )
    try:
        await client.create_schedule(sid, schedule, memo={MEMO: _times_memo(times)})
    except tc.ScheduleAlreadyRunningError:
        _say(
            f"a schedule named {args.name!r} exists already: see `agentvm schedule show {args.name}`; delete it first"
            " or choose another name"
        )
        return EXISTS_EXIT
    except Exception as exc:
        if _is(exc, "INVALID_ARGUMENT"):
            raise UsageError(f"Temporal refused the schedule: {exc}") from None
        svc.check_attributes_error(exc, settings)
        raise
    print(args.name, flush=True)
    _say(f"schedule {args.name} ({times.describe()}, overlap {args.overlap}{', paused' if args.paused else ''})")
    if not (await client.get_schedule_handle(sid).describe()).info.next_action_times:
        _say(f"warning: {times.describe()} matches no upcoming time: the schedule never fires (`trigger` still works)")
    return 0


def _times_memo(times: schedspec.Times) -> dict[str, Any]:
    """Temporal keeps a cron expression as calendars: the schedule's memo keeps what was given, for show/list."""
    return {"when": times.describe(), "cron": times.cron, "every": times.every, "timezone": times.timezone}


async def _memo(entry: Any) -> dict[str, Any]:
    try:
        memo = (await entry.memo()).get(MEMO)
    except Exception:
        return {}
    return memo if isinstance(memo, dict) else {}


def _times_of(spec: Any, memo: Mapping[str, Any]) -> str:
    if memo.get("when"):
        return schedview.clean(memo["when"])
    parts = [f"cron {c}" for c in spec.cron_expressions]
    parts += [f"every {schedspec.format_duration(int(i.every.total_seconds()))}" for i in spec.intervals]
    if spec.calendars:
        parts.append(f"{len(spec.calendars)} calendar(s)")
    text = ", ".join(parts) or "no times"
    return f"{text} ({spec.time_zone_name or 'UTC'})" if spec.cron_expressions or spec.calendars else text


async def _list(client: Any) -> list[dict[str, Any]]:
    rows = []
    async for item in await client.list_schedules():
        name = schedspec.name_of(item.id)
        sched = item.schedule
        if name is None or sched is None or getattr(sched.action, "workflow", None) != naming.WORKFLOW_TYPE:
            continue
        recent = list(item.info.recent_actions) if item.info else []
        upcoming = list(item.info.next_action_times) if item.info else []
        rows.append(
            {
                "name": name,
                "schedule_id": item.id,
                "when": _times_of(sched.spec, await _memo(item)),
                "paused": sched.state.paused,
                "note": sched.state.note,
                "next": upcoming[0].isoformat() if upcoming and not sched.state.paused else None,
                "last": recent[-1].started_at.isoformat() if recent else None,
                "last_workflow_id": recent[-1].action.workflow_id if recent else None,
            }
        )
    return sorted(rows, key=lambda r: r["name"])


async def describe(client: Any, name: str) -> dict[str, Any]:
    """What ``show`` prints: times, overlap, state, note, counts, next and recent actions, and the run request."""
    desc = await client.get_schedule_handle(schedspec.schedule_id(name)).describe()
    sched, info = desc.schedule, desc.info
    memo = await _memo(desc)
    run: dict[str, Any] = {}
    args = getattr(sched.action, "args", None) or []
    if args:
        specs = await client.data_converter.decode(list(args), [RunSpec])
        spec: RunSpec = specs[0]
        from agentvm.service.client import summary_line

        run = {
            "agent": spec.agent or "default",
            "agent_command": spec.agent_command,
            "timeout": spec.timeout,
            "workspace": spec.workspace_git or spec.workspace_path,
            "ref": spec.workspace_ref,
            "host": spec.host,
            "labels": dict(spec.labels),
            "attempts": spec.attempts,
            "keep": spec.keep,
            "prompt_bytes": len(spec.prompt),
            "summary": summary_line(spec.prompt, spec.agent),
        }
    return {
        "name": name,
        "schedule_id": desc.id,
        "when": _times_of(sched.spec, memo),
        "cron": schedview.clean(memo["cron"]) if memo.get("cron") else None,
        "every": [int(i.every.total_seconds()) for i in sched.spec.intervals],
        "timezone": sched.spec.time_zone_name or "UTC",
        "overlap": _policy_name(sched.policy.overlap),
        "paused": sched.state.paused,
        "note": sched.state.note,
        "created_at": info.created_at.isoformat(),
        "actions": info.num_actions,
        "skipped_overlap": info.num_actions_skipped_overlap,
        "next_action_times": [t.isoformat() for t in info.next_action_times[:5]],
        "running": [a.workflow_id for a in info.running_actions],
        "recent": [
            {"scheduled_at": a.scheduled_at.isoformat(), "started_at": a.started_at.isoformat(), "workflow_id": wid}
            for a in reversed(info.recent_actions)
            if (wid := getattr(a.action, "workflow_id", None))
        ],
        "run": run,
    }


async def _seen(handle: Any) -> set[str]:
    info = (await handle.describe()).info
    return {a.workflow_id for a in info.running_actions} | {
        wid for a in info.recent_actions if (wid := getattr(a.action, "workflow_id", None))
    }


async def _trigger(client: Any, args: argparse.Namespace) -> int:
    handle = client.get_schedule_handle(schedspec.schedule_id(args.name))
    before = await _seen(handle)
    await handle.trigger(overlap=_overlap(args.overlap) if args.overlap else None)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TRIGGER_WAIT
    while loop.time() < deadline:
        new = sorted((await _seen(handle)) - before)
        if new:
            print(new[-1], flush=True)
            return 0
        await asyncio.sleep(0.5)
    _say(
        f"triggered {args.name}, but no new run appeared within {TRIGGER_WAIT:.0f} s: with overlap skip a run still"
        " running means none starts (`--overlap allow-all` starts one anyway); see `agentvm schedule show"
        f" {args.name}`"
    )
    return 0


async def main(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """One ``agentvm schedule`` command; the name is checked before connecting."""
    planned = plan(args, env) if args.action == "add" else None  # a bad option exits 2 even without a service
    if args.action != "list":
        schedspec.check_name(args.name)
        schedspec.check_note(getattr(args, "note", None))
    settings = config.load(env, need_host=False)
    client = await config.connect(settings, env)
    try:
        if planned is not None:
            return await _add(client, settings, args, planned)
        return await _act(client, args)
    except Exception as exc:
        if _is(exc, "NOT_FOUND"):
            return _not_found(args.name)
        raise


async def _act(client: Any, args: argparse.Namespace) -> int:
    if args.action == "list":
        rows = await _list(client)
        print(json.dumps(rows, indent=2, ensure_ascii=False) if args.json else schedview.format_list(rows))
        return 0
    if args.action == "show":
        d = await describe(client, args.name)
        print(json.dumps(d, indent=2, ensure_ascii=False) if args.json else schedview.format_show(d))
        return 0
    if args.action == "trigger":
        return await _trigger(client, args)
    handle = client.get_schedule_handle(schedspec.schedule_id(args.name))
    if args.action == "pause":
        await handle.pause(note=args.note or "paused with agentvm schedule pause")
        _say(f"schedule {args.name} paused (runs already started go on; `agentvm schedule resume {args.name}`)")
    elif args.action == "resume":
        await handle.unpause(note=args.note or "resumed with agentvm schedule resume")
        _say(f"schedule {args.name} resumed")
    else:
        await handle.delete()
        _say(f"schedule {args.name} deleted (runs already started go on)")
    return 0
