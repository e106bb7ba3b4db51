# Copyright (c) 2026 agentvm contributors
# Apache License 2.0 (see LICENSE)
"""The one wrapper around the ``multipass`` CLI used by every part of agentvm.multipass.

Everything that talks to Multipass goes through :class:`MultipassCLI`: argv building, running the
executable (no local shell, explicit stdin, a timeout on every call), JSON parsing, mapping exit codes
and stderr texts to typed errors, and retrying transient failures with exponential backoff. Python code
outside Ansible uses it the same way (it needs nothing but this file).

Behaviour relied upon is that of the Multipass 1.16.3 CLI: exit 1 for command-line errors, exit 2 for
daemon-side failures (``<command> failed: <message>``), exit 5 for the client-side ``--timeout``, and
``exec`` passing the remote exit status through. Only the standard library is used so that modules can
ship this file with AnsiballZ.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

ENV_BINARY = "MULTIPASS_BIN"
DEFAULT_BINARY = "multipass"

#: Exit codes of the Multipass 1.16.3 client (include/multipass/cli/return_codes.h, constants.h).
EXIT_OK = 0
EXIT_COMMAND_LINE_ERROR = 1
EXIT_COMMAND_FAIL = 2
EXIT_CLIENT_TIMEOUT = 5

#: States printed by ``list``/``info`` (format_utils.cpp ``status_string_for``).
STATES = (
    "Running",
    "Stopped",
    "Deleted",
    "Starting",
    "Restarting",
    "Delayed Shutdown",
    "Suspending",
    "Suspended",
    "Unknown",
)

DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF = 1.0
MAX_BACKOFF = 16.0


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class MultipassError(Exception):
    """A ``multipass`` invocation failed. ``str(err)`` is Multipass's own message when it gave one.

    ``unreachable`` is true when the failure means the instance cannot be reached at all (daemon down,
    instance missing, deleted or not running, SSH failure); the connection plugin maps those to an
    unreachable host. ``transient`` marks failures worth retrying.
    """

    unreachable = False
    transient = False

    def __init__(
        self,
        message: str,
        argv: Sequence[str] = (),
        rc: int | None = None,
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.argv = list(argv)
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr

    def to_dict(self) -> dict[str, Any]:
        """What a module puts in ``fail_json`` next to ``msg``."""
        return {"cmd": self.argv, "rc": self.rc, "stdout": self.stdout, "stderr": self.stderr}


class MultipassNotInstalledError(MultipassError):
    """The ``multipass`` executable (or ``$MULTIPASS_BIN``) cannot be found or run."""

    unreachable = True


class MultipassTimeoutError(MultipassError):
    """Our own timeout fired (the process was killed), or Multipass reported a timeout (exit 5)."""

    unreachable = True


class MultipassUsageError(MultipassError):
    """Exit 1: command-line error or client-side validation failure."""


class MultipassCommandError(MultipassError):
    """Exit 2 (or any other failure) not matched by a more specific class."""


class DaemonUnavailableError(MultipassCommandError):
    """``cannot connect to the multipass socket``: the daemon is down or restarting."""

    unreachable = True
    transient = True


class DaemonAccessDeniedError(MultipassCommandError):
    """``multipass socket access denied``: the user may not use the daemon's socket."""

    unreachable = True


class NotAuthenticatedError(MultipassCommandError):
    """The client is not authenticated with the Multipass service."""

    unreachable = True


class InstanceNotFoundError(MultipassCommandError):
    """``instance "x" does not exist``."""

    unreachable = True


class InstanceDeletedError(MultipassCommandError):
    """``instance "x" is deleted`` (deleted but not purged); also ``Cannot delete snapshots of deleted instances``."""

    unreachable = True


class InstanceNotRunningError(MultipassCommandError):
    """``instance "x" is not running`` (e.g. ``transfer`` into a stopped instance)."""

    unreachable = True


class InstanceBusyError(MultipassCommandError):
    """``instance "x" is being prepared``: another operation on it is under way."""

    transient = True


class AlreadyExistsError(MultipassCommandError):
    """``instance "x" already exists`` (also for names held by deleted instances) or
    ``Snapshot already exists: inst.snap``."""


class InstanceStateError(MultipassCommandError):
    """The instance is in the wrong state for the operation (clone, snapshot or restore of an instance that is
    not Stopped, stop of a suspended one, ...)."""


class InvalidArgumentError(MultipassCommandError):
    """Multipass rejected a value (name, size, image, cloud-init)."""


class SnapshotNotFoundError(MultipassCommandError):
    """``No such snapshot: inst.snap`` (``restore``, ``delete``), ``snapshot "snap" does not exist`` (``info``)."""


class UnsupportedError(MultipassCommandError):
    """``The <feature> feature is not implemented on this backend.``"""


class SSHConnectionError(MultipassCommandError):
    """``ssh connection failed: '...'`` from ``exec``/``transfer``: the client could not reach the guest."""

    unreachable = True
    transient = True


class TransferError(MultipassCommandError):
    """An SFTP-level failure of ``transfer`` (missing remote directory, permission denied, ...)."""


