"""What goes into the VM, written by Python as data: the agent's run specification (argv, environment, how
the prompt is passed), the prompt, the helper scripts and the workspace, as one tar; and the credentials, as
a 0600 file on tmpfs. Nothing here is ever templated: the playbook only gets the paths."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

from agentvm.run.request import RunRequest
from agentvm.run.vmpaths import VmPaths
from agentvm.run.workspace import pack
from agentvm.settings import REPO

HELPERS = REPO / "roles" / "agent_run" / "files"
HELPER_FILES = ("agent-run.py", "prepare.sh", "collect.sh")


def spec(req: RunRequest, vm: VmPaths) -> dict[str, Any]:
    """agent-run.py's input (spec.json in the VM)."""
    profile = req.profile
    return {
        "argv": profile.command(
            prompt_file=f"{vm.dir}/prompt.txt", prompt=req.prompt, model=req.model, max_turns=req.max_turns
        ),
        "env": {**profile.env, **req.passthrough},
        "env_from": {name: list(sources) for name, sources in profile.env_from.items()},
        "config_files": profile.files(req.model, req.max_turns),
        "prompt_via": profile.prompt,
        "timeout": req.timeout,
        "cwd": vm.workspace,
        "version_command": [profile.binary, "--version"] if profile.binary else [],
        "summary": vm.summary.rsplit("/", 1)[1],
    }


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o600) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def write_bundle(req: RunRequest, vm: VmPaths, staging: Path) -> Path:
    """``<staging>/bundle.tar``: spec.json, prompt.txt, the helper scripts, workspace.tar.gz (if any)."""
    bundle = staging / "bundle.tar"
    workspace = None
    if req.workspace is not None:
        workspace = staging / "workspace.tar.gz"
        pack(req.workspace, workspace)
    with tarfile.open(bundle, "w") as tar:
        # ASCII JSON: a prompt with bytes that are not UTF-8 travels as \udcXX escapes, restored by os.fsencode.
        _add_bytes(tar, "spec.json", json.dumps(spec(req, vm)).encode())
        _add_bytes(tar, "prompt.txt", req.prompt)
        for name in HELPER_FILES:
            _add_bytes(tar, name, (HELPERS / name).read_bytes(), 0o700)
        if workspace is not None:
            tar.add(workspace, arcname="workspace.tar.gz")
    if workspace is not None:
        workspace.unlink()
    return bundle


def write_secrets(req: RunRequest, secret_dir: Path) -> Path | None:
    """The credentials the agent needs, as a 0600 JSON file on tmpfs (None when it needs none)."""
    if not req.secrets:
        return None
    path = secret_dir / "secrets.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(dict(req.secrets), fh)
    return path
