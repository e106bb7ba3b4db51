"""Defaults stated once: every role's argument spec agrees with its defaults/main.yml; the exit codes in
docs/run.md are the table in agentvm.errors."""

from __future__ import annotations

import re

import pytest
import yaml

from agentvm.errors import EXIT_MEANINGS
from tests.conftest import REPO

ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists())


def spec_options(role: str) -> dict[str, dict]:
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    options: dict[str, dict] = {}
    for entry in specs.values():
        options.update(entry.get("options") or {})
    return options


@pytest.mark.parametrize("role", ROLES)
def test_argument_spec_defaults_equal_role_defaults(role):
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    mismatched = {}
    for name, option in spec_options(role).items():
        if "default" not in option or name not in defaults:
            continue
        if isinstance(defaults[name], str) and "{{" in defaults[name]:
            continue  # computed at run time; the spec cannot state it
        if option["default"] != defaults[name]:
            mismatched[name] = (option["default"], defaults[name])
    assert mismatched == {}


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_documented_in_the_spec_and_prefixed(role):
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    assert all(name.startswith(role + "_") for name in defaults)
    assert set(defaults) <= set(spec_options(role)), set(defaults) - set(spec_options(role))


def test_docs_exit_code_table_is_the_code_table():
    text = (REPO / "docs" / "run.md").read_text()
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(m.group(1)) for m in re.finditer(r"^\| (\d+) \|", section, re.M)}
    assert documented == set(EXIT_MEANINGS)