# Ordered: the first matching pattern decides. Patterns come from the reference's error catalogue.
_ERROR_PATTERNS: tuple[tuple[re.Pattern[str], type[MultipassError]], ...] = tuple(
    (re.compile(pattern), cls)
    for pattern, cls in (
        (r"cannot connect to the multipass socket", DaemonUnavailableError),
        (r"multipass socket access denied", DaemonAccessDeniedError),
        (r"not authenticated with the Multipass service", NotAuthenticatedError),
        (r"ssh connection failed", SSHConnectionError),
        (r"[Ii]nstance [\"'][^\"'\n]*[\"'] does not exist", InstanceNotFoundError),
        (r"[Ii]nstance [\"'][^\"'\n]*[\"'] is deleted", InstanceDeletedError),
        (r"[Ii]nstance [\"'][^\"'\n]*[\"'] is not running", InstanceNotRunningError),
        (r"is being prepared", InstanceBusyError),
        (r"already exists", AlreadyExistsError),
        (r"No such snapshot|[Ss]napshot [\"'][^\"'\n]*[\"'] does not exist", SnapshotNotFoundError),
        (r"Cannot delete snapshots of deleted instances", InstanceDeletedError),
        (r"feature is not implemented on this backend", UnsupportedError),
        (
            r"can only (?:clone|take snapshots of|restore snapshots of) stopped instances"
            r"|Cannot shut down|Cannot start the instance|already running, but in an unknown state"
            r"|Cannot retrieve credentials in unknown state|scheduled to shut down in less than a minute"
            r"|Instance must be stopped for modification|Instance stopped while starting",
            InstanceStateError,
        ),
        (
            r"Timed out waiting for|timed out waiting for (?:response|initialization to complete)",
            MultipassTimeoutError,
        ),
        (
            r"Invalid (?:instance name|destination instance name|snapshot name|memory size|disk size"
            r"|network options|arguments supplied|remote and source image name|format type)"
            r"|below minimum for this image|Unable to find an image matching|is not a valid memory size"
            r"|invalid CPU count|Could not load cloud-init configuration",
            InvalidArgumentError,
        ),
        (
            r"\[error\] \[sftp\]|is not a directory|cannot open remote file|cannot overwrite",
            TransferError,
        ),
    )
)

# ``[2022-10-11T13:07:25.789] [error] [sftp] message``: log lines the client forwards to stderr.
_LOG_LINE = re.compile(r"^\[[^\]]*\] \[[a-z]+\] \[[^\]]*\] ")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_SPINNER = re.compile(r"\x08.?")


def clean_output(text: str) -> str:
    """Remove the spinner's escape codes and backspace animation (printed even on non-TTY stdout)."""
    return _SPINNER.sub("", _ANSI.sub("", text)).replace("\r", "")


def error_message(stdout: str, stderr: str, rc: int | None, argv: Sequence[str]) -> str:
    """Multipass's own words when it gave any, else a description of the exit."""
    text = clean_output(stderr).strip() or clean_output(stdout).strip()
    if text:
        return text
    command = argv[1] if len(argv) > 1 else "multipass"
    return f"multipass {command} exited with code {rc} and printed nothing"


def classify(rc: int, stdout: str, stderr: str, argv: Sequence[str] = ()) -> MultipassError:
    """Turn a failed invocation into the matching typed error (Multipass's message kept verbatim)."""
    message = error_message(stdout, stderr, rc, argv)
    cls: type[MultipassError] | None = None
    for pattern, candidate in _ERROR_PATTERNS:
        if pattern.search(message):
            cls = candidate
            break
    if cls is None:
        if rc == EXIT_CLIENT_TIMEOUT:
            cls = MultipassTimeoutError
        elif rc == EXIT_COMMAND_LINE_ERROR:
            cls = MultipassUsageError
        else:
            cls = MultipassCommandError
    return cls(message, argv=argv, rc=rc, stdout=stdout, stderr=stderr)


_MISSING_NAME = re.compile(r"[Ii]nstance [\"']([^\"'\n]*)[\"'] does not exist")

#: Instance and snapshot names (Multipass's instance-name rule, which snapshot names follow too).
_NAME = re.compile(r"^([a-zA-Z]|[a-zA-Z][a-zA-Z0-9-]*[a-zA-Z0-9])$")


def valid_name(name: str) -> bool:
    """Letters, digits and hyphens, starting with a letter and ending with a letter or digit."""
    return bool(_NAME.match(name))


def missing_names(message: str) -> list[str]:
    """Names in ``instance "x" does not exist`` lines."""
    return _MISSING_NAME.findall(message)


def exec_failure(rc: int, stdout: str, stderr: str, argv: Sequence[str] = ()) -> MultipassError | None:
    """Tell a Multipass-side ``exec`` failure apart from the remote command's own non-zero exit.

    ``exec`` passes the remote exit status through, so a non-zero code alone means nothing. When
    Multipass itself fails (daemon, ssh_info, SSH connection) the remote command never started, so
    stderr holds only the client's output: optional forwarded log lines, then ``exec failed: ...``.
    """
    if rc == EXIT_OK:
        return None
    lines = stderr.splitlines()
    while lines and _LOG_LINE.match(lines[0]):
        lines.pop(0)
    if lines and lines[0].startswith("exec failed: "):
        return classify(rc, stdout, stderr, argv)
    return None


