"""The receiver's ASGI application, driven directly (no network): the order of the checks, the status of each
refusal, and that nothing is submitted unless every check passed. Runs are submitted to a fake that remembers ids
the way Temporal's REJECT_DUPLICATE does."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agentvm.service.webhook import app, auth, routes

SECRET = "a-long-enough-secret"
NOW = 1_800_000_000.0
ENV = {"HOOK_SECRET": SECRET, "AGENT": "custom", "AGENT_COMMAND": "cat"}
CHUNK = 64 * 1024


def route(path: str, **extra) -> dict:
    return {"path": path, "auth": "github", "secret_env": "HOOK_SECRET", "template": "generic", **extra}


TABLE = {
    "gh": route("/gh", delivery_id="X-GitHub-Delivery", max_body_bytes=1024 * 1024),
    "issues": route("/issues", template="github-issue-opened", events=["issues"], actions=["opened"]),
    "signed": route("/signed", auth="agentvm"),
    "alerts": route("/alerts", auth="bearer", template="alertmanager", delivery_id="alertmanager"),
    "off": route("/off", enabled=False),
    "slow": route("/slow", rate_limit="2/minute"),
    "broken": route("/broken", template="broken.j2"),
    "argv": route("/argv", options={"agent": "crush"}),
}


class FakeSubmit:
    def __init__(self) -> None:
        self.calls: list[tuple[object, str]] = []
        self.down = False

    async def __call__(self, spec, workflow_id: str) -> bool:
        if self.down:
            raise app.Unreachable("cannot reach the agentvm service at 127.0.0.1:1")
        created = workflow_id not in {w for _s, w in self.calls}
        self.calls.append((spec, workflow_id))
        return created


@pytest.fixture
def receiver(tmp_path: Path):
    (tmp_path / "broken.j2").write_text("{{ payload.missing.deeper }}")
    table = routes.parse({"routes": TABLE}, ENV, tmp_path)
    lines: list[str] = []
    clock = [0.0]
    rec = app.Receiver(
        routes=table, submit=FakeSubmit(), env=ENV, log=lines.append, wall=lambda: NOW, clock=lambda: clock[0]
    )
    rec.lines, rec.tick = lines, clock  # type: ignore[attr-defined]
    return rec


def post(receiver, path: str, body: bytes, headers: dict | None = None, method: str = "POST", declare: bool = True):
    """One request through the ASGI app; returns (status, headers, json body, bytes the app read)."""
    headers = {"content-type": "application/json", **(headers or {})}
    if declare:
        headers.setdefault("content-length", str(len(body)))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8788),
    }
    chunks = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)] or [b""]
    handed = 0
    sent: list[dict] = []

    async def receive():
        nonlocal handed
        if chunks:
            chunk = chunks.pop(0)
            handed += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app.application(receiver)(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, json.loads(data or b"null"), handed


def gh(body: bytes, delivery: str | None = "d-1", event: str = "issues") -> dict:
    headers = {"x-hub-signature-256": auth.sign_github(SECRET, body), "x-github-event": event}
    return {**headers, "x-github-delivery": delivery} if delivery else headers


BODY = json.dumps({"action": "opened", "issue": {"number": 7, "title": "T", "body": "B"}}).encode()


def test_a_valid_delivery_is_submitted_once(receiver):
    status, _h, data, _n = post(receiver, "/gh", BODY, gh(BODY))
    assert (status, data) == (202, {"run_id": "wh-gh-d-1", "created": True})
    status, _h, data, _n = post(receiver, "/gh", BODY, gh(BODY))  # GitHub's redelivery: the same delivery id
    assert (status, data) == (202, {"run_id": "wh-gh-d-1", "created": False})
    spec, wid = receiver.submit.calls[0]
    assert wid == "wh-gh-d-1" and spec.trigger == {"kind": "webhook", "name": "gh", "id": "d-1"}
    assert spec.agent == "custom" and b'"title": "T"' in spec.prompt
    assert receiver.lines[0] == "webhook gh delivery=d-1 status=202 run=wh-gh-d-1"
    assert SECRET not in "\n".join(receiver.lines) and '"title"' not in "\n".join(receiver.lines)


@pytest.mark.parametrize(
    ("path", "body", "headers", "method", "status", "message"),
    [
        ("/nope", BODY, gh(BODY), "POST", 404, "no such webhook route"),
        ("/gh", BODY, gh(BODY), "GET", 405, "only POST"),
        ("/off", BODY, gh(BODY), "POST", 403, "disabled"),
        ("/off", b"x", {}, "POST", 403, "disabled"),  # before the body or its signature matter
        ("/gh", b"x" * (2 * 1024 * 1024), {}, "POST", 413, "over this route's limit of 1048576 bytes"),
        ("/gh", BODY, {"content-length": "abc"}, "POST", 400, "Content-Length"),
        ("/gh", BODY, {}, "POST", 401, "no X-Hub-Signature-256"),
        ("/gh", BODY, {"x-hub-signature-256": auth.sign_github(SECRET, BODY + b" ")}, "POST", 401, "does not match"),
        (
            "/signed",
            BODY,
            {"x-agentvm-signature": auth.sign_agentvm(SECRET, BODY, int(NOW) - 301)},
            "POST",
            401,
            "replay window",
        ),
        ("/alerts", BODY, {"authorization": "Bearer wrong-token-wrong"}, "POST", 401, "token does not match"),
        (
            "/gh",
            b"a=1",
            {**gh(b"a=1"), "content-type": "application/x-www-form-urlencoded"},
            "POST",
            415,
            "application/json",
        ),
        ("/gh", b"not json", gh(b"not json"), "POST", 415, "not JSON"),
        ("/gh", b"\xff\xfe", gh(b"\xff\xfe"), "POST", 415, "not JSON"),
        ("/gh", b'{"x": NaN}', gh(b'{"x": NaN}'), "POST", 415, "NaN is not JSON"),
        ("/gh", b"[" * 100 + b"]" * 100, gh(b"[" * 100 + b"]" * 100), "POST", 415, "nested deeper than 64"),
        ("/gh", b"[" * 100000, gh(b"[" * 100000), "POST", 415, "not JSON"),
        ("/broken", BODY, gh(BODY), "POST", 422, "the template broken.j2 failed"),
        (
            "/argv",
            b'{"x": "' + b"y" * 200000 + b'"}',
            gh(b'{"x": "' + b"y" * 200000 + b'"}'),
            "POST",
            422,
            "takes the prompt as an argument",
        ),
    ],
)
def test_each_refusal_starts_nothing(receiver, path, body, headers, method, status, message):
    got, _h, data, _n = post(receiver, path, body, headers, method)
    assert (got, message in data["error"]) == (status, True), data
    assert receiver.submit.calls == []
    assert receiver.lines[-1].endswith(")") and f"status={status}" in receiver.lines[-1]
    assert len(data["error"]) < 300  # never the payload back at length


def test_an_oversized_body_is_not_read_past_the_limit(receiver):
    big = b"x" * (2 * 1024 * 1024)
    assert post(receiver, "/gh", big, {})[3] == 0  # declared too large: not read at all
    status, _h, _d, handed = post(receiver, "/gh", big, {}, declare=False)  # streamed: reading stops at the limit
    assert status == 413 and handed <= 1024 * 1024 + CHUNK


def test_ignored_deliveries_start_nothing_and_use_no_rate(receiver):
    ping = b'{"zen": "hi"}'
    assert post(receiver, "/gh", ping, gh(ping, event="ping"))[:3:2] == (200, {"ignored": "ping"})
    closed = json.dumps({"action": "closed"}).encode()
    status, _h, data, _n = post(receiver, "/issues", closed, gh(closed))
    assert status == 200 and "action 'closed'" in data["ignored"]
    status, _h, data, _n = post(receiver, "/issues", BODY, gh(BODY, event="push"))
    assert status == 200 and "event 'push'" in data["ignored"]
    assert receiver.submit.calls == []
    assert post(receiver, "/issues", BODY, gh(BODY))[0] == 202


def test_the_rate_limit_answers_429_with_retry_after(receiver):
    bodies = [json.dumps({"n": i}).encode() for i in range(4)]
    assert [post(receiver, "/slow", b, gh(b, delivery=None))[0] for b in bodies[:2]] == [202, 202]
    status, headers, data, _n = post(receiver, "/slow", bodies[2], gh(bodies[2], delivery=None))
    assert (status, headers["retry-after"], "rate limit" in data["error"]) == (429, "30", True)
    assert len(receiver.submit.calls) == 2
    receiver.tick[0] += 30  # half a minute later: one delivery's worth refilled
    assert post(receiver, "/slow", bodies[3], gh(bodies[3], delivery=None))[0] == 202
    # a bad signature takes no token: unauthenticated senders cannot use up the route's rate
    for _ in range(5):
        assert post(receiver, "/slow", bodies[0], {"x-hub-signature-256": "sha256=" + "0" * 64})[0] == 401


def test_service_unreachable_is_503_and_nothing_is_remembered(receiver):
    receiver.submit.down = True
    status, _h, data, _n = post(receiver, "/gh", BODY, gh(BODY))
    assert status == 503 and "cannot reach" in data["error"]
    receiver.submit.down = False
    assert post(receiver, "/gh", BODY, gh(BODY))[2] == {"run_id": "wh-gh-d-1", "created": True}


@pytest.mark.parametrize(
    ("delivery", "run_id"),
    [
        ("72d3162e-cc78-11e3-81ab-4c9367dc0958", "wh-gh-72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("../../etc/passwd", None),
        ("x" * 500, None),
        ("a b", None),
        (None, None),
    ],
)
def test_delivery_ids_become_valid_workflow_ids(receiver, delivery, run_id):
    data = post(receiver, "/gh", BODY, gh(BODY, delivery=delivery))[2]
    assert data["run_id"] == run_id if run_id else data["run_id"].startswith(("wh-gh-h-", "wh-gh-sha256-"))
    assert len(data["run_id"]) <= 200


def alert_group(starts: list[str], status: str = "firing") -> bytes:
    alerts = [{"status": "firing", "labels": {"alertname": "A"}, "startsAt": s} for s in starts]
    return json.dumps({"groupKey": '{}:{alertname="A"}', "status": status, "alerts": alerts}).encode()


def test_alertmanager_delivery_ids_follow_the_group_state(receiver):
    bearer = {"authorization": f"Bearer {SECRET}"}
    first = post(receiver, "/alerts", alert_group(["2026-01-01T00:00:00Z"]), bearer)[2]
    repeat = post(receiver, "/alerts", alert_group(["2026-01-01T00:00:00Z"]), bearer)[2]
    grown = post(receiver, "/alerts", alert_group(["2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"]), bearer)[2]
    resolved = post(receiver, "/alerts", alert_group(["2026-01-01T00:00:00Z"], "resolved"), bearer)[2]
    assert first["created"] and first["run_id"].startswith("wh-alerts-am-")
    assert repeat == {**first, "created": False}
    assert len({first["run_id"], grown["run_id"], resolved["run_id"]}) == 3


def test_signed_route_uses_the_delivery_header_else_the_body_hash(receiver):
    header = {"x-agentvm-signature": auth.sign_agentvm(SECRET, BODY, int(NOW))}
    with_id = post(receiver, "/signed", BODY, {**header, "x-agentvm-delivery": "job-42"})[2]
    hashed = post(receiver, "/signed", BODY, header)[2]
    again = post(receiver, "/signed", BODY, {"x-agentvm-signature": auth.sign_agentvm(SECRET, BODY, int(NOW) - 5)})[2]
    assert with_id["run_id"] == "wh-signed-job-42"
    assert hashed["run_id"].startswith("wh-signed-sha256-") and again == {**hashed, "created": False}
