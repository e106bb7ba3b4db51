"""Agent profiles (``agents.yml``): how each agent CLI is run unattended and how its output is read."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentvm.errors import UsageError

PROFILES_FILE = Path(__file__).with_name("agents.yml")
ARGV_PROMPT_LIMIT = 100 * 1024
_PLACEHOLDER = re.compile(r"\{(prompt_file|prompt|max_turns|model)\}")


@dataclass(frozen=True)
class Profile:
    name: str
    binary: str | None
    argv: tuple[str, ...]
    prompt: str
    output: str
    credentials: tuple[str, ...]
    passthrough: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    def command(self, prompt_file: str, prompt: bytes, model: str | None, max_turns: int | None) -> list[str]:
        """The argv to run in the VM; items whose placeholder has no value are dropped."""
        values = {
            "prompt_file": prompt_file,
            "prompt": prompt.decode("utf-8", errors="surrogateescape") if self.prompt == "argv" else None,
            "model": model,
            "max_turns": None if max_turns is None else str(max_turns),
        }
        out = []
        for item in self.argv:
            names = _PLACEHOLDER.findall(item)
            if any(values[n] is None for n in names):
                continue
            out.append(_PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), item))
        return out


def load_profiles(path: Path = PROFILES_FILE) -> dict[str, dict[str, Any]]:
    return yaml.safe_load(path.read_text())


def get_profile(name: str, custom_command: str | None = None, custom_credentials: str | None = None) -> Profile:
    profiles = load_profiles()
    if name not in profiles:
        known = ", ".join(sorted(profiles))
        raise UsageError(f"unknown agent {name!r}: choose one of {known} (AGENT=...)")
    data = profiles[name]
    argv = tuple(data["argv"])
    credentials = tuple(data["credentials"])
    if name == "custom":
        if not custom_command:
            raise UsageError(
                "AGENT=custom needs AGENT_COMMAND='tool --flag {prompt_file}' (the command to run in the VM)"
            )
        try:
            argv = tuple(shlex.split(custom_command))
        except ValueError as exc:
            raise UsageError(f"AGENT_COMMAND cannot be split into arguments: {exc}") from None
        credentials = tuple(c for c in (custom_credentials or "").split(",") if c)
    return Profile(
        name=name,
        binary=data.get("binary") or (argv[0] if argv else None),
        argv=argv,
        prompt=data["prompt"],
        output=data["output"],
        credentials=credentials,
        passthrough=tuple(data.get("passthrough", ())),
        env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
    )
