"""examples/alertmanager: the Alertmanager receiver snippet and the agentvm webhook route it posts to."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from agentvm.service.submitcli import TRIGGER_OPTIONS, trigger_spec
from tests.unit.examples.lint import lint_problems, load

# The webhook receiver's route-file keys (built on branch h-webhook) and its auth kinds.
ROUTE_KEYS = {
    "path",
    "enabled",
    "auth",
    "secret_env",
    "template",
    "options",
    "max_body_bytes",
    "rate_limit",
    "delivery_id",
}
AUTH_KINDS = {"github", "agentvm", "bearer"}


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
    (route,) = load("alertmanager/routes.yml")["routes"]
    assert set(route) <= ROUTE_KEYS
    assert route["path"] == urlsplit(_agentvm_receiver()["url"]).path
    assert route["auth"] in AUTH_KINDS and route["auth"] == "bearer"
    assert route["secret_env"] == "AGENTVM_ALERTS_TOKEN"
    assert route["template"] == "alertmanager"
    assert route["delivery_id"] == "alertmanager"
    assert re.fullmatch(r"\d+/(second|minute|hour)", route["rate_limit"])
    assert route["rate_limit"] == "6/minute"


def test_route_options_are_run_options_agentvm_accepts() -> None:
    (route,) = load("alertmanager/routes.yml")["routes"]
    assert set(route["options"]) <= set(TRIGGER_OPTIONS)
    spec = trigger_spec(b"investigate", route["options"], {}, {"kind": "webhook", "name": "/hooks/alerts", "id": "x"})
    assert spec.agent == route["options"]["agent"]
    assert spec.timeout == int(route["options"]["timeout"])
