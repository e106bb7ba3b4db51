# Copyright (c) 2026 agentvm contributors
# Apache License 2.0 (see LICENSE)
from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import Callable
from typing import Any, TypeVar

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.plugins.connection import ConnectionBase, ensure_connect
from ansible.utils.display import Display

from ansible_collections.agentvm.multipass.plugins.module_utils.multipass import (
    MultipassCLI,
    MultipassError,
    Result,
    RetryPolicy,
    info_argv,
    parse_info,
)

DOCUMENTATION = r"""
name: multipass
short_description: Run tasks in Multipass instances through C(multipass exec) and C(multipass transfer)
description:
  - Runs commands in a Canonical Multipass instance with C(multipass exec) and moves files with
    C(multipass transfer), streaming through stdin/stdout. No SSH keys are needed on the controller;
    Multipass authenticates with its daemon's own key.
  - The C(multipass) executable is found on C(PATH) unless O(multipass_bin) (or the environment variable
    E(MULTIPASS_BIN)) names another one.
  - Before the first command of a task the instance's state is read with
    C(multipass info --no-runtime-information) (no SSH into the guest). A Stopped or Suspended instance is
    refused as unreachable unless O(allow_start=true), because C(multipass exec) would silently boot it.
    Missing or deleted instances, daemon errors and SSH failures are reported as unreachable.
  - Every remote command is wrapped so that it can never exit with status 4, which makes C(multipass exec)
    of Multipass 1.16.3 and older re-run the command forever; the real status 4 is restored on the
    controller.
author: agentvm contributors
version_added: 0.1.0
options:
  remote_addr:
    description:
      - The name of the Multipass instance.
    type: string
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_multipass_host
  remote_user:
    description:
      - The user that runs commands and owns transferred files.
      - Multipass logs in as V(ubuntu). For any other user, commands run through C(sudo -n -u USER) and files
        are streamed through C(multipass exec) instead of C(multipass transfer) (which always writes as
        V(ubuntu)).
      - For privilege escalation prefer C(become), which works with and without pipelining.
    type: string
    default: ubuntu
    vars:
      - name: ansible_user
      - name: ansible_multipass_user
    env:
      - name: ANSIBLE_REMOTE_USER
    ini:
      - section: defaults
        key: remote_user
    keyword:
      - name: remote_user
  multipass_bin:
    description:
      - Path or name of the C(multipass) executable.
      - Defaults to E(MULTIPASS_BIN) when set, else C(multipass) on C(PATH).
    type: string
    vars:
      - name: ansible_multipass_bin
    env:
      - name: MULTIPASS_BIN
  executable:
    description:
      - Shell used in the instance to run Ansible's command line.
    type: string
    default: /bin/sh
    vars:
      - name: ansible_multipass_executable
  working_directory:
    description:
      - Directory in the instance to run commands in (C(multipass exec --working-directory)).
      - When unset, C(--no-map-working-directory) is passed, so behaviour never depends on the
        controller's current directory, and commands start in the user's home.
    type: string
    vars:
      - name: ansible_multipass_working_directory
  allow_start:
    description:
      - Start a Stopped or Suspended instance instead of failing as unreachable.
      - Keep this off for instances that must stay stopped (for example a golden image that is cloned).
    type: boolean
    default: false
    vars:
      - name: ansible_multipass_allow_start
    env:
      - name: ANSIBLE_MULTIPASS_ALLOW_START
  start_timeout:
    description:
      - Seconds to wait for C(multipass start) when O(allow_start=true) or the instance is already starting.
    type: integer
    default: 300
    vars:
      - name: ansible_multipass_start_timeout
  connect_timeout:
    description:
      - Seconds one state query (C(multipass info)) may take before the host is unreachable.
    type: integer
    default: 60
    vars:
      - name: ansible_multipass_connect_timeout
    env:
      - name: ANSIBLE_MULTIPASS_CONNECT_TIMEOUT
  command_timeout:
    description:
      - Seconds one C(multipass exec) or C(multipass transfer) may take. The client is killed when the
        limit is reached and the host is reported unreachable. V(0) disables the limit.
      - Raise it for long-running tasks, or use the task keyword C(timeout).
    type: integer
    default: 3600
    vars:
      - name: ansible_multipass_command_timeout
    env:
      - name: ANSIBLE_MULTIPASS_COMMAND_TIMEOUT
  fetch_max_bytes:
    description:
      - The most bytes one file fetched from the instance may have (V(0), the default, is no limit). A larger
        file is cut at that size and the transfer stopped, so a hostile or runaway instance cannot fill the
        controller's disk; a warning says so. Pair it with O(ansible.builtin.fetch#module:validate_checksum=false)
        (a cut file cannot match the remote checksum).
      - Applies to the default user (files pulled with C(multipass transfer)).
    type: integer
    default: 0
    version_added: 0.3.0
    vars:
      - name: ansible_multipass_fetch_max_bytes
  retries:
    description:
      - How many times a transient failure (daemon socket unreachable, instance being prepared, SSH
        connection failure) is retried, with exponential backoff.
    type: integer
    default: 3
    vars:
      - name: ansible_multipass_retries
    env:
      - name: ANSIBLE_MULTIPASS_RETRIES
  retry_delay:
    description:
      - First backoff delay in seconds; doubled on each retry (at most 16 seconds).
    type: float
    default: 1.0
    vars:
      - name: ansible_multipass_retry_delay
  pipelining:
    description:
      - Run modules by feeding them to the remote interpreter's stdin, one C(multipass exec) per module,
        instead of transferring them first (about four C(multipass) calls per module).
      - On by default; the Multipass V(ubuntu) user has passwordless C(sudo) without C(requiretty).
    type: boolean
    default: true
    env:
      - name: ANSIBLE_PIPELINING
    ini:
      - section: defaults
        key: pipelining
      - section: connection
        key: pipelining
    vars:
      - name: ansible_pipelining
      - name: ansible_multipass_pipelining
notes:
  - Become passwords are not supported (there is no terminal to answer a prompt); Multipass's default user
    has passwordless C(sudo).
  - Files are streamed through C(multipass transfer -) so the snap-confined client never has to read
    Ansible's hidden temporary folders or C(/tmp) on the controller.
  - Each C(multipass exec) opens a new SSH session from the client; keep pipelining on.
seealso:
  - name: Multipass exec
    description: The command this plugin runs.
    link: https://documentation.ubuntu.com/multipass/en/latest/reference/command-line-interface/exec/
"""

