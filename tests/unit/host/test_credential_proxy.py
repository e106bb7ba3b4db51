"""The API side of the credential proxy, against a real aiohttp upstream on loopback."""

from __future__ import annotations

import http.client
import json
import logging
import re
import shutil
import socket
import subprocess

import pytest

from agentvm.host.isolation import parse_egress
from agentvm.host.proxy import (
    Credential,
    CredentialProxy,
    ProxyError,
    ProxyLimits,
    Secret,
    Upstream,
    upstream_for_variable,
)
from agentvm.host.proxy_api import forward_request_headers, presented_tokens
from tests.unit.host.servers import RecordingUpstream

REAL_KEY = "sk-real-key-never-in-the-vm-0123456789"


@pytest.fixture
def make_proxy(tmp_path):
    started = []

    def make(upstreams, **kwargs):
        kwargs.setdefault("log_path", tmp_path / f"egress-{len(started)}.log")
        kwargs.setdefault("egress", parse_egress("open"))
        proxy = CredentialProxy.start("127.0.0.1", upstreams, run_id="unit", **kwargs)
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()


def request(port, method="GET", target="/v1/messages", headers=None, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        has_host = any(name.lower() == "host" for name, _ in headers or [])
        conn.putrequest(method, target, skip_host=has_host, skip_accept_encoding=True)
        for name, value in headers or []:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


PROVIDERS = [
    ("anthropic", Credential.anthropic(REAL_KEY), "x-api-key", REAL_KEY),
    ("openai", Credential.bearer(REAL_KEY), "authorization", f"Bearer {REAL_KEY}"),
    ("google", Credential.google(REAL_KEY), "x-goog-api-key", REAL_KEY),
]
PRESENTATIONS = [
    ("x-api-key", "{t}"),
    ("authorization", "Bearer {t}"),
    ("authorization", "bearer   {t}"),
    ("x-goog-api-key", "{t}"),
]


@pytest.mark.parametrize(("name", "credential", "header", "value"), PROVIDERS)
@pytest.mark.parametrize(("sent_as", "template"), PRESENTATIONS)
def test_token_is_replaced_by_the_key_in_the_providers_header(
    upstream, make_proxy, name, credential, header, value, sent_as, template
):
    proxy = make_proxy([Upstream(name, upstream.url, credential)])
    status, _, _ = request(
        proxy.api_ports[name], "POST", "/v1/x", [(sent_as, template.format(t=proxy.token))], b'{"q":1}'
    )
    assert status == 200
    seen = upstream.seen[-1]
    assert seen.header(header) == [value]
    for other in {"x-api-key", "authorization", "x-goog-api-key"} - {header}:
        assert seen.header(other) == [], f"{other} must not reach the upstream"
    assert proxy.token not in json.dumps(seen.headers)
    assert seen.body == b'{"q":1}'


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("x-api-key", "wrong")],
        [("x-api-key", "{t}x")],
        [("x-api-key", "x{t}")],
        [("x-api-key", "{T}")],
        [("authorization", "Basic {t}")],
        [("authorization", "Token {t}")],
        [("x-api-key", "Bearer {t}")],
        [("proxy-authorization", "Bearer {t}")],
        [("cookie", "key={t}")],
        [("x-api-key", "")],
    ],
)
def test_unknown_or_misplaced_token_gets_401_and_nothing_goes_upstream(upstream, make_proxy, headers):
    proxy = make_proxy([Upstream("anthropic", upstream.url, Credential.anthropic(REAL_KEY))])
    filled = [(k, v.format(t=proxy.token, T=proxy.token.upper())) for k, v in headers]
    status, _, body = request(proxy.api_ports["anthropic"], "POST", "/v1/messages?key=x", filled, b"{}")
    assert status == 401
    assert b"unknown token" in body
    assert upstream.seen == []
    assert proxy.counters().unauthorized == 1
    assert proxy.counters().allowed == 0


