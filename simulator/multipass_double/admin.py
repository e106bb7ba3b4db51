"""``multipass-double``: the double's admin tool (not part of the Multipass CLI).

multipass-double down [--data DIR] [--purge] [--quiet]
    Stop and remove everything of the double: with --data only that data folder's instances, mounts,
    bridge, dnsmasq and NAT rules; without it every registered data folder, the default one, and then
    anything else of ours still on the host (marked nspawn processes, overlays on the image, ``mpd*``
    bridges, our dnsmasq processes, tagged iptables rules). --purge also deletes those data folders.
    Safe to run when nothing exists.
multipass-double build-image [--force]
    Build the machine-wide instance image now (--force: rebuild it; no instance may be running).
multipass-double status
    Instances running, bridges, dnsmasq processes, overlay mounts, registered data folders, image.
multipass-double import --from OTHER_DATA_FOLDER NAME [--as NEW_NAME] [--data DIR]
    Make the Stopped instance NAME of another data folder (snapshots and their comments included) a
    Stopped instance of this one (MULTIPASS_DOUBLE_DATA, or --data), named NEW_NAME or NAME. Its layers
    are hard-linked (copied when the folders are on different filesystems), its upper dir copied. For
    test suites; not a Multipass command (see importer.py).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from pathlib import Path

from multipass_double import hostutil, image, importer, network, nspawn
from multipass_double.backend import Backend, kill_nspawns
from multipass_double.config import Paths
from multipass_double.errors import BackendError


def _data_folders(env: Paths, only: Path | None) -> list[Path]:
    if only is not None:
        return [only.resolve()]
    return list(dict.fromkeys([*network.registered(env), env.data]))


def down_one(env: Paths, data: Path, purge: bool) -> list[str]:
    paths = Paths(data=data, images=env.images)
    done = Backend(paths).teardown()
    if purge and data.exists():
        if hostutil.mounts_under(data):
            raise BackendError(f"not deleting {data}: something is still mounted below it")
        shutil.rmtree(data, ignore_errors=True)
        done.append(f"deleted {data}")
    if purge or not data.exists():
        network.unregister(env, data)
    return done


def down_strays(env: Paths) -> list[str]:
    """Whatever of ours is left on the host that no data folder accounted for."""
    done = kill_nspawns(Path("/"))
    rootfs = str(image.image_dir(env.images) / "rootfs")
    for mount in hostutil.mounts():
        if mount.fstype == "overlay" and rootfs in mount.options:
            hostutil.unmount(mount.target)
            done.append(f"unmounted {mount.target}")
    with network.machine_lock(env):
        for pid in network.dnsmasq_pids(network.BRIDGE_RE):
            hostutil.kill(pid)
            hostutil.wait_gone(pid, 5)
            done.append(f"stopped dnsmasq (pid {pid})")
        for bridge in network.double_bridges():
            done += network.delete_bridge(bridge)
        done += network.remove_rules(network.RULE_TAG)
        restored = network.restore_forwarding_if_unused(env)
    return done + ([restored] if restored else [])


def cmd_down(env: Paths, args: argparse.Namespace) -> int:
    done: list[str] = []
    failures: list[str] = []
    for data in _data_folders(env, Path(args.data) if args.data else None):
        try:
            done += down_one(env, data, args.purge)
        except BackendError as exc:
            failures.append(f"{data}: {exc}")
    if not args.data:
        try:
            done += down_strays(env)
        except BackendError as exc:
            failures.append(str(exc))
    if not args.quiet:
        print("\n".join(done) if done else "nothing of the Multipass double was running")
    for failure in failures:
        print(f"multipass-double down: {failure}", file=sys.stderr)
    return 1 if failures else 0


def cmd_build_image(env: Paths, args: argparse.Namespace) -> int:
    built = image.ensure(env.images, force=args.force)
    print(f"{built.rootfs}\nsha256 {built.sha256}\n{built.pretty_name}")
    return 0


def _status_lines(env: Paths) -> list[str]:
    lines = []
    built = image.load(env.images)
    lines.append(f"image: {built.rootfs} ({built.sha256[:12]})" if built else "image: not built")
    for data in network.registered(env):
        lines.append(f"data folder: {data}{'' if data.exists() else ' (missing)'}")
    for pid, directory in sorted(nspawn.nspawn_processes().items()):
        lines.append(f"instance: {directory.parent.name} (nspawn pid {pid}, {directory})")
    for bridge in network.double_bridges():
        lines.append(f"bridge: {bridge}")
    for pid in network.dnsmasq_pids(network.BRIDGE_RE):
        served = [a.split("=", 1)[1] for a in hostutil.cmdline(pid) if a.startswith("--interface=")]
        lines.append(f"dnsmasq: pid {pid} on {', '.join(served)}")
    rootfs = str(image.image_dir(env.images) / "rootfs")
    for mount in hostutil.mounts():
        if mount.fstype == "overlay" and rootfs in mount.options:
            lines.append(f"mount: {mount.target}")
    with contextlib.suppress(OSError):
        lines.append(f"net.ipv4.ip_forward: {network.IP_FORWARD.read_text().strip()}")
    return lines


def cmd_host_ip(env: Paths, _args: argparse.Namespace) -> int:
    """The host's address on this data folder's bridge: where instances reach services of the host."""
    print(network.ensure(env).gateway)
    return 0


def cmd_import(env: Paths, args: argparse.Namespace) -> int:
    dest = Paths(data=Path(args.data).resolve(), images=env.images) if args.data else env
    try:
        done = importer.import_instance(dest, Path(args.source), args.name, args.new_name)
    except OSError as exc:
        raise BackendError(f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")) from exc
    if not done.linked:
        print(
            f"multipass-double import: {done.source_data} and {dest.data} are on different filesystems: "
            "the layers were copied, not hard-linked",
            file=sys.stderr,
        )
    print(done.summary(), end="")
    return 0


def cmd_status(env: Paths, _args: argparse.Namespace) -> int:
    print("\n".join(_status_lines(env)))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="multipass-double", description=__doc__.split("\n\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    down = sub.add_parser("down", help="stop and remove everything of the double (safe when nothing runs)")
    down.add_argument("--data", help="only this data folder (default: all registered, then strays)")
    down.add_argument("--purge", action="store_true", help="also delete the data folders")
    down.add_argument("--quiet", action="store_true", help="print nothing on success")
    build = sub.add_parser("build-image", help="build the machine-wide instance image now")
    build.add_argument("--force", action="store_true", help="rebuild even if it exists")
    sub.add_parser("status", help="what of the double exists on this host")
    sub.add_parser("host-ip", help="the host's address on the data folder's bridge (creates the network if needed)")
    imp = sub.add_parser("import", help="make a Stopped instance of another data folder an instance of this one")
    imp.add_argument("--from", dest="source", required=True, metavar="OTHER_DATA_FOLDER", help="its data folder")
    imp.add_argument("--as", dest="new_name", metavar="NEW_NAME", help="its name here (default: NAME)")
    imp.add_argument("--data", help="this data folder (default: MULTIPASS_DOUBLE_DATA)")
    imp.add_argument("name", metavar="NAME", help="the instance in OTHER_DATA_FOLDER")
    return top


COMMANDS = {
    "down": cmd_down,
    "build-image": cmd_build_image,
    "status": cmd_status,
    "host-ip": cmd_host_ip,
    "import": cmd_import,
}


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](Paths.from_env(), args)
    except BackendError as exc:
        print(f"multipass-double {args.command}: {exc}", file=sys.stderr)
        return 1
