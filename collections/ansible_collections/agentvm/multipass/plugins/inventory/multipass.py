# Copyright (c) 2026 agentvm contributors
# Apache License 2.0 (see LICENSE)
from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.display import Display
from ansible.utils.unsafe_proxy import wrap_var

from ansible_collections.agentvm.multipass.plugins.module_utils.multipass import (
    STATES,
    DaemonAccessDeniedError,
    DaemonUnavailableError,
    MultipassCLI,
    MultipassError,
    NotAuthenticatedError,
    RetryPolicy,
    normalize_instance,
)

DOCUMENTATION = r"""
name: multipass
short_description: Canonical Multipass instances as inventory hosts
description:
  - Adds one host per Multipass instance, named like the instance, from C(multipass list --format json)
    and C(multipass info --format json).
  - Host variables are prefixed C(multipass_). By default each host is reached through the
    P(agentvm.multipass.multipass#connection) connection plugin; O(connection=ssh) sets SSH variables instead.
  - Values that come from Multipass are marked unsafe, so they are never templated.
  - The configuration file must be named C(multipass.yml), C(multipass.yaml), or end with C(.multipass.yml)
    or C(.multipass.yaml).
author: agentvm contributors
version_added: 0.1.0
extends_documentation_fragment:
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
options:
  plugin:
    description: The name of this plugin.
    type: string
    required: true
    choices: [agentvm.multipass.multipass]
  multipass_bin:
    description:
      - Path or name of the C(multipass) executable.
      - Defaults to E(MULTIPASS_BIN) when set, else C(multipass) on C(PATH).
    type: string
    env:
      - name: MULTIPASS_BIN
  name_prefix:
    description:
      - Only instances whose names start with this prefix become hosts.
      - May be a Jinja2 template, for example to read an environment variable with
        C(lookup('ansible.builtin.env', ...)).
    type: string
    default: ""
  name_regex:
    description:
      - Only instances whose names match this regular expression (Python C(re.search)) become hosts.
    type: string
  states:
    description:
      - Only instances in these states become hosts (V(Running), V(Stopped), V(Suspended), V(Deleted), ...).
      - When empty, every instance except V(Deleted) ones.
    type: list
    elements: string
    default: []
  runtime_information:
    description:
      - Query C(multipass info) with runtime information, which fills C(multipass_cpus),
        memory, disk and the OS release of running instances. Multipass runs a command over SSH in
        every running instance for that.
      - When V(false), C(--no-runtime-information) is used and those variables are V(null).
    type: boolean
    default: true
  connection:
    description:
      - How hosts are reached.
      - V(multipass) sets C(ansible_connection=agentvm.multipass.multipass) and C(ansible_host) to the
        instance name.
      - V(ssh) sets C(ansible_connection=ansible.builtin.ssh), C(ansible_host) to the first IPv4 address
        and C(ansible_user) to O(ssh_user); the key in O(ssh_private_key_file) must be authorised in the guest
        (for example through cloud-init).
      - V(none) sets no connection variables.
      - Anything set here can be overridden with O(compose).
    type: string
    choices: [multipass, ssh, none]
    default: multipass
  ssh_user:
    description: The login user in O(connection=ssh) mode.
    type: string
    default: ubuntu
  ssh_private_key_file:
    description: Private key for O(connection=ssh) mode (C(ansible_ssh_private_key_file)).
    type: path
  ssh_common_args:
    description: Extra SSH arguments for O(connection=ssh) mode (C(ansible_ssh_common_args)).
    type: string
  timeout:
    description: Seconds one C(multipass) call may take.
    type: integer
    default: 120
  retries:
    description: How many times transient failures (daemon socket unreachable, ...) are retried.
    type: integer
    default: 3
"""

EXAMPLES = r"""
---
# inventory/multipass.yml: instances named agentvm-*, grouped by state
plugin: agentvm.multipass.multipass
name_prefix: agentvm-
keyed_groups:
  - key: multipass_state | lower
    prefix: state

---
# dev.multipass.yml: running instances only, prefix from the environment, a group per release
plugin: agentvm.multipass.multipass
name_prefix: "{{ lookup('ansible.builtin.env', 'AGENTVM_PREFIX', default='agentvm') }}-"
states: [Running]
keyed_groups:
  - key: multipass_image_release | regex_replace('[^0-9]', '')
    prefix: ubuntu
groups:
  big: (multipass_memory | default(0, true)) > 4 * 1024 * 1024 * 1024
compose:
  ansible_multipass_allow_start: multipass_state != 'Stopped' or 'builder' in inventory_hostname

---
# ssh.multipass.yml: reach running instances over SSH with a key baked into the image
plugin: agentvm.multipass.multipass
states: [Running]
connection: ssh
ssh_private_key_file: ~/.ssh/agentvm_ed25519
ssh_common_args: -o StrictHostKeyChecking=accept-new

---
# cached.multipass.yml: cache Multipass's answers for five minutes
plugin: agentvm.multipass.multipass
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: .cache/inventory
cache_timeout: 300
"""

display = Display()

CONNECTION_PLUGIN = "agentvm.multipass.multipass"


def instance_hostvars(record: dict[str, Any]) -> dict[str, Any]:
    """The ``multipass_*`` host variables of one normalised instance record."""
    return {
        "multipass_name": record["name"],
        "multipass_state": record["state"],
        "multipass_ipv4": record["ipv4"],
        "multipass_release": record["release"],
        "multipass_image_hash": record["image_hash"],
        "multipass_image_release": record["image_release"],
        "multipass_cpus": record["cpus"],
        "multipass_memory": record["memory"],
        "multipass_disk": record["disk"],
        "multipass_snapshot_count": record["snapshot_count"],
    }


