#!/bin/sh
# Prepares a run inside the VM from the unpacked bundle: the workspace (unpacked and committed as the
# baseline the patch is made against), ~/output, and the agent's version. Usage: prepare.sh WORK_DIR
set -eu
work=$1
mkdir -p "$HOME/workspace" "$HOME/output"
if [ -f "$work/workspace.tar.gz" ]; then
  tar -xzf "$work/workspace.tar.gz" -C "$HOME/workspace"
  rm -f "$work/workspace.tar.gz"
  cd "$HOME/workspace"
  git init -q
  git add -A
  git -c user.name=agentvm -c user.email=agentvm@localhost commit -q --allow-empty -m "agentvm baseline"
  git tag agentvm-baseline
fi
python3 - "$work" <<'PY'
import json, subprocess, sys
work = sys.argv[1]
spec = json.load(open(f"{work}/spec.json"))
if spec.get("version_command"):
    try:
        out = subprocess.run(spec["version_command"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        out = f"unknown ({exc})"
    open(f"{work}/agent_version", "w").write(out)
PY
