"""The inputs of one run, and the one table of run options shared by ``agentvm run``, ``agentvm submit``,
batch files, the Python API and the service.

Each option has one name (the batch key and the API field), one environment/make variable and one flag.
Values are data: they are parsed here (numbers and booleans strictly) and never templated or run by a shell.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from agentvm.errors import UsageError
from agentvm.settings import parse_bool, parse_int

KINDS = ("text", "positive", "bool", "path")


@dataclass(frozen=True)
class Option:
    name: str
    env: str
    kind: str
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def label(self) -> str:
        return f"{self.env} ({self.flag})"

    def parse(self, raw: Any) -> Any:
        """The typed value of ``raw`` (a string from a flag, the environment or a batch file)."""
        if raw is None:
            return None
        if self.kind == "positive":
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise UsageError(f"{self.label} must be a positive whole number, got {raw!r}")
            return parse_int(self.label, str(raw), None)
        if self.kind == "bool":
            if isinstance(raw, bool):
                return raw
            return parse_bool(self.label, str(raw))
        if not isinstance(raw, str | int | float) or isinstance(raw, bool):
            raise UsageError(f"{self.label} must be text, got {type(raw).__name__}")
        text = str(raw)
        return text if text != "" else None


#: Every run option, in the order `agentvm run --help` lists them.
RUN_OPTIONS: tuple[Option, ...] = (
    Option("prompt_file", "PROMPT_FILE", "path", "read the prompt from this file (up to 10 MiB)"),
    Option("agent", "AGENT", "text", "claude (default), gemini, codex, opencode, crush or custom"),
    Option(
        "agent_command",
        "AGENT_COMMAND",
        "text",
        "for custom: the command run in the VM ({prompt_file} = the prompt's path)",
    ),
    Option(
        "agent_credentials",
        "AGENT_CREDENTIALS",
        "text",
        "for custom: comma-separated variables delivered as credentials",
    ),
    Option("model", "MODEL", "text", "the model, for agents that take one"),
    Option("max_turns", "MAX_TURNS", "positive", "the agent's turn limit, where it has one"),
    Option("timeout", "TIMEOUT", "positive", "the agent's wall-clock limit in seconds (default 1800)"),
    Option("workspace", "WORKSPACE", "path", "a host folder copied into ~/workspace (never written back)"),
    Option("keep", "KEEP", "bool", "keep the VM after the run"),
    Option("credentials", "CREDENTIALS", "text", "proxy (default: the key stays on the host) or direct"),
    Option("egress", "EGRESS", "text", "deny (default), open, or an allowlist: host1,*.domain2,host3:8443"),
    Option("connection", "CONNECTION", "text", "exec (default: multipass exec) or ssh (a per-run key, multiplexed)"),
)
BY_NAME = {o.name: o for o in RUN_OPTIONS}


@dataclass(frozen=True)
class RunInput:
    """What a caller asks of one run. ``None``: not given (the environment's value, else the default)."""

    prompt: bytes | None = None
    prompt_file: str | None = None
    agent: str | None = None
    agent_command: str | None = None
    agent_credentials: str | None = None
    model: str | None = None
    max_turns: int | None = None
    timeout: int | None = None
    workspace: str | None = None
    keep: bool | None = None
    credentials: str | None = None
    egress: str | None = None
    connection: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    trigger: Mapping[str, str | None] | None = None
    attempt: int | None = None

    def over(self, base: RunInput) -> RunInput:
        """This input's given values over ``base``'s (flags over the environment, an item over defaults).
        A prompt given here (text or file) replaces both of ``base``'s."""
        given = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) not in (None, {})}
        if self.prompt is not None or self.prompt_file is not None:
            base = replace(base, prompt=None, prompt_file=None)
        return replace(base, **given)


def from_env(env: Mapping[str, str]) -> RunInput:
    """The run inputs the environment (or make's variables) gives: PROMPT, PROMPT_FILE, AGENT, ..."""
    values: dict[str, Any] = {o.name: o.parse(env.get(o.env)) for o in RUN_OPTIONS}
    prompt = env.get("PROMPT")
    if prompt:
        values["prompt"] = prompt.encode("utf-8", errors="surrogateescape")
    return RunInput(**values)


def from_mapping(data: Mapping[str, Any], where: str) -> RunInput:
    """The run inputs of a batch item, a schedule or a request body: keys are the option names."""
    known = {"prompt", *BY_NAME, "labels"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key == "prompt":
            if raw is not None and not isinstance(raw, str):
                raise UsageError(f"{where}: prompt must be text")
            values["prompt"] = raw.encode("utf-8", errors="surrogateescape") if raw else None
        elif key == "labels":
            values["labels"] = _labels(raw, where)
        else:
            try:
                values[key] = BY_NAME[key].parse(raw)
            except UsageError as exc:
                raise UsageError(f"{where}: {exc}") from None
    return RunInput(**values)


LABEL_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
MAX_LABEL = 256


def _labels(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise UsageError(f"{where}: labels must be a mapping of text to text")
    for key, value in raw.items():
        if not LABEL_KEY.match(key) or len(value) > MAX_LABEL:
            raise UsageError(f"{where}: label {key[:40]!r} must be lower-case letters, digits, _.- (value at most 256)")
    return dict(raw)


def parse_labels(pairs: list[str] | None) -> dict[str, str]:
    """``KEY=VALUE`` flags (``--label``) as labels."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--label {pair[:40]!r} must be KEY=VALUE")
        out[key] = value
    return _labels(out, "--label")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add a flag per run option (``agentvm run``, ``agentvm submit``), and ``--label KEY=VALUE``."""
    parser.add_argument("--label", action="append", metavar="KEY=VALUE", help="a label recorded with the run")
    for option in RUN_OPTIONS:
        if option.kind == "bool":
            parser.add_argument(option.flag, action="store_true", default=None, help=f"{option.help} ({option.env}=1)")
        else:
            parser.add_argument(option.flag, metavar=option.env, help=f"{option.help} ({option.env})")


def from_args(args: argparse.Namespace) -> RunInput:
    """The run inputs given as flags (strings, parsed like the environment's)."""
    values = {o.name: o.parse(getattr(args, o.name)) for o in RUN_OPTIONS}
    return RunInput(**values, labels=parse_labels(getattr(args, "label", None)))
