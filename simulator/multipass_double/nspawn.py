"""One instance = one ``systemd-nspawn --boot`` on an overlay mount. Host PID 1 need not be systemd.

Process tree while running: ``systemd-nspawn`` (recorded as ``nspawn_pid``, its own session, stdio on
``console.log``) -> the container's systemd (``leader_pid``, PID 1 inside). Commands enter the leader's
namespaces with ``nsenter``. ``runtime.json`` also records the host's boot id, so that a record from
before a host reboot never matches a reused pid.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multipass_double import hostutil
from multipass_double.errors import BackendError, BackendTimeout

NSPAWN = "systemd-nspawn"
MARKER = "AGENTVM_MULTIPASS_DOUBLE=1"  # --setenv on every nspawn we start: how strays are recognised
SEED_TARGET = "/var/lib/cloud/seed/nocloud"
POLL = 0.1
GUARD = Path(__file__).resolve().with_name("execguard.py")
USER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Runtime:
    nspawn_pid: int
    leader_pid: int
    boot_id: str
    started_at: float  # wall clock, to tell this boot's boot-finished from an older one

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2) + "\n"


@dataclass(frozen=True)
class Dirs:
    root: Path

    @property
    def machine(self) -> str:
        """nspawn's machine name: the instance name plus a hash of its folder. nspawn derives the host
        side of the veth (``vb-<machine>``, hashed when long) and the MAC from it, so equal instance
        names in two data folders do not collide, and a restart keeps its MAC (and DHCP lease)."""
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:6]
        return f"{self.root.name[:50]}-{digest}"

    @property
    def upper(self) -> Path:
        return self.root / "upper"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def seed(self) -> Path:
        return self.root / "seed"

    @property
    def console(self) -> Path:
        return self.root / "console.log"

    @property
    def runtime(self) -> Path:
        return self.root / "runtime.json"


# -- processes of ours ---------------------------------------------------------------------------


def nspawn_directory(argv: list[str]) -> Path | None:
    """The -D/--directory of an nspawn command line, or None if it is not one."""
    if not argv or not argv[0].endswith(NSPAWN):
        return None
    for i, arg in enumerate(argv):
        if arg in ("-D", "--directory") and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--directory="):
            return Path(arg.split("=", 1)[1])
    return None


def nspawn_processes(under: Path | None = None) -> dict[int, Path]:
    """nspawn processes (pid -> directory) whose -D is below ``under`` (any nspawn: the data folder is
    ours); without ``under``, every nspawn started by the double (recognised by MARKER)."""
    prefix = str(under).rstrip("/") + "/" if under else None
    found = {}
    for pid in hostutil.all_pids():
        argv = hostutil.cmdline(pid)
        directory = nspawn_directory(argv)
        if directory is None:
            continue
        if (prefix is None and f"--setenv={MARKER}" in argv) or (prefix and str(directory).startswith(prefix)):
            found[pid] = directory
    return found


def _is_our_nspawn(pid: int, merged: Path) -> bool:
    return nspawn_directory(hostutil.cmdline(pid)) == merged


def _container_init(pid: int) -> bool:
    """True if ``pid`` is PID 1 of a pid namespace below ours."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    match = re.search(r"^NSpid:\s+(.*)$", status, re.MULTILINE)
    return bool(match) and match.group(1).split()[-1] == "1" and len(match.group(1).split()) > 1


def read_runtime(dirs: Dirs) -> Runtime | None:
    try:
        data = json.loads(dirs.runtime.read_text())
        return Runtime(int(data["nspawn_pid"]), int(data["leader_pid"]), data["boot_id"], data["started_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running(dirs: Dirs) -> Runtime | None:
    """The runtime record if the instance is really up: same host boot, our nspawn, its leader alive."""
    rt = read_runtime(dirs)
    if rt is None or rt.boot_id != hostutil.host_boot_id():
        return None
    if not _is_our_nspawn(rt.nspawn_pid, dirs.merged) or not hostutil.is_alive(rt.leader_pid):
        hostutil.reap(rt.nspawn_pid)
        return None
    return rt


def require_running(dirs: Dirs, name: str) -> Runtime:
    rt = running(dirs)
    if rt is None:
        raise BackendError(f'instance "{name}" is not running (start it first)')
    return rt


# -- boot ----------------------------------------------------------------------------------------


# Like Multipass's (``make_cloud_init_network_config``, src/utils/yaml_node_utils.cpp): DHCPv4 on the
# default interface only. Without it, cloud-init >= 24 falls back to DHCPv4 *and* DHCPv6, and ifupdown's
# dhclient -6 waits forever for an answer no bridge of the double gives (the boot never finishes).
# The interface is nspawn's ``host0`` (Multipass matches the MAC it generated; nspawn picks ours).
NETWORK_CONFIG = "version: 2\nethernets:\n  host0:\n    dhcp4: true\n"


def write_seed(dirs: Dirs, user_data: str, meta_data: dict[str, str], name: str) -> None:
    dirs.seed.mkdir(parents=True, exist_ok=True)
    meta = {"instance-id": name, "local-hostname": name, **meta_data}
    # JSON strings are valid YAML scalars: no quoting surprises with odd values.
    (dirs.seed / "meta-data").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in meta.items()))
    (dirs.seed / "user-data").write_text(user_data)
    (dirs.seed / "network-config").write_text(NETWORK_CONFIG)


