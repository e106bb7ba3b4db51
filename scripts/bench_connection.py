#!/usr/bin/env python3
"""Per-task overhead of the agentvm.multipass.multipass connection plugin, next to ansible.builtin.local.

Runs a playbook of N trivial ``ansible.builtin.command: "true"`` tasks, and the same playbook with no task,
through each connection (local; multipass with pipelining on; multipass with pipelining off). The
per-task overhead is (time with N tasks - time with none) / N, so Ansible's start-up cost drops out. Also
times bare ``multipass exec NAME -- true`` calls for context. Prints figures; asserts nothing.

    scripts/bench_connection.py --instance NAME [--tasks 20] [--repeat 3]
    scripts/bench_connection.py --launch [--tasks 20]       # launches (and deletes) its own instance

The executable is ``multipass`` on PATH unless MULTIPASS_BIN names another (e.g. the test double).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Scenario:
    name: str
    inventory_line: str


def multipass_bin() -> str:
    return os.environ.get("MULTIPASS_BIN") or shutil.which("multipass") or "multipass"


def scenarios(instance: str) -> list[Scenario]:
    interpreter = "ansible_python_interpreter=/usr/bin/python3"
    plugin = "ansible_connection=agentvm.multipass.multipass"
    return [
        Scenario(
            "local",
            f"bench ansible_connection=ansible.builtin.local ansible_python_interpreter={sys.executable}",
        ),
        Scenario(
            "multipass pipelining=on", f"bench ansible_host={instance} {plugin} {interpreter} ansible_pipelining=true"
        ),
        Scenario(
            "multipass pipelining=off", f"bench ansible_host={instance} {plugin} {interpreter} ansible_pipelining=false"
        ),
    ]


def write_playbook(path: Path, tasks: int) -> None:
    lines = ["---", "- name: Benchmark", "  hosts: bench", "  gather_facts: false", "  tasks:"]
    if tasks == 0:
        lines.append("    []")
    for index in range(tasks):
        lines += [
            f"    - name: Task {index}",
            "      ansible.builtin.command: 'true'",
            "      changed_when: false",
        ]
    path.write_text("\n".join(lines) + "\n")


def ansible_playbook() -> str:
    candidate = Path(sys.executable).parent / "ansible-playbook"
    return str(candidate) if candidate.exists() else "ansible-playbook"


def time_playbook(workdir: Path, scenario: Scenario, playbook: Path) -> float:
    inventory = workdir / "hosts.ini"
    inventory.write_text(scenario.inventory_line + "\n")
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    started = time.perf_counter()
    proc = subprocess.run(
        [ansible_playbook(), "-i", str(inventory), str(playbook)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"benchmark playbook failed for {scenario.name} (rc={proc.returncode})")
    return elapsed


def time_raw_exec(instance: str, count: int) -> float:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        subprocess.run(
            [multipass_bin(), "exec", "-n", instance, "--", "true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=True,
        )
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def run(instance: str, tasks: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="agentvm-bench-") as tmp:
        workdir = Path(tmp)
        empty, full = workdir / "empty.yml", workdir / "full.yml"
        write_playbook(empty, 0)
        write_playbook(full, tasks)
        print(f"instance={instance} tasks={tasks} repeat={repeat} (median of repeats)")
        raw = time_raw_exec(instance, max(3, repeat))
        print(f"raw `multipass exec -- true`: {raw * 1000:.0f} ms")
        print(f"{'scenario':<26} {'0 tasks s':>10} {f'{tasks} tasks s':>11} {'per task ms':>12} {'vs local ms':>12}")
        local_per_task = None
        for scenario in scenarios(instance):
            base = statistics.median(time_playbook(workdir, scenario, empty) for _ in range(repeat))
            total = statistics.median(time_playbook(workdir, scenario, full) for _ in range(repeat))
            per_task = (total - base) / tasks * 1000
            if local_per_task is None:
                local_per_task = per_task
            extra = per_task - local_per_task
            print(f"{scenario.name:<26} {base:>10.2f} {total:>11.2f} {per_task:>12.0f} {extra:>+12.0f}")


def launch_instance() -> str:
    name = f"bench-{uuid.uuid4().hex[:6]}"
    subprocess.run([multipass_bin(), "launch", "--name", name], check=True, capture_output=True)
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--instance", help="a Running instance to use (left as it is)")
    target.add_argument("--launch", action="store_true", help="launch a throwaway instance and delete it after")
    parser.add_argument("--tasks", type=int, default=20, help="tasks per playbook (default 20)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is kept")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.repeat < 1:
        parser.error("--tasks and --repeat must be positive")
    instance = args.instance or launch_instance()
    try:
        run(instance, args.tasks, args.repeat)
    finally:
        if args.launch:
            subprocess.run([multipass_bin(), "delete", "--purge", instance], check=False, capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
