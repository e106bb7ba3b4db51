"""A small emulation of Qt's QCommandLineParser as Multipass configures it.

Options may appear anywhere among the positional arguments, ``--`` ends option parsing, short
options can be bundled (``-vv``), ``--opt=value`` and ``--opt value`` both work, and the error texts
are Qt's own (``Unknown option 'x'.``, ``Unknown options: l, a.``, ``Missing value after '--name'.``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ParseError(Exception):
    """A Qt parse error; ``str(exc)`` is Qt's errorText()."""

    def __init__(self, text: str, unknown: bool = False) -> None:
        super().__init__(text)
        self.unknown = unknown


@dataclass(frozen=True)
class Option:
    names: tuple[str, ...]  # e.g. ("n", "name"); the first long name is the canonical key
    takes_value: bool = False

    @property
    def key(self) -> str:
        longs = [n for n in self.names if len(n) > 1]
        return longs[0] if longs else self.names[0]


GLOBAL_OPTIONS = (
    Option(("h", "help")),
    Option(("v", "verbose")),
)


@dataclass
class Parsed:
    values: dict[str, list[str]] = field(default_factory=dict)
    positionals: list[str] = field(default_factory=list)
    saw_double_dash: bool = False

    def is_set(self, key: str) -> bool:
        return key in self.values

    def value(self, key: str, default: str | None = None) -> str | None:
        vals = self.values.get(key)
        return vals[-1] if vals else default


def parse(args: list[str], options: tuple[Option, ...]) -> Parsed:
    table: dict[str, Option] = {}
    for opt in (*options, *GLOBAL_OPTIONS):
        for name in opt.names:
            table[name] = opt
    out = Parsed()
    unknown: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            out.saw_double_dash = True
            out.positionals.extend(args[i:])
            break
        if arg.startswith("--") and len(arg) > 2:
            i = _parse_long(arg, args, i, table, out, unknown)
        elif arg.startswith("-") and len(arg) > 1:
            i = _parse_short(arg, args, i, table, out, unknown)
        else:
            out.positionals.append(arg)
    if unknown:
        if len(unknown) == 1:
            raise ParseError(f"Unknown option '{unknown[0]}'.", unknown=True)
        raise ParseError(f"Unknown options: {', '.join(unknown)}.", unknown=True)
    return out


def _store(out: Parsed, opt: Option, value: str) -> None:
    out.values.setdefault(opt.key, []).append(value)


def _parse_long(arg: str, args: list[str], i: int, table: dict[str, Option], out: Parsed, unknown: list[str]) -> int:
    name, eq, inline = arg[2:].partition("=")
    opt = table.get(name) if len(name) > 1 else None
    if opt is None:
        unknown.append(name)
        return i
    if not opt.takes_value:
        _store(out, opt, "")
        return i
    if eq:
        _store(out, opt, inline)
        return i
    if i >= len(args):
        raise ParseError(f"Missing value after '{arg}'.")
    _store(out, opt, args[i])
    return i + 1


def _parse_short(arg: str, args: list[str], i: int, table: dict[str, Option], out: Parsed, unknown: list[str]) -> int:
    letters = arg[1:]
    for pos, letter in enumerate(letters):
        opt = table.get(letter)
        if opt is None:
            unknown.append(letter)
            continue
        if not opt.takes_value:
            _store(out, opt, "")
            continue
        rest = letters[pos + 1 :]
        if rest:
            _store(out, opt, rest[1:] if rest.startswith("=") else rest)
            return i
        if i >= len(args):
            raise ParseError(f"Missing value after '-{letter}'.")
        _store(out, opt, args[i])
        return i + 1
    return i