def test_token_in_the_query_string_is_not_accepted(upstream, make_proxy):
    proxy = make_proxy([Upstream("google", upstream.url, Credential.google(REAL_KEY))])
    status, _, _ = request(proxy.api_ports["google"], "GET", f"/v1beta/models?key={proxy.token}")
    assert status == 401
    assert upstream.seen == []


def test_token_of_another_run_and_of_a_stopped_proxy_are_refused(upstream, make_proxy):
    up = Upstream("anthropic", upstream.url, Credential.anthropic(REAL_KEY))
    first, second = make_proxy([up]), make_proxy([up])
    assert first.token != second.token
    old_token, old_port = first.token, first.api_ports["anthropic"]
    status, _, _ = request(second.api_ports["anthropic"], headers=[("x-api-key", old_token)])
    assert status == 401
    first.stop()
    assert not first.running
    with pytest.raises(ConnectionRefusedError):
        request(old_port, headers=[("x-api-key", old_token)])
    assert first.token == ""  # the token died with the proxy
    status, _, _ = request(second.api_ports["anthropic"], headers=[("x-api-key", old_token)])
    assert status == 401
    assert upstream.seen == []
    first.stop()  # idempotent


def test_path_and_query_pass_but_the_upstream_host_never_changes(upstream, make_proxy):
    up = Upstream("anthropic", upstream.url + "/base/", Credential.anthropic(REAL_KEY))
    proxy = make_proxy([up])
    port, auth = proxy.api_ports["anthropic"], [("x-api-key", proxy.token), ("Host", "evil.example")]
    status, _, _ = request(port, "GET", "//evil.example/x%2Fy?beta=true&a=1", auth)
    assert status == 200
    assert upstream.seen[-1].path_qs == "/base//evil.example/x%2Fy?beta=true&a=1"
    assert upstream.seen[-1].header("host") == [f"127.0.0.1:{upstream.port}"]
    status, _, _ = request(port, "GET", "http://evil.example/v1/messages", auth)
    assert status == 400
    assert len(upstream.seen) == 1


def test_connect_on_the_api_port_is_refused(upstream, make_proxy):
    proxy = make_proxy([Upstream("anthropic", upstream.url, Credential.anthropic(REAL_KEY))])
    with socket.create_connection(("127.0.0.1", proxy.api_ports["anthropic"]), timeout=10) as sock:
        sock.sendall(
            f"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nx-api-key: {proxy.token}\r\n\r\n".encode()
        )
        answer = sock.recv(65536)
    assert re.match(rb"HTTP/1\.[01] 4\d\d ", answer)  # aiohttp: 404, the authority-form matches no route
    assert upstream.seen == []


@pytest.mark.parametrize(
    "head",
    [
        "GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Bad\x01Name: {t}\r\n\r\n",
        "GET /v1/models HTTP/1.1\r\nHost: x\r\nx-api-key: {t}\x7f\x00\r\n\r\n",
        "GET /v1/models HTTP/1.1\r\nHost: x\r\nx-api-key: {t}\r\nx-api-key {t}\r\n\r\n",
        "GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Long: {t}" + "a" * 20000 + "\r\n\r\n",
    ],
)
def test_malformed_requests_never_put_the_token_in_a_log(upstream, make_proxy, caplog, head):
    caplog.set_level(logging.DEBUG)
    proxy = make_proxy([Upstream("anthropic", upstream.url, Credential.anthropic(REAL_KEY))])
    with socket.create_connection(("127.0.0.1", proxy.api_ports["anthropic"]), timeout=10) as sock:
        sock.sendall(head.format(t=proxy.token).encode("latin-1"))
        answer = sock.recv(65536)
    assert re.match(rb"HTTP/1\.[01] 4\d\d ", answer)  # (aiohttp may quote the bad line back to its sender)
    assert proxy.token not in caplog.text
    assert upstream.seen == []


