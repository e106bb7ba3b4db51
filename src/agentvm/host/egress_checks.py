"""The values that go into a run's firewall rules (nftables or pf), each checked so that it can only ever be
what it claims to be: nothing a caller passes can add words to a rule."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

RUN_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class EgressError(RuntimeError):
    """Egress rules cannot be set up or changed (the message says why and what to do)."""


def check_run_id(run_id: str) -> str:
    if not RUN_ID.match(run_id):
        raise EgressError(f"run id {run_id!r}: lower-case letters, digits and '-', 1-64 characters")
    return run_id


def check_ipv4(value: str, what: str) -> str:
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        raise EgressError(f"{what} {value!r} is not an IPv4 address") from None
    if address.is_unspecified or address.is_multicast or address.is_loopback:
        raise EgressError(f"{what} {value} cannot be a VM's or bridge's address")
    return str(address)


def check_ports(ports: Iterable[int]) -> tuple[int, ...]:
    given = list(ports)
    found = tuple(sorted({int(p) for p in given}))
    if not found or not all(1 <= p <= 65535 for p in found):
        raise EgressError(f"proxy ports {given}: give at least one port from 1 to 65535")
    return found


def check_ifname(value: str, what: str) -> str:
    if not IFNAME.match(value):
        raise EgressError(f"{what} {value!r} is not an interface name nftables rules can carry")
    return value


def check_table(value: str) -> str:
    if not TABLE_NAME.match(value):
        raise EgressError(f"table name {value!r}: lower-case letters, digits and '_', starting with a letter")
    return value
