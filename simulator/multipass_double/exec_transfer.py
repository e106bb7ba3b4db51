"""exec and transfer: commands and files through the instance's default user, like Multipass's SSH/SFTP."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from multipass_double.common import Context, Fail, Killed, errors_occurred, failed, live_state, log_line, usage
from multipass_double.lifecycle import start_instances
from multipass_double.qtargs import Option, ParseError, parse
from multipass_double.state import Record

EXEC_OPTIONS = (Option(("d", "working-directory"), True), Option(("n", "no-map-working-directory")))
EXEC_HINT = (
    '\nOptions to the inner command should come after "--", like this:\nmultipass exec <instance> -- <command>\n'
)


def _ssh_target(ctx: Context, command: str, name: str, auto_start: bool) -> Record:
    """What ``ssh_info`` gives the client: the record of a running instance, or the failure."""
    rec = ctx.store.snapshot()["instances"].get(name)
    if rec is None:
        raise errors_occurred(command, [f'instance "{name}" does not exist'])
    if rec["deleted"]:
        raise errors_occurred(command, [f'instance "{name}" is deleted'])
    state = live_state(ctx, rec)
    if state == "Unknown":
        raise failed(command, "Cannot retrieve credentials in unknown state")
    if state in ("Running",):
        return rec
    if not auto_start:
        raise failed(command, f'instance "{name}" is not running')
    code, out, err = start_instances(ctx, [name], None, "start")
    if code != 0:
        raise Fail(code, err, out)
    return ctx.store.snapshot()["instances"][name]


def _to_cmd(argv: list[str]) -> str:
    """``utils::to_cmd(args, quote_every_arg)``: every argument escaped for the remote shell (shlex.quote
    has the same effect as Multipass's ``escape_for_shell``, including ``''`` for an empty argument)."""
    return " ".join(shlex.quote(a) for a in argv)


def _command_string(argv: list[str], workdir: str | None) -> str:
    """The command line ``Exec::exec_success`` sends over SSH (src/client/cli/cmd/exec.cpp)."""
    if workdir is None:
        return _to_cmd(argv)
    if argv[0] == "sudo":
        # Multipass joins the arguments *unescaped* here, then escapes the whole string as one argument of
        # ``sudo sh -c``: the inner sh sees exactly "cd DIR && sudo -u ubuntu ARGS...".
        return _to_cmd(["sudo", "sh", "-c", f"cd {workdir} && sudo -u ubuntu {' '.join(argv)}"])
    return f"{_to_cmd(['cd', workdir])}&&{_to_cmd(argv)}"


def cmd_exec(ctx: Context, args: list[str]) -> int:
    try:
        p = parse(args, EXEC_OPTIONS)
    except ParseError as exc:
        hint = EXEC_HINT if exc.unknown and "--" not in args else ""
        raise Fail(1, f"{exc}\n{hint}") from None
    if p.is_set("working-directory") and p.is_set("no-map-working-directory"):
        raise usage("Options --working-directory and --no-map-working-directory clash")
    if len(p.positionals) < 2:
        raise usage("Wrong number of arguments")
    name, argv = p.positionals[0], p.positionals[1:]
    if not p.is_set("working-directory") and not p.is_set("no-map-working-directory"):
        _map_working_directory(ctx, name)
    rec = _ssh_target(ctx, "exec", name, auto_start=True)
    command = _command_string(argv, p.value("working-directory"))
    loop_on_4 = os.environ.get("MULTIPASS_DOUBLE_EXEC_RC4_LOOP", "1") != "0"
    while True:
        code = _run_remote(ctx, rec, command)
        if not (loop_on_4 and code == 4):
            return code


def _map_working_directory(ctx: Context, name: str) -> None:
    """Without -d/-n the client first asks ``info`` for the instance's mounts (the double has none, so no
    ``cd`` results). Its failure is printed and otherwise ignored ("TODO: what to do with the returned
    value?" in exec.cpp): for a missing instance the error appears twice, once from info, once from ssh_info."""
    if name not in ctx.store.snapshot()["instances"]:
        ctx.eprint(errors_occurred("exec", [f'instance "{name}" does not exist']).stderr)


FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def _run_remote(ctx: Context, rec: Record, command: str) -> int:
    """Run the command in the instance, our stdio as its stdio; return its exit status (255 when it died
    by a signal: libssh reports no exit status then, and -1 becomes 255).

    The Popen stays in this (main) thread for the whole run, as ``Backend.popen`` requires. SIGTERM,
    SIGHUP and SIGINT are forwarded to the guard, which ends the command's whole process group; once the
    guard is gone, ``Killed`` makes this process die by the same signal, like the real client (which
    installs no handler for them). A SIGKILL reaches the command through the guard's parent-death signal."""
    spec = ctx.store.spec(rec)
    sys.stdout.flush()
    proc = ctx.backend.popen(spec, ["/bin/bash", "-c", command], stdin=None, stdout=None, stderr=None)
    received: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        code = proc.wait()  # retried after each handler run (PEP 475) until the guard has cleaned up
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise Killed(received[0])
    return code if code >= 0 else 255


# -- transfer ---------------------------------------------------------------------------------

# Runs inside the instance as `ubuntu` (python3 is part of the image): the SFTP semantics of
# src/ssh/sftp_client.cpp and sftp_utils.cpp, with their error texts. argv: op, then op's arguments.
REMOTE_HELPER = (Path(__file__).parent / "remote_sftp.py").read_text()


class SftpError(Exception):
    pass


def _remote(ctx: Context, rec: Record, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    return ctx.backend.popen(ctx.store.spec(rec), ["python3", "-c", REMOTE_HELPER, *argv], **kwargs)


def _check(proc: subprocess.Popen[bytes], stderr: bytes | None = None) -> None:
    code = proc.wait()
    if code != 0:
        message = (stderr if stderr is not None else (proc.stderr.read() if proc.stderr else b"")).decode(
            errors="replace"
        )
        raise SftpError(message.strip() or f"SFTP server: Failure (exit {code})")


def _split(arg: str) -> tuple[str, str]:
    if len(arg) > 2 and arg[0].isalpha() and arg[1:3] == ":\\":
        return "", arg
    if ":" not in arg:
        return "", arg
    name, _, path = arg.partition(":")
    return name, path or "."


def cmd_transfer(ctx: Context, args: list[str]) -> int:
    p = parse(args, (Option(("r", "recursive")), Option(("p", "parents"))))
    pos = p.positionals
    if len(pos) < 2:
        raise usage("Not enough arguments given")
    split = [_split(a) for a in pos]
    sources, target = split[:-1], split[-1]
    streaming_sources = pos[:-1].count("-")
    if (pos[-1] == "-" and streaming_sources) or streaming_sources > 1:
        raise usage("Only one '-' allowed")
    if (pos[-1] == "-" or streaming_sources) and len(sources) > 1:
        raise usage("Only two arguments allowed when using '-'")
    flags = {"recursive": p.is_set("recursive"), "parents": p.is_set("parents")}
    if pos[-1] == "-":
        if not sources[0][0]:
            raise usage("Source must be from inside an instance")
        return _to_cout(ctx, sources[0])
    if streaming_sources:
        if not target[0]:
            raise usage("Target must be inside an instance")
        return _from_cin(ctx, target, flags["parents"])
    named = [s for s in sources if s[0]]
    if not target[0]:
        if len(named) != len(sources):
            raise usage(
                "All sources must be from inside an instance"
                if named
                else "An instance name is needed for either source or destination"
            )
        return _pull(ctx, sources, target[1], flags)
    if named:
        raise usage("Cannot specify an instance name for both source and destination")
    return _push(ctx, [s[1] for s in sources], target, flags)


def _to_cout(ctx: Context, source: tuple[str, str]) -> int:
    rec = _ssh_target(ctx, "transfer", source[0], auto_start=False)
    proc = _remote(ctx, rec, ["pull-file", source[1]], stdout=None, stderr=subprocess.PIPE)
    _, stderr = proc.communicate()
    if proc.returncode != 0:
        raise Fail(2, stderr.decode(errors="replace").strip() + "\n")
    return 0


def _from_cin(ctx: Context, target: tuple[str, str], parents: bool) -> int:
    rec = _ssh_target(ctx, "transfer", target[0], auto_start=False)
    argv = ["push-file", target[1], "stream_output.dat", "1" if parents else "0", "-"]
    proc = _remote(ctx, rec, argv, stdin=None, stderr=subprocess.PIPE)
    _, stderr = proc.communicate()
    if proc.returncode != 0:
        raise Fail(2, stderr.decode(errors="replace").strip() + "\n")
    return 0


def _push(ctx: Context, sources: list[str], target: tuple[str, str], flags: dict[str, bool]) -> int:
    rec = _ssh_target(ctx, "transfer", target[0], auto_start=False)
    if len(sources) > 1 and _remote(ctx, rec, ["isdir", target[1]]).wait() != 0:
        raise Fail(2, f'Target "{target[1]}" is not a directory\n')
    ok = True
    for source in sources:
        try:
            _push_one(ctx, rec, source, target[1], flags)
        except SftpError as exc:
            ctx.eprint(log_line("error", "sftp", str(exc)))
            ok = False
    return 0 if ok else 2


def _push_one(ctx: Context, rec: Record, source: str, target: str, flags: dict[str, bool]) -> None:
    trimmed = source.rstrip("/") or "/"
    parents = "1" if flags["parents"] else "0"
    if os.path.isdir(source):
        if not flags["recursive"]:
            raise SftpError(f'omitting local directory "{source}": recursive mode not specified')
        proc = _remote(
            ctx,
            rec,
            ["push-dir", target, os.path.basename(trimmed), parents],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        tar = subprocess.Popen(["tar", "-C", trimmed, "-cf", "-", "."], stdout=proc.stdin)
        tar.wait()
        proc.stdin.close()  # type: ignore[union-attr]
        _check(proc)
        return
    try:
        fh = open(source, "rb")  # noqa: SIM115 - handed to the child as stdin
    except OSError as exc:
        raise SftpError(f'cannot open local file "{source}": {exc.strerror}') from None
    with fh:
        mode = format(os.fstat(fh.fileno()).st_mode & 0o7777, "o")
        proc = _remote(
            ctx,
            rec,
            ["push-file", target, os.path.basename(trimmed), parents, mode],
            stdin=fh,
            stderr=subprocess.PIPE,
        )
        _check(proc)


def _pull(ctx: Context, sources: list[tuple[str, str]], target: str, flags: dict[str, bool]) -> int:
    if len(sources) > 1 and not os.path.isdir(target):
        raise Fail(2, f'Target "{target}" is not a directory\n')
    ok = True
    for name in dict.fromkeys(s[0] for s in sources):
        rec = _ssh_target(ctx, "transfer", name, auto_start=False)
        for _, path in (s for s in sources if s[0] == name):
            try:
                _pull_one(ctx, rec, path, target, flags)
            except SftpError as exc:
                ctx.eprint(log_line("error", "sftp", str(exc)))
                ok = False
    return 0 if ok else 2


def _local_file_target(source: str, target: str, parents: bool) -> str:
    if not os.path.lexists(target):
        parent = os.path.dirname(target) or "."
        if parents:
            os.makedirs(parent, exist_ok=True)
        if not os.path.exists(parent):
            raise SftpError("local target does not exist")
        return target
    if not os.path.isdir(target):
        return target
    full = os.path.join(target, os.path.basename(source.rstrip("/")))
    if os.path.isdir(full):
        raise SftpError(f'cannot overwrite local directory "{full}" with non-directory')
    return full


def _pull_one(ctx: Context, rec: Record, source: str, target: str, flags: dict[str, bool]) -> None:
    kind, _, mode = _remote(ctx, rec, ["kind", source], stdout=subprocess.PIPE).communicate()[0].decode().partition(" ")
    if kind.strip() == "dir":
        if not flags["recursive"]:
            raise SftpError(f'omitting remote directory "{source}": recursive mode not specified')
        dest = _local_dir_target(source, target, flags["parents"])
        proc = _remote(ctx, rec, ["pull-dir", source], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Like the SFTP client: entries are created by this process (owned by the invoking user, not by
        # the instance's uid 1000) and get the remote permission bits, symlinks stay symlinks.
        tar = subprocess.run(
            ["tar", "--no-same-owner", "--same-permissions", "-C", dest, "-xf", "-"], stdin=proc.stdout, check=False
        )
        _check(proc)
        if tar.returncode != 0:
            raise SftpError(f'cannot create local directory "{dest}"')
        return
    dest = _local_file_target(source, target, flags["parents"])
    try:
        out = open(dest, "wb")  # noqa: SIM115 - handed to the child as stdout
    except OSError as exc:
        raise SftpError(f'cannot open local file "{dest}": {exc.strerror}') from None
    with out:
        proc = _remote(ctx, rec, ["pull-file", source], stdout=out, stderr=subprocess.PIPE)
        _check(proc)
    mode = mode.strip()
    if mode and mode != "-":  # pull_file: the local file gets the remote file's permission bits
        try:
            os.chmod(dest, int(mode, 8))
        except OSError:
            raise SftpError(f'cannot set permissions for local file "{dest}"') from None


def _local_dir_target(source: str, target: str, parents: bool) -> str:
    if os.path.exists(target) and not os.path.isdir(target):
        raise SftpError(f'cannot overwrite local non-directory "{target}" with directory')
    if not os.path.exists(target):
        try:
            os.makedirs(target) if parents else os.mkdir(target)
        except OSError as exc:
            raise SftpError(f'cannot create local directory "{target}": {exc.strerror}') from None
        return target
    child = os.path.join(target, os.path.basename(source.rstrip("/")))
    if os.path.exists(child) and not os.path.isdir(child):
        raise SftpError(f'cannot overwrite local non-directory "{child}" with directory')
    os.makedirs(child, exist_ok=True)
    return child