def mount_overlay(dirs: Dirs, lowers: Sequence[Path]) -> None:
    for path in [*lowers, dirs.upper, dirs.work]:
        if any(c in str(path) for c in ",:"):
            raise BackendError(f"overlayfs cannot use {path}: ',' and ':' are not allowed in its path")
        if not path.is_dir():
            raise BackendError(f"overlay layer {path} is missing (was the instance or its source deleted?)")
    options = f"lowerdir={':'.join(map(str, lowers))},upperdir={dirs.upper},workdir={dirs.work}"
    if len(options) > 4000:
        raise BackendError(f"too many overlay layers for one mount ({len(lowers)}): options exceed a page")
    dirs.merged.mkdir(exist_ok=True)
    hostutil.run(["mount", "-t", "overlay", "overlay", "-o", options, str(dirs.merged)])


def start_nspawn(dirs: Dirs, bridge: str) -> subprocess.Popen[bytes]:
    argv = [
        NSPAWN,
        f"--directory={dirs.merged}",
        "--boot",
        "--register=no",
        "--keep-unit",
        f"--machine={dirs.machine}",
        f"--network-bridge={bridge}",
        "--resolv-conf=off",
        "--link-journal=no",
        "--console=read-only",
        f"--bind-ro={dirs.seed}:{SEED_TARGET}",
        f"--setenv={MARKER}",
    ]
    with dirs.console.open("ab") as console:
        # Own session, no pipes to us: it outlives the caller (the CLI exits after `launch`).
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=console, start_new_session=True)


def find_leader(nspawn_pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in hostutil.children(nspawn_pid):
            if _container_init(child):
                return child
        if not hostutil.is_alive(nspawn_pid):
            break
        time.sleep(0.02)
    raise BackendError(f"systemd-nspawn (pid {nspawn_pid}) did not start the container's init in {timeout:.0f} s")


def record_runtime(dirs: Dirs, nspawn_pid: int, leader: int, started_at: float) -> Runtime:
    rt = Runtime(nspawn_pid, leader, hostutil.host_boot_id(), started_at)
    hostutil.write_atomic(dirs.runtime, rt.to_json())
    return rt


def console_tail(dirs: Dirs, lines: int = 12) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(dirs.console.read_text(errors="replace").splitlines()[-lines:])
    return ""


def wait_for_ssh(dirs: Dirs, rt: Runtime, name: str, in_subnet: str, timeout: float) -> str:
    """Wait until the instance has an address in the bridge's subnet and port 22 accepts; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running(dirs) is None:
            raise BackendError(
                f'instance "{name}" stopped while booting; last lines of {dirs.console}:\n{console_tail(dirs)}'
            )
        addresses = [a for a in addresses_of(rt.leader_pid) if a.startswith(in_subnet + ".")]
        if addresses and _port_open(addresses[0], 22):
            return addresses[0]
        time.sleep(POLL)
    raise BackendTimeout(
        f'instance "{name}": no IPv4 with sshd listening after {timeout:.0f} s '
        f"(the instance is left running; its console is in {dirs.console})"
    )


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def addresses_of(leader: int) -> list[str]:
    """Global IPv4 addresses in the leader's network namespace (uses the host's `ip`)."""
    try:
        out = hostutil.run(
            ["nsenter", "-t", str(leader), "-n", "ip", "-json", "-4", "address", "show", "scope", "global"],
            timeout=10,
        )
        links = json.loads(out or "[]")
    except (hostutil.HostError, ValueError):
        return []
    return [info["local"] for link in links for info in link.get("addr_info", []) if "local" in info]


def boot_finished(dirs: Dirs, rt: Runtime) -> bool:
    """cloud-init wrote boot-finished during *this* boot (the file of an earlier boot does not count)."""
    link = dirs.merged / "var/lib/cloud/instance"
    try:
        target = os.readlink(link)
    except OSError:
        return False
    instance = dirs.merged / target.lstrip("/") if target.startswith("/") else link.parent / target
    try:
        return (instance / "boot-finished").stat().st_mtime >= rt.started_at - 1
    except OSError:
        return False


# -- stop ----------------------------------------------------------------------------------------


def stop(dirs: Dirs, force: bool, timeout: float) -> None:
    """Poweroff (or kill), wait for nspawn, unmount. Never leaves the overlay mounted."""
    rt = running(dirs)
    if rt is not None and (force or not _poweroff(rt, timeout)):
        _kill(rt)
    for pid in nspawn_processes(dirs.root):  # strays (e.g. a boot interrupted before runtime.json)
        hostutil.kill(pid)
        hostutil.wait_gone(pid, 10)
    hostutil.unmount(dirs.merged)
    dirs.runtime.unlink(missing_ok=True)
    remove_propagate_dir(dirs)


def remove_propagate_dir(dirs: Dirs) -> None:
    """nspawn leaves /run/systemd/nspawn/propagate/<machine> behind when /run is not a tmpfs."""
    with contextlib.suppress(OSError):
        Path(f"/run/systemd/nspawn/propagate/{dirs.machine}").rmdir()


def _poweroff(rt: Runtime, timeout: float) -> bool:
    """SIGRTMIN+4 asks systemd to power off; re-sent, as it is lost before systemd installs handlers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hostutil.kill(rt.leader_pid, signal.SIGRTMIN + 4)
        if hostutil.wait_gone(rt.nspawn_pid, min(2.0, max(0.0, deadline - time.monotonic()))):
            return True
    return False


