"""list, info, version, find, get."""

from __future__ import annotations

import datetime as dt
import subprocess
from typing import Any

from multipass_double import MULTIPASS_VERSION, formats
from multipass_double.backend import BackendError
from multipass_double.common import IMAGES, Context, Fail, failed, live_state, usage
from multipass_double.qtargs import Option, parse
from multipass_double.state import Record

FORMATS = ("table", "json", "csv", "yaml")


def _format(value: str | None) -> str:
    fmt = value or "table"
    if fmt not in FORMATS:
        raise usage("Invalid format type given.")
    return fmt


def _ipv4(ctx: Context, rec: Record, state: str) -> list[str]:
    if state != "Running":
        return []
    try:
        return ctx.backend.ipv4(ctx.store.spec(rec)) or ["N/A"]
    except BackendError:
        return ["N/A"]


def _list_entry(ctx: Context, rec: Record, with_ipv4: bool) -> dict[str, Any]:
    state = live_state(ctx, rec)
    return {
        "name": rec["name"],
        "state": state,
        "ipv4": _ipv4(ctx, rec, state) if with_ipv4 else [],
        "release": rec["image_release"],
    }


def _all_records(ctx: Context) -> list[Record]:
    instances = ctx.store.snapshot()["instances"]
    # The daemon lists operative instances first, then deleted ones.
    return sorted(instances.values(), key=lambda r: (r["deleted"], r["created"]))


def cmd_list(ctx: Context, args: list[str]) -> int:
    p = parse(args, (Option(("format",), True), Option(("snapshots",)), Option(("no-ipv4",))))
    fmt = _format(p.value("format"))
    if p.positionals:
        raise usage("This command takes no arguments")
    if p.is_set("snapshots"):
        if p.is_set("no-ipv4"):
            raise usage("IP addresses are not applicable in conjunction with listing snapshots")
        return _list_snapshots(ctx, fmt)
    entries = [_list_entry(ctx, rec, not p.is_set("no-ipv4")) for rec in _all_records(ctx)]
    render = {"json": formats.list_json, "csv": formats.list_csv, "yaml": formats.list_yaml}.get(
        fmt, formats.list_table
    )
    ctx.print(render(entries))
    return 0


def _list_snapshots(ctx: Context, fmt: str) -> int:
    table: dict[str, dict[str, dict[str, str]]] = {}
    for rec in _all_records(ctx):
        for snap, data in rec["snapshots"].items():
            table.setdefault(rec["name"], {})[snap] = {"comment": data["comment"], "parent": data["parent"]}
    ctx.print(formats.snapshots_list_json(table) if fmt == "json" else formats.snapshots_list_table(table))
    return 0


def _runtime(ctx: Context, rec: Record) -> dict[str, Any]:
    try:
        info = ctx.backend.runtime_info(ctx.store.spec(rec))
    except BackendError:
        return {}
    return info


def instance_entry(ctx: Context, rec: Record, runtime: bool) -> dict[str, Any]:
    """The info entry of an instance. A VM's nproc/free/df would show the size it was given, so the
    totals come from the launch specs; usage and load are measured inside the instance."""
    state = live_state(ctx, rec)
    entry: dict[str, Any] = {
        "name": rec["name"],
        "state": state,
        "image_hash": rec["image_hash"],
        "image_release": rec["image_release"],
        "release": "",
        "cpu_count": "",
        "snapshot_count": len(rec["snapshots"]),
        "load": [],
        "disk_used": "",
        "disk_total": "",
        "memory_used": "",
        "memory_total": "",
        "ipv4": [],
    }
    if runtime and state == "Running":
        info = _runtime(ctx, rec)
        if info:
            entry.update(
                release=info.get("release") or f"Ubuntu {rec['image_release']}",
                cpu_count=str(rec["cpus"]),
                load=[float(v) for v in info.get("load", [])],
                disk_used=str(min(_disk_used(ctx, rec), rec["disk"])),
                disk_total=str(rec["disk"]),
                memory_used=min(int(info["memory"]["used"]), rec["memory"]),
                memory_total=rec["memory"],
            )
        entry["ipv4"] = _ipv4(ctx, rec, state)
    return entry


