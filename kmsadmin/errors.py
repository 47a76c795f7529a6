"""The kmsadmin error tree. Every error carries the process exit code the CLI uses for it.

Exit codes (architecture contract): 0 ok/no change, 1 a host failed (or is waiting for its KMS
host's count: configured, not activated yet), 2 usage/bad input, 3 ``--check`` found pending
changes, 4 configuration or template error before any host was contacted, 130 interrupted.
"""

from __future__ import annotations

from kmsadmin.values import clean_text

EXIT_OK = 0
EXIT_HOST_FAILED = 1
EXIT_USAGE = 2
EXIT_PENDING = 3
EXIT_CONFIG = 4
EXIT_INTERRUPTED = 130


class KmsAdminError(Exception):
    """Base of every error kmsadmin raises on purpose."""

    exit_code = EXIT_HOST_FAILED


class InvalidInput(KmsAdminError, ValueError):
    """A value given by the user can never be valid (host name, key, port, domain, interval...)."""

    exit_code = EXIT_USAGE

    def __init__(self, what: str, value: str, why: str) -> None:
        self.what = what
        self.value = value
        self.why = why
        super().__init__(f"invalid {what} {value!r}: {why}")


class ConfigError(KmsAdminError):
    """Configuration, inventory, playbook or template problem found before contacting any host."""

    exit_code = EXIT_CONFIG


class TemplateError(ConfigError):
    """A template is missing or failed to render."""


class CatalogError(ConfigError):
    """The packaged catalog data is missing or inconsistent."""


class HostError(KmsAdminError):
    """A remote step failed on a host. Carries host, step, HRESULT, meaning and remediation."""

    exit_code = EXIT_HOST_FAILED

    def __init__(
        self,
        host: str,
        step: str,
        message: str,
        *,
        hresult: str | None = None,
        meaning: str | None = None,
        remediation: str | None = None,
    ) -> None:
        # Messages carry text from hosts (fault reasons, error records, facts): cleaned once here so no
        # output (terminal, JSON, CSV, HTML, JUnit, journal) meets escape sequences or invalid Unicode.
        self.host = clean_text(host)
        self.step = clean_text(step)
        self.message = message = clean_text(message)
        self.hresult = hresult = None if hresult is None else clean_text(hresult)
        self.meaning = meaning = None if meaning is None else clean_text(meaning)
        self.remediation = remediation = None if remediation is None else clean_text(remediation)
        parts = [f"{host}: {step}: {message}"]
        if hresult:
            parts.append(f"HRESULT {hresult}" + (f" ({meaning})" if meaning else ""))
        if remediation:
            parts.append(f"fix: {remediation}")
        super().__init__(" | ".join(parts))

    def to_dict(self) -> dict[str, str | None]:
        """JSON-friendly form for reports."""
        return {
            "host": self.host,
            "step": self.step,
            "message": self.message,
            "hresult": self.hresult,
            "meaning": self.meaning,
            "remediation": self.remediation,
        }


class ConnectionFailed(HostError):
    """The host could not be reached (DNS, TCP, TLS, HTTP 5xx)."""


class ProtocolError(HostError):
    """The host's answer broke the protocol (HTTP framing, size caps, XML, base64, PSRP or NTLM): it is
    not a working WinRM listener, or something else answers on its port. Not retried."""


class AuthenticationFailed(HostError):
    """The host refused the credentials."""


class AccessDenied(HostError):
    """Authenticated, but not allowed (not an admin, or UAC remote restrictions)."""


class HostTimeout(HostError):
    """The per-host deadline expired."""


class RemoteScriptError(HostError):
    """A script ran but reported an error (with an HRESULT where Windows gave one)."""


class PreflightFailed(HostError):
    """A preflight check failed; nothing was changed on the host."""
