"""``list``/``info`` in every ``--format`` through the CLI, with real instances in a data folder of their own.

The layouts are those of Multipass 1.16.3's formatters (``src/client/cli/formatter/*.cpp``, asserted
against its test literals in ``test_formats.py``); here they are filled in by hand with the values the
instances must show: their names and sizes (given at launch), the image release, snapshot names and
comments. The few values only the instance knows (its address, image hash, creation times) are read
once from ``--format json`` and then must appear, identically, in every other format.
"""

from __future__ import annotations

import calendar
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import DOUBLE_ADMIN, DOUBLE_BIN, REPO

pytestmark = pytest.mark.double

RUN, SNAP = "fmt-run", "fmt-snap"
COMMENT = "a: b\nsecond line"
C_LOCALE_TIME = re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4} UTC")

Run = Callable[..., subprocess.CompletedProcess]
FmtDouble = tuple[Run, dict[str, str]]


@pytest.fixture(scope="module")
def fmt_double(double_env: dict[str, str]) -> Iterator[tuple[Run, dict[str, str]]]:
    """A data folder with RUN (running) and SNAP (stopped, snapshots ``first`` with COMMENT, then
    ``snapshot2`` without one); C locale and UTC so that creation times have one spelling."""
    env = dict(double_env, LC_ALL="C", TZ="UTC")
    data = REPO / ".cache" / f"test-formats-{uuid.uuid4().hex[:8]}"
    env["MULTIPASS_DOUBLE_DATA"] = str(data)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(DOUBLE_BIN), *args], capture_output=True, text=True, env=env, timeout=600, check=False
        )

    try:
        for name in (RUN, SNAP):
            proc = run("launch", "--name", name)
            assert proc.returncode == 0, proc.stderr
        assert run("stop", SNAP).returncode == 0
        taken = [time.time()]
        assert run("snapshot", SNAP, "--name", "first", "--comment", COMMENT).returncode == 0
        assert run("snapshot", SNAP).returncode == 0
        taken.append(time.time())
        facts = _facts(run, taken)
        yield run, facts
    finally:
        subprocess.run(
            [sys.executable, str(DOUBLE_ADMIN), "down", "--data", str(data), "--purge", "--quiet"],
            check=False,
            timeout=300,
        )


def _facts(run: Run, taken: list[float]) -> dict[str, str]:
    info = json.loads(run("info", RUN, SNAP, "--format", "json").stdout)["info"]
    snaps = json.loads(run("info", SNAP, "--snapshots", "--format", "json").stdout)["info"][SNAP]["snapshots"]
    facts = {
        "ip": info[RUN]["ipv4"][0],
        "hash_run": info[RUN]["image_hash"],
        "hash_snap": info[SNAP]["image_hash"],
        "created_first": snaps["first"]["created"],
        "created_2": snaps["snapshot2"]["created"],
    }
    for key in ("created_first", "created_2"):
        assert C_LOCALE_TIME.fullmatch(facts[key]), facts[key]
        shown = calendar.timegm(time.strptime(facts[key], "%a %b %d %H:%M:%S %Y %Z"))
        assert taken[0] - 2 <= shown <= taken[1] + 2
    return facts


def out(run: Run, *args: str) -> str:
    proc = run(*args)
    assert (proc.returncode, proc.stderr) == (0, ""), args
    return proc.stdout


# -- list ------------------------------------------------------------------------------------


def test_list_csv_quotes_all_ipv4(fmt_double: FmtDouble) -> None:
    run, f = fmt_double
    assert out(run, "list", "--format", "csv") == (
        "Name,State,IPv4,IPv6,Release,AllIPv4\n"
        f'{RUN},Running,{f["ip"]},,Ubuntu 24.04 LTS,"{f["ip"]}"\n'
        f'{SNAP},Stopped,,,Ubuntu 24.04 LTS,""\n'
    )


def test_list_yaml(fmt_double: FmtDouble) -> None:
    run, f = fmt_double
    assert out(run, "list", "--format", "yaml") == (
        f"{RUN}:\n  - state: Running\n    ipv4:\n      - {f['ip']}\n    release: Ubuntu 24.04 LTS\n"
        f"{SNAP}:\n  - state: Stopped\n    ipv4:\n      []\n    release: Ubuntu 24.04 LTS\n"
    )


