#!/usr/bin/python
# Copyright (c) 2026 agentvm contributors
# Apache License 2.0 (see LICENSE)
# The work is done by the action plugin of the same name (plugins/action/push.py); this file documents it.
from __future__ import annotations

DOCUMENTATION = r"""
module: push
short_description: Copy a controller file into a Multipass instance with one C(multipass transfer)
description:
  - Streams O(src) into O(dest) of the instance the task is delegated to, through the connection's C(put_file)
    (C(multipass transfer -) for the default user), with no module on the instance, so no checksum, mode or owner
    handling. The file is written as the connection's user with that user's umask.
  - For bundles and archives a later command unpacks; use M(ansible.builtin.copy) for managed files.
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
  src:
    description: The controller file.
    type: path
    required: true
  dest:
    description: The path in the instance (its folder must exist).
    type: str
    required: true
notes:
  - Works with any connection plugin; with C(agentvm.multipass.multipass) it is one C(multipass transfer).
"""

EXAMPLES = r"""
- name: Upload the run's bundle
  agentvm.multipass.push:
    src: /tmp/bundle.tar
    dest: /home/ubuntu/.agentvm-bundle.tar
  delegate_to: agentvm-run-1
"""

RETURN = r"""
size:
  description: Bytes copied.
  returned: always
  type: int
"""


def main() -> None:
    raise SystemExit("agentvm.multipass.push is an action plugin: it runs on the controller")


if __name__ == "__main__":
    main()
