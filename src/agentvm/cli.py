"""`agentvm run`: the command-line entry point (`make run` calls it)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentvm import ops, opscli
from agentvm.errors import USAGE_EXIT, UsageError
from agentvm.request import build_request
from agentvm.runner import Run

FLAG_ENV = {
    "agent": "AGENT",
    "timeout": "TIMEOUT",
    "workspace": "WORKSPACE",
    "model": "MODEL",
    "max_turns": "MAX_TURNS",
    "agent_command": "AGENT_COMMAND",
}


def load_vault(env: Mapping[str, str]) -> dict[str, str]:
    """Credentials from an ansible-vault encrypted YAML mapping (AGENTVM_VAULT_FILE), if configured."""
    path = env.get("AGENTVM_VAULT_FILE")
    if not path:
        return {}
    password_file = env.get("AGENTVM_VAULT_PASSWORD_FILE") or env.get("ANSIBLE_VAULT_PASSWORD_FILE")
    if not password_file:
        raise UsageError("AGENTVM_VAULT_FILE needs AGENTVM_VAULT_PASSWORD_FILE (a file holding the vault password)")
    import yaml
    from ansible.parsing.vault import VaultLib, VaultSecret

    try:
        password = Path(password_file).read_bytes().strip()
        data = VaultLib([("default", VaultSecret(password))]).decrypt(Path(path).read_bytes())
    except Exception as exc:
        raise UsageError(f"cannot decrypt the vault file {path}: {exc}") from None
    values = yaml.safe_load(data) or {}
    if not isinstance(values, dict):
        raise UsageError(f"the vault file {path} must hold a mapping of VARIABLE: value")
    return {str(k): str(v) for k, v in values.items()}


def summary(record: dict[str, Any], run_dir: Path) -> str:
    text = (record.get("result_text") or "").strip().splitlines()
    lines = [
        "",
        f"status:   {record['status']} (exit {record['exit_code']})",
        f"duration: {record['timings']['total']:.1f} s",
        f"folder:   {run_dir}",
    ]
    if record.get("error"):
        lines.append(f"error:    {record['error']['message']}")
        lines.append(f"what to do: {record['error']['hint']}")
    if text:
        lines.append("result:")
        lines.extend(f"  {line}" for line in text[:8])
        if len(text) > 8:
            lines.append(f"  ... ({len(text) - 8} more lines in result.json)")
    if record["instance"]["kept"]:
        name = record["instance"]["name"]
        lines.append(f"kept VM:  {name} (get a shell: multipass shell {name}; delete: multipass delete --purge {name})")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentvm", description="Run an AI agent on a prompt in a disposable Multipass VM.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="run one prompt (settings also come from PROMPT, AGENT, TIMEOUT, ... in the environment)"
    )
    run.add_argument(
        "prompt", nargs="?", help="the prompt, or - to read it from stdin (default: $PROMPT / $PROMPT_FILE)"
    )
    run.add_argument("--prompt-file")
    run.add_argument("--agent")
    run.add_argument("--timeout")
    run.add_argument("--workspace")
    run.add_argument("--model")
    run.add_argument("--max-turns")
    run.add_argument("--agent-command")
    run.add_argument("--keep", action="store_true")
    run.add_argument("--json", action="store_true", help="print result.json on stdout at the end")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # --- the service (src/agentvm/service, docs/service.md): service, worker, submit, status, cancel ---
    from agentvm.service import COMMANDS as SERVICE_COMMANDS

    if argv and argv[0] in SERVICE_COMMANDS:
        from agentvm.service.cli import exit_with

        exit_with(argv)  # does not return
    # --- end of the service block ---
    if argv and argv[0] in opscli.COMMANDS:  # clean, doctor, runs, show, batch: docs/operations.md
        return opscli.main(argv)
    args = parser().parse_args(argv)
    env = dict(os.environ)
    for attr, key in FLAG_ENV.items():
        value = getattr(args, attr)
        if value is not None:
            env[key] = str(value)
    if args.keep:
        env["KEEP"] = "1"
    stdin = sys.stdin.buffer.read() if args.prompt == "-" else None
    prompt = None if args.prompt in (None, "-") else args.prompt
    try:
        request = build_request(env, prompt=prompt, prompt_file=args.prompt_file, stdin=stdin, vault=load_vault(env))
        limits = ops.limits(env)
    except UsageError as exc:
        print(f"agentvm: {exc}", file=sys.stderr)
        return USAGE_EXIT
    # Host-wide operations (docs/operations.md): liveness lock, reaper, FIFO queue for a VM slot, alerts.
    try:
        with ops.host_slot(request, limits):
            record, code = Run(request).execute()
    except ops.slots.QueueTimeout as exc:
        print(f"agentvm: {exc}", file=sys.stderr)
        return ops.QUEUE_TIMEOUT_EXIT
    except KeyboardInterrupt:
        print("agentvm: interrupted while queued; nothing was created", file=sys.stderr)
        return 130
    print(summary(record, request.run_dir), file=sys.stderr)
    ops.alert(record, request.run_dir)
    if args.json:
        print(json.dumps(record, indent=2, ensure_ascii=False))
    return code


if __name__ == "__main__":
    sys.exit(main())
