"""launch, clone, start, stop, restart, delete, purge, recover, snapshot, restore."""

from __future__ import annotations

import datetime as dt
import os
import stat
import sys
import uuid
from typing import Any

import yaml

from multipass_double.backend import BackendError, BackendTimeout
from multipass_double.common import (
    DEFAULT_DISK,
    DEFAULT_MEMORY,
    DEFAULT_TIMEOUT,
    MIN_DISK,
    MIN_MEMORY,
    Context,
    Fail,
    errors_occurred,
    failed,
    live_state,
    parse_size,
    petname,
    resolve_image,
    size_error,
    unhandled,
    usage,
    valid_name,
)
from multipass_double.qtargs import Option, Parsed, parse
from multipass_double.state import Record
from multipass_double.worker import Result, run_detached

# -- launch -----------------------------------------------------------------------------------

LAUNCH_OPTIONS = (
    Option(("c", "cpus"), True),
    Option(("d", "disk"), True),
    Option(("m", "memory", "mem"), True),
    Option(("n", "name"), True),
    Option(("cloud-init",), True),
    Option(("network",), True),
    Option(("bridged",)),
    Option(("mount",), True),
    Option(("timeout",), True),
)


def _positive_int(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) > 0 else None


def _client_timeout(p: Parsed) -> int | None:
    raw = p.value("timeout")
    if raw is None:
        return None
    value = _positive_int(raw)
    if value is None:
        raise usage("error: --timeout value has to be a positive integer")
    return value


