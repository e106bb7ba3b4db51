"""Agent profiles (``agents.yml``): how each agent CLI is run unattended and how its output is read."""

from __future__ import annotations

import posixpath
import re
import shlex
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentvm.errors import UsageError

PROFILES_FILE = Path(__file__).with_name("agents.yml")
ARGV_PROMPT_LIMIT = 100 * 1024
_PLACEHOLDER = re.compile(r"\{(prompt_file|prompt|max_turns|model)\}")
CONFIG_FORMATS = ("json", "toml", "text")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ConfigFile:
    """A file agent-run.py writes in the agent's home before the agent starts (never on the host).

    ``content`` is a ``string.Template``: ``${VAR}`` is filled in the VM from, in this order, the run's own
    values (``AGENTVM_MODEL``, ``AGENTVM_MAX_TURNS`` when given), the agent's final environment, ``defaults``;
    ``$$`` is a literal ``$``. Values are escaped for ``format`` (inside a JSON or TOML string they cannot end
    it). ``when`` names a variable that must be set for the file to be written.
    """

    path: str
    format: str
    content: str
    defaults: dict[str, str] = field(default_factory=dict)
    when: str | None = None

    def spec(self, values: dict[str, str]) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "content": self.content,
            "defaults": dict(self.defaults),
            "values": values,
            "when": self.when,
        }


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
    config_files: tuple[ConfigFile, ...] = ()
    env_from: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def files(self, model: str | None, max_turns: int | None) -> list[dict[str, Any]]:
        """The config files for spec.json, with the run's own values (model, max turns) attached."""
        values = {}
        if model is not None:
            values["AGENTVM_MODEL"] = model
        if max_turns is not None:
            values["AGENTVM_MAX_TURNS"] = str(int(max_turns))
        return [c.spec(values) for c in self.config_files]

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


def _config_file(agent: str, data: dict[str, Any], credentials: tuple[str, ...]) -> ConfigFile:
    """One entry of a profile's ``config_files``, checked (a mistake here is a bug in agents.yml)."""
    path = str(data["path"])
    where = f"agents.yml: {agent}: config file {path!r}"
    if path.startswith("/") or posixpath.normpath(path) != path or path.split("/")[0] == "..":
        raise ValueError(f"{where}: the path must be relative to the agent's home, without '..'")
    if data.get("format") not in CONFIG_FORMATS:
        raise ValueError(f"{where}: format must be one of {', '.join(CONFIG_FORMATS)}")
    template = string.Template(str(data["content"]))
    if not template.is_valid():
        raise ValueError(f"{where}: a '$' that is neither ${{VAR}} nor $$")
    secret = set(template.get_identifiers()) & set(credentials)
    if secret:
        raise ValueError(f"{where}: never write a credential into a file ({', '.join(sorted(secret))})")
    return ConfigFile(
        path=path,
        format=data["format"],
        content=template.template,
        defaults={str(k): str(v) for k, v in (data.get("defaults") or {}).items()},
        when=data.get("when"),
    )


def _env_from(agent: str, data: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    out = {str(k): tuple(str(v) for v in vs) for k, vs in (data or {}).items()}
    for name in [*out, *(v for vs in out.values() for v in vs)]:
        if not _ENV_NAME.match(name):
            raise ValueError(f"agents.yml: {agent}: env_from: {name!r} is not a variable name")
    return out


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
        config_files=tuple(_config_file(name, c, credentials) for c in data.get("config_files") or ()),
        env_from=_env_from(name, data.get("env_from")),
    )