EXAMPLES = r"""
# inventory.ini: two names for one instance, the second one runs in /srv
# [vms]
# web1 ansible_connection=agentvm.multipass.multipass
# web1-srv ansible_connection=agentvm.multipass.multipass ansible_host=web1
#   ansible_multipass_working_directory=/srv   (on the same line)

- name: Use an instance directly
  hosts: web1
  gather_facts: false
  vars:
    ansible_connection: agentvm.multipass.multipass
  tasks:
    - name: Write a root-owned file
      become: true
      ansible.builtin.copy:
        content: "hello\n"
        dest: /etc/motd
        mode: "0644"

- name: Allow a stopped instance to be started by the connection
  hosts: builder
  gather_facts: false
  vars:
    ansible_connection: agentvm.multipass.multipass
    ansible_multipass_allow_start: true
  tasks:
    - name: Check the kernel
      ansible.builtin.command: uname -r
      changed_when: false
"""

display = Display()

T = TypeVar("T")

DEFAULT_USER = "ubuntu"

#: The code and the stderr line the wrapper uses for a remote exit status of 4.
EXIT4_CODE = 104
EXIT4_MARKER = b"agentvm.multipass: remote exit status 4"
#: What the wrapper appends to stderr: a newline (the command's stderr may not end with one) and the marker.
EXIT4_SUFFIX = b"\n" + EXIT4_MARKER + b"\n"

# Runs the command in a child shell ($0 -c $1) so that nothing in it can bypass the mapping, and turns
# status 4 into EXIT4_CODE plus EXIT4_SUFFIX on stderr (Multipass <= 1.16.3 re-runs commands that exit 4).
EXIT4_WRAPPER = (
    '"$0" -c "$1"; rc=$?; '
    f'if [ "$rc" -eq 4 ]; then printf "\\n%s\\n" "{EXIT4_MARKER.decode()}" >&2; exit {EXIT4_CODE}; fi; '
    'exit "$rc"'
)

#: States in which commands may run without starting anything.
RUNNING_STATES = ("Running", "Delayed Shutdown")
#: States that C(multipass exec) would boot or resume; refused unless allow_start.
STARTABLE_STATES = ("Stopped", "Suspended")
#: Already booting: waiting for it with C(multipass start) changes nothing.
BOOTING_STATES = ("Starting", "Restarting")


