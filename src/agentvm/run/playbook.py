"""Running ``playbooks/run.yml`` through ansible-runner, with nothing of the user's environment that the
playbook does not need (no credential variable reaches ansible-playbook, its modules, the ``multipass``
clients or ansible-runner's artifacts), and every extra variable marked ``!unsafe`` (never templated)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agentvm.settings import REPO

RUN_PLAYBOOK = REPO / "playbooks" / "run.yml"
#: Host environment variables handed to ansible-playbook (everything else is left out).
PASS_EXACT = frozenset(
    {
        "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "XDG_CACHE_HOME",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
        "MULTIPASS_BIN", "MULTIPASS_DOUBLE_DATA", "MULTIPASS_DOUBLE_IMAGES", "MULTIPASS_DOUBLE_TRACE",
        "MULTIPASS_DOUBLE_LATENCY", "MULTIPASS_DOUBLE_FAIL", "MULTIPASS_DOUBLE_EXEC_RC4_LOOP",
    }
)  # fmt: skip
PASS_PREFIX = ("LC_",)


class Unsafe(str):
    """A string Ansible must never template (YAML ``!unsafe``)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Unsafe, lambda d, v: d.represent_scalar("!unsafe", str(v)))


def _unsafe(value: Any) -> Any:
    if isinstance(value, str):
        return Unsafe(value) if value else value  # an empty string has nothing to template
    if isinstance(value, Mapping):
        return {str(k): _unsafe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_unsafe(v) for v in value]
    return value


def extravars_yaml(extravars: Mapping[str, Any]) -> str:
    """The extra variables as YAML, every string tagged ``!unsafe``."""
    return yaml.dump(_unsafe(dict(extravars)), Dumper=_Dumper, default_flow_style=False, allow_unicode=True)


def clean_env(host: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of ansible-playbook: a few host variables (paths, locale, CA bundles, the double's),
    PATH with this Python's folder first, and ``extra``."""
    env = {k: v for k, v in host.items() if k in PASS_EXACT or k.startswith(PASS_PREFIX)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), host.get("PATH", os.defpath)])
    env.update(extra)
    return env


@dataclass
class Outcome:
    status: str  # successful | failed | timeout | canceled | error
    rc: int | None
    stdout: str


def run(
    private: Path,
    extravars: Mapping[str, Any],
    host_env: Mapping[str, str],
    event_handler: Callable[[dict[str, Any]], bool],
    cancel: threading.Event,
    timeout: int,
    verbosity: int = 0,
    playbook: Path = RUN_PLAYBOOK,
) -> Outcome:
    """Run ``playbook`` with ``extravars`` against localhost (the play adds the VM itself)."""
    from ansible_runner.config.runner import RunnerConfig
    from ansible_runner.runner import Runner

    (private / "env").mkdir(parents=True, mode=0o700)
    (private / "inventory").mkdir(mode=0o700)
    (private / "env" / "extravars").write_text(extravars_yaml(extravars))
    (private / "inventory" / "hosts").write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )
    ansible = {
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(REPO / "collections"),
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_INVENTORY": str(private / "inventory" / "hosts"),
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
    }
    config = RunnerConfig(
        private_data_dir=str(private),
        playbook=str(playbook),
        inventory=str(private / "inventory" / "hosts"),
        quiet=True,
        timeout=timeout,
        verbosity=verbosity or None,
        suppress_env_files=True,
        envvars=ansible,
    )
    config.prepare()
    # ansible-runner seeds its environment with os.environ: keep only what it added itself.
    added = {k: v for k, v in config.env.items() if os.environ.get(k) != v}
    config.env = clean_env(host_env, {**added, **ansible})
    runner = Runner(config=config, event_handler=event_handler, cancel_callback=cancel.is_set)
    runner.run()
    try:
        stdout = runner.stdout.read()
    except (OSError, AttributeError, ValueError):
        stdout = ""
    return Outcome(status=str(runner.status), rc=runner.rc, stdout=stdout)
