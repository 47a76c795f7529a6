"""PSRP: one runspace pool per host, one pipeline per batch of scripts.

The pool is opened on the first run and kept: on Windows each pool is a ``wsmprovhost.exe`` process,
so reusing it saves seconds per step, and one keep-alive HTTP connection means one NTLM/Kerberos
handshake per host. Scripts travel inside PSRP messages, so there is no command-line length limit,
and output and error records arrive as structured streams (no CLIXML on stderr, no code pages).

:class:`PsrpSession` (the default) speaks PSRP with psrpcore over
:class:`~kmsadmin.transports.wsman.WsmanClient`.
A host costs one Create and one Receive to open the pool, then one Command and one Receive per
batch; the Signal that releases a finished pipeline is sent before the next Command, and not at all
when the shell is deleted next (Delete ends every pipeline of the shell).
:class:`~kmsadmin.transports.pypsrp_client.PypsrpSession` runs the same scripts through pypsrp's
client for CredSSP, certificate authentication and proxies.
"""

from __future__ import annotations

import base64
import functools
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

from psrpcore import (
    ClientPowerShell,
    ClientRunspacePool,
    ErrorRecordEvent,
    PipelineOutputEvent,
    PipelineStateEvent,
    PSRPEvent,
    PSRPPayload,
    RunspacePoolStateEvent,
    StreamType,
)
from psrpcore.types import (
    InitRunspacePool,
    PSObject,
    PSRPMessageType,
    RunspacePoolState,
    SessionCapability,
)
from psrpcore.types import PSInvocationState as PSInvocationStateCore

from kmsadmin.transports.base import (
    PSRP_BOOTSTRAP,
    PSRP_BOOTSTRAP_PARAMETER,
    Deadline,
    Output,
    SessionBase,
    error_text,
    log,
    split_steps,
)
from kmsadmin.transports.options import ConnectionOptions
from kmsadmin.transports.psrpcache import MessageCachePool
from kmsadmin.transports.wsman import (
    COMMAND,
    CREATE,
    DELETE,
    MAX_ENVELOPE_SIZE,
    RECEIVE,
    SEND,
    SIGNAL,
    SIGNAL_TERMINATE,
    ProtocolViolation,
    WsmanClient,
    WsmanFault,
    option_set,
    shell_selector,
    streams_of,
)
from kmsadmin.transports.wsman import NS as WSMAN_NS
from kmsadmin.values import RenderedScript


# --- PSRP with psrpcore over the lean WS-Man client ----------------------------------------------------
class _Pool(MessageCachePool, ClientRunspacePool):
    """The client pool: pool-open messages and secret-free pipelines are serialized once per process,
    the hosts' pool-open answers deserialized once per content (:mod:`kmsadmin.transports.psrpcache`)."""

    deserialize_once = frozenset(
        {
            PSRPMessageType.SessionCapability,
            PSRPMessageType.ApplicationPrivateData,
            PSRPMessageType.RunspacePoolState,
            PSRPMessageType.PipelineState,
        }
    )
    deserialize_small = frozenset({PSRPMessageType.PipelineOutput})
    #: content key of the next CreatePipeline message, set just before ``start()`` when no script of
    #: the pipeline carries a secret
    pipeline_key: tuple[str, ...] | None = None

    def send_key(
        self, message: PSObject, message_type: PSRPMessageType | None, pipeline_id: uuid.UUID | None
    ) -> tuple[str, ...] | None:
        if isinstance(message, SessionCapability | InitRunspacePool) and pipeline_id is None:
            return (type(message).__name__,)
        if message_type == PSRPMessageType.CreatePipeline and self.pipeline_key is not None:
            key, self.pipeline_key = self.pipeline_key, None
            return key
        return None


#: Bytes of PSRP fragments per envelope: base64 grows them by 4/3, and the envelope around needs ~4 kB.
_FRAGMENT_BYTES = (MAX_ENVELOPE_SIZE - 4096) * 3 // 4
_FINISHED = (PSInvocationStateCore.Completed, PSInvocationStateCore.Failed, PSInvocationStateCore.Stopped)
_KEEPALIVE = option_set({"WSMAN_CMDSHELL_OPTION_KEEPALIVE": "True"})
#: what Windows' own PSRP client and pypsrp send with a pipeline's Command
_COMMAND_OPTIONS = option_set({"WINRS_SKIP_CMD_SHELL": "False"})
_STOP = "powershell/signal/crtl_c"
_RSP = "{http://schemas.microsoft.com/wbem/wsman/1/windows/shell}"
_COMMAND_ID = f"{_RSP}CommandResponse/{_RSP}CommandId"
_GUID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}")