def build_remote_command(cmd: str, executable: str, user: str = DEFAULT_USER) -> list[str]:
    """The argv passed after ``multipass exec NAME --`` for Ansible's command line ``cmd``."""
    command = [executable, "-c", EXIT4_WRAPPER, executable, cmd]
    if user and user != DEFAULT_USER:
        command = ["sudo", "-n", "-H", "-u", user, "--", *command]
    return command


def build_write_command(path: str, user: str) -> list[str]:
    """Write stdin to ``path`` as ``user`` (used instead of transfer for users other than ubuntu)."""
    return ["sudo", "-n", "-u", user, "--", "/bin/sh", "-c", 'cat > "$1"', "sh", path]


def build_read_command(path: str, user: str) -> list[str]:
    """Print ``path`` as ``user`` (used instead of transfer for users other than ubuntu)."""
    return ["sudo", "-n", "-u", user, "--", "cat", "--", path]


def decode_exit_status(rc: int, stderr: bytes) -> tuple[int, bytes]:
    """Undo :data:`EXIT4_WRAPPER`: EXIT4_CODE with EXIT4_SUFFIX ending stderr means the command exited 4."""
    if rc == EXIT4_CODE and stderr.endswith(EXIT4_SUFFIX):
        return 4, stderr[: -len(EXIT4_SUFFIX)]
    return rc, stderr


