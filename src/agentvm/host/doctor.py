"""``make doctor``: check what runs need on this host and print a fix for each problem."""

from __future__ import annotations

import datetime as dt
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

from agentvm.host import egress
from agentvm.multipass import Multipass, MultipassError
from agentvm.run.profiles import load_profiles
from agentvm.settings import VM_MEMORY, Settings
from agentvm.textsafe import one_line

MIN_MULTIPASS = (1, 15, 0)
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


def _version(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split("+")[0].split("-")[0].split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


def check_multipass(settings: Settings) -> tuple[list[Check], Multipass | None]:
    mp = Multipass(settings.multipass_bin, settings.env, timeout=30)
    try:
        path = mp.binary
    except MultipassError as exc:
        name = settings.multipass_bin or "multipass"
        return [Check("multipass", "fail", f"`{name}` not found: {one_line(str(exc))}", _install_hint())], None
    try:
        versions = mp.version()
    except MultipassError as exc:
        return [
            Check("multipass", "fail", f"`{path} version` failed: {one_line(str(exc))}", "reinstall Multipass")
        ], None
    client, daemon = versions.get("multipass") or "?", versions.get("multipassd")
    checks = [Check("multipass", "ok", f"{path} {client}")]
    if _version(client) < MIN_MULTIPASS:
        checks.append(Check("multipass version", "fail", f"{client} is older than 1.15", "upgrade Multipass"))
    why = ""
    try:
        mp.instances()
    except MultipassError as exc:
        why = one_line(str(exc)) or "no answer"
    if why or daemon is None:
        checks.append(
            Check(
                "multipass daemon",
                "fail",
                f"not reachable: {why or 'no answer'}",
                "start it: `sudo snap restart multipass` (Linux) or reopen Multipass.app (macOS); on Linux add "
                "yourself to the socket's group if access is denied",
            )
        )
        return checks, None
    checks.append(Check("multipass daemon", "ok", f"multipassd {daemon} answers"))
    return checks, mp


def check_golden(settings: Settings, mp: Multipass, now: dt.datetime | None = None) -> list[Check]:
    golden = settings.golden
    try:
        found = mp.golden(golden)
    except MultipassError as exc:
        return [
            Check("golden", "fail", f"cannot read {golden}: {one_line(str(exc))}", "check Multipass (`multipass list`)")
        ]
    if found.state is None:
        return [Check("golden", "fail", f"no golden VM {golden}", "build it: `make golden`")]
    if found.state != "Stopped":
        return [
            Check("golden", "fail", f"{golden} is {found.state}; clones need it Stopped", f"`multipass stop {golden}`")
        ]
    manifest = found.manifest or {}
    if not manifest:
        return [Check("golden", "warn", f"{golden} has no sealed snapshot with a manifest", "`make golden FORCE=1`")]
    built = str(manifest.get("built_at") or "")
    try:
        age = ((now or dt.datetime.now(dt.UTC)) - dt.datetime.fromisoformat(built.replace("Z", "+00:00"))).days
    except ValueError:
        return [Check("golden", "warn", f"{golden}: unknown build date", "`make golden FORCE=1`")]
    if age > settings.golden_max_age_days:
        return [
            Check(
                "golden",
                "warn",
                f"{golden} was built {age} days ago (agents and packages age)",
                "`make golden FORCE=1`",
            )
        ]
    inputs = str(manifest.get("inputs_sha256", "?"))[:12]
    return [Check("golden", "ok", f"{golden} built {built} ({age} days ago), inputs {inputs}")]


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def check_resources(settings: Settings, storage: Path | None = None) -> list[Check]:
    gib = 1024**3
    cap = settings.max_vms
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
        need = VM_MEMORY * cap
        level = "ok" if available >= VM_MEMORY else "fail" if available < VM_MEMORY // 2 else "warn"
        if level == "ok" and available < need:
            level = "warn"
        checks.append(
            Check(
                "memory",
                level,
                f"{available / gib:.1f} GiB available; MAX_VMS={cap} VMs of {VM_MEMORY // gib} GiB "
                f"need {need / gib:.0f}",
                "" if level == "ok" else "lower MAX_VMS, or close other programs",
            )
        )
    return checks


def check_credentials(settings: Settings) -> list[Check]:
    env = settings.env
    checks = []
    vault = bool(settings.vault_file)
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


def check_egress() -> list[Check]:
    """Whether this host can enforce default-deny egress for run VMs (docs/security.md)."""
    found = egress.probe()
    if found.ok:
        return [Check("egress enforcement", "ok", f"nftables can enforce default-deny egress ({found.summary()})")]
    return [
        Check(
            "egress enforcement",
            "warn",
            f"runs cannot be isolated here: {found.summary()}",
            "run agentvm as root with nftables (Linux), load the pf anchor (macOS), or accept `enforced: false`",
        )
    ]


def check_pool(settings: Settings, mp: Multipass) -> list[Check]:
    """The warm pool (docs/speed.md): its keeper and its ready VMs."""
    from agentvm.host.pool import Pool

    pool = Pool(settings, mp)
    ready = pool.ready()
    names = ", ".join(vm.name for vm in ready[:4]) + (" ..." if len(ready) > 4 else "")
    if pool.keeper_alive():
        return [Check("warm pool", "ok", f"keeper running; {len(ready)} ready VM(s){': ' + names if ready else ''}")]
    if ready:
        return [
            Check(
                "warm pool",
                "warn",
                f"{len(ready)} VM(s) of a keeper that is not running: {names}",
                "`make clean` deletes them; `make pool POOL=N` starts a keeper again",
            )
        ]
    return [Check("warm pool", "ok", "none (`make pool POOL=N` keeps N VMs ready for instant starts)")]


def run_checks(settings: Settings) -> list[Check]:
    checks, mp = check_multipass(settings)
    if mp is not None:
        checks += check_golden(settings, mp)
        checks += check_pool(settings, mp)
    checks += check_resources(settings)
    checks += check_credentials(settings)
    checks += check_egress()
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
