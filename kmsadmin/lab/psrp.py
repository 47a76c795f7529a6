"""PSRP over WS-Man (``.../powershell/Microsoft.PowerShell``) through psrpcore's server-side state machines.

One :class:`PsrpShell` per RunspacePool. Incoming fragments (``creationXml``, ``Command`` arguments,
``Send`` stdin) feed a ``ServerRunspacePool``; everything it queues for the client is drained at once into
one queue per target (the pool, or a pipeline by its id) because ``Receive`` asks per target, while
psrpcore keeps a single send buffer. Pipelines run their script on the engine:

* ``add_script(text)`` runs ``text``;
* pypsrp ``execute_ps``'s ``Invoke-Expression -Command <script> | Out-String -Stream`` runs ``<script>``
  and emits its output as lines;
* any other command fails the pipeline with PowerShell's CommandNotFoundException, as it would on a host
  that has no such command.

Engine output lines become string output objects and engine errors become non-terminating error records
(the pipeline still ends Completed, so pypsrp's ``had_errors`` stays False, as on Windows). An exception
from the engine fails the pipeline (PipelineState Failed with the error record).
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
import uuid
from collections import deque
from typing import Any

from psrpcore import CreatePipelineEvent, PSRPPayload, ServerPipeline, ServerRunspacePool, StreamType
from psrpcore.types import (
    ApplicationPrivateData,
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    NETException,
    PipelineState,
    PSInvocationState,
    PSObject,
    PSRPMessageType,
    RunspacePoolStateMsg,
    SessionCapability,
)

from kmsadmin.lab import wsman
from kmsadmin.lab.api import ScriptOutput
from kmsadmin.lab.hostctx import CommandFaults, ConnectionAbort, HostContext, Job
from kmsadmin.lab.wsman import NAMESPACES, WsmanRequest
from kmsadmin.transports.base import (
    PSRP_BOOTSTRAP,
    PSRP_BOOTSTRAP_PARAMETER,
    STEP_END,
    batch_scripts,
    step_failed,
)
from kmsadmin.transports.psrpcache import MessageCachePool

_FINISHED = (PSInvocationState.Completed, PSInvocationState.Failed, PSInvocationState.Stopped)
_NOT_FOUND = (
    "The term '{0}' is not recognized as the name of a cmdlet, function, script file, or operable "
    "program. Check the spelling of the name, or if a path was included, verify that the path is correct "
    "and try again."
)


def _exception(message: str, type_name: str) -> NETException:
    exc = NETException(Message=message)
    exc.PSObject.type_names = [
        type_name,
        "System.Management.Automation.RuntimeException",
        "System.SystemException",
        "System.Exception",
        "System.Object",
    ]
    return exc


def command_not_found(name: str) -> ErrorRecord:
    return ErrorRecord(
        Exception=_exception(
            _NOT_FOUND.format(name), "System.Management.Automation.CommandNotFoundException"
        ),
        CategoryInfo=ErrorCategoryInfo(
            Category=ErrorCategory.ObjectNotFound,
            Reason="CommandNotFoundException",
            TargetName=name,
            TargetType="String",
        ),
        TargetObject=name,
        FullyQualifiedErrorId="CommandNotFoundException",
    )


def runtime_error(message: str) -> ErrorRecord:
    return ErrorRecord(
        Exception=_exception(message, "System.Management.Automation.RuntimeException"),
        CategoryInfo=ErrorCategoryInfo(Category=ErrorCategory.OperationStopped, Reason="RuntimeException"),
        FullyQualifiedErrorId="RuntimeException",
    )


def _param(parameters: list[tuple[str | None, Any]], name: str) -> Any:
    for key, value in parameters:
        if key is not None and key.lower() == name.lower():
            return value
    positional = [value for key, value in parameters if key is None]
    return positional[0] if positional else None


def is_bootstrap(commands: list[Any]) -> bool:
    """Whether the pipeline is kmsadmin's PSRP bootstrap (a batch of scripts)."""
    return len(commands) == 1 and commands[0].is_script and str(commands[0].command_text) == PSRP_BOOTSTRAP


