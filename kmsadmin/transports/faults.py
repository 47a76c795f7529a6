"""From WinRM client library exceptions to kmsadmin's error tree, each with a fix the admin can apply.

pypsrp and pywinrm raise different classes for the same situation (a refused password is
``pypsrp.exceptions.AuthenticationError`` or ``winrm.exceptions.InvalidCredentialsError``), and
requests adds its own for DNS, TCP and TLS failures. :func:`translate` folds them into
``ConnectionFailed``, ``AuthenticationFailed``, ``AccessDenied`` and ``HostTimeout``.
"""

from __future__ import annotations

import binascii
import ssl
import struct
import xml.etree.ElementTree as ET

from kmsadmin.errors import (
    AccessDenied,
    AuthenticationFailed,
    ConfigError,
    ConnectionFailed,
    HostError,
    HostTimeout,
    KmsAdminError,
    ProtocolError,
)
from kmsadmin.transports.base import BUSY_STATUSES, DeadlineExpired, host_timeout
from kmsadmin.transports.options import ConnectionOptions
from kmsadmin.transports.wsman import (
    AuthRefused,
    ConnectError,
    ConnectionLost,
    ConnectTimeoutError,
    HTTPStatusError,
    ProtocolViolation,
    ReadTimeout,
    TlsError,
    WsmanFault,
)

#: WS-Man fault code 5 is the Win32 ERROR_ACCESS_DENIED the WinRM service returns when the account
#: authenticated but may not open a shell or plugin.
ACCESS_DENIED_CODE = 5


class CertificateRejected(ConnectionFailed):
    """The host's HTTPS certificate did not validate; retrying will not help."""


def translate(
    exc: BaseException, options: ConnectionOptions, step: str, seconds: float
) -> KmsAdminError | None:
    """The kmsadmin error for ``exc`` raised while running ``step``; None when it is not a WinRM failure."""
    if isinstance(exc, HostError):
        return exc
    if isinstance(exc, DeadlineExpired | ReadTimeout):
        return host_timeout(options, step, seconds)
    native = _translate_native(exc, options, step)
    if native is not None:
        return native
    return _translate_library(exc, options, step, seconds)


def _translate_library(
    exc: BaseException, options: ConnectionOptions, step: str, seconds: float
) -> KmsAdminError | None:
    """The errors of pypsrp, pywinrm and requests (imported here: the default transport needs none)."""
    import requests
    import winrm.exceptions as winrm_exc
    from pypsrp import exceptions as psrp_exc

    host = options.name
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return host_timeout(options, step, seconds)
    if isinstance(exc, requests.exceptions.SSLError):
        return _tls_failure(options, step, exc)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return _unreachable(
            options, step, f"no TCP answer from {options.endpoint} within the connect timeout"
        )
    if isinstance(exc, requests.exceptions.RetryError):
        return _busy(options, step, "too many busy answers (HTTP 503)")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return _unreachable(options, step, f"cannot connect to {options.endpoint}: {_reason(exc)}")
    if isinstance(exc, psrp_exc.AuthenticationError | winrm_exc.AuthenticationError):
        return _auth_failure(options, step)
    if isinstance(exc, psrp_exc.WSManFaultError):
        context = exc.__context__
        if exc.code is None and isinstance(context, psrp_exc.WinRMTransportError):
            # An HTML error page that happened to parse as XML: the HTTP status is what counts.
            return _http_status(options, step, int(context.code), str(context.response_text or ""))
        return _fault(options, step, exc.code, exc.reason or str(exc))
    if isinstance(exc, winrm_exc.WSManFaultError):
        return _fault(options, step, exc.wsman_fault_code, exc.reason)
    if isinstance(exc, psrp_exc.WinRMTransportError | winrm_exc.WinRMTransportError):
        return _http_status(options, step, int(exc.code), str(exc.response_text or ""))
    if isinstance(exc, ValueError) and "auth" in str(exc).lower():
        # pypsrp validates the auth/encryption combination only when it builds the HTTP session.
        return ConfigError(f"{host}: {exc}")
    if isinstance(exc, ET.ParseError | binascii.Error | UnicodeDecodeError | struct.error):
        # pypsrp and pywinrm parse answers with ElementTree and base64 and decode PSRP with struct
        return protocol_error(options, step, f"{type(exc).__name__}: {str(exc)[:200]}")
    return None


