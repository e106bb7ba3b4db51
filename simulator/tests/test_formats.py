"""The double's output layer against Multipass's own literals (no instances needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multipass_double import formats
from multipass_double.common import parse_size, valid_name
from multipass_double.qtargs import Option, ParseError, parse

FIXTURES = Path(__file__).parent / "fixtures"


def literal(name: str) -> str:
    return (FIXTURES / f"{name}.json").read_text()


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.json")))
def test_qt_json_reproduces_every_literal_byte_for_byte(name):
    text = literal(name)
    assert formats.qt_json(json.loads(text)) == text


def test_list_json_from_entries_matches_literal():
    entries = [
        {"name": "bogus-instance", "state": "Running", "ipv4": ["10.21.124.56"], "release": "16.04 LTS"},
        {"name": "bombastic", "state": "Stopped", "ipv4": [], "release": "18.04 LTS"},
    ]
    assert formats.list_json(entries) == literal("list_multiple")
    assert formats.list_json([]) == literal("list_empty")


def _stopped_bombastic() -> dict:
    return {
        "name": "bombastic",
        "state": "Stopped",
        "image_hash": "ab5191cc172564e7cc0eafd397312a32598823e645279c820f0935393aead509",
        "image_release": "18.04 LTS",
        "release": "",
        "cpu_count": "",
        "snapshot_count": 3,
        "load": [],
        "disk_used": "",
        "disk_total": "",
        "memory_used": "",
        "memory_total": "",
        "ipv4": [],
    }


def test_info_json_of_a_stopped_instance_matches_the_literals_entry():
    expected = json.loads(literal("info_multiple_instances"))["info"]["bombastic"]
    produced = json.loads(formats.info_json([_stopped_bombastic()], []))["info"]["bombastic"]
    assert produced == expected
    assert formats.info_json([], []) == literal("info_empty")


def test_info_json_of_a_running_instance_has_the_literals_types():
    running = {
        **_stopped_bombastic(),
        "name": "bogus-instance",
        "state": "Running",
        "cpu_count": "4",
        "load": [0.03, 0.1, 0.15],
        "disk_used": "1932735284",
        "disk_total": "6764573492",
        "memory_used": 38797312,
        "memory_total": 1610612736,
        "ipv4": ["10.21.124.56"],
    }
    produced = json.loads(formats.info_json([running], []))["info"]["bogus-instance"]
    expected = json.loads(literal("info_multiple_instances"))["info"]["bogus-instance"]
    for key in ("cpu_count", "load", "disks", "memory", "ipv4"):
        assert produced[key] == expected[key], key


def test_table_list_layout_matches_reference():
    entries = [
        {"name": "bogus-instance", "state": "Running", "ipv4": ["10.21.124.56"], "release": "16.04 LTS"},
        {"name": "bombastic", "state": "Stopped", "ipv4": [], "release": "18.04 LTS"},
    ]
    assert formats.list_table(entries) == (
        "Name                    State             IPv4             Image\n"
        "bogus-instance          Running           10.21.124.56     Ubuntu 16.04 LTS\n"
        "bombastic               Stopped           --               Ubuntu 18.04 LTS\n"
    )
    assert formats.list_table([]) == "No instances found.\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1G", 1024**3),
        ("512M", 512 * 1024**2),
        ("1.5G", 1536 * 1024**2),
        ("42MiB", 42 * 1024**2),
        ("1234B", 1234),
        ("1234", 1234),
        ("0.5g", 512 * 1024**2),
        ("1CiG", None),
        ("G", None),
        ("-1G", None),
    ],
)
def test_memory_size_syntax(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("name", ["a", "agentvm-golden", "A1", "x-y-z9"])
def test_valid_names(name):
    assert valid_name(name)


# The names Multipass's own CLI tests reject (tests/cli/cli_launch_test.py).
@pytest.mark.parametrize("name", ["1nvalid-name", "invalid.name", "invalid$name", "invalid(name)", "invalid-name-", ""])
def test_invalid_names(name):
    assert not valid_name(name)


OPTS = (Option(("n", "name"), True), Option(("p", "purge")))


def test_qt_parser_options_anywhere_and_double_dash():
    parsed = parse(["a", "--name", "x", "b", "-p", "--", "-c", "--name"], OPTS)
    assert parsed.positionals == ["a", "b", "-c", "--name"]
    assert parsed.value("name") == "x"
    assert parsed.is_set("purge")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-x"], "Unknown option 'x'."),
        (["-la"], "Unknown options: l, a."),
        (["--name"], "Missing value after '--name'."),
        (["--bogus"], "Unknown option 'bogus'."),
    ],
)
def test_qt_parser_error_texts(args, message):
    with pytest.raises(ParseError) as info:
        parse(args, OPTS)
    assert str(info.value) == message
