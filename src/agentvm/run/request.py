"""Everything a run needs, gathered and checked before any VM, folder or file exists (``UsageError`` otherwise)."""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from agentvm.errors import UsageError
from agentvm.host.isolation import EgressPolicy, parse_credentials, parse_egress
from agentvm.host.proxy import upstream_for_variable
from agentvm.multipass import Multipass, MultipassError, MultipassNotInstalledError
from agentvm.options import RunInput
from agentvm.run.profiles import ARGV_PROMPT_LIMIT, Profile, get_profile
from agentvm.run.workspace import Listing, listing
from agentvm.settings import Settings

MAX_PROMPT_BYTES = 10 * 1024 * 1024
RUN_ID_RE = re.compile(r"^[0-9]{8}t[0-9]{6}-[0-9a-f]{6}$")
_UNCHECKED: Any = object()  # build_request(golden_manifest_id=...) not given: the golden is checked


@dataclass(frozen=True)
class RunRequest:
    run_id: str
    prompt: bytes
    profile: Profile
    timeout: int
    max_turns: int | None
    model: str | None
    workspace: Listing | None
    keep: bool
    instance: str
    golden: str
    golden_manifest_id: str | None
    credentials_mode: str = "proxy"
    egress: EgressPolicy = field(default_factory=lambda: parse_egress(None))
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    passthrough: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    trigger: Mapping[str, str | None] | None = None
    attempt: int | None = None
    from_pool: bool = False
    connection: str = "exec"


def new_run_id(now: dt.datetime | None = None) -> str:
    """Sorts by time, unique across parallel runs: ``20261121t221500-3f9c1a``."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dt%H%M%S}-{secrets.token_hex(3)}"


def read_limited(stream: IO[bytes], limit: int, what: str) -> bytes:
    """At most ``limit`` bytes (one more is read to tell that there is more: then a UsageError)."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"{what} has more than {limit} bytes; the limit is {limit} (10 MiB)")
    return data


def _prompt(inp: RunInput, stdin: IO[bytes] | None) -> bytes:
    if inp.prompt is not None and inp.prompt_file:
        raise UsageError("give either PROMPT or PROMPT_FILE, not both")
    if inp.prompt_file:
        try:
            with open(inp.prompt_file, "rb") as fh:
                data = read_limited(fh, MAX_PROMPT_BYTES, f"PROMPT_FILE {inp.prompt_file}")
        except OSError as exc:
            raise UsageError(f"cannot read PROMPT_FILE {inp.prompt_file}: {exc.strerror}") from None
    elif inp.prompt is not None:
        data = inp.prompt
        if len(data) > MAX_PROMPT_BYTES:
            raise UsageError(f"the prompt has {len(data)} bytes; the limit is {MAX_PROMPT_BYTES} (10 MiB)")
    elif stdin is not None:
        data = read_limited(stdin, MAX_PROMPT_BYTES, "the prompt on stdin")
    else:
        data = b""
    if not data.strip():
        raise UsageError('the prompt is empty: set PROMPT="..." or PROMPT_FILE=path (or pipe it to `agentvm run -`)')
    return data


