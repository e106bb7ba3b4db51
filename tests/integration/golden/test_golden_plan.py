"""The golden_image role's reads of the golden against the double, without building one: the plan's decision
(and its message) and verify-golden's completeness check, for each shape the golden can be in. The golden's
snapshots are made with the double's own CLI; the role reads them through agentvm.multipass.instance_info."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import REPO

pytestmark = pytest.mark.double

PLAYBOOK = str(REPO / ".venv" / "bin" / "ansible-playbook")
MUTATING = {"launch", "clone", "start", "stop", "delete", "purge", "recover", "snapshot", "restore", "exec", "transfer"}


def folded(proc: subprocess.CompletedProcess) -> str:
    return " ".join((proc.stdout + proc.stderr).split())  # the callback folds long messages


class Golden:
    """A stand-in golden under a prefix of its own: a plain instance, shaped by each test."""

    def __init__(self, multipass: Callable[..., subprocess.CompletedProcess], env: dict[str, str], tmp: Path):
        self.multipass = multipass
        self.prefix = "g" + uuid.uuid4().hex[:6]
        self.name = f"{self.prefix}-golden"
        self.env = dict(env, AGENTVM_PREFIX=self.prefix, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        self.tmp = tmp

    def mp(self, *args: str) -> None:
        proc = self.multipass(*args)
        assert proc.returncode == 0, proc.stderr

    def launch(self, stopped: bool = True) -> None:
        self.mp("launch", "--name", self.name)
        if stopped:
            self.mp("stop", self.name)

    def seal(self, comment: str, name: str = "sealed") -> None:
        self.mp("snapshot", "--name", name, "--comment", comment, self.name)

    def playbook(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PLAYBOOK, *args],
            cwd=REPO,
            env=dict(self.env, **(env or {})),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    def plan(self, env: dict[str, str] | None = None, **extra: object) -> tuple[dict, str]:
        out = self.tmp / f"plan-{uuid.uuid4().hex[:6]}.json"
        extra_vars = json.dumps({"plan_out": str(out), **extra})
        proc = self.playbook("tests/integration/golden/playbooks/plan.yml", "-e", extra_vars, env=env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
        return json.loads(out.read_text()), folded(proc)

    def verify(self) -> str:
        proc = self.playbook("playbooks/verify-golden.yml")
        assert proc.returncode != 0, proc.stdout[-3000:]
        return folded(proc)


@pytest.fixture
def golden(multipass, double_env, tmp_path) -> Iterator[Golden]:
    stand_in = Golden(multipass, double_env, tmp_path)
    yield stand_in
    multipass("delete", "--purge", stand_in.name)


def test_no_golden(golden):
    decision, out = golden.plan()
    assert decision["needed"] is True
    assert decision["state"] == "absent"
    assert f"Building {golden.name}: no golden yet" in out
    assert f"{golden.name} is not a complete golden (missing); run `make golden`." in golden.verify()


def test_running_golden(golden):
    golden.launch(stopped=False)
    decision, out = golden.plan()
    assert (decision["needed"], decision["state"]) == (True, "Running")
    assert f"Building {golden.name}: the golden is Running, not Stopped" in out
    assert f"{golden.name} is not a complete golden (state Running); run `make golden`." in golden.verify()


@pytest.mark.parametrize(
    "snapshots",
    [
        {},  # no snapshot at all (snapshot_count 0: instance_info makes no snapshot call)
        {"sealed": "not a manifest"},
        {"sealed": ""},
        {"other": '{"inputs_sha256": "x"}'},  # a manifest, but not on the sealed snapshot
    ],
    ids=["none", "not-json", "empty", "other-snapshot"],
)
def test_stopped_golden_without_a_sealed_manifest(golden, snapshots):
    golden.launch()
    for name, comment in snapshots.items():
        golden.seal(comment, name=name)
    decision, out = golden.plan()
    assert (decision["needed"], decision["manifest"]) == (True, {})
    assert f"Building {golden.name}: no sealed snapshot with a manifest" in out
    message = f"{golden.name} is not a complete golden (no sealed snapshot with a manifest); run `make golden`."
    assert message in golden.verify()


def test_manifest_decides_between_up_to_date_and_rebuild(golden, tmp_path):
    golden.launch()
    inputs = golden.plan()[0]["inputs"]  # this checkout's inputs hash, as the plan computes it
    golden.seal(json.dumps({"inputs_sha256": inputs, "built_at": "2026-11-21T22:15:00Z", "note": 'a "quoted" $x'}))
    trace = tmp_path / "trace.jsonl"
    decision, out = golden.plan(env={"MULTIPASS_DOUBLE_TRACE": str(trace)})
    assert decision["needed"] is False
    assert decision["manifest"]["note"] == 'a "quoted" $x'
    assert f"{golden.name} is up to date (inputs {inputs[:12]}, built 2026-11-21T22:15:00Z); nothing to do" in out
    commands = [json.loads(line)["argv"] for line in trace.read_text().splitlines()]
    assert ["info", "--snapshots", "--format", "json", "--", golden.name] in [argv[1:] for argv in commands]
    assert not MUTATING & {argv[1] for argv in commands}, commands
    forced, out = golden.plan(golden_image_force=True)
    assert forced["needed"] is True
    assert f"Building {golden.name}: FORCE=1" in out

    golden.mp("delete", "--purge", f"{golden.name}.sealed")
    golden.seal(json.dumps({"inputs_sha256": "0" * 64, "built_at": "2026-11-21T22:15:00Z"}))
    decision, out = golden.plan()
    assert decision["needed"] is True
    assert f"Building {golden.name}: the build inputs changed" in out
