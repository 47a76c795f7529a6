"""Library exceptions to kmsadmin errors, retry classification, CLIXML cleaning, the stdin bootstrap."""

from __future__ import annotations

import base64
import json
import ssl
import time

import pytest
import requests
import winrm.exceptions as winrm_exc
from pypsrp import exceptions as psrp_exc

from kmsadmin.errors import (
    AccessDenied,
    AuthenticationFailed,
    ConfigError,
    ConnectionFailed,
    HostTimeout,
    RemoteScriptError,
)
from kmsadmin.transports import CertificateRejected, Deadline, build_options, clean_stderr, is_retryable
from kmsadmin.transports.base import (
    BOOTSTRAP_ARGUMENTS,
    BOOTSTRAP_SCRIPT,
    DeadlineExpired,
    chunks,
    host_timeout,
    stdin_payload,
)
from kmsadmin.transports.faults import translate
from kmsadmin.values import RenderedScript

OPTIONS = build_options("srv01", env={"KMSADMIN_USER": "CORP\\ops", "KMSADMIN_PASSWORD": "pw-Secret-1"})


def _translate(exc: BaseException) -> object:
    return translate(exc, OPTIONS, "facts", 30)


def test_connection_refused() -> None:
    err = _translate(requests.exceptions.ConnectionError("[Errno 111] Connection refused"))
    assert isinstance(err, ConnectionFailed)
    assert err.host == "srv01" and err.step == "facts"
    assert err.remediation is not None
    assert "5986" in err.remediation and "winrm quickconfig -transport:https" in err.remediation
    assert is_retryable(err)


def test_certificate_failure_says_pass_the_ca_bundle() -> None:
    cause = ssl.SSLCertVerificationError("certificate verify failed: unable to get local issuer certificate")
    exc = requests.exceptions.SSLError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    exc.__cause__ = cause
    err = _translate(exc)
    assert isinstance(err, CertificateRejected) and isinstance(err, ConnectionFailed)
    assert err.remediation is not None and "--ca-bundle" in err.remediation
    assert not is_retryable(err)


def test_authentication_errors_from_both_libraries() -> None:
    for exc in (
        psrp_exc.AuthenticationError("Failed to authenticate the user CORP\\ops with ntlm"),
        winrm_exc.InvalidCredentialsError("the specified credentials were rejected by the server"),
        psrp_exc.WinRMTransportError("http", 401, ""),
    ):
        err = _translate(exc)
        assert isinstance(err, AuthenticationFailed), exc
        assert err.remediation is not None and ".\\user" in err.remediation
        assert "pw-Secret-1" not in str(err)
        assert not is_retryable(err)


def test_access_denied_explains_uac_remote_restrictions() -> None:
    for exc in (
        psrp_exc.WSManFaultError(5, "srv01", "Access is denied.", None, None, None),
        winrm_exc.WSManFaultError(
            code=500,
            message="Bad HTTP response",
            response="<x/>",
            reason="Access is denied.",
            wsman_fault_code=5,
        ),
    ):
        err = _translate(exc)
        assert isinstance(err, AccessDenied), exc
        assert err.remediation is not None
        assert "KB 951016" in err.remediation and "LocalAccountTokenFilterPolicy" in err.remediation
        assert "never changes it" in err.remediation
        assert not is_retryable(err)


def test_busy_host_is_connection_failed_and_retryable() -> None:
    raw = psrp_exc.WinRMTransportError("http", 503, "")
    assert is_retryable(raw)
    err = _translate(raw)
    assert isinstance(err, ConnectionFailed) and "503" in err.message
    assert is_retryable(err)
    assert isinstance(_translate(requests.exceptions.RetryError("too many 503")), ConnectionFailed)


def test_timeouts_become_host_timeout() -> None:
    for exc in (DeadlineExpired(), requests.exceptions.ReadTimeout("read timed out")):
        err = _translate(exc)
        assert isinstance(err, HostTimeout)
        assert err.message == "no answer within 30s"
        assert is_retryable(err)


