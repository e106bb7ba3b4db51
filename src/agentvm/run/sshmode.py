"""``CONNECTION=ssh``: the run's tasks reach the clone over OpenSSH (multiplexed) instead of ``multipass exec``.

Per run, in the run's scratch folder (tmpfs): a fresh ed25519 key, authorised in the clone through
``multipass exec`` while the clone is still the golden's (before anything of the run entered it); the clone's
host key read the same way and pinned in a per-run known-hosts file (no trust on first use); a control socket
for OpenSSH's multiplexing. All of it is deleted at teardown (and by the reaper with the scratch folder); no
key is ever baked into the golden. Results still come back through Multipass's capped transfer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from agentvm.multipass import Multipass, MultipassError

AUTHORIZE = (
    'install -d -m 700 "$HOME/.ssh" && cat >> "$HOME/.ssh/authorized_keys" && chmod 600 "$HOME/.ssh/authorized_keys"'
)
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"
USER = "ubuntu"


class SshError(Exception):
    """The SSH mode could not be set up (the run fails in its isolate step)."""


class SshAccess:
    def __init__(self, folder: Path) -> None:
        self.folder = folder / "ssh"
        self.key = self.folder / "id_ed25519"
        self.known_hosts = self.folder / "known_hosts"
        # A Unix socket path has at most 107 bytes: the socket lives in a short folder of its own.
        self.control_dir = (
            Path(tempfile.gettempdir()) / f"agentvm-cm-{hashlib.sha256(str(folder).encode()).hexdigest()[:12]}"
        )
        self.control = self.control_dir / "s"
        self.address: str | None = None

    def _keygen(self) -> str:
        if shutil.which("ssh-keygen") is None or shutil.which("ssh") is None:
            raise SshError("CONNECTION=ssh needs OpenSSH's ssh and ssh-keygen on this host")
        self.folder.mkdir(mode=0o700, exist_ok=True)
        self.control_dir.mkdir(mode=0o700, exist_ok=True)
        proc = subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "agentvm-run", "-f", str(self.key)],
            capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if proc.returncode != 0:
            raise SshError(f"ssh-keygen failed: {proc.stderr.strip()[:200]}")
        return self.key.with_suffix(".pub").read_text()

    def setup(self, mp: Multipass, instance: str, address: str) -> dict[str, str]:
        """Authorise the run's key in the clone, pin its host key; Ansible's connection variables."""
        public = self._keygen()
        try:
            done = mp.cli.exec(instance, ["sh", "-c", AUTHORIZE], input=public.encode(), timeout=60)
            host_key = mp.cli.exec(instance, ["cat", HOST_KEY], timeout=60)
        except MultipassError as exc:
            raise SshError(f"cannot prepare the clone for SSH: {exc}") from None
        fields = host_key.stdout.split()
        if done.rc != 0 or host_key.rc != 0 or len(fields) < 2 or fields[0] != "ssh-ed25519":
            raise SshError(f"the clone has no usable ed25519 host key ({HOST_KEY})")
        self.known_hosts.write_text(f"{address} {fields[0]} {fields[1]}\n")
        self.address = address
        return {"host": address, "user": USER, "key": str(self.key), "args": shlex.join(self.options())}

    def options(self) -> list[str]:
        return [
            f"-oUserKnownHostsFile={self.known_hosts}",
            "-oGlobalKnownHostsFile=/dev/null",
            "-oStrictHostKeyChecking=yes",
            "-oIdentitiesOnly=yes",
            "-oControlMaster=auto",
            f"-oControlPath={self.control}",
            "-oControlPersist=300",
            "-oBatchMode=yes",
        ]

    def write(self, path: Path, ansible_vars: dict[str, str]) -> None:
        path.write_text(json.dumps(ansible_vars))

    def close(self) -> None:
        """End the multiplexing master (it would outlive the run) and delete the key material."""
        if self.address is not None and self.control.exists():
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    ["ssh", *self.options(), "-O", "exit", f"{USER}@{self.address}"],
                    capture_output=True, timeout=15, check=False, stdin=subprocess.DEVNULL,
                )  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)
        shutil.rmtree(self.control_dir, ignore_errors=True)
