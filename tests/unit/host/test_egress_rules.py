"""nftables script generation, parsing of ``nft -j`` listings, input validation, the macOS pf anchor."""

from __future__ import annotations

import pytest

from agentvm.host import egress, egress_checks, egress_nft
from agentvm.host.egress import EgressError, RunRules
from agentvm.host.egress_pf import pf_anchor

RULES = RunRules("20261121t221500-3f9c1a", "10.7.8.23", "10.7.8.1", (40001, 40002), "mpd0123abcd", "vb-run-3f9c")


def script_lines(text):
    return [line for line in text.splitlines() if line.strip()]


def test_render_has_every_rule_of_the_run():
    lines = script_lines(egress.render(RULES))
    rid = RULES.run_id
    tag = f"agentvm run={rid} addr=10.7.8.23 gw=10.7.8.1 ports=40001,40002"
    expected = [
        "add table inet agentvm",
        "add chain inet agentvm input { type filter hook input priority filter - 10; policy accept; }",
        "add chain inet agentvm forward { type filter hook forward priority filter - 10; policy accept; }",
        "add table bridge agentvm",
        "add chain bridge agentvm input { type filter hook input priority -210; policy accept; }",
        "add chain bridge agentvm forward { type filter hook forward priority -210; policy accept; }",
        f'add rule inet agentvm input ip saddr 10.7.8.23 jump in_{rid} comment "{tag}"',
        f'add rule inet agentvm forward ip saddr 10.7.8.23 jump fwd_{rid} comment "{tag}"',
        f'add rule inet agentvm in_{rid} ct state established,related counter accept comment "established"',
        f"add rule inet agentvm in_{rid} ip daddr 10.7.8.1 tcp dport {{ 40001, 40002 }} ct state new counter accept "
        'comment "proxy"',
        f'add rule inet agentvm in_{rid} meta l4proto tcp counter reject with tcp reset comment "deny-input"',
        f'add rule inet agentvm in_{rid} counter reject with icmpx type admin-prohibited comment "deny-input"',
        f'add rule inet agentvm fwd_{rid} meta l4proto tcp counter reject with tcp reset comment "deny-forward"',
        f'add rule inet agentvm fwd_{rid} counter reject with icmpx type admin-prohibited comment "deny-forward"',
        f'add rule bridge agentvm input iifname "vb-run-3f9c" jump port_{rid} comment '
        f'"agentvm run={rid} addr=10.7.8.23 br=mpd0123abcd"',
        f'add rule bridge agentvm forward iifname "vb-run-3f9c" counter drop comment '
        f'"agentvm run={rid} addr=10.7.8.23 br=mpd0123abcd lateral"',
        f'add rule bridge agentvm forward oifname "vb-run-3f9c" counter drop comment '
        f'"agentvm run={rid} addr=10.7.8.23 br=mpd0123abcd lateral"',
        f"add rule bridge agentvm port_{rid} ether type arp arp saddr ip 10.7.8.23 accept",
        f"add rule bridge agentvm port_{rid} ether type ip ip saddr 10.7.8.23 accept",
        f'add rule bridge agentvm port_{rid} counter drop comment "spoofed"',
    ]
    for line in expected:
        assert line in lines, line
    # the per-run chains are created and emptied before their rules: re-applying replaces, never duplicates
    for family, chain in (("inet", f"in_{rid}"), ("inet", f"fwd_{rid}"), ("bridge", f"port_{rid}")):
        add, flush = f"add chain {family} agentvm {chain}", f"flush chain {family} agentvm {chain}"
        assert (
            lines.index(add)
            < lines.index(flush)
            < min(i for i, x in enumerate(lines) if f" {chain} " in x + " " and x.startswith("add rule"))
        )
    # nothing accepts traffic of the VM to any other address or port of the host
    accepts = [x for x in lines if x.endswith("accept") or " accept comment" in x]
    assert all("established" in x or "10.7.8.1 tcp dport { 40001, 40002 }" in x or "port_" in x for x in accepts)


