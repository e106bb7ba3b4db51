#!/usr/bin/env python3
"""`make demo`: the whole agentvm flow on a Linux machine without Multipass or an API key.

It uses the Multipass test double (simulator/, needs root and systemd-nspawn) and a local mock of the
Anthropic Messages API, builds the golden VM with the real Claude Code CLI (`make golden`; a no-op once
built), then runs one prompt through `agentvm run` exactly as `make run` would, and prints the summary.
The double's state stays in .cache/demo-double so a second demo reuses the golden; `make double-down`
removes everything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from simulator.mocks.model_api import make_server  # noqa: E402

DOUBLE = REPO / "simulator" / "bin"
DEMO_ANSWER = "Hello from the mock model! agentvm cloned the golden VM, ran Claude Code in it and brought this back."


def _fail(message: str) -> int:
    print(f"make demo: {message}", file=sys.stderr)
    return 2


def main() -> int:
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("systemd-nspawn") is None:
        return _fail(
            "the demo runs on the Multipass test double, which needs Linux, root and systemd-nspawn "
            "(apt-get install systemd-container debootstrap dnsmasq-base iptables); with real Multipass use `make run`"
        )
    env = dict(os.environ)
    env.update(
        MULTIPASS_BIN=str(DOUBLE / "multipass"),
        MULTIPASS_DOUBLE_DATA=env.get("MULTIPASS_DOUBLE_DATA") or str(REPO / ".cache" / "demo-double"),
        AGENTVM_PREFIX=env.get("AGENTVM_PREFIX") or "agentvm-demo",
        AGENTVM_GOLDEN_DIR=env.get("AGENTVM_GOLDEN_DIR") or str(REPO / ".cache" / "demo-golden"),
    )
    print("== 1/3 golden VM (built once, then reused) ==", flush=True)
    if subprocess.run(["make", "--no-print-directory", "golden"], cwd=REPO, env=env, check=False).returncode != 0:
        return _fail("building the golden VM failed (see above)")
    host = subprocess.run(
        [sys.executable, str(DOUBLE / "multipass-double"), "host-ip"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    record = REPO / ".cache" / "demo-mock"
    server = make_server(host, 0, record, {"text": DEMO_ANSWER})
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://{host}:{server.server_address[1]}"
    print(f"== 2/3 mock Messages API on {base} (requests recorded in {record}/requests.jsonl) ==", flush=True)
    env.update(
        ANTHROPIC_BASE_URL=base,
        ANTHROPIC_API_KEY="sk-ant-demo-not-a-real-key",
        CLAUDE_CODE_MAX_RETRIES="1",
        AGENT="claude",
        PYTHONPATH=str(REPO / "src"),
    )
    prompt = env.get("PROMPT") or "Introduce yourself in one sentence."
    print("== 3/3 agentvm run ==", flush=True)
    try:
        proc = subprocess.run([sys.executable, "-m", "agentvm", "run", prompt], env=env, check=False)
    finally:
        server.shutdown()
        server.server_close()
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
