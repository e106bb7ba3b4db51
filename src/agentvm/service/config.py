"""The service's settings, read once from the environment, and the connection to Temporal.

Without ``TEMPORAL_ADDRESS`` the service is the embedded dev server that ``agentvm service`` starts on this host
(``AGENTVM_TEMPORAL_IP``:``AGENTVM_TEMPORAL_PORT``, default 127.0.0.1:7233, its UI on ``AGENTVM_TEMPORAL_UI_PORT``,
default the port + 1000). With ``TEMPORAL_ADDRESS`` every command uses that cluster, configured by the same
variables as the ``temporal`` CLI: ``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS``,
``TEMPORAL_TLS_CLIENT_CERT_PATH``/``TEMPORAL_TLS_CLIENT_KEY_PATH``, ``TEMPORAL_TLS_SERVER_CA_CERT_PATH``,
``TEMPORAL_TLS_SERVER_NAME`` (and a TOML profile when ``TEMPORAL_CONFIG_FILE`` names one).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentvm.errors import UsageError
from agentvm.service import naming
from agentvm.settings import Settings as HostSettings

DEFAULT_PORT = 7233
DEFAULT_DRAIN = 0
CONNECT_TIMEOUT = 10.0
_TLS_FILES = ("TEMPORAL_TLS_CLIENT_CERT_PATH", "TEMPORAL_TLS_CLIENT_KEY_PATH", "TEMPORAL_TLS_SERVER_CA_CERT_PATH")


@dataclass(frozen=True)
class Settings:
    address: str
    namespace: str
    embedded: bool  # the dev server of `agentvm service` (no TEMPORAL_ADDRESS)
    task_queue: str
    host: str
    ip: str
    port: int
    ui_port: int | None  # None: headless
    state_dir: Path
    drain: int

    @property
    def host_queue(self) -> str:
        return naming.host_queue(self.task_queue, self.host)

    @property
    def service_dir(self) -> Path:
        return self.state_dir / "service"

    @property
    def ui_url(self) -> str | None:
        return None if self.ui_port is None else f"http://{self.ip}:{self.ui_port}"


def _port(env: Mapping[str, str], key: str, default: int) -> int:
    raw = (env.get(key) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise UsageError(f"{key} must be a TCP port (1-65535), got {raw!r}")
    return int(raw)


def _count(env: Mapping[str, str], key: str, default: int) -> int:
    raw = (env.get(key) or "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise UsageError(f"{key} must be a whole number of seconds, got {raw!r}")
    return int(raw)


def load(env: Mapping[str, str] = os.environ, *, need_host: bool = True) -> Settings:
    """Read and check the settings (UsageError when something is wrong)."""
    address = (env.get("TEMPORAL_ADDRESS") or "").strip()
    ip = (env.get("AGENTVM_TEMPORAL_IP") or "127.0.0.1").strip()
    port = _port(env, "AGENTVM_TEMPORAL_PORT", DEFAULT_PORT)
    ui = (env.get("AGENTVM_TEMPORAL_UI") or "1").strip().lower() not in ("0", "no", "false", "off")
    ui_port = _port(env, "AGENTVM_TEMPORAL_UI_PORT", port + 1000 if port + 1000 < 65536 else port - 1000)
    if address:
        host_part, sep, port_part = address.rpartition(":")
        if not sep or not host_part or not port_part.isdigit():
            raise UsageError(f"TEMPORAL_ADDRESS must be host:port, got {address!r}")
    for key in _TLS_FILES:
        path = env.get(key)
        if path and not Path(path).is_file():
            raise UsageError(f"{key} names {path}, which is not a readable file")
    return Settings(
        address=address or f"{ip}:{port}",
        namespace=(env.get("TEMPORAL_NAMESPACE") or "default").strip(),
        embedded=not address,
        task_queue=naming.task_queue(env),
        host=naming.host_name(env) if need_host else "",
        ip=ip,
        port=port,
        ui_port=ui_port if ui else None,
        state_dir=HostSettings.load(env).state_dir,
        drain=_count(env, "AGENTVM_WORKER_DRAIN", DEFAULT_DRAIN),
    )


def connect_options(settings: Settings, env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Keyword arguments for ``temporalio.client.Client.connect``."""
    if settings.embedded:
        return {"target_host": settings.address, "namespace": settings.namespace}
    from temporalio.envconfig import ClientConfig

    config_file = env.get("TEMPORAL_CONFIG_FILE") or None
    options = dict(
        ClientConfig.load_client_connect_config(
            config_file=config_file, disable_file=config_file is None, override_env_vars=dict(env)
        )
    )
    options["target_host"] = settings.address
    options["namespace"] = settings.namespace
    return options


async def connect(settings: Settings, env: Mapping[str, str] = os.environ, timeout: float = CONNECT_TIMEOUT) -> Any:
    """A connected Temporal client; UsageError with what to do when the service cannot be reached."""
    import asyncio

    from temporalio.client import Client

    try:
        return await asyncio.wait_for(Client.connect(**connect_options(settings, env)), timeout)
    except (RuntimeError, OSError, TimeoutError, ValueError) as exc:
        where = "the agentvm service" if settings.embedded else "the Temporal cluster"
        hint = (
            "start it with `make service` (or `agentvm service --detach`), or set TEMPORAL_ADDRESS"
            if settings.embedded
            else "check TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE and the TLS / API key settings"
        )
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise Unavailable(f"cannot reach {where} at {settings.address}: {detail}; {hint}") from None


class Unavailable(Exception):
    """Temporal cannot be reached (exit code 3)."""
