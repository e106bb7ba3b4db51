"""Credentials from an ansible-vault encrypted YAML mapping (``AGENTVM_VAULT_FILE``), if configured."""

from __future__ import annotations

from pathlib import Path

from agentvm.errors import UsageError
from agentvm.settings import Settings


def load_vault(settings: Settings) -> dict[str, str]:
    if not settings.vault_file:
        return {}
    if not settings.vault_password_file:
        raise UsageError("AGENTVM_VAULT_FILE needs AGENTVM_VAULT_PASSWORD_FILE (a file holding the vault password)")
    import yaml
    from ansible.parsing.vault import VaultLib, VaultSecret

    try:
        password = Path(settings.vault_password_file).read_bytes().strip()
        data = VaultLib([("default", VaultSecret(password))]).decrypt(Path(settings.vault_file).read_bytes())
    except Exception as exc:
        raise UsageError(f"cannot decrypt the vault file {settings.vault_file}: {exc}") from None
    values = yaml.safe_load(data) or {}
    if not isinstance(values, dict):
        raise UsageError(f"the vault file {settings.vault_file} must hold a mapping of VARIABLE: value")
    return {str(k): str(v) for k, v in values.items()}
