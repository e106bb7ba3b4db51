#!/bin/sh
# Collects what the agent produced, inside the VM: the workspace patch (against the baseline commit made
# before the agent ran) and ~/output as a tar. Usage: collect.sh WORK_DIR
set -u
work=$1
ws=$HOME/workspace
if git -C "$ws" rev-parse -q --verify refs/tags/agentvm-baseline >/dev/null 2>&1; then
  git -C "$ws" add -A >/dev/null 2>&1
  git -C "$ws" diff --cached --binary agentvm-baseline > "$work/workspace.patch"
  commits=$(git -C "$ws" rev-list --count agentvm-baseline..HEAD 2>/dev/null || echo 0)
  echo "$commits" > "$work/commits"
  if [ "$commits" -gt 0 ]; then
    git -C "$ws" format-patch --binary --stdout agentvm-baseline..HEAD > "$work/workspace-commits.mbox"
  fi
fi
mkdir -p "$HOME/output"
tar -C "$HOME/output" -cf "$work/output.tar" .
# The host cuts the archive at AGENTVM_MAX_RESULT_MB: the small records first, then the agent's streams and
# the patch, ~/output last, so that a large ~/output is what gets cut (`ls` would sort them by name).
cd "$work" || exit 1
set --
for name in agent-summary.json agent_version commits stdout.log stderr.log workspace.patch workspace-commits.mbox output.tar; do
  if [ -e "$name" ]; then set -- "$@" "$name"; fi
done
tar -cf results.tar --ignore-failed-read "$@"
