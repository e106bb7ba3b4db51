"""Default-deny egress on the host, tested with namespaces standing in for run VMs and for an outside host.

Every test first shows the path works without rules (so it can fail), then that the rules close it, from the
VM's side, after the VM flushed its own firewall; the host's rules are what holds. Needs root: marked ``double``
(deselected by ``make test-unit``; failing, not skipped, where it cannot run)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agentvm.host import egress, egress_host
from agentvm.host.isolation import parse_egress
from agentvm.host.proxy import Credential, CredentialProxy, Upstream
from tests.integration.isolation.conftest import DROP_WAIT, NETCLIENT, nft_text
from tests.unit.host.servers import RecordingUpstream

pytestmark = pytest.mark.double
REAL_KEY = "sk-isolation-test-key-0123456789"


@pytest.fixture
def rules(lab, table):
    """apply(run_id, vm index, ports) -> RunRules; every run's rules are removed afterwards."""
    applied = []

    def apply(run_id, i=0, ports=(1,)):
        result = egress.apply(run_id, lab.vm_address(i), ports, table=table)
        applied.append(run_id)
        return result

    yield apply
    for run_id in applied:
        egress.remove(run_id, table=table)


@pytest.fixture
def flushed(lab):
    """The VM's own firewall flushed (as a hostile root in the VM would)."""

    def flush(i=0):
        for argv in (["nft", "flush", "ruleset"], ["iptables", "-F"], ["iptables", "-P", "OUTPUT", "ACCEPT"]):
            proc = lab.in_vm(*argv, i=i)
            assert proc.returncode == 0, proc.stderr

    return flush


@pytest.fixture
def host_listener(lab):
    """A TCP listener of the host on the gateway address (a host service the VM must not reach)."""
    sock = socket.create_server((lab.gateway, 0))
    stop = threading.Event()

    def serve():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join(5)
    sock.close()


def _accept_until_closed(server: socket.socket) -> None:
    while True:
        try:
            server.accept()[0].close()
        except OSError:
            return


@pytest.fixture
def api_upstream():
    server = RecordingUpstream()
    yield server
    server.close()


@pytest.fixture
def run_proxy(lab, api_upstream, tmp_path):
    """start(egress_text) -> a CredentialProxy on the lab's gateway (allowed.test -> the outside host)."""
    started = []

    def start(egress_text="allowed.test,allowed.test:8080", run_id="run"):
        proxy = CredentialProxy.start(
            lab.gateway,
            [
                Upstream(
                    "anthropic", api_upstream.url, Credential.anthropic(REAL_KEY), token_vars=("ANTHROPIC_API_KEY",)
                )
            ],
            egress=parse_egress(egress_text),
            log_path=tmp_path / f"{run_id}-egress.log",
            run_id=run_id,
            hosts={"allowed.test": [lab.outside.address], "denied.test": [lab.outside.address]},
        )
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def test_without_rules_the_vm_reaches_the_outside_host_and_both_dns_servers(lab, host_listener):
    probes = [
        ("tcp", lab.outside.address, 8080),
        ("dns", lab.outside.address, "example.test"),
        ("dns", lab.gateway, "example.test"),
        ("tcp", lab.gateway, host_listener),
    ]
    assert lab.probes(probes) == dict.fromkeys(probes, True)


def test_rules_hold_after_the_vm_flushes_its_own_firewall(lab, rules, flushed, table, host_listener, run_proxy):
    proxy = run_proxy()
    rules("r-block", ports=proxy.ports)
    flushed()
    blocked = [("tcp", lab.outside.address, port) for port in (80, 443, 8080)] + [
        ("dns", lab.outside.address, "example.test"),
        ("dns", lab.gateway, "example.test"),  # the host's own resolver: no DNS at all
        ("tcp", lab.gateway, host_listener),  # nor any other host service
        ("tcp", lab.outside.host_address, 22),  # nor the host's other addresses
    ]
    allowed = [("tcp", lab.gateway, port) for port in proxy.ports]
    assert lab.probes(blocked + allowed) == {**dict.fromkeys(blocked, False), **dict.fromkeys(allowed, True)}
    counters = egress.counters("r-block", table=table)
    assert counters["deny-forward"].packets >= 4
    assert counters["deny-input"].packets >= 3
    assert counters["proxy"].packets == len(proxy.ports)
    # the other VM on the bridge has no rules and still reaches everything: rules are per run
    assert lab.probe("tcp", lab.outside.address, 8080, i=1)


