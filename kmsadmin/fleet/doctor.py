"""``kmsadmin doctor``: why can't kmsadmin manage this host? One check at a time, each with a fix."""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from kmsadmin.errors import AccessDenied, AuthenticationFailed, ConnectionFailed, HostError, KmsAdminError
from kmsadmin.fleet.runner import gather_facts
from kmsadmin.transports import ConnectionOptions, open_session
from kmsadmin.transports.faults import ProxyFailed

#: Kerberos' default maximum clock skew is 5 minutes; KMS also refuses requests whose timestamp is too far
#: from the host's clock (0xC004F06C SL_E_VL_INVALID_TIMESTAMP, [ERR]).
MAX_SKEW_SECONDS = 300


@dataclass(frozen=True, slots=True)
class Check:
    """One diagnostic result."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "check": self.name,
            "ok": self.ok,
            "warning": self.warning,
            "detail": self.detail,
            "fix": self.fix,
        }


def _tcp(options: ConnectionOptions) -> Check:
    started = time.monotonic()
    try:
        with socket.create_connection(
            (options.host, options.port), timeout=min(options.connection_timeout, 10)
        ):
            pass
    except OSError as exc:
        return Check(
            "tcp",
            False,
            f"{options.host}:{options.port}: {exc.strerror or exc}",
            f"check that WinRM listens on {options.port} (winrm quickconfig"
            f"{' -transport:https' if options.https else ''}) and that the firewall allows it",
        )
    return Check(
        "tcp", True, f"{options.host}:{options.port} answers ({(time.monotonic() - started) * 1000:.0f} ms)"
    )


def sign_in_checks(options: ConnectionOptions, session: object) -> list[Check]:
    """How the session signed in: the negotiated mechanism, and how the messages were protected."""
    mechanism = str(getattr(session, "mechanism", "") or options.auth)
    encrypted = bool(getattr(session, "encrypted", options.https))
    bound = bool(getattr(session, "channel_binding", False))
    who = options.user or "(current ticket)"
    checks = [
        Check(
            "auth",
            True,
            f"{options.auth} as {who} ({options.transport}): negotiated {_MECHANISMS.get(mechanism, mechanism)}",
        )
    ]
    if options.auth == "negotiate" and mechanism == "ntlm":
        checks.append(
            Check(
                "kerberos",
                False,
                "Negotiate fell back to NTLM (Microsoft is phasing NTLM out; domains that restrict it refuse it)",
                "install kmsadmin[kerberos], sign in as user@REALM (or kinit) and connect by the host's DNS "
                f"name so its SPN {options.spn} resolves",
                warning=True,
            )
        )
    if options.https:
        detail = "TLS" + (" with channel binding (tls-server-end-point)" if bound else "")
    elif encrypted:
        detail = f"{_MECHANISMS.get(mechanism, mechanism)} message encryption over HTTP"
    else:
        detail = "none: plain HTTP"
    checks.append(
        Check(
            "encryption",
            options.https or encrypted,
            detail,
            "" if options.https or encrypted else "use HTTPS or NTLM/Kerberos with message encryption",
        )
    )
    return checks


#: how doctor names what was negotiated
_MECHANISMS = {
    "kerberos": "Kerberos",
    "ntlm": "NTLM",
    "basic": "Basic",
    "certificate": "certificate",
    "credssp": "CredSSP",
}


def diagnose(options: ConnectionOptions) -> list[Check]:
    """Run the checks in order; later checks need the earlier ones to pass."""
    checks = [_tcp(options)]
    if not checks[0].ok:
        return checks
    session = open_session(options)
    try:
        sent_at = datetime.now(UTC)
        facts = gather_facts(session, options.name, time.monotonic() + options.deadline)
        received_at = datetime.now(UTC)
    except AuthenticationFailed as exc:
        kind = f" [{exc.meaning}]" if exc.meaning else ""
        checks.append(
            Check(
                "auth",
                False,
                f"{options.auth} as {options.user or '(current user)'}: {exc.message}{kind}",
                exc.remediation or "",
            )
        )
        return checks
    except ProxyFailed as exc:
        checks.append(Check("proxy", False, exc.message, exc.remediation or ""))
        return checks
    except AccessDenied as exc:
        checks.append(
            Check("auth", True, f"{options.auth} as {options.user or '(current user)'}: credentials accepted")
        )
        checks.append(Check("uac-remote-restrictions", False, exc.message, exc.remediation or ""))
        return checks
    except (ConnectionFailed, HostError) as exc:
        checks.append(Check("winrm", False, exc.message, exc.remediation or ""))
        return checks
    except KmsAdminError as exc:
        checks.append(Check("winrm", False, str(exc)))
        return checks
    except Exception as exc:  # an unmapped library error: a failed check, not a traceback
        checks.append(
            Check(
                "winrm",
                False,
                f"unexpected {type(exc).__name__}: {str(exc)[:300]}",
                "run with --debug and report it; the other checks could not run",
            )
        )
        return checks
    finally:
        with contextlib.suppress(Exception):  # closing is best effort after a diagnosis
            session.close()
    checks.extend(sign_in_checks(options, session))
    sec = facts.security
    checks.append(
        Check(
            "admin",
            sec.is_admin,
            "elevated administrator" if sec.is_admin else "not an elevated administrator",
            "" if sec.is_admin else "use an account in the host's local Administrators group",
        )
    )
    filtered = not sec.is_builtin_admin and not sec.domain_joined and sec.token_filter_policy != 1
    checks.append(
        Check(
            "uac-remote-restrictions",
            not filtered or sec.is_admin,
            f"built-in Administrator: {sec.is_builtin_admin}, domain joined: {sec.domain_joined}, "
            f"LocalAccountTokenFilterPolicy: {sec.token_filter_policy}",
            ""
            if not filtered
            else "local accounts other than the built-in Administrator get a filtered token over the "
            "network (KB 951016); use the built-in Administrator or a domain account (kmsadmin never changes the policy)",
            warning=filtered and sec.is_admin,
        )
    )
    if facts.time_utc:
        host_time = datetime.fromisoformat(facts.time_utc.replace("Z", "+00:00"))
        midpoint = sent_at + (received_at - sent_at) / 2
        skew = (host_time - midpoint).total_seconds()
        ok = abs(skew) <= MAX_SKEW_SECONDS
        checks.append(
            Check(
                "clock-skew",
                ok,
                f"host clock is {skew:+.0f} s from this controller",
                ""
                if ok
                else "sync the host's time (w32tm /resync); KMS rejects skewed requests with 0xC004F06C",
                warning=not ok,
            )
        )
    return checks