def _load_cloud_init(source: str) -> dict[str, Any]:
    if source == "-":
        text = sys.stdin.read()
    elif source.startswith(("http://", "https://")):
        raise unhandled(f"downloading cloud-init from {source} is not supported by the Multipass test double")
    else:
        try:
            mode = os.stat(source).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
                raise OSError
            with open(source, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError):
            raise usage(
                f"Could not load cloud-init configuration: bad file: {source}\n"
                "Please ensure that Multipass can read it."
            ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "line 0, column 0"
        raise usage(f"Could not load cloud-init configuration: yaml-cpp: error at {where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise usage(f"Could not load cloud-init configuration: yaml-cpp: {exc}") from None
    return data if isinstance(data, dict) else {}


def _user_data(ctx: Context, config: dict[str, Any]) -> str:
    """The user-data the daemon writes: Multipass keeps `default` in users and manages /etc/hosts."""
    merged = dict(config)
    if isinstance(merged.get("users"), list) and "default" not in merged["users"]:
        merged["users"] = [*merged["users"], "default"]
    key = ctx.ssh_public_key()
    if key:
        keys = merged.get("ssh_authorized_keys")
        merged["ssh_authorized_keys"] = [*(keys if isinstance(keys, list) else []), key]
    merged.setdefault("manage_etc_hosts", True)
    body = yaml.safe_dump(merged, sort_keys=False, allow_unicode=True) if merged else ""
    return "#cloud-config\n" + body


def _check_launch_sizes(p: Parsed) -> tuple[int, int, int]:
    cpus_text = p.value("cpus", "1") or "1"
    cpus = _positive_int(cpus_text)
    if cpus is None:
        raise usage(f"Error: invalid CPU count '{cpus_text}', need a positive integer value.")
    sizes = []
    for key in ("memory", "disk"):
        raw = p.value(key)
        if raw is not None and parse_size(raw) is None:
            raise size_error(raw)
        sizes.append(raw)
    return cpus, *_daemon_sizes(p, sizes[0], sizes[1])


def _daemon_sizes(p: Parsed, memory: str | None, disk: str | None) -> tuple[int, int]:
    detail = ""
    mem_bytes = DEFAULT_MEMORY if memory is None else parse_size(memory) or 0
    if mem_bytes < MIN_MEMORY:
        detail = f"Invalid memory size value supplied: {memory}."
    disk_bytes = DEFAULT_DISK if disk is None else parse_size(disk) or 0
    if disk_bytes < MIN_DISK:
        detail = f"Invalid disk size value supplied: {disk}."
    name = p.value("name")
    if name is not None and name != "" and not valid_name(name):
        detail = f"Invalid instance name supplied: {name}"
    if detail:
        raise failed("launch", "Invalid arguments supplied", detail)
    return mem_bytes, disk_bytes


def cmd_launch(ctx: Context, args: list[str]) -> int:
    p = parse(args, LAUNCH_OPTIONS)
    if len(p.positionals) > 1:
        raise usage("Too many arguments supplied")
    if p.is_set("mount"):
        raise failed("launch", "--mount is not supported by the Multipass test double")
    cpus, memory, disk = _check_launch_sizes(p)
    timeout = _client_timeout(p)
    config = _load_cloud_init(p.value("cloud-init")) if p.is_set("cloud-init") else {}
    image = resolve_image(p.positionals[0] if p.positionals else None)
    if isinstance(image, Fail):
        raise image
    info = ctx.backend.ensure_image()
    ctx.backend.ensure_network()
    with ctx.store.locked() as st:
        user_data = _user_data(ctx, config)
        name = p.value("name") or petname(set(st["instances"]))
        existing = st["instances"].get(name)
        if existing is not None:
            raise failed(
                "launch",
                f'instance "{name}" is being prepared'
                if existing.get("preparing")
                else f'instance "{name}" already exists',
            )
        rec = new_record(name, cpus, memory, disk, image[1], info.sha256, user_data)  # Starting, by us
        st["instances"][name] = rec
    return _finish(
        ctx,
        run_detached(
            lambda: _launch_work(ctx, name, rec["uid"], timeout or DEFAULT_TIMEOUT),
            timeout,
            "Timed out waiting for instance launch.",
            ctx.paths.data / "daemon.log",
        ),
    )


def new_record(name: str, cpus: int, memory: int, disk: int, release: str, image_hash: str, user_data: str) -> Record:
    return {
        "name": name,
        "uid": uuid.uuid4().hex,
        "state": "Starting",
        "preparing": True,
        "deleted": False,
        "cpus": cpus,
        "memory": memory,
        "disk": disk,
        "image_release": release,
        "image_hash": image_hash,
        "layers": [],
        "instance_id": name,
        "clone_count": 0,
        "snapshots_taken": 0,
        "snapshots": {},
        "current_snapshot": "",
        "user_data": user_data,
        "created": dt.datetime.now(dt.UTC).isoformat(),
        "worker_pid": os.getpid(),
    }


def _finish(ctx: Context, result: Result) -> int:
    code, out, err = result
    if out:
        ctx.print(out)
    if err:
        ctx.eprint(err)
    return code


def _set(ctx: Context, name: str, uid: str, **changes: Any) -> bool:
    """Update a record if it is still the same instance (not deleted and re-created meanwhile)."""
    with ctx.store.locked() as st:
        rec = st["instances"].get(name)
        if rec is None or rec["uid"] != uid:
            return False
        rec.update(changes)
        return True


def _launch_work(ctx: Context, name: str, uid: str, timeout: float) -> Result:
    with ctx.store.instance_lock(name):
        if not _set(ctx, name, uid, worker_pid=os.getpid()):
            return (2, "", f'launch failed: instance "{name}" does not exist\n')
        spec = ctx.store.spec(ctx.store.snapshot()["instances"][name])
        try:
            ctx.backend.prepare(spec)
            # The daemon's preparing phase (image fetch, VM creation) ends here: from now on the instance
            # is operative and Starting, and another launch of this name gets "already exists".
            _set(ctx, name, uid, preparing=False)
            ctx.backend.boot(spec, timeout)
        except BackendTimeout:
            _set(ctx, name, uid, state="Unknown", preparing=False)
            return (
                2,
                "",
                f"launch failed: The following errors occurred:\n{name}: timed out waiting for response\n",
            )
        except BackendError as exc:
            ctx.backend.shutdown(spec, force=True)
            _set(ctx, name, uid, state="Stopped", preparing=False)
            return (2, "", f"launch failed: {exc}\n")
        try:
            ctx.backend.wait_cloud_init(spec, timeout)
        except BackendTimeout:
            _set(ctx, name, uid, state="Running", preparing=False)
            return (
                2,
                "",
                "launch failed: The following errors occurred:\ntimed out waiting for initialization to complete\n",
            )
        if not _set(ctx, name, uid, state="Running", preparing=False):
            ctx.backend.destroy(spec)
            return (2, "", f'launch failed: instance "{name}" does not exist\n')
    return (0, f"Launched: {name}\n", "")


# -- selection helpers ------------------------------------------------------------------------


def select(ctx: Context, command: str, names: list[str], allow_deleted: bool) -> list[Record]:
    """``select_instances_and_react``: all named instances, or the failure listing the bad ones."""
    st = ctx.store.snapshot()
    errors, records = [], []
    for name in names:
        rec = st["instances"].get(name)
        if rec is None:
            errors.append(f'instance "{name}" does not exist')
        elif rec["deleted"] and not allow_deleted:
            errors.append(f'instance "{name}" is deleted')
        else:
            records.append(rec)
    if errors:
        raise errors_occurred(command, errors)
    return records


NAMES_OPTIONS = (Option(("all",)),)


def _names(ctx: Context, p: Parsed, include_deleted: bool) -> list[str]:
    if p.is_set("all"):
        if p.positionals:
            raise usage("Cannot specify name when --all option set")
        st = ctx.store.snapshot()
        return sorted(n for n, r in st["instances"].items() if include_deleted or not r["deleted"])
    if not p.positionals:
        return ["primary"]
    return list(dict.fromkeys(p.positionals))


# -- start / restart --------------------------------------------------------------------------

START_OPTIONS = (Option(("all",)), Option(("timeout",), True))


def cmd_start(ctx: Context, args: list[str]) -> int:
    p = parse(args, START_OPTIONS)
    timeout = _client_timeout(p)
    names = _names(ctx, p, include_deleted=False)
    st = ctx.store.snapshot()
    details = []
    for name in names:
        rec = st["instances"].get(name)
        if rec is None:
            details.append(f"Instance '{name}' does not exist.\n")
        elif rec["deleted"]:
            details.append(
                f"Instance '{name}' is deleted. Use 'recover' to recover it or 'purge' to permanently delete it.\n"
            )
    if details:
        raise failed("start", "instance(s) missing", "".join(details))
    ctx.backend.ensure_network()
    return _finish(ctx, start_instances(ctx, names, timeout, "start"))


def start_instances(ctx: Context, names: list[str], client_timeout: int | None, command: str) -> Result:
    message = (
        "Timed out waiting for instance to start."
        if command == "start"
        else "Timed out waiting for instance to restart."
    )
    return run_detached(
        lambda: _start_work(ctx, names, client_timeout or DEFAULT_TIMEOUT, command),
        client_timeout,
        message,
        ctx.paths.data / "daemon.log",
    )


def _start_one(ctx: Context, name: str, timeout: float, restart: bool) -> str:
    """Boot one instance; return an error line (empty on success)."""
    with ctx.store.instance_lock(name):
        rec = ctx.store.snapshot()["instances"].get(name)
        if rec is None:
            return f'instance "{name}" does not exist'
        state = live_state(ctx, rec)
        if state == "Unknown":
            return f"Instance '{name}' is already running, but in an unknown state.\nTry to stop it first."
        spec = ctx.store.spec(rec)
        if state == "Running" and not restart:
            return ""
        if restart:
            ctx.backend.shutdown(spec)
        _set(ctx, name, rec["uid"], state="Restarting" if restart else "Starting", worker_pid=os.getpid())
        try:
            ctx.backend.boot(spec, timeout)
        except BackendTimeout:
            _set(ctx, name, rec["uid"], state="Unknown")
            return f"{name}: timed out waiting for response"
        except BackendError as exc:
            ctx.backend.shutdown(spec, force=True)
            _set(ctx, name, rec["uid"], state="Stopped")
            return f"{name}: {exc}"
        _set(ctx, name, rec["uid"], state="Running")
        return ""


def _start_work(ctx: Context, names: list[str], timeout: float, command: str) -> Result:
    errors = [e for e in (_start_one(ctx, n, timeout, command == "restart") for n in names) if e]
    if errors:
        return (2, "", f"{command} failed: The following errors occurred:\n" + "\n".join(errors) + "\n")
    return (0, "", "")


def cmd_restart(ctx: Context, args: list[str]) -> int:
    p = parse(args, START_OPTIONS)
    timeout = _client_timeout(p)
    records = select(ctx, "restart", _names(ctx, p, include_deleted=False), allow_deleted=False)
    for rec in records:
        if live_state(ctx, rec) != "Running":
            raise failed(
                "restart",
                f"Instance '{rec['name']}' is already running, but in an unknown state.\n"
                "Try to stop and start it instead.",
            )
    return _finish(ctx, start_instances(ctx, [r["name"] for r in records], timeout, "restart"))


# -- stop -------------------------------------------------------------------------------------

STOP_OPTIONS = (Option(("all",)), Option(("t", "time"), True), Option(("c", "cancel")), Option(("force",)))


def cmd_stop(ctx: Context, args: list[str]) -> int:
    p = parse(args, STOP_OPTIONS)
    if p.is_set("time") and p.is_set("cancel"):
        raise usage("Cannot set 'time' and 'cancel' options at the same time")
    if p.is_set("force") and (p.is_set("time") or p.is_set("cancel")):
        raise usage("Cannot set 'force' along with 'time' or 'cancel' options at the same time")
    delay = (p.value("time") or "0").lstrip("+")
    if not delay.isdigit():
        raise usage("Time must be in digit form")
    records = select(ctx, "stop", _names(ctx, p, include_deleted=False), allow_deleted=False)
    if int(delay) > 0:
        raise failed("stop", "delayed shutdown is not supported by the Multipass test double")
    if p.is_set("cancel"):
        return 0
    for rec in records:  # cmd_vms: the first failure ends the command
        if not p.is_set("force") and live_state(ctx, rec) in ("Starting", "Restarting"):
            # BaseVirtualMachine::check_state_for_shutdown (Powerdown policy); --force switches it off.
            raise failed("stop", f"Cannot shut down instance {rec['name']} while starting.")
        stop_instance(ctx, rec["name"], force=p.is_set("force"))
    return 0


def stop_instance(ctx: Context, name: str, force: bool = False) -> None:
    with ctx.store.instance_lock(name):
        rec = ctx.store.snapshot()["instances"].get(name)
        if rec is None:
            return
        ctx.backend.shutdown(ctx.store.spec(rec), force=force)
        _set(ctx, name, rec["uid"], state="Stopped", preparing=False)


# -- delete / purge / recover -----------------------------------------------------------------

DELETE_OPTIONS = (Option(("all",)), Option(("p", "purge")))


def cmd_delete(ctx: Context, args: list[str]) -> int:
    p = parse(args, DELETE_OPTIONS)
    purge = p.is_set("purge")
    if p.is_set("all"):
        if p.positionals:
            raise usage("Cannot specify name when --all option set")
        names, snapshots = _names(ctx, p, include_deleted=True), []
    else:
        if not p.positionals:
            raise usage("Name argument or --all is required")
        names = list(dict.fromkeys(a for a in p.positionals if "." not in a))
        snapshots = [tuple(a.split(".", 1)) for a in dict.fromkeys(p.positionals) if "." in a]
    if snapshots and not purge:
        raise unhandled(
            "Snapshots can only be purged (after deletion, they cannot be recovered). Unable to query client "
            "for confirmation. Please use the `--purge` flag if that is what you want."
        )
    select(ctx, "delete", names + [inst for inst, _ in snapshots], allow_deleted=True)
    for inst, snap in snapshots:
        _delete_snapshot(ctx, inst, snap)
    for name in names:
        delete_instance(ctx, name, purge=purge)
    return 0


def _delete_snapshot(ctx: Context, name: str, snap: str) -> None:
    # Under the instance's lock: its layers are in use by whoever holds it (a boot, an import).
    with ctx.store.instance_lock(name), ctx.store.locked() as st:
        rec = st["instances"][name]
        if snap not in rec["snapshots"]:
            raise failed("delete", f"No such snapshot: {name}.{snap}")
        parent = rec["snapshots"][snap]["parent"]
        for other in rec["snapshots"].values():
            if other["parent"] == snap:
                other["parent"] = parent
        del rec["snapshots"][snap]
        if rec["current_snapshot"] == snap:
            rec["current_snapshot"] = parent
        ctx.store.gc_layers(st)


def delete_instance(ctx: Context, name: str, purge: bool, only_deleted: bool = False) -> None:
    """Delete (or purge) one instance under its lock. ``only_deleted`` (``purge``): skip it unless it is
    still deleted once the lock is held (a concurrent ``recover`` wins)."""
    with ctx.store.instance_lock(name):
        rec = ctx.store.snapshot()["instances"].get(name)
        if rec is None or (only_deleted and not rec["deleted"]):
            return
        spec = ctx.store.spec(rec)
        if purge:
            ctx.backend.destroy(spec)
            with ctx.store.locked() as st:
                st["instances"].pop(name, None)
                ctx.store.gc_layers(st)
            return
        if rec["deleted"]:
            return
        ctx.backend.shutdown(spec)
        _set(ctx, name, rec["uid"], deleted=True, state="Stopped", preparing=False)


def cmd_purge(ctx: Context, args: list[str]) -> int:
    p = parse(args, ())
    if p.positionals:
        raise usage("This command takes no arguments")
    for name, rec in sorted(ctx.store.snapshot()["instances"].items()):
        if rec["deleted"]:
            delete_instance(ctx, name, purge=True, only_deleted=True)
    return 0


def cmd_recover(ctx: Context, args: list[str]) -> int:
    p = parse(args, NAMES_OPTIONS)
    if not p.is_set("all") and not p.positionals:
        raise usage("Name argument or --all is required")
    records = select(ctx, "recover", _names(ctx, p, include_deleted=True), allow_deleted=True)
    with ctx.store.locked() as st:
        for rec in records:
            if rec["deleted"]:
                st["instances"][rec["name"]].update(deleted=False, state="Stopped")
    return 0


# -- clone ------------------------------------------------------------------------------------


def cmd_clone(ctx: Context, args: list[str]) -> int:
    p = parse(args, (Option(("n", "name"), True),))
    if not p.positionals:
        raise usage("Please provide the name of the source instance.")
    if len(p.positionals) > 1:
        raise usage("Too many arguments.")
    source = p.positionals[0]
    with ctx.store.instance_lock(source), ctx.store.locked() as st:
        dest = _check_clone(ctx, st, source, p.value("name"))
        src = st["instances"][source]
        ctx.store.freeze(src)
        clone = new_record(
            dest,
            src["cpus"],
            src["memory"],
            src["disk"],
            src["image_release"],
            src["image_hash"],
            src["user_data"],
        )
        clone.update(state="Stopped", preparing=False, layers=list(src["layers"]), worker_pid=-1)
        clone["instance_id"] = (
            dest + src["instance_id"][len(source) :] if src["instance_id"].startswith(source) else dest
        )
        ctx.backend.prepare(ctx.store.spec(clone))
        st["instances"][dest] = clone
        src["clone_count"] += 1
    ctx.print(f"Cloned from {source} to {dest}.\n")
    return 0


def _operative(command: str, st: dict[str, Any], name: str) -> Record:
    """``find_instance_and_react`` with the operative-instances reaction: the record, or the bare failure."""
    rec = st["instances"].get(name)
    if rec is None:
        raise failed(command, f'instance "{name}" does not exist')
    if rec["deleted"]:
        raise failed(command, f'instance "{name}" is deleted')
    return rec


def _check_clone(ctx: Context, st: dict[str, Any], source: str, dest: str | None) -> str:
    src = _operative("clone", st, source)
    if live_state(ctx, src) != "Stopped":
        raise failed("clone", "Multipass can only clone stopped instances.")
    dest = dest if dest is not None else f"{source}-clone{src['clone_count'] + 1}"
    if not valid_name(dest):
        raise failed("clone", f"Invalid destination instance name: {dest}")
    if dest in st["instances"]:
        raise failed("clone", f'instance "{dest}" already exists')
    return dest


# -- snapshot / restore -----------------------------------------------------------------------


def cmd_snapshot(ctx: Context, args: list[str]) -> int:
    p = parse(args, (Option(("n", "name"), True), Option(("c", "m", "comment"), True)))
    if not p.positionals:
        raise usage("Need the name of an instance to snapshot.")
    if len(p.positionals) > 1:
        raise usage("Too many arguments supplied")
    name = p.positionals[0]
    with ctx.store.instance_lock(name), ctx.store.locked() as st:
        rec = _operative("snapshot", st, name)
        if live_state(ctx, rec) != "Stopped":
            raise failed("snapshot", "Multipass can only take snapshots of stopped instances.")
        snap = p.value("name") or f"snapshot{rec['snapshots_taken'] + 1}"
        if not valid_name(snap):
            raise failed("snapshot", f'Invalid snapshot name: "{snap}".')
        if snap in rec["snapshots"]:
            raise failed("snapshot", f"Snapshot already exists: {name}.{snap}")
        ctx.store.freeze(rec)
        rec["snapshots"][snap] = {
            "comment": p.value("comment", "") or "",
            "parent": rec["current_snapshot"],
            "created": dt.datetime.now(dt.UTC).isoformat(),
            "layers": list(rec["layers"]),
            "cpus": rec["cpus"],
            "memory": rec["memory"],
            "disk": rec["disk"],
            "index": rec["snapshots_taken"] + 1,
        }
        rec["snapshots_taken"] += 1
        rec["current_snapshot"] = snap
    ctx.print(f"Snapshot taken: {name}.{snap}\n")
    return 0


def cmd_restore(ctx: Context, args: list[str]) -> int:
    p = parse(
        args,
        (
            Option(
                ("d", "destructive"),
            ),
        ),
    )
    target = p.positionals[0] if len(p.positionals) == 1 else ""
    name, dot, snap = target.partition(".")
    if not (name and dot and snap):
        raise usage(
            "Invalid format. Please specify the instance to restore and snapshot to use in the form "
            "<instance>.<snapshot>."
        )
    with ctx.store.instance_lock(name), ctx.store.locked() as st:
        rec = _operative("restore", st, name)
        if snap not in rec["snapshots"]:
            raise failed("restore", f"No such snapshot: {name}.{snap}")
        if live_state(ctx, rec) != "Stopped":
            raise failed("restore", "Multipass can only restore snapshots of stopped instances.")
        if not p.is_set("destructive"):
            raise unhandled(
                "Unable to query client for confirmation. "
                "Use '--destructive' to automatically discard current machine state."
            )
        saved = rec["snapshots"][snap]
        ctx.store.discard_upper(rec)
        rec.update(layers=list(saved["layers"]), cpus=saved["cpus"], memory=saved["memory"], disk=saved["disk"])
        rec["current_snapshot"] = snap
        ctx.store.gc_layers(st)
    ctx.print(f"Snapshot restored: {name}.{snap}\n")
    return 0
