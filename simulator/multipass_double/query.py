"""list, info, version, find, get."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import locale
import subprocess
import time
from typing import Any

from multipass_double import MULTIPASS_VERSION, formats
from multipass_double.backend import BackendError
from multipass_double.common import IMAGES, Context, Fail, errors_occurred, failed, live_state, usage
from multipass_double.qtargs import Option, parse
from multipass_double.state import Record


def _format(value: str | None) -> str:
    fmt = value or "table"
    if fmt not in formats.FORMATS:
        raise usage("Invalid format type given.")
    return fmt


def _ipv4(ctx: Context, rec: Record, state: str) -> list[str]:
    if state != "Running":
        return []
    try:
        return ctx.backend.ipv4(ctx.store.spec(rec)) or ["N/A"]
    except BackendError:
        return ["N/A"]


def _list_entry(ctx: Context, rec: Record, with_ipv4: bool) -> formats.ListedInstance:
    state = live_state(ctx, rec)
    ipv4 = _ipv4(ctx, rec, state) if with_ipv4 else []
    return formats.ListedInstance(rec["name"], state, ipv4=tuple(ipv4), release=rec["image_release"])


def _all_records(ctx: Context) -> list[Record]:
    instances = ctx.store.snapshot()["instances"]
    # The daemon lists operative instances first, then deleted ones.
    return sorted(instances.values(), key=lambda r: (r["deleted"], r["created"]))


def cmd_list(ctx: Context, args: list[str]) -> int:
    """``src/client/cli/cmd/list.cpp`` and ``Daemon::list``."""
    p = parse(args, (Option(("format",), True), Option(("snapshots",)), Option(("no-ipv4",))))
    if p.positionals:
        raise usage("This command takes no arguments")
    if p.is_set("snapshots") and p.is_set("no-ipv4"):
        raise usage("IP addresses are not applicable in conjunction with listing snapshots")
    fmt = _format(p.value("format"))
    if p.is_set("snapshots"):
        snaps = [
            formats.ListedSnapshot(
                rec["name"], snap, parent=data["parent"], comment=data["comment"], created=_epoch(data["created"])
            )
            for rec in _all_records(ctx)
            for snap, data in rec["snapshots"].items()
        ]
        ctx.print(formats.format_snapshots_list(fmt, snaps))
        return 0
    entries = [_list_entry(ctx, rec, not p.is_set("no-ipv4")) for rec in _all_records(ctx)]
    ctx.print(formats.format_list(fmt, entries))
    return 0


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def _runtime(ctx: Context, rec: Record) -> dict[str, Any]:
    try:
        info = ctx.backend.runtime_info(ctx.store.spec(rec))
    except BackendError:
        return {}
    return info


def instance_details(ctx: Context, rec: Record, runtime: bool) -> formats.InstanceDetails:
    """``Daemon::populate_instance_info``. A VM's nproc/free/df would show the size it was given, so
    the totals come from the launch specs; usage and load are measured inside the instance."""
    state = live_state(ctx, rec)
    base = formats.InstanceDetails(
        rec["name"],
        state,
        image_hash=rec["image_hash"],
        image_release=rec["image_release"],
        num_snapshots=len(rec["snapshots"]),
    )
    if not runtime or state != "Running":
        return base
    info = _runtime(ctx, rec)
    ipv4 = tuple(_ipv4(ctx, rec, state))
    if not info:
        return dataclasses.replace(base, ipv4=ipv4)
    return dataclasses.replace(
        base,
        release=info.get("release") or rec["image_release"],
        cpu_count=str(rec["cpus"]),
        load=info["load"],
        disk_usage=str(min(_disk_used(ctx, rec), rec["disk"])),
        disk_total=str(rec["disk"]),
        memory_usage=str(min(int(info["memory"]["used"]), rec["memory"])),
        memory_total=str(rec["memory"]),
        ipv4=ipv4,
    )


def _disk_used(ctx: Context, rec: Record) -> int:
    """Bytes of the instance's own disk: its upper dir, its layers and the image rootfs it stands on."""
    spec = ctx.store.spec(rec)
    paths = [spec.directory / "upper", *spec.layers, ctx.backend.ensure_image().rootfs]
    try:
        proc = subprocess.run(["du", "-scb", *map(str, paths)], capture_output=True, text=True, timeout=10, check=False)
        return int(proc.stdout.strip().splitlines()[-1].split()[0])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return 0


def _children(rec: Record, snap: str) -> tuple[str, ...]:
    return tuple(sorted(n for n, s in rec["snapshots"].items() if s["parent"] == snap))


def user_locale_time(epoch: float) -> str:
    """``FormatUtils::convert_to_user_locale``: ``%c %Z`` of the local time, in the user's LC_TIME."""
    with contextlib.suppress(locale.Error):
        locale.setlocale(locale.LC_TIME, "")
    return time.strftime("%c %Z", time.localtime(epoch))


def snapshot_details(rec: Record, snap: str) -> formats.SnapshotDetails:
    """``populate_snapshot_info``: the snapshot's specs, sizes human-readable; no size (a daemon TODO)."""
    data = rec["snapshots"][snap]
    created = _epoch(data["created"])
    return formats.SnapshotDetails(
        rec["name"],
        snap,
        cpu_count=str(data["cpus"]),
        disk_total=formats.human_readable(int(data["disk"])),
        memory_total=formats.human_readable(int(data["memory"])),
        created=user_locale_time(created),
        created_at=created,
        parent=data["parent"],
        children=_children(rec, snap),
        comment=data["comment"],
    )


def _snapshot_order(rec: Record) -> list[str]:
    return sorted(rec["snapshots"], key=lambda s: rec["snapshots"][s].get("index", 0))


