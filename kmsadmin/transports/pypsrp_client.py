"""PSRP and WinRS over pypsrp's client: what :class:`~kmsadmin.transports.psrp.PsrpSession` does not
speak (CredSSP, certificate authentication, HTTP proxies), and the WinRS transport's WS-Man layer.

:class:`BoundedWSMan` fits every request into the step's deadline, answers the host's "no output yet"
OperationTimeout by asking again until that deadline, and retries busy answers (HTTP 503) itself,
because urllib3 does not retry POSTs.
"""

from __future__ import annotations

import base64
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

import requests
from pypsrp.complex_objects import PSInvocationState
from pypsrp.exceptions import WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import OptionSet, SelectorSet, WSMan, WSManAction

from kmsadmin.transports.base import (
    BUSY_STATUSES,
    OPERATION_TIMEOUT_FAULT,
    PSRP_BOOTSTRAP,
    PSRP_BOOTSTRAP_PARAMETER,
    RECEIVE_RESET_RETRIES,
    Deadline,
    Output,
    SessionBase,
    error_text,
    log,
    request_limits,
    retry_pause,
    split_steps,
    time_left,
)
from kmsadmin.transports.httpcaps import Connections, bound_answers
from kmsadmin.transports.options import ConnectionOptions
from kmsadmin.transports.wsman import NO_ENCRYPTION_CONTEXT, ProtocolViolation, spnego_credentials
from kmsadmin.values import RenderedScript


def wsman_kwargs(options: ConnectionOptions) -> dict[str, Any]:
    """pypsrp ``WSMan`` keyword arguments for ``options``."""
    encryption = options.message_encryption
    if options.auth == "basic" and not options.https:
        # Only reachable with allow_unencrypted_basic; pypsrp refuses Basic with encryption on.
        encryption = "never"
    kwargs: dict[str, Any] = {
        "port": options.port,
        "username": options.user,
        "password": options.password.value if options.password is not None else None,
        "ssl": options.https,
        "path": options.path,
        "auth": options.auth,
        "cert_validation": (options.ca_bundle or True) if options.cert_validation else False,
        "connection_timeout": options.connection_timeout,
        "read_timeout": options.read_timeout,
        "operation_timeout": options.operation_timeout,
        "encryption": encryption,
        "proxy": options.proxy,
        "no_proxy": options.no_proxy and options.proxy is None,
        # Busy answers are retried in BoundedWSMan.invoke (deadline-aware); urllib3 keeps only
        # connect retries, which happen before any byte of the request was sent.
        "reconnection_retries": options.reconnection_retries,
        "reconnection_backoff": options.reconnection_backoff,
    }
    if options.auth in ("negotiate", "kerberos"):
        if options.kerberos_ccache or options.kerberos_keytab:
            # pypsrp hands username and password to pyspnego, which also takes a list of credentials:
            # the named cache or keytab, and the NT hash for NTLM under Negotiate.
            kwargs["username"], kwargs["password"] = spnego_credentials(options, options.auth), None
        kwargs["negotiate_hostname_override"] = options.spn_host
        kwargs["negotiate_service"] = options.kerberos_service
        kwargs["negotiate_delegate"] = options.kerberos_delegation
    if options.auth == "certificate":
        kwargs["certificate_pem"] = options.cert_pem
        kwargs["certificate_key_pem"] = options.cert_key_pem
    if options.auth == "credssp":
        # Version 5 and later carry the CVE-2018-0886 fix; never fall back to older servers.
        kwargs["credssp_minimum_version"] = 5
    return kwargs


def http_status(err: BaseException) -> int | None:
    """The HTTP status behind a pypsrp error.

    pypsrp parses any XML-looking error body as a WS-Man fault, so an HTML "503 Service
    Unavailable" page arrives as a ``WSManFaultError`` without a code; the status survives only
    on the ``WinRMTransportError`` it was raised from.
    """
    for candidate in (err, err.__context__):
        if isinstance(candidate, WinRMTransportError):
            return int(candidate.code)
    return None


