"""The isolation issue's acceptance tests, through ``agentvm run`` on the Multipass double: a custom agent
(vm_agent.py, root through sudo) attacks from inside the run's VM; the host's credential proxy and egress rules
must hold, and nothing of a run (rules, proxy, VM, scratch) may outlive it, not even ``kill -9``.

Four runs, grouped: ``allowlist_run`` (the real key is a marker; EGRESS names the outside host), ``deny_run``
(the default EGRESS=deny, with the first run's stolen token), an ``EGRESS=open`` run (the control: the same
probes succeed) and one killed with ``kill -9`` then reaped by ``make clean``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import DOUBLE_BIN, REPO
from tests.integration.isolation.conftest import IsolatedRuns, Outside, RunResult, nft_mentions, sh

# One worker for the whole module under xdist: its runs are module fixtures shared by the tests.
pytestmark = [pytest.mark.double, pytest.mark.slow]
MARKER = f"sk-ant-isoe2e-{uuid.uuid4().hex}"
PATTERN = "[s]" + MARKER[1:]  # matches the marker, never itself: the agent's orders never hold the marker
ANSWER = "streamed through the proxy in pieces"
CHUNKS, CHUNK_DELAY = 4, 1.0
PROBE_TIMEOUT = 2.0


def direct_probes(outside: Outside, mock) -> list[list]:
    """Straight from the VM: the outside host's HTTP ports and DNS server; on the host (the gateway), the double's
    DNS and the model-API mock (a host service that only the proxy may reach)."""
    gateway, mock_port = mock.server_address[:2]
    return [
        ["tcp", outside.address, 80],
        ["tcp", outside.address, 443],
        ["tcp", outside.address, 8080],
        ["dns", outside.address, "example.test"],
        ["dns", gateway, "example.test"],
        ["tcp", gateway, mock_port],
    ]


def probe_results(run: RunResult) -> list[bool]:
    done = run.report["probes"]
    assert done["rc"] == 0, done
    return [line["ok"] for line in done["results"]]


def instances(env: dict[str, str]) -> list[str]:
    proc = subprocess.run(
        [str(DOUBLE_BIN), "list", "--format", "json"], env=env, capture_output=True, text=True, check=True
    )
    return [i["name"] for i in json.loads(proc.stdout)["list"] if "-run-" in i["name"]]


def files_containing(root: Path, needle: bytes) -> list[str]:
    """Every regular file under ``root`` (no symlinks followed) whose bytes contain ``needle``."""
    hits = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            try:
                if path.is_symlink() or not path.is_file():
                    continue
                if needle in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                continue
    return hits


def assert_no_rules_left(run_id: str) -> None:
    assert not nft_mentions(run_id), sh("nft", "list", "ruleset").stdout


def listening(address: str) -> set[int]:
    ports = set()
    for line in sh("ss", "-Htln").stdout.splitlines():
        local = line.split()[3]
        host, _, port = local.rpartition(":")
        if host == address:
            ports.add(int(port))
    return ports


@pytest.fixture(scope="module")
def gateway(model_mock) -> str:
    return model_mock.server_address[0]


@pytest.fixture(scope="module")
def allowlist_run(isolated_runs: IsolatedRuns, model_mock, outside: Outside, gateway: str) -> RunResult:
    """The real key is MARKER; EGRESS names the outside host (an IP literal). The agent searches the VM for the
    marker, calls the API (plain and streamed) with its token, flushes the VM's firewall, probes directly,
    fetches through the proxy (allowed and refused) and saves its token for a later run to steal."""
    model_mock.set_script({"text": ANSWER, "chunks": CHUNKS, "chunk_delay": CHUNK_DELAY})
    seen = len(model_mock.requests()), len(model_mock.responses())
    steps = [
        ["env", None],
        ["search", {"patterns": [PATTERN]}],
        ["api", None],
        ["stream", None],
        ["flush", None],
        ["host_flush", None],
        ["probes", {"probes": direct_probes(outside, model_mock), "timeout": PROBE_TIMEOUT}],
        ["spoof", {"targets": [f"{outside.address}:8080"]}],
        [
            "fetch",
            {
                "urls": [
                    {"url": f"http://{outside.address}/allowed"},
                    {"url": f"http://{outside.address}:443/tunnel", "tunnel": True},
                    {"url": "http://not-named.test/refused"},
                    {"url": f"http://{outside.address}:8080/other-port"},
                ]
            },
        ],
        ["save", None],
    ]
    env = {
        "AGENT_CREDENTIALS": "ANTHROPIC_API_KEY",
        "ANTHROPIC_API_KEY": MARKER,
        "ANTHROPIC_BASE_URL": f"http://{gateway}:{model_mock.server_address[1]}",
        "EGRESS": outside.address,
    }
    run = isolated_runs.run(steps, env)
    assert run.proc.returncode == 0, run.proc.stderr[-4000:]
    run.requests = model_mock.requests()[seen[0] :]
    run.responses = model_mock.responses()[seen[1] :]
    run.rules_left = nft_mentions(run.run_id)
    return run


@pytest.fixture(scope="module")
def deny_run(isolated_runs: IsolatedRuns, allowlist_run: RunResult, model_mock, outside: Outside, gateway: str):
    """The default EGRESS=deny; the agent uses the finished first run's token (stolen), then its own."""
    stolen = json.loads((allowlist_run.folder / "output" / "stolen.json").read_text())
    model_mock.set_script({"text": "second run"})
    seen = len(model_mock.requests())
    steps = [
        ["env", None],
        ["steal", {"stolen": stolen, "target": f"http://{outside.address}/stolen"}],
        ["api", None],
        ["host_flush", None],
        ["probes", {"probes": direct_probes(outside, model_mock), "timeout": PROBE_TIMEOUT}],
        ["fetch", {"urls": [{"url": f"http://{outside.address}/not-allowed-by-deny"}]}],
    ]
    env = {
        "AGENT_CREDENTIALS": "ANTHROPIC_API_KEY",
        "ANTHROPIC_API_KEY": MARKER,
        "ANTHROPIC_BASE_URL": f"http://{gateway}:{model_mock.server_address[1]}",
    }
    run = isolated_runs.run(steps, env)
    assert run.proc.returncode == 0, run.proc.stderr[-4000:]
    run.requests = model_mock.requests()[seen:]
    run.stolen = stolen
    run.rules_left = nft_mentions(run.run_id)
    return run


