# Copyright (c) 2026 agentvm contributors
# Apache License 2.0 (see LICENSE)
"""Action of agentvm.multipass.push: one ``multipass transfer`` of a controller file, no module."""

from __future__ import annotations

import os
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

OPTIONS = {"src": {"type": "path", "required": True}, "dest": {"type": "str", "required": True}}


class ActionModule(ActionBase):
    TRANSFERS_FILES = True
    _requires_connection = True

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        _spec, args = self.validate_argument_spec(argument_spec=OPTIONS)
        if not os.path.isfile(args["src"]):
            raise AnsibleActionFail(f"src {args['src']} is not a file on the controller")
        self._connection.put_file(args["src"], args["dest"])
        result.update(changed=True, src=args["src"], dest=args["dest"], size=os.path.getsize(args["src"]))
        return result
