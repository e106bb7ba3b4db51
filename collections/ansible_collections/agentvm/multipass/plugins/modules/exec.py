#!/usr/bin/python
# Copyright (c) 2026 agentvm contributors
# Apache License 2.0 (see LICENSE)
# The work is done by the action plugin of the same name (plugins/action/exec.py); this file documents it.
from __future__ import annotations

DOCUMENTATION = r"""
module: exec
short_description: Run an argv in a Multipass instance with one C(multipass exec), no module on the instance
description:
  - Runs O(argv) in the instance the task is delegated to, through the C(agentvm.multipass.multipass) connection,
    with a single C(multipass exec) and no Python module sent to the instance (the instance needs no Python).
  - O(argv) is joined with shell quoting and run by the connection's shell, so each item reaches the program as
    one argument, whatever it contains.
  - O(stdin_file) is a controller file streamed to the command's stdin; its content is never part of the task's
    arguments or result (use it for credentials).
  - O(stdout_file) streams stdout to a controller file instead of returning it; with O(max_stdout_bytes) the
    transfer stops there and RV(cut) is true (for output of an untrusted instance).
  - Runs as the connection's user (C(ubuntu)); prefix O(argv) with C(sudo -n) for root. C(become) is not used.
version_added: 0.3.0
author: agentvm contributors
attributes:
  check_mode:
    support: none
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  argv:
    description: The command and its arguments.
    type: list
    elements: str
    required: true
  stdin_file:
    description: Controller file streamed to the command's stdin (default C(/dev/null)).
    type: path
  stdout_file:
    description: Controller file that receives stdout (created or replaced).
    type: path
  max_stdout_bytes:
    description: With O(stdout_file), the most bytes written to it (V(0) is no limit).
    type: int
    default: 0
  timeout:
    description: Seconds the C(multipass exec) may take (default the connection's C(command_timeout)).
    type: int
    default: 0
notes:
  - Needs the C(agentvm.multipass.multipass) connection.
"""

EXAMPLES = r"""
- name: Wait for cloud-init in the clone, without a module
  agentvm.multipass.exec:
    argv: [cloud-init, status, --wait]
  delegate_to: agentvm-run-1
  register: ready
  failed_when: ready.rc not in [0, 2]

- name: Stream a tar of ~/output to the controller, at most 1 GiB
  agentvm.multipass.exec:
    argv: [tar, -C, /home/ubuntu/output, -cf, -, .]
    stdout_file: /tmp/output.tar
    max_stdout_bytes: 1073741824
  delegate_to: agentvm-run-1
"""

RETURN = r"""
rc:
  description: The command's exit status.
  returned: always
  type: int
stdout:
  description: Its stdout (empty with O(stdout_file)).
  returned: always
  type: str
stderr:
  description: Its stderr.
  returned: always
  type: str
cut:
  description: Whether O(stdout_file) was cut at O(max_stdout_bytes).
  returned: always
  type: bool
cmd:
  description: The argv.
  returned: always
  type: list
  elements: str
"""


def main() -> None:
    raise SystemExit("agentvm.multipass.exec is an action plugin: it runs on the controller")


if __name__ == "__main__":
    main()
