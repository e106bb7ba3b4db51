#!/usr/bin/python
# Copyright (c) 2026 agentvm contributors
# Apache License 2.0 (see LICENSE)
from __future__ import annotations

import json
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.agentvm.multipass.plugins.module_utils.multipass import (
    MultipassCLI,
    MultipassError,
    RetryPolicy,
    normalize_instance,
    valid_name,
)

DOCUMENTATION = r"""
module: instance
short_description: Launch, clone, start, stop and delete Canonical Multipass instances
description:
  - Manages one Multipass instance through the C(multipass) CLI of the machine the module runs on
    (normally the controller; use C(delegate_to) with V(localhost)).
  - Idempotent; C(changed) is reported only when Multipass was asked to change something. In check mode
    only read-only C(multipass info) calls are made.
  - Failures carry Multipass's own error message.
  - The C(multipass) executable is found on C(PATH) unless O(multipass_bin) or the environment variable
    E(MULTIPASS_BIN) names another one.
version_added: 0.1.0
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
  name:
    description:
      - Name of the instance (letters, digits and hyphens, starting with a letter, ending with a letter or digit).
    type: str
    required: true
  state:
    description:
      - V(present) launches the instance if it does not exist; an existing instance is left in its state.
      - V(started) launches it if missing and starts it if it is not running.
      - V(stopped) launches it if missing and stops it if it is not stopped.
      - V(cloned) clones O(source) into O(name) if O(name) does not exist. The clone is left Stopped.
        Multipass clones only stopped sources; a running source is stopped first only when O(stop_source=true).
      - V(absent) deletes the instance (and purges it when O(purge=true)).
    type: str
    choices: [present, started, stopped, cloned, absent]
    default: present
  image:
    description:
      - Image to launch (for example V(24.04), V(noble), V(daily:devel) or a URL). Multipass's default
        (the latest LTS) when unset.
      - Used only when the instance is launched.
    type: str
  cpus:
    description: Number of CPUs at launch.
    type: int
  memory:
    description: Memory at launch, with a K, M or G suffix (for example V(2G)).
    type: str
  disk:
    description: Disk size at launch, with a K, M or G suffix (for example V(10G)).
    type: str
  cloud_init:
    description:
      - cloud-init user-data for the launch, as YAML text or a dictionary. It is streamed to
        C(multipass launch --cloud-init -), so no file is needed.
      - Multipass accepts only cloud-config content.
    type: raw
  source:
    description: Instance to clone when O(state=cloned).
    type: str
  stop_source:
    description:
      - With O(state=cloned), stop a running O(source) before cloning it. It is left stopped.
      - Without it, cloning a running source fails with Multipass's message.
    type: bool
    default: false
  purge:
    description:
      - With O(state=absent), purge the instance (C(multipass delete --purge)) so its name can be reused.
      - When V(false) the instance is only marked Deleted and keeps its name reserved.
    type: bool
    default: true
  force:
    description: Stop with C(multipass stop --force) (powers off, also a suspended instance).
    type: bool
    default: false
  timeout:
    description:
      - Seconds Multipass may take to launch or start the instance (passed as C(--timeout)), and the
        limit for stop, clone and delete.
    type: int
    default: 600
  runtime_information:
    description:
      - Return runtime details (CPUs, memory, disk, load, OS release) of a running instance. Multipass
        runs a command over SSH in the instance for that.
    type: bool
    default: true
  multipass_bin:
    description: Path or name of the C(multipass) executable.
    type: str
  retries:
    description:
      - How many times a transient Multipass failure (daemon unreachable; instance busy, for operations
        safe to repeat) is retried inside the module, with exponential backoff from one second.
      - V(0) turns the module's own retries off, for callers that retry the task themselves (the task's
        failure then carries C(transient)).
    type: int
    default: 3
    version_added: 0.2.0
notes:
  - Image, CPUs, memory, disk and cloud-init apply only when the instance is launched; an existing
    instance is not changed to match them.
seealso:
  - module: agentvm.multipass.instance_info
"""

