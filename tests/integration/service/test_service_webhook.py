"""The webhook receiver end to end on the Multipass double: ``agentvm service`` with ``AGENTVM_WEBHOOK_ROUTES``
serves the routes on loopback (a real uvicorn server), deliveries start ``custom``-agent runs (``cat`` echoes the
prompt, so the record's result_text is the rendered template), redeliveries start nothing, and every refusal starts
nothing: the double's trace shows no new clone and Temporal lists no new workflow."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
from svc_helpers import AGENTVM, Proc, agentvm, free_port, record_of, temporal_list, text, wait_closed
from test_service_double import Service, host_a  # noqa: F401 - host_a is a fixture

from agentvm.service.webhook import render

pytestmark = [pytest.mark.double, pytest.mark.slow]

SECRETS = {
    "WH_GITHUB_SECRET": "gh-" + uuid.uuid4().hex,
    "WH_SIGNED_SECRET": "av-" + uuid.uuid4().hex,
    "WH_ALERT_TOKEN": "am-" + uuid.uuid4().hex,
}
CANARIES = [Path(f"/tmp/agentvm-canary-{uuid.uuid4().hex[:8]}-{i}") for i in range(3)]
ROUTES = """\
routes:
  gh:
    path: /hooks/github
    auth: github
    secret_env: WH_GITHUB_SECRET
    template: github-issue-comment
    delivery_id: X-GitHub-Delivery
    options: {agent_command: cat, label: {source: github}}
  signed:
    path: /hooks/signed
    auth: agentvm
    secret_env: WH_SIGNED_SECRET
    template: generic
    options: {agent_command: cat}
  alerts:
    path: /hooks/alertmanager
    auth: bearer
    secret_env: WH_ALERT_TOKEN
    template: alertmanager
    delivery_id: alertmanager
    options: {agent_command: cat}
  disabled:
    path: /hooks/off
    enabled: false
    auth: github
    secret_env: WH_GITHUB_SECRET
    template: generic
  slow:
    path: /hooks/slow
    auth: github
    secret_env: WH_GITHUB_SECRET
    template: needs-a-field.j2
    rate_limit: 1/hour
