"""What ``agentvm schedule add`` is told, checked before anything is created: the schedule's name, when it fires
(a cron expression, ``@every``, or ``--every``; a time zone), its overlap policy and its note.

Pure: no Temporal SDK. Every value is data, parsed strictly; a bad one raises UsageError with what to fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agentvm.errors import UsageError

ID_PREFIX = "agentvm-"
MAX_NAME = 48
MIN_EVERY = 1
MAX_EVERY = 10 * 366 * 86400
MAX_NOTE = 500

#: --overlap: what Temporal does when a run is due while the previous one still runs.
OVERLAP_POLICIES = ("skip", "buffer-one", "buffer-all", "cancel-other", "allow-all")
DEFAULT_OVERLAP = "skip"

#: Temporal's shorthand cron forms.
PREDEFINED = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")

_NAME_RE = re.compile(rf"^[a-z0-9]([a-z0-9-]{{0,{MAX_NAME - 2}}}[a-z0-9])?$")
_DURATION_RE = re.compile(r"^(?:\d+[smhd])+$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TZ_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True)
class Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    first_name: int = 0  # the number of names[0]


CRON_FIELDS = (
    Field("minute", 0, 59),
    Field("hour", 0, 23),
    Field("day of month", 1, 31),
    Field("month", 1, 12, MONTHS, 1),
    Field("day of week", 0, 7, DAYS, 0),  # 0 and 7: Sunday
)
CRON_HELP = (
    "five fields 'minute hour day-of-month month day-of-week' (each *, a number, a range a-b, a step */n or a-b/n,"
    " or a comma list; month and day names like jan or mon), @every DURATION, or one of " + ", ".join(PREDEFINED)
)


@dataclass(frozen=True)
class Times:
    """When a schedule fires: a cron expression (in ``timezone``, default UTC), or every ``every`` seconds."""

    cron: str | None = None
    every: int | None = None
    timezone: str | None = None

    def describe(self) -> str:
        if self.every is not None:
            return f"every {format_duration(self.every)}"
        return f"cron {self.cron} ({self.timezone or 'UTC'})"


def check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name or ""):
        raise UsageError(
            f"the schedule name {name!r} must be 1 to {MAX_NAME} lower-case letters, digits or '-', starting and"
            " ending with a letter or digit (for example nightly-review)"
        )
    return name


def schedule_id(name: str) -> str:
    """The Temporal schedule id of a schedule name (its runs' workflow ids start with it)."""
    return ID_PREFIX + check_name(name)


def name_of(schedule_id: str) -> str | None:
    """The name of one of agentvm's schedule ids, else None (a schedule someone else made)."""
    if not schedule_id.startswith(ID_PREFIX):
        return None
    name = schedule_id[len(ID_PREFIX) :]
    return name if _NAME_RE.fullmatch(name) else None


def parse_duration(text: str, what: str) -> int:
    """Whole seconds from ``90``, ``90s``, ``15m``, ``2h``, ``1d`` or ``1h30m``."""
    raw = (text or "").strip().lower()
    if raw.isdigit():
        seconds = int(raw)
    elif _DURATION_RE.fullmatch(raw):
        seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhd])", raw))
    else:
        raise UsageError(f"{what} {text!r} must be whole seconds or a duration like 90s, 15m, 2h, 1d or 1h30m")
    if not MIN_EVERY <= seconds <= MAX_EVERY:
        raise UsageError(f"{what} {text!r} must be between {MIN_EVERY} second and 10 years")
    return seconds


def format_duration(seconds: int) -> str:
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


def _value(token: str, field: Field) -> int:
    if token.isdigit():
        number = int(token)
    elif token.lower() in field.names:
        number = field.names.index(token.lower()) + field.first_name
    else:
        raise UsageError(f"{token!r} is not a valid {field.name}")
    if not field.low <= number <= field.high:
        raise UsageError(f"the {field.name} {number} is out of range ({field.low}-{field.high})")
    return number


def _check_item(item: str, field: Field) -> None:
    base, slash, step = item.partition("/")
    if slash and not (step.isdigit() and int(step) >= 1):
        raise UsageError(f"the step in {item!r} ({field.name}) must be a whole number of at least 1")
    if base == "*":
        return
    low, dash, high = base.partition("-")
    first = _value(low, field)
    if dash and _value(high, field) < first:
        raise UsageError(f"the range {base!r} ({field.name}) ends before it starts")


def check_cron(expression: str) -> str:
    """A cron expression Temporal accepts, normalised to single spaces; UsageError naming the bad part."""
    text = " ".join((expression or "").split())
    if not text or _CONTROL.search(expression) or len(text) > 200:
        raise UsageError(f"the cron expression {expression!r} is not valid: give {CRON_HELP}")
    if text.startswith("@"):
        if text.lower() in PREDEFINED:
            return text.lower()
        raise UsageError(f"the cron expression {expression!r} is not valid: give {CRON_HELP}")
    fields = text.split(" ")
    if len(fields) != len(CRON_FIELDS):
        raise UsageError(
            f"the cron expression {expression!r} has {len(fields)} field(s), not 5: give {CRON_HELP}"
            " (seconds are not supported: use --every for intervals)"
        )
    for value, field in zip(fields, CRON_FIELDS, strict=True):
        try:
            for item in value.split(","):
                _check_item(item, field)
        except UsageError as exc:
            raise UsageError(f"the cron expression {expression!r} is not valid: {exc}; give {CRON_HELP}") from None
    return text


def check_timezone(name: str) -> str:
    """An IANA time zone name known on this host (for example Europe/Paris)."""
    import zoneinfo

    if not _TZ_RE.fullmatch(name or "") or len(name) > 64:
        raise UsageError(f"the time zone {name!r} must be an IANA name such as UTC or Europe/Paris")
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise UsageError(f"the time zone {name!r} is not known (IANA names such as UTC or Europe/Paris)") from None
    return name


def times(cron: str | None, every: str | None, timezone: str | None) -> Times:
    """When the schedule fires, from --cron, --every and --timezone (exactly one of --cron and --every)."""
    if (cron is None) == (every is None):
        raise UsageError("give exactly one of --cron EXPRESSION and --every SECONDS")
    if every is not None or (cron or "").strip().lower().startswith("@every"):
        if timezone is not None:
            raise UsageError("--timezone applies to --cron expressions only, not to intervals")
        text = every if every is not None else (cron or "").strip()[len("@every") :].strip()
        return Times(every=parse_duration(text, "the interval" if every is None else "--every"))
    return Times(cron=check_cron(cron or ""), timezone=check_timezone(timezone) if timezone is not None else None)


def check_overlap(policy: str) -> str:
    if policy not in OVERLAP_POLICIES:
        raise UsageError(f"--overlap {policy!r}: choose one of {', '.join(OVERLAP_POLICIES)}")
    return policy


def check_note(note: str | None) -> str | None:
    if note is None:
        return None
    if _CONTROL.search(note) or len(note) > MAX_NOTE:
        raise UsageError(f"the note must be one line of at most {MAX_NOTE} characters")
    return note