def test_other_wsman_faults_keep_their_code() -> None:
    err = _translate(psrp_exc.WSManFaultError(2150858843, None, "The shell was not found", None, None, None))
    assert isinstance(err, ConnectionFailed) and err.hresult == "0x8033805B"


def test_unrelated_errors_are_not_translated() -> None:
    assert _translate(KeyError("x")) is None
    assert isinstance(_translate(ValueError("The specified auth 'x' is not supported")), ConfigError)
    assert not is_retryable(KeyError("x"))
    assert not is_retryable(RemoteScriptError("h", "s", "m"))


def test_deadline() -> None:
    d = Deadline(0.05)
    assert not d.expired and 0 < d.remaining() <= 0.05
    time.sleep(0.06)
    assert d.expired and d.remaining() < 0


CLIXML = (
    "#< CLIXML\r\n"
    '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
    '<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T></TN>'
    '<MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules for first use.</AV></PR></MS></Obj>'
    '<S S="Error">Get-CimInstance : Zugriff verweigert _x000D__x000A_</S>'
    '<S S="Error">    + CategoryInfo : PermissionDenied_x000D__x000A_</S>'
    "</Objs>"
)


def test_clean_stderr_keeps_errors_drops_progress() -> None:
    (message,) = clean_stderr(CLIXML.encode("utf-8"))
    assert message == "Get-CimInstance : Zugriff verweigert \n    + CategoryInfo : PermissionDenied"
    assert clean_stderr(b"") == ()
    assert clean_stderr(b"plain failure\r\n") == ("plain failure",)
    # progress only (a successful run) leaves nothing
    progress_only = CLIXML.split('<S S="Error">', maxsplit=1)[0] + "</Objs>"
    assert clean_stderr(progress_only.encode()) == ()
    # not XML after the marker: kept as text rather than lost
    assert clean_stderr(b"#< CLIXML\r\n<Objs broken") == ("<Objs broken",)


def test_bootstrap_is_short_and_fixed() -> None:
    assert BOOTSTRAP_ARGUMENTS[:3] == ("-NoProfile", "-NonInteractive", "-EncodedCommand")
    decoded = base64.b64decode(BOOTSTRAP_ARGUMENTS[3]).decode("utf-16-le")
    assert decoded == BOOTSTRAP_SCRIPT
    assert "[Console]::In.ReadToEnd()" in decoded and "UTF8" in decoded
    command_line = " ".join(("powershell", *BOOTSTRAP_ARGUMENTS))
    assert len(command_line) < 1200  # far below cmd.exe's 8191


def test_stdin_payload_roundtrip_and_chunks() -> None:
    text = "Write-Output 'für 日本'\r\n" * 3000
    script = RenderedScript(step="facts", version=1, fmt="ps1", text=text, display=text)
    payload = stdin_payload(script)
    assert payload.isascii()
    pieces = chunks(payload, 10_000)
    assert all(len(p) <= 10_000 for p in pieces) and len(pieces) > 1
    assert base64.b64decode(b"".join(pieces)).decode("utf-8") == text
    assert chunks(b"", 10) == [b""]


@pytest.mark.parametrize("seconds", [0.0, -1.0])
def test_zero_deadline_is_expired(seconds: float) -> None:
    assert Deadline(seconds).expired