def test_drops_are_final_despite_accept_rules_in_other_tables(lab, rules, table):
    """An ACCEPT in another table's base chain (like Multipass's or Docker's) does not undo the drop."""
    other = f"{table}_accept"
    script = (
        f"add table inet {other}\n"
        f"add chain inet {other} allowall {{ type filter hook forward priority -300; policy accept; }}\n"
        f"add rule inet {other} allowall ip saddr {lab.vm_address()} accept\n"
    )
    egress_host.nft(["-f", "-"], script)
    try:
        rules("r-final")
        assert not lab.probe("tcp", lab.outside.address, 8080)
    finally:
        egress_host.nft(["delete", "table", "inet", other])


def test_a_changed_or_borrowed_address_is_no_escape(lab, rules, flushed, table):
    spoofed = lab.vm_address(0).rsplit(".", 1)[0] + ".77"
    borrowed = lab.vm_address(1)  # the address of the other VM, which has no rules

    def use(address):
        lab.in_vm("ip", "address", "add", f"{address}/32", "dev", "eth0")
        lab.in_vm("ip", "route", "replace", "default", "via", lab.gateway, "src", address)

    def restore(address):
        lab.in_vm("ip", "route", "replace", "default", "via", lab.gateway, "src", lab.vm_address(0))
        lab.in_vm("ip", "address", "delete", f"{address}/32", "dev", "eth0")

    use(spoofed)
    try:
        assert lab.probe("tcp", lab.outside.address, 8080)  # without rules, a new address works
        rules("r-spoof")
        flushed()
        assert not lab.probe("tcp", lab.outside.address, 8080, timeout=DROP_WAIT)
    finally:
        restore(spoofed)
    use(borrowed)
    try:
        assert not lab.probe("tcp", lab.outside.address, 8080, timeout=DROP_WAIT)
    finally:
        restore(borrowed)
    assert egress.counters("r-spoof", table=table)["spoofed"].packets > 0


@pytest.fixture
def link_local(lab):
    """(host's, VM's) IPv6 link-local addresses on the lab bridge, set by the test (no autoconfiguration, no DAD
    wait); IPv6 is switched on for the two interfaces whatever the host's default is."""
    host_ll, vm_ll = "fe80::a9:1", "fe80::a9:2"
    Path(f"/proc/sys/net/ipv6/conf/{lab.bridge}/disable_ipv6").write_text("0\n")
    enable = lab.in_vm("sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6")
    assert enable.returncode == 0, enable.stderr
    subprocess.run(["ip", "-6", "address", "add", f"{host_ll}/64", "dev", lab.bridge, "nodad"], check=True)
    added = lab.in_vm("ip", "-6", "address", "add", f"{vm_ll}/64", "dev", "eth0", "nodad")
    assert added.returncode == 0, added.stderr
    yield host_ll, vm_ll
    lab.in_vm("ip", "-6", "address", "delete", f"{vm_ll}/64", "dev", "eth0")
    subprocess.run(["ip", "-6", "address", "delete", f"{host_ll}/64", "dev", lab.bridge], check=False)


