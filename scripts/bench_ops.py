#!/usr/bin/env python3
"""`make bench`: agentvm's own overhead, where it goes, prompt -> agent with and without a warm pool, the exec
and SSH connections, batch wall times, on the Multipass double (its *realistic* latency profile by default) with
a trivial `custom` agent whose first instruction writes a timestamp. Figures are printed, never asserted.

(a) overhead per run = wall time - time inside Multipass operations and the agent (from the double's trace:
    the union of the intervals of every `multipass` invocation naming the run's instance), next to a minimal
    shell script making the same Multipass calls; their ratio.
(b) that overhead by phase (result.json's ``profile``; each task's Multipass time from the trace), averaged.
(c) prompt -> agent process started: the command's start to the agent's first instruction, without a pool
    (the runs of (a)) and with a warm pool (`agentvm pool --detach`, POOL = BENCH_RUNS).
(d) exec (`multipass exec`) vs SSH (CONNECTION=ssh) connection: the VM tasks' cost, the runs' overhead.
(e) batch wall times (BENCH_BATCHES runs at MAX_VMS in BENCH_CAPS) and the ratio to one run.
(f) the credential proxy's added latency per request on loopback (scripts/bench_proxy.py at a small size).

Environment: BENCH_RUNS (samples per case, default 3), BENCH_BATCHES (default "1,8"), BENCH_CAPS ("4"),
BENCH_LATENCY (default "realistic"), BENCH_PROXY_N (requests per proxy case, default 200; 0 skips (f)),
BENCH_JSON (write the figures there).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench_lib import REPO, Sample, breakdown, mean, median, run_agentvm, table, trace_spans

DOUBLE = REPO / "simulator" / "bin" / "multipass"
ADMIN = REPO / "simulator" / "bin" / "multipass-double"
AGENT_COMMAND = "sh -c 'date +%s.%N; cat >/dev/null; echo done'"
VM_TASKS = ("[upload]", "[agent]")

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


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, cwd=REPO)
    return time.monotonic() - t0, proc


def shell_run(env: dict[str, str], work: Path, i: int) -> tuple[float, float]:
    """The shell baseline once: (wall, time in Multipass)."""
    trace, name = work / f"trace-s{i}.jsonl", f"{env['AGENTVM_PREFIX']}-sh-{uuid.uuid4().hex[:6]}"
    argv = ["sh", "-c", SHELL_BASELINE, "sh", f"{env['AGENTVM_PREFIX']}-golden", name, str(work)]
    wall, proc = timed(argv, {**env, "MULTIPASS_DOUBLE_TRACE": str(trace)})
    if proc.returncode != 0:
        raise SystemExit(f"shell baseline failed:\n{proc.stderr[-3000:]}")
    return wall, sum(e - s for s, e in trace_spans(trace, name))


def section_a(runs: list[Sample], shell: list[tuple[float, float]]) -> dict:
    a, s = median(r.overhead for r in runs) or 0.0, median(w - b for w, b in shell) or 0.0
    o = {
        "agentvm_wall": round(median(r.wall for r in runs) or 0.0, 2),
        "agentvm_in_multipass": round(median(r.busy for r in runs) or 0.0, 2),
        "agentvm_overhead": round(a, 2),
        "shell_wall": round(median(w for w, _ in shell) or 0.0, 2),
        "shell_in_multipass": round(median(b for _, b in shell) or 0.0, 2),
        "shell_overhead": round(s, 2),
        "ratio": round(a / s, 1) if s > 0 else None,
    }
    table(
        "(a)", f"overhead per run (median of {len(runs)})", ["", "wall s", "in Multipass+agent s", "overhead s"],
        [["agentvm run", o["agentvm_wall"], o["agentvm_in_multipass"], o["agentvm_overhead"]],
         ["shell script, same Multipass calls", o["shell_wall"], o["shell_in_multipass"], o["shell_overhead"]],
         ["ratio agentvm / shell", "", "", f"{o['ratio']}x"]],
    )  # fmt: skip
    print(f"(a) overhead {o['agentvm_overhead']} s, shell {o['shell_overhead']} s, ratio {o['ratio']}x", flush=True)
    return o


def section_b(runs: list[Sample]) -> dict:
    phase_rows, tasks = breakdown(runs)
    table("(b)", f"agentvm's own overhead by phase (mean of {len(runs)})", ["phase", "s"], phase_rows)
    table("(b)", "  ... each task", ["task", "wall s", "in Multipass+agent s", "own s"],
          [(name[:78], s, mp, s - mp) for name, s, mp in tasks])  # fmt: skip
    return {"phases": dict(phase_rows), "tasks": [{"task": n, "seconds": s, "in_multipass": m} for n, s, m in tasks]}


def fill_pool(env: dict[str, str], size: int) -> float:
    wall, proc = timed([sys.executable, "-m", "agentvm", "pool", "--detach"], {**env, "POOL": str(size)})
    if proc.returncode != 0:
        raise SystemExit(f"agentvm pool --detach failed:\n{proc.stderr[-3000:]}")
    return wall


def wait_ready(env: dict[str, str], timeout: float = 300) -> None:
    ready = Path(env["AGENTVM_STATE_DIR"]) / "pool" / "ready"
    deadline = time.monotonic() + timeout
    while not list(ready.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.5)


def pooled_runs(env: dict[str, str], work: Path, samples: int) -> tuple[float, list[Sample]]:
    pool_env = {**env, "POOL": str(samples), "MAX_VMS": str(samples + 1)}
    try:
        filled = fill_pool(pool_env, samples)
        runs = []
        for i in range(samples):
            wait_ready(pool_env)
            runs.append(run_agentvm(pool_env, work / f"trace-p{i}.jsonl"))
        return filled, runs
    finally:
        subprocess.run([sys.executable, "-m", "agentvm", "pool", "--stop"], env=pool_env, capture_output=True,
                       check=False, cwd=REPO, timeout=900)  # fmt: skip


def to_agent(r: Sample) -> tuple[float | None, float | None]:
    if r.agent_at is None:
        return None, None
    return r.agent_at - r.spawned, r.agent_at - r.started_at


def section_c(cold: list[Sample], warm: list[Sample], filled: float) -> dict:
    out = {}
    rows = []
    for label, runs in (("no pool (clone, start, cloud-init)", cold), ("warm pool", warm)):
        pairs = [to_agent(r) for r in runs]
        figure = {
            "from_command": median(p[0] for p in pairs),
            "from_pipeline": median(p[1] for p in pairs),
            "from_pool": sum(bool(r.record["instance"].get("from_pool")) for r in runs),
            "runs": len(runs),
        }
        out[label] = figure
        pipeline = figure["from_pipeline"]
        rows.append([label, figure["from_command"], pipeline, f"{figure['from_pool']}/{len(runs)}"])
    table("(c)", f"prompt -> agent process started (median; the pool filled in {filled:.1f} s, not counted)",
          ["", "from the command's start s", "from the pipeline's start s", "VM from the pool"], rows)  # fmt: skip
    return out


def vm_task_cost(runs: list[Sample]) -> dict[str, float]:
    out: dict[str, float] = {}
    for prefix in VM_TASKS:
        secs = [t["seconds"] for r in runs for t in r.record["profile"]["tasks"] if t["task"].startswith(prefix)]
        out[prefix] = mean(secs)
    isolate = [sum(t["seconds"] for t in r.record["profile"]["tasks"] if t["task"].startswith("[isolate]"))
               for r in runs]  # fmt: skip
    out["isolate"] = mean(isolate)
    out["per_task"] = mean(out[p] for p in VM_TASKS)
    out["overhead"] = median(r.overhead for r in runs) or 0.0
    return out


def section_d(exec_runs: list[Sample], ssh_runs: list[Sample]) -> dict:
    figures = {"exec": vm_task_cost(exec_runs), "ssh": vm_task_cost(ssh_runs)}
    rows = [
        [name, f["[upload]"], f["[agent]"], f["per_task"], f["isolate"], f["overhead"]]
        for name, f in (("exec (multipass exec)", figures["exec"]), ("ssh (CONNECTION=ssh)", figures["ssh"]))
    ]
    table(
        "(d)",
        f"connection: per-task cost of the VM tasks (mean of {len(ssh_runs)}; the work in the VM is trivial)",
        ["connection", "[upload] s", "[agent] s", "per task s", "[isolate] wait s", "run overhead s"],
        rows,
    )
    exec_phases, ssh_phases = breakdown(exec_runs)[0], dict(breakdown(ssh_runs)[0])
    table("(d)", "  ... where the runs' overhead goes, exec vs ssh (mean)", ["phase", "exec s", "ssh s"],
          [(name, seconds, ssh_phases.get(name)) for name, seconds in exec_phases])  # fmt: skip
    return figures


def batch_wall(env: dict[str, str], work: Path, size: int, cap: int) -> float:
    prompts = work / f"prompts-{size}-{cap}.yaml"
    prompts.write_text(json.dumps([f"bench {i}" for i in range(size)]))
    wall, proc = timed([sys.executable, "-m", "agentvm", "batch", str(prompts)], {**env, "MAX_VMS": str(cap)})
    if proc.returncode != 0:
        raise SystemExit(f"batch failed:\n{proc.stderr[-3000:]}")
    return round(wall, 1)


def section_e(env: dict[str, str], work: Path) -> dict:
    sizes = [int(s) for s in os.environ.get("BENCH_BATCHES", "1,8").split(",")]
    caps = [int(c) for c in os.environ.get("BENCH_CAPS", "4").split(",")]
    walls = {(size, cap): batch_wall(env, work, size, cap) for cap in caps for size in sizes}
    rows: list[list[object]] = [[f"{size} run(s)", *(walls[size, cap] for cap in caps)] for size in sizes]
    if 1 in sizes and max(sizes) > 1:
        rows.append([f"ratio {max(sizes)} / 1", *(f"{walls[max(sizes), c] / walls[1, c]:.2f}x" for c in caps)])
    table("(e)", "batch wall time (s)", ["", *(f"MAX_VMS={c}" for c in caps)], rows)
    return {f"{size}@{cap}": wall for (size, cap), wall in walls.items()}


def machine() -> str:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor(),
    )
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB"


def proxy_latency(n: int) -> dict:
    """(f): scripts/bench_proxy.py with ``n`` requests per case; its lines are printed as they are."""
    with tempfile.TemporaryDirectory(prefix="agentvm-bench-proxy-") as folder:
        out = Path(folder) / "proxy.json"
        proc = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "bench_proxy.py"), "-n", str(n), "--json", str(out)],
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        print("(f) the credential proxy's added latency", flush=True)
        for line in proc.stdout.splitlines():
            print(f"    {line}", flush=True)
        if proc.returncode != 0:
            print(f"(f) the proxy benchmark failed: {proc.stderr.strip()[-500:]}", flush=True)
            return {"error": proc.stderr.strip()[-500:]}
        return json.loads(out.read_text())


def make_golden(env: dict[str, str], golden: str, prefix: str) -> None:
    """A plain instance stands in for the golden: launched, stopped and sealed (runs clone the sealed state)."""
    manifest = json.dumps({"schema": 1, "build_id": f"bench-{prefix}", "built_at": "2026-01-01T00:00:00Z"})
    for argv in (
        ["launch", "--name", golden],
        ["stop", golden],
        ["snapshot", "--name", "sealed", "--comment", manifest, golden],
    ):
        subprocess.run([str(DOUBLE), *argv], env=env, check=True, capture_output=True)


def measure(env: dict[str, str], work: Path) -> dict:
    samples = int(os.environ.get("BENCH_RUNS", "3"))
    figures: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                     "latency": env["MULTIPASS_DOUBLE_LATENCY"]}  # fmt: skip
    print(f"machine: {figures['machine']}; {figures['date']}; latency profile: {figures['latency']!r}", flush=True)
    runs, shell = [], []
    for i in range(samples):
        runs.append(run_agentvm(env, work / f"trace-a{i}.jsonl"))
        shell.append(shell_run(env, work, i))
    figures["overhead"] = section_a(runs, shell)
    figures["phases"] = section_b(runs)
    filled, warm = pooled_runs(env, work, samples)
    figures["prompt_to_agent"] = section_c(runs, warm, filled)
    ssh = [run_agentvm({**env, "CONNECTION": "ssh"}, work / f"trace-ssh{i}.jsonl") for i in range(samples)]
    figures["connection"] = section_d(runs, ssh)
    figures["batches"] = section_e(env, work)
    proxy_n = int(os.environ.get("BENCH_PROXY_N", "200"))
    if proxy_n > 0:
        figures["proxy"] = proxy_latency(proxy_n)
    return figures


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
    for var in ("MULTIPASS_DOUBLE_FAIL", "MULTIPASS_DOUBLE_TRACE", "MAX_VMS", "POOL", "CONNECTION",
                "ALERT_WEBHOOK_URL", "ALERT_COMMAND"):  # fmt: skip
        env.pop(var, None)
    try:
        make_golden(env, f"{prefix}-golden", prefix)
        env["MULTIPASS_DOUBLE_LATENCY"] = os.environ.get("BENCH_LATENCY", "realistic")
        figures = measure(env, work)
        if os.environ.get("BENCH_JSON"):
            Path(os.environ["BENCH_JSON"]).write_text(json.dumps(figures, indent=2) + "\n")
        return 0
    finally:
        env.pop("MULTIPASS_DOUBLE_LATENCY", None)
        subprocess.run(
            [sys.executable, str(ADMIN), "down", "--data", str(data), "--purge", "--quiet"], check=False, timeout=600
        )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
