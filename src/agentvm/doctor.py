"""``make doctor``: check what runs need on this host and print a fix for each problem."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agentvm import slots
from agentvm.profiles import load_profiles

MIN_MULTIPASS = (1, 15, 0)
GOLDEN_MAX_AGE_DAYS = 30
VM_DISK = 20 * 1024**3


@dataclass
class Check:
    name: str
    level: str  # ok | warn | fail
    detail: str
    fix: str = ""


def _install_hint() -> str:
    if platform.system() == "Darwin":
        return "install Multipass: `brew install --cask multipass` (or Canonical's installer)"
    return "install Multipass: `sudo snap install multipass` (then `multipass version` should answer)"


def _run(argv: list[str], env: Mapping[str, str], timeout: float = 30) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, env=dict(env), timeout=timeout, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def _version(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split("+")[0].split("-")[0].split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


def check_multipass(env: Mapping[str, str]) -> tuple[list[Check], str | None]:
    name = env.get("MULTIPASS_BIN") or "multipass"
    path = shutil.which(name)
    if path is None:
        return [Check("multipass", "fail", f"`{name}` not found on PATH", _install_hint())], None
    proc = _run([path, "version", "--format", "json"], env)
    if proc is None or proc.returncode != 0:
        return [Check("multipass", "fail", f"`{path} version` failed", "reinstall Multipass")], None
    try:
        client = str(json.loads(proc.stdout).get("multipass"))
        daemon = json.loads(proc.stdout).get("multipassd")
    except (ValueError, AttributeError):
        return [Check("multipass", "fail", f"`{path} version --format json` printed no JSON", "reinstall")], None
    checks = [Check("multipass", "ok", f"{path} {client}")]
    if _version(client) < MIN_MULTIPASS:
        checks.append(Check("multipass version", "fail", f"{client} is older than 1.15", "upgrade Multipass"))
    listed = _run([path, "list", "--format", "json"], env)
    if daemon is None or listed is None or listed.returncode != 0:
        why = (listed.stderr.strip() if listed else "no answer") or "no answer"
        checks.append(
            Check(
                "multipass daemon",
                "fail",
                f"not reachable: {why}",
                "start it: `sudo snap restart multipass` (Linux) or reopen Multipass.app (macOS); on Linux add "
                "yourself to the socket's group if access is denied",
            )
        )
        return checks, None
    checks.append(Check("multipass daemon", "ok", f"multipassd {daemon} answers"))
    return checks, path


def check_golden(binary: str, env: Mapping[str, str], now: dt.datetime | None = None) -> list[Check]:
    golden = f"{env.get('AGENTVM_PREFIX') or 'agentvm'}-golden"
    proc = _run([binary, "info", golden, "--format", "json", "--no-runtime-information"], env, timeout=60)
    if proc is None or proc.returncode != 0:
        return [Check("golden", "fail", f"no golden VM {golden}", "build it: `make golden`")]
    state = json.loads(proc.stdout)["info"][golden]["state"]
    if state != "Stopped":
        return [Check("golden", "fail", f"{golden} is {state}; clones need it Stopped", f"`multipass stop {golden}`")]
    proc = _run([binary, "info", golden, "--snapshots", "--format", "json"], env, timeout=60)
    info = json.loads(proc.stdout)["info"].get(golden, {}) if proc is not None and proc.returncode == 0 else {}
    comment = (info.get("snapshots") or {}).get("sealed", {}).get("comment") or ""
    try:
        manifest = json.loads(comment)
    except ValueError:
        manifest = {}
    if not manifest:
        return [Check("golden", "warn", f"{golden} has no sealed snapshot with a manifest", "`make golden FORCE=1`")]
    built = manifest.get("built_at") or ""
    try:
        age = ((now or dt.datetime.now(dt.UTC)) - dt.datetime.fromisoformat(built.replace("Z", "+00:00"))).days
    except ValueError:
        return [Check("golden", "warn", f"{golden}: unknown build date", "`make golden FORCE=1`")]
    limit = int(env.get("AGENTVM_GOLDEN_MAX_AGE_DAYS") or GOLDEN_MAX_AGE_DAYS)
    if age > limit:
        return [
            Check(
                "golden",
                "warn",
                f"{golden} was built {age} days ago (agents and packages age)",
                "`make golden FORCE=1`",
            )
        ]
    return [
        Check(
            "golden", "ok", f"{golden} built {built} ({age} days ago), inputs {manifest.get('inputs_sha256', '?')[:12]}"
        )
    ]


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def check_resources(env: Mapping[str, str], storage: Path | None = None) -> list[Check]:
    gib = 1024**3
    cap = slots.max_vms(env)
    storage = storage or Path("/var/snap/multipass" if Path("/var/snap/multipass").exists() else Path.home())
    free = shutil.disk_usage(storage).free
    checks = []
    need_disk = VM_DISK  # clones are copy-on-write, but a run's disk can grow up to the VM's size
    level = "ok" if free >= need_disk else "fail"
    checks.append(
        Check(
            "disk",
            level,
            f"{free / gib:.1f} GiB free under {storage} (a VM may grow to {need_disk // gib} GiB)",
            "" if level == "ok" else "free disk space, or lower the golden's disk size (golden_image_disk)",
        )
    )
    available = _mem_available()
    if available is not None:
        need = slots.VM_MEMORY * cap
        level = "ok" if available >= slots.VM_MEMORY else "fail" if available < slots.VM_MEMORY // 2 else "warn"
        if level == "ok" and available < need:
            level = "warn"
        checks.append(
            Check(
                "memory",
                level,
                f"{available / gib:.1f} GiB available; MAX_VMS={cap} VMs of {slots.VM_MEMORY // gib} GiB "
                f"need {need / gib:.0f}",
                "" if level == "ok" else "lower MAX_VMS, or close other programs",
            )
        )
    return checks


def check_credentials(env: Mapping[str, str]) -> list[Check]:
    checks = []
    vault = bool(env.get("AGENTVM_VAULT_FILE"))
    for name, profile in load_profiles().items():
        names = profile.get("credentials") or []
        if name == "custom" or not names:
            continue
        found = [n for n in names if env.get(n)]
        if found:
            checks.append(Check(f"credentials {name}", "ok", f"{found[0]} is set"))
        else:
            where = " (may be in the vault file)" if vault else ""
            checks.append(
                Check(
                    f"credentials {name}",
                    "warn",
                    f"none of {', '.join(names)} set{where}",
                    f"export {names[0]}=... or add it to AGENTVM_VAULT_FILE, to use AGENT={name}",
                )
            )
    return checks


def run_checks(env: Mapping[str, str] = os.environ) -> list[Check]:
    checks, binary = check_multipass(env)
    if binary:
        checks += check_golden(binary, env)
    checks += check_resources(env)
    checks += check_credentials(env)
    return checks


def report(checks: list[Check]) -> tuple[str, int]:
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    lines = []
    for c in checks:
        lines.append(f"[{marks[c.level]}] {c.name}: {c.detail}")
        if c.fix:
            lines.append(f"       fix: {c.fix}")
    failed = sum(c.level == "fail" for c in checks)
    warned = sum(c.level == "warn" for c in checks)
    lines.append(f"{failed} problem(s), {warned} warning(s)")
    return "\n".join(lines), 1 if failed else 0