def test_render_deletes_the_runs_old_jump_rules_in_the_same_transaction():
    text = egress.render(RULES, replace_handles=[("inet", "input", 7), ("bridge", "forward", 12)])
    assert "delete rule inet agentvm input handle 7" in text
    assert "delete rule bridge agentvm forward handle 12" in text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("run_id", "Run-1"),
        ("run_id", "a;b"),
        ("run_id", "-a"),
        ("run_id", "a" * 65),
        ("run_id", 'x" accept'),
        ("address", "10.7.8"),
        ("address", "0.0.0.0"),
        ("address", "127.0.0.1"),
        ("address", "fe80::1"),
        ("address", "10.7.8.23 accept"),
        ("gateway", "10.7.8.1; flush ruleset"),
        ("ports", ()),
        ("ports", (0,)),
        ("ports", (70000,)),
        ("port", 'vb"x'),
        ("port", "a" * 16),
        ("port", "vb x"),
    ],
)
def test_render_refuses_values_it_cannot_carry_safely(field, value):
    values = dict(RULES.__dict__)
    values[field] = value
    with pytest.raises(EgressError):
        egress.render(RunRules(**values))


def test_render_refuses_a_bad_table_name():
    with pytest.raises(EgressError):
        egress.render(RULES, table="agentvm; flush ruleset")


def test_run_ids_of_the_pipeline_fit():
    from agentvm.run.request import new_run_id

    run_id = new_run_id()
    assert egress_checks.check_run_id(run_id) == run_id
    egress.render(RunRules(run_id, "10.200.255.254", "10.200.255.1", (65535, 65534, 65533), "mpd0123abcd", "vb-x"))


# A listing as `nft -j list table inet T` / `... bridge T` print it (trimmed to the fields the code reads).
LISTING = [
    {"metainfo": {"version": "1.0.6"}},
    {"table": {"family": "inet", "name": "agentvm", "handle": 3}},
    {"chain": {"family": "inet", "table": "agentvm", "name": "input", "handle": 1, "hook": "input"}},
    {"chain": {"family": "inet", "table": "agentvm", "name": "forward", "handle": 2, "hook": "forward"}},
    {"chain": {"family": "inet", "table": "agentvm", "name": "in_r1", "handle": 3}},
    {"chain": {"family": "inet", "table": "agentvm", "name": "fwd_r1", "handle": 4}},
    {"chain": {"family": "inet", "table": "agentvm", "name": "in_r2", "handle": 5}},
    {
        "rule": {
            "family": "inet", "table": "agentvm", "chain": "input", "handle": 10,
            "comment": "agentvm run=r1 addr=10.0.0.5 gw=10.0.0.1 ports=4000,4001", "expr": [],
        }
    },
    {
        "rule": {
            "family": "inet", "table": "agentvm", "chain": "forward", "handle": 11,
            "comment": "agentvm run=r1 addr=10.0.0.5 gw=10.0.0.1 ports=4000,4001", "expr": [],
        }
    },
    {
        "rule": {
            "family": "inet", "table": "agentvm", "chain": "input", "handle": 12,
            "comment": "agentvm run=r10 addr=10.0.0.6 gw=10.0.0.1 ports=5000", "expr": [],
        }
    },
    {"rule": {"family": "inet", "table": "agentvm", "chain": "in_r1", "handle": 20, "comment": "proxy",
              "expr": [{"counter": {"packets": 3, "bytes": 180}}, {"accept": None}]}},
    {"rule": {"family": "inet", "table": "agentvm", "chain": "in_r1", "handle": 21, "comment": "deny-input",
              "expr": [{"counter": {"packets": 2, "bytes": 120}}, {"reject": {"type": "tcp reset"}}]}},
    {"rule": {"family": "inet", "table": "agentvm", "chain": "in_r1", "handle": 22, "comment": "deny-input",
              "expr": [{"counter": {"packets": 1, "bytes": 84}}, {"reject": None}]}},
    {"rule": {"family": "inet", "table": "agentvm", "chain": "in_r2", "handle": 23, "comment": "deny-input",
              "expr": [{"counter": {"packets": 99, "bytes": 9900}}, {"reject": None}]}},
    {"chain": {"family": "bridge", "table": "agentvm", "name": "port_r1", "handle": 6}},
    {
        "rule": {
            "family": "bridge", "table": "agentvm", "chain": "input", "handle": 30,
            "comment": "agentvm run=r1 addr=10.0.0.5 br=mpd0123abcd",
            "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "vb-r1"}},
                     {"jump": {"target": "port_r1"}}],
        }
    },
    {
        "rule": {
            "family": "bridge", "table": "agentvm", "chain": "forward", "handle": 31,
            "comment": "agentvm run=r1 addr=10.0.0.5 br=mpd0123abcd lateral",
            "expr": [{"counter": {"packets": 4, "bytes": 400}}, {"drop": None}],
        }
    },
    {"rule": {"family": "bridge", "table": "agentvm", "chain": "port_r1", "handle": 32, "comment": "spoofed",
              "expr": [{"counter": {"packets": 5, "bytes": 500}}, {"drop": None}]}},
]  # fmt: skip