"""


@pytest.fixture(scope="module")
def hooked(host_a, tmp_path_factory):  # noqa: F811
    """`agentvm service` with the receiver on a free loopback port."""
    root = Path(host_a["AGENTVM_STATE_DIR"]).parent
    folder = tmp_path_factory.mktemp("routes")
    (folder / "routes.yml").write_text(ROUTES)
    (folder / "needs-a-field.j2").write_text("{{ payload.required_field }}")
    port = free_port()
    env = {
        **host_a,
        **SECRETS,
        "AGENTVM_WEBHOOK_ROUTES": str(folder / "routes.yml"),
        "AGENTVM_WEBHOOK_LISTEN": f"127.0.0.1:{port}",
    }
    svc = Service(env, root)
    svc.start()
    svc.proc.wait_output(f"webhook receiver on http://127.0.0.1:{port}", 60)
    svc.hook_port = port
    svc.routes = folder / "routes.yml"
    yield svc
    assert svc.proc.stop(signal.SIGTERM) == 0, svc.proc.output()[-3000:]
    assert "webhook receiver stopped" in svc.proc.output()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    log = svc.proc.output()
    assert not any(secret in log for secret in SECRETS.values())
    assert not any(c.exists() for c in CANARIES)


# --- HTTP on loopback, by hand (so a refused body can be sent the way real clients send it) --------------------


def request(port: int, path: str, body: bytes, headers: dict, *, expect: bool = False, chunked: bool = False):
    """POST; returns (status, headers, parsed JSON body). ``expect``: Expect: 100-continue, the body only after a
    100 (curl's way for large bodies); ``chunked``: no Content-Length, the body streamed from another thread."""
    head = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json", "Connection": "close", **headers}
    if chunked:
        head["Transfer-Encoding"] = "chunked"
    else:
        head.setdefault("Content-Length", str(len(body)))
    if expect:
        head["Expect"] = "100-continue"
    raw = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n"
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(raw.encode("latin-1"))

    def send_body() -> None:
        try:
            if chunked:
                for i in range(0, len(body), 65536):
                    part = body[i : i + 65536]
                    sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                sock.sendall(b"0\r\n\r\n")
            else:
                sock.sendall(body)
        except OSError:
            pass  # the server answered and closed before the whole body went: what a limit should do

    if expect:
        first = sock.recv(65536)
        if first.startswith(b"HTTP/1.1 100"):
            sender = threading.Thread(target=send_body, daemon=True)
            sender.start()
            first = first.split(b"\r\n\r\n", 1)[1]
        data = first
    else:
        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    sock.close()
    head_text, _, payload = data.partition(b"\r\n\r\n")
    lines = head_text.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    got = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, got, json.loads(payload) if payload else None


def github(body: bytes, delivery: str, secret: str = SECRETS["WH_GITHUB_SECRET"]) -> dict:
    mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={mac}", "X-GitHub-Delivery": delivery, "X-GitHub-Event": "issue_comment"}


def agentvm_sig(body: bytes, t: int) -> dict:
    mac = hmac.new(SECRETS["WH_SIGNED_SECRET"].encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Agentvm-Signature": f"t={t},v1={mac}"}


def clones(env: dict) -> int:
    trace = Path(env["MULTIPASS_DOUBLE_TRACE"])
    if not trace.exists():
        return 0
    return sum(json.loads(line)["argv"][1] == "clone" for line in trace.read_text().splitlines())


def workflows(svc: Service) -> set[str]:
    return {w["execution"]["workflowId"] for w in temporal_list(svc.address)}


COMMENT = {
    "action": "created",
    "issue": {"number": 14, "title": "Ways in", "state": "open", "body": "The plan asks for webhooks."},
    "comment": {"body": "Please add a test for {{ 7*7 }} and $(id).", "user": {"login": "octo"}},
    "repository": {"full_name": "example/agentvm"},
}


def test_a_signed_github_delivery_starts_one_run_whose_prompt_is_the_template(hooked, host_a):  # noqa: F811
    body = json.dumps(COMMENT).encode()
    delivery = str(uuid.uuid4())
    before = clones(host_a)
    status, _h, data = request(hooked.hook_port, "/hooks/github", body, github(body, delivery))
    assert (status, data) == (202, {"run_id": f"wh-gh-{delivery}", "created": True})
    status, _h, again = request(hooked.hook_port, "/hooks/github", body, github(body, delivery))
    assert (status, again) == (202, {"run_id": f"wh-gh-{delivery}", "created": False})

    env = hooked.client_env()
    assert wait_closed(env, data["run_id"], 600)["temporal_status"] == "COMPLETED"
    record = record_of(env, data["run_id"])
    expected = render.render(
        render.compile_template(render.shipped("github-issue-comment")),
        {"payload": render.items(COMMENT), "route": "gh", "delivery": delivery, "event": "issue_comment"},
    ).decode()
    assert record["status"] == "succeeded" and record["result_text"] == expected.strip()
    assert "Please add a test for {{ 7*7 }} and $(id)." in record["result_text"]
    assert record["trigger"] == {"kind": "webhook", "name": "gh", "id": delivery}
    assert record["labels"] == {"source": "github"}
    assert clones(host_a) == before + 1  # the redelivery cloned nothing
    assert f"webhook gh delivery={delivery} status=202 run=wh-gh-{delivery}" in hooked.proc.output()


def test_each_refusal_gets_its_status_and_starts_nothing(hooked, host_a):  # noqa: F811
    port = hooked.hook_port
    body = json.dumps(COMMENT).encode()
    big = json.dumps({"x": "y" * (2 * 1024 * 1024)}).encode()
    now = int(time.time())
    before_clones, before_runs = clones(host_a), workflows(hooked)
    cases = [
        ("bad signature", "/hooks/github", body, github(body, "d-bad", secret="not-the-secret-at-all"), {}, 401),
        ("unsigned", "/hooks/github", body, {"X-GitHub-Delivery": "d-none"}, {}, 401),
        ("old timestamp", "/hooks/signed", body, agentvm_sig(body, now - 3600), {}, 401),
        ("future timestamp", "/hooks/signed", body, agentvm_sig(body, now + 3600), {}, 401),
        ("wrong bearer", "/hooks/alertmanager", body, {"Authorization": "Bearer wrong-wrong-wrong"}, {}, 401),
        ("2 MiB, curl's Expect", "/hooks/github", big, github(big, "d-big1"), {"expect": True}, 413),
        ("2 MiB, streamed", "/hooks/github", big, github(big, "d-big2"), {"chunked": True}, 413),
        ("2 MiB, sent whole", "/hooks/github", big, github(big, "d-big3"), {}, 413),
        ("not JSON", "/hooks/github", b"action=created", github(b"action=created", "d-form"), {}, 415),
        (
            "form content type",
            "/hooks/github",
            body,
            {**github(body, "d-ct"), "Content-Type": "application/x-www-form-urlencoded"},
            {},
            415,
        ),
        ("disabled route", "/hooks/off", body, github(body, "d-off"), {}, 403),
        ("no such route", "/hooks/nope", body, github(body, "d-nope"), {}, 404),
        ("template error (takes the rate's one token)", "/hooks/slow", body, github(body, "d-s1"), {}, 422),
        ("rate limit", "/hooks/slow", body, github(body, "d-s2"), {}, 429),
    ]
    for what, path, payload, headers, how, expected in cases:
        status, got, data = request(port, path, payload, headers, **how)
        assert status == expected, (what, status, data)
        assert data is None or len(json.dumps(data)) < 400, what
        if expected == 429:
            assert int(got["retry-after"]) > 60
    time.sleep(3)  # a run that had been started would have been taken by the worker by now
    assert clones(host_a) == before_clones
    assert workflows(hooked) == before_runs
    assert not any(secret in hooked.proc.output() for secret in SECRETS.values())


def test_alert_values_holding_jinja_and_shell_stay_literal(hooked, host_a):  # noqa: F811
    jinja = f"{{{{ lookup('pipe','touch {CANARIES[0]}') }}}}"
    loop = "{% for x in range(3) %}loop{% endfor %}"
    shell = f"$(touch {CANARIES[1]}) `touch {CANARIES[2]}`; rm -rf ~"
    long_text = "lorem ipsum " * (100 * 1024 // 12)
    alert = {
        "status": "firing",
        "labels": {"alertname": "DiskFull", "instance": jinja, "job": loop, "cmd": shell},
        "annotations": {"summary": "disk almost full", "description": long_text},
        "startsAt": "2026-03-01T06:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=disk",
    }
    payload = {
        "version": "4",
        "groupKey": '{}:{alertname="DiskFull"}',
        "status": "firing",
        "receiver": "agentvm",
        "groupLabels": {"alertname": "DiskFull"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "truncatedAlerts": 0,
        "alerts": [
            alert,
            {**alert, "status": "resolved", "labels": {"alertname": "Old"}, "endsAt": "2026-03-01T05:00:00Z"},
        ],
    }
    body = json.dumps(payload).encode()
    assert len(body) > 100 * 1024
    token = {"Authorization": f"Bearer {SECRETS['WH_ALERT_TOKEN']}"}
    status, _h, data = request(hooked.hook_port, "/hooks/alertmanager", body, token)
    assert status == 202 and data["created"] and data["run_id"].startswith("wh-alerts-am-")
    # Alertmanager repeats the notification (repeat_interval): the same group state, the same run
    assert request(hooked.hook_port, "/hooks/alertmanager", body, token)[2] == {**data, "created": False}

    env = hooked.client_env()
    assert wait_closed(env, data["run_id"], 600)["temporal_status"] == "COMPLETED"
    text_out = record_of(env, data["run_id"])["result_text"]
    for value in (jinja, loop, shell, "disk almost full", "http://prometheus:9090/graph?g0.expr=disk"):
        assert value in text_out, value
    assert long_text.strip() in text_out and "looploop" not in text_out
    assert "Already resolved (for context only):\n  - Old" in text_out
    assert not any(c.exists() for c in CANARIES)


def test_agentvm_webhook_alone_serves_the_same_routes(hooked, tmp_path):
    port = free_port()
    env = {**hooked.client_env(), "AGENTVM_WEBHOOK_LISTEN": "127.0.0.1:1"}  # --listen wins over the variable
    receiver = Proc(
        [*AGENTVM, "webhook", "--routes", str(hooked.routes), "--listen", f"127.0.0.1:{port}"], env, tmp_path / "wh.log"
    )
    try:
        receiver.wait_output(f"webhook receiver on http://127.0.0.1:{port}", 60)
        body = json.dumps({"job": "nightly", "note": "{{ 7*7 }}"}).encode()
        t = int(time.time())
        status, _h, data = request(
            port, "/hooks/signed", body, {**agentvm_sig(body, t), "X-Agentvm-Delivery": "nightly-1"}
        )
        assert (status, data) == (202, {"run_id": "wh-signed-nightly-1", "created": True})
        assert wait_closed(hooked.client_env(), "wh-signed-nightly-1", 600)["temporal_status"] == "COMPLETED"
        assert '"note": "{{ 7*7 }}"' in record_of(hooked.client_env(), "wh-signed-nightly-1")["result_text"]
    finally:
        assert receiver.stop(signal.SIGTERM, timeout=30) == 0, receiver.output()
    assert "webhook receiver stopped" in receiver.output()


@pytest.mark.parametrize(
    ("routes", "env", "message"),
    [
        (
            "routes: {a: {path: /a, auth: github, secret_env: NOPE_NOT_SET, template: generic}}",
            {},
            "route 'a', field secret_env",
        ),
        ("routes: {a: {path: /a, auth: sha1, secret_env: X, template: generic}}", {}, "route 'a', field auth"),
        (
            "routes: {a: {path: /a, auth: bearer, secret_env: X, template: generic, surprise: 1}}",
            {},
            "field surprise: unknown",
        ),
    ],
)
def test_a_bad_routes_file_stops_the_service_before_it_starts(host_a, tmp_path, routes, env, message):  # noqa: F811
    (tmp_path / "routes.yml").write_text(routes)
    full = {**host_a, **env, "X": "x" * 20, "AGENTVM_WEBHOOK_ROUTES": str(tmp_path / "routes.yml")}
    full["AGENTVM_STATE_DIR"] = str(tmp_path / "state")
    for argv in (["service"], ["webhook"]):
        proc = agentvm(*argv, env=full, timeout=60)
        assert proc.returncode == 2 and message in text(proc), text(proc)
    assert not (tmp_path / "state" / "service" / "temporal.db").exists()


def test_a_delivery_while_the_service_is_down_is_503_and_starts_nothing(host_a, tmp_path):  # noqa: F811
    (tmp_path / "routes.yml").write_text(ROUTES.replace("needs-a-field.j2", "generic"))
    port = free_port()
    env = {**host_a, **SECRETS, "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}", "AGENTVM_STATE_DIR": str(tmp_path)}
    receiver = Proc(
        [*AGENTVM, "webhook", "--routes", str(tmp_path / "routes.yml"), "--listen", f"127.0.0.1:{port}"],
        env,
        tmp_path / "wh.log",
    )
    try:
        receiver.wait_output("webhook receiver on", 60)
        body = json.dumps(COMMENT).encode()
        status, _h, data = request(port, "/hooks/github", body, github(body, "d-down"))
        assert status == 503 and "cannot reach the Temporal cluster" in data["error"], data
    finally:
        assert receiver.stop(signal.SIGTERM, timeout=30) == 0, receiver.output()
    assert "status=503" in receiver.output() and SECRETS["WH_GITHUB_SECRET"] not in receiver.output()
