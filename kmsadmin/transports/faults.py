"""From WinRM client library exceptions to kmsadmin's error tree, each with a fix the admin can apply.

pypsrp and pywinrm raise different classes for the same situation (a refused password is
``pypsrp.exceptions.AuthenticationError`` or ``winrm.exceptions.InvalidCredentialsError``), and
requests adds its own for DNS, TCP and TLS failures. :func:`translate` folds them into
``ConnectionFailed``, ``AuthenticationFailed``, ``AccessDenied`` and ``HostTimeout``.
"""

from __future__ import annotations

import binascii
import re
import ssl
import struct
import xml.etree.ElementTree as ET

from spnego.exceptions import SpnegoError

from kmsadmin import catalog
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
from kmsadmin.transports.base import BUSY_STATUSES, Deadline, DeadlineExpired, host_timeout
from kmsadmin.transports.options import ConnectionOptions
from kmsadmin.transports.wsman import (
    AuthRefused,
    AuthUnavailable,
    ConnectError,
    ConnectionLost,
    ConnectTimeoutError,
    HTTPStatusError,
    ProtocolViolation,
    ReadTimeout,
    TlsError,
    UnencryptedRefused,
    WsmanFault,
)

#: WS-Man fault code 5 is the Win32 ERROR_ACCESS_DENIED the WinRM service returns when the account
#: authenticated but may not open a shell or plugin.
ACCESS_DENIED_CODE = 5


class CertificateRejected(ConnectionFailed):
    """The host's HTTPS certificate did not validate; retrying will not help."""


class EncryptionRefused(ConnectionFailed):
    """The host refuses unencrypted messages over HTTP (AllowUnencrypted false); retrying will not help."""


class AuthLibraryMissing(AuthenticationFailed):
    """The authentication method needs a Python library that is not installed (names the extra)."""


class KerberosFailed(AuthenticationFailed):
    """Kerberos could not sign in to the host; ``meaning`` names the Kerberos error (RFC 4120 §7.5.9
    / MIT krb5 error table), ``hresult`` the SSPI status Windows reports for it where there is one."""


class NtlmRefused(AuthenticationFailed):
    """The host refuses NTLM (a domain that restricts NTLM): only Kerberos can sign in. Its code is
    :data:`NTLM_BLOCKED`."""


#: STATUS_NTLM_BLOCKED, the NTSTATUS of an NTLM sign-in a policy blocks (catalog data: [MS-ERREF] 2.3.1)
NTLM_BLOCKED = "0xC0000418"


class ClientCertificateRejected(AuthenticationFailed):
    """Certificate authentication: the host did not map the client certificate to an account."""


class ProxyFailed(ConnectionFailed):
    """The configured proxy failed; the host itself was never reached."""


#: The extra that brings python-gssapi/krb5 (Kerberos, and Kerberos under Negotiate) and
#: requests-credssp (CredSSP).
KERBEROS_EXTRA = "kmsadmin[kerberos]"

