"""WinRS over pywinrm, for inventories that use Ansible's ``winrm`` connection.

``winrm.Session.run_ps`` is not used: it opens a shell, re-authenticates (and over HTTPS makes a
new TLS handshake) for every command, puts the script on the command line (about 3,000 characters
at most) and fixes the code page at 437. Instead ``winrm.protocol.Protocol`` is driven directly:
one shell for the session, the same stdin bootstrap as the pypsrp WinRS transport, one Receive per
poll, and ``close_shell(close_session=False)`` so the keep-alive connection outlives each shell.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import requests
from winrm.exceptions import WinRMOperationTimeoutError, WinRMTransportError
from winrm.protocol import Protocol

from kmsadmin.transports.base import (
    BOOTSTRAP_ARGUMENTS,
    BOOTSTRAP_EXECUTABLE,
    BUSY_STATUSES,
    RECEIVE_RESET_RETRIES,
    UTF8_CODEPAGE,
    Deadline,
    Output,
    SessionBase,
    chunks,
    clean_stderr,
    log,
    retry_pause,
    stdin_payload,
    time_left,
)
from kmsadmin.transports.httpcaps import Connections, bound_answers
from kmsadmin.transports.options import ConnectionOptions
from kmsadmin.transports.wsman import NO_ENCRYPTION_CONTEXT, ProtocolViolation
from kmsadmin.values import RenderedScript

_SEND_OVERHEAD = 2048

PywinrmAuth = Literal["basic", "certificate", "ntlm", "kerberos", "credssp"]


def protocol_kwargs(options: ConnectionOptions) -> dict[str, Any]:
    """``winrm.protocol.Protocol`` keyword arguments for ``options``."""
    auth: PywinrmAuth = "ntlm" if options.auth == "negotiate" else options.auth
    encryption = options.message_encryption
    if auth == "basic" and not options.https:
        encryption = "never"  # only reachable with allow_unencrypted_basic
    proxy: str | None
    if options.proxy:
        proxy = options.proxy
    elif options.no_proxy:
        proxy = None  # pywinrm: None = no proxy at all, whatever HTTP(S)_PROXY says
    else:
        proxy = "legacy_requests"  # pywinrm: take the proxy from the environment
    read = math.ceil(options.read_timeout)
    return {
        "endpoint": options.endpoint,
        "transport": auth,
        "username": options.user,
        "password": options.password.value if options.password is not None else None,
        "server_cert_validation": "validate" if options.cert_validation else "ignore",
        # None: the system/certifi store, not REQUESTS_CA_BUNDLE ("legacy_requests").
        "ca_trust_path": options.ca_bundle,
        "cert_pem": options.cert_pem,
        "cert_key_pem": options.cert_key_pem,
        "read_timeout_sec": read,
        "operation_timeout_sec": min(options.operation_timeout, read - 1),
        "message_encryption": encryption,
        "proxy": proxy,
        "service": options.kerberos_service,
        "kerberos_hostname_override": options.spn_host if auth == "kerberos" else None,
        "kerberos_delegation": options.kerberos_delegation,
    }


class BoundedProtocol(Protocol):
    """A pywinrm ``Protocol`` whose every request ends before ``budget`` does, and which retries 503."""

    def __init__(self, options: ConnectionOptions) -> None:
        kwargs = protocol_kwargs(options)
        super().__init__(**kwargs)
        self._limits = (kwargs["read_timeout_sec"], kwargs["operation_timeout_sec"])
        self._options = options
        transport: Any = self.transport
        build = transport.build_session
        connections = self._connections = Connections()

        def build_bounded() -> Any:
            session = build()
            bound_answers(transport.session, connections)
            return session

        transport.build_session = build_bounded
        self.budget: Deadline | None = None
        #: WS-Man requests sent, for tests and logs
        self.requests = 0

    def _fit_to_budget(self) -> None:
        read, operation = self._limits
        if self.budget is None:
            self.transport.read_timeout_sec, self.operation_timeout_sec = read, operation
            return
        left = time_left(self.budget)
        # pywinrm uses one number for the connect and the read timeout; requests accepts floats.
        transport: Any = self.transport
        transport.read_timeout_sec = min(float(read), left)
        self.operation_timeout_sec = max(1, min(operation, int(left) - 1))

    def send_message(self, message: str) -> bytes:
        """Send one request within the budget, retrying busy answers with backoff."""
        seconds = self._options.deadline if self.budget is None else time_left(self.budget)
        # the socket reads inside http.client have no deadline of their own: cut them when it passes
        with self._connections.cut_after(seconds):
            return self._send_message(message)

    def _send_message(self, message: str) -> bytes:
        busy = 0
        while True:
            self._fit_to_budget()
            self.requests += 1
            try:
                return super().send_message(message)
            except AttributeError as err:
                auth = getattr(getattr(self.transport, "session", None), "auth", None)
                if self.transport.encryption is None or getattr(auth, "session_security", True) is not None:
                    raise
                # requests_ntlm keeps the keys of a completed handshake; a host that answered
                # without authenticating left none to encrypt with
                raise ProtocolViolation(NO_ENCRYPTION_CONTEXT) from err
            except WinRMTransportError as err:
                pause = retry_pause(self._options, busy, self.budget) if err.code in BUSY_STATUSES else None
                if pause is None:
                    raise
                busy += 1
                if self.transport.encryption is None:
                    # A busy answer to the message-encryption handshake leaves a session without
                    # encryption; rebuild it so the retry negotiates again.
                    self.transport.close_session()
                log.debug("busy answer (HTTP %s), retry %d in %.2fs", err.code, busy, pause)
                time.sleep(pause)


class PywinrmSession(SessionBase):
    """A pywinrm WinRS session: one shell, one ``powershell.exe`` per script."""

    transport_name = "pywinrm"

    def __init__(self, options: ConnectionOptions) -> None:
        super().__init__(options)
        self._protocol: BoundedProtocol | None = None
        self._shell_id: str | None = None
        self._command_id: str | None = None

    @property
    def protocol(self) -> BoundedProtocol | None:
        """The pywinrm protocol object, if connected (tests read its request counter)."""
        return self._protocol

    def _ensure_shell(self, budget: Deadline) -> tuple[BoundedProtocol, str]:
        if self._protocol is None:
            self._protocol = BoundedProtocol(self._options)
        self._protocol.budget = budget
        if self._shell_id is None:
            self._shell_id = self._protocol.open_shell(codepage=UTF8_CODEPAGE)
            self.opened_count += 1
        return self._protocol, self._shell_id

    def _execute(self, script: RenderedScript, budget: Deadline) -> Output:
        protocol, shell_id = self._ensure_shell(budget)
        command_id = protocol.run_command(shell_id, BOOTSTRAP_EXECUTABLE, BOOTSTRAP_ARGUMENTS)
        self._command_id = command_id
        size = max(1024, (protocol.max_env_sz - _SEND_OVERHEAD) * 3 // 4)
        pieces = chunks(stdin_payload(script), size)
        for index, piece in enumerate(pieces):
            # Bytes, not str: pywinrm would encode a str as cp437.
            protocol.send_command_input(shell_id, command_id, piece, end=index == len(pieces) - 1)
        stdout: list[bytes] = []
        stderr: list[bytes] = []
        done = False
        rc = -1
        resets = 0
        while not done:
            try:
                out, err, rc, done = protocol.get_command_output_raw(shell_id, command_id)
            except WinRMOperationTimeoutError:
                # No output within OperationTimeout; the budget check in send_message ends this loop.
                continue
            except requests.exceptions.ConnectionError as exc:
                if resets >= RECEIVE_RESET_RETRIES or isinstance(
                    exc, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError
                ):
                    raise
                # A Receive only asks for output, so asking again is safe; a new requests session
                # authenticates again and sets up a new message-encryption context.
                resets += 1
                protocol.transport.close_session()
                log.debug("connection lost during Receive, asking again (%d)", resets)
                continue
            stdout.append(out)
            stderr.append(err)
        protocol.cleanup_command(shell_id, command_id)
        self._command_id = None
        text = b"".join(stdout).decode("utf-8", errors="replace").replace("\r\n", "\n")
        return Output(stdout=text, errors=clean_stderr(b"".join(stderr)), rc=rc)

    def _cancel(self, budget: Deadline) -> None:
        if self._protocol is None:
            return
        self._protocol.budget = budget
        command_id, self._command_id = self._command_id, None
        if command_id is not None and self._shell_id is not None:
            try:
                self._protocol.cleanup_command(self._shell_id, command_id)
            except Exception as exc:
                log.debug("host=%s terminating the command failed: %s", self._options.name, exc)
        self._close(budget)

    def _close(self, budget: Deadline) -> None:
        if self._protocol is not None:
            self._protocol.budget = budget
        shell_id, self._shell_id = self._shell_id, None
        if shell_id is not None and self._protocol is not None:
            self._protocol.close_shell(shell_id, close_session=False)

    def _drop(self) -> None:
        protocol, self._protocol = self._protocol, None
        self._shell_id = None
        self._command_id = None
        if protocol is not None:
            try:
                protocol.transport.close_session()
            except Exception as exc:
                log.debug("host=%s closing the connection failed: %s", self._options.name, exc)