def _translate_native(exc: BaseException, options: ConnectionOptions, step: str) -> HostError | None:
    """The errors of kmsadmin's own WS-Man client (:mod:`kmsadmin.transports.wsman`)."""
    if isinstance(exc, TlsError):
        return _tls_failure(options, step, exc)
    if isinstance(exc, ConnectTimeoutError):
        return _unreachable(
            options, step, f"no TCP answer from {options.endpoint} within the connect timeout"
        )
    if isinstance(exc, ConnectError):
        return _unreachable(options, step, f"cannot connect to {options.endpoint}: {exc}")
    if isinstance(exc, ConnectionLost):
        return _unreachable(options, step, f"the connection to {options.endpoint} was lost: {exc}")
    if isinstance(exc, AuthRefused):
        return _auth_failure(options, step)
    if isinstance(exc, ProtocolViolation):
        return protocol_error(options, step, str(exc))
    if isinstance(exc, WsmanFault):
        return _fault(options, step, exc.code, exc.reason or str(exc))
    if isinstance(exc, HTTPStatusError):
        return _http_status(options, step, exc.status, exc.body)
    return None


def is_retryable(exc: BaseException) -> bool:
    """Whether trying the same step again later may succeed.

    True for connection failures (refused, DNS, reset, HTTP 503) and timeouts; False for wrong
    credentials, access denied, certificate failures and configuration errors, which need a fix
    first. Retrying is only safe when the failed step changed nothing; the caller knows that.
    """
    if isinstance(exc, CertificateRejected | AuthenticationFailed | AccessDenied):
        return False
    if isinstance(exc, ConnectionFailed | HostTimeout | DeadlineExpired):
        return True
    if isinstance(exc, TlsError):
        return False
    if isinstance(exc, ConnectError | ConnectionLost | ReadTimeout):
        return True
    if isinstance(exc, HTTPStatusError):
        return exc.status in BUSY_STATUSES
    import requests
    import winrm.exceptions as winrm_exc
    from pypsrp import exceptions as psrp_exc

    if isinstance(exc, requests.exceptions.SSLError):
        return False
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    status: int | None = None
    if isinstance(exc, psrp_exc.WinRMTransportError | winrm_exc.WinRMTransportError):
        status = int(exc.code)
    elif isinstance(exc, psrp_exc.WSManFaultError):
        context = exc.__context__
        status = int(context.code) if isinstance(context, psrp_exc.WinRMTransportError) else None
    return status in BUSY_STATUSES


