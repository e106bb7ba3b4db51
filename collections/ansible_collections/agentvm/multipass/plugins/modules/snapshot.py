#!/usr/bin/python
# Copyright (c) 2026 agentvm contributors
# Apache License 2.0 (see LICENSE)
from __future__ import annotations

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.agentvm.multipass.plugins.module_utils.multipass import (
    InstanceNotFoundError,
    MultipassCLI,
    MultipassError,
    RetryPolicy,
    snapshot_ref,
    valid_name,
)

DOCUMENTATION = r"""
module: snapshot
short_description: Take, restore and delete snapshots of Canonical Multipass instances
description:
  - Manages one snapshot of one Multipass instance through the C(multipass) CLI of the machine the module
    runs on (normally the controller; use C(delegate_to) with V(localhost)).
  - Multipass takes and restores snapshots of B(Stopped) instances only. The module never stops an instance
    itself (use M(agentvm.multipass.instance) with C(state=stopped) first);
    on any other state the task fails with Multipass's own message (C(Multipass can only take snapshots of
    stopped instances.))
  - In check mode only read-only C(multipass info) calls are made; failures that Multipass would report
    (instance not Stopped, no such snapshot) are predicted from them.
  - The C(multipass) executable is found on C(PATH) unless O(multipass_bin) or the environment variable
    E(MULTIPASS_BIN) names another one.
version_added: 0.3.0
author: agentvm contributors
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  instance:
    description: Name of the instance.
    type: str
    required: true
  name:
    description:
      - Name of the snapshot (letters, digits and hyphens, starting with a letter, ending with a letter or
        digit; Multipass applies its instance-name rule to snapshots).
    type: str
    required: true
  state:
    description:
      - V(present) takes the snapshot (C(multipass snapshot --name NAME)) unless the instance already has a
        snapshot of that name, which is left as it is.
      - V(restored) restores the instance to the snapshot (C(multipass restore --destructive)), discarding
        the instance's current state. Always reported as changed, since Multipass cannot tell whether the
        instance differs from the snapshot.
      - V(absent) deletes the snapshot (C(multipass delete --purge INSTANCE.NAME); Multipass can only purge
        snapshots) if it exists. A missing instance has no snapshot, so it counts as absent.
    type: str
    choices: [present, absent, restored]
    default: present
  comment:
    description:
      - With O(state=present), the comment of a new snapshot (free text, for example a manifest as JSON).
        It is passed to Multipass as one argument, never through a shell.
      - An existing snapshot's comment is not changed to match.
    type: str
  timeout:
    description: Seconds each C(multipass snapshot), C(restore) or C(delete) may take before the client is killed.
    type: int
    default: 600
  multipass_bin:
    description: Path or name of the C(multipass) executable.
    type: str
  retries:
    description:
      - How many times a transient Multipass failure (daemon unreachable; instance busy, for reads and
        restores) is retried inside the module, with exponential backoff from one second.
      - V(0) turns the module's own retries off (the task's failure then carries C(transient)).
    type: int
    default: 3
notes:
  - Multipass 1.13 or later. A snapshot records the disk, CPUs, memory, disk size and mounts; restoring
    re-applies them. Backends without snapshots (LXD) fail with
    C(The snapshots feature is not implemented on this backend.)
seealso:
  - module: agentvm.multipass.instance
  - module: agentvm.multipass.instance_info
"""

EXAMPLES = r"""
- name: Stop the golden (Multipass snapshots only stopped instances)
  agentvm.multipass.instance:
    name: agentvm-golden
    state: stopped
  delegate_to: localhost

- name: Seal it with a snapshot carrying its manifest
  agentvm.multipass.snapshot:
    instance: agentvm-golden
    name: sealed
    comment: "{{ manifest | to_json(sort_keys=true) }}"
  delegate_to: localhost

- name: Roll it back to the sealed state after it was booted by mistake
  agentvm.multipass.snapshot:
    instance: agentvm-golden
    name: sealed
    state: restored
  delegate_to: localhost

- name: Delete the snapshot
  agentvm.multipass.snapshot:
    instance: agentvm-golden
    name: sealed
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
snapshot:
  description:
    - The snapshot after the task (empty when it is absent). In check mode, the snapshot before the task.
  returned: always
  type: dict
  contains:
    name:
      description: Snapshot name.
      type: str
      sample: sealed
    parent:
      description: The snapshot this one was taken on top of (null for a root snapshot).
      type: str
      sample: null
    comment:
      description: The snapshot's comment (empty when it has none).
      type: str
      sample: '{"build_id": "20261121t221500-3f9c"}'
    created:
      description: When it was taken, as Multipass prints it (locale-dependent text; do not parse it).
      type: str
      sample: Sat Nov 21 22:15:00 2026 UTC
    children:
      description: Names of the snapshots taken on top of this one.
      type: list
      elements: str
      sample: []
snapshots:
  description:
    - Every snapshot of the instance by name after the task (before it in check mode), with the fields of RV(snapshot).
  returned: always
  type: dict
  sample:
    sealed:
      name: sealed
      parent: null
      comment: ""
      created: Sat Nov 21 22:15:00 2026 UTC
      children: []
actions:
  description: The Multipass commands the task ran (or would run in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: [snapshot --name sealed agentvm-golden]
transient:
  description: On failure, whether Multipass's error is a transient one (worth retrying the task).
  returned: failure
  type: bool
"""

