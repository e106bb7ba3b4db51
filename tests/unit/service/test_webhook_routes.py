"""The webhook routes file: a valid file's routes, and a clear error (naming the route and field) for each mistake.
Secrets come from the environment only and never appear in an error or a route's repr."""

from __future__ import annotations

import pytest
import yaml

from agentvm.errors import UsageError
from agentvm.service.webhook import routes

SECRET = "a-long-enough-secret"
ENV = {"HOOK_SECRET": SECRET, "SHORT": "short"}


def base(**changes) -> dict:
    route = {"path": "/hooks/a", "auth": "github", "secret_env": "HOOK_SECRET", "template": "generic"}
    route.update(changes)
    return {k: v for k, v in route.items() if v is not None}


def parse(route: dict, name: str = "a", tmp_path=None) -> dict:
    return routes.parse({"routes": {name: route}}, ENV, tmp_path or ".")


def test_a_full_route(tmp_path):
    (tmp_path / "mine.j2").write_text("Hello {{ payload.get('who') }}")
    text = """
routes:
  alerts:
    path: /hooks/alerts
    auth: bearer
    secret_env: HOOK_SECRET
    template: alertmanager
    options: {agent: custom, agent_command: cat, timeout: 60, label: {team: ops}}
    max_body_bytes: 2048
    rate_limit: 10/minute
    delivery_id: alertmanager
  gh.comments:
    path: /hooks/github
    enabled: false
    auth: github
    secret_env: NOT_SET_BUT_DISABLED
    template: mine.j2
    delivery_id: X-GitHub-Delivery
    events: [issue_comment]
    actions: [created]
  signed:
    path: /hooks/signed
    auth: agentvm
    secret_env: HOOK_SECRET
    template: generic
    replay_window: 60
"""
    (tmp_path / "routes.yml").write_text(text)
    table = routes.load(tmp_path / "routes.yml", ENV)
    assert sorted(table) == ["/hooks/alerts", "/hooks/github", "/hooks/signed"]
    alerts = table["/hooks/alerts"]
    assert (alerts.name, alerts.auth, alerts.secret, alerts.max_body_bytes) == ("alerts", "bearer", SECRET, 2048)
    assert alerts.rate == routes.Rate(10, 60) and alerts.delivery_id == "alertmanager" and alerts.enabled
    assert alerts.options["agent"] == "custom"
    github = table["/hooks/github"]
    assert not github.enabled and github.secret == "" and github.delivery_id == "x-github-delivery"
    assert (github.events, github.actions, github.template_name) == (("issue_comment",), ("created",), "mine.j2")
    signed = table["/hooks/signed"]
    assert signed.replay_window == 60 and signed.rate is None and signed.max_body_bytes == 1024 * 1024
    assert SECRET not in repr(table)


