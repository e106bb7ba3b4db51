"""``make batch`` with Jinja, shell and make syntax in every field, and what happens to the VMs it keeps.

One batch (``make batch PROMPTS=<a path holding $(shell …), $$ and {{ … }}>``) runs three items at once:

- crush (takes the prompt in argv; the fake golden has no crush, so the item fails) with KEEP: its
  spec.json in the kept VM must hold the prompt and the model byte for byte;
- claude (no claude in the fake golden either) with KEEP and ANTHROPIC_BASE_URL (a passthrough variable)
  set to Jinja text: spec.json's env must hold it literally;
- a custom agent whose prompt, model, agent_command and workspace folder name carry the syntax: it
  receives all of it literally.

Then the two kept VMs must survive the next run's opportunistic reap and a plain ``make clean`` (which
lists them with the command that deletes them), and ``make clean KEPT=1`` deletes them.
"""

from __future__ import annotations

import json
import shlex
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.integration.hostile.harness import (
    Finished,
    Sandbox,
    base_env,
    instances,
    launch,
    multipass,
    run_instances,
    snapshot,
)

pytestmark = pytest.mark.double

AGENT_PY = b"""import json, os, sys
out = os.path.expanduser("~/output")
os.makedirs(out, exist_ok=True)
open(out + "/received", "wb").write(sys.stdin.buffer.read())
json.dump(sys.argv[1:], open(out + "/argv.json", "w"))
"""


def _texts(canary: Path, rel: str) -> dict[str, str]:
    jinja = f"{{{{ lookup('pipe', 'touch {canary}') }}}}"
    return {
        "prompt": f"{jinja}\n{{% for x in range(3) %}}x{{% endfor %}}\n$(touch {canary}) `touch {canary}`\n"
        f"$(shell touch {rel}) $$ $$(shell touch {rel}) 'q' \"qq\"\n",
        "model": f"{jinja}$(touch {canary})",
        "url": f"http://127.0.0.1:9/{jinja}$(touch {canary})`touch {canary}`",
        "command": f"python3 agent.py {{model}} '{jinja}' '$(touch {canary})' '$(shell touch {rel})'",
        "dir": f"prompts $(shell touch {rel}) $$ {{{{ x }}}}",
        "workspace": f"ws {{{{ lookup('pipe', 'touch {rel}') }}}} $(touch {rel})",
    }


class Batch:
    def __init__(self, root: Path, session_env: dict[str, str]) -> None:
        self.sandbox = Sandbox.create(root / "sandbox")
        self.canary = root / "batch-canary"
        self.rel = f"hostile-canary-{uuid.uuid4().hex[:8]}"
        self.t = _texts(self.canary, self.rel)
        folder = self.sandbox.root / self.t["dir"]
        (folder / self.t["workspace"]).mkdir(parents=True)
        (folder / self.t["workspace"] / "agent.py").write_bytes(AGENT_PY)
        self.prompts = folder / "prompts.yaml"
        items = [
            {"prompt": self.t["prompt"], "agent": "crush", "model": self.t["model"], "keep": True},
            {"prompt": "passthrough", "agent": "claude", "keep": True},
            {
                "prompt": self.t["prompt"],
                "agent": "custom",
                "agent_command": self.t["command"],
                "model": self.t["model"],
                "workspace": self.t["workspace"],
            },
        ]
        self.prompts.write_text(yaml.safe_dump({"prompts": items}, allow_unicode=True))
        self.sandbox.before = snapshot(self.sandbox.root)
        self.env = base_env(
            session_env,
            self.sandbox.runs,
            AGENTVM_STATE_DIR=str(root / "state"),
            MAX_VMS="3",
            OPENAI_API_KEY=f"sk-hostile-{uuid.uuid4().hex}",
            ANTHROPIC_API_KEY=f"sk-hostile-{uuid.uuid4().hex}",
            ANTHROPIC_BASE_URL=self.t["url"],
            # The key itself goes to the agent here, so the base URL is passed through as typed (with the
            # default CREDENTIALS=proxy the proxy's own URL replaces it); egress is not this test's subject.
            CREDENTIALS="direct",
            EGRESS="open",
        )
        self.logs = root / "logs"
        self.done: Finished | None = None
        self.summary: dict = {}
        self.kept: dict[str, str] = {}  # agent -> instance
        self.specs: dict[str, dict] = {}
        self.steps: dict[str, Finished] = {}
        self.after_reap: list[str] = []
        self.after_clean: list[str] = []

    def run(self) -> None:
        self.done = launch(["make", "batch", f"PROMPTS={self.prompts}"], self.env, self.logs / "batch").finish(900)
        [path] = self.sandbox.runs.glob("batch-*.json")
        self.summary = json.loads(path.read_text())
        for item, spec in zip(self.summary["items"], ("crush", "claude", "custom"), strict=True):
            if spec in ("crush", "claude") and item["run_id"]:
                record = json.loads((Path(item["folder"]) / "result.json").read_text())
                self.kept[spec] = record["instance"]["name"]
        for agent, name in self.kept.items():
            run_id = name.split("-run-", 1)[1]
            proc = multipass(self.env, "exec", name, "--", "cat", f"/home/ubuntu/.agentvm/{run_id}/spec.json")
            assert proc.returncode == 0, proc.stderr
            self.specs[agent] = json.loads(proc.stdout)
        self.steps["next-run"] = launch(
            ["run", "--agent-command", "cat", "the next run"], self.env, self.logs / "next"
        ).finish(600)
        self.after_reap = instances(self.env)
        self.steps["clean"] = launch(["make", "clean"], self.env, self.logs / "clean").finish(300)
        self.after_clean = instances(self.env)
        self.steps["clean-kept"] = launch(["make", "clean", "KEPT=1"], self.env, self.logs / "clean-kept").finish(300)

    def remove_leftovers(self) -> None:
        for name in run_instances(self.env):
            multipass(self.env, "delete", "--purge", name)