def test_missing_gssapi_names_the_extra_to_install() -> None:
    from kmsadmin.transports.faults import AuthLibraryMissing

    options = build_options("krb01", explicit={"auth": "kerberos"}, env={})
    cause = ImportError("GSSAPIProxy requires the Python gssapi library: No module named 'gssapi'")
    wrapped = ValueError("building the auth context failed")
    wrapped.__cause__ = cause
    for exc in (cause, wrapped):
        err = translate(exc, options, "facts", 30)
        assert isinstance(err, AuthLibraryMissing) and isinstance(err, AuthenticationFailed)
        assert err.host == "krb01" and err.step == "facts"
        assert err.remediation is not None and "install kmsadmin[kerberos]" in err.remediation
        assert not is_retryable(err)
    credssp = build_options("c01", explicit={"auth": "credssp", "user": "u", "password": "p"}, env={})
    err = translate(
        ImportError("Cannot use CredSSP auth as requests-credssp is not installed"), credssp, "facts", 30
    )
    assert isinstance(err, AuthLibraryMissing) and "requests-credssp" in err.message


def test_proxy_failures_are_blamed_on_the_proxy() -> None:
    from kmsadmin.transports.faults import ProxyFailed

    options = build_options("p01", explicit={"proxy": "http://proxy.corp:3128"}, env={})
    err = translate(
        requests.exceptions.ProxyError("Unable to connect to proxy: [Errno 111] Connection refused"),
        options,
        "facts",
        30,
    )
    assert isinstance(err, ProxyFailed) and "http://proxy.corp:3128" in err.message
    assert err.remediation is not None and "proxy" in err.remediation
    socks = build_options("p02", explicit={"proxy": "socks5://127.0.0.1:1080"}, env={})
    err = translate(
        requests.exceptions.InvalidSchema("Missing dependencies for SOCKS support."), socks, "facts", 30
    )
    assert (
        isinstance(err, ProxyFailed) and err.remediation is not None and "kmsadmin[socks]" in err.remediation
    )


def test_refused_client_certificate_is_not_a_password_problem() -> None:
    from kmsadmin.transports.faults import ClientCertificateRejected

    options = build_options(
        "cert01",
        explicit={
            "auth": "certificate",
            "cert_pem": "/etc/kmsadmin/c.pem",
            "cert_key_pem": "/etc/kmsadmin/c.key",
        },
        env={},
    )
    err = translate(psrp_exc.WinRMTransportError("http", 401, ""), options, "facts", 30)
    assert isinstance(err, ClientCertificateRejected)
    assert err.remediation is not None and "ClientCertificate" in err.remediation
    assert "user/password" not in err.remediation


def test_kerberos_library_errors_by_their_krb5_text() -> None:
    from kmsadmin.transports.faults import KerberosFailed

    options = build_options("srv01.corp.test", explicit={"auth": "kerberos", "host": "10.1.2.3"}, env={})
    cases = {
        "Minor (2529638949): Clock skew too great": ("KRB5KRB_AP_ERR_SKEW", "0x80090324"),
        'Cannot find KDC for realm "CORP.TEST" -1765328228': ("KRB5_KDC_UNREACH", "0x80090311"),
        "Minor (2529638919): Server HTTP/srv01.corp.test@CORP.TEST not found in Kerberos database": (
            "KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN",
            "0x80090303",
        ),
        "Client 'nobody@CORP.TEST' not found in Kerberos database -1765328378": (
            "KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN",
            "0x8009030C",
        ),
    }
    for text, (name, hresult) in cases.items():
        err = translate(RuntimeError(text), options, "facts", 30)
        assert isinstance(err, KerberosFailed), text
        assert (err.meaning, err.hresult) == (name, hresult)
    err = translate(
        RuntimeError("Server HTTP/srv01.corp.test@CORP.TEST not found in Kerberos database"),
        options,
        "facts",
        30,
    )
    assert isinstance(err, KerberosFailed) and "HTTP/srv01.corp.test" in err.message


