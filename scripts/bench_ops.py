#!/usr/bin/env python3
"""`make bench`: agentvm's orchestration overhead and batch wall times on the Multipass double with its
*realistic* latency profile and a trivial agent. Figures are printed (and returned as JSON), never asserted.

(a) overhead per run = wall time - time inside Multipass operations and the agent (from the double's trace:
    the union of the intervals of every `multipass` invocation of the run, so the agent's `exec` counts as
    Multipass/agent time), compared with a minimal shell script making the same Multipass calls.
(b) wall time of batches of 1, 4 and 8 runs with MAX_VMS = 1, 2, 4.
(c) the credential proxy's added latency per request on loopback (scripts/bench_proxy.py at a small size).

Environment: BENCH_RUNS (overhead samples, default 3), BENCH_BATCHES (default "1,4,8"), BENCH_CAPS ("1,2,4"),
BENCH_LATENCY (default "realistic"), BENCH_PROXY_N (requests per proxy case, default 200; 0 skips (c)),
BENCH_JSON (write the figures there).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOUBLE = REPO / "simulator" / "bin" / "multipass"
ADMIN = REPO / "simulator" / "bin" / "multipass-double"
AGENT_COMMAND = "echo done"

SHELL_BASELINE = """set -e
mp="$MULTIPASS_BIN"; g="$1"; n="$2"
"$mp" clone "$g" --name "$n" >/dev/null
"$mp" start "$n"
"$mp" exec "$n" -- cloud-init status --wait >/dev/null || true
"$mp" exec "$n" -- sh -c 'echo prompt > /tmp/prompt.txt'
"$mp" exec "$n" -- sh -c 'echo done < /tmp/prompt.txt > /tmp/out.txt'
"$mp" transfer "$n:/tmp/out.txt" "$3/out.txt"
"$mp" delete --purge "$n"
"""


def busy_seconds(trace: Path, name: str) -> float:
    """Union of the intervals of the trace's invocations that name the instance."""
    spans = sorted(
        (e["start"], e["end"])
        for e in map(json.loads, trace.read_text().splitlines())
        if any(name in a for a in e["argv"])
    )
    total, cur_s, cur_e = 0.0, None, None
    for s, e in spans:
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, cwd=REPO)
    return time.monotonic() - t0, proc


def overhead(env: dict[str, str], work: Path, samples: int) -> dict[str, float]:
    prefix = env["AGENTVM_PREFIX"]
    agentvm, shell = [], []
    for i in range(samples):
        trace = work / f"trace-a{i}.jsonl"
        wall, proc = timed(
            [sys.executable, "-m", "agentvm", "run", "--json", "bench"],
            {**env, "MULTIPASS_DOUBLE_TRACE": str(trace)},
        )
        if proc.returncode != 0:
            raise SystemExit(f"agentvm run failed:\n{proc.stderr[-3000:]}")
        name = f"{prefix}-run-{json.loads(proc.stdout)['run_id']}"
        agentvm.append((wall, busy_seconds(trace, name)))
        trace = work / f"trace-s{i}.jsonl"
        name = f"{prefix}-sh-{uuid.uuid4().hex[:6]}"
        wall, proc = timed(
            ["sh", "-c", SHELL_BASELINE, "sh", f"{prefix}-golden", name, str(work)],
            {**env, "MULTIPASS_DOUBLE_TRACE": str(trace)},
        )
        if proc.returncode != 0:
            raise SystemExit(f"shell baseline failed:\n{proc.stderr[-3000:]}")
        shell.append((wall, busy_seconds(trace, name)))
    a = statistics.median(w - b for w, b in agentvm)
    s = statistics.median(w - b for w, b in shell)
    return {
        "agentvm_wall": round(statistics.median(w for w, _ in agentvm), 2),
        "agentvm_in_multipass": round(statistics.median(b for _, b in agentvm), 2),
        "agentvm_overhead": round(a, 2),
        "shell_wall": round(statistics.median(w for w, _ in shell), 2),
        "shell_in_multipass": round(statistics.median(b for _, b in shell), 2),
        "shell_overhead": round(s, 2),
        "ratio": round(a / s, 1) if s > 0 else float("inf"),
    }


def batch_wall(env: dict[str, str], work: Path, size: int, cap: int) -> float:
    prompts = work / f"prompts-{size}-{cap}.yaml"
    prompts.write_text(json.dumps([f"bench {i}" for i in range(size)]))
    wall, proc = timed([sys.executable, "-m", "agentvm", "batch", str(prompts)], {**env, "MAX_VMS": str(cap)})
    if proc.returncode != 0:
        raise SystemExit(f"batch failed:\n{proc.stderr[-3000:]}")
    return round(wall, 1)