@pytest.fixture(scope="module")
def batch(fake_golden, tmp_path_factory):
    b = Batch(tmp_path_factory.mktemp("hostile-batch"), fake_golden)
    try:
        b.run()
        yield b
    finally:
        b.remove_leftovers()


def test_batch_fields_arrive_literally_and_evaluate_nothing(batch):
    t = batch.t
    statuses = [item["status"] for item in batch.summary["items"]]
    assert statuses[2] == "succeeded", batch.summary
    assert batch.done.code == 2  # make's code: two of the three items failed (no crush, no claude in the VM)
    custom = Path(batch.summary["items"][2]["folder"])
    assert (custom / "output" / "received").read_bytes() == t["prompt"].encode()
    expected = [t["model"] if a == "{model}" else a for a in shlex.split(t["command"])[2:]]
    assert json.loads((custom / "output" / "argv.json").read_text()) == expected
    record = json.loads((custom / "result.json").read_text())
    assert record["workspace"]["source"] == str(batch.prompts.parent / t["workspace"])
    assert not batch.canary.exists()
    for folder in (REPO, batch.sandbox.root, batch.prompts.parent, Path.home(), Path("/"), Path("/tmp")):
        assert not (folder / batch.rel).exists(), folder / batch.rel
    assert "Traceback" not in batch.done.text


def test_the_prompt_in_argv_reaches_spec_json_byte_exact(batch):
    spec = batch.specs["crush"]
    assert spec["prompt_via"] == "argv"
    assert spec["argv"] == ["crush", "run", "-q", "--", batch.t["prompt"]]
    # Crush takes its model from its config file: the value travels as data, filled in by agent-run.py.
    assert {f["values"].get("AGENTVM_MODEL") for f in spec["config_files"]} == {batch.t["model"]}


def test_a_passthrough_value_reaches_spec_json_literally(batch):
    assert batch.specs["claude"]["env"]["ANTHROPIC_BASE_URL"] == batch.t["url"]


def test_kept_vms_survive_the_next_reap_and_make_clean_and_go_with_kept_1(batch):
    kept = sorted(batch.kept.values())
    assert len(kept) == 2, batch.summary
    assert batch.steps["next-run"].code == 0, batch.steps["next-run"].err
    assert set(kept) <= set(batch.after_reap)
    clean = batch.steps["clean"]
    assert clean.code == 0, clean.text
    for name in kept:
        assert f"kept (KEEP=1): {name} — delete it with `multipass delete --purge {name}`" in clean.out, clean.out
    assert set(kept) <= set(batch.after_clean)
    clean_kept = batch.steps["clean-kept"]
    assert clean_kept.code == 0, clean_kept.text
    for name in kept:
        assert f"deleted: {name}" in clean_kept.out
    assert run_instances(batch.env) == []
    assert batch.env["AGENTVM_PREFIX"] + "-golden" in instances(batch.env)


def test_only_run_folders_and_the_summary_were_written(batch):
    allowed = [f"runs/{p.name}" for p in batch.sandbox.runs.iterdir()]
    assert all(a.startswith(("runs/2", "runs/batch-")) for a in allowed), allowed
    assert batch.sandbox.changes_outside(allowed) == []