def test_the_kerberos_reason_is_cleaned_bounded_and_never_holds_the_password() -> None:
    from kmsadmin.transports.faults import MAX_KERBEROS_REASON, kerberos_reason

    gss = (
        "SpnegoError (4294967295): Major (851968): Unspecified GSS failure.  Minor code may provide more "
        "information, Minor (2529638919): Server HTTP/srv01@CORP.TEST not found in Kerberos database, "
        "Context: Processing security token"
    )
    assert kerberos_reason(gss, OPTIONS) == "Server HTTP/srv01@CORP.TEST not found in Kerberos database"
    assert (
        kerberos_reason("Decrypt integrity check failed -1765328353", OPTIONS)
        == "Decrypt integrity check failed"
    )
    hostile = "Minor (1): bad\r\n\x1b[31mthing pw-Secret-1 " + "x" * 1000
    cleaned = kerberos_reason(hostile, OPTIONS)
    assert "pw-Secret-1" not in cleaned and "\x1b" not in cleaned and "\n" not in cleaned
    assert cleaned.startswith("bad [31mthing *** x") and len(cleaned) == MAX_KERBEROS_REASON


def test_negotiate_errors_keep_why_kerberos_was_dropped() -> None:
    from kmsadmin.transports.faults import KerberosFailed, NtlmRefused
    from kmsadmin.transports.wsman import AuthRefused

    negotiate = build_options(
        "srv01",
        explicit={"auth": "negotiate"},
        env={"KMSADMIN_USER": "ops@CORP.TEST", "KMSADMIN_PASSWORD": "pw-Secret-1"},
    )
    skew = "SpnegoError (1): Major (851968): x, Minor (2529637899): Clock skew too great, Context: y"
    blocked = translate(
        AuthRefused("refused", mechanism="ntlm", first_leg=True, kerberos_reason=skew), negotiate, "facts", 1
    )
    assert isinstance(blocked, NtlmRefused) and "because Kerberos failed" in blocked.message
    assert (blocked.hresult, blocked.meaning) == ("0xC0000418", "STATUS_NTLM_BLOCKED")
    assert "KRB5KRB_AP_ERR_SKEW: Clock skew too great" in blocked.message
    assert blocked.remediation is not None and "w32tm /resync" in blocked.remediation
    odd = "Minor (5): Some new Kerberos trouble"
    refused = translate(AuthRefused("refused", mechanism="ntlm", kerberos_reason=odd), negotiate, "facts", 1)
    assert isinstance(refused, AuthenticationFailed) and not isinstance(refused, NtlmRefused)
    assert "(negotiate, with NTLM; Kerberos failed: Some new Kerberos trouble)" in refused.message
    assert (
        refused.remediation is not None and "kinit" in refused.remediation and "clocks" in refused.remediation
    )
    # Kerberos alone, failing before the host was asked, for a reason no known case names
    alone = AuthRefused("cannot start kerberos authentication", mechanism="kerberos", host_refused=False)
    alone.__cause__ = ValueError("Minor (9): An unheard-of GSS problem, Context: z")
    failed = translate(alone, negotiate, "facts", 1)
    assert isinstance(failed, KerberosFailed) and failed.message.endswith("An unheard-of GSS problem")
    for error in (blocked, refused, failed):
        assert "pw-Secret-1" not in str(error)


def test_collecting_why_kerberos_was_dropped_logs_nothing_more(caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import threading

    from kmsadmin.transports.wsman import SPNEGO_NEGOTIATE_LOG, kerberos_drops

    logger = logging.getLogger(SPNEGO_NEGOTIATE_LOG)
    message = "Failed to create context for SPNEGO protocol %s: %s"
    caplog.set_level(logging.INFO)
    other: list[list[str]] = []
    with kerberos_drops() as mine:
        logger.debug(message, "kerberos", "Minor (1): no ticket")
        logger.debug(message, "ntlm", "not this one")
        # another thread's handshake collects its own
        worker = threading.Thread(target=lambda: other.append(_collect(logger, message)))
        worker.start()
        worker.join()
    logger.debug(message, "kerberos", "after the block: not collected")
    assert mine == ["Minor (1): no ticket"] and other == [["Minor (1): elsewhere"]]
    assert not [r for r in caplog.records if r.name == SPNEGO_NEGOTIATE_LOG], "DEBUG records stay hidden"
    # an application that turns pyspnego's logging on on purpose still sees it
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="spnego")
    logger.debug("SPNEGO step input: %s", "x")
    assert [r.getMessage() for r in caplog.records] == ["SPNEGO step input: x"]