# --------------------------------------------------------------------------------------------------
# Argv builders (pure; unit-tested)
# --------------------------------------------------------------------------------------------------


def list_argv(binary: str) -> list[str]:
    return [binary, "list", "--format", "json"]


def info_argv(binary: str, names: Iterable[str] = (), runtime: bool = True) -> list[str]:
    argv = [binary, "info", "--format", "json"]
    if not runtime:
        argv.append("--no-runtime-information")
    names = list(names)
    if names:
        argv.append("--")
        argv.extend(names)
    return argv


def exec_argv(
    binary: str,
    name: str,
    command: Sequence[str],
    working_directory: str | None = None,
) -> list[str]:
    """``multipass exec`` with ``-n`` (or ``-d DIR``) so the controller's cwd never matters."""
    argv = [binary, "exec"]
    if working_directory:
        argv += ["--working-directory", working_directory]
    else:
        argv.append("--no-map-working-directory")
    return [*argv, name, "--", *command]


def transfer_push_argv(binary: str, name: str, remote_path: str, parents: bool = False) -> list[str]:
    """Stream stdin into ``name:remote_path`` (the snap client cannot read hidden dirs or /tmp)."""
    argv = [binary, "transfer"]
    if parents:
        argv.append("--parents")
    return [*argv, "-", f"{name}:{remote_path}"]


def transfer_pull_argv(binary: str, name: str, remote_path: str) -> list[str]:
    """Stream ``name:remote_path`` to stdout."""
    return [binary, "transfer", f"{name}:{remote_path}", "-"]


def launch_argv(
    binary: str,
    name: str,
    image: str | None = None,
    cpus: int | None = None,
    memory: str | None = None,
    disk: str | None = None,
    cloud_init_stdin: bool = False,
    timeout: int | None = None,
) -> list[str]:
    argv = [binary, "launch", "--name", name]
    if cpus is not None:
        argv += ["--cpus", str(cpus)]
    if memory:
        argv += ["--memory", memory]
    if disk:
        argv += ["--disk", disk]
    if timeout:
        argv += ["--timeout", str(timeout)]
    if cloud_init_stdin:
        argv += ["--cloud-init", "-"]
    if image:
        argv += ["--", image]
    return argv


def clone_argv(binary: str, source: str, name: str) -> list[str]:
    return [binary, "clone", "--name", name, "--", source]


def start_argv(binary: str, name: str, timeout: int | None = None) -> list[str]:
    argv = [binary, "start"]
    if timeout:
        argv += ["--timeout", str(timeout)]
    return [*argv, "--", name]


def stop_argv(binary: str, name: str, force: bool = False) -> list[str]:
    argv = [binary, "stop"]
    if force:
        argv.append("--force")
    return [*argv, "--", name]


def delete_argv(binary: str, name: str, purge: bool = False) -> list[str]:
    argv = [binary, "delete"]
    if purge:
        argv.append("--purge")
    return [*argv, "--", name]


def snapshot_ref(name: str, snapshot: str) -> str:
    """``<instance>.<snapshot>``, the form ``restore``, ``delete`` and ``info`` take."""
    return f"{name}.{snapshot}"


def snapshot_argv(binary: str, name: str, snapshot: str | None = None, comment: str | None = None) -> list[str]:
    """Take a snapshot of the (stopped) instance; Multipass names it ``snapshotN`` when ``snapshot`` is unset."""
    argv = [binary, "snapshot"]
    if snapshot:
        argv += ["--name", snapshot]
    if comment:
        argv += ["--comment", comment]
    return [*argv, "--", name]


def restore_argv(binary: str, name: str, snapshot: str) -> list[str]:
    """``--destructive``: without it a non-interactive client aborts instead of asking about a safety snapshot."""
    return [binary, "restore", "--destructive", "--", snapshot_ref(name, snapshot)]


def delete_snapshot_argv(binary: str, name: str, snapshot: str) -> list[str]:
    """Snapshots can only be purged: without ``--purge`` a non-interactive client aborts."""
    return [binary, "delete", "--purge", "--", snapshot_ref(name, snapshot)]


def snapshots_info_argv(binary: str, names: Iterable[str] = ()) -> list[str]:
    """Snapshot details (comment, parent, children, creation time) of ``names``, or of every instance."""
    argv = [binary, "info", "--snapshots", "--format", "json"]
    names = list(names)
    if names:
        argv.append("--")
        argv.extend(names)
    return argv


def snapshots_list_argv(binary: str) -> list[str]:
    """Every instance's snapshots with comment and parent only (one call, no per-instance lookup)."""
    return [binary, "list", "--snapshots", "--format", "json"]


def version_argv(binary: str) -> list[str]:
    return [binary, "version", "--format", "json"]


# --------------------------------------------------------------------------------------------------
# JSON parsing (pure; unit-tested against the reference's literals)
# --------------------------------------------------------------------------------------------------


class MultipassParseError(MultipassError):
    """Multipass printed something that is not the expected JSON document."""


