"""WinRM transports: the only kmsadmin code that talks to pypsrp and pywinrm.

One interface (:class:`Session`, opened with :func:`open_session`) and three implementations:

* ``psrp`` (default): PSRP runspace pool (psrpcore over a lean WS-Man client; pypsrp for CredSSP,
  certificate auth and proxies); scripts run as pipelines;
* ``winrs``: pypsrp WinRS shell, script over stdin to a fixed ``powershell -EncodedCommand`` bootstrap;
* ``pywinrm``: the same WinRS bootstrap over ``winrm.protocol.Protocol`` (Ansible ``winrm`` hosts).

Usage::

    options = build_options("srv01", explicit={"user": "CORP\\\\admin"}, hostvars=inventory_vars)
    with open_session(options) as session:
        result = session.run(rendered, deadline=60)
"""

from __future__ import annotations

from kmsadmin.transports.base import (
    BOOTSTRAP_SCRIPT,
    Deadline,
    Session,
    SessionBase,
    Transport,
    clean_stderr,
)
from kmsadmin.transports.faults import CertificateRejected, is_retryable, translate
from kmsadmin.transports.options import (
    AUTHS,
    ENV_VARS,
    TRANSPORTS,
    AuthName,
    ConnectionOptions,
    EncryptionMode,
    TransportName,
    build_options,
)


def open_session(options: ConnectionOptions) -> Session:
    """A session to ``options.host`` using ``options.transport``; connects on the first run.

    With ``options.auth_fallbacks`` (an ``ansible_winrm_transport`` list), each auth method is tried in
    order until the host accepts one, as Ansible does.
    """
    if options.auth_fallbacks:
        from kmsadmin.transports.fallback import AuthFallbackSession

        return AuthFallbackSession(options, _open_one)
    return _open_one(options)


def _open_one(options: ConnectionOptions) -> Session:
    if options.transport == "psrp":
        if options.auth in ("certificate", "credssp") or options.proxy is not None:
            from kmsadmin.transports.pypsrp_client import PypsrpSession

            return PypsrpSession(options)
        from kmsadmin.transports.psrp import PsrpSession

        return PsrpSession(options)
    if options.transport == "winrs":
        from kmsadmin.transports.winrs import WinRSSession

        return WinRSSession(options)
    from kmsadmin.transports.pywinrm import PywinrmSession

    return PywinrmSession(options)


class WinRMTransport:
    """The real :class:`Transport`: picks the implementation named by ``options.transport``."""

    def open_session(self, options: ConnectionOptions) -> Session:
        """See :func:`open_session`."""
        return open_session(options)


__all__ = [
    "AUTHS",
    "BOOTSTRAP_SCRIPT",
    "ENV_VARS",
    "TRANSPORTS",
    "AuthName",
    "CertificateRejected",
    "ConnectionOptions",
    "Deadline",
    "EncryptionMode",
    "Session",
    "SessionBase",
    "Transport",
    "TransportName",
    "WinRMTransport",
    "build_options",
    "clean_stderr",
    "is_retryable",
    "open_session",
    "translate",
]