def test_ipv6_from_the_vm_is_dropped(lab, rules, link_local, table):
    """The bridge layer lets only ARP and the VM's own IPv4 through: link-local IPv6 to the host is gone."""
    host_ll, _ = link_local
    server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    server.bind((host_ll, 0, 0, socket.if_nametoindex(lab.bridge)))
    server.listen()
    port = server.getsockname()[1]
    threading.Thread(target=_accept_until_closed, args=(server,), daemon=True).start()
    try:
        assert lab.probe("tcp", f"{host_ll}%eth0", port, timeout=3)
        rules("r-v6")
        assert not lab.probe("tcp", f"{host_ll}%eth0", port, timeout=DROP_WAIT)
    finally:
        server.close()
    assert egress.counters("r-v6", table=table)["spoofed"].packets > 0


def test_vm_to_vm_traffic_is_dropped(lab, rules, table):
    argv = ["ip", "netns", "exec", lab.vm_ns(1), sys.executable, str(NETCLIENT), "listen", lab.vm_address(1), "8099"]
    listener = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline().strip() == "listening"
        assert lab.probe("tcp", lab.vm_address(1), 8099)
        rules("r-lateral")
        assert not lab.probe("tcp", lab.vm_address(1), 8099, timeout=DROP_WAIT)
        assert not lab.probe("tcp", lab.vm_address(0), 9, i=1, timeout=DROP_WAIT)  # nor from the other side
    finally:
        listener.kill()
        listener.wait(5)
    assert egress.counters("r-lateral", table=table)["lateral"].packets >= 2


def test_allowlisted_host_through_the_proxy_and_refusals_logged(lab, rules, flushed, run_proxy, tmp_path):
    proxy = run_proxy(run_id="r-allow")
    rules("r-allow", ports=proxy.ports)
    flushed()
    forward = f"http://{lab.gateway}:{proxy.forward_port}"
    tunneled = lab.curl("http://allowed.test:443/hello", forward, proxy.token, "--proxytunnel")
    assert tunneled.returncode == 0, tunneled.stderr
    assert tunneled.stdout == "outside 443 /hello\n"
    plain = lab.curl("http://allowed.test/plain?x=1", forward, proxy.token)
    assert plain.stdout == "outside 80 /plain?x=1\n"
    other_port = lab.curl("http://allowed.test:8080/p", forward, proxy.token, "--proxytunnel")
    assert other_port.stdout == "outside 8080 /p\n"
    denied = lab.curl("http://denied.test:443/", forward, proxy.token, "--proxytunnel", "-w", "%{http_connect}")
    assert denied.returncode != 0
    assert denied.stdout.strip() == "403"
    denied_plain = lab.curl("http://denied.test/x", forward, proxy.token, "-w", "%{http_code}")
    assert denied_plain.stdout.endswith("403")
    assert "not allowed for this run" in denied_plain.stdout
    assert not lab.probe("tcp", lab.outside.address, 443)  # and still nothing directly
    proxy.stop()
    lines = [json.loads(x) for x in (tmp_path / "r-allow-egress.log").read_text().splitlines()]
    assert [(x["kind"], x["host"], x["port"], x["decision"]) for x in lines] == [
        ("connect", "allowed.test", 443, "allowed"),
        ("http", "allowed.test", 80, "allowed"),
        ("connect", "allowed.test", 8080, "allowed"),
        ("connect", "denied.test", 443, "denied"),
        ("http", "denied.test", 80, "denied"),
    ]
    assert proxy.counters().allowed == 3
    assert proxy.counters().denied == 2
    assert "x=1" not in (tmp_path / "r-allow-egress.log").read_text()


def test_tokens_of_another_or_a_finished_run_are_refused(lab, rules, run_proxy):
    finished = run_proxy(run_id="r-old")
    old_token, old_ports = finished.token, finished.ports
    finished.stop()
    current = run_proxy(run_id="r-new")
    rules("r-new", ports=current.ports)
    forward = f"http://{lab.gateway}:{current.forward_port}"
    stolen = lab.curl("http://allowed.test:443/", forward, old_token, "--proxytunnel", "-w", "%{http_connect}")
    assert stolen.stdout.strip() == "407"
    none = lab.curl("http://allowed.test:443/", forward, None, "--proxytunnel", "-w", "%{http_connect}")
    assert none.stdout.strip() == "407"
    api = lab.in_vm(
        "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-K", "-", f"http://{lab.gateway}:{current.api_ports['anthropic']}/v1/models",
        input=f'header = "x-api-key: {old_token}"\n',
    )  # fmt: skip
    assert api.stdout == "401"
    for port in old_ports:  # the finished run's ports are closed (and not open in this run's rules)
        assert not lab.probe("tcp", lab.gateway, port)
    assert current.counters().unauthorized == 3


