"""Real instances for the double: systemd-nspawn containers booted from an overlay of a cached rootfs.

CONTRACT (used by cli.py/state.py; keep these signatures):

Layout of one instance's folder ``Paths.instance_dir(name)`` (the backend owns everything in it except
``record.json``, which does not exist: records live in ``Paths.state_file``):
    upper/ work/   overlayfs upper and work dirs (the instance's own "disk")
    merged/        the overlay mount point while the instance runs
    seed/          NoCloud seed: ``user-data``, ``meta-data``, ``network-config`` (bind-mounted read-only at
                   /var/lib/cloud/seed/nocloud in the container)
    console.log    systemd-nspawn's output
    runtime.json   {"nspawn_pid": int, "leader_pid": int, "boot_id": str, "started_at": float} while running

Lower layers: ``InstanceSpec.layers`` lists read-only layer dirs, topmost first; the backend appends
the image rootfs as the bottom layer. state.py creates layers by renaming a stopped instance's
``upper/`` into ``Paths.layers/<id>`` (clone, snapshot); the backend never writes into a layer.

Every method is safe to call from concurrent processes for *different* instances; the caller
serialises operations on one instance. Errors raise ``BackendError`` (message for humans) or
``BackendTimeout``.

Machine-wide state lives in ``Paths.images``: the image (``image.py``), ``network.lock``, the registry of
data folders, and ``ip_forward.orig`` while any double network exists (``network.py``). Instances are
``systemd-nspawn --boot`` containers (``nspawn.py``); ``popen`` runs commands through ``execguard.py``.
Nothing here needs systemd as the host's PID 1.

Notes for callers (what differs from a first reading of the signatures):
* ``shutdown`` never raises BackendTimeout: like Multipass, a guest that does not power off within
  ``timeout`` is killed; either way the instance is stopped and unmounted when it returns.
* ``popen`` runs ``argv`` directly (no extra shell); ``login_env`` selects the sshd-like session
  environment and the home directory as cwd (False: only PATH, cwd ``/``). The returned process is a
  guard on the host; see ``popen``.
* nspawn's machine name is ``<name>-<6 hex of the instance folder>`` (not the bare name), so that equal
  instance names in different data folders do not collide on the host-side veth ``vb-<machine>``. The
  guest's hostname still comes from meta-data ``local-hostname`` through cloud-init.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multipass_double import image, network, nspawn
from multipass_double.config import Paths
from multipass_double.errors import BackendError, BackendTimeout
from multipass_double.hostutil import children, kill, mounts_under, unmount, wait_gone

__all__ = ["Backend", "BackendError", "BackendTimeout", "ImageInfo", "InstanceSpec"]


@dataclass
class InstanceSpec:
    name: str
    directory: Path
    layers: list[Path] = field(default_factory=list)
    user_data: str = "#cloud-config\n{}\n"
    meta_data: dict[str, str] = field(default_factory=dict)  # instance-id, local-hostname, cloud-name


@dataclass
class ImageInfo:
    rootfs: Path
    sha256: str  # 64 hex chars identifying this build of the rootfs (reported as image_hash)
    pretty_name: str  # PRETTY_NAME of the rootfs's /etc/os-release


class Backend:
    def __init__(self, paths: Paths) -> None:
        self.paths = paths

    # -- machine-level -------------------------------------------------------------------------
    def ensure_image(self) -> ImageInfo:
        """Build the rootfs once per machine (debootstrap + fixes, under a lock), then return it.
        A build prints its progress and timing on stderr; a cached image costs one small file read."""
        built = image.ensure(self.paths.images)
        return ImageInfo(rootfs=built.rootfs, sha256=built.sha256, pretty_name=built.pretty_name)

    def ensure_network(self) -> None:
        """Bridge + dnsmasq (DHCP) + NAT for this data folder; idempotent, concurrency-safe."""
        network.ensure(self.paths)

    def teardown(self) -> list[str]:
        """Kill every instance of this data folder, unmount, remove bridge/dnsmasq/NAT. Return what was done."""
        done = kill_nspawns(self.paths.data)
        for target in mounts_under(self.paths.data):
            unmount(target)
            done.append(f"unmounted {target}")
        if self.paths.instances.is_dir():
            for runtime in self.paths.instances.glob("*/runtime.json"):
                runtime.unlink(missing_ok=True)
        return done + network.teardown(self.paths)

    # -- one instance --------------------------------------------------------------------------
    def prepare(self, spec: InstanceSpec) -> None:
        """Create upper/work/merged/seed for a new instance (no boot)."""
        dirs = nspawn.Dirs(spec.directory)
        for folder in (dirs.upper, dirs.work, dirs.merged, dirs.seed):
            folder.mkdir(parents=True, exist_ok=True)

    def boot(self, spec: InstanceSpec, timeout: float) -> None:
        """Write the seed, mount the overlay, start nspawn detached; return once sshd accepts on the
        instance's IPv4 (the `start` criterion). Raise BackendTimeout otherwise (instance left running).
        Booting a running instance only waits for sshd."""
        dirs = nspawn.Dirs(spec.directory)
        net = network.ensure(self.paths)
        rt = nspawn.running(dirs)
        if rt is None:
            rt = self._start(spec, dirs, net.bridge)
        nspawn.wait_for_ssh(dirs, rt, spec.name, net.prefix, timeout)

    def _start(self, spec: InstanceSpec, dirs: nspawn.Dirs, bridge: str) -> nspawn.Runtime:
        rootfs = self.ensure_image().rootfs
        self.prepare(spec)
        nspawn.stop(dirs, force=True, timeout=5)  # leftovers of a crashed run: no stale mount
        nspawn.write_seed(dirs, spec.user_data, spec.meta_data, spec.name)
        nspawn.mount_overlay(dirs, [*spec.layers, rootfs])
        started_at = time.time()
        try:
            proc = nspawn.start_nspawn(dirs, bridge)
            leader = nspawn.find_leader(proc.pid, timeout=15)
        except BaseException as exc:
            nspawn.stop(dirs, force=True, timeout=5)
            if isinstance(exc, BackendError):
                tail = nspawn.console_tail(dirs)
                raise BackendError(f"{exc}; last lines of {dirs.console}:\n{tail}") from exc
            raise
        return nspawn.record_runtime(dirs, proc.pid, leader, started_at)

    def wait_cloud_init(self, spec: InstanceSpec, timeout: float) -> None:
        """Wait for /var/lib/cloud/instance/boot-finished (the `launch` criterion), written during this boot."""
        dirs = nspawn.Dirs(spec.directory)
        deadline = time.monotonic() + timeout
        while True:
            rt = nspawn.require_running(dirs, spec.name)
            if nspawn.boot_finished(dirs, rt):
                return
            if time.monotonic() >= deadline:
                raise BackendTimeout(f'instance "{spec.name}": cloud-init not done after {timeout:.0f} s')
            time.sleep(nspawn.POLL)

    def is_running(self, spec: InstanceSpec) -> bool:
        """Our nspawn for this instance is alive (checked against /proc and the host's boot id)."""
        return nspawn.running(nspawn.Dirs(spec.directory)) is not None

    def shutdown(self, spec: InstanceSpec, force: bool = False, timeout: float = 60) -> None:
        """Graceful poweroff (or kill when force, or when the poweroff takes longer than ``timeout``),
        wait for nspawn to exit, unmount. No-op if stopped."""
        nspawn.stop(nspawn.Dirs(spec.directory), force=force, timeout=timeout)

    def destroy(self, spec: InstanceSpec) -> None:
        """Kill if running, unmount, remove the instance folder."""
        nspawn.stop(nspawn.Dirs(spec.directory), force=True, timeout=10)
        if mounts_under(spec.directory):
            raise BackendError(f"cannot delete {spec.directory}: something is still mounted below it")
        shutil.rmtree(spec.directory, ignore_errors=True)

    def ipv4(self, spec: InstanceSpec) -> list[str]:
        """Global IPv4 addresses inside the running instance, management (bridge) address first."""
        rt = nspawn.require_running(nspawn.Dirs(spec.directory), spec.name)
        addresses = nspawn.addresses_of(rt.leader_pid)
        net = network.current(self.paths)
        return sorted(addresses, key=lambda a: 0 if net and net.contains(a) else 1)

    def runtime_info(self, spec: InstanceSpec) -> dict[str, Any]:
        """For a running instance: {"cpu_count": str, "load": "0.01 0.05 0.10" (/proc/loadavg's first three),
        "memory": {"total": int, "used": int}, "disk": {"total": str, "used": str}, "release": str}."""
        rt = nspawn.require_running(nspawn.Dirs(spec.directory), spec.name)
        try:
            out = nspawn.run_as_root(rt, RUNTIME_INFO_SCRIPT)
            return parse_runtime_info(out)
        except (ValueError, IndexError) as exc:
            raise BackendError(f'cannot read the runtime information of "{spec.name}": {exc}') from exc

    def popen(
        self,
        spec: InstanceSpec,
        argv: Sequence[str],
        *,
        user: str = "ubuntu",
        login_env: bool = True,
        **popen_kwargs: Any,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the running instance as ``user`` (cwd = that user's home, the environment
        an sshd session would give: HOME, USER, LOGNAME, SHELL, PATH, LANG), stdio as in popen_kwargs.

        ``argv`` is executed as given (wrap it in ``bash -c`` for shell features). Nothing of the
        caller's environment reaches it. The returned process is a guard on the host whose exit status
        mirrors the command's. The command and everything it forks (its process group) are terminated
        when the guard gets SIGTERM/SIGINT/SIGHUP, and when the *calling thread* dies in any way
        (parent-death signal): keep the Popen in a thread that outlives the command."""
        dirs = nspawn.Dirs(spec.directory)
        rt = nspawn.require_running(dirs, spec.name)
        acct = nspawn.account(dirs, user)
        if acct is None:
            raise BackendError(f'user "{user}" does not exist in instance "{spec.name}" (is cloud-init done?)')
        return nspawn.popen(rt, nspawn.inner_argv(dirs, acct, argv, login_env), popen_kwargs)


RUNTIME_INFO_SCRIPT = (
    "nproc; cut -d' ' -f1-3 /proc/loadavg; free -b | sed -n 2p; df -B1 --output=size,used / | tail -n 1; "
    '. /etc/os-release; echo "$PRETTY_NAME"'
)


def parse_runtime_info(out: str) -> dict[str, Any]:
    lines = out.splitlines()
    memory = lines[2].split()  # "Mem:  total used free shared buff/cache available"
    disk = lines[3].split()
    return {
        "cpu_count": lines[0].strip(),
        "load": " ".join(lines[1].split()[:3]),
        "memory": {"total": int(memory[1]), "used": int(memory[2])},
        "disk": {"total": disk[0], "used": disk[1]},
        "release": lines[4].strip() if len(lines) > 4 else "",
    }


def kill_nspawns(data: Path) -> list[str]:
    """SIGKILL every nspawn of ours whose -D is below ``data`` (recorded or not) and its container."""
    done = []
    for pid, directory in nspawn.nspawn_processes(data).items():
        for child in children(pid):
            kill(child)
        kill(pid)
        if not wait_gone(pid, 15):
            raise BackendError(f"systemd-nspawn (pid {pid}) for {directory} survived SIGKILL")
        nspawn.remove_propagate_dir(nspawn.Dirs(directory.parent))
        done.append(f"killed instance {directory.parent.name} (nspawn pid {pid})")
    return done
