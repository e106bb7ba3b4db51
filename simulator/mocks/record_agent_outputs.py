#!/usr/bin/env python3
"""Record what a real agent CLI prints against the model-API mock, for the output parsers' tests.

    sudo .venv/bin/python simulator/mocks/record_agent_outputs.py --agent gemini --bin PATH/gemini \\
        --version 0.61.0 --out tests/unit/fixtures/agent_outputs

Each case runs in a fresh network namespace that holds only loopback (``unshare -n``, hence root) plus a
resolver address answering every lookup with NXDOMAIN and logging the name: the CLI can reach nothing but
the mock, and any attempt to resolve another host is written down. HOME, the work folder and TMPDIR are a
fresh temporary folder per case, removed afterwards. Claude Code refuses its bypass mode as root, so every
CLI runs as ``nobody``.

Writes ``<agent>-<version>-<case>.json|jsonl`` (stdout; ``.stderr`` when the CLI prints its error only
there) and merges one entry per file into ``cases.json``: command line, stdin, settings files, environment
(the test key only), mock script, exit code, model requests, how many host names the CLI tried to resolve
(the names are printed, not stored).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from simulator.mocks import presets
from simulator.mocks.model_api import serve

RESOLVER = "10.255.255.53"
NOBODY = 65534
PLAIN = {"text": "OK from the mock."}
ERROR = presets.http_error(400, "scripted failure: bad request")
TEST_KEY = "sk-test-not-a-secret"

GEMINI_SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    "privacy": {"usageStatisticsEnabled": False},
    "general": {
        "enableAutoUpdate": False,
        "enableAutoUpdateNotification": False,
        "maxAttempts": 1,
        "retryFetchErrors": False,
    },
    "telemetry": {"enabled": False},
}
CODEX_CONFIG = """model = "gpt-mock"
model_provider = "mock"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[model_providers.mock]
name = "mock"
base_url = "{url}/v1"
env_key = "MOCK_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = {idle_ms}