# Kerberos failures, recognised by the MIT krb5 message text (com_err table krb5_err.et) carried by
# GSSError/Krb5Error: (markers, Kerberos error name, SSPI HRESULT or None, what happened, fix). The
# SEC_E_* values are from winerror.h ("SSPI Status Codes", learn.microsoft.com/windows/win32/secauthn).
_KERBEROS_CASES: tuple[tuple[tuple[str, ...], str, str | None, str, str], ...] = (
    (
        ("clock skew too great",),
        "KRB5KRB_AP_ERR_SKEW",
        "0x80090324",  # SEC_E_TIME_SKEW
        "clock skew too great: this controller, the KDC and the host disagree on the time by more than "
        "Kerberos allows (5 minutes by default)",
        "sync the clocks: on the host w32tm /resync (it follows its domain controller), here chrony/ntp; "
        "Kerberos refuses every ticket while they differ by more than 5 minutes",
    ),
    (
        (r"server \S+ not found in kerberos database",),
        "KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN",
        "0x80090303",  # SEC_E_TARGET_UNKNOWN
        "the KDC knows no service principal {spn}",
        "connect by the host's DNS name as registered in the domain (not an IP address or a DNS alias), or "
        "set ansible_psrp_negotiate_hostname_override / ansible_winrm_kerberos_hostname_override to the "
        "name its SPN uses (setspn -L <host> lists them)",
    ),
    (
        ("cannot find kdc", "cannot contact any kdc", "cannot resolve network address for kdc"),
        "KRB5_KDC_UNREACH",
        "0x80090311",  # SEC_E_NO_AUTHENTICATING_AUTHORITY
        "no KDC (domain controller) for the realm could be reached",
        "check the realm's KDCs in krb5.conf (KRB5_CONFIG: [realms] kdc = ..., or dns_lookup_kdc with "
        "_kerberos._tcp SRV records) and that TCP/UDP 88 to a domain controller is open",
    ),
    (
        ("ticket expired", "credential has expired", "credentials have expired"),
        "KRB5KRB_AP_ERR_TKT_EXPIRED",
        None,
        "the Kerberos ticket has expired",
        "get a new ticket (kinit user@REALM, or kinit -R while it is renewable), or give kmsadmin the "
        "password or a keytab (kmsadmin_kerberos_keytab) so it gets tickets itself",
    ),
    (
        (
            "no kerberos credentials available",
            "no credentials cache found",
            "no credentials were supplied",
            "no credentials cache",
        ),
        "KRB5_FCC_NOFILE",
        "0x8009030E",  # SEC_E_NO_CREDENTIALS
        "there is no Kerberos ticket to sign in with",
        "run kinit user@REALM first (or point KRB5CCNAME / kmsadmin_kerberos_ccache at the ticket cache), "
        "or give a user and password so kmsadmin gets the ticket itself, or a keytab (kmsadmin_kerberos_keytab)",
    ),
    (
        ("preauthentication failed", "decrypt integrity check failed", "password incorrect"),
        "KRB5KDC_ERR_PREAUTH_FAILED",
        "0x8009030C",  # SEC_E_LOGON_DENIED
        "the KDC refused the password of {user}",
        "check the password (Kerberos passwords are case-sensitive) and that the account is not locked out",
    ),
    (
        (r"client \S+ not found in kerberos database",),
        "KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN",
        "0x8009030C",  # SEC_E_LOGON_DENIED
        "the KDC knows no user {user}",
        "give the user as user@REALM (the realm in capitals) or DOMAIN\\user",
    ),
    (
        (
            "wrong principal in request",
            "not found in keytab",
            "no key table entry",
            "key version",
            "cannot decrypt",
        ),
        "KRB5KRB_AP_ERR_NOT_US",
        None,
        "the host could not decrypt the ticket for {spn}",
        "{spn} is registered to another account than this host's (setspn -Q {spn} finds duplicates), or "
        "the name connected to points at a different host; fix the SPN or connect by the host's own name",
    ),
)


def translate(
    exc: BaseException, options: ConnectionOptions, step: str, seconds: float, budget: Deadline | None = None
) -> KmsAdminError | None:
    """The kmsadmin error for ``exc`` raised while running ``step``; None when it is not a WinRM failure."""
    if isinstance(exc, HostError):
        return exc
    if isinstance(exc, DeadlineExpired | ReadTimeout):
        return host_timeout(options, step, seconds, budget)
    missing = _missing_library(exc, options, step)
    if missing is not None:
        return missing
    native = _translate_native(exc, options, step)
    if native is not None:
        return native
    return _translate_library(exc, options, step, seconds, budget)


def _translate_library(
    exc: BaseException, options: ConnectionOptions, step: str, seconds: float, budget: Deadline | None = None
) -> KmsAdminError | None:
    """The errors of pypsrp, pywinrm and requests (imported here: the default transport needs none)."""
    import requests
    import winrm.exceptions as winrm_exc
    from pypsrp import exceptions as psrp_exc

    host = options.name
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return host_timeout(options, step, seconds, budget)
    if isinstance(exc, requests.exceptions.ProxyError):
        return _proxy_failure(options, step, _reason(exc))
    if isinstance(exc, requests.exceptions.SSLError):
        return _tls_failure(options, step, exc)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return _unreachable(
            options, step, f"no TCP answer from {options.endpoint} within the connect timeout"
        )
    if isinstance(exc, requests.exceptions.RetryError):
        return _busy(options, step, "too many busy answers (HTTP 503)")
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return protocol_error(options, step, "an HTTP redirect (kmsadmin does not follow redirects)")
    broken = _broken_answer(exc)
    if broken is not None:
        return protocol_error(options, step, broken)
    if isinstance(exc, requests.exceptions.ConnectionError):
        return _unreachable(options, step, f"cannot connect to {options.endpoint}: {_reason(exc)}")
    if isinstance(exc, psrp_exc.AuthenticationError | winrm_exc.AuthenticationError):
        return _auth_failure(options, step, exc)
    kerberos = _kerberos_failure(exc, options, step)
    if kerberos is not None:
        return kerberos
    if "credssp being an available authentication method" in _chain_text(exc):
        return AuthenticationFailed(
            options.name,
            step,
            f"{options.endpoint} does not offer CredSSP",
            remediation=(
                "enable CredSSP on the host (Enable-WSManCredSSP -Role Server, or winrm set "
                'winrm/config/service/auth @{CredSSP="true"}), or use Kerberos (with delegation if a '
                "second hop needs it)"
            ),
        )
    if any(isinstance(e, SpnegoError) for e in _chain(exc)):
        # the host refused the handshake (CredSSP answers a wrong password with an NTSTATUS in its
        # TSRequest; NTLM inside requests' auth hooks)
        return _auth_failure(options, step, exc)
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
    if isinstance(exc, StopIteration):
        # pywinrm takes the elements it expects (ShellId, CommandId, RelatesTo) with next()
        return protocol_error(options, step, "an answer without an element WS-Man requires")
    if isinstance(exc, psrp_exc.WinRMError | winrm_exc.WinRMError):
        # what is left of the libraries' own errors: answers they could not match or decode
        return protocol_error(options, step, f"{type(exc).__name__}: {str(exc)[:200]}")
    return None


