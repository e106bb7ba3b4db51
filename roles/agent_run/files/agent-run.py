#!/usr/bin/env python3
"""Runs the agent inside the VM (installed per run by the agent_run role; standard library only).

Usage: agent-run.py WORK_DIR SECRETS_FILE|-
WORK_DIR/spec.json (written by the agentvm entry point) holds {"argv": [...], "env": {...}, "env_from": {NAME: [VAR,
...]}, "config_files": [{"path", "format", "content", "defaults", "values", "when"}], "prompt_via": "stdin"|"argv",
"timeout": seconds, "cwd": path, "summary": file name}. The credentials (JSON) come on stdin (``-``, so they never
touch a file in the VM) or from a file deleted at once; they are put into the agent's environment only, so they
exist only in the agent process. Before the agent starts: each NAME of env_from unset in that environment gets the
value of the first VAR set; TMPDIR is a fresh folder of this run; the config files are written in the agent's home,
their content a string.Template filled from the run's values, the environment, then the file's defaults (values
escaped for the file's format; a file whose `when` variable is unset is skipped). Writes stdout.log, stderr.log and
the summary ({"exit_code", "timed_out", "seconds"}) into WORK_DIR; always exits 0 once the agent ran. Everything it
writes is a claim: the host checks it (the agent can rewrite any of it).
"""

import json
import os
import signal
import string
import subprocess
import sys
import time
from collections import ChainMap

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


def escape(value: str, fmt: str) -> str:
    """``value`` made safe inside a JSON or TOML basic string (quotes, backslashes, control characters)."""
    if fmt == "text":
        return value
    out = []
    for char in value:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


class Escaped(dict):
    """The template's values, escaped for one format as they are looked up."""

    def __init__(self, values: ChainMap, fmt: str) -> None:
        super().__init__()
        self.values, self.fmt = values, fmt

    def __getitem__(self, name: str) -> str:
        return escape(str(self.values[name]), self.fmt)


def write_config_files(files: list, env: dict) -> None:
    """Write the profile's config files in the agent's home (mode 0600, folders 0700)."""
    home = os.path.expanduser("~")
    for entry in files:
        if entry.get("when") and not env.get(entry["when"]):
            continue
        values = ChainMap(entry.get("values") or {}, {k: v for k, v in env.items() if v}, entry.get("defaults") or {})
        try:
            text = string.Template(entry["content"]).substitute(Escaped(values, entry["format"]))
        except KeyError as exc:
            raise SystemExit(f"agent-run: {entry['path']}: no value for ${{{exc.args[0]}}}") from None
        path = os.path.join(home, entry["path"])
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        if os.path.islink(path):
            os.unlink(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)


def agent_env(spec: dict, work: str, secrets: dict) -> dict:
    env = dict(os.environ)
    env.update(spec["env"])
    env.update(secrets)
    for name, sources in (spec.get("env_from") or {}).items():
        if not env.get(name):
            found = next((env[s] for s in sources if env.get(s)), None)
            if found is not None:
                env[name] = found
    tmp = os.path.join(work, "tmp")
    os.makedirs(tmp, mode=0o700, exist_ok=True)
    env["TMPDIR"] = tmp
    return env


def wait_agent(proc: subprocess.Popen, timeout: float) -> tuple[int, bool]:
    """The agent's exit code, and whether it was stopped at ``timeout`` (its whole process group is ended)."""
    try:
        return proc.wait(timeout=timeout), False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout=15), True
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(), True


def main(work: str, secrets_file: str) -> int:
    with open(os.path.join(work, "spec.json"), encoding="utf-8") as fh:
        spec = json.load(fh)
    env = agent_env(spec, work, load_secrets(secrets_file))
    write_config_files(spec.get("config_files") or [], env)
    stdin_path = os.path.join(work, "prompt.txt") if spec["prompt_via"] == "stdin" else os.devnull
    started = time.monotonic()
    with (
        open(stdin_path, "rb") as stdin,
        open(os.path.join(work, "stdout.log"), "wb") as out,
        open(os.path.join(work, "stderr.log"), "wb") as err,
    ):
        try:
            proc = subprocess.Popen(
                spec["argv"], stdin=stdin, stdout=out, stderr=err, env=env, cwd=spec["cwd"], start_new_session=True
            )
        except OSError as exc:  # the agent's program is missing or cannot run: the agent failed (like a shell's 127)
            err.write(f"agent-run.py: cannot start {spec['argv'][0]!r}: {exc.strerror}\n".encode())
            code, timed_out = 127, False
        else:
            code, timed_out = wait_agent(proc, spec["timeout"])
    result = {"exit_code": code, "timed_out": timed_out, "seconds": round(time.monotonic() - started, 3)}
    with open(os.path.join(work, spec.get("summary") or "agent-summary.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