def connection_hostvars(record: dict[str, Any], mode: str, ssh: dict[str, Any]) -> dict[str, Any]:
    """``ansible_*`` variables for the chosen connection mode."""
    if mode == "multipass":
        return {"ansible_connection": CONNECTION_PLUGIN, "ansible_host": record["name"]}
    if mode == "ssh":
        hostvars: dict[str, Any] = {
            "ansible_connection": "ansible.builtin.ssh",
            "ansible_host": record["ipv4"][0] if record["ipv4"] else record["name"],
            "ansible_user": ssh["user"],
        }
        if ssh.get("private_key_file"):
            hostvars["ansible_ssh_private_key_file"] = ssh["private_key_file"]
        if ssh.get("common_args"):
            hostvars["ansible_ssh_common_args"] = ssh["common_args"]
        return hostvars
    return {}


def select_instances(
    listed: Iterable[dict[str, Any]], prefix: str = "", regex: str | None = None, states: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Apply the name and state filters to ``multipass list`` entries."""
    pattern = re.compile(regex) if regex else None
    wanted = {s.lower() for s in states}
    selected = []
    for entry in listed:
        name, state = entry["name"], entry["state"]
        if prefix and not name.startswith(prefix):
            continue
        if pattern and not pattern.search(name):
            continue
        if wanted and state.lower() not in wanted:
            continue
        if not wanted and state == "Deleted":
            continue
        selected.append(entry)
    return selected


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    """Hosts from ``multipass list``/``multipass info``."""

    NAME = "agentvm.multipass.multipass"

    def verify_file(self, path: str) -> bool:
        if not super().verify_file(path):
            return False
        base = os.path.basename(path)
        if base in ("multipass.yml", "multipass.yaml") or base.endswith((".multipass.yml", ".multipass.yaml")):
            return True
        display.vvv(f"Skipping {path}: the name must be multipass.y(a)ml or end with .multipass.y(a)ml")
        return False

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        self._validate_states()

        cache_key = self.get_cache_key(path)
        use_cache = bool(self.get_option("cache")) and cache
        update_cache = bool(self.get_option("cache")) and not cache
        data: dict[str, Any] | None = None
        if use_cache:
            try:
                data = self._cache[cache_key]
            except KeyError:
                update_cache = True
        if data is None:
            data = self._query()
        if update_cache:
            self._cache[cache_key] = data
        self._populate(data)

    # -- querying Multipass -----------------------------------------------------------------------

    def _validate_states(self) -> None:
        known = {s.lower() for s in STATES}
        unknown = [s for s in self.get_option("states") or [] if str(s).lower() not in known]
        if unknown:
            raise AnsibleParserError(
                f"multipass inventory: unknown state(s) {', '.join(unknown)}; expected some of {', '.join(STATES)}"
            )

    def _name_prefix(self) -> str:
        prefix = self.get_option("name_prefix") or ""
        if prefix and self.templar.is_template(prefix):
            prefix = self.templar.template(prefix)
        return str(prefix)

    def _cli(self) -> MultipassCLI:
        return MultipassCLI(
            binary=self.get_option("multipass_bin") or None,
            timeout=float(self.get_option("timeout") or 0),
            retry=RetryPolicy(retries=int(self.get_option("retries"))),
            log=display.vvvv,
        )

    def _query(self) -> dict[str, Any]:
        """Multipass's raw answers for the selected instances (what the cache stores)."""
        cli = self._cli()
        try:
            listed = cli.list_instances()
            selected = select_instances(
                listed,
                prefix=self._name_prefix(),
                regex=self.get_option("name_regex"),
                states=self.get_option("states") or [],
            )
            names = [entry["name"] for entry in selected]
            info = cli.info_existing(names, runtime=bool(self.get_option("runtime_information")))
        except (DaemonUnavailableError, DaemonAccessDeniedError, NotAuthenticatedError) as err:
            raise AnsibleParserError(
                f"multipass inventory: the Multipass daemon cannot be reached: {err.message}"
            ) from err
        except MultipassError as err:
            raise AnsibleParserError(f"multipass inventory: {err.message}") from err
        return {"list": selected, "info": info}

    # -- building the inventory -------------------------------------------------------------------

    def _populate(self, data: dict[str, Any]) -> None:
        info = data.get("info") or {}
        strict = bool(self.get_option("strict"))
        mode = str(self.get_option("connection"))
        ssh = {
            "user": self.get_option("ssh_user"),
            "private_key_file": self.get_option("ssh_private_key_file"),
            "common_args": self.get_option("ssh_common_args"),
        }
        for listed in data.get("list") or []:
            name = listed["name"]
            if name not in info:
                continue  # deleted between list and info
            record = normalize_instance(name, info[name], listed)
            host = self.inventory.add_host(name)
            variables = {**instance_hostvars(record), **connection_hostvars(record, mode, ssh)}
            for key, value in variables.items():
                self.inventory.set_variable(host, key, wrap_var(value))
            hostvars = self.inventory.get_host(host).get_vars()
            self._set_composite_vars(self.get_option("compose"), hostvars, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), hostvars, host, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, host, strict=strict)
