"""The prompt templates: a sandboxed, immutable Jinja environment with a small allow-list of filters.

Payload values are inserted as text and never rendered again: ``{{ payload.x }}`` prints the value's characters,
whatever Jinja or shell syntax they hold. The environment has no loader (no ``include``/``import``/``extends``), no
globals but a bounded ``range``, none of Jinja's own filters (``attr``, ``format``, ``map`` ... are absent), no
``str.format`` and only a few methods of strings, mappings and lists. A render is bounded: output size
(:data:`OUTPUT_LIMIT`, else :class:`RenderError`), operations (attribute and item lookups, calls, filter calls, loop
items over payload lists and ``range``), wall time, and the sizes that ``*``, ``**``, ``join``, ``replace`` and
``indent`` may produce.
"""

from __future__ import annotations

import contextvars
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from typing import Any

from jinja2 import StrictUndefined, Template
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

OUTPUT_LIMIT = 256 * 1024  # bytes of the rendered prompt
TEMPLATE_LIMIT = 64 * 1024  # bytes of a template's source
MAX_OPERATIONS = 1_000_000
MAX_SECONDS = 2.0
MAX_RANGE = 10_000
MAX_DEPTH = 64  # nesting of the JSON payload
SHIPPED = ("alertmanager", "github-issue-comment", "github-issue-opened", "generic")

_METHODS: dict[type, frozenset[str]] = {
    str: frozenset(
        {"lower", "upper", "strip", "lstrip", "rstrip", "startswith", "endswith", "split", "splitlines", "title"}
        | {"capitalize", "count", "find", "isdigit", "isalpha", "isalnum", "isspace", "islower", "isupper"}
    ),
    dict: frozenset({"items", "keys", "values", "get"}),
    list: frozenset({"index", "count"}),
    tuple: frozenset({"index", "count"}),
}
_SCALARS = (int, float, bool, type(None))


class RenderError(SecurityError):
    """A render went over one of its bounds."""


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_OPERATIONS
        self.deadline = time.monotonic() + MAX_SECONDS

    def tick(self, n: int = 1) -> None:
        self.left -= n
        if self.left < 0:
            raise RenderError(f"the template used more than {MAX_OPERATIONS} operations")
        if self.left % 256 < n and time.monotonic() > self.deadline:
            raise RenderError(f"the template took more than {MAX_SECONDS:.0f} s")


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("webhook_render_budget", default=None)


def _tick(n: int = 1) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.tick(n)


class Items(list):  # type: ignore[type-arg]
    """A payload list: iterating it counts each item against the render's budget."""

    def __iter__(self) -> Iterator[Any]:
        for item in super().__iter__():
            _tick()
            yield item


def _bounded_range(*args: int) -> Iterator[int]:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise RenderError(f"range() of more than {MAX_RANGE} items")
    for i in rng:
        _tick()
        yield i


def _check_size(size: int, what: str) -> None:
    if size > OUTPUT_LIMIT:
        raise RenderError(f"{what} would make a text of more than {OUTPUT_LIMIT} characters")


class PromptEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%"})

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        for kind, allowed in _METHODS.items():
            if isinstance(obj, kind):
                return attr in allowed
        if isinstance(obj, _SCALARS):
            return False
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> None:
        return None  # str.format is refused by is_safe_attribute, never wrapped

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator == "%" and isinstance(left, str):
            raise SecurityError("string formatting with % is not available in prompt templates: use ~ or filters")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int):
                    _check_size(len(seq) * max(n, 0), "repeating a sequence")
        power = operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1
        if power and right * math.log2(abs(left)) > 4096:
            raise RenderError("a power of more than 4096 bits")
        return super().call_binop(context, operator, left, right)


# --- filters (each counts against the budget) ----------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises here
    return "" if value is None else str(value)


def _join(seq: Any, sep: str = "") -> str:
    parts = [_text(x) for x in seq]
    _check_size(sum(len(p) for p in parts) + len(sep) * max(len(parts) - 1, 0), "join")
    return sep.join(parts)


def _replace(value: Any, old: str, new: str, count: int = -1) -> str:
    text = _text(value)
    hits = text.count(old) if old else len(text) + 1
    hits = hits if count < 0 else min(hits, count)
    _check_size(len(text) + hits * (len(new) - len(old)), "replace")
    return text.replace(old, new, count)


def _truncate(value: Any, length: int = 255, end: str = "...") -> str:
    text = _text(value)
    return text if len(text) <= length else text[: max(length, 0)] + end