def test_hop_by_hop_headers_are_dropped_both_ways(upstream, make_proxy):
    proxy = make_proxy([Upstream("anthropic", upstream.url, Credential.anthropic(REAL_KEY))])
    headers = [
        ("x-api-key", proxy.token),
        ("Connection", "keep-alive, X-Private"),
        ("X-Private", "1"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("Upgrade", "websocket"),
        ("anthropic-version", "2023-06-01"),
    ]
    status, response_headers, _ = request(proxy.api_ports["anthropic"], "GET", "/v1/models", headers)
    assert status == 200
    seen = upstream.seen[-1]
    for name in ("x-private", "keep-alive", "te", "proxy-authorization", "upgrade"):
        assert seen.header(name) == [], name
    assert seen.header("anthropic-version") == ["2023-06-01"]
    names = {k.lower() for k, _ in response_headers}
    assert "x-upstream" in names
    assert "x-hop" not in names
    assert "keep-alive" not in names


def test_no_client_side_defaults_are_added(upstream, make_proxy):
    """The proxy must not ask for gzip (or set a User-Agent) the agent did not ask for."""
    proxy = make_proxy([Upstream("anthropic", upstream.url, Credential.anthropic(REAL_KEY))])
    request(proxy.api_ports["anthropic"], "GET", "/v1/models", [("x-api-key", proxy.token)])
    seen = upstream.seen[-1]
    assert seen.header("accept-encoding") == []
    assert seen.header("user-agent") == []


def test_redirects_are_passed_back_not_followed(upstream, make_proxy):
    proxy = make_proxy([Upstream("anthropic", upstream.url, Credential.anthropic(REAL_KEY))])
    status, headers, _ = request(proxy.api_ports["anthropic"], "GET", "/redirect", [("x-api-key", proxy.token)])
    assert status == 302
    assert dict(headers)["Location"] == "http://127.0.0.1:9/elsewhere"
    assert [s.path_qs for s in upstream.seen] == ["/redirect"]


def test_head_keeps_the_content_length(upstream, make_proxy):
    proxy = make_proxy([Upstream("anthropic", upstream.url, Credential.anthropic(REAL_KEY))])
    status, headers, body = request(proxy.api_ports["anthropic"], "HEAD", "/big?n=1234", [("x-api-key", proxy.token)])
    assert (status, body) == (200, b"")
    assert dict(headers)["Content-Length"] == "1234"


def test_request_and_response_size_limits(upstream, make_proxy):
    limits = ProxyLimits(max_request_bytes=1000, max_response_bytes=5000)
    proxy = make_proxy([Upstream("anthropic", upstream.url, Credential.anthropic(REAL_KEY))], limits=limits)
    port, auth = proxy.api_ports["anthropic"], [("x-api-key", proxy.token)]
    status, _, _ = request(port, "POST", "/v1/messages", auth, b"x" * 1001)
    assert status == 413
    assert upstream.seen == []
    assert request(port, "GET", "/big?n=4000", auth)[2] == b"x" * 4000
    with pytest.raises((http.client.IncompleteRead, ConnectionError, http.client.RemoteDisconnected)):
        request(port, "GET", "/big?n=200000", auth)
    assert proxy.counters().errors == 2  # the 413 and the cut answer


def test_unreachable_upstream_gives_502(make_proxy):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    proxy = make_proxy([Upstream("anthropic", f"http://127.0.0.1:{closed}", Credential.anthropic(REAL_KEY))])
    status, _, body = request(proxy.api_ports["anthropic"], headers=[("x-api-key", proxy.token)])
    assert status == 502
    assert REAL_KEY.encode() not in body
    assert proxy.counters().errors == 1


def test_log_lines_carry_no_secret(upstream, make_proxy, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    log_path = tmp_path / "run" / "egress.log"
    proxy = make_proxy([Upstream("anthropic", upstream.url, Credential.anthropic(REAL_KEY))], log_path=log_path)
    port, token = proxy.api_ports["anthropic"], proxy.token
    request(port, "POST", f"/v1/messages?key={token}&other={REAL_KEY}", [("x-api-key", token)], b'{"secret":1}')
    request(port, "GET", f"/v1/models?key={token}", [("x-api-key", "bad-" + token)])
    request(port, "GET", "/v1/models", [("authorization", f"Bearer {token}"), ("cookie", f"c={REAL_KEY}")])
    proxy.stop()
    text = log_path.read_text()
    for secret in (token, REAL_KEY, "key=", "secret", "cookie"):
        assert secret not in text
        assert secret not in caplog.text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(e["method"], e["path"], e["status"], e["decision"]) for e in lines] == [
        ("POST", "/v1/messages", 200, "allowed"),
        ("GET", "/v1/models", 401, "unauthorized"),
        ("GET", "/v1/models", 200, "allowed"),
    ]
    assert set(lines[0]) == {
        "time",
        "kind",
        "upstream",
        "method",
        "host",
        "port",
        "path",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "decision",
    }
    assert lines[0]["bytes_in"] == len(b'{"secret":1}')
    assert (log_path.stat().st_mode & 0o777) == 0o600
    assert "unknown token" in caplog.text


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "localhost", "", "224.0.0.1", "10.0.0.1; rm"])
def test_bind_host_must_be_one_address(bind):
    with pytest.raises(ProxyError):
        CredentialProxy.start(bind, [])