def load_json(text: str, argv: Sequence[str] = ()) -> dict[str, Any]:
    """Parse a ``--format json`` document, tolerating stray bytes before the opening brace."""
    cleaned = clean_output(text)
    start = cleaned.find("{")
    if start < 0:
        message = f"expected JSON from multipass, got: {text[:200]!r}"
        raise MultipassParseError(message, argv=argv, stdout=text)
    try:
        document, _ = json.JSONDecoder().raw_decode(cleaned, start)
    except ValueError as exc:
        raise MultipassParseError(f"invalid JSON from multipass: {exc}", argv=argv, stdout=text) from exc
    if not isinstance(document, dict):
        raise MultipassParseError("expected a JSON object from multipass", argv=argv, stdout=text)
    return document


def parse_list(text: str) -> list[dict[str, Any]]:
    """``multipass list --format json`` -> ``[{"name", "state", "ipv4", "release"}, ...]`` (daemon order)."""
    document = load_json(text)
    entries = document.get("list")
    if not isinstance(entries, list):
        raise MultipassParseError("'list' key missing from multipass list output", stdout=text)
    result = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise MultipassParseError(f"malformed entry in multipass list output: {entry!r}", stdout=text)
        result.append(
            {
                "name": entry["name"],
                "state": str(entry.get("state", "Unknown")),
                "ipv4": [str(ip) for ip in entry.get("ipv4") or []],
                "release": str(entry.get("release", "")),
            }
        )
    return result


def parse_info(text: str) -> dict[str, dict[str, Any]]:
    """``multipass info --format json`` -> ``{name: raw entry}``."""
    document = load_json(text)
    info = document.get("info")
    if not isinstance(info, dict):
        raise MultipassParseError("'info' key missing from multipass info output", stdout=text)
    return {str(name): entry for name, entry in info.items() if isinstance(entry, dict)}


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def normalize_snapshots(entries: Any) -> dict[str, dict[str, Any]]:
    """One instance's ``{snapshot: raw entry}`` -> ``{snapshot: {"name", "parent", "comment", "created", "children"}}``.

    ``parent`` is ``None`` for a root snapshot (Multipass prints ``""``). ``created`` is Multipass's own text,
    locale-dependent in real output (never parse it), ``None`` when the document has none (``list
    --snapshots``). ``children`` comes from the entry, or is derived from the parents when the document
    carries none (``list --snapshots``).
    """
    if not isinstance(entries, dict):
        return {}
    raw = {str(name): entry for name, entry in entries.items() if isinstance(entry, dict)}
    parents = {name: _text_or_none(entry.get("parent")) for name, entry in raw.items()}
    result: dict[str, dict[str, Any]] = {}
    for name in sorted(raw):
        entry = raw[name]
        children = entry.get("children")
        if isinstance(children, list):
            kids = [str(c) for c in children if isinstance(c, str)]
        else:
            kids = sorted(n for n, parent in parents.items() if parent == name)
        result[name] = {
            "name": name,
            "parent": parents[name],
            "comment": entry.get("comment") if isinstance(entry.get("comment"), str) else "",
            "created": _text_or_none(entry.get("created")),
            "children": kids,
        }
    return result


def _snapshot_document(text: str, command: str) -> dict[str, Any]:
    info = load_json(text).get("info")
    if not isinstance(info, dict):
        raise MultipassParseError(f"'info' key missing from multipass {command} --snapshots output", stdout=text)
    return info


def parse_snapshots_info(text: str) -> dict[str, dict[str, dict[str, Any]]]:
    """``multipass info --snapshots --format json`` -> ``{instance: {snapshot: record}}`` (see
    :func:`normalize_snapshots`). Instances without snapshots are absent from the document, hence here."""
    info = _snapshot_document(text, "info")
    return {
        str(name): normalize_snapshots(entry.get("snapshots"))
        for name, entry in info.items()
        if isinstance(entry, dict)
    }


def parse_snapshots_list(text: str) -> dict[str, dict[str, dict[str, Any]]]:
    """``multipass list --snapshots --format json`` -> ``{instance: {snapshot: record}}``; ``created`` is ``None``
    (that document carries only comment and parent)."""
    info = _snapshot_document(text, "list")
    return {str(name): normalize_snapshots(entries) for name, entries in info.items() if isinstance(entries, dict)}


def parse_version(text: str) -> dict[str, str | None]:
    """``multipass version --format json`` -> ``{"multipass": client, "multipassd": daemon or None}``.

    The daemon's version is missing when the daemon is unreachable (the command still exits 0)."""
    document = load_json(text)
    client = _text_or_none(document.get("multipass"))
    if client is None:
        raise MultipassParseError("'multipass' key missing from multipass version output", stdout=text)
    return {"multipass": client, "multipassd": _text_or_none(document.get("multipassd"))}


_SNAPSHOT_TAKEN = re.compile(r"Snapshot taken: (?P<name>[^\s.]+)\.(?P<snapshot>\S+)")


def parse_snapshot_taken(text: str) -> str | None:
    """The snapshot's name from ``Snapshot taken: <inst>.<snap>`` (spinner noise tolerated)."""
    found = _SNAPSHOT_TAKEN.search(clean_output(text))
    return found.group("snapshot") if found else None