def _encoded(script: RenderedScript) -> str:
    """The bootstrap's parameter for one script: base64 of its UTF-8 text.

    Scripts without secrets are kept (rendering keeps them too, so the same text comes back for every
    host); the encoded form then also serves as the pipeline's cache key.
    """
    if script.text != script.display:  # carries a secret: never kept
        return _base64(script.text)
    return _kept_base64(script.text)


def _base64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


_kept_base64 = functools.lru_cache(maxsize=256)(_base64)


class PsrpSession(SessionBase):
    """A PSRP session: scripts run as pipelines on one runspace pool."""

    transport_name = "psrp"

    def __init__(self, options: ConnectionOptions) -> None:
        super().__init__(options)
        self._resource = "http://schemas.microsoft.com/powershell/" + options.configuration_name
        self._client: WsmanClient | None = None
        self._pool: _Pool | None = None
        self._selector = ""
        #: command id of the pipeline in flight
        self._running: str | None = None
        #: command id of a finished pipeline whose Signal is still owed
        self._owed: str | None = None

    @property
    def wsman(self) -> WsmanClient | None:
        """The open WS-Man connection, if any (tests read its request counter)."""
        return self._client

    def _request(
        self, action: str, body: str, headers: str = "", *, receive: bool = False, answer: bool = True
    ) -> ET.Element:
        if self._client is None:
            raise WsmanFault(None, "the session is closed")
        return self._client.request(
            action, self._resource, body, headers=headers + self._selector, receive=receive, answer=answer
        )

    def _receive(self, command_id: str | None) -> list[PSRPEvent[Any, Any]]:
        pool = self._pool
        if pool is None:
            raise WsmanFault(None, "the runspace pool is closed")
        target = f' CommandId="{command_id}"' if command_id else ""
        body = f"<rsp:Receive><rsp:DesiredStream{target}>stdout</rsp:DesiredStream></rsp:Receive>"
        streams, _ = streams_of(self._request(RECEIVE, body, _KEEPALIVE, receive=True))
        events: list[PSRPEvent[Any, Any]] = []
        try:
            for data in streams:
                pool.receive_data(PSRPPayload(data, StreamType.default, None))
                while (event := pool.next_event()) is not None:
                    events.append(event)
        except Exception as exc:  # psrpcore raises what its decoders meet in garbage fragments
            raise ProtocolViolation(
                f"PSRP data that cannot be decoded ({type(exc).__name__}: {str(exc)[:200]})"
            ) from exc
        return events

    def _ensure_pool(self, budget: Deadline) -> _Pool:
        if self._client is None:
            self._client = WsmanClient(self._options)
        self._client.budget = budget
        if self._pool is not None:
            return self._pool
        pool = _Pool()
        pool.open()
        payload = pool.data_to_send(_FRAGMENT_BYTES)
        if payload is None:
            raise WsmanFault(None, "psrpcore produced no runspace pool open message")
        self._pool = pool
        shell_id = str(pool.runspace_pool_id).upper()
        body = (
            f'<rsp:Shell ShellId="{shell_id}"><rsp:InputStreams>stdin pr</rsp:InputStreams>'
            "<rsp:OutputStreams>stdout</rsp:OutputStreams>"
            '<creationXml xmlns="http://schemas.microsoft.com/powershell">'
            f"{base64.b64encode(payload.data).decode('ascii')}</creationXml></rsp:Shell>"
        )
        answer = self._request(CREATE, body, option_set({"protocolversion": "2.3"}, must_comply=True))
        shell_id = answer.findtext("rsp:Shell/rsp:ShellId", namespaces=WSMAN_NS) or shell_id
        self._selector = shell_selector(shell_id)
        self.opened_count += 1
        while pool.state != RunspacePoolState.Opened:
            for event in self._receive(None):
                if isinstance(event, RunspacePoolStateEvent) and event.state in (
                    RunspacePoolState.Broken,
                    RunspacePoolState.Closed,
                ):
                    reason = error_text(event.reason) if event.reason is not None else event.state.name
                    raise WsmanFault(None, f"the runspace pool did not open: {reason}")
        return pool

    def _execute(self, script: RenderedScript, budget: Deadline) -> Output:
        return self._execute_many((script,), budget)[0]

    def _execute_batch(self, scripts: Sequence[RenderedScript], budget: Deadline) -> list[Output]:
        pool = self._ensure_pool(budget)
        if self._owed is not None:
            owed, self._owed = self._owed, None
            self._signal(owed, SIGNAL_TERMINATE)
        ps = ClientPowerShell(pool)
        encoded = [_encoded(s) for s in scripts]
        ps.add_script(PSRP_BOOTSTRAP).add_parameter(PSRP_BOOTSTRAP_PARAMETER, encoded)
        if all(s.text == s.display for s in scripts):  # no secret in any of them
            pool.pipeline_key = ("CreatePipeline", *encoded)
        ps.start()
        command_id = str(ps.pipeline_id).upper()
        first = pool.data_to_send(_FRAGMENT_BYTES)
        if first is None:
            raise WsmanFault(None, "psrpcore produced no pipeline message")
        body = (
            f'<rsp:CommandLine CommandId="{command_id}"><rsp:Command></rsp:Command>'
            f"<rsp:Arguments>{base64.b64encode(first.data).decode('ascii')}</rsp:Arguments></rsp:CommandLine>"
        )
        self._running = command_id
        answer = self._request(COMMAND, body, _COMMAND_OPTIONS)
        # The host names the command in its answer (the pipeline id for PSRP); use what it says when it
        # is a GUID (it goes into later envelopes).
        named = (answer.findtext(_COMMAND_ID) or "").strip().upper()
        command_id = named if _GUID.fullmatch(named) else command_id
        self._running = command_id
        while (more := pool.data_to_send(_FRAGMENT_BYTES)) is not None:
            stream = "pr" if more.stream_type == StreamType.prompt_response else "stdin"
            self._request(
                SEND,
                f'<rsp:Send><rsp:Stream Name="{stream}" CommandId="{command_id}">'
                f"{base64.b64encode(more.data).decode('ascii')}</rsp:Stream></rsp:Send>",
                answer=False,
            )
        output: list[str] = []
        errors: list[str] = []
        while ps.state not in _FINISHED:
            for event in self._receive(command_id):
                if isinstance(event, PipelineOutputEvent):
                    output.append("" if event.data is None else str(event.data))
                elif isinstance(event, ErrorRecordEvent):
                    errors.append(error_text(event.record))
                elif isinstance(event, PipelineStateEvent) and event.reason is not None:
                    errors.append(error_text(event.reason))
        self._running = None
        self._owed = command_id
        return split_steps(output, tuple(errors))

    def _signal(self, command_id: str, code: str) -> None:
        self._request(
            SIGNAL,
            f'<rsp:Signal CommandId="{command_id}"><rsp:Code>{code}</rsp:Code></rsp:Signal>',
            answer=False,
        )

    def _cancel(self, budget: Deadline) -> None:
        if self._client is None:
            return
        self._client.budget = budget
        running, self._running = self._running, None
        if running is not None and self._selector:
            try:
                self._signal(running, _STOP)
            except Exception as exc:
                log.debug("host=%s stopping the pipeline failed: %s", self._options.name, exc)
        self._close(budget)

    def _close(self, budget: Deadline) -> None:
        if self._client is not None:
            self._client.budget = budget
        selector, self._selector = self._selector, ""
        self._pool = None
        self._owed = None
        if selector and self._client is not None:
            self._client.request(DELETE, self._resource, "", headers=selector, answer=False)

    def _note_security(self) -> None:
        client = self._client
        if client is not None and client.mechanism:
            self.mechanism = client.mechanism
            self.encrypted = client.encrypted or self._options.https
            self.channel_binding = client.channel_binding

    def _execute_many(self, scripts: Sequence[RenderedScript], budget: Deadline) -> list[Output]:
        try:
            return self._execute_batch(scripts, budget)
        finally:
            self._note_security()

    def _drop(self) -> None:
        self._note_security()
        client, self._client = self._client, None
        self._pool = None
        self._selector = ""
        self._running = self._owed = None
        if client is not None:
            client.close()