def test_list_table(fmt_double: FmtDouble) -> None:
    run, f = fmt_double
    assert out(run, "list") == (
        "Name                    State             IPv4             Image\n"
        f"{RUN:<24}Running           {f['ip']:<17}Ubuntu 24.04 LTS\n"
        f"{SNAP:<24}Stopped           --               Ubuntu 24.04 LTS\n"
    )


def test_list_no_ipv4_leaves_addresses_out(fmt_double: FmtDouble) -> None:
    run, _ = fmt_double
    assert f'{RUN},Running,,,Ubuntu 24.04 LTS,""\n' in out(run, "list", "--no-ipv4", "--format", "csv")


# -- list --snapshots ------------------------------------------------------------------------


def test_list_snapshots_csv(fmt_double: FmtDouble) -> None:
    run, _ = fmt_double
    assert out(run, "list", "--snapshots", "--format", "csv") == (
        f'Instance,Snapshot,Parent,Comment\n{SNAP},first,,"{COMMENT}"\n{SNAP},snapshot2,first,""\n'
    )


def test_list_snapshots_yaml(fmt_double: FmtDouble) -> None:
    run, _ = fmt_double
    assert out(run, "list", "--snapshots", "--format", "yaml") == (
        f"{SNAP}:\n"
        "  - first:\n"
        "      - parent: ~\n"
        '        comment: "a: b\\nsecond line"\n'
        "  - snapshot2:\n"
        "      - parent: first\n"
        "        comment: ~\n"
    )


def test_list_snapshots_table_cuts_the_comment_at_its_first_line_break(fmt_double: FmtDouble) -> None:
    run, _ = fmt_double
    assert out(run, "list", "--snapshots") == (
        "Instance   Snapshot    Parent   Comment\n"
        f"{SNAP}   first       --       a: b…\n"
        f"{SNAP}   snapshot2   first    --\n"
    )


def test_list_snapshots_json(fmt_double: FmtDouble) -> None:
    run, _ = fmt_double
    assert out(run, "list", "--snapshots", "--format", "json") == (
        "{\n"
        '    "errors": [\n'
        "    ],\n"
        '    "info": {\n'
        f'        "{SNAP}": {{\n'
        '            "first": {\n'
        '                "comment": "a: b\\nsecond line",\n'
        '                "parent": ""\n'
        "            },\n"
        '            "snapshot2": {\n'
        '                "comment": "",\n'
        '                "parent": "first"\n'
        "            }\n"
        "        }\n"
        "    }\n"
        "}\n"
    )


# -- info of instances -------------------------------------------------------------------------


def test_info_csv_of_a_stopped_instance(fmt_double: FmtDouble) -> None:
    run, f = fmt_double
    assert out(run, "info", SNAP, "--format", "csv") == (
        "Name,State,Ipv4,Ipv6,Release,Image hash,Image release,Load,Disk usage,Disk total,Memory usage,"
        "Memory total,Mounts,AllIPv4,CPU(s),Snapshots\n"
        f"{SNAP},Stopped,,,,{f['hash_snap']},24.04 LTS,,,,,,,,,2\n"
    )


def test_info_csv_of_a_running_instance(fmt_double: FmtDouble) -> None:
    run, f = fmt_double
    row = out(run, "info", RUN, "--format", "csv").splitlines()[1]
    pattern = (
        rf"{RUN},Running,{re.escape(f['ip'])},,Debian GNU/Linux 13 \(trixie\),{f['hash_run']},24\.04 LTS,"
        rf"\d+\.\d\d \d+\.\d\d \d+\.\d\d,\d+,{5 * 1024**3},\d+,{1024**3},,{re.escape(f['ip'])},1,0"
    )
    assert re.fullmatch(pattern, row), row


