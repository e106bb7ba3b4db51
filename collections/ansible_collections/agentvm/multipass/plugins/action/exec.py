# Copyright (c) 2026 agentvm contributors
# Apache License 2.0 (see LICENSE)
"""Action of agentvm.multipass.exec: one ``multipass exec`` of an argv, no module sent to the instance."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

OPTIONS = {
    "argv": {"type": "list", "elements": "str", "required": True},
    "stdin_file": {"type": "path"},
    "stdout_file": {"type": "path"},
    "max_stdout_bytes": {"type": "int", "default": 0},
    "timeout": {"type": "int", "default": 0},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        _spec, args = self.validate_argument_spec(argument_spec=OPTIONS)
        run = getattr(self._connection, "exec_argv", None)
        if run is None:
            raise AnsibleActionFail("agentvm.multipass.exec needs the agentvm.multipass.multipass connection")
        rc, stdout, stderr, cut = run(
            list(args["argv"]),
            stdin_path=args["stdin_file"],
            stdout_path=args["stdout_file"],
            max_stdout_bytes=args["max_stdout_bytes"],
            timeout=args["timeout"] or None,
        )
        result.update(
            rc=rc,
            stdout=stdout.decode("utf-8", "replace"),
            stderr=stderr.decode("utf-8", "replace"),
            cut=cut,
            changed=True,
            cmd=list(args["argv"]),
        )
        if rc != 0:
            result.update(failed=True, msg=f"non-zero return code {rc}")
        return result
