"""The forward (CONNECT / plain-HTTP) proxy on loopback: token, allowlist, refusals, what reaches the origin."""

from __future__ import annotations

import base64
import ipaddress
import json
import socket
import subprocess
import time

import pytest

from agentvm.host.isolation import Allowlist, parse_egress
from agentvm.host.proxy import CredentialProxy
from agentvm.host.proxy_forward import ForwardLimits, ForwardProxy
from agentvm.host.proxy_log import EgressLog
from tests.unit.host.servers import LoopThread

TOKEN = "agentvm-unit-token"


@pytest.fixture
def loop():
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def forward(loop, tmp_path, echo, origin):
    """A forward proxy allowing allowed.test (-> loopback, exempted for the test) on the servers' ports."""
    log = EgressLog(tmp_path / "egress.log")
    allow = Allowlist.parse(f"allowed.test:{echo.port},web.test:{origin.port},*.suffix.test:{echo.port}")
    proxy = ForwardProxy(
        allow,
        lambda t: t == TOKEN,
        log,
        hosts={"allowed.test": ["127.0.0.1"], "web.test": ["127.0.0.1"], "a.suffix.test": ["127.0.0.1"]},
        exempt_networks=[ipaddress.ip_network("127.0.0.0/8")],
        limits=ForwardLimits(max_request_body=1000),
    )
    port = loop.call(proxy.start("127.0.0.1"))
    proxy.port = port
    yield proxy
    loop.call(proxy.stop())
    log.close()


def basic(token, user="agentvm"):
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


def exchange(port, head: str, body: bytes = b"", then: bytes | None = None, read_all=True):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1") + body)
        data = b""
        if then is not None:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            sock.sendall(then)
            sock.shutdown(socket.SHUT_WR)
        while read_all:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def log_lines(proxy, at_least=1):
    """The log's lines, once there are ``at_least`` (a connection is logged just after it closes)."""
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in proxy.log.path.read_text().splitlines()]
        if len(lines) >= at_least or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)


def test_connect_tunnel_to_an_allowed_host(forward, echo):
    data = exchange(
        forward.port,
        f"CONNECT allowed.test:{echo.port} HTTP/1.1\r\nHost: allowed.test:{echo.port}\r\n"
        f"Proxy-Authorization: {basic(TOKEN)}\r\n\r\n",
        then=b"ping through the tunnel",
    )
    assert data.startswith(b"HTTP/1.1 200 Connection established\r\n\r\n")
    assert data.endswith(b"ping through the tunnel")
    (line,) = log_lines(forward)
    assert line["kind"] == "connect"
    assert (line["host"], line["port"], line["status"], line["decision"]) == ("allowed.test", echo.port, 200, "allowed")
    assert line["bytes_in"] > len(b"ping through the tunnel")
    assert line["path"] is None


def test_suffix_rule_and_bearer_token(forward, echo):
    data = exchange(
        forward.port,
        f"CONNECT A.Suffix.Test.:{echo.port} HTTP/1.1\r\nProxy-Authorization: Bearer {TOKEN}\r\n\r\n",
        then=b"x",
    )
    assert status_of(data) == 200


@pytest.mark.parametrize(
    "auth",
    [
        None,
        basic("wrong"),
        basic(TOKEN + "x"),
        "Basic " + base64.b64encode(TOKEN.encode()).decode(),  # no ':' - no password
        "Basic !!!notbase64",
        f"Digest {TOKEN}",
        f"Bearer {TOKEN.upper()}",
    ],
)
def test_connect_without_the_runs_token_gets_407(forward, echo, auth):
    header = f"Proxy-Authorization: {auth}\r\n" if auth else ""
    data = exchange(forward.port, f"CONNECT allowed.test:{echo.port} HTTP/1.1\r\n{header}\r\n")
    assert status_of(data) == 407
    assert b'Proxy-Authenticate: Basic realm="agentvm"' in data
    assert log_lines(forward)[-1]["decision"] == "unauthorized"
    assert forward.log.counters().unauthorized == 1


def test_two_authorization_headers_are_refused(forward, echo):
    auth = f"Proxy-Authorization: {basic(TOKEN)}\r\n"
    data = exchange(forward.port, f"CONNECT allowed.test:{echo.port} HTTP/1.1\r\n{auth}{auth}\r\n")
    assert status_of(data) == 407


@pytest.mark.parametrize(
    "target",
    [
        "denied.test:443",
        "allowed.test:443",  # listed with another port only
        "allowed.test.evil.test:{port}",
        "evil.allowed.test:{port}",
        "127.0.0.1:{port}",  # an IP literal is not the name in the rule
        "[::1]:{port}",
    ],
)
def test_connect_to_a_host_not_listed_gets_403_and_a_log_line(forward, echo, target):
    target = target.format(port=echo.port)
    data = exchange(forward.port, f"CONNECT {target} HTTP/1.1\r\nProxy-Authorization: {basic(TOKEN)}\r\n\r\n")
    assert status_of(data) == 403
    body = data.split(b"\r\n\r\n", 1)[1]
    assert body.count(b"\n") == 1
    assert b"not allowed for this run" in body
    line = log_lines(forward)[-1]
    assert (line["status"], line["decision"], line["method"]) == (403, "denied", "CONNECT")
    assert forward.log.counters().denied == 1