def _broken_answer(exc: BaseException) -> str | None:
    """What was wrong with an answer whose HTTP framing or encoding urllib3/requests refused, or None."""
    import http.client

    import requests
    import urllib3.exceptions as u3

    if isinstance(
        exc,
        requests.exceptions.ChunkedEncodingError
        | requests.exceptions.ContentDecodingError
        | u3.ProtocolError
        | u3.DecodeError
        | http.client.HTTPException,
    ):
        return f"a broken HTTP answer ({_reason(exc)})"
    # urllib3 reports a header list over http.client's caps (100 headers, 64 kB a line) or a status
    # line that is not HTTP as "Connection aborted"; only a host closing the connection is that
    for cause in _chain(exc):
        for inner in (cause, *cause.args):
            if isinstance(inner, http.client.HTTPException) and not isinstance(
                inner, http.client.RemoteDisconnected
            ):
                return f"a broken HTTP answer ({type(inner).__name__}: {str(inner)[:200]})"
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
        return _auth_failure(options, step, exc)
    if isinstance(exc, ProtocolViolation):
        return protocol_error(options, step, str(exc))
    if isinstance(exc, UnencryptedRefused):
        return EncryptionRefused(
            options.name,
            step,
            f"{options.endpoint}: {exc}",
            remediation=(
                "let kmsadmin encrypt the messages over HTTP (remove message_encryption: never, and use "
                "NTLM, Negotiate or Kerberos rather than Basic) or connect over HTTPS (port 5986); "
                "turning AllowUnencrypted on at the host would expose scripts and keys on the network"
            ),
        )
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
    if isinstance(exc, CertificateRejected | EncryptionRefused | AuthenticationFailed | AccessDenied):
        return False
    if isinstance(exc, ConnectionFailed | HostTimeout | DeadlineExpired):
        return True
    if isinstance(exc, TlsError | UnencryptedRefused):
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
    if options.auth == "certificate" and not _server_certificate_failed(exc, reason):
        # The host ended the handshake after it asked for the client certificate.
        return ClientCertificateRejected(
            options.name,
            step,
            f"{options.endpoint} ended the TLS handshake on the client certificate {options.cert_pem}: {reason}",
            remediation=(
                "the host does not trust the CA that issued the client certificate: import that CA into the "
                "host's Trusted Root (and the issuer into its client certificate mapping: New-Item "
                "WSMan:\\localhost\\ClientCertificate -Issuer <thumbprint> ...), or use a certificate from a CA it trusts"
            ),
        )
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


def _server_certificate_failed(exc: BaseException, reason: str) -> bool:
    """Whether this side refused the host's certificate (rather than the host refusing ours)."""
    return (
        "CERTIFICATE_VERIFY_FAILED" in str(exc)
        or any(isinstance(e, ssl.SSLCertVerificationError) for e in _chain(exc))
        or "hostname" in reason.lower()
    )


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _chain_text(exc: BaseException) -> str:
    return " | ".join(f"{type(e).__name__}: {e}" for e in _chain(exc)).lower()