[features]
plugins = false

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"
"""


def opencode_config(url: str) -> str:
    provider = {
        "npm": "@ai-sdk/openai-compatible",
        "name": "Mock",
        "options": {"baseURL": f"{url}/v1", "apiKey": "{env:OPENAI_API_KEY}"},
        "models": {"m1": {"name": "m1"}},
    }
    config = {"autoupdate": False, "share": "disabled", "provider": {"mock": provider}, "model": "mock/m1"}
    return json.dumps(config)


# case name -> (file extension, script, prompt, extra argv, options)
GEMINI_ARGV = ["--approval-mode", "yolo", "--skip-trust", "--model=gemini-2.5-pro"]
CASES: dict[str, list[tuple[str, str, Any, str, list[str]]]] = {
    "gemini": [
        ("plain", "json", PLAIN, "Say OK", ["-o", "json", *GEMINI_ARGV]),
        ("tool", "json", "write_file", "Write hello.txt", ["-o", "json", *GEMINI_ARGV]),
        ("error", "json", ERROR, "Say OK", ["-o", "json", *GEMINI_ARGV]),
        ("plain", "jsonl", PLAIN, "Say OK", ["-o", "stream-json", *GEMINI_ARGV]),
        ("tool", "jsonl", "write_file", "Write hello.txt", ["-o", "stream-json", *GEMINI_ARGV]),
        ("error", "jsonl", ERROR, "Say OK", ["-o", "stream-json", *GEMINI_ARGV]),
        ("slow", "jsonl", presets.slow_stream("one two three", 3, 1.0), "Say OK", ["-o", "stream-json", *GEMINI_ARGV]),
    ],
    "codex": [
        (name, "jsonl", script, prompt, ["exec", "--json", "--skip-git-repo-check"])
        for name, script, prompt in (
            ("plain", PLAIN, "Say OK"),
            ("tool", "write_file", "Write hello.txt"),
            ("error", ERROR, "Say OK"),
            ("idle-timeout", presets.slow_stream("abcdef", 3, 60.0), "Say OK"),
        )
    ],
    "claude": [
        (name, "jsonl", script, prompt, ["-p", "--output-format", "stream-json", "--verbose"])
        for name, script, prompt in (
            ("plain", PLAIN, "Say OK"),
            ("tool", "write_file", "Write hello.txt"),
            ("error", ERROR, "Say OK"),
        )
    ],
    "opencode": [
        (name, "jsonl", script, prompt, ["run", "--format", "json"])
        for name, script, prompt in (
            ("plain", PLAIN, "Say OK"),
            ("tool", "write_file", "Write hello.txt"),
            ("error", ERROR, "Say OK"),
        )
    ],
}
TAIL_ARGV = {
    "gemini": [],
    "codex": ["--dangerously-bypass-approvals-and-sandbox", "--model=gpt-mock", "-"],
    "claude": ["--permission-mode", "bypassPermissions", "--max-turns=5", "--model=claude-mock"],
    "opencode": ["--auto", "--model=mock/m1"],
}


def _dns_logger(names: list[str]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((RESOLVER, 53))
    while True:
        data, peer = sock.recvfrom(4096)
        labels, i = [], 12
        while i < len(data) and data[i]:
            labels.append(data[i + 1 : i + 1 + data[i]].decode(errors="replace"))
            i += 1 + data[i]
        names.append(".".join(labels))
        question = data[12 : i + 5]
        sock.sendto(data[:2] + b"\x81\x83" + data[4:6] + b"\0" * 6 + question, peer)  # NXDOMAIN


def _setup(agent: str, root: Path, url: str, idle_ms: int) -> tuple[dict[str, str], dict[str, str]]:
    """Write the agent's settings under root/home; return (environment, {settings path: content})."""
    home = root / "home"
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "TMPDIR": str(root / "tmp")}
    files: dict[str, str] = {}
    if agent == "gemini":
        files["~/.gemini/settings.json"] = json.dumps(GEMINI_SETTINGS, indent=2) + "\n"
        env |= {"GEMINI_API_KEY": TEST_KEY, "GOOGLE_GEMINI_BASE_URL": url}
    elif agent == "codex":
        files["~/.codex/config.toml"] = CODEX_CONFIG.format(url=url, idle_ms=idle_ms)
        env |= {"MOCK_API_KEY": TEST_KEY}
    elif agent == "claude":
        env |= {"ANTHROPIC_API_KEY": TEST_KEY, "ANTHROPIC_BASE_URL": url, "CLAUDE_CODE_MAX_RETRIES": "0"}
        env |= {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"}
    else:
        env |= {"OPENAI_API_KEY": TEST_KEY, "OPENCODE_CONFIG_CONTENT": opencode_config(url)}
        env |= {"OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_MODELS_FETCH": "1"}
        env |= {"OPENCODE_DISABLE_LSP_DOWNLOAD": "1", "DO_NOT_TRACK": "1"}
    for name, content in files.items():
        path = home / name.removeprefix("~/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return env, files


def run_case(agent: str, binary: str, case: tuple[str, str, Any, str, list[str]], timeout: float) -> dict[str, Any]:
    name, ext, script, prompt, argv = case
    root = Path(tempfile.mkdtemp(prefix=f"agent-output-{agent}-"))
    try:
        for sub in ("home", "work", "tmp"):
            (root / sub).mkdir()
        if script == "write_file":
            script = presets.write_file(str(root / "work" / "hello.txt"), "hi\n", "Wrote hello.txt.")
        with serve(root / "record", script) as server:
            env, files = _setup(agent, root, server.url, 10_000)
            subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(root)], check=True)
            os.chmod(root, 0o755)
            command = [binary, *argv, *TAIL_ARGV[agent]]
            drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
            try:
                proc = subprocess.run(
                    [*drop, "timeout", "-k", "5", str(timeout), *command],
                    input=prompt.encode(),
                    capture_output=True,
                    env=env,
                    cwd=root / "work",
                    check=False,
                )
            finally:
                requests = server.requests()
        wrote = (root / "work" / "hello.txt").read_text() if (root / "work" / "hello.txt").exists() else None
        return {
            "agent": agent,
            "case": name,
            "ext": ext,
            "argv": [Path(binary).name, *command[1:]],
            "stdin": prompt,
            "script": script,
            "settings_files": files,
            "environment": {k: ("<test key>" if v == TEST_KEY else v) for k, v in env.items() if k != "PATH"},
            "exit_code": proc.returncode,
            "stdout": proc.stdout.decode(errors="replace"),
            "stderr": proc.stderr.decode(errors="replace"),
            "model_requests": [r["path"] for r in requests],
            "hello_txt": wrote,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def inside(args: argparse.Namespace) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", f"{RESOLVER}/32", "dev", "lo"], check=True)
    lookups: list[str] = []
    threading.Thread(target=_dns_logger, args=(lookups,), daemon=True).start()
    results = []
    for case in CASES[args.agent]:
        lookups.clear()
        result = run_case(args.agent, args.bin, case, args.timeout)
        result["host_lookups"] = sorted(set(lookups))
        results.append(result)
    json.dump(results, sys.stdout)
    return 0


def write_outputs(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / "cases.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    for result in results:
        stem = f"{result['agent']}-{args.version}-{result['case']}"
        if result["stdout"]:
            file_name, text = f"{stem}.{result['ext']}", result["stdout"]
        else:
            file_name, text = f"{stem}.stderr", result["stderr"]
        (out / file_name).write_text(text)
        # Host names stay out of the files (they would name outside hosts); the terminal shows them.
        entry = {k: v for k, v in result.items() if k not in ("stdout", "stderr", "ext", "host_lookups")}
        entry["host_lookups"] = len(result["host_lookups"])
        index[file_name] = {"version": args.version, **entry, "stream": "stdout" if result["stdout"] else "stderr"}
        print(f"{file_name}: exit {result['exit_code']}, {len(text)} bytes, lookups {result['host_lookups']}")
    index_path.write_text(json.dumps(dict(sorted(index.items())), indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", required=True, choices=sorted(CASES))
    parser.add_argument("--bin", required=True, help="the CLI's executable")
    parser.add_argument("--version", required=True, help="the CLI's version, for the file names")
    parser.add_argument("--out", default="tests/unit/fixtures/agent_outputs")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case (default 60)")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inside:
        return inside(args)
    if os.geteuid() != 0:
        print("record_agent_outputs: needs root (a private network namespace per run)", file=sys.stderr)
        return 2
    if not (os.path.isabs(args.bin) and os.access(args.bin, os.X_OK)):
        print(
            f"record_agent_outputs: --bin must be the absolute path of an executable, got {args.bin}", file=sys.stderr
        )
        return 2
    child = [sys.executable, str(Path(__file__).resolve()), *argv, "--inside"]
    proc = subprocess.run(["unshare", "-n", *child], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return 1
    write_outputs(args, json.loads(proc.stdout))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