def _to_int(value: Any) -> int | None:
    """Multipass prints counts and sizes as strings, empty when unknown."""
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _disk_totals(disks: Any, key: str) -> int | None:
    if not isinstance(disks, dict):
        return None
    values = [_to_int(disk.get(key)) for disk in disks.values() if isinstance(disk, dict)]
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def valid_ipv4(addresses: Iterable[str]) -> list[str]:
    """Drop ``N/A`` (running without an IP) and anything else that is not a dotted quad."""
    pattern = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
    return [a for a in addresses if isinstance(a, str) and pattern.match(a)]


def normalize_instance(
    name: str,
    info: Mapping[str, Any] | None = None,
    listed: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One flat, typed record from an ``info`` entry and/or a ``list`` entry.

    Runtime fields (cpus, memory, disk, load, the OS release) exist only for running instances
    queried with runtime information; they are ``None`` otherwise.
    """
    info = info or {}
    listed = listed or {}
    memory = info.get("memory") if isinstance(info.get("memory"), dict) else {}
    ipv4_raw = info.get("ipv4") if info.get("ipv4") else listed.get("ipv4", [])
    runtime_release = info.get("release") or None
    return {
        "name": name,
        "state": str(info.get("state") or listed.get("state") or "Unknown"),
        "ipv4": valid_ipv4(ipv4_raw or []),
        "release": runtime_release or listed.get("release") or None,
        "image_hash": info.get("image_hash") or None,
        "image_release": info.get("image_release") or None,
        "cpus": _to_int(info.get("cpu_count")),
        "memory": _to_int(memory.get("total")),
        "memory_used": _to_int(memory.get("used")),
        "disk": _disk_totals(info.get("disks"), "total"),
        "disk_used": _disk_totals(info.get("disks"), "used"),
        "load": [float(x) for x in info.get("load") or [] if isinstance(x, (int, float))],
        "snapshot_count": _to_int(info.get("snapshot_count")),
        "mounts": dict(info.get("mounts") or {}),
    }


# --------------------------------------------------------------------------------------------------
# Running multipass
# --------------------------------------------------------------------------------------------------


def resolve_binary(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``explicit`` if given, else ``$MULTIPASS_BIN``, else ``multipass`` on PATH."""
    environ = os.environ if environ is None else environ
    candidate = explicit or environ.get(ENV_BINARY) or DEFAULT_BINARY
    source = "option" if explicit else (ENV_BINARY if environ.get(ENV_BINARY) else "PATH")
    if os.sep in candidate:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
        raise MultipassNotInstalledError(
            f"the multipass executable {candidate!r} (from {source}) does not exist or is not executable"
        )
    found = shutil.which(candidate, path=environ.get("PATH"))
    if not found:
        raise MultipassNotInstalledError(
            f"the multipass executable {candidate!r} was not found on PATH; install Multipass "
            f"(https://canonical.com/multipass) or set {ENV_BINARY} to its path"
        )
    return found


@dataclass
class Result:
    """A finished invocation. ``stdout`` is empty when it was streamed to a file."""

    argv: list[str]
    rc: int
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""
    attempts: int = 1
    duration: float = 0.0

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", "replace")


@dataclass
class RetryPolicy:
    """Retry transient failures: daemon unreachable always (the request never reached the daemon);
    ``is being prepared`` and SSH connection failures only for operations safe to repeat."""

    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF
    max_backoff: float = MAX_BACKOFF

    def delay(self, attempt: int) -> float:
        return min(self.backoff * (2**attempt), self.max_backoff)

    def should_retry(self, error: MultipassError, attempt: int, idempotent: bool) -> bool:
        if attempt >= self.retries or not error.transient:
            return False
        return idempotent or isinstance(error, DaemonUnavailableError)


@dataclass
class MultipassCLI:
    """Runs ``multipass``. One instance per plugin/module invocation.

    ``popen`` and ``sleep`` exist for tests; ``log`` receives one line per invocation.
    """

    binary: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    environ: Mapping[str, str] | None = None
    popen: Callable[..., subprocess.Popen] = subprocess.Popen
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        self._resolved: str | None = None

    @property
    def bin(self) -> str:
        """The resolved executable; raises :class:`MultipassNotInstalledError` when missing."""
        if self._resolved is None:
            self._resolved = resolve_binary(self.binary, self.environ)
        return self._resolved

    # -- core -----------------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        stdin_path: str | None = None,
        stdout_path: str | None = None,
        timeout: float | None = None,
        idempotent: bool = True,
        check: bool = True,
        passthrough: bool = False,
    ) -> Result:
        """Run ``argv`` (its first element is the executable), retrying transient failures.

        ``input`` bytes or the file at ``stdin_path`` feed stdin (else ``/dev/null``); ``stdout_path``
        receives stdout (rewritten on each attempt) instead of memory. ``passthrough`` is for ``exec``:
        a non-zero exit is the remote command's, unless Multipass itself reports ``exec failed``.
        ``timeout`` ``0`` disables the limit; ``None`` uses the instance default.
        """
        attempt = 0
        started = time.monotonic()
        while True:
            result = self._run_once(argv, input, stdin_path, stdout_path, timeout)
            result.attempts = attempt + 1
            error = self._failure(result, passthrough)
            if error is None:
                result.duration = time.monotonic() - started
                return result
            if self.retry.should_retry(error, attempt, idempotent):
                delay = self.retry.delay(attempt)
                self._log(f"transient failure ({error.message.splitlines()[0]}); retrying in {delay:.1f}s")
                self.sleep(delay)
                attempt += 1
                continue
            if check:
                raise error
            result.duration = time.monotonic() - started
            return result

    def _failure(self, result: Result, passthrough: bool) -> MultipassError | None:
        if passthrough:
            return exec_failure(result.rc, result.stdout, result.stderr, result.argv)
        if result.rc != EXIT_OK:
            return classify(result.rc, result.stdout, result.stderr, result.argv)
        return None

    def _run_once(
        self,
        argv: Sequence[str],
        input_data: bytes | None,
        stdin_path: str | None,
        stdout_path: str | None,
        timeout: float | None,
    ) -> Result:
        argv = [str(a) for a in argv]
        limit = self.timeout if timeout is None else timeout
        self._log("running: " + " ".join(argv))
        stdin_file: IO[bytes] | None = None
        stdout_file: IO[bytes] | None = None
        try:
            if stdin_path is not None:
                stdin_file = open(stdin_path, "rb")  # noqa: SIM115 - closed in finally
            if stdout_path is not None:
                stdout_file = open(stdout_path, "wb")  # noqa: SIM115 - closed in finally
            stdin: Any = subprocess.PIPE if input_data is not None else (stdin_file or subprocess.DEVNULL)
            try:
                proc = self.popen(
                    argv,
                    stdin=stdin,
                    stdout=stdout_file or subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=dict(self.environ) if self.environ is not None else None,
                )
            except OSError as exc:
                raise MultipassNotInstalledError(f"cannot run {argv[0]!r}: {exc}", argv=argv) from exc
            out, err = self._communicate(proc, argv, input_data, limit or None)
        finally:
            for handle in (stdin_file, stdout_file):
                if handle is not None:
                    handle.close()
        return Result(argv=argv, rc=proc.returncode, stdout_bytes=out or b"", stderr_bytes=err or b"")

    @staticmethod
    def _communicate(
        proc: subprocess.Popen, argv: Sequence[str], input_data: bytes | None, limit: float | None
    ) -> tuple[bytes, bytes]:
        try:
            return proc.communicate(input=input_data, timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise MultipassTimeoutError(
                f"multipass {argv[1] if len(argv) > 1 else ''} did not finish within {limit:g} seconds and was killed",
                argv=argv,
                stdout=(out or b"").decode("utf-8", "replace"),
                stderr=(err or b"").decode("utf-8", "replace"),
            ) from None
        except BaseException:
            # Ansible's task timeout, KeyboardInterrupt, ...: never leave the client running.
            proc.kill()
            proc.wait()
            raise

    def _log(self, line: str) -> None:
        if self.log is not None:
            self.log(line)

    # -- queries ----------------------------------------------------------------------------------

    def list_instances(self) -> list[dict[str, Any]]:
        return parse_list(self.run(list_argv(self.bin)).stdout)

    def info(self, names: Iterable[str] = (), runtime: bool = True) -> dict[str, dict[str, Any]]:
        return parse_info(self.run(info_argv(self.bin, names, runtime)).stdout)

    def info_existing(self, names: Iterable[str], runtime: bool = True) -> dict[str, dict[str, Any]]:
        """``info`` for ``names``, leaving out instances that vanished (``info`` fails as a whole)."""
        remaining = list(names)
        while remaining:
            try:
                return self.info(remaining, runtime=runtime)
            except InstanceNotFoundError as err:
                gone = set(missing_names(err.message)) & set(remaining)
                if not gone:
                    raise
                self._log(f"{', '.join(sorted(gone))} disappeared; querying again")
                remaining = [n for n in remaining if n not in gone]
        return {}

    def find(self, name: str, runtime: bool = True) -> dict[str, Any] | None:
        """The raw ``info`` entry of ``name``, or ``None`` when it does not exist."""
        try:
            entries = self.info([name], runtime=runtime)
        except InstanceNotFoundError:
            return None
        return entries.get(name)

    def state(self, name: str) -> str | None:
        """The instance's state without SSH into the guest, ``None`` when it does not exist."""
        entry = self.find(name, runtime=False)
        return None if entry is None else str(entry.get("state", "Unknown"))

    def exists(self, name: str) -> bool:
        """Whether Multipass knows ``name``. A Deleted instance exists too: its name stays reserved until purged
        (:meth:`state` tells them apart)."""
        return self.state(name) is not None

    def version(self) -> dict[str, str | None]:
        """``{"multipass": client version, "multipassd": daemon version, None when the daemon is unreachable}``."""
        return parse_version(self.run(version_argv(self.bin)).stdout)

    # -- snapshots: queries -------------------------------------------------------------------------

    def snapshots(self, name: str) -> dict[str, dict[str, Any]]:
        """The snapshots of ``name`` by snapshot name (``{}`` when it has none), each ``{"name", "parent",
        "comment", "created", "children"}``. Raises :class:`InstanceNotFoundError` when ``name`` does not exist."""
        return parse_snapshots_info(self.run(snapshots_info_argv(self.bin, [name])).stdout).get(name, {})

    def snapshots_existing(self, names: Iterable[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """:meth:`snapshots` of several instances in one call, leaving out instances that vanished meanwhile.
        Every name still there has an entry (``{}`` without snapshots)."""
        remaining = list(dict.fromkeys(names))
        while remaining:
            try:
                found = parse_snapshots_info(self.run(snapshots_info_argv(self.bin, remaining)).stdout)
            except InstanceNotFoundError as err:
                gone = set(missing_names(err.message)) & set(remaining)
                if not gone:
                    raise
                self._log(f"{', '.join(sorted(gone))} disappeared; querying snapshots again")
                remaining = [n for n in remaining if n not in gone]
                continue
            return {name: found.get(name, {}) for name in remaining}
        return {}

    def all_snapshots(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Every instance's snapshots from one ``list --snapshots`` (``created`` is ``None`` there); instances
        without snapshots are absent."""
        return parse_snapshots_list(self.run(snapshots_list_argv(self.bin)).stdout)

    # -- lifecycle --------------------------------------------------------------------------------

    def launch(
        self,
        name: str,
        image: str | None = None,
        cpus: int | None = None,
        memory: str | None = None,
        disk: str | None = None,
        cloud_init: str | None = None,
        timeout: int | None = None,
    ) -> Result:
        argv = launch_argv(self.bin, name, image, cpus, memory, disk, cloud_init is not None, timeout)
        data = cloud_init.encode("utf-8") if cloud_init is not None else None
        return self.run(argv, input=data, timeout=_outer_timeout(timeout, phases=2), idempotent=False)

    def clone(self, source: str, name: str, timeout: float | None = None) -> Result:
        return self.run(clone_argv(self.bin, source, name), timeout=timeout or 0, idempotent=False)

    def start(self, name: str, timeout: int | None = None) -> Result:
        return self.run(start_argv(self.bin, name, timeout), timeout=_outer_timeout(timeout, phases=1))

    def stop(self, name: str, force: bool = False, timeout: float | None = None) -> Result:
        return self.run(stop_argv(self.bin, name, force), timeout=timeout or 0)

    def delete(self, name: str, purge: bool = False, timeout: float | None = None, *, missing_ok: bool = False) -> bool:
        """Delete ``name`` (and free its name when ``purge``). With ``missing_ok`` an instance that does not exist
        counts as done: returns ``False`` then, ``True`` when Multipass deleted something."""
        try:
            self.run(delete_argv(self.bin, name, purge), timeout=timeout or 0, idempotent=False)
        except InstanceNotFoundError as err:
            if missing_ok and name in missing_names(err.message):
                return False
            raise
        return True

    # -- snapshots: changes -------------------------------------------------------------------------

    def snapshot(
        self, name: str, snapshot: str | None = None, comment: str | None = None, timeout: float | None = None
    ) -> str:
        """Snapshot the Stopped instance ``name``; returns the snapshot's name (Multipass picks ``snapshotN`` when
        ``snapshot`` is unset). A running instance gives :class:`InstanceStateError`, a taken name
        :class:`AlreadyExistsError`. ``timeout`` ``None`` uses the instance default."""
        result = self.run(snapshot_argv(self.bin, name, snapshot, comment), timeout=timeout, idempotent=False)
        taken = parse_snapshot_taken(result.stdout) or snapshot
        if not taken:
            raise MultipassParseError(
                f"multipass took a snapshot of {name} but did not say its name", argv=result.argv, stdout=result.stdout
            )
        return taken

    def restore(self, name: str, snapshot: str, timeout: float | None = None) -> Result:
        """Restore the Stopped instance ``name`` to ``snapshot``, discarding its current state (``--destructive``).
        Missing snapshot: :class:`SnapshotNotFoundError`; instance not Stopped: :class:`InstanceStateError`."""
        return self.run(restore_argv(self.bin, name, snapshot), timeout=timeout)

    def delete_snapshot(
        self, name: str, snapshot: str, timeout: float | None = None, *, missing_ok: bool = False
    ) -> bool:
        """Delete (always purge) ``snapshot`` of ``name``. With ``missing_ok`` a snapshot or instance that does not
        exist counts as done: returns ``False`` then, ``True`` when a snapshot was deleted."""
        try:
            self.run(delete_snapshot_argv(self.bin, name, snapshot), timeout=timeout, idempotent=False)
        except SnapshotNotFoundError:
            if missing_ok:
                return False
            raise
        except InstanceNotFoundError as err:
            if missing_ok and name in missing_names(err.message):
                return False
            raise
        return True

    # -- exec and transfer --------------------------------------------------------------------------

    def exec(
        self,
        name: str,
        command: Sequence[str],
        *,
        input: bytes | None = None,
        stdin_path: str | None = None,
        stdout_path: str | None = None,
        working_directory: str | None = None,
        timeout: float | None = None,
    ) -> Result:
        """Run ``command`` (an argv) in the instance; the result's rc is the remote exit status."""
        argv = exec_argv(self.bin, name, command, working_directory)
        return self.run(
            argv,
            input=input,
            stdin_path=stdin_path,
            stdout_path=stdout_path,
            timeout=timeout,
            passthrough=True,
        )

    def pull_limited(
        self, name: str, remote_path: str, local_path: str, max_bytes: int, timeout: float | None = None
    ) -> tuple[Result, bool]:
        """Like :meth:`pull`, but stop after ``max_bytes``: the local file is then cut there and the second
        value is True (the client is ended; nothing more is read). For files from an untrusted instance."""
        argv = transfer_pull_argv(self.bin, name, remote_path)
        return self._to_file(argv, local_path, max_bytes, None, timeout, passthrough=False)

    def exec_limited(
        self,
        name: str,
        command: Sequence[str],
        local_path: str,
        max_bytes: int,
        *,
        stdin_path: str | None = None,
        timeout: float | None = None,
    ) -> tuple[Result, bool]:
        """``exec`` with stdout written to ``local_path`` and cut after ``max_bytes`` (the client is then ended
        and the second value is True). The result's rc is the remote status (0 when cut)."""
        argv = exec_argv(self.bin, name, command)
        return self._to_file(argv, local_path, max_bytes, stdin_path, timeout, passthrough=True)

    def _to_file(
        self,
        argv: Sequence[str],
        local_path: str,
        max_bytes: int,
        stdin_path: str | None,
        timeout: float | None,
        passthrough: bool,
    ) -> tuple[Result, bool]:
        self._log("running: " + " ".join(argv))
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit if limit else None
        stdin_file = open(stdin_path, "rb") if stdin_path else None  # noqa: SIM115 - closed below
        try:
            proc = self.popen(
                list(argv),
                stdin=stdin_file or subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(self.environ) if self.environ is not None else None,
            )
        except OSError as exc:
            raise MultipassNotInstalledError(f"cannot run {argv[0]!r}: {exc}", argv=argv) from exc
        finally:
            if stdin_file is not None:
                stdin_file.close()
        errors: list[bytes] = []
        reader = threading.Thread(target=_drain, args=(proc.stderr, errors, MAX_STDERR), daemon=True)
        reader.start()
        try:
            truncated = _copy_capped(proc, local_path, max_bytes, deadline, limit, argv)
        finally:
            _end(proc, deadline)
            reader.join(timeout=5)
        result = Result(argv=list(argv), rc=0 if truncated else proc.returncode, stderr_bytes=b"".join(errors))
        if not truncated:
            error = self._failure(result, passthrough)
            if error is not None:
                raise error
        return result, truncated

    def popen_exec(self, name: str, command: Sequence[str], working_directory: str | None = None) -> subprocess.Popen:
        """Start ``multipass exec`` with stdout as a pipe, stdin from ``/dev/null`` and stderr discarded, for
        following output while it is produced. The caller reads stdout and ends the process."""
        argv = exec_argv(self.bin, name, command, working_directory)
        self._log("running: " + " ".join(argv))
        try:
            return self.popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=dict(self.environ) if self.environ is not None else None,
            )
        except OSError as exc:
            raise MultipassNotInstalledError(f"cannot run {argv[0]!r}: {exc}", argv=argv) from exc

    def push(self, name: str, local_path: str, remote_path: str, timeout: float | None = None) -> Result:
        """Stream a local file into the instance (written as the default user ``ubuntu``)."""
        argv = transfer_push_argv(self.bin, name, remote_path)
        return self.run(argv, stdin_path=local_path, timeout=timeout)

    def pull(self, name: str, remote_path: str, local_path: str, timeout: float | None = None) -> Result:
        """Stream a file of the instance into ``local_path`` (overwritten)."""
        argv = transfer_pull_argv(self.bin, name, remote_path)
        return self.run(argv, stdout_path=local_path, timeout=timeout)


def _outer_timeout(timeout: int | None, phases: int) -> float:
    """Our kill timer for commands that carry Multipass's own ``--timeout`` (which fires first)."""
    if not timeout:
        return 0
    return float(timeout) * phases + 60.0


#: The most stderr kept from a client whose stdout goes to a file (the rest is read and dropped).
MAX_STDERR = 1024 * 1024


def _drain(stream: IO[bytes], into: list[bytes], limit: int) -> None:
    """Read ``stream`` to its end, keeping at most ``limit`` bytes (an untrusted instance's stderr)."""
    kept = 0
    while chunk := stream.read(65536):
        if kept < limit:
            into.append(chunk[: limit - kept])
            kept += len(into[-1])


def _copy_capped(
    proc: subprocess.Popen,
    local_path: str,
    max_bytes: int,
    deadline: float | None,
    limit: float | None,
    argv: Sequence[str],
) -> bool:
    """Copy the process's stdout to ``local_path`` up to ``max_bytes``; True when there was more (then killed)."""
    written = 0
    with open(local_path, "wb") as out:
        while True:
            if deadline is not None and time.monotonic() > deadline:
                proc.kill()
                command = argv[1] if len(argv) > 1 else ""
                message = f"multipass {command} did not finish within {limit:g} seconds and was killed"
                raise MultipassTimeoutError(message, argv=argv)
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if not ready:
                continue
            chunk = os.read(proc.stdout.fileno(), 1024 * 1024)
            if not chunk:
                return False
            keep = chunk[: max(0, max_bytes - written)]
            out.write(keep)
            written += len(keep)
            if len(keep) < len(chunk):
                proc.kill()
                return True


def _end(proc: subprocess.Popen, deadline: float | None) -> None:
    """Wait for the client (killed already when cut or too slow); never leave it running."""
    try:
        proc.wait(timeout=max(1.0, deadline - time.monotonic()) if deadline else None)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