def machine() -> str:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor(),
    )
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB"


def proxy_latency(n: int) -> dict:
    """(c): scripts/bench_proxy.py with ``n`` requests per case; its lines are printed as they are."""
    with tempfile.TemporaryDirectory(prefix="agentvm-bench-proxy-") as folder:
        out = Path(folder) / "proxy.json"
        proc = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "bench_proxy.py"), "-n", str(n), "--json", str(out)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        for line in proc.stdout.splitlines():
            print(f"(c) {line}", flush=True)
        if proc.returncode != 0:
            print(f"(c) the proxy benchmark failed: {proc.stderr.strip()[-500:]}", flush=True)
            return {"error": proc.stderr.strip()[-500:]}
        return json.loads(out.read_text())


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="agentvm-bench-"))
    data = REPO / ".cache" / f"bench-ops-{uuid.uuid4().hex[:6]}"
    prefix = "bench" + uuid.uuid4().hex[:4]
    env = {
        **os.environ,
        "MULTIPASS_BIN": str(DOUBLE),
        "MULTIPASS_DOUBLE_DATA": str(data),
        "AGENTVM_STATE_DIR": str(work / "state"),
        "AGENTVM_RUNS_DIR": str(work / "runs"),
        "AGENTVM_PREFIX": prefix,
        "AGENT": "custom",
        "AGENT_COMMAND": AGENT_COMMAND,
        "PYTHONPATH": str(REPO / "src"),
    }
    for var in ("MULTIPASS_DOUBLE_FAIL", "MULTIPASS_DOUBLE_TRACE", "MAX_VMS", "ALERT_WEBHOOK_URL", "ALERT_COMMAND"):
        env.pop(var, None)
    golden = f"{prefix}-golden"
    try:
        # A plain instance stands in for the golden: launched, stopped and sealed (runs clone the sealed state).
        manifest = json.dumps({"schema": 1, "build_id": f"bench-{prefix}", "built_at": "2026-01-01T00:00:00Z"})
        for argv in (
            ["launch", "--name", golden],
            ["stop", golden],
            ["snapshot", "--name", "sealed", "--comment", manifest, golden],
        ):
            subprocess.run([str(DOUBLE), *argv], env=env, check=True, capture_output=True)
        env["MULTIPASS_DOUBLE_LATENCY"] = os.environ.get("BENCH_LATENCY", "realistic")
        figures: dict = {
            "machine": machine(),
            "date": time.strftime("%Y-%m-%d"),
            "latency": env["MULTIPASS_DOUBLE_LATENCY"],
        }
        print(f"machine: {figures['machine']}; latency profile: {figures['latency']}", flush=True)
        o = overhead(env, work, int(os.environ.get("BENCH_RUNS", "3")))
        figures["overhead"] = o
        print(
            f"(a) per run (median): agentvm wall {o['agentvm_wall']} s, "
            f"in Multipass+agent {o['agentvm_in_multipass']} s, "
            f"overhead {o['agentvm_overhead']} s; shell script wall {o['shell_wall']} s, overhead "
            f"{o['shell_overhead']} s; ratio {o['ratio']}x",
            flush=True,
        )
        figures["batches"] = {}
        for cap in [int(c) for c in os.environ.get("BENCH_CAPS", "1,2,4").split(",")]:
            for size in [int(s) for s in os.environ.get("BENCH_BATCHES", "1,4,8").split(",")]:
                wall = batch_wall(env, work, size, cap)
                figures["batches"][f"{size}@{cap}"] = wall
                print(f"(b) batch of {size} with MAX_VMS={cap}: {wall} s", flush=True)
        proxy_n = int(os.environ.get("BENCH_PROXY_N", "200"))
        if proxy_n > 0:
            figures["proxy"] = proxy_latency(proxy_n)
        if os.environ.get("BENCH_JSON"):
            Path(os.environ["BENCH_JSON"]).write_text(json.dumps(figures, indent=2) + "\n")
        return 0
    finally:
        env.pop("MULTIPASS_DOUBLE_LATENCY", None)
        subprocess.run(
            [sys.executable, str(ADMIN), "down", "--data", str(data), "--purge", "--quiet"], check=False, timeout=600
        )


if __name__ == "__main__":
    sys.exit(main())