EXAMPLES = r"""
- name: Launch a builder VM with cloud-init
  agentvm.multipass.instance:
    name: agentvm-golden
    image: "24.04"
    cpus: 2
    memory: 4G
    disk: 20G
    timeout: 1200
    cloud_init:
      package_update: true
      packages: [git, jq]
  delegate_to: localhost

- name: Stop the golden image so that it can be cloned
  agentvm.multipass.instance:
    name: agentvm-golden
    state: stopped
  delegate_to: localhost

- name: Clone it for a run
  agentvm.multipass.instance:
    name: agentvm-run-20261121t221500-3f9c
    state: cloned
    source: agentvm-golden
  delegate_to: localhost
  register: clone

- name: Start the clone
  agentvm.multipass.instance:
    name: "{{ clone.instance.name }}"
    state: started
  delegate_to: localhost

- name: Delete and purge it
  agentvm.multipass.instance:
    name: agentvm-run-20261121t221500-3f9c
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
instance:
  description: The instance after the task (empty when it is absent). In check mode, its state before the task.
  returned: always
  type: dict
  contains:
    name:
      description: Instance name.
      type: str
      sample: agentvm-golden
    state:
      description: Multipass state (V(Running), V(Stopped), V(Suspended), V(Deleted), ...).
      type: str
      sample: Running
    ipv4:
      description: IPv4 addresses, management address first; empty unless running.
      type: list
      elements: str
      sample: ["10.113.204.15"]
    release:
      description: The OS release (from inside the guest when running).
      type: str
      sample: Ubuntu 24.04.2 LTS
    image_hash:
      description: SHA-256 of the image the instance was launched from.
      type: str
    image_release:
      description: Release of the image, for example V(24.04 LTS).
      type: str
    cpus:
      description: CPU count, when running and runtime information was asked for.
      type: int
    memory:
      description: Total memory in bytes, when running and runtime information was asked for.
      type: int
    memory_used:
      description: Used memory in bytes, when running and runtime information was asked for.
      type: int
    disk:
      description: Total disk in bytes, when running and runtime information was asked for.
      type: int
    disk_used:
      description: Used disk in bytes, when running and runtime information was asked for.
      type: int
    load:
      description: Load averages, when running and runtime information was asked for.
      type: list
      elements: float
    snapshot_count:
      description: Number of snapshots (null on backends without snapshots).
      type: int
    mounts:
      description: Mounts as reported by Multipass, keyed by target path.
      type: dict
actions:
  description: The Multipass commands the task ran (or would run in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: [stop agentvm-golden, clone agentvm-golden agentvm-run-1]
transient:
  description: On failure, whether Multipass's error is a transient one (worth retrying the task).
  returned: failure
  type: bool
  version_added: 0.2.0
"""

RUNNING = ("Running",)
ABSENT = None


class PlanError(Exception):
    """The requested state cannot be reached from the current one."""


def plan(state: str, current: str | None, source_state: str | None = None, purge: bool = True) -> list[str]:
    """The Multipass operations that take the instance from ``current`` to ``state``, in order.

    ``current``/``source_state`` are Multipass states, ``None`` when the instance does not exist.
    Operations: ``launch``, ``start``, ``stop``, ``delete``, ``stop_source``, ``clone``.
    """
    if state == "absent":
        if current is ABSENT or (current == "Deleted" and not purge):
            return []
        return ["delete"]
    if current == "Deleted":
        raise PlanError("is deleted but not purged, so its name is reserved; purge it (state=absent, purge=true) first")
    if state == "cloned":
        if current is not ABSENT:
            return []
        if source_state is ABSENT:
            raise PlanError("cannot be cloned: the source instance does not exist")
        return ["clone"] if source_state == "Stopped" else ["stop_source", "clone"]
    steps = ["launch"] if current is ABSENT else []
    now = "Running" if current is ABSENT else current
    if state == "started" and now not in RUNNING:
        steps.append("start")
    elif state == "stopped" and now != "Stopped":
        steps.append("stop")
    return steps


def expected_state(state: str, current: str | None, purge: bool) -> str | None:
    """The state after the task (``None``: gone), for diffs and the returned info."""
    if state == "absent":
        return "Deleted" if current is not ABSENT and not purge else None
    if state == "started":
        return "Running"
    if state == "stopped":
        return "Stopped"
    if current is ABSENT:
        return "Stopped" if state == "cloned" else "Running"
    return current


