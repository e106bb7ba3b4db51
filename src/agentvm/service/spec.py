"""The run request of the service: what ``agentvm submit`` sends, the ``AgentRun`` workflow's input.

Everything in it is data that travels through Temporal and is stored in the workflow history, so it carries no
secret: credentials stay on the worker hosts (their environment or vault file), and a git URL with a password or
token in it is refused. The worker checks a spec again (:func:`validate`) before it acts on it: anyone who can
start workflows on the namespace can send one.

This module is imported by the workflow sandbox: standard library and :mod:`agentvm.errors` only, no side effects.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from agentvm.errors import UsageError

MAX_PROMPT_BYTES = 1024 * 1024  # Temporal refuses payloads over 2 MB by default; base64 adds a third
MAX_LABELS = 32
MAX_URL = 2048
DEFAULT_ATTEMPTS = 3
MAX_ATTEMPTS = 20
DEFAULT_HEARTBEAT_TIMEOUT = 30
GIT_SCHEMES = ("https", "ssh", "file")

_LABEL_KEY = re.compile(r"^[a-z0-9]([a-z0-9_.-]{0,61}[a-z0-9])?$")
_REF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/+-]{0,199}$")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


@dataclass
class RunSpec:
    """One run as the service sees it. ``None`` means: the worker host's setting, else its default."""

    prompt_b64: str
    agent: str | None = None
    agent_command: str | None = None
    agent_credentials: str | None = None
    model: str | None = None
    max_turns: int | None = None
    timeout: int | None = None
    workspace_git: str | None = None
    workspace_ref: str | None = None
    workspace_path: str | None = None
    keep: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    host: str | None = None
    attempts: int = DEFAULT_ATTEMPTS
    heartbeat_timeout: int = DEFAULT_HEARTBEAT_TIMEOUT
    trigger: dict[str, str | None] | None = None

    @property
    def prompt(self) -> bytes:
        return base64.b64decode(self.prompt_b64.encode("ascii"), validate=True)


def encode_prompt(data: bytes) -> str:
    if not data.strip():
        raise UsageError("the prompt is empty: give it as an argument, with --prompt-file, or on stdin (`-`)")
    if len(data) > MAX_PROMPT_BYTES:
        raise UsageError(
            f"the prompt has {len(data)} bytes; the service takes at most {MAX_PROMPT_BYTES} (Temporal's payload"
            " limit): put the rest in the workspace and point the prompt at it"
        )
    return base64.b64encode(data).decode("ascii")


def check_git_url(url: str) -> str:
    """An https, ssh or file URL without credentials, spaces or control characters."""
    if len(url) > MAX_URL or _CONTROL.search(url):
        raise UsageError("the workspace URL must be one line without spaces, at most 2048 characters")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in GIT_SCHEMES:
        raise UsageError(
            f"the workspace URL {url!r} must start with https://, ssh:// or file:// (other git transports are refused)"
        )
    if parts.scheme != "file" and not parts.hostname:
        raise UsageError(f"the workspace URL {url!r} names no host")
    if parts.scheme == "file" and (parts.netloc or not parts.path.startswith("/")):
        raise UsageError(f"a file:// workspace URL must be file:///absolute/path, got {url!r}")
    if parts.password is not None or (parts.scheme == "https" and parts.username is not None):
        raise UsageError(
            "the workspace URL carries credentials; they would be stored in the workflow history: give the worker"
            " hosts access instead (their git credential helper or ssh agent)"
        )
    if not parts.path.strip("/"):
        raise UsageError(f"the workspace URL {url!r} names no repository")
    return url


def check_ref(ref: str) -> str:
    """A branch, tag or commit: git's rules for ref names, and never something that reads as an option."""
    bad = ("..", "//", "@{", "\\")
    if not _REF.fullmatch(ref) or any(b in ref for b in bad) or ref.endswith((".", "/", ".lock")):
        raise UsageError(f"the workspace ref {ref!r} is not a branch, tag or commit name")
    return ref


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise UsageError(f"at most {MAX_LABELS} labels, got {len(labels)}")
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key):
            raise UsageError(f"label name {key!r} must be lower-case letters, digits, '.', '_' or '-' (at most 63)")
        if len(value) > 256 or _CONTROL.sub("", value.replace(" ", "")) != value.replace(" ", ""):
            raise UsageError(f"label {key}: the value must be printable text of at most 256 characters")
    return dict(labels)


def parse_labels(items: list[str]) -> dict[str, str]:
    """``--label key=value`` items."""
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--label takes key=value, got {item!r}")
        labels[key.strip()] = value
    return check_labels(labels)


def _positive(value: int | None, what: str, upper: int | None = None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or (upper and value > upper):
        limit = f" (at most {upper})" if upper else ""
        raise UsageError(f"{what} must be a positive whole number{limit}, got {value!r}")


def validate(spec: RunSpec) -> RunSpec:
    """Check a spec (client side before submitting; worker side before acting). Raises UsageError."""
    try:
        prompt = spec.prompt
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise UsageError("the prompt is not valid base64") from None
    encode_prompt(prompt)
    _positive(spec.timeout, "TIMEOUT")
    _positive(spec.max_turns, "MAX_TURNS")
    _positive(spec.attempts, "the attempts count", MAX_ATTEMPTS)
    _positive(spec.heartbeat_timeout, "the heartbeat timeout", 3600)
    check_labels(spec.labels)
    if spec.host is not None and not _HOST.fullmatch(spec.host):
        raise UsageError(f"host {spec.host!r} must be letters, digits, '.', '_' or '-', at most 63")
    if spec.workspace_git and spec.workspace_path:
        raise UsageError("give the workspace either as a git URL or as a folder, not both")
    if spec.workspace_git:
        check_git_url(spec.workspace_git)
    if spec.workspace_ref is not None:
        if not spec.workspace_git:
            raise UsageError("--ref needs a workspace given as a git URL")
        check_ref(spec.workspace_ref)
    if spec.workspace_path is not None:
        if not spec.host:
            raise UsageError(
                "a workspace folder is on one host: pin the run there with --host H, or give a git URL"
                " (https://, ssh:// or file://) that every worker host can clone"
            )
        if not spec.workspace_path.startswith("/") or _CONTROL.sub("", spec.workspace_path.replace(" ", "")) != (
            spec.workspace_path.replace(" ", "")
        ):
            raise UsageError(f"the workspace folder must be an absolute path, got {spec.workspace_path!r}")
    return spec


def is_git_url(value: str) -> bool:
    return "://" in value