def _indent(value: Any, width: int = 4, first: bool = False) -> str:
    if not 0 <= width <= 64:
        raise RenderError("indent() takes a width of 0 to 64")
    lines = _text(value).splitlines(keepends=True)
    _check_size(sum(len(x) for x in lines) + width * len(lines), "indent")
    pad = " " * width
    return "".join((pad if (i or first) and line.strip() else "") + line for i, line in enumerate(lines))


def _tojson(value: Any, indent: int | None = None, limit: int = OUTPUT_LIMIT) -> str:
    if indent is not None and not 0 <= indent <= 8:
        raise RenderError("tojson() takes an indent of 0 to 8")
    text = json.dumps(value, indent=indent, ensure_ascii=False, sort_keys=True)
    if len(text) > limit:
        return text[:limit] + f"\n... (truncated: {len(text) - limit} more characters)"
    return text


def _dictsort(value: Mapping[Any, Any]) -> list[tuple[Any, Any]]:
    return sorted(value.items(), key=lambda kv: str(kv[0]))


def _default(value: Any, fallback: Any = "", boolean: bool = False) -> Any:
    if isinstance(value, Undefined) or (boolean and not value):
        return fallback
    return value


def _first(seq: Any) -> Any:
    return next(iter(seq), None)


def _last(seq: Any) -> Any:
    items = list(seq)
    return items[-1] if items else None


def _counted(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _tick()
        return fn(*args, **kwargs)

    return wrapper


FILTERS: dict[str, Callable[..., Any]] = {
    "default": _default,
    "d": _default,
    "length": len,
    "count": len,
    "lower": lambda v: _text(v).lower(),
    "upper": lambda v: _text(v).upper(),
    "title": lambda v: _text(v).title(),
    "capitalize": lambda v: _text(v).capitalize(),
    "trim": lambda v: _text(v).strip(),
    "string": _text,
    "int": lambda v, default=0: int(v) if isinstance(v, int | float) or str(v).strip().isdigit() else default,
    "abs": abs,
    "round": lambda v, n=0: round(v, n),
    "first": _first,
    "last": _last,
    "list": list,
    "sort": lambda seq, reverse=False: sorted(seq, key=str, reverse=reverse),
    "dictsort": _dictsort,
    "join": _join,
    "replace": _replace,
    "truncate": _truncate,
    "indent": _indent,
    "tojson": _tojson,
}


def environment() -> PromptEnvironment:
    env = PromptEnvironment(
        autoescape=False,
        undefined=StrictUndefined,
        loader=None,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=lambda v: "" if v is None else v,
    )
    env.filters = {name: _counted(fn) for name, fn in FILTERS.items()}
    env.globals = {"range": _bounded_range}
    return env


ENV = environment()


def compile_template(source: str) -> Template:
    """A template from its source (TemplateSyntaxError or ValueError when it cannot be one)."""
    if len(source.encode("utf-8", "replace")) > TEMPLATE_LIMIT:
        raise ValueError(f"the template is larger than {TEMPLATE_LIMIT} bytes")
    return ENV.from_string(source)


def shipped(name: str) -> str:
    """The source of a shipped template (``alertmanager``, ``github-issue-comment``, ...)."""
    return resources.files(__package__).joinpath("templates", f"{name}.j2").read_text(encoding="utf-8")


def items(value: Any, depth: int = 0) -> Any:
    """The parsed payload with its lists as :class:`Items`; ValueError when it is nested deeper than MAX_DEPTH."""
    if depth > MAX_DEPTH:
        raise ValueError(f"the JSON is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        return {k: items(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return Items(items(v, depth + 1) for v in value)
    return value


def render(template: Template, variables: Mapping[str, Any]) -> bytes:
    """The prompt (UTF-8) rendered from ``variables``; any failure or bound raises (the caller answers 422)."""
    token = _budget.set(_Budget())
    try:
        size = 0
        chunks: list[str] = []
        for chunk in template.generate(dict(variables)):
            size += len(chunk)
            if size > OUTPUT_LIMIT:
                raise RenderError(f"the prompt is longer than {OUTPUT_LIMIT} bytes")
            chunks.append(chunk)
    finally:
        _budget.reset(token)
    out = "".join(chunks).encode("utf-8", "replace")
    if len(out) > OUTPUT_LIMIT:
        raise RenderError(f"the prompt is longer than {OUTPUT_LIMIT} bytes")
    return out