def _workspace(raw: str | None, settings: Settings) -> Listing | None:
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise UsageError(f"WORKSPACE {raw} is not a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        raise UsageError(f"WORKSPACE {raw} is not readable")
    return listing(path.resolve(), settings.workspace_max_bytes, settings.workspace_max_files)


def _credentials(profile: Profile, env: Mapping[str, str], vault: Mapping[str, str]) -> dict[str, str]:
    """The first of the agent's credential variables that is set (only the one it needs is delivered)."""
    for name in profile.credentials:
        value = env.get(name) or vault.get(name) or ""
        if value:
            return {name: value}
    if profile.credentials:
        names = " or ".join(profile.credentials)
        raise UsageError(
            f"agent {profile.name} needs {names}: export it, or put it in the vault file (AGENTVM_VAULT_FILE)"
        )
    return {}


def _connection(raw: str | None) -> str:
    value = (raw or "exec").strip().lower()
    if value not in ("exec", "ssh"):
        raise UsageError(f"CONNECTION={raw!r} is not valid: use exec (the default, multipass exec) or ssh")
    return value


def _isolation(inp: RunInput) -> tuple[str, EgressPolicy]:
    try:
        return parse_credentials(inp.credentials), parse_egress(inp.egress)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _passthrough(profile: Profile, env: Mapping[str, str], secrets: Mapping[str, str], mode: str) -> dict[str, str]:
    """The profile's passthrough variables set on the host, minus the base URLs the proxy replaces."""
    replaced: set[str] = set()
    if mode == "proxy":
        for name, value in secrets.items():
            try:
                replaced.update(upstream_for_variable(name, value).base_url_vars)
            except ValueError:
                continue
    return {k: env[k] for k in profile.passthrough if env.get(k) and k not in replaced}


def check_golden(mp: Multipass, golden: str) -> str | None:
    """Raise UsageError unless the golden is complete; return its manifest id."""
    try:
        found = mp.golden(golden)
    except MultipassNotInstalledError as exc:
        raise UsageError(f"{exc}: install Multipass 1.15+ (see README) or set MULTIPASS_BIN") from None
    except MultipassError as exc:
        raise UsageError(f"cannot ask Multipass about {golden}: {str(exc).strip()}") from None
    if found.state is None:
        raise UsageError(f"no golden VM {golden}: build it with `make golden` first")
    if found.state == "Deleted":
        raise UsageError(f"the golden VM {golden} is deleted: run `make golden FORCE=1`")
    if found.manifest is None:
        raise UsageError(f"the golden VM {golden} has no `sealed` snapshot (an unfinished build): run `make golden`")
    return found.manifest_id


def build_request(
    settings: Settings,
    inp: RunInput,
    *,
    stdin: IO[bytes] | None = None,
    vault: Mapping[str, str] | None = None,
    mp: Multipass | None = None,
    run_id: str | None = None,
    golden_manifest_id: Any = _UNCHECKED,
) -> RunRequest:
    """Validate the inputs (in the order a user fixes them) and return the request. Raises UsageError."""
    data = _prompt(inp, stdin)
    profile = get_profile(inp.agent or "claude", inp.agent_command, inp.agent_credentials)
    if profile.prompt == "argv" and len(data) > ARGV_PROMPT_LIMIT:
        raise UsageError(f"agent {profile.name} takes the prompt as an argument: at most {ARGV_PROMPT_LIMIT} bytes")
    workspace = _workspace(inp.workspace, settings)
    mode, policy = _isolation(inp)
    connection = _connection(inp.connection)
    found = _credentials(profile, settings.env, vault or {})
    if golden_manifest_id is _UNCHECKED:
        client = mp or Multipass(settings.multipass_bin, settings.env)
        golden_manifest_id = check_golden(client, settings.golden)
    run_id = run_id or new_run_id()
    if not RUN_ID_RE.match(run_id):
        raise UsageError(f"run id {run_id!r} is not of the form 20261121t221500-3f9c1a")
    return RunRequest(
        run_id=run_id,
        prompt=data,
        profile=profile,
        timeout=inp.timeout or settings.default_timeout,
        max_turns=inp.max_turns,
        model=inp.model,
        workspace=workspace,
        keep=bool(inp.keep),
        instance=f"{settings.prefix}-run-{run_id}",
        golden=settings.golden,
        golden_manifest_id=golden_manifest_id,
        credentials_mode=mode,
        egress=policy,
        connection=connection,
        secrets=found,
        passthrough=_passthrough(profile, settings.env, found, mode),
        labels=dict(inp.labels),
        trigger=dict(inp.trigger) if inp.trigger else None,
        attempt=inp.attempt,
    )
