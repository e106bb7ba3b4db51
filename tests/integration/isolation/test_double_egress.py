"""End to end on a real instance of the Multipass double: with the run's rules applied on the host, root in the
instance flushes its own firewall and still reaches neither an outside host (TCP, DNS) nor the double's dnsmasq on
the gateway; the run's proxy on the gateway works (API with the token, CONNECT to an allowlisted host)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agentvm.host import egress
from agentvm.host.isolation import parse_egress
from agentvm.host.proxy import CredentialProxy, upstream_for_variable
from tests.conftest import DOUBLE_ADMIN
from tests.integration.isolation.conftest import NETCLIENT, Probe, nft_text, probe_argv, probe_results
from tests.unit.host.servers import RecordingUpstream

pytestmark = [pytest.mark.double, pytest.mark.slow]
REAL_KEY = "sk-double-e2e-key-0123456789"


@pytest.fixture(scope="module")
def vm(instance, multipass, double_env):
    """(name, IPv4, gateway, leader pid) of the session's running instance."""
    info = json.loads(multipass("info", instance, "--format", "json").stdout)
    address = info["info"][instance]["ipv4"][0]
    gateway = subprocess.run(
        [sys.executable, str(DOUBLE_ADMIN), "host-ip"], env=double_env, capture_output=True, text=True, check=True
    ).stdout.strip()
    runtime = Path(double_env["MULTIPASS_DOUBLE_DATA"]) / "instances" / instance / "runtime.json"
    return instance, address, gateway, json.loads(runtime.read_text())["leader_pid"]


def probes(multipass, name, wanted: list[Probe], timeout=2.0) -> dict[Probe, bool]:
    """netclient.py's probes at once, as root inside the instance (one exec; the script arrives on stdin)."""
    argv = probe_argv(wanted, timeout)
    proc = multipass("exec", name, "--", "sudo", "python3", "-", *argv, input=NETCLIENT.read_text())
    assert proc.returncode == 0, proc.stderr
    return probe_results(wanted, proc.stdout)


def curl(multipass, name, url, config, *extra):
    return multipass("exec", name, "--", "curl", "-sS", "--max-time", "10", "-K", "-", *extra, url, input=config)


def test_rules_hold_on_a_real_instance_and_the_proxy_works(vm, multipass, outside, tmp_path):
    name, address, gateway, leader = vm
    table = "agentvm_d" + address.replace(".", "")[-8:]
    paths = [
        ("tcp", outside.address, 8080),
        ("tcp", outside.address, 443),
        ("dns", outside.address, "example.test"),
        ("dns", gateway, f"{name}.multipass"),
    ]
    assert probes(multipass, name, paths) == dict.fromkeys(paths, True)  # without rules: all open (it can fail)

    upstream = RecordingUpstream()
    proxy = CredentialProxy.start(
        gateway,
        [upstream_for_variable("ANTHROPIC_API_KEY", REAL_KEY, base_url=upstream.url)],
        egress=parse_egress("allowed.test"),
        log_path=tmp_path / "egress.log",
        run_id="double-e2e",
        hosts={"allowed.test": [outside.address]},
    )
    try:
        applied = egress.apply("double-e2e", address, proxy.ports, table=table)
        assert applied.gateway == gateway
        assert applied.port.startswith("vb-")
        # root in the instance flushes its own firewall (the image has no nft/iptables: the host's binaries run in
        # the instance's network namespace, which is the same thing)
        for argv in (["nft", "flush", "ruleset"], ["iptables", "-F"]):
            done = subprocess.run(["nsenter", "-t", str(leader), "-n", *argv], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        assert probes(multipass, name, paths) == dict.fromkeys(paths, False)  # root in the instance: all closed

        env = proxy.vm_env()
        api = curl(
            multipass, name, env["ANTHROPIC_BASE_URL"] + "/v1/messages", f'header = "x-api-key: {env["ANTHROPIC_API_KEY"]}"\n',
            "--data", "{}",
        )  # fmt: skip
        assert api.returncode == 0, api.stderr
        assert json.loads(api.stdout)["ok"] is True
        assert upstream.seen[-1].header("x-api-key") == [REAL_KEY]
        proxied = curl(
            multipass, name, "http://allowed.test:443/through-the-proxy",
            f'proxy = "http://{gateway}:{proxy.forward_port}"\nproxy-user = "agentvm:{proxy.token}"\n', "--proxytunnel",
        )  # fmt: skip
        assert proxied.stdout == "outside 443 /through-the-proxy\n", proxied.stderr
        counters = egress.counters("double-e2e", table=table)
        assert counters["deny-forward"].packets > 0
        assert counters["deny-input"].packets > 0
        assert counters["proxy"].packets >= 2
    finally:
        proxy.stop()
        upstream.close()
        egress.remove("double-e2e", table=table)
    assert nft_text("inet", table) == ""
    free = [("tcp", outside.address, 8080)]
    assert probes(multipass, name, free) == dict.fromkeys(free, True)  # free again once the run's rules are gone
    lines = [json.loads(x) for x in (tmp_path / "egress.log").read_text().splitlines()]
    assert [(x["kind"], x["decision"]) for x in lines] == [("api", "allowed"), ("connect", "allowed")]
