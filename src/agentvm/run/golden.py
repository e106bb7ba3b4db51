"""``make golden`` and ``make verify-golden``: run playbooks/golden.yml or verify-golden.yml with checked inputs.

The agent selection is checked against the catalog of roles/golden_provision (the single source); FORCE and
KEEP are booleans. Everything reaches the playbook as ``!unsafe`` extra variables, with a clean environment
(no credential of the host reaches the build).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from agentvm.errors import Exit, UsageError
from agentvm.run.playbook import clean_env, extravars_yaml
from agentvm.settings import REPO, Settings, role_defaults

_AGENTS = re.compile(r"^[a-z][a-z0-9_-]*(,[a-z][a-z0-9_-]*)*$")


def agents(raw: str | None) -> list[str] | None:
    """The selected agents (None: the role's default selection)."""
    if raw is None or raw.strip() == "":
        return None
    text = raw.replace(" ", "")
    catalog = role_defaults("golden_provision")["golden_provision_agent_catalog"]
    if not _AGENTS.match(text):
        raise UsageError(f"AGENTS must be a comma-separated list of {', '.join(catalog)}, got {raw[:80]!r}")
    names = list(dict.fromkeys(text.split(",")))
    unknown = [n for n in names if n not in catalog]
    if unknown:
        raise UsageError(f"unknown agent(s) in AGENTS: {', '.join(unknown)}; choose from {', '.join(catalog)}")
    return names


def _playbook(settings: Settings, playbook: str, extravars: dict[str, Any]) -> int:
    common = {
        "golden_image_prefix": settings.prefix,
        "golden_image_manifest_path": str(settings.golden_dir / "manifest.json"),
    }
    if settings.multipass_bin:
        common["golden_image_multipass_bin"] = settings.multipass_bin
    settings.scratch_root.mkdir(parents=True, exist_ok=True)
    varsfile = settings.scratch_root / f"agentvm-golden-{os.getpid()}.yml"
    fd = os.open(varsfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(extravars_yaml({**common, **extravars}))
    env = clean_env(
        settings.env,
        {
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": str(REPO / "collections"),
            "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
            "AGENTVM_PREFIX": settings.prefix,
        },
    )
    for key in ("ANSIBLE_NOCOLOR", "ANSIBLE_FORCE_COLOR"):
        if key in settings.env:
            env[key] = settings.env[key]
    argv = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        str(REPO / "playbooks" / playbook),
        "-e",
        f"@{varsfile}",
    ]
    try:
        return subprocess.run(argv, env=env, cwd=REPO, check=False).returncode
    finally:
        with contextlib.suppress(OSError):
            varsfile.unlink()


def build(settings: Settings, selection: str | None, *, force: bool, keep: bool) -> int:
    names = agents(selection)
    extravars: dict[str, Any] = {"golden_image_force": force, "golden_image_keep": keep}
    if names is not None:
        extravars["golden_provision_agents"] = names
    return Exit.SUCCEEDED if _playbook(settings, "golden.yml", extravars) == 0 else Exit.INFRA_FAILED


def verify(settings: Settings) -> int:
    return Exit.SUCCEEDED if _playbook(settings, "verify-golden.yml", {}) == 0 else Exit.INFRA_FAILED