def _kill(rt: Runtime) -> None:
    # Killing the namespace's init kills everything in it; nspawn then exits by itself.
    hostutil.kill(rt.leader_pid)
    if not hostutil.wait_gone(rt.nspawn_pid, 10):
        hostutil.kill(rt.nspawn_pid)
        hostutil.wait_gone(rt.nspawn_pid, 10)


# -- exec ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


def account(dirs: Dirs, user: str) -> Account | None:
    with contextlib.suppress(OSError):
        for line in (dirs.merged / "etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) >= 7 and fields[0] == user:
                shell = fields[6] or "/bin/sh"
                return Account(user, int(fields[2]), int(fields[3]), fields[5] or "/", shell)
    return None


def _lang(dirs: Dirs) -> str:
    with contextlib.suppress(OSError):
        for line in (dirs.merged / "etc/default/locale").read_text().splitlines():
            if line.startswith("LANG="):
                return line.split("=", 1)[1].strip().strip('"')
    return "C.UTF-8"


def session_env(dirs: Dirs, acct: Account) -> dict[str, str]:
    """What sshd + PAM give a non-interactive session (nothing from the caller's environment)."""
    return {
        "HOME": acct.home,
        "USER": acct.name,
        "LOGNAME": acct.name,
        "SHELL": acct.shell,
        "PATH": ROOT_PATH if acct.uid == 0 else USER_PATH,
        "LANG": _lang(dirs),
    }


def inner_argv(dirs: Dirs, acct: Account, argv: Sequence[str], login_env: bool) -> list[str]:
    """The command as run inside: privilege drop (dies with its parent), clean env, cwd, argv."""
    if login_env:
        cwd, env = acct.home, session_env(dirs, acct)
    else:
        cwd, env = "/", {"PATH": ROOT_PATH if acct.uid == 0 else USER_PATH}
    drop = ["--reuid", str(acct.uid), "--regid", str(acct.gid), "--init-groups", "--pdeathsig", "KILL"]
    assignments = [f"{k}={v}" for k, v in env.items()]
    return ["setpriv", *drop, "--", "env", "-i", "-C", cwd, "--", *assignments, *argv]


def popen(rt: Runtime, inner: Sequence[str], popen_kwargs: dict[str, Any]) -> subprocess.Popen[bytes]:
    """Start ``inner`` in the container behind execguard.py (see there), itself under a parent-death
    signal from the calling thread."""
    # nsenter dies with the guard, and the inner setpriv makes the command die with nsenter.
    nsenter = ["setpriv", "--pdeathsig", "KILL", "--", "nsenter", "-t", str(rt.leader_pid), "-a", "--", *inner]
    guarded = [sys.executable, "-I", "-S", str(GUARD), str(os.getpid()), "--", *nsenter]
    argv = ["setpriv", "--pdeathsig", "TERM", "--", *guarded]
    popen_kwargs.setdefault("close_fds", True)
    # Own session: a signal to the caller's whole process group (SIGKILL included) cannot take the guard
    # down together with the caller; the guard then learns of the caller's death and cleans up.
    popen_kwargs.setdefault("start_new_session", True)
    return subprocess.Popen(argv, **popen_kwargs)


def run_as_root(rt: Runtime, script: str, timeout: float = 30) -> str:
    return hostutil.run(["nsenter", "-t", str(rt.leader_pid), "-a", "--", "/bin/sh", "-c", script], timeout=timeout)