def _missing_library(exc: BaseException, options: ConnectionOptions, step: str) -> HostError | None:
    """A library the auth method or proxy needs is not installed (an ImportError, or requests' SOCKS one)."""
    chain = _chain(exc)
    text = _chain_text(exc)
    if "missing dependencies for socks support" in text:
        return ProxyFailed(
            options.name,
            step,
            f"the SOCKS proxy {options.proxy} needs PySocks, which is not installed",
            remediation="install kmsadmin[socks] (pip install 'kmsadmin[socks]'), or use an HTTP proxy",
        )
    if "pykerberos is not installed" in text:
        return AuthLibraryMissing(
            options.name,
            step,
            "pywinrm's Kerberos needs pykerberos, which is not installed",
            remediation=(
                "use the psrp transport for this host (ansible_connection: psrp; Kerberos through "
                f"{KERBEROS_EXTRA}), or install pykerberos (pip install pykerberos)"
            ),
        )
    if not (isinstance(exc, AuthUnavailable) or any(isinstance(e, ImportError) for e in chain)):
        return None
    if "credssp" in text:
        what = "CredSSP authentication needs requests-credssp"
    elif any(word in text for word in ("gssapi", "krb5", "kerberos")):
        what = f"{options.auth} authentication needs python-gssapi (Kerberos), which is not installed"
    else:
        return None
    return AuthLibraryMissing(
        options.name,
        step,
        what,
        remediation=(
            f"install {KERBEROS_EXTRA} (pip install '{KERBEROS_EXTRA}'; building python-gssapi needs the MIT "
            "Kerberos headers: apt install libkrb5-dev krb5-user, or dnf install krb5-devel krb5-workstation)"
        ),
    )


def _kerberos_case(text: str, options: ConnectionOptions) -> tuple[str, str | None, str, str] | None:
    """(Kerberos error name, HRESULT, what happened, fix) of the case of :data:`_KERBEROS_CASES`
    that ``text`` (lower case) matches, or None."""
    spn = options.spn
    user = options.user or "the current ticket's user"
    for markers, name, hresult, message, fix in _KERBEROS_CASES:
        if any(re.search(marker, text) for marker in markers):
            return name, hresult, message.format(spn=spn, user=user), fix.format(spn=spn, user=user)
    return None


def _kerberos_failure(exc: BaseException, options: ConnectionOptions, step: str) -> KerberosFailed | None:
    """A Kerberos error anywhere in the chain, as the case of :data:`_KERBEROS_CASES` it matches."""
    case = _kerberos_case(_chain_text(exc), options)
    if case is None:
        return None
    name, hresult, message, fix = case
    return KerberosFailed(
        options.name,
        step,
        f"Kerberos sign-in to {options.endpoint} failed: {message}",
        hresult=hresult,
        meaning=name,
        remediation=fix,
    )


#: the longest Kerberos reason an error message quotes
MAX_KERBEROS_REASON = 240
#: pyspnego's wrapping ("SpnegoError (7): ", "Major (458752): ...,") and GSSAPI's boilerplate
_GSS_MINOR = re.compile(r"Minor \(\d+\):\s*(.*?)(?:, Context: .*)?$", re.S)
_GSS_NOISE = re.compile(r"SpnegoError \(-?\d+\):\s*|, Context: [^,]*$")


def kerberos_reason(raw: str, options: ConnectionOptions) -> str:
    """pyspnego/GSSAPI's words for why Kerberos failed, as one short line: MIT krb5's message (the GSS
    minor status) without the GSSAPI boilerplate or krb5's numeric code, control characters removed,
    at most :data:`MAX_KERBEROS_REASON` characters, and never the password."""
    minor = _GSS_MINOR.search(raw)
    text = minor.group(1) if minor else _GSS_NOISE.sub("", raw)
    text = re.sub(r"\s+-?\d{6,}$", "", text.strip())  # krb5's com_err code ("... failed -1765328353")
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    password = options.password.value if options.password is not None else ""
    if password and len(password) >= 3:
        text = text.replace(password, "***")
    if len(text) > MAX_KERBEROS_REASON:
        text = text[: MAX_KERBEROS_REASON - 1] + "…"
    return text or "no reason given"


def _dropped_kerberos(exc: BaseException | None, options: ConnectionOptions) -> tuple[str, str] | None:
    """(what to add to the message, the fix) when Negotiate dropped Kerberos before ``exc``, else None."""
    raw = getattr(exc, "kerberos_reason", "")
    if not raw:
        return None
    reason = kerberos_reason(raw, options)
    case = _kerberos_case(raw.lower(), options)
    if case is None:
        return f"Kerberos failed: {reason}", _kerberos_fix(options)
    name, _, message, fix = case
    return f"Kerberos failed: {message} ({name}: {reason})", fix


def _kerberos_fix(options: ConnectionOptions) -> str:
    """What makes Kerberos work, when its error names no single cause."""
    return (
        "have a ticket (kinit user@REALM) or give user@REALM and password, connect by the host's DNS name "
        f"so the SPN {options.spn} exists (not an IP address; ansible_psrp_negotiate_hostname_override "
        "otherwise), reach a KDC of the realm (krb5.conf) and keep the clocks within 5 minutes"
    )


