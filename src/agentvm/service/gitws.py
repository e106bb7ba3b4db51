"""A workspace given as a git URL: fetched (one commit, depth 1) into a scratch folder on the worker host.

git runs with an argument list (never a shell), with only the https, ssh and file transports allowed (also for
submodules, which are not fetched), no terminal prompts, no hooks, and a time limit. The caller removes the folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from agentvm.errors import UsageError
from agentvm.service.spec import check_git_url, check_ref

DEFAULT_TIMEOUT = 600
# What git says when the repository or the ref is not there: asking again will not help.
_PERMANENT = (
    "couldn't find remote ref",
    "does not appear to be a git repository",
    "repository not found",
    "not found",
    "no such file or directory",
    "invalid refspec",
)


class FetchFailed(Exception):
    """The workspace could not be fetched, for a reason that may go away (network, server)."""


def git_argv(dest: Path, url: str, ref: str | None) -> list[list[str]]:
    """The git commands that fetch ``ref`` (default: the remote's HEAD) of ``url`` into ``dest``."""
    safe = [
        "-c",
        "protocol.allow=never",
        "-c",
        "protocol.https.allow=always",
        "-c",
        "protocol.ssh.allow=always",
        "-c",
        "protocol.file.allow=always",
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "advice.detachedHead=false",
    ]
    return [
        ["git", "init", "--quiet", str(dest)],
        ["git", *safe, "-C", str(dest), "fetch", "--quiet", "--depth", "1", "--no-tags", "--", url, ref or "HEAD"],
        ["git", *safe, "-C", str(dest), "checkout", "--quiet", "--detach", "FETCH_HEAD"],
    ]


def _git_env(env: Mapping[str, str]) -> dict[str, str]:
    out = {k: v for k, v in env.items() if not k.startswith("GIT_")}
    out.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_ALLOW_PROTOCOL="https:ssh:file",
        GIT_SSH_COMMAND=env.get("GIT_SSH_COMMAND") or "ssh -o BatchMode=yes",
        GIT_CONFIG_NOSYSTEM="1",
    )
    return out


def fetch(url: str, ref: str | None, parent: Path, env: Mapping[str, str] = os.environ, timeout: float = 0) -> Path:
    """Fetch into a new folder under ``parent``; return it. UsageError: the URL or ref is wrong (not retried);
    FetchFailed: anything else (retried)."""
    check_git_url(url)
    if ref is not None:
        check_ref(ref)
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest = Path(tempfile.mkdtemp(prefix=f"ws-{os.getpid()}-", dir=parent))
    limit = timeout or float(env.get("AGENTVM_GIT_TIMEOUT") or DEFAULT_TIMEOUT)
    try:
        for argv in git_argv(dest, url, ref):
            try:
                proc = subprocess.run(
                    argv,
                    env=_git_env(env),
                    capture_output=True,
                    text=True,
                    timeout=limit,
                    check=False,
                    stdin=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired:
                raise FetchFailed(f"fetching the workspace {url} took longer than {limit:.0f} s") from None
            except FileNotFoundError:
                raise FetchFailed("git is not installed on this worker host") from None
            if proc.returncode != 0:
                message = (proc.stderr.strip().splitlines() or [f"git exited {proc.returncode}"])[-1][:300]
                if any(p in proc.stderr.lower() for p in _PERMANENT):
                    raise UsageError(f"cannot fetch the workspace {url} ({ref or 'HEAD'}): {message}")
                raise FetchFailed(f"cannot fetch the workspace {url} ({ref or 'HEAD'}): {message}")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


def remove_stale(parent: Path) -> int:
    """Remove scratch folders whose worker process is gone (left behind by ``kill -9``)."""
    removed = 0
    if not parent.is_dir():
        return 0
    for folder in parent.glob("ws-*-*"):
        try:
            pid = int(folder.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
