"""Entry point of the double: dispatch, exit codes, faults, latency and the trace."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable

from multipass_double import faults
from multipass_double.backend import BackendError
from multipass_double.common import Context, Fail, Killed, failed
from multipass_double.config import Paths
from multipass_double.exec_transfer import cmd_exec, cmd_transfer
from multipass_double.lifecycle import (
    cmd_clone,
    cmd_delete,
    cmd_launch,
    cmd_purge,
    cmd_recover,
    cmd_restart,
    cmd_restore,
    cmd_snapshot,
    cmd_start,
    cmd_stop,
)
from multipass_double.qtargs import ParseError
from multipass_double.query import cmd_find, cmd_get, cmd_info, cmd_list, cmd_version
from multipass_double.state import Store

Command = Callable[[Context, list[str]], int]

COMMANDS: dict[str, Command] = {
    "launch": cmd_launch,
    "clone": cmd_clone,
    "start": cmd_start,
    "stop": cmd_stop,
    "restart": cmd_restart,
    "delete": cmd_delete,
    "purge": cmd_purge,
    "recover": cmd_recover,
    "exec": cmd_exec,
    "transfer": cmd_transfer,
    "info": cmd_info,
    "list": cmd_list,
    "snapshot": cmd_snapshot,
    "restore": cmd_restore,
    "version": cmd_version,
    "find": cmd_find,
    "get": cmd_get,
}
ALIASES = {
    "ls": "list",
    "copy-files": "transfer",
    "sh": "shell",
    "connect": "shell",
    "auth": "authenticate",
    "unmount": "umount",
}
UNSUPPORTED = (
    "shell",
    "suspend",
    "mount",
    "umount",
    "set",
    "alias",
    "aliases",
    "unalias",
    "networks",
    "authenticate",
    "prefer",
)
NEEDS_NO_ROOT = ("version", "find", "get")
MUTATING = (
    "launch",
    "clone",
    "start",
    "stop",
    "restart",
    "delete",
    "purge",
    "recover",
    "snapshot",
    "restore",
)

HELP = """Usage: multipass [options] <command>
Create, control and connect to Ubuntu instances.

This is the agentvm test double of the Multipass 1.16.3 CLI: its instances are systemd-nspawn containers.

Options:
  -h, --help     Displays help on commandline options
  -v, --verbose  Increase logging verbosity.

Available commands:
  clone     Clone an instance
  delete    Delete instances and snapshots
  exec      Run a command on an instance
  find      Display available images to create instances from
  get       Get a configuration setting
  info      Display information about instances or snapshots
  launch    Create and start an Ubuntu instance
  list      List all available instances or snapshots
  purge     Purge all deleted instances permanently
  recover   Recover deleted instances
  restart   Restart instances
  restore   Restore an instance from a snapshot
  snapshot  Take a snapshot of an instance
  start     Start instances
  stop      Stop running instances
  transfer  Transfer files between the host and instances
  version   Show version details
"""


def _split_command(argv: list[str]) -> tuple[str | None, list[str]]:
    for i, arg in enumerate(argv):
        if arg in ("-h", "--help") and i == 0:
            return "help", argv[i + 1 :]
        if arg.startswith("-") and arg.strip("-v") == "":
            continue
        return arg, argv[i + 1 :]
    return None, []


def _inject(ctx: Context, command: str, args: list[str]) -> None:
    def consume(fault: faults.Fault) -> bool:
        with ctx.store.locked() as st:
            used = st["faults"].get(fault.spec, 0)
            if fault.count is not None and used >= fault.count:
                return False
            st["faults"][fault.spec] = used + 1
            return True

    fault = faults.matching_fault(command, consume)
    if fault is None:
        return
    target = next((a for a in args if not a.startswith("-")), "primary").split(":", 1)[0]
    if fault.mode == "hang":
        while True:
            time.sleep(3600)
    if fault.mode == "daemon":
        raise failed(command, "cannot connect to the multipass socket")
    if fault.mode == "denied":
        raise failed(command, "multipass socket access denied")
    if fault.mode == "timeout" and command in ("launch", "start", "restart"):
        what = {"launch": "instance launch", "start": "instance to start", "restart": "instance to restart"}[command]
        raise Fail(5, f"Timed out waiting for {what}.\n")
    raise _real_error(command, target)


def _real_error(command: str, target: str) -> Fail:
    texts = {
        "exec": "ssh connection failed: 'Failed to connect: No route to host'",
        "stop": "The QEMU process did not finish within 300000 milliseconds after being shutdown",
        "clone": f'instance "{target}" is being prepared',
    }
    if command == "transfer":
        return Fail(2, "ssh connection failed: 'Failed to connect: No route to host'\n")
    if command in ("launch", "start", "restart"):
        return failed(command, f"The following errors occurred:\n{target}: timed out waiting for response")
    return failed(command, texts.get(command, "cannot connect to the multipass socket"))


def run(argv: list[str]) -> int:
    command, args = _split_command(argv)
    if command is None:
        sys.stdout.write(HELP)
        return 2
    if command in ("help", "-h", "--help"):
        sys.stdout.write(HELP)
        return 0
    command = ALIASES.get(command, command)
    if command in UNSUPPORTED:
        sys.stderr.write(f"{command} failed: `{command}` is not supported by the Multipass test double\n")
        return 2
    handler = COMMANDS.get(command)
    if handler is None:
        sys.stdout.write(
            f'Error: Unknown command or alias \'{command}\' (try "multipass help" or "multipass aliases")\n'
        )
        return 1
    if "-h" in args or "--help" in args:
        sys.stdout.write(f"Usage: multipass {command} [options]\n(see the Multipass documentation)\n")
        return 0
    ctx = Context(paths=Paths.from_env(), store=Store(Paths.from_env()))
    if command not in NEEDS_NO_ROOT and os.geteuid() != 0:
        sys.stderr.write(f"{command} failed: the Multipass test double needs root (systemd-nspawn, mounts)\n")
        return 2
    started = time.monotonic()
    try:
        _inject(ctx, command, args)
        code = handler(ctx, args)
    except Fail as exc:
        ctx.print(exc.stdout)
        ctx.eprint(exc.stderr)
        code = exc.code
    except ParseError as exc:
        ctx.eprint(f"{exc}\n")
        code = 1
    except BackendError as exc:
        ctx.eprint(f"{command} failed: {exc}\n")
        code = 2
    if command in MUTATING and code == 0:
        faults.pad_latency(command, started)
    return code


def main(argv: list[str]) -> int:
    """Run one invocation. Like the real client (no handlers for them), SIGINT and a signal that ends
    ``exec`` make the process die by that signal, after the trace line (exit_code 128+N) is written."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    start = time.time()
    code = 128 + signal.SIGINT
    killed_by: int | None = None
    try:
        code = run(argv)
    except KeyboardInterrupt:
        killed_by = signal.SIGINT
    except Killed as exc:
        killed_by = exc.signum
        code = 128 + exc.signum
    finally:
        faults.trace(argv, start, time.time(), code)
    if killed_by is not None:
        sys.stdout.flush()
        signal.signal(killed_by, signal.SIG_DFL)
        os.kill(os.getpid(), killed_by)
    return code
