"""examples/alertmanager: the Alertmanager receiver snippet and the agentvm webhook route it posts to."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from agentvm.service.submitcli import TRIGGER_OPTIONS, trigger_spec
from agentvm.service.webhook import routes as webhook_routes
from tests.unit.examples.lint import EXAMPLES, lint_problems, load

ROUTE_KEYS = set(webhook_routes.KEYS)
AUTH_KINDS = {"github", "agentvm", "bearer"}
TOKEN = "an-alertmanager-test-token-0123456789"


@pytest.mark.parametrize("name", ["alertmanager/alertmanager.yml", "alertmanager/routes.yml"])
def test_lint_clean(name: str) -> None:
    assert lint_problems(name) == []
    assert isinstance(load(name), dict)


def _agentvm_receiver() -> dict:
    config = load("alertmanager/alertmanager.yml")
    (receiver,) = [r for r in config["receivers"] if r["name"] == "agentvm"]
    (hook,) = receiver["webhook_configs"]
    return hook


def test_receiver_posts_with_a_bearer_token_file_and_no_inline_secret() -> None:
    hook = _agentvm_receiver()
    assert hook["url"] == "http://127.0.0.1:8788/hooks/alerts"
    assert hook["send_resolved"] is False
    assert isinstance(hook["max_alerts"], int) and hook["max_alerts"] > 0
    auth = hook["http_config"]["authorization"]
    assert auth["type"] == "Bearer"
    assert auth["credentials_file"].startswith("/")
    assert "credentials" not in auth  # the token is read from a file, never written in the config


def test_alertmanager_route_reaches_the_receiver() -> None:
    config = load("alertmanager/alertmanager.yml")
    names = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] in names
    assert {r["receiver"] for r in config["route"]["routes"]} <= names


def test_agentvm_route_matches_the_receiver_and_takes_only_known_keys() -> None:
    ((name, route),) = load("alertmanager/routes.yml")["routes"].items()
    assert name == "alerts"
    assert set(route) <= ROUTE_KEYS
    assert route["path"] == urlsplit(_agentvm_receiver()["url"]).path
    assert route["auth"] in AUTH_KINDS and route["auth"] == "bearer"
    assert route["secret_env"] == "AGENTVM_ALERTS_TOKEN"
    assert route["template"] == "alertmanager"
    assert route["delivery_id"] == "alertmanager"
    assert re.fullmatch(r"\d+/(second|minute|hour)", route["rate_limit"])
    assert route["rate_limit"] == "6/minute"


def test_route_options_are_run_options_agentvm_accepts() -> None:
    (route,) = load("alertmanager/routes.yml")["routes"].values()
    assert set(route["options"]) <= set(TRIGGER_OPTIONS)
    spec = trigger_spec(b"investigate", route["options"], {}, {"kind": "webhook", "name": "/hooks/alerts", "id": "x"})
    assert spec.agent == route["options"]["agent"]
    assert spec.timeout == int(route["options"]["timeout"])


def test_the_receiver_loads_the_routes_file() -> None:
    """The real routes loader of `agentvm webhook` accepts the example as it stands (the token from the env)."""
    loaded = webhook_routes.load(EXAMPLES / "alertmanager" / "routes.yml", {"AGENTVM_ALERTS_TOKEN": TOKEN})
    assert set(loaded) == {"/hooks/alerts"}
    with pytest.raises(Exception, match="AGENTVM_ALERTS_TOKEN"):
        webhook_routes.load(EXAMPLES / "alertmanager" / "routes.yml", {})
