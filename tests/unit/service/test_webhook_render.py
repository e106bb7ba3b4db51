"""The prompt templates' sandbox: payload values are text and are never rendered again; escapes to Python's
internals, files or processes fail; every render is bounded in output, operations and sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentvm.service.webhook import render

CANARY = Path("/tmp/agentvm-webhook-render-canary")


def run(source: str, payload=None, **extra) -> str:
    variables = {"payload": render.items(payload if payload is not None else {}), "route": "r", "delivery": "d"}
    variables.update(extra)
    return render.render(render.compile_template(source), variables).decode()


TRICKY = [
    "{{ '{{' }}7*7}}",
    "{{ 7*7 }}",
    "{% for x in range(10**9) %}x{% endfor %}",
    "{{ lookup('pipe', 'touch /tmp/agentvm-webhook-render-canary') }}",
    "$(touch /tmp/agentvm-webhook-render-canary) `touch /tmp/agentvm-webhook-render-canary`",
    "{% raw %}{{ x }}{% endraw %}",
    "\x00\x1b[31m red \u202e",
]


@pytest.mark.parametrize("value", TRICKY)
def test_payload_values_are_inserted_as_text(value):
    assert run("[{{ payload.v }}]", {"v": value}) == f"[{value}]"
    assert run("{{ payload | tojson }}", {"v": value}) == json.dumps({"v": value}, ensure_ascii=False)
    assert not CANARY.exists()


def test_a_label_holding_jinja_stays_literal():
    out = run(
        "{% for k, v in payload.labels | dictsort %}{{ k }}={{ v }};{% endfor %}", {"labels": {"a": "{{ '{{' }}7*7}}"}}
    )
    assert out == "a={{ '{{' }}7*7}};"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ ''.__class__ }}", "unsafe"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
        ("{{ payload.__init__.__globals__ }}", "unsafe"),
        ("{{ range.__globals__ }}", "unsafe"),
        ("{{ ''['__class__'] }}", "unsafe"),
        ("{{ 'x'.format }}", "unsafe"),
        ("{{ '{0.__class__}'.format(1) }}", "unsafe"),
        ("{{ '%s' % payload }}", "string formatting with %"),
        ("{{ '{x}'.format_map(payload) }}", "unsafe"),
        ("{{ (1).to_bytes(10**6, 'big') }}", "unsafe"),
        ("{{ payload.items.__self__ }}", "unsafe"),
        ("{{ payload.pop('a') }}", "unsafe"),
        ("{{ payload.update({}) }}", "unsafe"),
        ("{{ payload.list.append(1) }}", "unsafe"),
        ("{{ self.__dict__ }}", "unsafe"),
        ("{{ lookup('pipe', 'touch /tmp/agentvm-webhook-render-canary') }}", "'lookup' is undefined"),
        ("{{ cycler }}{{ joiner }}{{ namespace }}{{ lipsum }}{{ dict }}", "is undefined"),
        ("{% include '/etc/passwd' %}", "no loader"),
        ("{% import '/etc/passwd' as x %}", "no loader"),
        ("{% extends '/etc/passwd' %}", "no loader"),
        ("{{ payload.missing }}", "has no attribute 'missing'"),
        ("{{ payload.a.b.c }}", "'int object' has no attribute 'b'"),
        ("{% for x in range(10**9) %}{% endfor %}", "range() of more than 10000"),
        ("{% for x in range(100000) %}{% endfor %}", "range() of more than 10000"),
        ("{{ 'x' * (10**7) }}", "repeating a sequence"),
        ("{{ [1] * (10**7) }}", "repeating a sequence"),
        ("{{ 9 ** (10**6) }}", "a power of more than 4096 bits"),
        ("{{ 'x' * 200000 ~ 'y' * 200000 }}", "longer than"),
        ("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}", "operations"),
        ("{% for i in range(10000) %}{% for j in range(10000) %}{{ j }}{% endfor %}{% endfor %}", "longer than"),
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "recursion"),
        ("{{ payload.s | replace('a', payload.s) }}", "replace"),
        ("{{ payload.big | join(payload.s) }}", "join"),
        ("{{ payload.s | indent(1000) }}", "indent() takes a width of 0 to 64"),
        ("{{ 1 / 0 }}", "division by zero"),
    ],
)
def test_escapes_and_bombs_fail(source, message):
    payload = {"a": 1, "list": [1], "s": "a" * 2000, "big": ["x"] * 2000}
    with pytest.raises(Exception) as caught:
        run(source, payload)
    assert message in str(caught.value)
    assert not CANARY.exists()


def test_loops_over_payload_lists_count_against_the_budget():
    payload = {"xs": list(range(2000))}
    with pytest.raises(render.RenderError, match="operations"):
        run("{% for a in payload.xs %}{% for b in payload.xs %}{% endfor %}{% endfor %}", payload)
    assert run("{% for a in payload.xs %}{% endfor %}ok", payload) == "ok"


def test_output_is_bounded_and_a_big_value_within_it_passes_whole():
    big = "z" * (100 * 1024)
    assert run("{{ payload.v }}", {"v": big}) == big
    with pytest.raises(render.RenderError, match="longer than 262144 bytes"):
        run("{{ payload.v }}{{ payload.v }}{{ payload.v }}", {"v": big})
    multibyte = "é" * (140 * 1024)  # 140 Ki characters, 280 KiB of UTF-8
    with pytest.raises(render.RenderError, match="longer than"):
        run("{{ payload.v }}", {"v": multibyte})


def test_tojson_truncates_at_its_limit():
    out = run("{{ payload | tojson(limit=10) }}", {"v": "x" * 100})
    assert out.startswith('{"v": "xxx') and "(truncated: " in out


@pytest.mark.parametrize(
    ("source", "payload", "expected"),
    [
        ("{{ payload.x | default('none') }}", {}, "none"),
        ("{{ payload.get('x') | default('none', true) }}", {"x": ""}, "none"),
        ("{{ payload.get('x') }}", {}, ""),
        ("{{ payload.n | string | upper }}", {"n": "ab"}, "AB"),
        ("{{ payload.xs | join(', ') }}", {"xs": ["a", "b"]}, "a, b"),
        ("{{ payload.xs | length }}", {"xs": [1, 2, 3]}, "3"),
        ("{{ payload.xs | first }}-{{ payload.xs | last }}", {"xs": [1, 2, 3]}, "1-3"),
        ("{{ payload.s | truncate(3) }}", {"s": "abcdef"}, "abc..."),
        ("{{ payload.s | indent(2) }}", {"s": "a\nb"}, "a\n  b"),
        ("{{ payload.s.split(',') | sort | join }}", {"s": "b,a"}, "ab"),
        ("{% for k, v in payload.items() %}{{ k }}{% endfor %}", {"k": 1}, "k"),
        ("{{ payload.s.startswith('ab') }}", {"s": "abc"}, "True"),
        ("{% if payload.xs is sequence %}seq{% endif %}", {"xs": []}, "seq"),
        ("{{ payload.n | int + 1 }}", {"n": "41"}, "42"),
        ("{{ 2 ** 10 }} {{ 'ab' * 2 }}", {}, "1024 abab"),
        ("{{ loop_test }}", {}, None),
    ],
)
def test_the_allowed_filters_and_methods_work(source, payload, expected):
    if expected is None:
        with pytest.raises(Exception, match="undefined"):
            run(source, payload)
        return
    assert run(source, payload) == expected


def test_payload_nesting_is_bounded():
    deep: object = "x"
    for _ in range(render.MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(ValueError, match="nested deeper than 64"):
        render.items(deep)
    assert render.items({"a": [[1]]}) == {"a": [[1]]}


@pytest.mark.parametrize("name", render.SHIPPED)
def test_the_shipped_templates_compile_and_render_an_empty_object(name):
    render.render(
        render.compile_template(render.shipped(name)), {"payload": {}, "route": "r", "delivery": "d", "event": None}
    )


def test_the_shipped_templates_are_package_data():
    """pyproject.toml's package-data globs include every shipped template (an installed agentvm finds them)."""
    import tomllib

    from tests.conftest import REPO

    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["agentvm"]
    package = REPO / "src" / "agentvm"
    shipped = {p for g in globs for p in package.glob(g)}
    assert {package / "service" / "webhook" / "templates" / f"{n}.j2" for n in render.SHIPPED} <= shipped
