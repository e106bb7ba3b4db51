#!/usr/bin/env python3
"""Runs the agent inside the VM (installed per run by the agent_run role; standard library only).

Usage: agent-run.py WORK_DIR SECRETS_FILE|-
WORK_DIR/spec.json (written by the agentvm entry point) holds {"argv": [...], "env": {...}, "prompt_via":
"stdin"|"argv", "timeout": seconds, "cwd": path, "summary": file name}. The credentials (JSON) come on stdin
(``-``) or from a file deleted at once; they are put into the agent's environment only, so they exist only in
the agent process. Writes stdout.log, stderr.log and the summary ({"exit_code", "timed_out", "seconds"}) into WORK_DIR;
always exits 0 once the agent ran. Everything it writes is a claim: the host checks it (the agent can rewrite
any of it).
"""

import json
import os
import signal
import subprocess
import sys
import time

MAX_SECRETS = 1024 * 1024


def load_secrets(path: str) -> dict:
    """The credentials (JSON): from stdin when ``path`` is ``-`` (they never touch a file in the VM), else from
    a file that is deleted at once."""
    if path == "-":
        data = sys.stdin.buffer.read(MAX_SECRETS)
        return json.loads(data) if data.strip() else {}
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return {}
    finally:
        if os.path.exists(path):
            os.unlink(path)


def main(work: str, secrets_file: str) -> int:
    with open(os.path.join(work, "spec.json"), encoding="utf-8") as fh:
        spec = json.load(fh)
    env = dict(os.environ)
    env.update(spec["env"])
    env.update(load_secrets(secrets_file))
    stdin_path = os.path.join(work, "prompt.txt") if spec["prompt_via"] == "stdin" else os.devnull
    started = time.monotonic()
    timed_out = False
    with (
        open(stdin_path, "rb") as stdin,
        open(os.path.join(work, "stdout.log"), "wb") as out,
        open(os.path.join(work, "stderr.log"), "wb") as err,
    ):
        proc = subprocess.Popen(
            spec["argv"], stdin=stdin, stdout=out, stderr=err, env=env, cwd=spec["cwd"], start_new_session=True
        )
        try:
            code = proc.wait(timeout=spec["timeout"])
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                code = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
    result = {"exit_code": code, "timed_out": timed_out, "seconds": round(time.monotonic() - started, 3)}
    with open(os.path.join(work, spec.get("summary") or "agent-summary.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