@pytest.mark.parametrize(
    ("route", "name", "message"),
    [
        (base(bogus=1), "a", "route 'a', field bogus: unknown"),
        (base(secret="inline"), "a", "field secret: unknown"),
        (base(path=None), "a", "field path: is required"),
        (base(auth=None), "a", "field auth: is required"),
        (base(template=None), "a", "field template: is required"),
        (base(secret_env=None), "a", "field secret_env: is required"),
        (base(path="hooks/a"), "a", "field path: must be an absolute URL path"),
        (base(path="/hooks/../etc"), "a", "field path"),
        (base(path="/hooks//a"), "a", "field path"),
        (base(path="/hooks/a?x=1"), "a", "field path"),
        (base(auth="hmac"), "a", "field auth: must be one of github, agentvm, bearer"),
        (base(enabled="yes"), "a", "field enabled: must be true or false"),
        (base(secret_env="MISSING"), "a", "field secret_env: the variable MISSING is not set"),
        (base(secret_env="SHORT"), "a", "is shorter than 16 characters"),
        (base(secret_env="$(id)"), "a", "field secret_env: must name an environment variable"),
        (base(template="nonesuch"), "a", "field template: 'nonesuch' is not a shipped template"),
        (base(template=""), "a", "field template: must be one of alertmanager"),
        (base(max_body_bytes=0), "a", "field max_body_bytes: must be a whole number from 1"),
        (base(max_body_bytes="1M"), "a", "field max_body_bytes"),
        (base(max_body_bytes=10**9), "a", "field max_body_bytes"),
        (base(rate_limit="often"), "a", "field rate_limit: 'often' is not N/second"),
        (base(rate_limit="0/minute"), "a", "field rate_limit"),
        (base(rate_limit="5/fortnight"), "a", "field rate_limit"),
        (base(delivery_id="X GitHub"), "a", "field delivery_id: must be a header name"),
        (base(replay_window=0), "a", "field replay_window"),
        (base(events="issues"), "a", "field events: must be a list of names"),
        (base(actions=["$(x)"]), "a", "field actions"),
        (base(options=["agent"]), "a", "field options: must be a mapping"),
        (base(options={"bogus": 1}), "a", "field options: unknown run option(s) bogus"),
        (base(options={"timeout": "soon"}), "a", "field options: TIMEOUT must be a positive whole number"),
        (base(), "Bad_Name", "webhook route name 'Bad_Name'"),
        (base(), "", "webhook route name ''"),
        (base(), False, "webhook route name False: use 1 to 40 lower-case letters, digits, '.' or '-' (YAML reads"),
        ("not a mapping", "a", "webhook route 'a': must be a mapping"),
    ],
)
def test_each_mistake_is_named(route, name, message):
    with pytest.raises(UsageError) as caught:
        parse(route, name)
    assert message in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ payload.x | attr('y') }}", "No filter named 'attr'"),
        ("{{ payload | format('%s') }}", "No filter named 'format'"),
        ("{% include 'x' %}", ""),  # compiles; fails at render (no loader): see test_webhook_render
        ("{{ unclosed", "unexpected end of template"),
        ("{% for %}", "field template"),
        ("x" * (64 * 1024 + 1), "larger than 65536 bytes"),
    ],
)
def test_a_template_file_is_compiled_at_start(tmp_path, source, message):
    (tmp_path / "t.j2").write_text(source)
    if not message:
        parse(base(template="t.j2"), tmp_path=tmp_path)
        return
    with pytest.raises(UsageError) as caught:
        parse(base(template="t.j2"), tmp_path=tmp_path)
    assert "route 'a', field template" in str(caught.value) and message in str(caught.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "must be a mapping with one key, routes"),
        ({"routes": {}}, "non-empty mapping"),
        ({"routes": []}, "non-empty mapping"),
        ({"routes": {"a": base()}, "extra": 1}, "one key, routes"),
        ({"routes": {"a": base(), "b": base()}}, "route 'b', field path: /hooks/a is already the path of route 'a'"),
    ],
)
def test_the_file_shape(data, message):
    with pytest.raises(UsageError, match=None) as caught:
        routes.parse(data, ENV, ".")
    assert message in str(caught.value)


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(UsageError, match="cannot read the webhook routes file"):
        routes.load(tmp_path / "missing.yml", ENV)
    (tmp_path / "bad.yml").write_text("routes: [unclosed")
    with pytest.raises(UsageError, match="is not valid YAML"):
        routes.load(tmp_path / "bad.yml", ENV)
    (tmp_path / "tag.yml").write_text("routes: !!python/object/apply:os.system ['touch /tmp/never']")
    with pytest.raises(UsageError, match="is not valid YAML"):
        routes.load(tmp_path / "tag.yml", ENV)


@pytest.mark.parametrize(
    ("text", "rate"),
    [("10/minute", (10, 60)), ("1/second", (1, 1)), (" 5 / hours ", (5, 3600)), ("100/day", (100, 86400))],
)
def test_rates(text, rate):
    assert routes.parse_rate(text) == routes.Rate(*rate)


def test_the_example_file_in_the_docs_is_valid(tmp_path):
    """docs/triggers.md's routes file (its first yaml block) loads with its secrets set."""
    from tests.conftest import REPO

    doc = (REPO / "docs" / "triggers.md").read_text()
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    data = yaml.safe_load(block)
    env = {route["secret_env"]: SECRET for route in data["routes"].values()}
    table = routes.parse(data, env, REPO / "docs")
    assert len(table) == len(data["routes"])
