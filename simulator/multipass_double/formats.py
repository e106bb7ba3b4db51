"""Output formats of Multipass 1.16.3 (``src/client/cli/formatter/*``).

JSON is byte-compatible with Qt's ``QJsonDocument::toJson(Indented)``: 4-space indent, sorted keys,
``[`` newline indent ``]`` for empty containers, integral doubles without a fraction, a final newline.
"""

from __future__ import annotations

import math
from typing import Any

# -- Qt JSON ---------------------------------------------------------------------------------


_QT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _qt_string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in _QT_ESCAPES:
            out.append(_QT_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _qt_number(value: float | int) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if math.isfinite(value) and value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _qt_value(value: Any, indent: int) -> str:
    pad = " " * indent
    inner = " " * (indent + 4)
    if isinstance(value, dict):
        if not value:
            return "{\n" + pad + "}"
        items = [f"{inner}{_qt_string(k)}: {_qt_value(value[k], indent + 4)}" for k in sorted(value)]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list):
        if not value:
            return "[\n" + pad + "]"
        items = [inner + _qt_value(v, indent + 4) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    if isinstance(value, str):
        return _qt_string(value)
    if value is None:
        return "null"
    return _qt_number(value)


def qt_json(document: dict[str, Any]) -> str:
    return _qt_value(document, 0) + "\n"


# -- human-readable sizes (MemorySize::human_readable) ----------------------------------------


def human_readable(size: int) -> str:
    units = ["B", "KiB", "MiB", "GiB"]
    value = float(size)
    unit = 0
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{size}B"
    return f"{value:.1f}{units[unit]}"


# -- list -------------------------------------------------------------------------------------
# An entry: {"name", "state", "ipv4": [...], "release": "24.04 LTS" (image release title or "")}


def _list_release(entry: dict[str, Any]) -> str:
    return f"Ubuntu {entry['release']}" if entry["release"] else "Not Available"


def list_json(entries: list[dict[str, Any]]) -> str:
    rows = [
        {"name": e["name"], "state": e["state"], "ipv4": list(e["ipv4"]), "release": _list_release(e)} for e in entries
    ]
    return qt_json({"list": rows})


def list_table(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "No instances found.\n"
    width = max(24, max(len(e["name"]) for e in entries) + 1)
    out = [f"{'Name':<{width}}{'State':<18}{'IPv4':<17}Image\n"]
    for e in sorted(entries, key=lambda e: e["name"]):
        ips = e["ipv4"]
        out.append(f"{e['name']:<{width}}{e['state']:<18}{(ips[0] if ips else '--'):<17}{_list_release(e)}\n")
        out.extend(f"{'':<{width}}{'':<18}{ip:<17}\n" for ip in ips[1:])
    return "".join(out)


def list_csv(entries: list[dict[str, Any]]) -> str:
    out = ["Name,State,IPv4,IPv6,Release,AllIPv4\n"]
    for e in sorted(entries, key=lambda e: e["name"]):
        ips = e["ipv4"]
        out.append(f"{e['name']},{e['state']},{ips[0] if ips else ''},,{_list_release(e)},{';'.join(ips)}\n")
    return "".join(out)


def list_yaml(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "{}\n"
    out = []
    for e in sorted(entries, key=lambda e: e["name"]):
        out.append(f"{e['name']}:\n  - state: {e['state']}\n    ipv4:\n")
        if e["ipv4"]:
            out.extend(f"      - {ip}\n" for ip in e["ipv4"])
        else:
            out.append("      []\n")
        out.append(f"    release: {_list_release(e)}\n")
    return "".join(out)


def snapshots_list_json(snapshots: dict[str, dict[str, dict[str, str]]]) -> str:
    return qt_json({"errors": [], "info": snapshots})


def snapshots_list_table(snapshots: dict[str, dict[str, dict[str, str]]]) -> str:
    rows = [(inst, snap, d["parent"], d["comment"]) for inst, snaps in snapshots.items() for snap, d in snaps.items()]
    if not rows:
        return "No snapshots found.\n"
    width = max(9, max(len(r[0]) for r in rows) + 1)
    swidth = max(9, max(len(r[1]) for r in rows) + 1)
    out = [f"{'Instance':<{width}}{'Snapshot':<{swidth}}{'Parent':<{swidth}}Comment\n"]
    for inst, snap, parent, comment in sorted(rows):
        first = comment.replace("\r\n", "\n").split("\n", 1)[0]
        out.append(f"{inst:<{width}}{snap:<{swidth}}{parent or '--':<{swidth}}{first or '--'}\n")
    return "".join(out)


# -- info -------------------------------------------------------------------------------------
# An instance entry: {"name", "state", "image_hash", "image_release", "release", "cpu_count",
#  "snapshot_count" (int), "load": [..], "disk_used", "disk_total", "memory_used", "memory_total"
#  (str/int or ""), "ipv4": [...], "snapshots": {name: snapshot entry} or absent}


def _instance_details(e: dict[str, Any]) -> dict[str, Any]:
    disk: dict[str, Any] = {}
    if e["disk_used"] != "":
        disk["used"] = str(e["disk_used"])
    if e["disk_total"] != "":
        disk["total"] = str(e["disk_total"])
    memory: dict[str, Any] = {}
    if e["memory_used"] != "":
        memory["used"] = int(e["memory_used"])
    if e["memory_total"] != "":
        memory["total"] = int(e["memory_total"])
    return {
        "state": e["state"],
        "image_hash": e["image_hash"],
        "image_release": e["image_release"],
        "release": e["release"],
        "cpu_count": e["cpu_count"],
        "snapshot_count": str(e["snapshot_count"]),
        "load": list(e["load"]),
        "disks": {"sda1": disk},
        "memory": memory,
        "ipv4": list(e["ipv4"]),
        "mounts": {},
    }


def _snapshot_details(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "size": "",
        "cpu_count": str(s["cpus"]),
        "disk_space": human_readable(int(s["disk"])),
        "memory_size": human_readable(int(s["memory"])),
        "mounts": {},
        "created": s["created_display"],
        "parent": s["parent"],
        "children": list(s["children"]),
        "comment": s["comment"],
    }


def info_json(instances: list[dict[str, Any]], snapshots: list[tuple[str, str, dict[str, Any]]]) -> str:
    info: dict[str, Any] = {}
    for e in instances:
        info[e["name"]] = _instance_details(e)
    for inst, snap, s in snapshots:
        info.setdefault(inst, {}).setdefault("snapshots", {})[snap] = _snapshot_details(s)
    return qt_json({"errors": [], "info": info})


def _usage(used: Any, total: Any) -> str:
    if used == "" or total == "":
        return "--"
    return f"{human_readable(int(used))} out of {human_readable(int(total))}"


def _instance_table(e: dict[str, Any]) -> str:
    rows = [("Name:", e["name"]), ("State:", e["state"]), ("Snapshots:", str(e["snapshot_count"]))]
    ips = e["ipv4"]
    rows.append(("IPv4:", ips[0] if ips else "--"))
    rows.extend(("", ip) for ip in ips[1:])
    rows.append(("Release:", e["release"] or "--"))
    image = e["image_hash"][:12] + (f" (Ubuntu {e['image_release']})" if e["image_release"] else "")
    rows.append(("Image hash:", image if e["image_hash"] else "Not Available"))
    rows.append(("CPU(s):", e["cpu_count"] or "--"))
    load = " ".join(f"{v:.2f}" for v in e["load"])
    rows.append(("Load:", load or "--"))
    rows.append(("Disk usage:", _usage(e["disk_used"], e["disk_total"])))
    rows.append(("Memory usage:", _usage(e["memory_used"], e["memory_total"])))
    rows.append(("Mounts:", "--"))
    return "".join(f"{k:<16}{v}\n" for k, v in rows)


def _snapshot_table(inst: str, snap: str, s: dict[str, Any]) -> str:
    rows = [
        ("Snapshot:", snap),
        ("Instance:", inst),
        ("CPU(s):", str(s["cpus"])),
        ("Disk space:", human_readable(int(s["disk"]))),
        ("Memory size:", human_readable(int(s["memory"]))),
        ("Mounts:", "--"),
        ("Created:", s["created_display"]),
        ("Parent:", s["parent"] or "--"),
    ]
    children = s["children"] or ["--"]
    rows.append(("Children:", children[0]))
    rows.extend(("", c) for c in children[1:])
    comment = s["comment"].replace("\r\n", "\n").replace("\n", "\n" + " " * 16) if s["comment"] else "--"
    rows.append(("Comment:", comment))
    return "".join(f"{k:<16}{v}\n" for k, v in rows)


def info_table(instances: list[dict[str, Any]], snapshots: list[tuple[str, str, dict[str, Any]]]) -> str:
    blocks = [_instance_table(e) for e in sorted(instances, key=lambda e: e["name"])]
    blocks += [_snapshot_table(i, n, s) for i, n, s in sorted(snapshots, key=lambda t: (t[0], t[1]))]
    if not blocks:
        return "\n"
    return "\n".join(blocks)


def info_csv(instances: list[dict[str, Any]]) -> str:
    out = [
        "Name,State,Ipv4,Ipv6,Release,Image hash,Image release,Load,Disk usage,Disk total,"
        "Memory usage,Memory total,Mounts,AllIPv4,CPU(s),Snapshots\n"
    ]
    for e in sorted(instances, key=lambda e: e["name"]):
        ips = e["ipv4"]
        load = " ".join(f"{v:.2f}" for v in e["load"])
        out.append(
            f"{e['name']},{e['state']},{ips[0] if ips else ''},,{e['release']},{e['image_hash']},"
            f"{e['image_release']},{load},{e['disk_used']},{e['disk_total']},{e['memory_used']},"
            f"{e['memory_total']},,{';'.join(ips)},{e['cpu_count']},{e['snapshot_count']}\n"
        )
    return "".join(out)


def _yaml_scalar(value: Any) -> str:
    if value in ("", None):
        return "~"
    return str(value)


def info_yaml(instances: list[dict[str, Any]]) -> str:
    out = ["errors:\n  - ~\n"]
    for e in sorted(instances, key=lambda e: e["name"]):
        out.append(f"{e['name']}:\n  - state: {e['state']}\n    snapshot_count: {e['snapshot_count']}\n")
        out.append(f"    image_hash: {e['image_hash']}\n    image_release: {_yaml_scalar(e['image_release'])}\n")
        out.append(f"    release: {_yaml_scalar(e['release'])}\n    cpu_count: {_yaml_scalar(e['cpu_count'])}\n")
        if e["load"]:
            out.append("    load:\n" + "".join(f"      - {v}\n" for v in e["load"]))
        else:
            out.append("    load: ~\n")
        out.append(
            "    disks:\n      - sda1:\n"
            f"          used: {_yaml_scalar(e['disk_used'])}\n          total: {_yaml_scalar(e['disk_total'])}\n"
        )
        out.append(f"    memory:\n      usage: {_yaml_scalar(e['memory_used'])}\n")
        out.append(f"      total: {_yaml_scalar(e['memory_total'])}\n")
        if e["ipv4"]:
            out.append("    ipv4:\n" + "".join(f"      - {ip}\n" for ip in e["ipv4"]))
        else:
            out.append("    ipv4:\n      []\n")
        out.append("    mounts: ~\n")
    return "".join(out)


# -- version ----------------------------------------------------------------------------------


def version_output(fmt: str, client: str, daemon: str | None) -> str:
    if fmt == "json":
        doc = {"multipass": client}
        if daemon is not None:
            doc["multipassd"] = daemon
        return qt_json(doc)
    if fmt == "yaml":
        return f"multipass: {client}\n" + (f"multipassd: {daemon}\n" if daemon else "")
    if fmt == "csv":
        return "Multipass,Multipassd\n" + f"{client},{daemon or ''}\n"
    return f"multipass   {client}\n" + (f"multipassd  {daemon}\n" if daemon else "")
