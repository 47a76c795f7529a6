"""WinRS (``.../windows/shell/cmd``) as a Windows host answers it, with powershell.exe as the only program.

A command line is checked the way cmd.exe and CreateProcess check it (8191 characters through cmd.exe,
32767 with ``WINRS_SKIP_CMD_SHELL``), then ``powershell -EncodedCommand <base64 UTF-16LE>`` is decoded
and handed to the script engine. When the decoded script is a stdin bootstrap (it reads
``[Console]::In.ReadToEnd()`` and runs it as a ScriptBlock, optionally after base64-decoding it) the
command waits for stdin ``End="true"`` and the engine gets the script that arrived on stdin. Output is
encoded in the shell's ``WINRS_CODEPAGE``; error records go to stderr as a ``#< CLIXML`` blob, which is
what powershell.exe writes when its output is redirected.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from psrpcore.types import ClixmlStream, serialize_clixml

from kmsadmin.lab import wsman
from kmsadmin.lab.api import ScriptOutput
from kmsadmin.lab.hostctx import CommandFaults, ConnectionAbort, HostContext, Job
from kmsadmin.lab.wsman import NAMESPACES, WsmanRequest

#: cmd.exe's maximum command-line length (KB 830473) and CreateProcess's lpCommandLine limit
CMD_EXE_LIMIT = 8191
CREATE_PROCESS_LIMIT = 32767

_CODEPAGE_DEFAULT = 437  # the OEM code page of an en-US Windows host
_PS_PARAMS_WITH_VALUE = (
    "executionpolicy",
    "inputformat",
    "outputformat",
    "windowstyle",
    "version",
    "configurationname",
    "psconsolefile",
    "file",
)
_PS_SWITCHES = ("noprofile", "noninteractive", "nologo", "noexit", "sta", "mta")
_READS_STDIN = re.compile(r"\[(?:System\.)?Console\]::In\.ReadToEnd\(\)|\$input\b", re.IGNORECASE)
_RUNS_TEXT = re.compile(
    r"\[(?:System\.Management\.Automation\.)?ScriptBlock\]::Create|Invoke-Expression|\biex\b", re.IGNORECASE
)


def codec_for(codepage: int) -> str:
    name = "utf-8" if codepage == 65001 else f"cp{codepage}"
    try:
        codecs.lookup(name)
    except LookupError:
        return f"cp{_CODEPAGE_DEFAULT}"
    return name


def split_command_line(line: str) -> list[str]:
    """Split like CommandLineToArgvW for the simple cases WinRS clients produce (quotes group words)."""
    tokens: list[str] = []
    current: list[str] = []
    in_quotes = False
    has_token = False
    for ch in line:
        if ch == '"':
            in_quotes = not in_quotes
            has_token = True
        elif ch in " \t" and not in_quotes:
            if has_token:
                tokens.append("".join(current))
                current, has_token = [], False
        else:
            current.append(ch)
            has_token = True
    if has_token:
        tokens.append("".join(current))
    return tokens


@dataclass(frozen=True, slots=True)
class Immediate:
    """A command that finishes without the engine (cmd.exe or powershell.exe complained)."""

    stdout: str = ""
    stderr: str = ""
    rc: int = 0


@dataclass(frozen=True, slots=True)
class RunScript:
    script: str


@dataclass(frozen=True, slots=True)
class ScriptFromStdin:
    """Run what arrives on stdin; ``decode`` turns the raw stdin bytes into script text."""

    decode: Callable[[bytes], str]


Plan = Immediate | RunScript | ScriptFromStdin


def _not_recognized(program: str) -> Immediate:
    return Immediate(
        stderr=f"'{program}' is not recognized as an internal or external command,\r\n"
        "operable program or batch file.\r\n",
        rc=1,
    )


def _program_name(token: str) -> str:
    name = re.split(r"[\\/]", token)[-1].lower()
    return name.removesuffix(".exe")


def _matches(token: str, name: str, minimum: int) -> bool:
    """powershell.exe accepts any unambiguous prefix of a parameter name."""
    return len(token) >= minimum and name.startswith(token)


def _stdin_bootstrap_decoder(script: str, codec: str) -> Callable[[bytes], str] | None:
    if not (_READS_STDIN.search(script) and _RUNS_TEXT.search(script)):
        return None
    text_codec = "utf-16-le" if re.search(r"Encoding\]::Unicode", script, re.IGNORECASE) else "utf-8"
    if "frombase64string" in script.lower():

        def decode_b64(raw: bytes) -> str:
            return base64.b64decode(b"".join(raw.split())).decode(text_codec)

        return decode_b64

    def decode_text(raw: bytes) -> str:
        return raw.decode(codec, errors="replace")

    return decode_text


def plan_command(command_line: str, *, skip_cmd_shell: bool, codec: str) -> Plan:
    """Decide what a WinRS command line does; raises a WS-Man fault where Windows would."""
    if skip_cmd_shell:
        if len(command_line) > CREATE_PROCESS_LIMIT:
            raise wsman.filename_too_long_fault()
    elif len(command_line) > CMD_EXE_LIMIT:
        return Immediate(stderr="The command line is too long.\r\n", rc=1)

    tokens = split_command_line(command_line)
    if not tokens:
        raise wsman.invalid_parameter_fault()
    program = _program_name(tokens[0])
    if program == "cmd" and len(tokens) > 2 and tokens[1].lower() in ("/c", "/k"):
        # "cmd /c powershell ..." is the same as going through cmd.exe directly.
        return plan_command(" ".join(tokens[2:]), skip_cmd_shell=False, codec=codec)
    if program != "powershell":
        if skip_cmd_shell:
            raise wsman.file_not_found_fault()
        return _not_recognized(tokens[0])
    return _plan_powershell(tokens[1:], codec)


def _option_width(arg: str) -> int:
    """How many tokens a powershell.exe option before the command takes (0: not such an option)."""
    name = arg.lower()[1:] if arg.startswith("-") else ""
    if not name:
        return 0
    if any(_matches(name, p, 2) for p in _PS_PARAMS_WITH_VALUE) and not _matches(name, "encodedcommand", 2):
        return 2
    if any(_matches(name, s, 3) for s in _PS_SWITCHES):
        return 1
    return 0


def _plan_powershell(args: list[str], codec: str) -> Plan:
    i = 0
    while i < len(args) and (width := _option_width(args[i])):
        i += width
    rest = args[i:]
    # No command at all, "-", or "-Command -": powershell.exe reads its commands from stdin.
    head = rest[0].lower() if rest else "-"
    name = head[1:] if head.startswith("-") else ""
    if head == "-" or (rest[1:] == ["-"] and _matches(name, "command", 1)):
        return ScriptFromStdin(lambda raw: raw.decode(codec, errors="replace"))
    if name in ("e", "ec") or _matches(name, "encodedcommand", 2):
        return _plan_encoded(rest[1] if len(rest) > 1 else "", codec)
    if _matches(name, "command", 1):
        return RunScript(" ".join(rest[1:]))
    # powershell.exe treats anything else as the start of -Command text.
    return RunScript(" ".join(rest))


def _plan_encoded(value: str, codec: str) -> Plan:
    try:
        script = base64.b64decode(value, validate=True).decode("utf-16-le")
    except (binascii.Error, UnicodeDecodeError):
        script = ""
    if not value or not script:
        return Immediate(
            stderr="Cannot process the command because the value specified with -EncodedCommand is not "
            "properly encoded. The value must be Base64 encoded.\r\n",
            rc=1,
        )
    decoder = _stdin_bootstrap_decoder(script, codec)
    return ScriptFromStdin(decoder) if decoder is not None else RunScript(script)


def clixml_errors(messages: list[str]) -> str:
    """stderr of powershell.exe for error records: a CLIXML document of Error-stream strings."""
    items = [(msg if msg.endswith("\n") else msg + "\r\n", ClixmlStream.ERROR) for msg in messages]
    # Strings need no cipher (only SecureStrings do). psrpcore writes the stream as S="error";
    # powershell.exe writes S="Error" and pypsrp's sanitise_clixml matches that case exactly.
    clixml = serialize_clixml(items, None)  # type: ignore[arg-type]
    return "#< CLIXML\r\n" + clixml.replace(' S="error">', ' S="Error">')


class WinrsCommand:
    """One process started by ``Command``: its stdin, its result, and what is left to send."""

    def __init__(self, command_id: str, faults: CommandFaults) -> None:
        self.id = command_id
        self.faults = faults
        self.stdin = bytearray()
        self.stdin_decoder: Callable[[bytes], str] | None = None
        self.ready = threading.Event()
        self.stdout = b""
        self.stderr = b""
        self.rc = 0

    def finish(self, stdout: bytes, stderr: bytes, rc: int) -> None:
        self.stdout, self.stderr, self.rc = stdout, stderr, rc
        self.ready.set()


class WinrsShell:
    """A ``cmd`` shell: Create/Command/Send/Receive/Signal/Delete for one ShellId."""

    resource_uri = wsman.RESOURCE_CMD

    def __init__(self, ctx: HostContext, req: WsmanRequest, client_ip: str) -> None:
        self.ctx = ctx
        self.id = str(uuid.uuid4()).upper()
        self.client_ip = client_ip
        shell = req.body.find("rsp:Shell", NAMESPACES) if req.body is not None else None
        if shell is None:
            raise wsman.invalid_parameter_fault()
        self.input_streams = _child_text(shell, "rsp:InputStreams") or "stdin"
        self.output_streams = _child_text(shell, "rsp:OutputStreams") or "stdout stderr"
        codepage = req.options.get("WINRS_CODEPAGE", "")
        self.codec = codec_for(int(codepage) if codepage.isdigit() else _CODEPAGE_DEFAULT)
        self.commands: dict[str, WinrsCommand] = {}
        self._lock = threading.Lock()

    def create_fields(self) -> list[tuple[str, str]]:
        return [
            ("ShellId", self.id),
            ("ResourceUri", self.resource_uri),
            ("Owner", self.ctx.username),
            ("ClientIP", self.client_ip),
            ("IdleTimeOut", "PT7200.000S"),
            ("InputStreams", self.input_streams),
            ("OutputStreams", self.output_streams),
            ("ShellRunTime", "P0DT0H0M0S"),
            ("ShellInactivity", "P0DT0H0M0S"),
        ]

    def _command(self, command_id: str | None) -> WinrsCommand:
        with self._lock:
            cmd = self.commands.get((command_id or "").upper())
        if cmd is None:
            raise wsman.unknown_command_fault()
        return cmd

    def command(self, req: WsmanRequest) -> str:
        line_el = req.body.find("rsp:CommandLine", NAMESPACES) if req.body is not None else None
        if line_el is None:
            raise wsman.invalid_parameter_fault()
        parts = [_child_text(line_el, "rsp:Command")]
        parts += [(a.text or "") for a in line_el.findall("rsp:Arguments", NAMESPACES)]
        command_line = " ".join(p for p in parts if p)
        plan = plan_command(
            command_line, skip_cmd_shell=req.option_true("WINRS_SKIP_CMD_SHELL"), codec=self.codec
        )

        command_id = (line_el.attrib.get("CommandId") or str(uuid.uuid4())).upper()
        cmd = WinrsCommand(command_id, CommandFaults.for_host(self.ctx.faults))
        with self._lock:
            self.commands[command_id] = cmd
        if isinstance(plan, Immediate):
            cmd.finish(
                plan.stdout.encode(self.codec, "replace"), plan.stderr.encode(self.codec, "replace"), plan.rc
            )
        elif isinstance(plan, RunScript):
            self._start(cmd, plan.script)
        else:
            cmd.stdin_decoder = plan.decode
        return wsman.element("rsp:CommandResponse", children=[wsman.element("rsp:CommandId", command_id)])

    def _start(self, cmd: WinrsCommand, script: str) -> None:
        job = self.ctx.run_script(script, "winrs")
        job.add_done_callback(lambda j: self._finished(cmd, j))

    def _finished(self, cmd: WinrsCommand, job: Job[ScriptOutput]) -> None:
        result = job.value
        if job.error is not None or result is None:
            # powershell.exe reports an unhandled failure as an error record and exits 1.
            message = str(job.error) or type(job.error).__name__
            cmd.finish(b"", clixml_errors([message]).encode(self.codec, "replace"), 1)
            return
        stdout = "".join(line + "\r\n" for line in result.output).encode(self.codec, "replace")
        stderr = clixml_errors(list(result.errors)).encode(self.codec, "replace") if result.errors else b""
        rc = result.rc if result.rc != 0 else (1 if result.errors else 0)
        cmd.finish(stdout, stderr, rc)

    def send(self, req: WsmanRequest) -> str:
        streams = req.body.findall("rsp:Send/rsp:Stream", NAMESPACES) if req.body is not None else []
        for stream in streams:
            cmd = self._command(stream.attrib.get("CommandId"))
            try:
                cmd.stdin += base64.b64decode(stream.text or "")
            except binascii.Error as exc:
                raise wsman.invalid_parameter_fault() from exc
            if stream.attrib.get("End", "").lower() in ("true", "1") and cmd.stdin_decoder is not None:
                decoder, cmd.stdin_decoder = cmd.stdin_decoder, None
                try:
                    script = decoder(bytes(cmd.stdin))
                except (binascii.Error, UnicodeDecodeError):
                    message = (
                        'Exception calling "FromBase64String": "The input is not a valid Base-64 string."'
                    )
                    cmd.finish(b"", clixml_errors([message]).encode(self.codec, "replace"), 1)
                    continue
                self._start(cmd, script)
        return wsman.element("rsp:SendResponse")

    def receive(self, req: WsmanRequest) -> str:
        desired = req.body.find("rsp:Receive/rsp:DesiredStream", NAMESPACES) if req.body is not None else None
        cmd = self._command(desired.attrib.get("CommandId") if desired is not None else None)
        budget = self.ctx.wait_budget(req.operation_timeout)
        if cmd.faults.reset_pending:
            cmd.faults.reset_pending = False
            raise ConnectionAbort
        if cmd.faults.timeouts_left > 0:
            cmd.faults.timeouts_left -= 1
            self.ctx.stop.wait(budget)
            raise wsman.operation_timeout_fault()
        if not self.ctx.wait(cmd.ready, budget):
            raise wsman.operation_timeout_fault()

        # Keep the response inside the client's MaxEnvelopeSize: base64 grows data by 4/3 and the
        # envelope around the streams takes about 2 KiB.
        room = max(1024, ((req.max_envelope_size or 153600) - 2048) * 3 // 4)
        streams: list[str] = []
        with self._lock:
            out, cmd.stdout = cmd.stdout[:room], cmd.stdout[room:]
            room -= len(out)
            err, cmd.stderr = cmd.stderr[:room], cmd.stderr[room:]
            finished = not cmd.stdout and not cmd.stderr
        if out:
            streams.append(wsman.stream_element("stdout", cmd.id, base64.b64encode(out).decode()))
        if err:
            streams.append(wsman.stream_element("stderr", cmd.id, base64.b64encode(err).decode()))
        if finished:
            streams.append(wsman.stream_element("stdout", cmd.id, None, end=True))
            streams.append(wsman.stream_element("stderr", cmd.id, None, end=True))
            streams.append(wsman.command_state_element(cmd.id, wsman.COMMAND_STATE_DONE, cmd.rc))
        else:
            streams.append(wsman.command_state_element(cmd.id, wsman.COMMAND_STATE_RUNNING, None))
        return wsman.element("rsp:ReceiveResponse", children=streams)

    def signal(self, req: WsmanRequest) -> str:
        signal_el = req.body.find("rsp:Signal", NAMESPACES) if req.body is not None else None
        if signal_el is None:
            raise wsman.invalid_parameter_fault()
        command_id = (signal_el.attrib.get("CommandId") or "").upper()
        code = _child_text(signal_el, "rsp:Code").rsplit("/", 1)[-1].lower()
        if code in ("terminate", "ctrl_c", "ctrl_break"):
            # The process is gone after either signal; later Receives fail like on Windows.
            with self._lock:
                self.commands.pop(command_id, None)
        return wsman.element("rsp:SignalResponse")

    def close(self) -> None:
        with self._lock:
            self.commands.clear()


def _child_text(parent: object, path: str) -> str:
    el = parent.find(path, NAMESPACES)  # type: ignore[attr-defined]
    return (el.text or "").strip() if el is not None else ""
