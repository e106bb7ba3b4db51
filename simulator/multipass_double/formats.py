"""Output formats of Multipass 1.16.3: the client's formatters (``src/client/cli/formatter/``).

The inputs mirror the daemon's replies (``src/rpc/multipass.proto``): every value is the string the
daemon puts in its reply (sizes in bytes as decimal strings, ``load`` as ``/proc/loadavg``'s first three
fields, snapshot sizes already human-readable), so each formatter can do exactly what its C++
counterpart does with it:

- ``json_formatter.cpp``: Qt's ``QJsonDocument::toJson(Indented)``: 4-space indent, sorted keys, ``[``
  newline ``]`` for empty containers, integral doubles without a fraction, a final newline;
- ``yaml_formatter.cpp``: yaml-cpp's block emitter with indent 2 (``src/utils/yaml_node_utils.cpp``),
  with Multipass's yaml-cpp fork quoting every string that holds a colon;
- ``csv_formatter.cpp`` and ``table_formatter.cpp``: fmt layouts; rows sorted by
  ``format::sorted`` (``include/multipass/cli/format_utils.h``): instances before snapshots, the
  primary instance first, then by name, snapshots of one instance by creation time.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

PETENV = "primary"  # client.primary-name's default; format::sorted puts it first
DEFAULT_ID = -1  # mp::default_id: an id mapping to the instance's default user/group
COL_BUFFER = 3  # format::col_buffer

# -- the replies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    source_path: str
    target_path: str
    uid_mappings: tuple[tuple[int, int], ...] = ()  # (host id, instance id)
    gid_mappings: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class ListedInstance:
    """``ListVMInstance``: one row of ``list``. ``release`` is the image's release title or ""."""

    name: str
    state: str
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    release: str = ""


@dataclass(frozen=True)
class ListedSnapshot:
    """``ListVMSnapshot``: one row of ``list --snapshots``; ``created`` (epoch seconds) only orders rows."""

    instance: str
    snapshot: str
    parent: str = ""
    comment: str = ""
    created: float = 0.0


@dataclass(frozen=True)
class InstanceDetails:
    """``DetailedInfoItem`` with ``instance_info``. Empty strings are fields the daemon left unset
    (a stopped instance has no runtime information); ``num_snapshots`` None = not reported."""

    name: str
    state: str
    image_hash: str = ""
    image_release: str = ""
    release: str = ""
    cpu_count: str = ""
    load: str = ""
    disk_usage: str = ""
    disk_total: str = ""
    memory_usage: str = ""
    memory_total: str = ""
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    num_snapshots: int | None = None
    mounts: tuple[Mount, ...] = ()
    longest_path_len: int = 0


@dataclass(frozen=True)
class SnapshotDetails:
    """``DetailedInfoItem`` with ``snapshot_info``: ``created`` is the displayed creation time,
    ``created_at`` (epoch seconds) orders a instance's snapshots."""

    instance: str
    snapshot: str
    cpu_count: str = ""
    disk_total: str = ""
    memory_total: str = ""
    size: str = ""
    mounts: tuple[Mount, ...] = ()
    longest_path_len: int = 0
    created: str = ""
    created_at: float = 0.0
    parent: str = ""
    children: tuple[str, ...] = ()
    comment: str = ""


Details = InstanceDetails | SnapshotDetails


@dataclass(frozen=True)
class ImageInfo:
    """``FindReply_ImageInfo``: ``aliases`` are (alias, remote name) pairs, the image's id first."""

    aliases: tuple[tuple[str, str], ...]
    os: str = ""
    release: str = ""
    version: str = ""


@dataclass(frozen=True)
class FindReply:
    images: tuple[ImageInfo, ...] = ()
    blueprints: tuple[ImageInfo, ...] = ()
    show_images: bool = True
    show_blueprints: bool = True


@dataclass(frozen=True)
class UpdateInfo:
    version: str = ""
    title: str = ""
    description: str = ""
    url: str = ""


@dataclass(frozen=True)
class VersionReply:
    daemon: str = ""  # "" when the daemon did not answer
    update: UpdateInfo = field(default_factory=UpdateInfo)


# -- sorting and small helpers (format_utils, memory_size) -------------------------------------


def _sorted_instances(items: Iterable[ListedInstance]) -> list[ListedInstance]:
    return sorted(items, key=lambda i: (i.name != PETENV, i.name))