# -- 1: the key never enters the VM -------------------------------------------------------------------------


def test_run_the_key_is_nowhere_in_the_vm_and_the_proxy_swaps_the_token_for_it(allowlist_run, isolated_runs):
    run = allowlist_run
    env = run.report["env"]
    assert env["token_prefix"] == "agentvm-" and env["token_length"] > 30  # a token, not the key
    assert env["base_url"].startswith("http://") and env["proxy_password_is_token"] and env["proxy_vars_agree"]
    assert run.record["credentials"] == {"mode": "proxy", "names": ["ANTHROPIC_API_KEY"]}

    search = run.report["search"]
    assert "error" not in search, search
    assert search["control"]["in_file"] and search["control"]["in_holder_environ"], search["control"]  # it finds
    assert search["processes"] > 5 and {"/etc", "/home", "/usr", "/tmp", "/dev", "/run"} <= set(search["tops"])
    assert search["found"][PATTERN] == {"files": [], "procs": []}  # root finds the key nowhere in the VM

    assert run.report["api"] == {"status": 200, "text": ANSWER}
    messages = run.requests
    assert [r["path"] for r in messages] == ["/v1/messages"] * 2, messages  # the plain and the streamed call
    assert {r["credential_header"] for r in messages} == {"x-api-key"}
    assert {r["credential_sha256"] for r in messages} == {hashlib.sha256(MARKER.encode()).hexdigest()}

    needle = MARKER.encode()
    assert files_containing(run.folder, needle) == []
    assert files_containing(Path("/dev/shm"), needle) == []
    assert needle not in isolated_runs.trace.read_bytes()
    assert files_containing(Path(isolated_runs.env["AGENTVM_STATE_DIR"]), needle) == []
    assert files_containing(Path(isolated_runs.env["MULTIPASS_DOUBLE_DATA"]), needle) == []
    assert MARKER not in run.proc.stdout + run.proc.stderr


# -- 2: root in the VM cannot get out; the proxy admits what EGRESS names and nothing else --------------------


def test_run_root_in_the_vm_reaches_nothing_directly_even_after_flushing_its_firewall(allowlist_run, deny_run):
    for run in (allowlist_run, deny_run):
        flushed = run.report["host_flush"]
        assert flushed["done"] and {said["rc"] for said in flushed["host_said"].values()} == {0}, flushed
        assert probe_results(run) == [False] * 6, run.report["probes"]
    tools = allowlist_run.report["flush"]
    for tool in ("nft", "iptables"):  # where the guest has the tool, root's flush works (the double's has neither:
        if tools[tool]["present"]:  # host_flush did it for the agent, in the VM's network namespace)
            assert tools[tool]["rc"] == 0, tools
    spoof = allowlist_run.report["spoof"]
    assert "error" not in spoof, spoof
    assert [r["ok"] for r in spoof["from_own_address"]] == [True]  # the proxy port, from the VM's own address
    assert [r["ok"] for r in spoof["from_spoofed_address"]] == [False, False], spoof  # the same, and outside