def test_info_yaml_of_a_stopped_instance(fmt_double: FmtDouble) -> None:
    run, f = fmt_double
    assert out(run, "info", SNAP, "--format", "yaml") == (
        "errors:\n"
        "  - ~\n"
        f"{SNAP}:\n"
        "  - state: Stopped\n"
        "    snapshot_count: 2\n"
        f"    image_hash: {f['hash_snap']}\n"
        "    image_release: 24.04 LTS\n"
        "    release: ~\n"
        "    cpu_count: ~\n"
        "    disks:\n"
        "      - sda1:\n"
        "          used: ~\n"
        "          total: ~\n"
        "    memory:\n"
        "      usage: ~\n"
        "      total: ~\n"
        "    ipv4:\n"
        "      []\n"
        "    mounts: ~\n"
    )


def test_info_yaml_of_a_running_instance_keeps_the_load_as_printed(fmt_double: FmtDouble) -> None:
    run, f = fmt_double
    text = out(run, "info", RUN, "--format", "yaml")
    pattern = (
        r"errors:\n  - ~\n"
        rf"{RUN}:\n  - state: Running\n    snapshot_count: 0\n    image_hash: {f['hash_run']}\n"
        r"    image_release: 24\.04 LTS\n    release: Debian GNU/Linux 13 \(trixie\)\n    cpu_count: 1\n"
        r"    load:\n(?:      - \d+\.\d\d\n){3}"
        rf"    disks:\n      - sda1:\n          used: \d+\n          total: {5 * 1024**3}\n"
        rf"    memory:\n      usage: \d+\n      total: {1024**3}\n"
        rf"    ipv4:\n      - {re.escape(f['ip'])}\n    mounts: ~\n"
    )
    assert re.fullmatch(pattern, text), text


def test_info_table_of_both_instances(fmt_double: FmtDouble) -> None:
    run, f = fmt_double
    text = out(run, "info", SNAP, RUN)
    pattern = (
        rf"Name:           {RUN}\nState:          Running\nSnapshots:      0\nIPv4:           {re.escape(f['ip'])}\n"
        r"Release:        Debian GNU/Linux 13 \(trixie\)\n"
        rf"Image hash:     {f['hash_run'][:12]} \(Ubuntu 24\.04 LTS\)\nCPU\(s\):         1\n"
        r"Load:           \d+\.\d\d \d+\.\d\d \d+\.\d\d\n"
        r"Disk usage:     \d+\.\d[KMG]iB out of 5\.0GiB\nMemory usage:   \d+\.\d[KMG]iB out of 1\.0GiB\n"
        r"Mounts:         --\n"
        r"\n"
        rf"Name:           {SNAP}\nState:          Stopped\nSnapshots:      2\nIPv4:           --\n"
        rf"Release:        --\nImage hash:     {f['hash_snap'][:12]} \(Ubuntu 24\.04 LTS\)\nCPU\(s\):         --\n"
        r"Load:           --\nDisk usage:     --\nMemory usage:   --\nMounts:         --\n"
    )
    assert re.fullmatch(pattern, text), text


# -- info of snapshots -------------------------------------------------------------------------


def test_info_snapshots_csv(fmt_double: FmtDouble) -> None:
    run, f = fmt_double
    assert out(run, "info", SNAP, "--snapshots", "--format", "csv") == (
        "Snapshot,Instance,CPU(s),Disk space,Memory size,Mounts,Created,Parent,Children,Comment\n"
        f'first,{SNAP},1,5.0GiB,1.0GiB,,{f["created_first"]},,snapshot2,"{COMMENT}"\n'
        f'snapshot2,{SNAP},1,5.0GiB,1.0GiB,,{f["created_2"]},first,,""\n'
    )


def test_info_snapshots_table(fmt_double: FmtDouble) -> None:
    run, f = fmt_double
    assert out(run, "info", SNAP, "--snapshots") == (
        f"Snapshot:       first\nInstance:       {SNAP}\nCPU(s):         1\nDisk space:     5.0GiB\n"
        f"Memory size:    1.0GiB\nMounts:         --\nCreated:        {f['created_first']}\nParent:         --\n"
        "Children:       snapshot2\nComment:        a: b\n                second line\n"
        "\n"
        f"Snapshot:       snapshot2\nInstance:       {SNAP}\nCPU(s):         1\nDisk space:     5.0GiB\n"
        f"Memory size:    1.0GiB\nMounts:         --\nCreated:        {f['created_2']}\nParent:         first\n"
        "Children:       --\nComment:        --\n"
    )