def script_of(commands: list[Any]) -> tuple[list[str] | None, bool, str | None]:
    """(scripts, output as Out-String -Stream lines, name of an unknown command) for a pipeline.

    kmsadmin's bootstrap carries a batch of base64 scripts; any other pipeline is one script.
    """
    if is_bootstrap(commands):
        # kmsadmin's PSRP transport: scripts arrive base64-encoded in the bootstrap's parameter
        encoded = _param(commands[0].parameters, PSRP_BOOTSTRAP_PARAMETER)
        items = list(encoded) if isinstance(encoded, list | tuple) else [encoded]
        scripts: list[str] = []
        for item in items:
            try:
                scripts.append(base64.b64decode(str(item), validate=True).decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                scripts.append("")
        return scripts, False, None
    if commands and all(c.is_script for c in commands):
        return ["\n".join(str(c.command_text) for c in commands)], False, None
    first = commands[0] if commands else None
    if (
        first is not None
        and not first.is_script
        and str(first.command_text).lower() in ("invoke-expression", "iex")
    ):
        script = _param(first.parameters, "Command")
        rest = [str(c.command_text).lower() for c in commands[1:]]
        if script is not None and all(r == "out-string" for r in rest):
            return [str(script)], bool(rest), None
        unknown = next((c for c in commands[1:] if str(c.command_text).lower() != "out-string"), first)
        return None, False, str(unknown.command_text)
    unknown = next((c for c in commands if not c.is_script), None)
    return None, False, str(unknown.command_text) if unknown is not None else ""


class _LabPool(MessageCachePool, ServerRunspacePool):
    """The server pool: what every client sends alike (pool open, the same pipelines) is deserialized
    once per content, and the constant answers (capability, private data, plain state changes)
    serialized once (:mod:`kmsadmin.transports.psrpcache`)."""

    deserialize_once = frozenset(
        {PSRPMessageType.SessionCapability, PSRPMessageType.InitRunspacePool, PSRPMessageType.CreatePipeline}
    )

    def send_key(
        self, message: PSObject, message_type: PSRPMessageType | None, pipeline_id: uuid.UUID | None
    ) -> tuple[str, ...] | None:
        if isinstance(message, SessionCapability | ApplicationPrivateData):
            return ("lab", type(message).__name__)
        if message_type == PSRPMessageType.PipelineOutput and isinstance(message, str) and len(message) <= 64:
            return ("lab", "output", message)  # short lines repeat: the batch's step-end markers
        if isinstance(message, RunspacePoolStateMsg) and not message.ExceptionAsErrorRecord:
            return ("lab", "RunspacePoolState", str(int(message.RunspaceState)))
        if isinstance(message, PipelineState) and not message.ExceptionAsErrorRecord:
            return ("lab", "PipelineState", str(int(message.PipelineState)))
        return None


class _Pipeline:
    def __init__(self, pipe: ServerPipeline, faults: CommandFaults) -> None:
        self.pipe = pipe
        self.faults = faults
        self.started = False
        self.closed = False


class PsrpShell:
    """A RunspacePool behind one ShellId."""

    def __init__(self, ctx: HostContext, req: WsmanRequest, client_ip: str) -> None:
        self.ctx = ctx
        self.client_ip = client_ip
        self.resource_uri = req.resource_uri
        shell = req.body.find("rsp:Shell", NAMESPACES) if req.body is not None else None
        creation = shell.find("pwsh:creationXml", NAMESPACES) if shell is not None else None
        if shell is None or creation is None or not creation.text:
            raise wsman.invalid_parameter_fault()
        # Windows keeps the client's ShellId (the RunspacePool id) for PSRP shells.
        self.id = (shell.attrib.get("ShellId") or str(uuid.uuid4())).upper()
        self.input_streams = _text(shell, "rsp:InputStreams") or "stdin pr"
        self.output_streams = _text(shell, "rsp:OutputStreams") or "stdout"
        max_env = req.max_envelope_size or 153600
        # Fragment size so that one fragment, base64-encoded, fits a Receive envelope.
        self._fragment_size = max(22, (max_env - 2048) * 3 // 4)
        self._cond = threading.Condition()
        self._queues: dict[uuid.UUID | None, deque[bytes]] = {None: deque()}
        self._pipelines: dict[str, _Pipeline] = {}
        self.pool = _LabPool()
        with self._cond:
            self._feed(_b64(creation.text), None)

    def create_fields(self) -> list[tuple[str, str]]:
        return [
            ("ShellId", self.id),
            ("ResourceUri", self.resource_uri),
            ("Owner", f"{self.ctx.name.upper()}\\{self.ctx.username}"),
            ("ClientIP", self.client_ip),
            ("ProcessId", "4242"),
            ("IdleTimeOut", "PT7200.000S"),
            ("InputStreams", self.input_streams),
            ("OutputStreams", self.output_streams),
            ("MaxIdleTimeOut", "PT2147483.647S"),
            ("Locale", "en-US"),
            ("DataLocale", "en-US"),
            ("CompressionMode", "NoCompression"),
            ("ProfileLoaded", "Yes"),
            ("Encoding", "UTF8"),
            ("BufferMode", "Block"),
            ("State", "Connected"),
            ("ShellRunTime", "P0DT0H0M0S"),
            ("ShellInactivity", "P0DT0H0M0S"),
        ]

    # --- psrpcore plumbing (callers hold self._cond) --------------------------------------------------

    def _feed(self, data: bytes, pipeline_id: uuid.UUID | None) -> None:
        try:
            self.pool.receive_data(PSRPPayload(data, StreamType.default, pipeline_id))
            while (event := self.pool.next_event()) is not None:
                if isinstance(event, CreatePipelineEvent):
                    self._start_pipeline(str(event.pipeline_id).upper())
        except wsman.WsmanFault:
            raise
        except Exception as exc:  # psrpcore rejects malformed or out-of-order fragments
            raise wsman.invalid_parameter_fault() from exc
        self._drain()

    def _drain(self) -> None:
        while (payload := self.pool.data_to_send(self._fragment_size)) is not None:
            self._queues.setdefault(payload.pipeline_id, deque()).append(bytes(payload.data))
        self._cond.notify_all()

    def _start_pipeline(self, command_id: str) -> None:
        entry = self._pipelines[command_id]
        pipe = entry.pipe
        entry.started = True
        # Windows sends no PipelineState Running; the first state the client sees is the final one.
        pipe._change_state(PSInvocationState.Running, emit=False)
        metadata = pipe.metadata
        commands = list(metadata.commands) if metadata is not None else []
        scripts, as_lines, unknown = script_of(commands)
        if scripts is None:
            pipe._change_state(PSInvocationState.Failed, error=command_not_found(unknown or ""))
            return
        batch = scripts if is_bootstrap(commands) else batch_scripts(scripts[0])
        if batch is not None:
            # the bootstrap, or the same loop sent as one script's text (batch_script, e.g. by Ansible)
            job = self.ctx.runner.submit(lambda: self._run_batch(batch))
        else:
            job = self.ctx.run_script(scripts[0], "psrp")
        job.add_done_callback(lambda j: self._pipeline_done(entry, j, as_lines))

    def _run_batch(self, scripts: list[str]) -> ScriptOutput:
        """The bootstrap's loop: each script's output, then its end marker; stop after a failed step."""
        output: list[str] = []
        errors: list[str] = []
        for script in scripts:
            started = time.monotonic()
            result = self.ctx.engine.run_script(self.ctx.name, script, via="psrp")
            output.extend(result.output)
            errors.extend(result.errors)
            output.append(f"{STEP_END} {int((time.monotonic() - started) * 1000)}")
            if step_failed("\n".join(result.output)):
                break
        return ScriptOutput(tuple(output), tuple(errors))

    def _pipeline_done(self, entry: _Pipeline, job: Job[ScriptOutput], as_lines: bool) -> None:
        with self._cond:
            pipe = entry.pipe
            if entry.closed or pipe.state != PSInvocationState.Running:
                return  # stopped or closed by a Signal while the engine ran
            result = job.value
            if job.error is not None or result is None:
                message = str(job.error) or type(job.error).__name__
                pipe._change_state(PSInvocationState.Failed, error=runtime_error(message))
            else:
                for line in result.output:
                    for item in line.splitlines() if as_lines else [line]:
                        pipe.write_output(item)
                for message in result.errors:
                    pipe.write_error(
                        _exception(message, "Microsoft.PowerShell.Commands.WriteErrorException"),
                        ErrorCategoryInfo(Category=ErrorCategory.NotSpecified, Reason="WriteErrorException"),
                        fully_qualified_error_id="Microsoft.PowerShell.Commands.WriteErrorException",
                    )
                pipe.complete()
            self._drain()

    def _pipeline(self, command_id: str | None) -> _Pipeline:
        entry = self._pipelines.get((command_id or "").upper())
        if entry is None or entry.closed:
            raise wsman.unknown_command_fault()
        return entry

    # --- WS-Man verbs ---------------------------------------------------------------------------------

    def command(self, req: WsmanRequest) -> str:
        line = req.body.find("rsp:CommandLine", NAMESPACES) if req.body is not None else None
        args = line.find("rsp:Arguments", NAMESPACES) if line is not None else None
        if line is None or args is None or not args.text:
            raise wsman.invalid_parameter_fault()
        command_id = (line.attrib.get("CommandId") or str(uuid.uuid4())).upper()
        with self._cond:
            # psrpcore needs the pipeline object before the CreatePipeline message arrives.
            pipe = ServerPipeline(self.pool, uuid.UUID(command_id))
            self._pipelines[command_id] = _Pipeline(pipe, CommandFaults.for_host(self.ctx.faults))
            self._queues.setdefault(pipe.pipeline_id, deque())
            self._feed(_b64(args.text), pipe.pipeline_id)
        return wsman.element("rsp:CommandResponse", children=[wsman.element("rsp:CommandId", command_id)])

    def send(self, req: WsmanRequest) -> str:
        streams = req.body.findall("rsp:Send/rsp:Stream", NAMESPACES) if req.body is not None else []
        with self._cond:
            for stream in streams:
                command_id = stream.attrib.get("CommandId")
                pipeline_id = self._pipeline(command_id).pipe.pipeline_id if command_id else None
                self._feed(_b64(stream.text or ""), pipeline_id)
        return wsman.element("rsp:SendResponse")

    def receive(self, req: WsmanRequest) -> str:
        desired = req.body.find("rsp:Receive/rsp:DesiredStream", NAMESPACES) if req.body is not None else None
        command_id = desired.attrib.get("CommandId") if desired is not None else None
        budget = self.ctx.wait_budget(req.operation_timeout)
        entry: _Pipeline | None = None
        if command_id:
            with self._cond:
                entry = self._pipeline(command_id)
            if entry.faults.reset_pending:
                entry.faults.reset_pending = False
                raise ConnectionAbort
            if entry.faults.timeouts_left > 0:
                entry.faults.timeouts_left -= 1
                self.ctx.stop.wait(budget)
                raise wsman.operation_timeout_fault()
        target = entry.pipe.pipeline_id if entry is not None else None
        room = max(1024, (req.max_envelope_size or 153600) - 2048)
        with self._cond:
            queue = self._queues.setdefault(target, deque())
            if (
                not self._cond.wait_for(lambda: bool(queue) or self.ctx.stop.is_set(), timeout=budget)
                or not queue
            ):
                raise wsman.operation_timeout_fault()
            streams: list[str] = []
            while queue and (not streams or len(queue[0]) * 4 // 3 < room):
                chunk = queue.popleft()
                room -= len(chunk) * 4 // 3 + 100
                streams.append(
                    wsman.stream_element(
                        "stdout", command_id.upper() if command_id else None, base64.b64encode(chunk).decode()
                    )
                )
            if entry is not None and not queue and entry.pipe.state in _FINISHED:
                streams.append(
                    wsman.command_state_element(
                        command_id.upper() if command_id else "", wsman.COMMAND_STATE_DONE, 0
                    )
                )
        return wsman.element("rsp:ReceiveResponse", children=streams)

    def signal(self, req: WsmanRequest) -> str:
        signal_el = req.body.find("rsp:Signal", NAMESPACES) if req.body is not None else None
        if signal_el is None:
            raise wsman.invalid_parameter_fault()
        command_id = (signal_el.attrib.get("CommandId") or "").upper()
        code = _text(signal_el, "rsp:Code").rsplit("/", 1)[-1].lower()
        with self._cond:
            entry = self._pipelines.get(command_id)
            if entry is not None and not entry.closed:
                if code == "ctrl_c":
                    # PowerShell.stop(): a running pipeline ends Stopped (PipelineStoppedException).
                    if entry.pipe.state == PSInvocationState.Running:
                        entry.pipe.stop()
                        self._drain()
                elif code == "terminate":
                    entry.closed = True
                    self._pipelines.pop(command_id, None)
                    self._queues.pop(entry.pipe.pipeline_id, None)
                    self.pool.pipeline_table.pop(entry.pipe.pipeline_id, None)
        return wsman.element("rsp:SignalResponse")

    def close(self) -> None:
        with self._cond:
            for entry in self._pipelines.values():
                entry.closed = True
            self._pipelines.clear()
            self._queues.clear()
            self._cond.notify_all()


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip())
    except binascii.Error as exc:
        raise wsman.invalid_parameter_fault() from exc


def _text(parent: Any, path: str) -> str:
    el = parent.find(path, NAMESPACES)
    return (el.text or "").strip() if el is not None else ""
