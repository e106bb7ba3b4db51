"""The routes file (``--routes FILE`` / ``AGENTVM_WEBHOOK_ROUTES``): read once at start, checked completely.

Every error names the route and the field, and says what is accepted; unknown keys are refused. Secrets are named
(``secret_env``) and read from the receiver's environment, never from the file; they are never printed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Template

from agentvm.errors import UsageError
from agentvm.service.webhook import auth, render

DEFAULT_MAX_BODY = 1024 * 1024
MAX_BODY_CAP = 16 * 1024 * 1024
MIN_SECRET = 16
MAX_FILE = 1024 * 1024
DELIVERY_HEADER = "x-agentvm-delivery"
PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
KEYS = (
    "path",
    "enabled",
    "auth",
    "secret_env",
    "template",
    "options",
    "max_body_bytes",
    "rate_limit",
    "delivery_id",
    "replay_window",
    "events",
    "actions",
)
_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{0,39}")
_PATH = re.compile(r"/[A-Za-z0-9._~/-]{0,200}")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_HEADER = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_RATE = re.compile(r"\s*(\d{1,7})\s*/\s*(second|minute|hour|day)s?\s*")
_WORD = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class Rate:
    count: int
    per: int  # seconds

    @property
    def per_second(self) -> float:
        return self.count / self.per


@dataclass(frozen=True)
class Route:
    name: str
    path: str
    auth: str
    secret: str = field(repr=False)
    template_name: str
    template: Template = field(repr=False)
    options: Mapping[str, Any]
    enabled: bool = True
    max_body_bytes: int = DEFAULT_MAX_BODY
    rate: Rate | None = None
    delivery_id: str | None = None  # None: X-Agentvm-Delivery, else the body's hash; "alertmanager"; a header
    replay_window: int = auth.DEFAULT_REPLAY_WINDOW
    events: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()


def parse_rate(text: str) -> Rate:
    match = _RATE.fullmatch(text)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"{text!r} is not N/second, N/minute, N/hour or N/day (N at least 1)")
    return Rate(int(match.group(1)), PERIODS[match.group(2)])


def _fail(name: str, key: str, text: str) -> UsageError:
    return UsageError(f"webhook route {name!r}, field {key}: {text}")


def _int(name: str, key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(name, key, f"must be a whole number from {low} to {high}, got {value!r}")
    return value


def _words(name: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and _WORD.fullmatch(v) for v in value):
        raise _fail(name, key, "must be a list of names (letters, digits, '.', '_', '-')")
    return tuple(value)


def _template(name: str, value: Any, base: Path) -> tuple[str, Template]:
    if not isinstance(value, str) or not value:
        raise _fail(name, "template", f"must be one of {', '.join(render.SHIPPED)} or the path of a template file")
    if value in render.SHIPPED:
        source = render.shipped(value)
    else:
        path = (Path(base) / value).expanduser()
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise _fail(
                name,
                "template",
                f"{value!r} is not a shipped template ({', '.join(render.SHIPPED)}) and {path}"
                f" cannot be read: {getattr(exc, 'strerror', None) or exc}",
            ) from None
    try:
        return value, render.compile_template(source)
    except Exception as exc:
        where = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        raise _fail(name, "template", f"{value}: {exc}{where}") from None


def _secret(name: str, value: Any, env: Mapping[str, str], enabled: bool) -> str:
    if not isinstance(value, str) or not _ENV.fullmatch(value):
        raise _fail(name, "secret_env", "must name an environment variable (the secret itself never goes here)")
    secret = env.get(value) or ""
    if enabled and len(secret) < MIN_SECRET:
        state = "is not set" if not secret else f"is shorter than {MIN_SECRET} characters"
        raise _fail(name, "secret_env", f"the variable {value} {state} in the receiver's environment")
    return secret


def _options(name: str, value: Any, env: Mapping[str, str]) -> Mapping[str, Any]:
    from agentvm.service import submitcli

    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(name, "options", "must be a mapping of run options (agent, timeout, workspace, ...)")
    try:  # every check `agentvm submit` makes, now rather than at the first delivery
        submitcli.trigger_spec(b"probe", value, env, {"kind": "webhook", "name": name, "id": None})
    except UsageError as exc:
        raise _fail(name, "options", str(exc)) from None
    return dict(value)


def _delivery(name: str, value: Any) -> str | None:
    if value is None or value == "alertmanager":
        return value
    if not isinstance(value, str) or not _HEADER.fullmatch(value):
        raise _fail(name, "delivery_id", "must be a header name (e.g. X-GitHub-Delivery) or alertmanager")
    return value.lower()


def route(name: Any, raw: Any, env: Mapping[str, str], base: Path) -> Route:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        hint = " (YAML reads on/off/yes/no as true/false: quote the name)" if isinstance(name, bool) else ""
        raise UsageError(f"webhook route name {name!r}: use 1 to 40 lower-case letters, digits, '.' or '-'{hint}")
    if not isinstance(raw, Mapping):
        raise UsageError(f"webhook route {name!r}: must be a mapping of {', '.join(KEYS)}")
    unknown = sorted(str(k) for k in set(raw) - set(KEYS))
    if unknown:
        raise _fail(name, ", ".join(unknown), f"unknown; a route takes {', '.join(KEYS)}")
    for key in ("path", "auth", "secret_env", "template"):
        if key not in raw:
            raise _fail(name, key, "is required")
    path = raw["path"]
    if not isinstance(path, str) or not _PATH.fullmatch(path) or "/../" in f"{path}/" or "//" in path:
        raise _fail(name, "path", f"must be an absolute URL path such as /hooks/{name}, got {path!r}")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _fail(name, "enabled", "must be true or false")
    if raw["auth"] not in auth.SCHEMES:
        raise _fail(name, "auth", f"must be one of {', '.join(auth.SCHEMES)}, got {raw['auth']!r}")
    rate = None
    if raw.get("rate_limit") is not None:
        try:
            rate = parse_rate(str(raw["rate_limit"]))
        except ValueError as exc:
            raise _fail(name, "rate_limit", str(exc)) from None
    template_name, template = _template(name, raw["template"], base)
    return Route(
        name=name,
        path=path,
        auth=raw["auth"],
        secret=_secret(name, raw["secret_env"], env, enabled),
        template_name=template_name,
        template=template,
        options=_options(name, raw.get("options"), env),
        enabled=enabled,
        max_body_bytes=_int(name, "max_body_bytes", raw.get("max_body_bytes", DEFAULT_MAX_BODY), 1, MAX_BODY_CAP),
        rate=rate,
        delivery_id=_delivery(name, raw.get("delivery_id")),
        replay_window=_int(name, "replay_window", raw.get("replay_window", auth.DEFAULT_REPLAY_WINDOW), 1, 86400),
        events=_words(name, "events", raw.get("events", [])),
        actions=_words(name, "actions", raw.get("actions", [])),
    )


def parse(data: Any, env: Mapping[str, str], base: Path) -> dict[str, Route]:
    """The routes by URL path, from the file's parsed YAML."""
    if not isinstance(data, Mapping) or set(data) != {"routes"}:
        raise UsageError("the webhook routes file must be a mapping with one key, routes (a mapping: name -> route)")
    if not isinstance(data["routes"], Mapping) or not data["routes"]:
        raise UsageError("routes: must be a non-empty mapping of route names to routes")
    by_path: dict[str, Route] = {}
    for name, raw in data["routes"].items():
        r = route(name, raw, env, base)
        if r.path in by_path:
            raise _fail(name, "path", f"{r.path} is already the path of route {by_path[r.path].name!r}")
        by_path[r.path] = r
    return by_path


def load(path: str | Path, env: Mapping[str, str]) -> dict[str, Route]:
    file = Path(path).expanduser()
    try:
        if file.stat().st_size > MAX_FILE:
            raise UsageError(f"the webhook routes file {file} is larger than {MAX_FILE} bytes")
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise UsageError(f"cannot read the webhook routes file {file}: {why}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"the webhook routes file {file} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse(data, env, file.parent)