def _sorted_snapshots(items: Iterable[ListedSnapshot]) -> list[ListedSnapshot]:
    return sorted(items, key=lambda s: (s.instance != PETENV, s.instance, s.created))


def _details_key(d: Details) -> tuple[int, bool, str, float]:
    if isinstance(d, InstanceDetails):
        return (0, d.name != PETENV, d.name, 0.0)
    return (1, d.instance != PETENV, d.instance, d.created_at)


def _sorted_details(details: Iterable[Details]) -> list[Details]:
    return sorted(details, key=_details_key)


def _release_title(release: str) -> str:
    return f"Ubuntu {release}" if release else "Not Available"


def _f32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def human_readable(size: int) -> str:
    """``MemorySize::human_readable()``: one decimal of a float quotient, GiB/MiB/KiB, else bytes."""
    for unit, suffix in ((1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
        quotient = _f32(_f32(float(size)) / _f32(float(unit)))
        if quotient >= 1:
            return f"{quotient:.1f}{suffix}"
    return f"{size}B"


def _id_mapping(host: int, instance: int) -> str:
    return f"{host}:{'default' if instance == DEFAULT_ID else instance}"


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


def _qt_number(value: float) -> str:
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


# -- yaml-cpp's emitter ------------------------------------------------------------------------
# A node is a dict (block map, insertion order), a list (block sequence), a str, or None (null, "~").

_YAML_NULLS = ("", "~", "null", "Null", "NULL")
_YAML_START_INDICATORS = ",[]{}#&*!|>'\"%@`"
_YAML_BLANK_OR_BREAK = " \t\r\n"


def _yaml_not_printable(cp: int) -> bool:
    return (
        cp <= 0x08 or cp in (0x0B, 0x0C, 0x7F, 0xFEFF) or 0x0E <= cp <= 0x1F or 0x80 <= cp <= 0x84 or 0x86 <= cp <= 0x9F
    )


def _yaml_plain_ok(text: str) -> bool:
    """``Utils::IsValidPlainScalar`` (block context) of Multipass's yaml-cpp fork (colons never plain)."""
    if text in _YAML_NULLS:
        return False
    first = text[0]
    if first in _YAML_BLANK_OR_BREAK or first in _YAML_START_INDICATORS:
        return False
    if first in "-?:" and (len(text) == 1 or text[1] in _YAML_BLANK_OR_BREAK):
        return False
    if text.endswith(" "):
        return False
    for i, ch in enumerate(text):
        if ch in ":\t\r\n" or _yaml_not_printable(ord(ch)):
            return False
        if ch in " " and text[i + 1 : i + 2] == "#":
            return False
    return True


_YAML_DQ_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b"}


def _yaml_double_quoted(text: str) -> str:
    out = ['"']
    for ch in text:
        cp = ord(ch)
        if ch in _YAML_DQ_ESCAPES:
            out.append(_YAML_DQ_ESCAPES[ch])
        elif cp < 0x20 or 0x80 <= cp <= 0xA0:
            out.append(f"\\x{cp:02x}")
        elif cp == 0xFEFF:
            out.append("\\ufeff")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _yaml_scalar(text: str) -> str:
    return text if _yaml_plain_ok(text) else _yaml_double_quoted(text)


def _yaml_after_key(value: Any, col: int) -> str:
    if value is None:
        return " ~"
    if isinstance(value, str):
        return " " + _yaml_scalar(value)
    child = col + 2
    if not value:
        return "\n" + " " * child + ("[]" if isinstance(value, list) else "{}")
    return "\n" + " " * child + _yaml_block(value, child)


def _yaml_after_dash(value: Any, col: int) -> str:
    if value is None:
        return " ~"
    if isinstance(value, str):
        return " " + _yaml_scalar(value)
    if not value:
        return " []" if isinstance(value, list) else " {}"
    return " " + _yaml_block(value, col + 2)


def _yaml_block(node: dict[str, Any] | list[Any], col: int) -> str:
    """``node`` as a block whose first line starts at column ``col`` (already indented by the caller)."""
    sep = "\n" + " " * col
    if isinstance(node, dict):
        return sep.join(_yaml_scalar(k) + ":" + _yaml_after_key(v, col) for k, v in node.items())
    return sep.join("-" + _yaml_after_dash(v, col) for v in node)


def emit_yaml(node: dict[str, Any] | list[Any] | None) -> str:
    """``utils::emit_yaml``: an undefined node emits nothing; then ``YAML::Newline``."""
    if node is None:
        return "\n"
    if not node:
        return ("[]" if isinstance(node, list) else "{}") + "\n"
    return _yaml_block(node, 0) + "\n"


def _yaml_opt(text: str) -> str | None:
    return text or None


# -- list ------------------------------------------------------------------------------------


def list_json(items: Sequence[ListedInstance]) -> str:
    """``json_formatter.cpp`` generate_instances_list: the daemon's order, not sorted."""
    rows = [
        {"name": i.name, "state": i.state, "ipv4": list(i.ipv4), "release": _release_title(i.release)} for i in items
    ]
    return qt_json({"list": rows})


def list_table(items: Sequence[ListedInstance]) -> str:
    if not items:
        return "No instances found.\n"
    width = max(max(len(i.name) for i in items) + COL_BUFFER, len("Name") + COL_BUFFER, 24)
    out = [f"{'Name':<{width}}{'State':<18}{'IPv4':<17}Image\n"]
    for i in _sorted_instances(items):
        first = i.ipv4[0] if i.ipv4 else "--"
        out.append(f"{i.name:<{width}}{i.state:<18}{first:<17}{_release_title(i.release)}\n")
        out.extend(f"{'':<{width}}{'':<18}{ip}\n" for ip in i.ipv4[1:])
    return "".join(out)


def list_csv(items: Sequence[ListedInstance]) -> str:
    out = ["Name,State,IPv4,IPv6,Release,AllIPv4\n"]
    for i in _sorted_instances(items):
        first4 = i.ipv4[0] if i.ipv4 else ""
        first6 = i.ipv6[0] if i.ipv6 else ""
        out.append(f'{i.name},{i.state},{first4},{first6},{_release_title(i.release)},"{",".join(i.ipv4)}"\n')
    return "".join(out)


def list_yaml(items: Sequence[ListedInstance]) -> str:
    root: dict[str, Any] = {}
    for i in _sorted_instances(items):
        node = {"state": i.state, "ipv4": list(i.ipv4), "release": _release_title(i.release)}
        root.setdefault(i.name, []).append(node)
    return emit_yaml(root or None)


# -- list --snapshots ------------------------------------------------------------------------


def snapshots_list_json(items: Sequence[ListedSnapshot]) -> str:
    info: dict[str, dict[str, Any]] = {}
    for s in items:
        info.setdefault(s.instance, {})[s.snapshot] = {"parent": s.parent, "comment": s.comment}
    return qt_json({"errors": [], "info": info})


_NEWLINE = re.compile(rb"\r\n|\n")


def _truncated_comment(comment: str) -> str:
    """A comment in the snapshot table: cut at 50 bytes or before its first line break, then "…"."""
    raw = comment.encode("utf-8", "surrogateescape")
    limit = 50
    match = _NEWLINE.search(raw)
    if match:
        limit = min(match.start() + 1, limit)
    if len(raw) > limit:
        return raw[: limit - 1].decode("utf-8", "surrogateescape") + "…"
    return comment


def snapshots_list_table(items: Sequence[ListedSnapshot]) -> str:
    if not items:
        return "No snapshots found.\n"
    name_w = max(max(len(s.instance) for s in items), len("Instance")) + COL_BUFFER
    snap_w = max(max(len(s.snapshot) for s in items), len("Snapshot")) + COL_BUFFER
    parent_w = max(max(len(s.parent) for s in items), len("Parent")) + COL_BUFFER
    out = [f"{'Instance':<{name_w}}{'Snapshot':<{snap_w}}{'Parent':<{parent_w}}Comment\n"]
    for s in _sorted_snapshots(items):
        comment = _truncated_comment(s.comment) if s.comment else "--"
        out.append(f"{s.instance:<{name_w}}{s.snapshot:<{snap_w}}{s.parent or '--':<{parent_w}}{comment}\n")
    return "".join(out)


def snapshots_list_csv(items: Sequence[ListedSnapshot]) -> str:
    out = ["Instance,Snapshot,Parent,Comment\n"]
    out += [f'{s.instance},{s.snapshot},{s.parent},"{s.comment}"\n' for s in _sorted_snapshots(items)]
    return "".join(out)


def snapshots_list_yaml(items: Sequence[ListedSnapshot]) -> str:
    root: dict[str, Any] = {}
    for s in _sorted_snapshots(items):
        entry = {s.snapshot: [{"parent": _yaml_opt(s.parent), "comment": _yaml_opt(s.comment)}]}
        root.setdefault(s.instance, []).append(entry)
    return emit_yaml(root or None)


# -- info: JSON ------------------------------------------------------------------------------


def _json_instance(d: InstanceDetails) -> dict[str, Any]:
    disk: dict[str, Any] = {}
    if d.disk_usage:
        disk["used"] = d.disk_usage
    if d.disk_total:
        disk["total"] = d.disk_total
    memory: dict[str, Any] = {}
    if d.memory_usage:
        memory["used"] = int(d.memory_usage)
    if d.memory_total:
        memory["total"] = int(d.memory_total)
    doc: dict[str, Any] = {
        "state": d.state,
        "image_hash": d.image_hash,
        "image_release": d.image_release,
        "release": d.release,
        "cpu_count": d.cpu_count,
        "load": [float(v) for v in d.load.split(" ")] if d.load else [],
        "disks": {"sda1": disk},
        "memory": memory,
        "ipv4": list(d.ipv4),
        "mounts": {
            m.target_path: {
                "uid_mappings": [_id_mapping(*p) for p in m.uid_mappings],
                "gid_mappings": [_id_mapping(*p) for p in m.gid_mappings],
                "source_path": m.source_path,
            }
            for m in d.mounts
        },
    }
    if d.num_snapshots is not None:
        doc["snapshot_count"] = str(d.num_snapshots)
    return doc


def _json_snapshot(d: SnapshotDetails) -> dict[str, Any]:
    return {
        "size": d.size,
        "cpu_count": d.cpu_count,
        "disk_space": d.disk_total,
        "memory_size": d.memory_total,
        "mounts": {m.target_path: {"source_path": m.source_path} for m in d.mounts},
        "created": d.created,
        "parent": d.parent,
        "children": list(d.children),
        "comment": d.comment,
    }


def info_json(details: Sequence[Details]) -> str:
    """The daemon's order; an instance's details and its snapshots share the instance's object."""
    info: dict[str, dict[str, Any]] = {}
    for d in details:
        if isinstance(d, InstanceDetails):
            info.setdefault(d.name, {}).update(_json_instance(d))
        else:
            info.setdefault(d.instance, {}).setdefault("snapshots", {})[d.snapshot] = _json_snapshot(d)
    return qt_json({"errors": [], "info": info})


# -- info: table -----------------------------------------------------------------------------


def _usage(used: str, total: str) -> str:
    if not used or not total:
        return "--"
    return f"{human_readable(int(used))} out of {human_readable(int(total))}"


def _row(label: str, value: str) -> str:
    return f"{label:<16}{value}\n"


def _continued(label: str, values: Sequence[str]) -> list[str]:
    """``label`` beside the first value, the others below it; ``--`` when there are none."""
    if not values:
        return [_row(label, "--")]
    return [_row(label, values[0])] + [_row("", v) for v in values[1:]]


def _id_map_line(title: str, pairs: Sequence[tuple[int, int]]) -> str:
    return f"{title:>29}" + ", ".join(_id_mapping(*p) for p in pairs) + "\n"


def _table_mounts(mounts: Sequence[Mount], longest: int, with_maps: bool) -> list[str]:
    if not mounts:
        return [_row("Mounts:", "--")]
    out = []
    for n, m in enumerate(mounts):
        out.append(f"{'Mounts:' if n == 0 else '':<16}{m.source_path:<{longest}} => {m.target_path}\n")
        if with_maps and m.uid_mappings:
            out.append(_id_map_line("UID map: ", m.uid_mappings))
        if with_maps and m.gid_mappings:
            out.append(_id_map_line("GID map: ", m.gid_mappings))
    return out


def _table_instance(d: InstanceDetails) -> str:
    out = [_row("Name:", d.name), _row("State:", d.state)]
    if d.num_snapshots is not None:
        out.append(_row("Snapshots:", str(d.num_snapshots)))
    out += _continued("IPv4:", d.ipv4)
    if d.ipv6:
        out += _continued("IPv6:", d.ipv6)
    out.append(_row("Release:", d.release or "--"))
    if d.image_hash:
        suffix = f" (Ubuntu {d.image_release})" if d.image_release else ""
        out.append(_row("Image hash:", d.image_hash[:12] + suffix))
    else:
        out.append(_row("Image hash:", "Not Available"))
    out.append(_row("CPU(s):", d.cpu_count or "--"))
    out.append(_row("Load:", d.load or "--"))
    out.append(_row("Disk usage:", _usage(d.disk_usage, d.disk_total)))
    out.append(_row("Memory usage:", _usage(d.memory_usage, d.memory_total)))
    out += _table_mounts(d.mounts, d.longest_path_len, with_maps=True)
    return "".join(out)


def _table_snapshot(d: SnapshotDetails) -> str:
    out = [_row("Snapshot:", d.snapshot), _row("Instance:", d.instance)]
    if d.size:
        out.append(_row("Size:", d.size))
    out.append(_row("CPU(s):", d.cpu_count))
    out.append(_row("Disk space:", d.disk_total))
    out.append(_row("Memory size:", d.memory_total))
    out += _table_mounts(d.mounts, d.longest_path_len, with_maps=False)
    out.append(_row("Created:", d.created))
    out.append(_row("Parent:", d.parent or "--"))
    out += _continued("Children:", d.children)
    comment = re.sub(r"\r\n|\n", lambda m: m.group(0) + " " * 16, d.comment) if d.comment else "--"
    out.append(_row("Comment:", comment))
    return "".join(out)


def info_table(details: Sequence[Details], snapshots: bool = False) -> str:
    """``snapshots``: the request's ``--snapshots`` flag (it only changes the text of an empty reply)."""
    if not details:
        return f"No {'snapshots' if snapshots else 'instances'} found.\n"
    blocks = [
        _table_instance(d) if isinstance(d, InstanceDetails) else _table_snapshot(d) for d in _sorted_details(details)
    ]
    return "\n".join(blocks)


# -- info: CSV -------------------------------------------------------------------------------


def _csv_mounts(mounts: Sequence[Mount]) -> str:
    return ";".join(f"{m.source_path} => {m.target_path}" for m in mounts)


def info_csv(details: Sequence[Details]) -> str:
    """Instances or snapshots (the first item decides; the client refuses mixed CSV requests)."""
    if not details:
        return ""
    if isinstance(details[0], SnapshotDetails):
        return _csv_snapshots([d for d in details if isinstance(d, SnapshotDetails)])
    return _csv_instances([d for d in details if isinstance(d, InstanceDetails)])


def _csv_instances(details: Sequence[InstanceDetails]) -> str:
    with_snapshots = details[0].num_snapshots is not None
    out = [
        "Name,State,Ipv4,Ipv6,Release,Image hash,Image release,Load,Disk usage,Disk total,Memory usage,"
        f"Memory total,Mounts,AllIPv4,CPU(s){',Snapshots' if with_snapshots else ''}\n"
    ]
    for d in _sorted_details(details):
        assert isinstance(d, InstanceDetails)
        fields = [
            d.name,
            d.state,
            d.ipv4[0] if d.ipv4 else "",
            d.ipv6[0] if d.ipv6 else "",
            d.release,
            d.image_hash,
            d.image_release,
            d.load,
            d.disk_usage,
            d.disk_total,
            d.memory_usage,
            d.memory_total,
            _csv_mounts(d.mounts),
            ";".join(d.ipv4),
            d.cpu_count,
        ]
        if with_snapshots:
            fields.append(str(d.num_snapshots))
        out.append(",".join(fields) + "\n")
    return "".join(out)


def _csv_snapshots(details: Sequence[SnapshotDetails]) -> str:
    out = ["Snapshot,Instance,CPU(s),Disk space,Memory size,Mounts,Created,Parent,Children,Comment\n"]
    for d in _sorted_details(details):
        assert isinstance(d, SnapshotDetails)
        fields = [d.snapshot, d.instance, d.cpu_count, d.disk_total, d.memory_total, _csv_mounts(d.mounts)]
        fields += [d.created, d.parent, ";".join(d.children), f'"{d.comment}"']
        out.append(",".join(fields) + "\n")
    return "".join(out)


# -- info: YAML ------------------------------------------------------------------------------


def _yaml_instance(d: InstanceDetails) -> dict[str, Any]:
    node: dict[str, Any] = {"state": d.state}
    if d.num_snapshots is not None:
        node["snapshot_count"] = str(d.num_snapshots)
    node["image_hash"] = d.image_hash
    node["image_release"] = d.image_release
    node["release"] = _yaml_opt(d.release)
    node["cpu_count"] = _yaml_opt(d.cpu_count)
    if d.load:
        node["load"] = d.load.split(" ")
    node["disks"] = [{"sda1": {"used": _yaml_opt(d.disk_usage), "total": _yaml_opt(d.disk_total)}}]
    node["memory"] = {"usage": _yaml_opt(d.memory_usage), "total": _yaml_opt(d.memory_total)}
    node["ipv4"] = list(d.ipv4)
    mounts: dict[str, Any] = {}
    for m in d.mounts:
        entry: dict[str, Any] = {}
        if m.uid_mappings:
            entry["uid_mappings"] = [_id_mapping(*p) for p in m.uid_mappings]
        if m.gid_mappings:
            entry["gid_mappings"] = [_id_mapping(*p) for p in m.gid_mappings]
        entry["source_path"] = m.source_path
        mounts[m.target_path] = entry
    node["mounts"] = mounts or None
    return node


def _yaml_snapshot(d: SnapshotDetails) -> dict[str, Any]:
    mounts = {m.target_path: {"source_path": m.source_path} for m in d.mounts}
    return {
        "size": _yaml_opt(d.size),
        "cpu_count": d.cpu_count,
        "disk_space": d.disk_total,
        "memory_size": d.memory_total,
        "mounts": mounts or None,
        "created": d.created,
        "parent": _yaml_opt(d.parent),
        "children": list(d.children),
        "comment": _yaml_opt(d.comment),
    }


def info_yaml(details: Sequence[Details]) -> str:
    root: dict[str, Any] = {"errors": [None]}
    for d in _sorted_details(details):
        if isinstance(d, InstanceDetails):
            root.setdefault(d.name, []).append(_yaml_instance(d))
        else:
            entries = root.setdefault(d.instance, [])
            if not entries:
                entries.append({})
            entries[0].setdefault("snapshots", []).append({d.snapshot: _yaml_snapshot(d)})
    return emit_yaml(root)


# -- find ------------------------------------------------------------------------------------


def _filtered_aliases(aliases: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """``format::filter_aliases``: drop one-letter aliases and "ubuntu"/"default", keeping at least one."""
    kept = list(aliases)
    for i in range(len(kept) - 1, -1, -1):
        if len(kept) == 1:
            break
        if len(kept[i][0]) == 1 or kept[i][0] in ("ubuntu", "default"):
            del kept[i]
    return kept


def _image_id(alias: tuple[str, str]) -> str:
    name, remote = alias
    return f"{remote}:{name}" if remote else name


def _find_map(images: Sequence[ImageInfo]) -> dict[str, Any]:
    """``format_images``: a ``std::map``, so sorted by image id (a later duplicate id is dropped)."""
    out: dict[str, Any] = {}
    for image in images:
        aliases = _filtered_aliases(image.aliases)
        out[_image_id(aliases[0])] = {
            "aliases": [a for a, _ in aliases[1:]],
            "os": image.os,
            "release": image.release,
            "version": image.version,
            "remote": aliases[0][1],
        }
    return dict(sorted(out.items()))


def find_json(reply: FindReply) -> str:
    return qt_json(
        {"errors": [], "blueprints (deprecated)": _find_map(reply.blueprints), "images": _find_map(reply.images)}
    )


def find_yaml(reply: FindReply) -> str:
    return emit_yaml(
        {"errors": [], "blueprints (deprecated)": _find_map(reply.blueprints), "images": _find_map(reply.images)}
    )


def _find_csv_rows(images: Sequence[ImageInfo], kind: str) -> list[str]:
    rows = []
    for image in images:
        aliases = _filtered_aliases(image.aliases)
        others = ";".join(a for a, _ in aliases[1:])
        fields = [_image_id(aliases[0]), aliases[0][1], others, image.os, image.release, image.version, kind]
        rows.append(",".join(fields) + "\n")
    return rows


def find_csv(reply: FindReply) -> str:
    out = ["Image,Remote,Aliases,OS,Release,Version,Type\n"]
    out += _find_csv_rows(reply.images, "Cloud Image")
    out += _find_csv_rows(reply.blueprints, "Blueprint (deprecated)")
    return "".join(out)


def _find_table_section(images: Sequence[ImageInfo], kind: str) -> str:
    out = [f"{kind:<28}{'Aliases':<18}{'Version':<17}Description\n"]
    for image in images:
        aliases = _filtered_aliases(image.aliases)
        others = ",".join(a for a, _ in aliases[1:])
        description = f"{image.os + ' ' if image.os else ''}{image.release}"
        out.append(f"{_image_id(aliases[0]):<28}{others:<18}{image.version:<17}{description}\n")
    return "".join(out) + "\n"


def find_table(reply: FindReply) -> str:
    sections = []
    if reply.show_images and reply.images:
        sections.append(_find_table_section(reply.images, "Image"))
    if reply.show_blueprints and reply.blueprints:
        sections.append(_find_table_section(reply.blueprints, "Blueprint (deprecated)"))
    if sections:
        return "".join(sections)
    if reply.show_images and reply.show_blueprints:
        return "No images or blueprints found.\n"
    if reply.show_images:
        return "No images found.\n"
    if reply.show_blueprints:
        return "No blueprints found.\n"
    return ""


# -- version ---------------------------------------------------------------------------------


def _update_available(update: UpdateInfo) -> bool:
    return bool(update.version)  # cmd::update_available: a non-empty update version


def version_table(client: str, reply: VersionReply) -> str:
    out = f"{'multipass':<12}{client}\n"
    if reply.daemon:
        out += f"{'multipassd':<12}{reply.daemon}\n"
        if _update_available(reply.update):
            out += _update_notice(reply.update)
    return out


def _update_notice(update: UpdateInfo) -> str:
    bar = "#" * 50
    return f"\n{bar}\n{update.title}\n{update.description}\n\nGo here for more information: {update.url}\n{bar}\n"


def version_json(client: str, reply: VersionReply) -> str:
    doc: dict[str, Any] = {"multipass": client}
    if reply.daemon:
        doc["multipassd"] = reply.daemon
        if _update_available(reply.update):
            u = reply.update
            doc["update"] = {"title": u.title, "description": u.description, "url": u.url}
    return qt_json(doc)


def version_yaml(client: str, reply: VersionReply) -> str:
    doc: dict[str, Any] = {"multipass": client}
    if reply.daemon:
        doc["multipassd"] = reply.daemon
        if _update_available(reply.update):
            u = reply.update
            doc["update"] = {"title": u.title, "description": u.description, "url": u.url}
    return emit_yaml(doc)


def version_csv(client: str, reply: VersionReply) -> str:
    u = reply.update
    return f"Multipass,Multipassd,Title,Description,URL\n{client},{reply.daemon},{u.title},{u.description},{u.url}\n"


# -- dispatch by --format ----------------------------------------------------------------------

FORMATS = ("table", "json", "csv", "yaml")

_LIST: dict[str, Callable[[Sequence[ListedInstance]], str]] = {
    "table": list_table,
    "json": list_json,
    "csv": list_csv,
    "yaml": list_yaml,
}
_SNAPSHOTS_LIST: dict[str, Callable[[Sequence[ListedSnapshot]], str]] = {
    "table": snapshots_list_table,
    "json": snapshots_list_json,
    "csv": snapshots_list_csv,
    "yaml": snapshots_list_yaml,
}
_FIND: dict[str, Callable[[FindReply], str]] = {
    "table": find_table,
    "json": find_json,
    "csv": find_csv,
    "yaml": find_yaml,
}
_VERSION: dict[str, Callable[[str, VersionReply], str]] = {
    "table": version_table,
    "json": version_json,
    "csv": version_csv,
    "yaml": version_yaml,
}


def format_list(fmt: str, items: Sequence[ListedInstance]) -> str:
    return _LIST[fmt](items)


def format_snapshots_list(fmt: str, items: Sequence[ListedSnapshot]) -> str:
    return _SNAPSHOTS_LIST[fmt](items)


def format_info(fmt: str, details: Sequence[Details], snapshots: bool) -> str:
    if fmt == "table":
        return info_table(details, snapshots)
    return {"json": info_json, "csv": info_csv, "yaml": info_yaml}[fmt](details)


def format_find(fmt: str, reply: FindReply) -> str:
    return _FIND[fmt](reply)


def format_version(fmt: str, client: str, reply: VersionReply) -> str:
    return _VERSION[fmt](client, reply)