def test_info_snapshots_yaml(fmt_double: FmtDouble) -> None:
    run, f = fmt_double
    assert out(run, "info", f"{SNAP}.snapshot2", "--format", "yaml") == (
        "errors:\n"
        "  - ~\n"
        f"{SNAP}:\n"
        "  - snapshots:\n"
        "      - snapshot2:\n"
        "          size: ~\n"
        "          cpu_count: 1\n"
        "          disk_space: 5.0GiB\n"
        "          memory_size: 1.0GiB\n"
        "          mounts: ~\n"
        f'          created: "{f["created_2"]}"\n'
        "          parent: first\n"
        "          children:\n"
        "            []\n"
        "          comment: ~\n"
    )


def test_info_instance_and_its_snapshot_share_one_json_object(fmt_double: FmtDouble) -> None:
    run, f = fmt_double
    doc = json.loads(out(run, "info", SNAP, f"{SNAP}.first", "--format", "json"))
    entry = doc["info"][SNAP]
    assert entry["state"] == "Stopped" and entry["snapshot_count"] == "2"
    assert entry["snapshots"] == {
        "first": {
            "children": ["snapshot2"],
            "comment": COMMENT,
            "cpu_count": "1",
            "created": f["created_first"],
            "disk_space": "5.0GiB",
            "memory_size": "1.0GiB",
            "mounts": {},
            "parent": "",
            "size": "",
        }
    }


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("table", "No snapshots found.\n"),
        ("csv", ""),
        ("yaml", "errors:\n  - ~\n"),
        ("json", '{\n    "errors": [\n    ],\n    "info": {\n    }\n}\n'),
    ],
)
def test_info_snapshots_of_an_instance_without_any(fmt_double: FmtDouble, fmt: str, expected: str) -> None:
    run, _ = fmt_double
    assert out(run, "info", RUN, "--snapshots", "--format", fmt) == expected


def test_info_errors(fmt_double: FmtDouble) -> None:
    run, f = fmt_double
    proc = run("info", f"{RUN}.nope")
    expected = f"info failed: The following errors occurred:\nNo such snapshot: {RUN}.nope\n"
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", expected)
    proc = run("info", RUN, f"{SNAP}.first", "--format", "csv")
    expected = "Mixed snapshot and instance arguments are not supported with CSV format\n"
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", expected)
    # with --snapshots the same arguments are fine: only snapshot rows
    assert out(run, "info", RUN, f"{SNAP}.first", "--snapshots", "--format", "csv") == (
        "Snapshot,Instance,CPU(s),Disk space,Memory size,Mounts,Created,Parent,Children,Comment\n"
        f'first,{SNAP},1,5.0GiB,1.0GiB,,{f["created_first"]},,snapshot2,"{COMMENT}"\n'
    )


# -- find and version (no instance involved) ---------------------------------------------------


def test_find_csv_and_yaml(fmt_double: FmtDouble) -> None:
    run, _ = fmt_double
    assert out(run, "find", "--format", "csv") == (
        "Image,Remote,Aliases,OS,Release,Version,Type\n"
        "24.04,,noble;lts,Ubuntu,24.04 LTS,20260501,Cloud Image\n"
        "22.04,,jammy,Ubuntu,22.04 LTS,20260501,Cloud Image\n"
        "20.04,,focal,Ubuntu,20.04 LTS,20260501,Cloud Image\n"
    )
    assert out(run, "find", "--only-images", "--format", "yaml").startswith(
        "errors:\n  []\nblueprints (deprecated):\n  {}\nimages:\n  20.04:\n    aliases:\n      - focal\n"
    )
    assert out(run, "find", "--only-blueprints") == "No blueprints found.\n"


def test_version_csv_and_yaml(fmt_double: FmtDouble) -> None:
    run, _ = fmt_double
    assert out(run, "version", "--format", "csv") == "Multipass,Multipassd,Title,Description,URL\n1.16.3,1.16.3,,,\n"
    assert out(run, "version", "--format", "yaml") == "multipass: 1.16.3\nmultipassd: 1.16.3\n"
    assert out(run, "version") == "multipass   1.16.3\nmultipassd  1.16.3\n"
