"""EGRESS / CREDENTIALS parsing and allowlist matching (case tables, tricky hosts included)."""

from __future__ import annotations

import pytest

from agentvm.host.isolation import (
    Allowlist,
    HostRule,
    normalize_host,
    parse_credentials,
    parse_egress,
    split_host_port,
)

RULES = "pkgs.example,*.files-host.example,api.example.com:8443,203.0.113.7,[2001:db8::1]:443,Mixed.Case.ORG."

# (host as the VM wrote it, port, via, allowed?)
CASES = [
    ("pkgs.example", 443, "connect", True),
    ("PKGS.EXAMPLE", 443, "connect", True),
    ("pkgs.example.", 443, "connect", True),  # one trailing dot: the same name
    ("pkgs.example..", 443, "connect", False),
    ("pkgs.example", 80, "http", True),  # no port in the rule: 80 for plain HTTP
    ("pkgs.example", 80, "connect", False),  # ... but CONNECT only to 443
    ("pkgs.example", 8443, "connect", False),
    ("pkgs.example", 22, "connect", False),
    ("www.pkgs.example", 443, "connect", False),  # exact rule: no subdomains
    ("evil.com.pkgs.example", 443, "connect", False),  # still exact: not the name in the rule
    ("pkgs.example.evil.com", 443, "connect", False),
    ("evilpkgs.example", 443, "connect", False),
    ("pkgs.example@evil.com", 443, "connect", False),
    ("pkgs.example:443", 443, "connect", False),  # a port inside the host text is not a host
    ("files.files-host.example", 443, "connect", True),
    ("a.b.files.files-host.example", 443, "connect", True),
    ("evil.com.files-host.example", 443, "connect", True),  # a name below the suffix: allowed by design
    ("files-host.example", 443, "connect", False),  # '*.' does not include the apex
    ("xfiles-host.example", 443, "connect", False),
    ("files-host.example.evil.com", 443, "connect", False),
    ("files.files-host.example.", 443, "connect", True),
    ("FILES.Files-Host.Example", 443, "connect", True),
    ("api.example.com", 8443, "connect", True),  # explicit port: exactly that port
    ("api.example.com", 443, "connect", False),
    ("api.example.com", 8443, "http", True),
    ("203.0.113.7", 443, "connect", True),
    ("203.0.113.8", 443, "connect", False),
    ("203.000.113.007", 443, "connect", False),  # not a canonical dotted quad
    ("3405803783", 443, "connect", False),  # 203.0.113.7 as an integer: refused, never matched
    ("0xcb.0.113.7", 443, "connect", False),
    ("::ffff:203.0.113.7", 443, "connect", True),  # IPv4-mapped: the same address
    ("[2001:db8::1]", 443, "connect", True),
    ("2001:db8:0::1", 443, "connect", True),
    ("[2001:db8::2]", 443, "connect", False),
    ("mixed.case.org", 443, "connect", True),
    ("", 443, "connect", False),
    ("pkgs.example\x00.evil.com", 443, "connect", False),
    ("pkgs.\u0435xample", 443, "connect", False),  # a Cyrillic e
    ("-pkgs.example", 443, "connect", False),
    ("pkgs_example", 443, "connect", False),
    ("localhost", 443, "connect", False),
]


@pytest.mark.parametrize(("host", "port", "via", "allowed"), CASES)
def test_allowlist_case_table(host, port, via, allowed):
    assert Allowlist.parse(RULES).allows(host, port, via) is allowed


def test_empty_allowlist_allows_nothing():
    assert not Allowlist.parse("").allows("pkgs.example", 443)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("Pkgs.Example.", "pkgs.example"),
        ("[::1]", "::1"),
        ("2001:DB8::0:1", "2001:db8::1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", None),
        ("2130706433", None),
        ("0x7f000001", None),
        ("a..b", None),
        ("a" * 64 + ".com", None),
        ("[10.0.0.1]", None),
        ("exa mple.com", None),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ],
)
def test_normalize_host(raw, canonical):
    assert normalize_host(raw) == canonical


@pytest.mark.parametrize(
    "entry",
    [
        "*",
        "*.",
        "*:443",
        "*.com.",
        "pkgs.example:0",
        "pkgs.example:65536",
        "pkgs.example:https",
        "*.10.0.0.1",
        "a b",
        "[::1",
        "http://x",
    ],
)
def test_bad_rules_are_refused_with_a_reason(entry):
    with pytest.raises(ValueError) as caught:
        HostRule.parse(entry)
    assert entry.strip() in str(caught.value) or "*" in str(caught.value)


def test_rule_round_trip_text():
    assert str(Allowlist.parse("A.com , *.B.org:8443,[2001:db8::1]:443,,")) == "a.com,*.b.org:8443,[2001:db8::1]:443"


def test_split_host_port():
    assert split_host_port("h:1") == ("h", 1)
    assert split_host_port("[::1]:2") == ("[::1]", 2)
    assert split_host_port("::1") == ("::1", None)
    with pytest.raises(ValueError):
        split_host_port("[::1]x")


@pytest.mark.parametrize(
    ("value", "mode", "text"),
    [
        (None, "deny", "deny"),
        ("", "deny", "deny"),
        (" deny ", "deny", "deny"),
        ("open", "open", "open"),
        ("OPEN", "open", "open"),
        ("pkgs.example, *.mirror.example", "allowlist", "allowlist: pkgs.example,*.mirror.example"),
        (",,", "deny", "deny"),
    ],
)
def test_parse_egress(value, mode, text):
    policy = parse_egress(value)
    assert policy.mode == mode
    assert policy.describe() == text
    assert policy.enforced is (mode != "open")


def test_parse_egress_error_names_the_fix():
    with pytest.raises(ValueError, match=r"EGRESS=open.*EGRESS=host1"):
        parse_egress("pkgs.example,bad host")


def test_with_hosts_adds_api_hosts_but_not_in_open_mode():
    assert parse_egress("").with_hosts(["api.example.com"]).allowlist.allows("api.example.com", 443)
    assert parse_egress("open").with_hosts(["api.example.com"]).mode == "open"
    merged = parse_egress("pkgs.example").with_hosts(["pkgs.example", "x.org"])
    assert str(merged.allowlist) == "pkgs.example,x.org"


@pytest.mark.parametrize(("value", "mode"), [(None, "proxy"), ("", "proxy"), ("Proxy", "proxy"), ("direct", "direct")])
def test_parse_credentials(value, mode):
    assert parse_credentials(value) == mode


def test_parse_credentials_refuses_unknown():
    with pytest.raises(ValueError, match="CREDENTIALS=proxy"):
        parse_credentials("vault")