def test_bind_failure_leaves_nothing_running():
    threads_before = {t.name for t in __import__("threading").enumerate()}
    with pytest.raises(ProxyError, match="cannot listen"):
        CredentialProxy.start("192.0.2.77", [], run_id="nope")  # TEST-NET-1: not an address of this host
    leftover = {t.name for t in __import__("threading").enumerate()} - threads_before
    assert not [n for n in leftover if n.startswith("agentvm-proxy")]


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://api.example.com", True),
        ("https://api.example.com/base", True),
        ("http://127.0.0.1:1", True),
        ("http://localhost:1", True),
        ("http://[::1]:1", True),
        ("http://198.51.100.1", False),
        ("http://api.example.com", False),
        ("ftp://127.0.0.1", False),
        ("https://user:pw@api.example.com", False),
        ("https://api.example.com/?key=1", False),
    ],
)
def test_upstream_urls(url, ok):
    if ok:
        Upstream("x", url, Credential.anthropic("k"))
    else:
        with pytest.raises(ValueError):
            Upstream("x", url, Credential.anthropic("k"))


def test_plain_http_to_a_test_upstream_needs_an_explicit_opt_in():
    Upstream("x", "http://198.51.100.1", Credential.anthropic("k"), allow_plain_http=True)


def test_secret_does_not_show_itself():
    credential = Credential.bearer(REAL_KEY)
    for text in (repr(credential), str(credential), repr(credential.secret), f"{credential.secret}"):
        assert REAL_KEY not in text
    with pytest.raises(ValueError):
        Secret("a\r\nX-Injected: 1")