class Connection(ConnectionBase):
    """Commands through ``multipass exec``, files through ``multipass transfer``."""

    transport = "agentvm.multipass.multipass"
    has_pipelining = True
    has_tty = False
    default_user = DEFAULT_USER

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cli: MultipassCLI | None = None

    # -- helpers --------------------------------------------------------------------------------

    @property
    def instance_name(self) -> str:
        return str(self.get_option("remote_addr"))

    @property
    def user(self) -> str:
        return str(self.get_option("remote_user") or DEFAULT_USER)

    def _multipass(self) -> MultipassCLI:
        if self._cli is None:
            host = self.instance_name
            self._cli = MultipassCLI(
                binary=self.get_option("multipass_bin") or None,
                timeout=float(self.get_option("command_timeout") or 0),
                retry=RetryPolicy(
                    retries=int(self.get_option("retries")),
                    backoff=float(self.get_option("retry_delay")),
                ),
                log=lambda line: display.vvvv(line, host=host),
            )
        return self._cli

    def _call(self, action: str, func: Callable[[MultipassCLI], T], always_unreachable: bool = False) -> T:
        """Run ``func`` and turn Multipass failures into Ansible's (unreachable when the host is gone)."""
        try:
            return func(self._multipass())
        except MultipassError as err:
            message = f"{action} on multipass instance {self.instance_name!r} failed: {err.message}"
            if always_unreachable or err.unreachable:
                raise AnsibleConnectionFailure(message) from err
            raise AnsibleError(message) from err

    # -- ConnectionBase ----------------------------------------------------------------------------

    def _connect(self) -> Connection:
        if self._connected:
            return self
        name = self.instance_name
        display.vvv(f"ESTABLISH MULTIPASS CONNECTION FOR USER: {self.user}", host=name)
        timeout = float(self.get_option("connect_timeout") or 0)

        def query(cli: MultipassCLI) -> str:
            result = cli.run(info_argv(cli.bin, [name], runtime=False), timeout=timeout)
            entry = parse_info(result.stdout).get(name)
            return str(entry.get("state", "Unknown")) if entry else "Unknown"

        state = self._call("reading the state", query, always_unreachable=True)
        display.vvvv(f"instance state: {state}", host=name)
        if state in STARTABLE_STATES:
            if not self.get_option("allow_start"):
                raise AnsibleConnectionFailure(
                    f"multipass instance {name!r} is {state}; refusing to start it "
                    "(set ansible_multipass_allow_start=true to allow the connection to start it)"
                )
            self._start(name)
        elif state in BOOTING_STATES:
            self._start(name)
        elif state not in RUNNING_STATES:
            raise AnsibleConnectionFailure(f"multipass instance {name!r} is {state}; cannot run commands in it")
        self._connected = True
        return self

    def _start(self, name: str) -> None:
        timeout = int(self.get_option("start_timeout") or 0) or None
        display.vvv(f"START multipass instance {name}", host=name)
        self._call("starting", lambda cli: cli.start(name, timeout=timeout), always_unreachable=True)

    @ensure_connect
    def exec_command(self, cmd: str, in_data: bytes | None = None, sudoable: bool = True) -> tuple[int, bytes, bytes]:
        if self.become is not None and self.become.expect_prompt():
            raise AnsibleError(
                "the agentvm.multipass.multipass connection cannot answer become password prompts; "
                "use passwordless sudo (the Multipass default user has it)"
            )
        name = self.instance_name
        command = build_remote_command(cmd, str(self.get_option("executable")), self.user)
        display.vvv(f"EXEC (command timeout {self.get_option('command_timeout')} s) {cmd}", host=name)
        workdir = self.get_option("working_directory") or None
        result: Result = self._call(
            "exec",
            lambda cli: cli.exec(name, command, input=in_data, working_directory=workdir),
            always_unreachable=True,
        )
        rc, stderr = decode_exit_status(result.rc, result.stderr_bytes)
        return rc, result.stdout_bytes, stderr

    @ensure_connect
    def exec_argv(
        self,
        argv: list[str],
        *,
        stdin_path: str | None = None,
        stdout_path: str | None = None,
        max_stdout_bytes: int = 0,
        timeout: float | None = None,
    ) -> tuple[int, bytes, bytes, bool]:
        """Run ``argv`` in the instance with one ``multipass exec`` and no module (the agentvm.multipass.exec
        action): stdin from a controller file, stdout returned or written to a controller file (cut after
        ``max_stdout_bytes`` when set: the fourth value says so). Returns (rc, stdout, stderr, cut)."""
        name = self.instance_name
        command = build_remote_command(shlex.join(argv), str(self.get_option("executable")), self.user)
        limit = float(timeout) if timeout else float(self.get_option("command_timeout") or 0)
        display.vvv(f"EXEC (command timeout {limit:g} s) {shlex.join(argv)}", host=name)
        if stdout_path is not None:
            cap = max_stdout_bytes if max_stdout_bytes > 0 else 1 << 62
            result, cut = self._call(
                "exec",
                lambda cli: cli.exec_limited(name, command, stdout_path, cap, stdin_path=stdin_path, timeout=limit),
                always_unreachable=True,
            )
        else:
            cut = False
            result = self._call(
                "exec",
                lambda cli: cli.exec(name, command, stdin_path=stdin_path, timeout=limit),
                always_unreachable=True,
            )
        rc, stderr = decode_exit_status(result.rc, result.stderr_bytes)
        return rc, result.stdout_bytes, stderr, cut

    @ensure_connect
    def put_file(self, in_path: str, out_path: str) -> None:
        name = self.instance_name
        display.vvv(f"PUT {in_path} TO {out_path}", host=name)
        if not os.path.isfile(in_path):
            raise AnsibleFileNotFound(f"file or module does not exist: {in_path}")
        if self.user == DEFAULT_USER:
            self._call("transfer (put)", lambda cli: cli.push(name, in_path, out_path))
            return
        command = build_write_command(out_path, self.user)
        result = self._call("put", lambda cli: cli.exec(name, command, stdin_path=in_path))
        if result.rc != 0:
            raise AnsibleError(
                f"failed to write {out_path} as {self.user} in {name!r} (rc={result.rc}): {result.stderr.strip()}"
            )

    @ensure_connect
    def fetch_file(self, in_path: str, out_path: str) -> None:
        name = self.instance_name
        display.vvv(f"FETCH {in_path} TO {out_path}", host=name)
        directory = os.path.dirname(os.path.abspath(out_path))
        os.makedirs(directory, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=directory, prefix=".agentvm-fetch-")
        os.close(fd)
        try:
            limit = int(self.get_option("fetch_max_bytes") or 0)
            if self.user == DEFAULT_USER and limit > 0:
                _result, truncated = self._call(
                    "transfer (fetch)", lambda cli: cli.pull_limited(name, in_path, partial, limit)
                )
                if truncated:
                    display.warning(f"{in_path} from {name!r} is larger than {limit} bytes: cut at that size")
            elif self.user == DEFAULT_USER:
                self._call("transfer (fetch)", lambda cli: cli.pull(name, in_path, partial))
            else:
                command = build_read_command(in_path, self.user)
                result = self._call("fetch", lambda cli: cli.exec(name, command, stdout_path=partial))
                if result.rc != 0:
                    raise AnsibleError(
                        f"failed to read {in_path} as {self.user} in {name!r} (rc={result.rc}): {result.stderr.strip()}"
                    )
            os.chmod(partial, 0o666 & ~_current_umask())
            os.replace(partial, out_path)
        except BaseException:
            if os.path.exists(partial):
                os.unlink(partial)
            raise

    def reset(self) -> None:
        self.close()

    def close(self) -> None:
        self._connected = False


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
