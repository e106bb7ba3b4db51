"""Everything a run needs, gathered and checked before any VM exists."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agentvm.errors import UsageError
from agentvm.profiles import ARGV_PROMPT_LIMIT, Profile, get_profile

REPO = Path(__file__).resolve().parents[2]
NAME_RE = re.compile(r"^[a-zA-Z]([a-zA-Z0-9-]*[a-zA-Z0-9])?$")
DEFAULT_TIMEOUT = 1800
MAX_PROMPT_BYTES = 10 * 1024 * 1024


@dataclass
class RunRequest:
    run_id: str
    prompt: bytes
    profile: Profile
    timeout: int
    workspace: Path | None
    keep: bool
    model: str | None
    max_turns: int | None
    prefix: str
    multipass_bin: str
    runs_dir: Path
    retries: int = 1
    retry_delay: int = 5
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    passthrough: dict[str, str] = field(default_factory=dict)

    @property
    def instance(self) -> str:
        return f"{self.prefix}-run-{self.run_id}"

    @property
    def golden(self) -> str:
        return f"{self.prefix}-golden"

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.run_id


def new_run_id(now: dt.datetime | None = None) -> str:
    """Sorts by time, unique across parallel runs: ``20261121t221500-3f9c1a``."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dt%H%M%S}-{secrets.token_hex(3)}"


def _prompt(env: Mapping[str, str], prompt: str | None, prompt_file: str | None, stdin: bytes | None) -> bytes:
    if prompt is not None and prompt_file:
        raise UsageError("give either PROMPT or PROMPT_FILE, not both")
    if prompt_file:
        try:
            data = Path(prompt_file).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read PROMPT_FILE {prompt_file}: {exc.strerror}") from None
    elif prompt is not None:
        data = prompt.encode("utf-8", errors="surrogateescape")
    elif stdin is not None:
        data = stdin
    else:
        data = b""
    if not data.strip():
        raise UsageError('the prompt is empty: set PROMPT="..." or PROMPT_FILE=path (or pipe it to `agentvm run -`)')
    if len(data) > MAX_PROMPT_BYTES:
        raise UsageError(f"the prompt has {len(data)} bytes; the limit is {MAX_PROMPT_BYTES}")
    return data


def _int(env: Mapping[str, str], key: str, default: int | None) -> int | None:
    raw = env.get(key, "")
    if raw == "":
        return default
    if not raw.isdigit() or int(raw) <= 0:
        raise UsageError(
            f"{key} must be a positive whole number of {'seconds' if key == 'TIMEOUT' else 'turns'}, got {raw!r}"
        )
    return int(raw)


def _count(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    if raw == "":
        return default
    if not raw.isdigit():
        raise UsageError(f"{key} must be a whole number (0 or more), got {raw!r}")
    return int(raw)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _workspace(raw: str | None) -> Path | None:
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise UsageError(f"WORKSPACE {raw} is not a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        raise UsageError(f"WORKSPACE {raw} is not readable")
    return path.resolve()


def _multipass(env: Mapping[str, str]) -> str:
    name = env.get("MULTIPASS_BIN") or "multipass"
    path = shutil.which(name)
    if path is None:
        raise UsageError(f"`{name}` not found: install Multipass 1.15+ (see README) or set MULTIPASS_BIN")
    return path


def check_golden(multipass: str, golden: str, env: Mapping[str, str]) -> None:
    proc = subprocess.run(
        [multipass, "info", golden, "--format", "json", "--no-runtime-information"],
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=120,
        check=False,
    )
    if proc.returncode == 0:
        state = json.loads(proc.stdout)["info"][golden]["state"]
        if state == "Deleted":
            raise UsageError(f"the golden VM {golden} is deleted: run `make golden FORCE=1`")
        return
    if "does not exist" in proc.stderr:
        raise UsageError(f"no golden VM {golden}: build it with `make golden` first")
    raise UsageError(f"cannot ask Multipass about {golden}: {proc.stderr.strip() or proc.returncode}")


def _credentials(profile: Profile, env: Mapping[str, str], vault: Mapping[str, str]) -> dict[str, str]:
    found = {name: (env.get(name) or vault.get(name) or "") for name in profile.credentials}
    found = {k: v for k, v in found.items() if v}
    if profile.credentials and not found:
        names = " or ".join(profile.credentials)
        raise UsageError(
            f"agent {profile.name} needs {names}: export it, or put it in the vault file (AGENTVM_VAULT_FILE)"
        )
    return found


def build_request(
    env: Mapping[str, str],
    *,
    prompt: str | None = None,
    prompt_file: str | None = None,
    stdin: bytes | None = None,
    vault: Mapping[str, str] | None = None,
    check_golden_vm: bool = True,
) -> RunRequest:
    """Validate the inputs (in the order a user fixes them) and return the request. Raises UsageError."""
    data = _prompt(
        env, prompt if prompt is not None else env.get("PROMPT") or None, prompt_file or env.get("PROMPT_FILE"), stdin
    )
    profile = get_profile(env.get("AGENT") or "claude", env.get("AGENT_COMMAND"), env.get("AGENT_CREDENTIALS"))
    if profile.prompt == "argv" and len(data) > ARGV_PROMPT_LIMIT:
        raise UsageError(f"agent {profile.name} takes the prompt as an argument: at most {ARGV_PROMPT_LIMIT} bytes")
    timeout = _int(env, "TIMEOUT", DEFAULT_TIMEOUT)
    max_turns = _int(env, "MAX_TURNS", None)
    prefix = env.get("AGENTVM_PREFIX") or "agentvm"
    if not NAME_RE.match(f"{prefix}-golden"):
        raise UsageError(f"AGENTVM_PREFIX {prefix!r} must be letters, digits and hyphens, starting with a letter")
    workspace = _workspace(env.get("WORKSPACE"))
    secrets_found = _credentials(profile, env, vault or {})
    multipass = _multipass(env)
    request = RunRequest(
        run_id=new_run_id(),
        prompt=data,
        profile=profile,
        timeout=timeout or DEFAULT_TIMEOUT,
        workspace=workspace,
        keep=_truthy(env.get("KEEP")),
        model=env.get("MODEL") or None,
        max_turns=max_turns,
        prefix=prefix,
        multipass_bin=multipass,
        runs_dir=Path(env.get("AGENTVM_RUNS_DIR") or REPO / "runs").resolve(),
        retries=_count(env, "AGENTVM_RETRIES", 1),
        retry_delay=_count(env, "AGENTVM_RETRY_DELAY", 5),
        secrets=secrets_found,
        passthrough={k: env[k] for k in profile.passthrough if env.get(k)},
    )
    if check_golden_vm:
        check_golden(multipass, request.golden, env)
    return request