def _ntlm_refused(options: ConnectionOptions, step: str, dropped: tuple[str, str] | None = None) -> HostError:
    blocked = catalog.hresult_info(NTLM_BLOCKED)
    if dropped is not None:
        # Negotiate tried Kerberos first: its reason is the fix
        return NtlmRefused(
            options.name,
            step,
            f"{options.endpoint} refuses NTLM (its domain restricts NTLM), and {options.auth} "
            f"authentication as {options.user or 'the current user'} fell back to NTLM because {dropped[0]}",
            hresult=blocked.code,
            meaning=blocked.symbol,
            remediation=f"sign in with Kerberos: {dropped[1]}",
        )
    try:
        import gssapi  # noqa: F401
    except ImportError:
        kerberos = f"install {KERBEROS_EXTRA} so Negotiate can use Kerberos, then "
    else:
        kerberos = ""
    return NtlmRefused(
        options.name,
        step,
        f"{options.endpoint} refuses NTLM (its domain restricts NTLM), and {options.auth} "
        f"authentication as {options.user or 'the current user'} used NTLM",
        hresult=blocked.code,
        meaning=blocked.symbol,
        remediation=(
            f"sign in with Kerberos: {kerberos}use auth kerberos (or negotiate) with a ticket (kinit) or "
            "user@REALM and password, and connect by the host's DNS name so the SPN HTTP/<fqdn> resolves "
            "(ansible_psrp_negotiate_hostname_override when ansible_host is an address)"
        ),
    )


def _proxy_failure(options: ConnectionOptions, step: str, reason: str) -> HostError:
    return ProxyFailed(
        options.name,
        step,
        f"the proxy {options.proxy} failed before reaching {options.endpoint}: {reason}",
        remediation=(
            "check the proxy's address, port and credentials and that it allows CONNECT to the WinRM port; "
            "or connect directly without a proxy (ansible_psrp_ignore_proxy: true / no --proxy)"
        ),
    )


def _auth_failure(options: ConnectionOptions, step: str, exc: BaseException | None = None) -> HostError:
    if exc is not None:
        kerberos = _kerberos_failure(exc, options, step)
        if kerberos is not None:
            return kerberos
    if options.auth == "certificate":
        return ClientCertificateRejected(
            options.name,
            step,
            f"{options.endpoint} did not accept the client certificate {options.cert_pem}",
            remediation=(
                "map the certificate to a local account on the host (New-Item WSMan:\\localhost\\ClientCertificate "
                "-Subject <UPN in the certificate> -URI * -Issuer <issuing CA thumbprint> -Credential <account>), "
                "enable Auth\\Certificate on the WinRM service, and use a certificate with the Client "
                "Authentication EKU and a UPN subject alternative name, issued by a CA the host trusts"
            ),
        )
    mechanism = getattr(exc, "mechanism", "")
    dropped = _dropped_kerberos(exc, options)
    if isinstance(exc, AuthRefused) and exc.host_refused:
        if mechanism == "ntlm" and exc.first_leg:
            # NTLM's first message carries no credential: refusing it refuses NTLM itself
            return _ntlm_refused(options, step, dropped)
        if mechanism == "kerberos":
            return KerberosFailed(
                options.name,
                step,
                f"{options.endpoint} refused the Kerberos ticket for {options.spn} "
                f"of {options.user or 'the current ticket'}",
                meaning="KRB5KRB_AP_ERR_NOT_US",
                remediation=(
                    f"the host could not accept a ticket for {options.spn}: the SPN may belong to another "
                    f"account (setspn -Q {options.spn}), the name may point at a different host, or the "
                    "account is not an administrator of the host"
                ),
            )
    if isinstance(exc, AuthRefused) and not exc.host_refused and mechanism == "kerberos":
        # the client could not even build its Kerberos token, for a reason no case above names
        return KerberosFailed(
            options.name,
            step,
            f"Kerberos sign-in to {options.endpoint} failed before the host was asked: "
            f"{kerberos_reason(exc.kerberos_reason or str(exc.__cause__ or exc), options)}",
            remediation=_kerberos_fix(options),
        )
    fix = (
        "check user/password; for a local account use .\\user or the host name as domain "
        "(HOST\\user); domain accounts as DOMAIN\\user or user@domain.fqdn; "
        "Basic auth works only for local accounts and must be enabled on the host"
    )
    return AuthenticationFailed(
        options.name,
        step,
        f"{options.endpoint} refused the credentials of {options.user or 'the current ticket'} "
        f"({options.auth}" + (f", with NTLM; {dropped[0]})" if dropped else ")"),
        remediation=f"{fix}; {dropped[1]}" if dropped else fix,
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
