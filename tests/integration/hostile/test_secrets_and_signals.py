"""User text is data, and the credential is found nowhere on the host afterwards, on the double.

Four runs start together, each with its own sandbox (canary, runs folder, workspace), state folder and
double trace:

- ``make-run``: ``make run`` with Jinja, shell and make syntax in the prompt (several lines), AGENT_COMMAND,
  MODEL (through ``{model}``), the credential's value and the workspace folder's name; verbosity 4 and
  TIMEOUT=7200 (the agent task's connection timeout must follow TIMEOUT);
- ``sigint``: Ctrl-C (SIGINT to the whole process group) while the agent runs; before it, ``make clean``
  with another state folder and with its own must leave the live run alone;
- ``double-sigint``: Ctrl-C twice, the second while a slow delete (MULTIPASS_DOUBLE_LATENCY=delete=20) runs;
- ``kill9``: SIGKILL to the whole process group, then ``make clean``.

After each, the credential's unique part is searched for in the run folder, ``runs/.staging-*``, all of
/dev/shm, the state folder, the double's trace and data folder, the terminal output, and in /tmp, /var/tmp,
~/.ansible and the repository's runs/ (files changed during the test).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.hostile.harness import (
    SHARED_PLACES,
    Finished,
    Launched,
    Sandbox,
    base_env,
    check_contained,
    host_places,
    instances,
    launch,
    marker_hits,
    run_folder,
    snapshot,
)

pytestmark = pytest.mark.double
TIMEOUT = 7200


@dataclass
class Secrets:
    name: str
    env: dict[str, str]
    sandbox: Sandbox
    logs: Path
    marker: str  # the unique part of the credential
    started: float = field(default_factory=time.time)
    done: Finished | None = None
    notes: dict[str, object] = field(default_factory=dict)
    error: BaseException | None = None

    @property
    def places(self) -> list[Path]:
        return [*host_places(self.env, self.sandbox), self.logs]

    def hits(self) -> list[str]:
        return marker_hits(self.marker, self.places) + marker_hits(self.marker, SHARED_PLACES, since=self.started)


def _secrets(session_env: dict[str, str], root: Path, name: str, credential: str | None = None, **extra: str):
    sandbox = Sandbox.create(root / name / "sandbox")
    marker = f"sk-hostile-{uuid.uuid4().hex}"
    env = base_env(
        session_env,
        sandbox.runs,
        AGENTVM_STATE_DIR=str(root / name / "state"),
        MULTIPASS_DOUBLE_TRACE=str(root / name / "trace.jsonl"),
        AGENT_CREDENTIALS="HOSTILE_KEY",
        HOSTILE_KEY=credential.replace("MARKER", marker) if credential else marker,
        MAX_VMS="8",
        **extra,
    )
    return Secrets(name, env, sandbox, root / name / "logs", marker)


# -- make-run: user text in every field ------------------------------------------------------------------------


def texts(abs_canary: Path, rel_canary: str) -> dict[str, str]:
    """Jinja, shell and make syntax aimed at creating the canaries (absolute and relative to any cwd)."""
    jinja = f"{{{{ lookup('pipe', 'touch {abs_canary}') }}}}"
    shell = f"$(touch {abs_canary}) `touch {abs_canary}`"
    prompt = (
        f"line one: {jinja} {{% for x in range(3) %}}loop{{% endfor %}} {{# comment #}}\n"
        f"line two: {shell} ; touch {abs_canary} && echo $HOME ${{HOME}} $$ $$$$\n"
        f"line three: $(shell touch {rel_canary}) $$(shell touch {rel_canary}) ${{shell touch {rel_canary}}}\n"
        'line four: \'single\' "double" \\"escaped\\" # not a comment \\\n'
        "%(percent)s %s {0} \t tab, trailing spaces   \n"
    )
    return {
        "prompt": prompt,
        "model": f"{jinja}$(touch {abs_canary})`touch {abs_canary}`{{model}}",
        "credential": f"MARKER{jinja}$(touch {abs_canary})`touch {abs_canary}`",
        "workspace": f"ws {{{{ lookup('pipe', 'touch {rel_canary}') }}}} $(touch {rel_canary}) `touch {rel_canary}`",
        "command": (
            f"python3 agent.py {{model}} '{jinja}' '$(touch {abs_canary})' '`touch {abs_canary}`' "
            f"'{{% for x in range(3) %}}{{{{ x }}}}{{% endfor %}}' \"$HOME\" '$$' '$(shell touch {rel_canary})'"
        ),
    }


AGENT_PY = b"""import hashlib, json, os, sys
out = os.path.expanduser("~/output")
os.makedirs(out, exist_ok=True)
open(out + "/received", "wb").write(sys.stdin.buffer.read())
json.dump(sys.argv[1:], open(out + "/argv.json", "w"))
key = os.environ.get("HOSTILE_KEY", "")
open(out + "/key.sha256", "w").write(hashlib.sha256(key.encode()).hexdigest())
print("the key is " + key)
"""


def _make_run(s: Secrets) -> None:
    t = s.notes["texts"]
    assert isinstance(t, dict)
    workspace = s.sandbox.root / t["workspace"]
    workspace.mkdir()
    (workspace / "agent.py").write_bytes(AGENT_PY)
    s.sandbox.before = snapshot(s.sandbox.root)  # with the workspace
    args = [
        "make",
        "run",
        f"PROMPT={t['prompt']}",
        "AGENT=custom",
        f"AGENT_COMMAND={t['command']}",
        f"MODEL={t['model']}",
        f"WORKSPACE={workspace}",
        f"TIMEOUT={TIMEOUT}",
        "AGENTVM_ANSIBLE_VERBOSITY=4",
    ]
    s.notes["workspace"] = workspace
    s.done = launch(args, s.env, s.logs).finish(timeout=800)


# -- the signals -----------------------------------------------------------------------------------------------

SLEEPER = "sh -c 'printenv HOSTILE_KEY > $HOME/output/key.txt; printenv HOSTILE_KEY; exec sleep 600'"


def _instance_of(run: Launched) -> str:
    first = run.stderr().splitlines()[0]
    return first.split(" in ", 1)[1].split(" ", 1)[0]


def _start_sleeper(s: Secrets) -> Launched:
    run = launch(["run", "--agent-command", SLEEPER, "sleep"], s.env, s.logs)
    assert run.wait_for("agent ...", timeout=600), run.stderr()
    s.notes["instance"] = _instance_of(run)
    return run


def _clean(env: dict[str, str], logs: Path, **extra: str) -> Finished:
    return launch(["make", "clean"], {**env, **extra}, logs).finish(timeout=300)


def _sigint(s: Secrets) -> None:
    run = _start_sleeper(s)
    name = s.notes["instance"]
    time.sleep(2)  # the agent is running in the VM
    foreign = _clean(s.env, s.logs / "clean-foreign", AGENTVM_STATE_DIR=str(s.logs / "another-state"))
    own = _clean(s.env, s.logs / "clean-own")
    s.notes.update(foreign=foreign, own=own, alive_after_cleans=name in instances(s.env))
    run.signal_group(signal.SIGINT)
    s.done = run.finish(timeout=600)


def _double_sigint(s: Secrets) -> None:
    run = _start_sleeper(s)
    time.sleep(2)
    run.signal_group(signal.SIGINT)
    assert run.wait_for("SIGINT: stopping the run", timeout=60), run.stderr()
    time.sleep(5)  # the playbook is cancelled; the slow delete (20 s) is under way
    run.signal_group(signal.SIGINT)
    s.done = run.finish(timeout=600)


def _kill9(s: Secrets) -> None:
    run = _start_sleeper(s)
    time.sleep(2)
    run.signal_group(signal.SIGKILL)
    s.done = run.finish(timeout=120)
    s.notes["left"] = s.notes["instance"] in instances(s.env)
    s.notes["clean"] = launch(["make", "clean"], s.env, s.logs / "make-clean").finish(timeout=300)


@pytest.fixture(scope="module")
def secret_runs(fake_golden, tmp_path_factory) -> dict[str, Secrets]:
    root = tmp_path_factory.mktemp("hostile-secrets")
    canary = root / "templating-canary"
    rel = f"hostile-canary-{uuid.uuid4().hex[:8]}"
    t = texts(canary, rel)
    make_run = _secrets(fake_golden, root, "make-run", credential=t["credential"])
    make_run.notes.update(texts=t, canary=canary, rel=rel)
    plans: list[tuple[Secrets, Callable[[Secrets], None]]] = [
        (make_run, _make_run),
        (_secrets(fake_golden, root, "sigint"), _sigint),
        (_secrets(fake_golden, root, "double-sigint", MULTIPASS_DOUBLE_LATENCY="delete=20"), _double_sigint),
        (_secrets(fake_golden, root, "kill9"), _kill9),
    ]

    def play(s: Secrets, act: Callable[[Secrets], None]) -> None:
        try:
            act(s)
        except BaseException as exc:  # reported by the test of this run
            s.error = exc

    threads = [threading.Thread(target=play, args=plan) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {s.name: s for s, _ in plans}


def _get(runs: dict[str, Secrets], name: str) -> Secrets:
    s = runs[name]
    if s.error is not None:
        raise s.error
    assert s.done is not None
    return s


# -- make-run ---------------------------------------------------------------------------------------------------


def test_user_text_arrives_byte_exact_and_evaluates_nothing(secret_runs):
    s = _get(secret_runs, "make-run")
    t = s.notes["texts"]
    record = check_contained(s.done, s.sandbox, s.env, exit_code=0)
    folder = run_folder(s.sandbox)
    out = folder / "output"
    assert (out / "received").read_bytes() == t["prompt"].encode()
    assert (folder / "prompt.txt").read_bytes() == t["prompt"].encode()
    expected = [t["model"] if a == "{model}" else a for a in shlex.split(t["command"])[2:]]
    assert json.loads((out / "argv.json").read_text()) == expected
    credential = s.env["HOSTILE_KEY"]
    assert (out / "key.sha256").read_text() == hashlib.sha256(credential.encode()).hexdigest()
    assert record["agent"]["model"] == t["model"]
    assert record["workspace"]["source"] == str(s.notes["workspace"])
    assert not s.notes["canary"].exists()
    rel = s.notes["rel"]
    for folder_ in (REPO, REPO / "playbooks", s.sandbox.root, s.sandbox.runs, Path.home(), Path("/"), Path("/tmp")):
        assert not (folder_ / rel).exists(), folder_ / rel


def test_the_credential_is_nowhere_after_a_normal_run(secret_runs):
    s = _get(secret_runs, "make-run")
    assert s.hits() == []
    folder = run_folder(s.sandbox)
    assert (folder / "stdout.log").read_text() == "the key is [redacted:HOSTILE_KEY]\n"
    # At verbosity 4 the credential never went through ansible-playbook's output at all.
    assert "[redacted:" not in (folder / "ansible.log").read_text()


def test_the_agent_tasks_connection_timeout_follows_timeout(secret_runs):
    s = _get(secret_runs, "make-run")
    log = (run_folder(s.sandbox) / "ansible.log").read_text()
    section = log.split("[agent] Run the agent", 1)[1].split("\nTASK [", 1)[0]
    timeouts = [float(m) for m in re.findall(r"timeout[^0-9\n]{0,12}([0-9]+(?:\.[0-9]+)?)", section, re.I)]
    assert timeouts and min(timeouts) > TIMEOUT, timeouts


# -- the signals --------------------------------------------------------------------------------------------------


def test_ctrl_c_interrupts_tears_down_and_leaves_no_credential(secret_runs):
    s = _get(secret_runs, "sigint")
    name = s.notes["instance"]
    foreign, own = s.notes["foreign"], s.notes["own"]
    assert foreign.code == 0 and f"not ours: {name}" in foreign.out, foreign.text
    assert own.code == 0 and f"kept (run alive): {name}" in own.out, own.text
    assert s.notes["alive_after_cleans"] is True
    record = check_contained(s.done, s.sandbox, s.env, exit_code=130)
    assert record["status"] == "interrupted"
    assert s.hits() == []


def test_a_second_ctrl_c_during_a_slow_delete_is_acknowledged_and_the_record_is_true(secret_runs):
    s = _get(secret_runs, "double-sigint")
    name = s.notes["instance"]
    record = check_contained(s.done, s.sandbox, s.env, exit_code=130)
    assert record["status"] == "interrupted"
    assert f"SIGINT again: still deleting the VM {name}" in s.done.err, s.done.err
    # What the terminal and the record say about the VM is what happened to it (it is gone: checked above).
    assert "the VM was deleted" in record["error"]["hint"] and "the VM was deleted" in s.done.err
    assert "could not be deleted" not in s.done.err
    assert s.hits() == []


def test_kill_9_then_make_clean_leaves_nothing(secret_runs):
    s = _get(secret_runs, "kill9")
    name = s.notes["instance"]
    assert s.done.code == -signal.SIGKILL
    assert s.notes["left"] is True  # the precondition: kill -9 left the VM behind
    clean = s.notes["clean"]
    assert clean.code == 0 and f"deleted: {name}" in clean.out, clean.text
    assert name not in instances(s.env)
    [folder] = [p for p in s.sandbox.runs.iterdir()]
    run_id = folder.name
    assert not Path(f"/dev/shm/agentvm-{run_id}").exists()
    assert list(s.sandbox.runs.glob(".staging-*")) == []
    assert s.sandbox.changes_outside([f"runs/{run_id}"]) == []
    assert "Traceback" not in s.done.text + clean.text
    assert s.hits() == []