def _disk_used(ctx: Context, rec: Record) -> int:
    """Bytes of the instance's own disk: its upper dir, its layers and the image rootfs it stands on."""
    spec = ctx.store.spec(rec)
    paths = [spec.directory / "upper", *spec.layers, ctx.backend.ensure_image().rootfs]
    try:
        proc = subprocess.run(["du", "-scb", *map(str, paths)], capture_output=True, text=True, timeout=10, check=False)
        return int(proc.stdout.strip().splitlines()[-1].split()[0])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return 0


def _children(rec: Record, snap: str) -> list[str]:
    return sorted(n for n, s in rec["snapshots"].items() if s["parent"] == snap)


def snapshot_entry(rec: Record, snap: str) -> dict[str, Any]:
    data = rec["snapshots"][snap]
    created = dt.datetime.fromisoformat(data["created"]).astimezone()
    return {**data, "children": _children(rec, snap), "created_display": created.strftime("%c %Z")}


def _select_info(
    ctx: Context, names: list[str], snapshots_only: bool
) -> tuple[list[Record], list[tuple[str, str, dict[str, Any]]]]:
    st = ctx.store.snapshot()["instances"]
    targets = names or sorted(st)
    errors, instances, snaps = [], [], []
    for target in targets:
        name, dot, snap = target.partition(".")
        rec = st.get(name)
        if rec is None:
            errors.append(f'instance "{name}" does not exist')
        elif dot and snap not in rec["snapshots"]:
            errors.append(f'snapshot "{snap}" does not exist')
        elif dot:
            snaps.append((name, snap, snapshot_entry(rec, snap)))
        elif snapshots_only:
            snaps.extend((name, s, snapshot_entry(rec, s)) for s in sorted(rec["snapshots"]))
        else:
            instances.append(rec)
    if errors:
        raise failed("info", "The following errors occurred:\n" + "\n".join(errors))
    return instances, snaps


def cmd_info(ctx: Context, args: list[str]) -> int:
    opts = (
        Option(("format",), True),
        Option(("snapshots",)),
        Option(("all",)),
        Option(("no-runtime-information",)),
    )
    p = parse(args, opts)
    fmt = _format(p.value("format"))
    if p.is_set("all"):
        ctx.eprint(
            "Warning: the `--all` flag for the `info` command is deprecated. Please use `info` with no "
            "positional arguments for the same effect.\n"
        )
    records, snaps = _select_info(ctx, list(dict.fromkeys(p.positionals)), p.is_set("snapshots"))
    if fmt == "csv" and records and snaps:
        raise usage("Mixed snapshot and instance arguments are not supported with CSV format")
    entries = [instance_entry(ctx, rec, not p.is_set("no-runtime-information")) for rec in records]
    if fmt == "json":
        ctx.print(formats.info_json(entries, snaps))
    elif fmt == "csv":
        ctx.print(formats.info_csv(entries))
    elif fmt == "yaml":
        ctx.print(formats.info_yaml(entries))
    else:
        ctx.print(formats.info_table(entries, snaps))
    return 0


def cmd_version(ctx: Context, args: list[str]) -> int:
    p = parse(args, (Option(("format",), True),))
    fmt = _format(p.value("format"))
    ctx.print(formats.version_output(fmt, MULTIPASS_VERSION, MULTIPASS_VERSION))
    return 0


def cmd_find(ctx: Context, args: list[str]) -> int:
    opts = (
        Option(("format",), True),
        Option(("show-unsupported",)),
        Option(("only-images",)),
        Option(("only-blueprints",)),
        Option(("force-update",)),
    )
    p = parse(args, opts)
    fmt = _format(p.value("format"))
    images: dict[str, Any] = {}
    for title, aliases in IMAGES.items():
        shown = [a for a in aliases if len(a) > 1 and a not in ("ubuntu", "default")]
        images[shown[0]] = {
            "aliases": shown[1:],
            "os": "Ubuntu",
            "release": title,
            "remote": "",
            "version": "20260501",
        }
    if fmt == "json":
        ctx.print(formats.qt_json({"blueprints (deprecated)": {}, "errors": [], "images": images}))
    else:
        lines = [f"{'Image':<28}{'Aliases':<18}{'Version':<17}Description\n"]
        lines += [
            f"{k:<28}{','.join(v['aliases']):<18}{v['version']:<17}Ubuntu {v['release']}\n" for k, v in images.items()
        ]
        ctx.print("".join(lines) + "\n")
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