def test_runs_from_listing():
    runs = egress_nft.runs_from_listing(LISTING)
    assert runs == [
        RunRules("r1", "10.0.0.5", "10.0.0.1", (4000, 4001), "mpd0123abcd", "vb-r1"),
        RunRules("r10", "10.0.0.6", "10.0.0.1", (5000,), "", ""),
    ]


def test_counters_from_listing_sum_per_purpose_and_only_for_that_run():
    counters = egress_nft.counters_from_listing("r1", LISTING)
    assert counters == {
        "proxy": egress_nft.Counter(3, 180),
        "deny-input": egress_nft.Counter(3, 204),
        "lateral": egress_nft.Counter(4, 400),
        "spoofed": egress_nft.Counter(5, 500),
    }
    assert egress_nft.counters_from_listing("r3", LISTING) == {}


def test_removal_deletes_only_that_runs_rules_and_chains():
    lines = script_lines(egress_nft.render_removal("r1", LISTING))
    assert sorted(lines) == sorted(
        [
            "delete rule inet agentvm input handle 10",
            "delete rule inet agentvm forward handle 11",
            "delete rule bridge agentvm input handle 30",
            "delete rule bridge agentvm forward handle 31",
            "delete chain inet agentvm in_r1",
            "delete chain inet agentvm fwd_r1",
            "delete chain bridge agentvm port_r1",
        ]
    )
    assert egress_nft.render_removal("r3", LISTING) == ""  # idempotent: nothing of that run


def test_probe_reports_problems_with_fixes(monkeypatch):
    monkeypatch.setattr(egress.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(egress.shutil, "which", lambda name: None)
    result = egress.probe()
    assert not result.ok
    assert any("not root" in p for p in result.problems)
    assert any("apt-get install nftables" in p for p in result.problems)
    assert "cannot be enforced" in result.summary()


def test_probe_on_macos_points_at_pf(monkeypatch):
    monkeypatch.setattr(egress.platform, "system", lambda: "Darwin")
    result = egress.probe()
    assert not result.ok
    assert "pf anchor" in result.problems[0]


def test_pf_anchor_text_and_commands():
    anchor = pf_anchor("20261121t221500-3f9c1a", "192.168.64.7", "192.168.64.1", [40002, 40001])
    assert anchor.name == "agentvm/20261121t221500-3f9c1a"
    lines = anchor.rules.splitlines()
    assert lines[1:] == [
        "pass out quick on bridge100 inet from 192.168.64.1 to 192.168.64.7 keep state",
        "pass in quick on bridge100 inet proto tcp from 192.168.64.7 to 192.168.64.1 port { 40001 40002 } "
        "flags S/SA keep state",
        "block return in quick on bridge100 inet from 192.168.64.7 to any",
    ]
    assert anchor.load == ["pfctl", "-a", "agentvm/20261121t221500-3f9c1a", "-f", "-"]
    assert anchor.unload == ["pfctl", "-a", "agentvm/20261121t221500-3f9c1a", "-F", "all"]
    assert "sudo pfctl -a agentvm/20261121t221500-3f9c1a -F all" in anchor.commands()


@pytest.mark.parametrize(
    "args",
    [
        ("x;y", "192.168.64.7", "192.168.64.1", [1]),
        ("r", "192.168.64.7 to any", "192.168.64.1", [1]),
        ("r", "192.168.64.7", "192.168.64.1", []),
    ],
)
def test_pf_anchor_refuses_bad_values(args):
    with pytest.raises(EgressError):
        pf_anchor(*args)


def test_pf_anchor_refuses_a_bad_interface():
    with pytest.raises(EgressError):
        pf_anchor("r", "192.168.64.7", "192.168.64.1", [1], interface="bridge100 all")