STATES = ("present", "absent", "restored")


def plan(state: str, exists: bool) -> list[str]:
    """The Multipass operations for ``state`` given whether the instance has the snapshot (``snapshot``,
    ``restore``, ``delete``). ``restored`` always restores; a missing snapshot is Multipass's to refuse."""
    if state == "present":
        return [] if exists else ["snapshot"]
    if state == "absent":
        return ["delete"] if exists else []
    return ["restore"]


def predicted_failure(step: str, instance: str, snapshot: str, instance_state: str | None, exists: bool) -> str | None:
    """What Multipass would refuse, for check mode (which must not run the command to find out)."""
    ref = snapshot_ref(instance, snapshot)
    if step == "delete":
        if instance_state == "Deleted":
            return f"delete would fail: Cannot delete snapshots of deleted instances: {ref}"
        return None
    verb = "take snapshots of" if step == "snapshot" else "restore snapshots of"
    if step == "restore" and not exists:
        return f"{step} would fail: No such snapshot: {ref}"
    if instance_state != "Stopped":
        return (
            f'{step} would fail: the instance "{instance}" is {instance_state} and Multipass can only {verb} '
            "stopped instances"
        )
    return None


def describe(step: str, instance: str, snapshot: str) -> str:
    return {
        "snapshot": f"snapshot --name {snapshot} {instance}",
        "restore": f"restore --destructive {snapshot_ref(instance, snapshot)}",
        "delete": f"delete --purge {snapshot_ref(instance, snapshot)}",
    }[step]


def expected_diff(state: str, exists: bool, name: str, comment: str) -> dict[str, Any]:
    before = {"snapshot": name, "state": "present" if exists else "absent"}
    if state == "absent":
        after = {"snapshot": name, "state": "absent"}
    elif state == "restored":
        after = {"snapshot": name, "state": "restored"}
    else:
        after = dict(before) if exists else {"snapshot": name, "state": "present", "comment": comment}
    return {"before": before, "after": after}


class SnapshotModule:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params = module.params
        self.instance: str = self.params["instance"]
        self.name: str = self.params["name"]
        self.cli = MultipassCLI(
            binary=self.params["multipass_bin"],
            timeout=120.0,
            retry=RetryPolicy(retries=self.params["retries"]),
            log=module.debug,
        )
        self.actions: list[str] = []

    def run(self) -> dict[str, Any]:
        state = self.params["state"]
        try:
            snapshots = self.cli.snapshots(self.instance)
        except InstanceNotFoundError:
            if state != "absent":
                raise  # Multipass's own words: instance "x" does not exist
            snapshots = {}  # no instance, no snapshot
        exists = self.name in snapshots
        steps = plan(state, exists)
        for step in steps:
            self.actions.append(describe(step, self.instance, self.name))
            if self.module.check_mode:
                self.predict(step, exists)
            else:
                self.apply(step)
        after = snapshots if self.module.check_mode or not steps else self.cli.snapshots(self.instance)
        return {
            "changed": bool(steps),
            "actions": self.actions,
            "diff": expected_diff(state, exists, self.name, self.params["comment"] or ""),
            "snapshot": after.get(self.name, {}),
            "snapshots": after,
        }

    def predict(self, step: str, exists: bool) -> None:
        message = predicted_failure(step, self.instance, self.name, self.cli.state(self.instance), exists)
        if message:
            self.fail(message)

    def apply(self, step: str) -> None:
        timeout = self.params["timeout"]
        if step == "snapshot":
            self.cli.snapshot(self.instance, self.name, self.params["comment"], timeout=timeout)
        elif step == "restore":
            self.cli.restore(self.instance, self.name, timeout=timeout)
        elif step == "delete":
            self.cli.delete_snapshot(self.instance, self.name, timeout=timeout, missing_ok=True)

    def fail(self, msg: str, **extra: Any) -> None:
        self.module.fail_json(msg=msg, actions=self.actions, snapshot={}, snapshots={}, **extra)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "instance": {"type": "str", "required": True},
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "default": "present", "choices": list(STATES)},
            "comment": {"type": "str"},
            "timeout": {"type": "int", "default": 600},
            "multipass_bin": {"type": "str"},
            "retries": {"type": "int", "default": 3},
        },
        supports_check_mode=True,
    )
    rule = "letters, digits and hyphens, starting with a letter and ending with a letter or digit"
    if not valid_name(module.params["instance"]):
        module.fail_json(msg=f"Invalid instance name supplied: {module.params['instance']} ({rule})")
    if not valid_name(module.params["name"]):
        module.fail_json(msg=f'Invalid snapshot name: "{module.params["name"]}" ({rule})')
    runner = SnapshotModule(module)
    try:
        result = runner.run()
    except MultipassError as err:
        runner.fail(err.message, transient=err.transient, **err.to_dict())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