def cloud_init_text(value: Any) -> str | None:
    """YAML text for ``--cloud-init -``; a dictionary becomes JSON, which is valid YAML."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return json.dumps(value, indent=2, sort_keys=True) + "\n"
    return str(value)


class InstanceModule:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params = module.params
        self.name: str = self.params["name"]
        self.cli = MultipassCLI(
            binary=self.params["multipass_bin"],
            timeout=120.0,
            retry=RetryPolicy(retries=module.params["retries"]),
            log=module.debug,
        )
        self.actions: list[str] = []

    def state_of(self, name: str) -> str | None:
        return self.cli.state(name)

    def run(self) -> dict[str, Any]:
        p = self.params
        state = p["state"]
        if state == "cloned" and p["source"] == self.name:
            self.fail("source and name must differ")
        current = self.state_of(self.name)
        source_state = self.state_of(p["source"]) if state == "cloned" and current is ABSENT else None
        try:
            steps = plan(state, current, source_state, p["purge"])
        except PlanError as err:
            subject = p["source"] if "source instance" in str(err) else self.name
            self.fail(f'instance "{subject}" {err}')
        if "stop_source" in steps and not p["stop_source"]:
            # Let Multipass refuse the running source with its own message; check mode can only predict it.
            steps.remove("stop_source")
            if self.module.check_mode:
                self.fail(
                    f'clone would fail: the source "{p["source"]}" is {source_state} and Multipass can only '
                    "clone stopped instances (set stop_source=true to stop it first)"
                )
        for step in steps:
            self.actions.append(self.describe(step))
            if not self.module.check_mode:
                self.apply(step)
        after = expected_state(state, current, p["purge"])
        return {
            "changed": bool(steps),
            "actions": self.actions,
            "diff": {"before": {"state": current or "absent"}, "after": {"state": after or "absent"}},
            "instance": self.describe_instance(current if self.module.check_mode else after),
        }

    def fail(self, msg: str, **extra: Any) -> None:
        self.module.fail_json(msg=msg, actions=self.actions, instance={}, **extra)

    def describe(self, step: str) -> str:
        p = self.params
        return {
            "launch": f"launch {self.name}",
            "start": f"start {self.name}",
            "stop": f"stop {self.name}",
            "delete": f"delete {'--purge ' if p['purge'] else ''}{self.name}",
            "stop_source": f"stop {p['source']}",
            "clone": f"clone {p['source']} {self.name}",
        }[step]

    def apply(self, step: str) -> None:
        p = self.params
        timeout = p["timeout"]
        if step == "launch":
            self.cli.launch(
                self.name,
                image=p["image"],
                cpus=p["cpus"],
                memory=p["memory"],
                disk=p["disk"],
                cloud_init=cloud_init_text(p["cloud_init"]),
                timeout=timeout,
            )
        elif step == "start":
            self.cli.start(self.name, timeout=timeout)
        elif step == "stop":
            self.cli.stop(self.name, force=p["force"], timeout=timeout)
        elif step == "delete":
            self.cli.delete(self.name, purge=p["purge"], timeout=timeout)
        elif step == "stop_source":
            self.cli.stop(p["source"], timeout=timeout)
        elif step == "clone":
            self.cli.clone(p["source"], self.name, timeout=timeout)

    def describe_instance(self, state: str | None) -> dict[str, Any]:
        if state is None:
            return {}
        runtime = self.params["runtime_information"] and state in RUNNING
        entry = self.cli.find(self.name, runtime=runtime)
        return normalize_instance(self.name, entry) if entry else {}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {
                "type": "str",
                "default": "present",
                "choices": ["present", "started", "stopped", "cloned", "absent"],
            },
            "image": {"type": "str"},
            "cpus": {"type": "int"},
            "memory": {"type": "str"},
            "disk": {"type": "str"},
            "cloud_init": {"type": "raw"},
            "source": {"type": "str"},
            "stop_source": {"type": "bool", "default": False},
            "purge": {"type": "bool", "default": True},
            "force": {"type": "bool", "default": False},
            "timeout": {"type": "int", "default": 600},
            "runtime_information": {"type": "bool", "default": True},
            "multipass_bin": {"type": "str"},
            "retries": {"type": "int", "default": 3},
        },
        required_if=[("state", "cloned", ["source"])],
        supports_check_mode=True,
    )
    name = module.params["name"]
    if not valid_name(name):
        module.fail_json(
            msg=f"Invalid instance name supplied: {name} (letters, digits and hyphens, starting with a "
            "letter and ending with a letter or digit)"
        )
    runner = InstanceModule(module)
    try:
        result = runner.run()
    except MultipassError as err:
        runner.fail(err.message, transient=err.transient, **err.to_dict())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