def _info_details(ctx: Context, targets: list[str], snapshots_only: bool, runtime: bool) -> list[formats.Details]:
    """``Daemon::info``: unknown instances fail first (all named); then, instance by instance (operative
    ones, then deleted ones), the picked snapshots and the instance (or all its snapshots with
    ``--snapshots``); the first unknown snapshot ends it."""
    st = ctx.store.snapshot()["instances"]
    picks: dict[str, tuple[bool, list[str]]] = {}
    for target in targets or sorted(st):
        name, dot, snap = target.partition(".")
        whole, chosen = picks.get(name, (False, []))
        picks[name] = (whole or not dot, [*chosen, snap] if dot and snap not in chosen else chosen)
    missing = [name for name in picks if name not in st]
    if missing:
        raise errors_occurred("info", [f'instance "{name}" does not exist' for name in missing])
    order = sorted(picks, key=lambda n: (st[n]["deleted"], list(picks).index(n)))
    details: list[formats.Details] = []
    for name in order:
        rec = st[name]
        whole, chosen = picks[name]
        for snap in chosen:
            if snap not in rec["snapshots"]:
                raise errors_occurred("info", [f"No such snapshot: {name}.{snap}"])
            if not (whole and snapshots_only):
                details.append(snapshot_details(rec, snap))
        if whole and snapshots_only:
            details.extend(snapshot_details(rec, s) for s in _snapshot_order(rec))
        elif whole:
            details.append(instance_details(ctx, rec, runtime))
    return details


def cmd_info(ctx: Context, args: list[str]) -> int:
    """``src/client/cli/cmd/info.cpp`` and ``Daemon::info``."""
    opts = (
        Option(("format",), True),
        Option(("snapshots",)),
        Option(("all",)),
        Option(("no-runtime-information",)),
    )
    p = parse(args, opts)
    fmt = _format(p.value("format"))
    if p.positionals and p.is_set("all"):
        raise usage(f"Cannot specify name{'s' if len(p.positionals) > 1 else ''} when --all option set")
    if p.is_set("all"):
        ctx.eprint(
            "Warning: the `--all` flag for the `info` command is deprecated. Please use `info` with no "
            "positional arguments for the same effect.\n"
        )
    targets = list(dict.fromkeys(p.positionals))
    has_instance = any("." not in t for t in targets)
    has_snapshot = any("." in t for t in targets)
    if has_instance and has_snapshot and fmt == "csv" and not p.is_set("snapshots"):
        raise usage("Mixed snapshot and instance arguments are not supported with CSV format")
    details = _info_details(ctx, targets, p.is_set("snapshots"), not p.is_set("no-runtime-information"))
    ctx.print(formats.format_info(fmt, details, p.is_set("snapshots")))
    return 0


def cmd_version(ctx: Context, args: list[str]) -> int:
    p = parse(args, (Option(("format",), True),))
    fmt = _format(p.value("format"))
    ctx.print(formats.format_version(fmt, MULTIPASS_VERSION, formats.VersionReply(MULTIPASS_VERSION)))
    return 0


IMAGE_VERSION = "20260501"


def cmd_find(ctx: Context, args: list[str]) -> int:
    """``src/client/cli/cmd/find.cpp``; the daemon's images are the double's fixed catalogue (no
    blueprints), a search string is not applied."""
    opts = (
        Option(("format",), True),
        Option(("show-unsupported",)),
        Option(("only-images",)),
        Option(("only-blueprints",)),
        Option(("force-update",)),
    )
    p = parse(args, opts)
    if p.is_set("only-images") and p.is_set("only-blueprints"):
        raise usage('Specify one of "--only-images", "--only-blueprints" or omit to fetch both')
    if p.is_set("force-update") and p.is_set("only-blueprints"):
        raise usage("Force updating blueprints is not currently supported")
    if len(p.positionals) > 1:
        raise usage("Wrong number of arguments")
    if p.positionals and p.positionals[0].count(":") > 1:
        raise usage("Invalid remote and search string supplied")
    fmt = _format(p.value("format"))
    images = tuple(
        formats.ImageInfo(tuple((a, "") for a in aliases), os="Ubuntu", release=title, version=IMAGE_VERSION)
        for title, aliases in IMAGES.items()
    )
    reply = formats.FindReply(
        images=images if not p.is_set("only-blueprints") else (),
        show_images=not p.is_set("only-blueprints"),
        show_blueprints=not p.is_set("only-images"),
    )
    ctx.print(formats.format_find(fmt, reply))
    return 0


def cmd_get(ctx: Context, args: list[str]) -> int:
    p = parse(args, (Option(("raw",)), Option(("keys",))))
    if p.is_set("keys"):
        ctx.print("client.primary-name\nlocal.driver\nlocal.privileged-mounts\n")
        return 0
    if len(p.positionals) != 1:
        raise usage("Need exactly one setting key")
    key = p.positionals[0]
    static = {"local.driver": "qemu", "local.privileged-mounts": "true", "client.primary-name": "primary"}
    if key in static:
        ctx.print(static[key] + "\n")
        return 0
    parts = key.split(".")
    if len(parts) == 3 and parts[0] == "local" and parts[2] in ("cpus", "memory", "disk"):
        rec = ctx.store.snapshot()["instances"].get(parts[1])
        if rec is None:
            raise failed("get", f'instance "{parts[1]}" does not exist')
        value = rec[parts[2]]
        ctx.print(f"{value}\n" if parts[2] == "cpus" else f"{formats.human_readable(int(value))}\n")
        return 0
    raise Fail(1, f"Unrecognized settings key: '{key}'\n")
