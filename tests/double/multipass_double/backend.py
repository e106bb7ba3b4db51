"""Real instances for the double: systemd-nspawn containers booted from an overlay of a cached rootfs.

CONTRACT (used by cli.py/state.py; keep these signatures):

Layout of one instance's folder ``Paths.instance_dir(name)`` (the backend owns everything in it except
``record.json``, which does not exist: records live in ``Paths.state_file``):
    upper/ work/   overlayfs upper and work dirs (the instance's own "disk")
    merged/        the overlay mount point while the instance runs
    seed/          NoCloud seed: ``user-data``, ``meta-data`` (bind-mounted read-only at
                   /var/lib/cloud/seed/nocloud in the container)
    console.log    systemd-nspawn's output
    runtime.json   {"nspawn_pid": int, "leader_pid": int, "boot_id": str} while running

Lower layers: ``InstanceSpec.layers`` lists read-only layer dirs, topmost first; the backend appends
the image rootfs as the bottom layer. state.py creates layers by renaming a stopped instance's
``upper/`` into ``Paths.layers/<id>`` (clone, snapshot); the backend never writes into a layer.

Every method is safe to call from concurrent processes for *different* instances; the caller
serialises operations on one instance. Errors raise ``BackendError`` (message for humans) or
``BackendTimeout``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multipass_double.config import Paths


class BackendError(Exception):
    """Something failed below the CLI (mount, nspawn, network)."""


class BackendTimeout(BackendError):
    """A wait (SSH up, cloud-init done, poweroff) did not finish in time."""


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
        """Build the rootfs once per machine (debootstrap + fixes, under a lock), then return it."""
        raise NotImplementedError

    def ensure_network(self) -> None:
        """Bridge + dnsmasq (DHCP) + NAT for this data folder; idempotent, concurrency-safe."""
        raise NotImplementedError

    def teardown(self) -> list[str]:
        """Kill every instance of this data folder, unmount, remove bridge/dnsmasq/NAT. Return what was done."""
        raise NotImplementedError

    # -- one instance --------------------------------------------------------------------------
    def prepare(self, spec: InstanceSpec) -> None:
        """Create upper/work/merged/seed for a new instance (no boot)."""
        raise NotImplementedError

    def boot(self, spec: InstanceSpec, timeout: float) -> None:
        """Write the seed, mount the overlay, start nspawn detached; return once sshd accepts on the
        instance's IPv4 (the `start` criterion). Raise BackendTimeout otherwise (instance left running)."""
        raise NotImplementedError

    def wait_cloud_init(self, spec: InstanceSpec, timeout: float) -> None:
        """Wait for /var/lib/cloud/instance/boot-finished (the `launch` criterion)."""
        raise NotImplementedError

    def is_running(self, spec: InstanceSpec) -> bool:
        raise NotImplementedError

    def shutdown(self, spec: InstanceSpec, force: bool = False, timeout: float = 60) -> None:
        """Graceful poweroff (or kill when force), wait for nspawn to exit, unmount. No-op if stopped."""
        raise NotImplementedError

    def destroy(self, spec: InstanceSpec) -> None:
        """Kill if running, unmount, remove the instance folder."""
        raise NotImplementedError

    def ipv4(self, spec: InstanceSpec) -> list[str]:
        """Global IPv4 addresses inside the running instance, management (bridge) address first."""
        raise NotImplementedError

    def runtime_info(self, spec: InstanceSpec) -> dict[str, Any]:
        """For a running instance: {"cpu_count": str, "load": [float, float, float],
        "memory": {"total": int, "used": int}, "disk": {"total": str, "used": str}, "release": str}."""
        raise NotImplementedError

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
        an sshd session would give: HOME, USER, LOGNAME, SHELL, PATH, LANG), stdio as in popen_kwargs."""
        raise NotImplementedError