class BoundedWSMan(WSMan):
    """A ``WSMan`` whose every request ends before ``budget`` does.

    pypsrp reads ``transport.connection_timeout``/``read_timeout`` and ``operation_timeout`` on
    each request, so setting them just before each one caps that request by the time left.
    """

    def __init__(self, options: ConnectionOptions) -> None:
        super().__init__(options.host, **wsman_kwargs(options))
        self._connections = Connections()
        self._trust_env_once()
        self._options = options
        #: the deadline the current requests must meet; None: only the configured timeouts
        self.budget: Deadline | None = None
        #: WS-Man requests sent (Create, Command, Send, Receive, Signal, Delete), for tests and logs
        self.requests = 0

    def _trust_env_once(self) -> None:
        """Resolve proxy and CA settings from the environment once, when the session is built.

        pypsrp merges the environment into the session when it builds it; left with
        ``trust_env`` on, requests scans every environment variable again on each request to decide
        about proxies (~10% of the client's CPU per host in a fleet run).
        """
        transport: Any = self.transport
        build = transport._build_session

        def build_once() -> requests.Session:
            session: requests.Session = build()
            session.trust_env = False
            bound_answers(session, self._connections)
            return session

        transport._build_session = build_once

    def _fit_to_budget(self) -> None:
        connect, read, operation = request_limits(self._options, self.budget)
        transport: Any = self.transport
        # urllib3 retries a failed connect reconnection_retries times with this same timeout.
        transport.connection_timeout, transport.read_timeout = connect, read
        self.operation_timeout = operation

    def invoke(
        self,
        action: str,
        resource_uri: str,
        resource: ET.Element | None,
        option_set: OptionSet | None = None,
        selector_set: SelectorSet | None = None,
        timeout: int | None = None,
        *,
        retries_on_read_timeout: int = 0,
    ) -> ET.Element:
        """Send one request; see the class docstring for what differs from pypsrp."""
        seconds = self._options.deadline if self.budget is None else time_left(self.budget)
        # the socket reads inside http.client have no deadline of their own: cut them when it passes
        with self._connections.cut_after(seconds):
            return self._invoke(action, resource_uri, resource, option_set, selector_set)

    def _invoke(
        self,
        action: str,
        resource_uri: str,
        resource: ET.Element | None,
        option_set: OptionSet | None,
        selector_set: SelectorSet | None,
    ) -> ET.Element:
        busy = 0
        resets = 0
        while True:
            self._fit_to_budget()
            self.requests += 1
            transport: Any = self.transport
            try:
                # The per-call timeout and pypsrp's read-timeout retries (with sleeps of 2 s, 6 s, 14 s...)
                # are dropped: the step's deadline decides how long to wait, not a fixed retry count.
                return super().invoke(action, resource_uri, resource, option_set, selector_set, None)
            except KeyError as err:
                if transport.encryption is not None or not transport.wrap_required:
                    raise
                # pypsrp looks up the security context of the handshake it expected; a host that
                # answered without authenticating left none to encrypt with
                raise ProtocolViolation(NO_ENCRYPTION_CONTEXT) from err
            except requests.exceptions.ConnectionError as err:
                if (
                    action != WSManAction.RECEIVE
                    or resets >= RECEIVE_RESET_RETRIES
                    or isinstance(err, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError)
                ):
                    raise
                # A Receive only asks for output, so asking again on a new connection is safe (as
                # pypsrp does after read timeouts); the new connection authenticates again and needs a
                # new message-encryption context.
                resets += 1
                transport.encryption = None
                log.debug("connection lost during Receive, asking again (%d)", resets)
            except (WSManFaultError, WinRMTransportError) as err:
                if (
                    isinstance(err, WSManFaultError)
                    and action == WSManAction.RECEIVE
                    and err.code == OPERATION_TIMEOUT_FAULT
                ):
                    # No output within OperationTimeout: the command still runs; ask again.
                    continue
                status = http_status(err)
                pause = retry_pause(self._options, busy, self.budget) if status in BUSY_STATUSES else None
                if pause is None:
                    raise
                busy += 1
                log.debug("busy answer (HTTP %s), retry %d in %.2fs", status, busy, pause)
                time.sleep(pause)


class PypsrpSession(SessionBase):
    """PSRP over pypsrp's client, for what :class:`PsrpSession` does not speak: CredSSP,
    certificate authentication and HTTP proxies."""

    transport_name = "psrp"

    def __init__(self, options: ConnectionOptions) -> None:
        super().__init__(options)
        self._wsman: BoundedWSMan | None = None
        self._pool: RunspacePool | None = None
        self._pipeline: PowerShell | None = None

    @property
    def wsman(self) -> BoundedWSMan | None:
        """The open WS-Man connection, if any (tests read its request counter)."""
        return self._wsman

    def _ensure_pool(self, budget: Deadline) -> RunspacePool:
        if self._wsman is None:
            self._wsman = BoundedWSMan(self._options)
        self._wsman.budget = budget
        if self._pool is None:
            # Kept before open() so that a failed open is still deleted on the host by _cancel.
            self._pool = RunspacePool(self._wsman, configuration_name=self._options.configuration_name)
            self._pool.open()
            self.opened_count += 1
        return self._pool

    def _execute(self, script: RenderedScript, budget: Deadline) -> Output:
        return self._execute_many((script,), budget)[0]

    def _execute_many(self, scripts: Sequence[RenderedScript], budget: Deadline) -> list[Output]:
        pool = self._ensure_pool(budget)
        ps = PowerShell(pool)
        encoded = [base64.b64encode(s.text.encode("utf-8")).decode("ascii") for s in scripts]
        ps.add_script(PSRP_BOOTSTRAP).add_parameter(PSRP_BOOTSTRAP_PARAMETER, encoded)
        self._pipeline = ps
        ps.begin_invoke()
        while ps.state == PSInvocationState.RUNNING:
            # One Receive per call; OperationTimeouts are re-asked inside BoundedWSMan and the
            # budget ends the loop by raising DeadlineExpired.
            ps.poll_invoke()
        # Release the pipeline on the host (Signal terminate), or it counts against
        # MaxConcurrentOperationsPerUser for as long as the pool lives.
        ps.close()
        self._pipeline = None
        errors = tuple(error_text(record) for record in ps.streams.error)
        return split_steps(["" if obj is None else str(obj) for obj in ps.output], errors)

    def _cancel(self, budget: Deadline) -> None:
        if self._wsman is None:
            return
        self._wsman.budget = budget
        ps, self._pipeline = self._pipeline, None
        if ps is not None and ps.state == PSInvocationState.RUNNING:
            try:
                ps.stop()
            except Exception as exc:
                log.debug("host=%s stopping the pipeline failed: %s", self._options.name, exc)
        self._close(budget)

    def _close(self, budget: Deadline) -> None:
        if self._wsman is not None:
            self._wsman.budget = budget
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _drop(self) -> None:
        wsman, self._wsman = self._wsman, None
        self._pool = None
        self._pipeline = None
        if wsman is not None:
            try:
                wsman.close()
            except Exception as exc:
                log.debug("host=%s closing the connection failed: %s", self._options.name, exc)