def test_plain_http_forward_sends_the_checked_host_and_closes(forward, origin):
    body = b'{"a":1}'
    data = exchange(
        forward.port,
        f"POST http://web.test:{origin.port}/p/q?token=abc HTTP/1.1\r\nHost: evil.test\r\n"
        f"Proxy-Authorization: {basic(TOKEN)}\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\n"
        f"Keep-Alive: 300\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\nContent-Length: {len(body)}\r\n\r\n",
        body + b"GET http://evil.test/ HTTP/1.1\r\n\r\n",  # a pipelined second request must never be sent
    )
    assert status_of(data) == 200
    (head,) = origin.heads
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /p/q?token=abc HTTP/1.1"
    headers = [line.split(":", 1)[0].lower() for line in lines[1:] if line]
    assert f"Host: web.test:{origin.port}" in lines
    assert "Connection: close" in lines
    assert "X-Kept: yes" in lines
    for name in ("proxy-authorization", "x-private", "keep-alive", "proxy-connection"):
        assert name not in headers
    assert headers.count("host") == 1
    assert origin.bodies == [body]
    line = log_lines(forward)[-1]
    assert (line["kind"], line["path"], line["status"], line["decision"]) == ("http", "/p/q", 200, "allowed")


@pytest.mark.parametrize(
    ("head", "status"),
    [
        ("GET / HTTP/1.1\r\nHost: web.test\r\n", 400),  # origin-form: not a proxy request
        ("GET https://web.test/ HTTP/1.1\r\n", 400),  # https must use CONNECT
        ("GET http://user@web.test:{port}/ HTTP/1.1\r\n", 400),
        ("POST http://web.test:{port}/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n", 411),
        ("POST http://web.test:{port}/ HTTP/1.1\r\nContent-Length: 1001\r\n", 413),
        ("POST http://web.test:{port}/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n", 400),
        ("GET http://web.test/ HTTP/1.1\r\n", 403),  # port 80 is not the listed port
        ("CONNECT allowed.test HTTP/1.1\r\n", 400),
        ("get http://web.test:{port}/ HTTP/1.1\r\n", 400),
        ("GET http://web.test:{port}/ HTTP/2.0\r\n", 400),
        ("GET http://web.test:{port}/\x01 HTTP/1.1\r\n", 400),
        ("GET http://web.test:{port}/ HTTP/1.1\r\n folded: header\r\n", 400),
    ],
)
def test_malformed_or_unsupported_requests(forward, origin, head, status):
    head = head.format(port=origin.port) + f"Proxy-Authorization: {basic(TOKEN)}\r\n\r\n"
    assert status_of(exchange(forward.port, head)) == status
    assert origin.heads == []


def test_oversized_head_gets_431(forward):
    head = "GET http://web.test/ HTTP/1.1\r\n" + "X-Pad: " + "a" * 40000 + "\r\n\r\n"
    assert status_of(exchange(forward.port, head)) == 431


@pytest.fixture
def host_address():
    """A non-loopback address of this host, if it has one."""
    out = subprocess.run(["ip", "-json", "-4", "address", "show"], capture_output=True, text=True, check=False)
    for link in json.loads(out.stdout or "[]"):
        for info in link.get("addr_info", []):
            if not info["local"].startswith("127."):
                return info["local"]
    pytest.skip("no non-loopback IPv4 address on this host")


@pytest.mark.parametrize(
    ("addresses", "reason"),
    [
        (["127.0.0.1"], "loopback"),
        (["169.254.169.254"], "link-local"),
        (["0.0.0.0"], "unspecified"),
        (["224.0.0.1"], "multicast"),
        (["240.0.0.1"], "reserved"),
        (["::ffff:127.0.0.1"], "loopback"),
        (["HOST"], "an address of this host"),
        (["10.99.0.5"], "the run VMs' network"),
    ],
)
def test_allowed_names_never_lead_to_forbidden_addresses(tmp_path, host_address, addresses, reason):
    addresses = [host_address if a == "HOST" else a for a in addresses]
    proxy = CredentialProxy.start(
        "127.0.0.1",
        [],
        egress=parse_egress("inside.test"),
        hosts={"inside.test": addresses},
        blocked_networks=["10.99.0.0/24"],
        log_path=tmp_path / "egress.log",
    )
    try:
        data = exchange(
            proxy.forward_port, f"CONNECT inside.test:443 HTTP/1.1\r\nProxy-Authorization: {basic(proxy.token)}\r\n\r\n"
        )
    finally:
        proxy.stop()
    assert status_of(data) == 403
    assert reason.encode() in data
    assert proxy.counters().denied == 1


def test_stopped_proxy_refuses_connections(loop, tmp_path):
    log = EgressLog(None)
    proxy = ForwardProxy(Allowlist(), lambda t: True, log)
    port = loop.call(proxy.start("127.0.0.1"))
    loop.call(proxy.stop())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_stop_cuts_open_tunnels(loop, tmp_path, echo):
    log = EgressLog(tmp_path / "egress.log")
    proxy = ForwardProxy(
        Allowlist.parse(f"allowed.test:{echo.port}"),
        lambda t: t == TOKEN,
        log,
        hosts={"allowed.test": ["127.0.0.1"]},
        exempt_networks=[ipaddress.ip_network("127.0.0.0/8")],
    )
    port = loop.call(proxy.start("127.0.0.1"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"CONNECT allowed.test:{echo.port} HTTP/1.1\r\nProxy-Authorization: {basic(TOKEN)}\r\n\r\n".encode()
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.sendall(b"still open?")
        assert sock.recv(65536) == b"still open?"
        loop.call(proxy.stop())
        try:
            rest = sock.recv(65536)
        except ConnectionResetError:
            rest = b""
        assert rest == b""
    log.close()
    (line,) = [json.loads(x) for x in (tmp_path / "egress.log").read_text().splitlines()]
    assert (line["kind"], line["decision"], line["status"]) == ("connect", "allowed", 200)
