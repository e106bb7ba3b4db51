"""Every setting of agentvm, read once from the environment (and the command line's flags), typed and checked.

One integer parser, one boolean parser: a bad value is a ``UsageError`` naming the variable, raised before
anything is created. The object is frozen and passed down explicitly; nothing else reads ``os.environ``
for a setting. Defaults that the roles also know (timeouts, retries) are read from the roles' own
``defaults/main.yml``, so each default is stated once.
"""

from __future__ import annotations

import functools
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentvm.errors import UsageError

REPO = Path(__file__).resolve().parents[2]
NAME_RE = re.compile(r"^[a-zA-Z]([a-zA-Z0-9-]*[a-zA-Z0-9])?$")
_DIGITS = re.compile(r"[0-9]+")
TRUE = ("1", "true", "yes")
FALSE = ("", "0", "false", "no")
GIB = 1024**3
MIB = 1024**2
VM_CPUS = 2
VM_MEMORY = 4 * GIB
RESERVED_MEMORY = 2 * GIB


def parse_int(name: str, raw: str | None, default: int | None, *, minimum: int = 1, unit: str = "") -> int | None:
    """ASCII digits only (no signs, no spaces, no other scripts' digits); ``default`` when unset or empty."""
    text = "" if raw is None else str(raw)
    if text == "":
        return default
    if not _DIGITS.fullmatch(text) or int(text) < minimum:
        what = "a positive whole number" if minimum >= 1 else "a whole number (0 or more)"
        raise UsageError(f"{name} must be {what}{' of ' + unit if unit else ''}, got {text!r}")
    return int(text)


def parse_bool(name: str, raw: str | None, default: bool = False) -> bool:
    """``1``/``true``/``yes`` are true, ``0``/``false``/``no``/empty are false; anything else is an error."""
    if raw is None:
        return default
    text = str(raw).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise UsageError(f"{name} must be 1, true or yes (or 0, false, no), got {str(raw)!r}")


@functools.cache
def role_defaults(role: str) -> dict[str, Any]:
    """A role's ``defaults/main.yml`` (the single source of the defaults it shares with the Python side)."""
    return yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()) or {}


def _mem_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def default_max_vms(cpus: int | None = None, memory: int | None = None) -> int:
    """One VM per host CPU, and as many VM_MEMORY-sized VMs as fit in memory minus a 2 GiB reserve."""
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    memory = memory if memory is not None else _mem_total()
    by_memory = (memory - RESERVED_MEMORY) // VM_MEMORY if memory else cpus
    return max(1, min(cpus, by_memory))


def _scratch_root(state_dir: Path) -> Path:
    """tmpfs when the host has one we may write (credentials never touch a disk), else the state folder."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return state_dir / "scratch"


@dataclass(frozen=True)
class Settings:
    """Host-level settings of agentvm (the inputs of one run are ``options.RunInput``)."""

    env: Mapping[str, str] = field(repr=False)
    prefix: str
    runs_dir: Path
    state_dir: Path
    scratch_root: Path
    golden_dir: Path
    host: str
    multipass_bin: str | None
    max_vms: int
    queue_timeout: int
    reap: bool
    reap_grace: int
    retries: int
    retry_delay: int
    vm_timeout: int
    default_timeout: int
    max_result_bytes: int
    workspace_max_bytes: int
    workspace_max_files: int
    golden_max_age_days: int
    alert_webhook_url: str
    alert_command: str
    alert_attempts: int
    vault_file: str | None
    vault_password_file: str | None
    ansible_verbosity: int
    pool_size: int
    pool_max_age: int

    @property
    def golden(self) -> str:
        return f"{self.prefix}-golden"

    @property
    def repo(self) -> Path:
        return REPO

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and check every setting from ``env`` (default ``os.environ``)."""
        env = dict(os.environ if env is None else env)
        run_vm = role_defaults("run_vm")
        agent_run = role_defaults("agent_run")
        prefix = env.get("AGENTVM_PREFIX") or "agentvm"
        if not NAME_RE.match(f"{prefix}-golden") or len(prefix) > 20:
            raise UsageError(
                f"AGENTVM_PREFIX {prefix!r} must be letters, digits and hyphens, starting with a letter (at most 20)"
            )
        state_dir = Path(env.get("AGENTVM_STATE_DIR") or Path.home() / ".local" / "state" / "agentvm").expanduser()
        host = env.get("AGENTVM_HOST") or socket.gethostname().split(".")[0] or "localhost"
        return cls(
            env=env,
            prefix=prefix,
            runs_dir=Path(env.get("AGENTVM_RUNS_DIR") or REPO / "runs").expanduser().resolve(),
            state_dir=state_dir.resolve(),
            scratch_root=Path(env["AGENTVM_SCRATCH_DIR"])
            if env.get("AGENTVM_SCRATCH_DIR")
            else _scratch_root(state_dir),
            golden_dir=Path(env.get("AGENTVM_GOLDEN_DIR") or REPO / "golden").expanduser(),
            host=host,
            multipass_bin=env.get("MULTIPASS_BIN") or None,
            max_vms=_int(env, "MAX_VMS", default_max_vms()),
            queue_timeout=_int(env, "AGENTVM_QUEUE_TIMEOUT", 3600, unit="seconds"),
            reap=parse_bool("AGENTVM_REAP", env.get("AGENTVM_REAP"), default=True),
            reap_grace=_int(env, "AGENTVM_REAP_GRACE", 24 * 3600, unit="seconds"),
            retries=_int(env, "AGENTVM_RETRIES", int(run_vm["run_vm_retries"]), minimum=0),
            retry_delay=_int(env, "AGENTVM_RETRY_DELAY", int(run_vm["run_vm_retry_delay"]), minimum=0),
            vm_timeout=_int(env, "AGENTVM_VM_TIMEOUT", int(run_vm["run_vm_timeout"]), unit="seconds"),
            default_timeout=int(agent_run["agent_run_timeout"]),
            max_result_bytes=_int(env, "AGENTVM_MAX_RESULT_MB", 1024, unit="MiB") * MIB,
            workspace_max_bytes=_int(env, "AGENTVM_WORKSPACE_MAX_MB", 512, unit="MiB") * MIB,
            workspace_max_files=_int(env, "AGENTVM_WORKSPACE_MAX_FILES", 100_000),
            golden_max_age_days=_int(env, "AGENTVM_GOLDEN_MAX_AGE_DAYS", 30, unit="days"),
            alert_webhook_url=(env.get("ALERT_WEBHOOK_URL") or "").strip(),
            alert_command=(env.get("ALERT_COMMAND") or "").strip(),
            alert_attempts=_int(env, "ALERT_ATTEMPTS", 3),
            vault_file=env.get("AGENTVM_VAULT_FILE") or None,
            vault_password_file=env.get("AGENTVM_VAULT_PASSWORD_FILE")
            or env.get("ANSIBLE_VAULT_PASSWORD_FILE")
            or None,
            ansible_verbosity=_int(env, "AGENTVM_ANSIBLE_VERBOSITY", 0, minimum=0),
            pool_size=_int(env, "POOL", 0, minimum=0),
            pool_max_age=_int(env, "POOL_MAX_AGE", 3600, unit="seconds"),
        )


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 1, unit: str = "") -> int:
    value = parse_int(name, env.get(name), default, minimum=minimum, unit=unit)
    assert value is not None
    return value