def test_the_api_through_the_proxy_from_the_vm(lab, rules, flushed, run_proxy, api_upstream):
    proxy = run_proxy(run_id="r-api")
    rules("r-api", ports=proxy.ports)
    flushed()
    env = proxy.vm_env()
    assert env["ANTHROPIC_API_KEY"] == proxy.token
    answer = lab.in_vm(
        "curl", "-sS", "-K", "-", "-H", "content-type: application/json", "--data", '{"q":1}',
        f"http://{lab.gateway}:{proxy.api_ports['anthropic']}/v1/messages",
        input=f'header = "x-api-key: {env["ANTHROPIC_API_KEY"]}"\n',
    )  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == {"ok": True, "path": "/v1/messages"}
    assert api_upstream.seen[-1].header("x-api-key") == [REAL_KEY]


def test_open_mode_reaches_the_outside_host_directly(lab, run_proxy):
    proxy = run_proxy("open", run_id="r-open")
    assert proxy.forward_port is None
    assert "HTTPS_PROXY" not in proxy.vm_env()
    assert parse_egress("open").enforced is False
    assert lab.probe("tcp", lab.outside.address, 8080)
    assert lab.curl(f"http://{lab.outside.address}:8080/direct").stdout == "outside 8080 /direct\n"


def test_apply_is_idempotent_and_remove_leaves_nothing(lab, table):
    try:
        first = egress.apply("r-a", lab.vm_address(0), [4100, 4101], table=table)
        assert first.port == lab.vm_port(0)
        assert first.gateway == lab.gateway
        assert first.bridge == lab.bridge
        once = nft_text("inet", table) + nft_text("bridge", table)
        egress.apply("r-a", lab.vm_address(0), [4100, 4101], table=table)
        assert (nft_text("inet", table) + nft_text("bridge", table)).count("r-a") == once.count("r-a")
        egress.apply("r-b", lab.vm_address(1), [4200], table=table)
        with pytest.raises(egress.EgressError, match="already has rules of run r-a"):
            egress.apply("r-c", lab.vm_address(0), [4300], table=table)
        assert [r.run_id for r in egress.list_runs(table=table)] == ["r-a", "r-b"]
        assert egress.list_runs(table=table)[1] == egress.RunRules(
            "r-b", lab.vm_address(1), lab.gateway, (4200,), lab.bridge, lab.vm_port(1)
        )
        assert egress.remove("r-a", table=table) is True
        text = nft_text("inet", table) + nft_text("bridge", table)
        assert "r-a" not in text
        assert lab.vm_address(0) not in text
        assert "r-b" in text
        assert egress.remove("r-a", table=table) is False  # idempotent
        assert lab.probe("tcp", lab.outside.address, 8080)  # the VM is free again
        assert egress.remove("r-b", table=table) is True
        assert nft_text("inet", table) == nft_text("bridge", table) == ""  # last run gone: tables gone
        assert egress.list_runs(table=table) == []
    finally:
        for run_id in ("r-a", "r-b", "r-c"):
            egress.remove(run_id, table=table)


def test_apply_refuses_an_address_not_on_a_bridge(lab, table):
    with pytest.raises(egress.EgressError, match="is not a bridge"):
        egress.apply("r-x", lab.outside.address, [1], table=table)
    with pytest.raises(egress.EgressError, match="not on a network"):
        egress.apply("r-x", "203.0.113.200", [1], table=table)  # behind a router: never a VM of ours
    assert egress.list_runs(table=table) == []