def _collect(logger: object, message: str) -> list[str]:
    import logging

    from kmsadmin.transports.wsman import kerberos_drops

    assert isinstance(logger, logging.Logger)
    with kerberos_drops() as bucket:
        logger.debug(message, "kerberos", "Minor (1): elsewhere")
    return bucket


def test_ntlm_refused_carries_status_ntlm_blocked_with_its_microsoft_source() -> None:
    """The host, the step, the code (an NTSTATUS, from the catalog data with its source) and the fix."""
    from kmsadmin import catalog
    from kmsadmin.transports.faults import NTLM_BLOCKED, NtlmRefused
    from kmsadmin.transports.wsman import AuthRefused

    info = catalog.hresult_info(NTLM_BLOCKED)
    assert (info.code, info.symbol, info.known) == ("0xC0000418", "STATUS_NTLM_BLOCKED", True)
    assert catalog.hresult_info(-1073740776) == info, "signed, as PowerShell prints it"
    assert "[MS-ERREF]" in info.source and "2.3.1 NTSTATUS Values" in info.source
    assert "microsoft/WindowsProtocolTestSuites:ProtoSDK/Common/NtStatus.cs@56909675" in info.source
    assert "[MS-APDS]" in info.source and info.unconfirmed, "the fix is kmsadmin's, not Microsoft's"

    ntlm = build_options(
        "srv01",
        explicit={"auth": "ntlm"},
        env={"KMSADMIN_USER": "CORP\\ops", "KMSADMIN_PASSWORD": "pw-Secret-1"},
    )
    refused = translate(AuthRefused("refused", mechanism="ntlm", first_leg=True), ntlm, "facts", 1)
    assert isinstance(refused, NtlmRefused)
    assert (refused.host, refused.step, refused.hresult, refused.meaning) == (
        "srv01",
        "facts",
        "0xC0000418",
        "STATUS_NTLM_BLOCKED",
    )
    text = str(refused)
    assert text.startswith("srv01: facts: ") and "refuses NTLM" in text
    assert "HRESULT 0xC0000418 (STATUS_NTLM_BLOCKED)" in text and "fix: sign in with Kerberos" in text
    data = refused.to_dict()
    assert data["hresult"] == "0xC0000418" and data["meaning"] == "STATUS_NTLM_BLOCKED"
    assert data["remediation"] and "Kerberos" in data["remediation"]
    assert "pw-Secret-1" not in text + json.dumps(data)
    # a refusal after NTLM's first message is a refused password, not a block: no STATUS_NTLM_BLOCKED
    later = translate(AuthRefused("refused", mechanism="ntlm", first_leg=False), ntlm, "facts", 1)
    assert not isinstance(later, NtlmRefused) and later.hresult != NTLM_BLOCKED


def test_a_timeout_names_every_way_to_allow_more_time() -> None:
    """The deadline that ran out (or no budget at all) points at --deadline, the host's
    kmsadmin_deadline var and KMSADMIN_DEADLINE; a read timeout that fired first points at that."""
    spent = Deadline(0.5)
    time.sleep(0.6)
    for error in (host_timeout(OPTIONS, "facts", 30.0), host_timeout(OPTIONS, "facts", 0.5, spent)):
        assert error.host == "srv01" and error.step == "facts"
        assert error.remediation is not None
        assert error.remediation.endswith(
            "or allow more time with --deadline, the host's kmsadmin_deadline var or KMSADMIN_DEADLINE"
        ), error.remediation
    early = host_timeout(OPTIONS, "facts", 30.0, Deadline(60.0))
    assert early.remediation is not None and "KMSADMIN_READ_TIMEOUT" in early.remediation
    assert "kmsadmin_deadline" not in early.remediation