def _reason(exc: BaseException) -> str:
    """The innermost cause's message, without urllib3's object reprs."""
    inner: BaseException = exc
    while True:
        nxt = inner.__cause__ or inner.__context__
        if nxt is None or nxt is inner:
            break
        inner = nxt
    text = str(inner) or type(inner).__name__
    for marker in ("Failed to establish a new connection: ", "Connection aborted.', "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.strip("()'\" ")[:300]


def _unreachable(options: ConnectionOptions, step: str, message: str) -> HostError:
    """The host could not be reached or the connection broke: check the listener and the path."""
    return ConnectionFailed(options.name, step, message, remediation=_listener_fix(options))


def _listener_fix(options: ConnectionOptions) -> str:
    setup = "winrm quickconfig -transport:https" if options.https else "winrm quickconfig"
    return (
        f"check that {options.host} resolves and is up, that WinRM listens on {options.port} "
        f"({setup} on the host) and that TCP {options.port} is open in its firewall and on the path"
    )


def protocol_error(options: ConnectionOptions, step: str, what: str) -> HostError:
    """The host's answer broke HTTP, WS-Man, XML, PSRP or NTLM: it is not a working WinRM listener."""
    return ProtocolError(
        options.name,
        step,
        f"{options.endpoint} sent an answer kmsadmin refuses: {what}",
        remediation=(
            f"check that {options.endpoint} is a Windows WinRM listener (winrm enumerate "
            "winrm/config/listener on the host) and that no other service, proxy or TLS inspection "
            "answers on that port; the host was not changed"
        ),
    )


def _tls_failure(options: ConnectionOptions, step: str, exc: BaseException) -> HostError:
    reason = _reason(exc)
    verify_failed = "CERTIFICATE_VERIFY_FAILED" in str(exc) or any(
        isinstance(e, ssl.SSLCertVerificationError) for e in _chain(exc)
    )
    if verify_failed or "hostname" in reason.lower() or "certificate" in reason.lower():
        return CertificateRejected(
            options.name,
            step,
            f"the HTTPS certificate of {options.endpoint} was not accepted: {reason}",
            remediation=(
                "pass the CA that issued the host's WinRM certificate with --ca-bundle / KMSADMIN_CA_BUNDLE "
                "(ansible_psrp_ca_cert); make sure the name you connect to is in the certificate; "
                "only in a lab, turn validation off (ansible_psrp_cert_validation: ignore)"
            ),
        )
    return ConnectionFailed(
        options.name,
        step,
        f"TLS handshake with {options.endpoint} failed: {reason}",
        remediation=(
            f"check that port {options.port} is the WinRM HTTPS listener "
            "(winrm enumerate winrm/config/listener) and that it has a valid certificate bound"
        ),
    )


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _auth_failure(options: ConnectionOptions, step: str) -> HostError:
    return AuthenticationFailed(
        options.name,
        step,
        f"{options.endpoint} refused the credentials of {options.user or 'the current ticket'} "
        f"({options.auth})",
        remediation=(
            "check user/password; for a local account use .\\user or the host name as domain "
            "(HOST\\user); domain accounts as DOMAIN\\user or user@domain.fqdn; "
            "Basic auth works only for local accounts and must be enabled on the host"
        ),
    )


def _access_denied(options: ConnectionOptions, step: str, reason: str) -> HostError:
    return AccessDenied(
        options.name,
        step,
        f"{options.user} authenticated but WinRM denied access: {reason}",
        hresult="0x80070005",
        meaning="E_ACCESSDENIED",
        remediation=(
            "use an account in the host's Administrators group. A local account other than the built-in "
            "Administrator gets a filtered token over the network (UAC remote restrictions, KB 951016), so "
            "use the built-in Administrator or a domain account; the host's owner may instead set "
            "LocalAccountTokenFilterPolicy=1 if their security policy allows it (kmsadmin never changes it)"
        ),
    )


def _busy(options: ConnectionOptions, step: str, what: str) -> HostError:
    return ConnectionFailed(
        options.name,
        step,
        f"{options.endpoint}: {what} after {options.reconnection_retries} retries",
        remediation=(
            "the WinRM service is busy or restarting (or over MaxConcurrentOperationsPerUser / "
            "MaxShellsPerUser); retry later or with fewer parallel hosts (--forks)"
        ),
    )


def _fault(options: ConnectionOptions, step: str, code: object, reason: str) -> HostError:
    if code == ACCESS_DENIED_CODE or "access is denied" in reason.lower():
        return _access_denied(options, step, reason)
    hresult = f"0x{code:08X}" if isinstance(code, int) else None
    return ConnectionFailed(
        options.name,
        step,
        f"WinRM on {options.endpoint} answered with a fault: {reason}",
        hresult=hresult,
        remediation="check the WinRM service on the host (winrm get winrm/config) and its event log",
    )


def _http_status(options: ConnectionOptions, step: str, status: int, body: str) -> HostError:
    if status == 401:
        return _auth_failure(options, step)
    if status == 403:
        return _access_denied(options, step, "HTTP 403 Forbidden")
    if status in BUSY_STATUSES:
        return _busy(options, step, f"HTTP {status}")
    if "access is denied" in body.lower():
        return _access_denied(options, step, f"HTTP {status}")
    return ConnectionFailed(
        options.name,
        step,
        f"{options.endpoint} answered HTTP {status}",
        remediation=(
            "check that this is a WinRM listener (path /wsman) and that no proxy or load balancer "
            "is in between; with a proxy configured, try --no-proxy"
        ),
    )
