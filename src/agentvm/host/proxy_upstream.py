"""The model APIs a run's credential proxy serves: where each one is, which header carries its key, and which
variables of the VM's environment point the agent at the proxy instead."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from yarl import URL

from agentvm.host.isolation import is_ip_literal
from agentvm.host.proxy_destinations import is_local_address

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


class Secret:
    """A credential value that does not show itself in repr/str/logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not value or any(c in value for c in "\r\n\0"):
            raise ValueError("a credential must be a non-empty single-line string")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class Credential:
    """Where the real credential goes: ``header: [scheme ]secret``."""

    header: str
    secret: Secret
    scheme: str = ""

    @classmethod
    def anthropic(cls, key: str) -> Credential:
        return cls("x-api-key", Secret(key))

    @classmethod
    def bearer(cls, key: str) -> Credential:
        return cls("authorization", Secret(key), "Bearer")

    @classmethod
    def google(cls, key: str) -> Credential:
        return cls("x-goog-api-key", Secret(key))

    def value(self) -> str:
        return f"{self.scheme} {self.secret.reveal()}" if self.scheme else self.secret.reveal()


def _is_host_local(host: str) -> bool:
    if host == "localhost":
        return True
    if not is_ip_literal(host):
        return False
    return ipaddress.ip_address(host).is_loopback or is_local_address(host)


@dataclass(frozen=True)
class Upstream:
    """One model API the run may use, served on its own port (so the agent's own paths stay unchanged).

    ``token_vars`` get the token in the VM's environment, ``base_url_vars`` the proxy's URL plus ``vm_path``.
    """

    name: str
    base_url: str
    credential: Credential
    token_vars: tuple[str, ...] = ()
    base_url_vars: tuple[str, ...] = ()
    vm_path: str = ""
    allow_plain_http: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"upstream name {self.name!r}: lower-case letters, digits and '-', at most 32")
        url = URL(self.base_url)
        if url.scheme not in ("https", "http") or not url.host or url.query_string or url.fragment or url.user:
            raise ValueError(f"upstream {self.name}: base URL must be http(s)://host[:port][/path], no query/user")
        if url.scheme == "http" and not self.allow_plain_http and not _is_host_local(url.host):
            raise ValueError(
                f"upstream {self.name}: plain http is allowed only to loopback or an address of this host; "
                "use https (or allow_plain_http=True for a test upstream)"
            )

    @property
    def url(self) -> URL:
        return URL(self.base_url)

    def target(self, raw_path: str) -> URL:
        """The upstream URL for a request path (+ query) as the VM sent it; the host never changes."""
        base = self.url
        return URL(str(base.origin()) + base.raw_path.rstrip("/") + raw_path, encoded=True)


@dataclass(frozen=True)
class _Provider:
    base_url: str
    base_url_vars: tuple[str, ...]
    vm_path: str = ""


PROVIDERS: dict[str, _Provider] = {
    "anthropic": _Provider("https://api.anthropic.com", ("ANTHROPIC_BASE_URL",)),
    "google": _Provider("https://generativelanguage.googleapis.com", ("GOOGLE_GEMINI_BASE_URL",)),
    "openai": _Provider("https://api.openai.com", ("OPENAI_BASE_URL",), "/v1"),
}
# credential variable -> (provider, header, scheme)
CREDENTIAL_VARIABLES: dict[str, tuple[str, str, str]] = {
    "ANTHROPIC_API_KEY": ("anthropic", "x-api-key", ""),
    "ANTHROPIC_AUTH_TOKEN": ("anthropic", "authorization", "Bearer"),
    "GEMINI_API_KEY": ("google", "x-goog-api-key", ""),
    "GOOGLE_API_KEY": ("google", "x-goog-api-key", ""),
    "OPENAI_API_KEY": ("openai", "authorization", "Bearer"),
    "CODEX_API_KEY": ("openai", "authorization", "Bearer"),
}


def upstream_for_variable(variable: str, secret: str, base_url: str | None = None) -> Upstream:
    """The upstream for an agent's credential variable (``ANTHROPIC_API_KEY`` ...); ``base_url`` overrides the
    provider's public endpoint (e.g. the host's ``ANTHROPIC_BASE_URL``, without the ``/v1`` of OpenAI's)."""
    try:
        provider, header, scheme = CREDENTIAL_VARIABLES[variable]
    except KeyError:
        known = ", ".join(sorted(CREDENTIAL_VARIABLES))
        raise ValueError(f"no proxy mapping for {variable}: known are {known}; or use CREDENTIALS=direct") from None
    spec = PROVIDERS[provider]
    return Upstream(
        name=provider,
        base_url=(base_url or spec.base_url).rstrip("/").removesuffix(spec.vm_path) or spec.base_url,
        credential=Credential(header, Secret(secret), scheme),
        token_vars=(variable,),
        base_url_vars=spec.base_url_vars,
        vm_path=spec.vm_path,
    )
