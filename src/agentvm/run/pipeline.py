"""One run, end to end. The flow, in order:

1. the run folder and ``prompt.txt``; the instance record (state) and the scratch folders;
2. the bundle and the credentials file (bundle.py), then ``playbooks/run.yml`` through ansible-runner
   (playbook.py) with progress from its events (progress.py) and the agent's stream (agentstream.py);
3. teardown, always (the playbook's ``always:``, then here again), with signals only asking to stop;
4. unpacking and checking what came back (collect.py, claims.py, parsers.py), redaction of the secrets;
5. the outcome (outcome.py) and the record (record.py), which is written on every path.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from agentvm import textsafe
from agentvm.host.state import StateDir, new_record
from agentvm.multipass import Multipass
from agentvm.run import assemble, bundle, claims, collect, outcome, playbook, record
from agentvm.run.agentstream import AgentStream
from agentvm.run.isolate import Isolation, write_env
from agentvm.run.progress import Progress, now_iso
from agentvm.run.request import RunRequest
from agentvm.run.scratch import Scratch
from agentvm.run.sshmode import SshAccess, SshError
from agentvm.run.teardown import SignalGuard
from agentvm.run.vmpaths import VmPaths
from agentvm.settings import Settings


class Run:
    def __init__(
        self,
        settings: Settings,
        req: RunRequest,
        mp: Multipass,
        out: TextIO = sys.stderr,
        cancel: threading.Event | None = None,
        on_phase: Any = None,
        before: dict[str, float] | None = None,
    ) -> None:
        self.settings = settings
        self.req = req
        self.mp = mp
        self.out = out
        self.cancel = cancel or threading.Event()
        self.vm = VmPaths(req.run_id)
        self.run_dir = settings.runs_dir / req.run_id
        self.scratch = Scratch.plan(settings, req.run_id)
        self.state = StateDir(settings.state_dir).ensure()
        self.redactor = textsafe.Redactor(dict(req.secrets))
        self.t0 = time.monotonic()
        self.started_at = now_iso()
        self.progress = Progress(out, self.t0, self.redactor, on_phase=on_phase)
        self.stream: AgentStream | None = None
        self.progress.listeners.append(self._follow_agent)
        self.teardown_done = False
        self._teardown_error: str | None = None
        self.marks: dict[str, float] = {**(before or {}), "run_start": self.t0}
        self.playbook_end: float | None = None
        self.isolation = Isolation(
            req.run_id, req.credentials_mode, req.egress, req.secrets, settings.env,
            self.run_dir / "egress.log", self.redactor, self.progress.say,
        )  # fmt: skip
        self._isolating: threading.Thread | None = None
        self.ssh = SshAccess(self.scratch.secret) if req.connection == "ssh" else None

    # -- the flow ---------------------------------------------------------------------------------------

    def execute(self) -> tuple[dict[str, Any], int]:
        guard = SignalGuard(self.cancel, self.progress.say)
        with guard.installed():
            self.run_dir.mkdir(parents=True, exist_ok=False, mode=0o700)
            (self.run_dir / "prompt.txt").write_bytes(self.req.prompt)
            self.progress.say(
                f"run {self.req.run_id}: agent {self.req.profile.name} in {self.req.instance} (results: {self.run_dir})"
            )
            try:
                rec = self._execute(guard)
            except Exception as exc:
                rec = record.write(
                    self.run_dir / "result.json", record.fallback(self._base(), f"{type(exc).__name__}: {exc}")
                )
            finally:
                self.progress.close()
                self.scratch.remove()
                if self.req.keep:
                    self.state.mark_kept(self.req.instance)
                elif not self._teardown_error:
                    self.state.forget(self.req.instance)
        return rec, int(rec["exit_code"])

    def _execute(self, guard: SignalGuard) -> dict[str, Any]:
        self.state.record(new_record(self.req.instance, self.req.run_id, "run", self.scratch.paths()))
        self.scratch.create()
        result: playbook.Outcome | None = None
        try:
            guard.doing = "running the playbook"
            result = self._playbook()
            self.playbook_end = time.monotonic()
        except Exception as exc:
            if self.progress.failure is None:
                self.progress.failure = {"msg": f"{type(exc).__name__}: {exc}"}
                self.progress.failed_phase = self.progress.phase or "clone"
        finally:
            self._stop_stream()
            self.progress.close()
            guard.doing = f"deleting the VM {self.req.instance}"
            if self.ssh is not None:
                self.ssh.close()
            teardown_seconds = self._teardown()
            if self._isolating is not None:
                self._isolating.join(timeout=120)  # never remove the rules under a setup still running
            self.isolation.teardown()
            self._save_log(result)
        guard.doing = "collecting the results"
        return self._record(result, teardown_seconds)

    @property
    def _secrets_file(self) -> Path:
        return self.scratch.secret / "secrets.json"

    @property
    def _ready_file(self) -> Path:
        return self.scratch.secret / "isolation.ready"

    @property
    def _ssh_file(self) -> Path:
        return self.scratch.secret / "ssh.json"

    @property
    def _prepare(self) -> bool:
        """Something must be set up once the clone is up (isolation, SSH access) before the run enters it."""
        return self.isolation.needed or self.ssh is not None

    def _playbook(self) -> playbook.Outcome:
        bundle_path = bundle.write_bundle(self.req, self.vm, self.scratch.staging)
        isolate = self._prepare
        if not self.isolation.needed and self.req.secrets:
            write_env(self._secrets_file, self.req.secrets)
        has_secrets = isolate or bool(self.req.secrets)
        if self.cancel.is_set():
            raise InterruptedError("interrupted before the VM was created")
        extravars = {
            "agentvm_run_id": self.req.run_id,
            "agentvm_instance": self.req.instance,
            "agentvm_golden": self.req.golden,
            "agentvm_bundle": str(bundle_path),
            "agentvm_fetch_dir": str(self.scratch.staging),
            "agentvm_secrets_file": str(self._secrets_file) if has_secrets else "",
            "agentvm_isolation_ready": str(self._ready_file) if isolate else "",
            "agentvm_ssh_file": str(self._ssh_file) if self.ssh is not None else "",
            "agentvm_vm": {
                "dir": self.vm.dir,
                "summary": self.vm.summary,
                "results": self.vm.results,
            },
            "agentvm_timeout": self.req.timeout,
            "agentvm_vm_timeout": self.settings.vm_timeout,
            "agentvm_retries": self.settings.retries,
            "agentvm_retry_delay": self.settings.retry_delay,
            "agentvm_keep": self.req.keep,
            "agentvm_from_pool": self.req.from_pool,
            "agentvm_max_result_bytes": self.settings.max_result_bytes,
        }
        limit = self.req.timeout + 4 * self.settings.vm_timeout + 600
        if self.req.from_pool:
            self._start_isolation()  # a warm VM is up already: isolate it while ansible-runner starts
        self.marks["runner_start"] = time.monotonic()
        return playbook.run(
            self.scratch.secret / "runner",
            extravars,
            self.settings.env,
            self._event,
            self.cancel,
            timeout=limit,
            verbosity=self.settings.ansible_verbosity,
        )

    def _event(self, data: dict[str, Any]) -> bool:
        self.progress.event(data)
        task = str((data.get("event_data") or {}).get("task") or "")
        if data.get("event") == "runner_on_ok" and task.startswith("[teardown]"):
            self.teardown_done = True
        elif data.get("event") == "playbook_on_task_start" and task.startswith(("[ready]", "[isolate]")):
            self._start_isolation()  # the clone has its address from [ready] on: overlap with cloud-init
        return True

    def _start_isolation(self) -> None:
        if self._isolating is None and self._prepare:
            self._isolating = threading.Thread(target=self._isolate, name="isolate", daemon=True)
            self._isolating.start()

    def _isolate(self) -> None:
        """Called when the playbook waits for it: the proxy, the rules, the VM's environment; then the go."""
        try:
            address = self.mp.ipv4(self.req.instance)
            env = self.isolation.setup(address)
            if self.isolation.needed:
                write_env(self._secrets_file, env)
            if self.ssh is not None:
                if address is None:
                    raise SshError("the clone has no IPv4 address to reach over SSH")
                self.ssh.write(self._ssh_file, self.ssh.setup(self.mp, self.req.instance, address))
            answer = "ok"
        except Exception as exc:
            answer = f"the isolation of the clone failed: {textsafe.one_line(str(exc), 500)}"
        tmp = self._ready_file.with_suffix(".tmp")
        tmp.write_text(answer)
        tmp.replace(self._ready_file)

    def _follow_agent(self, previous: str | None, phase: str) -> None:
        if previous == "agent":
            self._stop_stream()
        if phase == "agent" and self.req.profile.output != "text":
            self.stream = AgentStream(self.mp, self.req.instance, self.vm.stdout, self.progress.say)

    def _stop_stream(self) -> None:
        if self.stream is not None:
            self.stream.stop()
            self.stream = None

    def _teardown(self) -> float:
        """Delete the instance (unless kept); retried; the error text stays for the record."""
        if self.req.keep:
            return 0.0
        started = time.monotonic()
        if not self.teardown_done:
            result = self.mp.delete(self.req.instance, attempts=3, timeout=self.settings.vm_timeout)
            if not result.ok:
                self._teardown_error = result.message or "multipass delete failed"
        return time.monotonic() - started

    def _save_log(self, result: playbook.Outcome | None) -> None:
        if result is not None and result.stdout:
            with contextlib.suppress(OSError):
                (self.run_dir / "ansible.log").write_text(self.redactor.text(result.stdout))

    # -- the record ---------------------------------------------------------------------------------------

    def _base(self) -> dict[str, Any]:
        return {
            "run_id": self.req.run_id,
            "agent": {"name": self.req.profile.name},
            "prompt": record.prompt_digest(self.req.prompt),
            "timings": {"total": round(time.monotonic() - self.t0, 3)},
            "instance": {"name": self.req.instance, "golden": self.req.golden, "kept": self.req.keep},
            "started_at": self.started_at,
            "finished_at": now_iso(),
        }

    def _record(self, result: playbook.Outcome | None, teardown_seconds: float) -> dict[str, Any]:
        collect_started = time.monotonic()
        report = collect.collect(self.scratch.staging, self.run_dir, self.settings.max_result_bytes)
        said = claims.read(self.scratch.staging / "vm")
        parsed = assemble.parse_output(self.req, self.run_dir)
        collect.redact_tree(self.run_dir, self.redactor)
        self.marks["collect"] = time.monotonic() - collect_started
        facts = outcome.Facts(
            instance=self.req.instance,
            golden=self.req.golden,
            timeout=self.req.timeout,
            playbook_ok=result is not None and result.status == "successful" and not self.cancel.is_set(),
            interrupted=self.cancel.is_set(),
            failed_phase=self.progress.failed_phase or self.progress.phase,
            failure=textsafe.one_line(self.progress.failure_message(), 2000),
            agent_seconds=self.progress.seconds("agent"),
            teardown_error=self._teardown_error,
            kept=self.req.keep,
        )
        error = outcome.decide(facts, said, parsed)
        timings = self.progress.timings()
        timings["teardown"] = round(timings.get("teardown", 0.0) + teardown_seconds, 3)
        timings["total"] = round(time.monotonic() - self.t0, 3)
        rec = assemble.record(
            self.req,
            self.run_dir,
            error=error,
            said=said,
            parsed=parsed,
            timings=timings,
            warnings=[*report.warnings, *said.warnings, *parsed.warnings],
            retries=self.progress.retries,
            started_at=self.started_at,
            redactor=self.redactor,
            egress=self.isolation.summary(),
            host=self.settings.host,
        )
        rec["profile"] = assemble.profile(self.marks, self.progress.tasks, self.playbook_end)
        return record.write(self.run_dir / "result.json", rec)
