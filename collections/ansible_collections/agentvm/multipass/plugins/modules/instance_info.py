#!/usr/bin/python
# Copyright (c) 2026 agentvm contributors
# Apache License 2.0 (see LICENSE)
from __future__ import annotations

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.agentvm.multipass.plugins.module_utils.multipass import (
    MultipassCLI,
    MultipassError,
    RetryPolicy,
    normalize_instance,
)

DOCUMENTATION = r"""
module: instance_info
short_description: Read the state and details of Canonical Multipass instances
description:
  - Returns the instances known to Multipass, or only the named ones, with their state, addresses, image
    and (for running instances) resources, and on request their snapshots.
  - Never changes anything. Names that do not exist are listed in RV(missing) instead of failing.
version_added: 0.1.0
author: agentvm contributors
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  name:
    description:
      - Names of the instances to describe. All instances (including deleted ones) when empty.
    type: list
    elements: str
    default: []
  runtime_information:
    description:
      - Include runtime details (CPUs, memory, disk, load, OS release) of running instances. Multipass
        runs a command over SSH in each running instance for that.
    type: bool
    default: false
  snapshots:
    description:
      - Include each instance's snapshots (name, parent, comment, creation time, children) in
        RV(instances). Costs one more C(multipass info --snapshots) call, made only when an instance has
        snapshots.
    type: bool
    default: false
    version_added: 0.3.0
  multipass_bin:
    description: Path or name of the C(multipass) executable (default E(MULTIPASS_BIN), else C(multipass) on C(PATH)).
    type: str
seealso:
  - module: agentvm.multipass.instance
"""

EXAMPLES = r"""
- name: Wait until the clone is running
  agentvm.multipass.instance_info:
    name: agentvm-run-1
  delegate_to: localhost
  register: vm
  until: vm.instances['agentvm-run-1'].state | default('') == 'Running'
  retries: 30
  delay: 2

- name: Read the golden's snapshots and the manifest kept in the comment of its sealed snapshot
  agentvm.multipass.instance_info:
    name: agentvm-golden
    snapshots: true
  delegate_to: localhost
  register: golden

- name: Show the manifest
  ansible.builtin.debug:
    msg: "{{ golden.instances['agentvm-golden'].snapshots.sealed.comment | default('{}') | from_json }}"
  when: "'agentvm-golden' in golden.instances"

- name: List every instance with its resources
  agentvm.multipass.instance_info:
    runtime_information: true
  delegate_to: localhost
  register: all_vms
"""

RETURN = r"""
instances:
  description:
    - Instances by name, with the fields of the RV(agentvm.multipass.instance#module:instance) return value,
      plus C(snapshots) when O(snapshots=true).
    - C(snapshots) maps each snapshot name to C(name), C(parent) (null for a root snapshot), C(comment),
      C(created) (Multipass's locale-dependent text; do not parse it) and C(children) (list of names); it is
      empty for an instance without snapshots.
  returned: always
  type: dict
  sample:
    agentvm-golden:
      name: agentvm-golden
      state: Stopped
      ipv4: []
      release: Ubuntu 24.04 LTS
      image_hash: 1797c5c82016c1e65f4008fcf89deae3a044ef76087a9ec5b907c6d64a3609ac
      image_release: 24.04 LTS
      cpus: null
      memory: null
      memory_used: null
      disk: null
      disk_used: null
      load: []
      snapshot_count: 1
      mounts: {}
      snapshots:
        sealed:
          name: sealed
          parent: null
          comment: '{"build_id": "20261121t221500-3f9c"}'
          created: Sat Nov 21 22:15:00 2026 UTC
          children: []
missing:
  description: Requested names that Multipass does not know.
  returned: always
  type: list
  elements: str
  sample: [agentvm-run-2]
"""


def gather(cli: MultipassCLI, names: list[str], runtime: bool, snapshots: bool = False) -> dict[str, Any]:
    listed = {entry["name"]: entry for entry in cli.list_instances()}
    wanted = names or list(listed)
    existing = [n for n in wanted if n in listed]
    info = cli.info_existing(existing, runtime=runtime)
    instances = {n: normalize_instance(n, info[n], listed[n]) for n in existing if n in info}
    if snapshots:
        add_snapshots(cli, instances)
    missing = [n for n in wanted if n not in instances]
    return {"instances": instances, "missing": missing}


def add_snapshots(cli: MultipassCLI, instances: dict[str, dict[str, Any]]) -> None:
    """Give each record its ``snapshots``; one call for the instances whose ``snapshot_count`` is not 0
    (unknown counts included). An instance deleted meanwhile is dropped (and so reported missing)."""
    with_snapshots = [n for n, record in instances.items() if record["snapshot_count"] != 0]
    found = cli.snapshots_existing(with_snapshots) if with_snapshots else {}
    for name in list(instances):
        if name in with_snapshots and name not in found:
            del instances[name]
        else:
            instances[name]["snapshots"] = found.get(name, {})


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "list", "elements": "str", "default": []},
            "runtime_information": {"type": "bool", "default": False},
            "snapshots": {"type": "bool", "default": False},
            "multipass_bin": {"type": "str"},
        },
        supports_check_mode=True,
    )
    cli = MultipassCLI(binary=module.params["multipass_bin"], timeout=120.0, retry=RetryPolicy(), log=module.debug)
    try:
        params = module.params
        result = gather(cli, list(params["name"]), params["runtime_information"], params["snapshots"])
    except MultipassError as err:
        module.fail_json(msg=err.message, **err.to_dict())
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