@pytest.mark.parametrize(
    ("variable", "header", "prefix", "base_var", "suffix"),
    [
        ("ANTHROPIC_API_KEY", "x-api-key", "", "ANTHROPIC_BASE_URL", ""),
        ("ANTHROPIC_AUTH_TOKEN", "authorization", "Bearer ", "ANTHROPIC_BASE_URL", ""),
        ("GEMINI_API_KEY", "x-goog-api-key", "", "GOOGLE_GEMINI_BASE_URL", ""),
        ("GOOGLE_API_KEY", "x-goog-api-key", "", "GOOGLE_GEMINI_BASE_URL", ""),
        ("OPENAI_API_KEY", "authorization", "Bearer ", "OPENAI_BASE_URL", "/v1"),
        ("CODEX_API_KEY", "authorization", "Bearer ", "OPENAI_BASE_URL", "/v1"),
    ],
)
def test_vm_env_per_credential_variable(upstream, make_proxy, variable, header, prefix, base_var, suffix):
    up = upstream_for_variable(variable, REAL_KEY, base_url=upstream.url + suffix)
    assert up.credential.header == header
    assert up.credential.value() == prefix + REAL_KEY
    proxy = make_proxy([up], egress=parse_egress("pkgs.example"))
    env = proxy.vm_env()
    assert env[variable] == proxy.token
    assert env[base_var] == f"http://127.0.0.1:{proxy.api_ports[up.name]}{suffix}"
    assert env["HTTPS_PROXY"] == env["http_proxy"] == f"http://agentvm:{proxy.token}@127.0.0.1:{proxy.forward_port}"
    assert env["NO_PROXY"] == "127.0.0.1,localhost"
    assert REAL_KEY not in json.dumps(env)
    assert set(proxy.ports) == {proxy.api_ports[up.name], proxy.forward_port}
    # the agent's own path (+ /v1 for OpenAI's SDKs) reaches the upstream unchanged
    status, _, _ = request(
        proxy.api_ports[up.name], "GET", f"{suffix}/models", [("authorization", f"Bearer {proxy.token}")]
    )
    assert status == 200
    assert upstream.seen[-1].path_qs == f"{suffix}/models"


def test_open_mode_has_no_forward_proxy(make_proxy):
    proxy = make_proxy([], egress=parse_egress("open"))
    assert proxy.forward_port is None
    assert proxy.proxy_url is None
    assert proxy.vm_env() == {}


def test_unknown_credential_variable():
    with pytest.raises(ValueError, match="CREDENTIALS=direct"):
        upstream_for_variable("MY_KEY", "k")


def test_header_helpers():
    from multidict import CIMultiDict

    headers = CIMultiDict([("X-Api-Key", "a"), ("Authorization", "Bearer b"), ("Authorization", "Basic c")])
    assert presented_tokens(headers) == ["a", "b"]
    out = forward_request_headers(
        CIMultiDict([("Host", "h"), ("Content-Length", "3"), ("Connection", "X-A"), ("X-A", "1"), ("X-B", "2")]),
        Credential.google("k"),
    )
    assert dict(out) == {"X-B": "2", "x-goog-api-key": "k"}


@pytest.fixture
def tls_upstream(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    import ssl

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = RecordingUpstream(ssl_context=context)
    yield server, str(cert)
    server.close()


def test_https_upstream_is_verified(tls_upstream, make_proxy):
    server, ca_file = tls_upstream
    up = Upstream("anthropic", server.url, Credential.anthropic(REAL_KEY))
    untrusted = make_proxy([up])  # the host's CA bundle does not know the test certificate
    status, _, body = request(untrusted.api_ports["anthropic"], headers=[("x-api-key", untrusted.token)])
    assert status == 502
    assert b"TLS verification" in body
    assert server.seen == []
    trusted = make_proxy([up], ca_file=ca_file)
    status, _, _ = request(trusted.api_ports["anthropic"], headers=[("x-api-key", trusted.token)])
    assert status == 200
    assert server.seen[-1].header("x-api-key") == [REAL_KEY]


def test_with_block_stops_the_proxy(upstream):
    up = Upstream("anthropic", upstream.url, Credential.anthropic(REAL_KEY))
    with CredentialProxy.start("127.0.0.1", [up], egress=parse_egress("deny")) as proxy:
        ports = proxy.ports
        assert proxy.running and len(ports) == 2
    assert not proxy.running
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)


def test_unknown_option_is_refused_before_anything_starts():
    threads_before = {t.name for t in __import__("threading").enumerate()}
    with pytest.raises(TypeError, match="log_paht"):
        CredentialProxy.start("127.0.0.1", [], log_paht="x")
    assert {t.name for t in __import__("threading").enumerate()} == threads_before