def test_run_the_proxy_admits_the_named_host_and_refuses_the_others(allowlist_run, outside, model_mock):
    run = allowlist_run
    fetched = {f["url"]: f for f in run.report["fetch"]}
    allowed, tunnel, not_named, other_port = run.report["fetch"]
    assert (allowed["http_code"], allowed["body"]) == ("200", "outside 80 /allowed\n"), allowed
    assert (tunnel["http_connect"], tunnel["body"]) == ("200", "outside 443 /tunnel\n"), tunnel
    assert not_named["http_code"] == "403" and not_named["rc"] == 0, not_named
    assert other_port["http_code"] == "403", other_port
    assert len(fetched) == 4
    log = run.egress_log()
    decisions = [(x["kind"], x["host"], x["port"], x["decision"]) for x in log]
    upstream = model_mock.server_address[:2]
    assert decisions == [
        ("api", *upstream, "allowed"),
        ("api", *upstream, "allowed"),
        ("http", outside.address, 80, "allowed"),
        ("connect", outside.address, 443, "allowed"),
        ("http", "not-named.test", 80, "denied"),
        ("http", outside.address, 8080, "denied"),
    ], log
    assert [x["decision"] for x in log if x["host"] == "not-named.test"] == ["denied"]
    assert sum(x["decision"] == "allowed" for x in log) == 4 and sum(x["decision"] == "denied" for x in log) == 2
    assert MARKER not in (run.folder / "egress.log").read_text()


def test_run_a_stolen_token_of_a_finished_run_is_refused_everywhere(deny_run, allowlist_run, gateway):
    stolen = deny_run.report["steal"]
    assert stolen["api_of_the_finished_run"]["status"] is None, stolen  # its port is closed (and not allowed)
    assert stolen["api_of_this_run"]["status"] == 401, stolen
    assert stolen["proxy_of_the_finished_run"]["rc"] != 0 and stolen["proxy_of_the_finished_run"]["http_code"] in (
        "000",
        "",
    ), stolen
    assert stolen["proxy_of_this_run"]["http_code"] == "407", stolen
    gone = {int(allowlist_run.report["env"]["base_url"].rsplit(":", 1)[1]), int(deny_run.stolen["proxy"].split(":")[1])}
    assert listening(gateway) & gone == set()  # and on the host, the finished run's ports are closed
    assert deny_run.report["api"]["status"] == 200  # its own token works
    stolen_token = json.loads((allowlist_run.folder / "output" / "stolen.json").read_text())["token_reversed"][::-1]
    old = hashlib.sha256(stolen_token.encode()).hexdigest()
    assert [r["credential_sha256"] for r in deny_run.requests] == [hashlib.sha256(MARKER.encode()).hexdigest()]
    assert old not in json.dumps(deny_run.requests)
    [refused] = deny_run.report["fetch"]
    assert refused["http_code"] == "403", refused  # deny: the forward proxy admits no host
    log = deny_run.egress_log()
    assert [x["decision"] for x in log if x["kind"] == "api"] == ["unauthorized", "allowed"], log
    assert [(x["kind"], x["decision"]) for x in log if x["kind"] != "api"] == [
        ("http", "unauthorized"),
        ("http", "denied"),
    ], log


def test_run_the_record_counts_what_the_proxy_and_the_rules_did(allowlist_run, deny_run, outside):
    a = allowlist_run.record["egress"]
    assert a["mode"] == "allowlist" and a["allowed_hosts"] == [outside.address] and a["enforced"] is True
    assert (a["allowed"], a["denied"]) == (4, 2), a
    assert a["dropped_packets"] > 0, a
    b = deny_run.record["egress"]
    assert b["mode"] == "deny" and b["allowed_hosts"] == [] and b["enforced"] is True
    assert (b["allowed"], b["denied"]) == (1, 3), b  # its own API call; the stolen token twice, the outside host
    assert b["dropped_packets"] > 0, b
    assert not allowlist_run.rules_left and not deny_run.rules_left  # no rule of a finished run
    assert_no_rules_left(allowlist_run.run_id)
    assert_no_rules_left(deny_run.run_id)


