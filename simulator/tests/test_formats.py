"""The double's formatters against Multipass 1.16.3's own expectations (no instances needed).

The inputs below rebuild the replies of ``tests/test_output_formatter.cpp`` (its ``construct_*``
functions); the expected outputs are that file's literals, copied into ``fixtures/formatter/`` under the
name of the test case (see ``fixtures/README.md``). The C++ suite replaces the creation-time display
with ``TimeUtil::ToString`` (RFC 3339), which is what the ``created`` strings here are.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from multipass_double import formats
from multipass_double.common import parse_size, valid_name
from multipass_double.formats import (
    FindReply,
    ImageInfo,
    InstanceDetails,
    ListedInstance,
    ListedSnapshot,
    Mount,
    SnapshotDetails,
    UpdateInfo,
    VersionReply,
)
from multipass_double.qtargs import Option, ParseError, parse

LITERALS = Path(__file__).parent / "fixtures" / "formatter"


def literal(name: str) -> str:
    return (LITERALS / f"{name}.txt").read_bytes().decode()


# -- the replies of test_output_formatter.cpp ---------------------------------------------------

SINGLE_INSTANCE_LIST = [
    ListedInstance(
        "foo",
        "Running",
        ipv4=("10.168.32.2", "200.3.123.30"),
        ipv6=("fdde:2681:7a2::4ca", "fe80::1c3c:b703:d561:a00"),
        release="16.04 LTS",
    )
]
MULTIPLE_INSTANCES_LIST = [
    ListedInstance("bogus-instance", "Running", ipv4=("10.21.124.56",), release="16.04 LTS"),
    ListedInstance("bombastic", "Stopped", release="18.04 LTS"),
]
UNSORTED_LIST = [
    ListedInstance("trusty-190611-1542", "Running", release="N/A"),
    ListedInstance("trusty-190611-1535", "Stopped", release="N/A"),
    ListedInstance("trusty-190611-1539", "Suspended"),
    ListedInstance("trusty-190611-1529", "Deleted"),
]
SINGLE_SNAPSHOT_LIST = [ListedSnapshot("foo", "snapshot1", comment="This is a sample comment", created=time.time())]
MULTIPLE_SNAPSHOTS_LIST = [
    ListedSnapshot("prosperous-spadefish", "snapshot10", parent="snapshot2", created=1672531200),
    ListedSnapshot("hale-roller", "rolling", parent="pristine", comment="Loaded with stuff", created=25425952800),
    ListedSnapshot(
        "hale-roller",
        "rocking",
        parent="pristine",
        comment="A very long comment that should be truncated by the table formatter",
        created=2209234259,
    ),
    ListedSnapshot("hale-roller", "pristine", comment="A first snapshot", created=409298914),
    ListedSnapshot(
        "prosperous-spadefish",
        "snapshot2",
        comment="Before restoring snap1\nContains a newline that\r\nshould be truncated",
        created=1671840000,
    ),
]

_ID_1604 = "1797c5c82016c1e65f4008fcf89deae3a044ef76087a9ec5b907c6d64a3609ac"
_ID_1804 = "ab5191cc172564e7cc0eafd397312a32598823e645279c820f0935393aead509"

SINGLE_INSTANCE_INFO = [
    InstanceDetails(
        "foo",
        "Running",
        image_hash=_ID_1604,
        image_release="16.04 LTS",
        release="Ubuntu 16.04.3 LTS",
        cpu_count="1",
        load="0.45 0.51 0.15",
        memory_usage="60817408",
        memory_total="1503238554",
        disk_usage="1288490188",
        disk_total="5153960756",
        ipv4=("10.168.32.2", "200.3.123.29"),
        ipv6=("2001:67c:1562:8007::aac:423a", "fd52:2ccf:f758:0:a342:79b5:e2ba:e05e"),
        num_snapshots=0,
        mounts=(
            Mount("/home/user/foo", "foo", ((1000, 1000),), ((1000, 1000),)),
            Mount("/home/user/test_dir", "test_dir", ((1000, 1000),), ((1000, 1000),)),
        ),
        longest_path_len=19,
    )
]
BOGUS_RUNNING = InstanceDetails(
    "bogus-instance",
    "Running",
    image_hash=_ID_1604,
    image_release="16.04 LTS",
    release="Ubuntu 16.04.3 LTS",
    cpu_count="4",
    load="0.03 0.10 0.15",
    memory_usage="38797312",
    memory_total="1610612736",
    disk_usage="1932735284",
    disk_total="6764573492",
    ipv4=("10.21.124.56",),
    num_snapshots=1,
    mounts=(Mount("/home/user/source", "source", ((1000, 501),), ((1000, 501),)),),
    longest_path_len=17,
)
BOMBASTIC_STOPPED = InstanceDetails(
    "bombastic", "Stopped", image_hash=_ID_1804, image_release="18.04 LTS", num_snapshots=3
)
MULTIPLE_INSTANCES_INFO = [BOGUS_RUNNING, BOMBASTIC_STOPPED]

_TWO_MOUNTS = (Mount("/home/user/source", "source"), Mount("/home/user", "Home"))
BOGUS_SNAPSHOT2 = SnapshotDetails(
    "bogus-instance",
    "snapshot2",
    cpu_count="2",
    disk_total="4.9GiB",
    memory_total="0.9GiB",
    parent="snapshot1",
    children=("snapshot3", "snapshot4"),
    mounts=_TWO_MOUNTS,
    created="1972-01-01T10:00:20.021Z",
    created_at=63108020.021,
)
SINGLE_SNAPSHOT_INFO = [
    SnapshotDetails(
        **{
            **BOGUS_SNAPSHOT2.__dict__,
            "comment": "This is a comment with some\nnew\r\nlines.",
            "size": "128MiB",
        }
    )
]
BLACK_HOLE = SnapshotDetails(
    "messier-87",
    "black-hole",
    cpu_count="1",
    disk_total="1024GiB",
    memory_total="128GiB",
    comment="Captured by EHT",
    created="2019-04-10T11:59:59Z",
    created_at=1554897599,
)
MULTIPLE_SNAPSHOTS_INFO = [BLACK_HOLE, BOGUS_SNAPSHOT2]
MIXED_INFO = [BOGUS_SNAPSHOT2, BOMBASTIC_STOPPED]
MULTIPLE_MIXED_INFO = [
    InstanceDetails(**{**BOGUS_RUNNING.__dict__, "num_snapshots": 2}),
    BOGUS_SNAPSHOT2,
    SnapshotDetails(
        "bogus-instance",
        "snapshot1",
        cpu_count="2",
        disk_total="4.9GiB",
        memory_total="0.9GiB",
        created="1972-01-01T09:59:59.021Z",
        created_at=63107999.021,
    ),
    BOMBASTIC_STOPPED,
    BLACK_HOLE,
]

LIST_CASES = {
    "list_empty": [],
    "list_single": SINGLE_INSTANCE_LIST,
    "list_multiple": MULTIPLE_INSTANCES_LIST,
    "list_unsorted": UNSORTED_LIST,
}
SNAPSHOT_LIST_CASES = {
    "list_snapshot_empty": [],
    "list_single_snapshot": SINGLE_SNAPSHOT_LIST,
    "list_multiple_snapshots": MULTIPLE_SNAPSHOTS_LIST,
}
INFO_CASES = {
    # test name: (details, the request's --snapshots flag)
    "info_empty": ([], False),
    "info_snapshot_empty": ([], True),
    "info_single_instance": (SINGLE_INSTANCE_INFO, False),
    "info_multiple_instances": (MULTIPLE_INSTANCES_INFO, False),
    "info_single_snapshot": (SINGLE_SNAPSHOT_INFO, False),
    "info_single_snapshot_info_reply": (SINGLE_SNAPSHOT_INFO, False),
    "info_multiple_snapshots": (MULTIPLE_SNAPSHOTS_INFO, False),
    "info_multiple_snapshot_info_reply": (MULTIPLE_SNAPSHOTS_INFO, False),
    "info_multiple_snapshots_info_reply": (MULTIPLE_SNAPSHOTS_INFO, False),
    "info_mixed_instance_and_snapshot": (MIXED_INFO, False),
    "info_mixed_instance_and_snapshot_info_reply": (MIXED_INFO, False),
    "info_multiple_mixed_instances_and_snapshots": (MULTIPLE_MIXED_INFO, False),
}

FIND_ONE = ImageInfo((("ubuntu", ""),), os="Ubuntu", release="18.04 LTS", version="20190516")
ANBOX = ImageInfo((("anbox-cloud-appliance", ""),), release="Anbox Cloud Appliance", version="latest")
FIND_CASES = {
    "find_empty": FindReply(),
    "find_empty_only_images": FindReply(show_blueprints=False),
    "find_empty_only_blueprints": FindReply(show_images=False),
    "find_one": FindReply(images=(FIND_ONE,), show_blueprints=False),
    "find_one_image": FindReply(images=(FIND_ONE,), show_blueprints=False),
    "find_one_blueprint": FindReply(blueprints=(ANBOX,)),
    "find_no_os": FindReply(
        images=(ImageInfo((("core18", "snapcraft"),), release="Snapcraft builder for core18", version="20190520"),)
    ),
    "find_multiple": FindReply(
        images=(
            ImageInfo((("ubuntu", ""), ("lts", "")), os="Ubuntu", release="18.04 LTS", version="20190516"),
            ImageInfo(
                (("19.10", "daily"), ("eoan", "daily"), ("devel", "daily")),
                os="Ubuntu",
                release="19.10",
                version="20190516",
            ),
        ),
        blueprints=(ANBOX,),
    ),
    "find_multiple_duplicate_image": FindReply(
        images=(
            ImageInfo((("core18", ""),), os="Ubuntu", release="Core 18", version="20190520"),
            ImageInfo((("core18", "snapcraft"),), release="Snapcraft builder for core18", version="20190520"),
        )
    ),
}
VERSION_CASES = {
    "version_client": VersionReply(),
    "version_daemon_no_updates": VersionReply("Daemon version"),
    "version_daemon_updates": VersionReply(
        "Daemon version",
        UpdateInfo(
            "update version number",
            "update title information",
            "update description information",
            "http://multipass.web",
        ),
    ),
}


def _cases(kind: str, table: dict, render: Callable) -> list:
    """One pytest param per literal ``<kind>_<test name>`` that exists for this reply table."""
    out = []
    for name, value in table.items():
        if (LITERALS / f"{kind}_{name}.txt").exists():
            out.append(pytest.param(f"{kind}_{name}", value, render, id=f"{kind}_{name}"))
    return out


def _all_cases() -> list:
    cases = []
    for kind in formats.FORMATS:
        cases += _cases(kind, LIST_CASES, lambda items, k=kind: formats.format_list(k, items))
        cases += _cases(kind, SNAPSHOT_LIST_CASES, lambda items, k=kind: formats.format_snapshots_list(k, items))
        cases += _cases(kind, INFO_CASES, lambda case, k=kind: formats.format_info(k, case[0], case[1]))
        cases += _cases(kind, FIND_CASES, lambda reply, k=kind: formats.format_find(k, reply))
        cases += _cases(kind, VERSION_CASES, lambda reply, k=kind: formats.format_version(k, "Client version", reply))
    return cases


CASES = _all_cases()


@pytest.mark.parametrize(("name", "reply", "render"), CASES)
def test_formatter_reproduces_multipass_literal_byte_for_byte(
    name: str, reply: Any, render: Callable[[Any], str]
) -> None:
    assert render(reply) == literal(name)


def test_every_literal_has_a_case() -> None:
    """No fixture is left unchecked (a literal without a case would be dead weight)."""
    covered = {p.values[0] for p in CASES}
    assert covered == {p.stem for p in LITERALS.glob("*.txt")}


@pytest.mark.parametrize("name", sorted(p.stem for p in LITERALS.glob("json_*.txt")))
def test_qt_json_reproduces_every_json_literal(name: str) -> None:
    import json

    text = literal(name)
    assert formats.qt_json(json.loads(text)) == text


# -- the primary instance first (test_output_formatter.cpp's PetenvFormatterSuite) ---------------


@pytest.mark.parametrize("fmt", ["table", "csv", "yaml"])
@pytest.mark.parametrize("prepend", [True, False])
def test_primary_instance_is_listed_first(fmt: str, prepend: bool) -> None:
    pet = ListedInstance("primary", "Deleted", release="Not Available")
    items = [pet, *UNSORTED_LIST] if prepend else [*UNSORTED_LIST, pet]
    first_row = formats.format_list(fmt, items).splitlines()[0 if fmt == "yaml" else 1]
    assert first_row.startswith("primary")


@pytest.mark.parametrize("fmt", ["table", "csv", "yaml"])
def test_primary_snapshots_are_listed_first(fmt: str) -> None:
    pet = ListedSnapshot("primary", "snapshot1", comment="An exemplary comment")
    first_row = formats.format_snapshots_list(fmt, [*MULTIPLE_SNAPSHOTS_LIST, pet]).splitlines()[
        0 if fmt == "yaml" else 1
    ]
    assert first_row.startswith("primary")


def test_primary_instance_details_come_first_then_its_snapshots_after_all_instances() -> None:
    pet = InstanceDetails("primary", "Suspended", image_hash="1234abcd" * 8, image_release="18.10")
    pet_snap = SnapshotDetails("primary", "snapshot1", created="x")
    out = formats.format_info("table", [*MULTIPLE_MIXED_INFO, pet_snap, pet], False)
    names = re.findall(r"^(?:Name|Instance):\s+(\S+)", out, re.MULTILINE)
    assert names == [
        "primary",
        "bogus-instance",
        "bombastic",
        "primary",
        "bogus-instance",
        "bogus-instance",
        "messier-87",
    ]


# -- details the literals do not cover -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ("", '""'),
        ("~", '"~"'),
        ("null", '"null"'),
        ("a: b", '"a: b"'),
        ("10:00", '"10:00"'),
        ("- x", '"- x"'),
        ("-x", "-x"),
        ("#x", '"#x"'),
        ("a #b", '"a #b"'),
        ("a#b", "a#b"),
        ("trailing ", '"trailing "'),
        ("tab\there", '"tab\\there"'),
        ("bell\x07", '"bell\\x07"'),
        ('say "hi"', 'say "hi"'),
        ("'q'", "\"'q'\""),
        ("ümlaut", "ümlaut"),
        ("nbsp\u00a0x", "nbsp\u00a0x"),
        ("nbsp\u00a0: x", '"nbsp\\xa0: x"'),
        ("c1\x80", '"c1\\x80"'),
    ],
)
def test_yaml_scalar_quoting_follows_yaml_cpp(text: str, expected: str) -> None:
    assert formats.emit_yaml({"k": text}) == f"k: {expected}\n"


def test_snapshot_table_truncates_on_bytes_like_std_string() -> None:
    comment = "é" * 30  # 60 bytes: cut after 49 bytes, in the middle of a character
    row = formats.snapshots_list_table([ListedSnapshot("a", "s", comment=comment)]).splitlines()[1]
    shown = row.split("--", 1)[1].strip()
    assert shown.encode("utf-8", "surrogateescape") == comment.encode()[:49] + "…".encode()


@pytest.mark.parametrize(
    ("size", "expected"),
    [(0, "0B"), (1023, "1023B"), (1024, "1.0KiB"), (1536, "1.5KiB"), (5 * 1024**3, "5.0GiB"), (1503238554, "1.4GiB")],
)
def test_human_readable(size: int, expected: str) -> None:
    assert formats.human_readable(size) == expected


# -- parsing helpers ---------------------------------------------------------------------------


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
def test_memory_size_syntax(text: str, expected: int | None) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("name", ["a", "agentvm-golden", "A1", "x-y-z9"])
def test_valid_names(name: str) -> None:
    assert valid_name(name)


# The names Multipass's own CLI tests reject (tests/cli/cli_launch_test.py).
@pytest.mark.parametrize("name", ["1nvalid-name", "invalid.name", "invalid$name", "invalid(name)", "invalid-name-", ""])
def test_invalid_names(name: str) -> None:
    assert not valid_name(name)


OPTS = (Option(("n", "name"), True), Option(("p", "purge")))


def test_qt_parser_options_anywhere_and_double_dash() -> None:
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
def test_qt_parser_error_texts(args: list[str], message: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(args, OPTS)
    assert str(info.value) == message