def test_run_direct_credentials_allow_the_agents_api_host_through_the_proxy_and_nothing_more(isolated_runs, outside):
    """CREDENTIALS=direct (an explicit choice: the key enters the VM) under the default deny: the API host of the
    host's base URL is allowed through the forward proxy, with its port; other hosts stay refused."""
    key = f"sk-ant-direct-{uuid.uuid4().hex}"
    steps = [
        ["env", None],
        [
            "fetch",
            {"urls": [{"url": f"http://{outside.address}:8080/api-host"}, {"url": f"http://{outside.address}/"}]},
        ],
    ]
    env = {
        "CREDENTIALS": "direct",
        "AGENT_CREDENTIALS": "ANTHROPIC_API_KEY",
        "ANTHROPIC_API_KEY": key,
        "ANTHROPIC_BASE_URL": f"http://{outside.address}:8080",
    }
    run = isolated_runs.run(steps, env)
    assert run.proc.returncode == 0, run.proc.stderr[-4000:]
    assert run.record["credentials"] == {"mode": "direct", "names": ["ANTHROPIC_API_KEY"]}
    assert run.report["env"]["token_prefix"] == key[:8]  # the key itself, as asked
    api_host, other = run.report["fetch"]
    assert (api_host["http_code"], api_host["body"]) == ("200", "outside 8080 /api-host\n"), api_host
    assert other["http_code"] == "403", other
    egress = run.record["egress"]
    assert egress["mode"] == "allowlist" and egress["allowed_hosts"] == [f"{outside.address}:8080"], egress
    assert (egress["allowed"], egress["denied"], egress["enforced"]) == (1, 1, True), egress
    assert files_containing(run.folder, key.encode()) == []  # redacted from what came back
    assert_no_rules_left(run.run_id)


# -- 4: the proxy streams ------------------------------------------------------------------------------------


def test_run_a_slow_stream_reaches_the_agent_chunk_by_chunk(allowlist_run):
    got = allowlist_run.report["stream"]
    assert got["status"] == 200, got
    [sent] = [r for r in allowlist_run.responses if r.get("stream")]
    sent_times = [e["time"] for e in sent["events"] if e["delta"] is not None]
    arrived = [a["time"] for a in got["arrivals"]]
    assert len(sent_times) == len(arrived) == CHUNKS
    assert "".join(a["delta"] for a in got["arrivals"]) == ANSWER
    # Each chunk reached the agent before the mock sent the next one (the VM's clock is the host's): a proxy
    # that buffered would deliver them all after the last was sent.
    for i in range(CHUNKS - 1):
        assert arrived[i] < sent_times[i + 1], (arrived, sent_times)
    assert arrived[-1] - arrived[0] > 0.5 * (sent_times[-1] - sent_times[0]), (arrived, sent_times)


# -- 3: EGRESS=open goes out directly; nothing of a run outlives it, not even kill -9 --------------------------


def test_run_open_egress_reaches_the_outside_host_directly_and_sets_no_rules(isolated_runs, outside, model_mock):
    steps = [
        ["env", None],
        ["host_flush", None],
        ["probes", {"probes": direct_probes(outside, model_mock), "timeout": PROBE_TIMEOUT}],
    ]
    run = isolated_runs.run(steps, {"EGRESS": "open"})
    assert run.proc.returncode == 0, run.proc.stderr[-4000:]
    assert probe_results(run) == [True] * 6, run.report["probes"]  # the same probes that the other runs fail
    assert run.report["env"]["proxy_hostport"] is None  # no forward proxy in open mode
    egress = run.record["egress"]
    assert egress["mode"] == "open" and egress["enforced"] is False and egress["dropped_packets"] is None
    assert_no_rules_left(run.run_id)


def test_run_kill_9_then_make_clean_leaves_no_rule_instance_proxy_or_scratch(isolated_runs, model_mock, gateway):
    before_ports = listening(gateway)
    env = {
        "AGENT_CREDENTIALS": "ANTHROPIC_API_KEY",
        "ANTHROPIC_API_KEY": MARKER,
        "ANTHROPIC_BASE_URL": f"http://{gateway}:{model_mock.server_address[1]}",
    }
    folders = isolated_runs.folders()
    proc = isolated_runs.popen([["sleep", {"seconds": 600}]], env)
    try:
        seen = ""
        deadline = time.monotonic() + 600
        while "agent ..." not in seen and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
        assert "agent ..." in seen, seen
        [folder] = isolated_runs.folders() - folders
        run_id = folder.name
        time.sleep(2)
        proxy_ports = listening(gateway) - before_ports
        assert len(proxy_ports) == 2, proxy_ports  # the API port and the forward proxy
        assert nft_mentions(run_id)
        scratch = Path("/dev/shm") / f"agentvm-{run_id}"
        assert scratch.is_dir() and files_containing(scratch, MARKER.encode()) == []
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert nft_mentions(run_id)  # the orphaned VM stays fenced in until it is reaped
    assert instances(isolated_runs.env) == [f"{isolated_runs.env['AGENTVM_PREFIX']}-run-{run_id}"]
    assert scratch.is_dir()
    assert listening(gateway) & proxy_ports == set()  # the proxy died with its process
    clean = subprocess.run(
        ["make", "--no-print-directory", "clean"],
        cwd=REPO,
        env=isolated_runs.full_env(None),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert instances(isolated_runs.env) == []
    assert_no_rules_left(run_id)
    assert not scratch.exists()
    assert not (isolated_runs.runs / f".staging-{run_id}").exists()
    assert listening(gateway) & proxy_ports == set()
