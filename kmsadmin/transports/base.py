"""The transport interface, and what the three implementations share.

A :class:`Session` talks to one host. It is opened without contacting the host; the first
:meth:`Session.run` connects, and every later run reuses that connection (and the PSRP runspace pool
or WinRS shell) until :meth:`Session.close`. Sessions are not thread-safe: the fleet gives each host
its own session on one worker thread.

Every run is bounded by a deadline measured on the monotonic clock. Both WinRM client libraries
otherwise retry a WS-Man OperationTimeout forever and retry read timeouts with growing sleeps, so a
hung host could hold a worker indefinitely; here every HTTP request gets at most the time left.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import xml.etree.ElementTree as ET
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol, Self

from defusedxml import DTDForbidden
from defusedxml.ElementTree import fromstring as defused_fromstring

from kmsadmin.errors import HostError, HostTimeout, ProtocolError
from kmsadmin.transports.options import ConnectionOptions
from kmsadmin.values import RenderedScript, ScriptResult

log = logging.getLogger("kmsadmin.transports")

# pypsrp and psrpcore log every message body at DEBUG, which includes the scripts (and any secret they
# carry); spnego and requests_ntlm log tokens. kmsadmin logs host, step, duration and transport
# itself, so the libraries stay quiet unless the application configured them on purpose.
for _name in ("pypsrp", "psrpcore", "winrm", "spnego", "requests_ntlm"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.CRITICAL)

#: After a deadline expires, stopping the command and deleting the shell get this many seconds
#: together, so a dead host costs at most deadline + this.
CLEANUP_GRACE = 1.5

#: WS-Man fault "The WS-Management service cannot complete the operation within the time specified
#: in OperationTimeout" ([MS-WSMV] 3.1.4.14: a Receive with no output yet; ask again).
OPERATION_TIMEOUT_FAULT = 2150858793

#: HTTP statuses meaning "not processed, try again": 503 Service Unavailable (WinRM restarting or
#: over its quota), 425 and 429.
BUSY_STATUSES = frozenset({425, 429, 503})


class Session(Protocol):
    """One host's connection, reused for every step run on it."""

    @property
    def options(self) -> ConnectionOptions:
        """The options the session was opened with."""
        ...

    def run(self, script: RenderedScript, *, deadline: float | None = None) -> ScriptResult:
        """Run one rendered script; ``deadline`` is the seconds it may take (None: the options' deadline).

        Error records and stderr land in ``ScriptResult.errors`` (not raised). Raises
        :class:`~kmsadmin.errors.ConnectionFailed`, ``AuthenticationFailed``, ``AccessDenied`` or
        ``HostTimeout``, each with host, step and a fix.
        """
        ...

    def run_many(
        self, scripts: Sequence[RenderedScript], *, deadline: float | None = None
    ) -> list[ScriptResult]:
        """Run several scripts in order within one ``deadline``, as few round trips as the transport allows.

        Stops after the first step whose result is missing or carries an ``error``
        (:func:`step_failed`): the list has one result per step that ran, at least one. A transport
        failure raises as in :meth:`run`, naming the steps joined with ``+``.
        """
        ...

    def close(self) -> None:
        """Release the pool/shell and the HTTP connection; best effort, never raises."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class Transport(Protocol):
    """Opens sessions; the seam the fleet layer (and its tests' fakes) plug into."""

    def open_session(self, options: ConnectionOptions) -> Session:
        """A session for ``options.host``; no connection is made until the first run."""
        ...


class Deadline:
    """A point on the monotonic clock that a step must not outlive."""

    __slots__ = ("_end", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left (negative once expired)."""
        return self._end - time.monotonic()

    @property
    def expired(self) -> bool:
        """Whether no time is left."""
        return self.remaining() <= 0


class DeadlineExpired(Exception):
    """Internal: the step's time ran out before the next request could be sent."""


#: How often one Receive is re-sent after the connection dropped under it (a Receive only asks for
#: output, so asking again on a new connection is safe).
RECEIVE_RESET_RETRIES = 2

#: Smallest slice of time worth sending a request for; below this the step is out of time.
MIN_REQUEST_SECONDS = 0.05


def time_left(budget: Deadline) -> float:
    """Seconds ``budget`` leaves for the next request; raises :class:`DeadlineExpired` when too few."""
    left = budget.remaining()
    if left < MIN_REQUEST_SECONDS:
        raise DeadlineExpired
    return left


def request_limits(options: ConnectionOptions, budget: Deadline | None) -> tuple[float, float, int]:
    """(connect timeout, read timeout, WS-Man OperationTimeout) for the next request within ``budget``.

    Connect attempts (the first and each retry) share the time left rather than each taking all of
    it; the OperationTimeout stays a second under the time left, so the host answers a Receive with
    "no output yet" before the read timeout fires.
    """
    if budget is None:
        return options.connection_timeout, options.read_timeout, options.operation_timeout
    left = time_left(budget)
    return (
        min(options.connection_timeout, left / (options.reconnection_retries + 1)),
        min(options.read_timeout, left),
        max(1, min(options.operation_timeout, int(left) - 1)),
    )


def retry_pause(
    options: ConnectionOptions, attempt: int, budget: Deadline | None, *, then: float = 0.0
) -> float | None:
    """The backoff before retrying a busy answer or a refused connect for the ``attempt + 1``-th time,
    or None when the retries are used up or the pause (plus ``then``, what the retry needs) would
    outlast ``budget``."""
    pause = float(options.reconnection_backoff * 2**attempt)
    if attempt >= options.reconnection_retries or (budget is not None and budget.remaining() <= pause + then):
        return None
    return pause


@dataclass(frozen=True, slots=True)
class Output:
    """What a transport collected from one script, before it becomes a ScriptResult."""

    stdout: str
    errors: tuple[str, ...]
    rc: int | None
    #: seconds the step took where the transport knows it per step (batches); None: the whole run
    duration: float | None = None


# --- WinRS: the script travels over stdin --------------------------------------------------------

#: The fixed command line a WinRS transport runs. It reads base64 of the UTF-8 script from stdin,
#: so the script never meets cmd.exe's 8191-character command-line limit, and sets UTF-8 output
#: to match the shell's code page 65001 (non-English hosts would otherwise garble output).
BOOTSTRAP_SCRIPT = (
    "$ErrorActionPreference='Stop';$ProgressPreference='SilentlyContinue';"
    "[Console]::OutputEncoding=New-Object System.Text.UTF8Encoding $false;"
    "$kmsadminIn=[Console]::In.ReadToEnd();"
    "$kmsadminScript=[Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($kmsadminIn.Trim()));"
    "Remove-Variable kmsadminIn;"
    "& ([ScriptBlock]::Create($kmsadminScript))"
)
#: PSRP: scripts travel as base64 in one parameter of this fixed script. pypsrp escapes every
#: CR, LF and "_x" in a string argument through a Python callback (~900 per facts script), which was
#: the largest client-side CPU cost per host; base64 has none of those characters.
#:
#: The parameter takes several scripts (one pipeline, one round trip for a whole plan): each runs in
#: its own scope, its output is followed by :data:`STEP_END`, and the batch stops after a step whose
#: result is missing or carries an ``error`` (the same rule as :func:`step_failed`), or at the first
#: terminating error, which ends the pipeline.
PSRP_BOOTSTRAP = (
    "param([string[]]$KmsadminScript)\n"
    "foreach ($KmsadminEncoded in $KmsadminScript) {\n"
    "    $KmsadminWatch = [Diagnostics.Stopwatch]::StartNew()\n"
    "    $KmsadminOut = @(& ([ScriptBlock]::Create([Text.Encoding]::UTF8.GetString("
    "[Convert]::FromBase64String($KmsadminEncoded)))))\n"
    "    $KmsadminOut\n"
    '    "#kmsadmin-step-end $($KmsadminWatch.ElapsedMilliseconds)"\n'
    "    $KmsadminJson = @($KmsadminOut | Where-Object { \"$_\".Trim().StartsWith('{') })\n"
    "    if ($KmsadminJson.Count -eq 0) { break }\n"
    "    if ($null -ne ($KmsadminJson[-1] | ConvertFrom-Json).error) { break }\n"
    "}"
)
PSRP_BOOTSTRAP_PARAMETER = "KmsadminScript"
#: The output line the PSRP bootstrap writes after each script's output, followed by a space and the
#: script's run time in milliseconds.
STEP_END = "#kmsadmin-step-end"
#: The same batch as one self-contained script, for tools that send a script's text rather than a
#: command with parameters (an Ansible ``raw`` task): the scripts as a literal array of base64
#: strings, then the bootstrap's loop. See :func:`batch_script`.
BATCH_PREFIX = "$KmsadminScript = @("
_BOOTSTRAP_LOOP = PSRP_BOOTSTRAP.split("\n", 1)[1]
_BATCH_RE = re.compile(
    re.escape(BATCH_PREFIX)
    + r"(?P<items>'[A-Za-z0-9+/=]*'(?:,'[A-Za-z0-9+/=]*')*)\)\n"
    + re.escape(_BOOTSTRAP_LOOP)
    # what a caller may append: ansible-core's psrp plugin adds "exit $LASTEXITCODE" to a raw command
    + r"\s*(?:exit \$LASTEXITCODE\s*)?"
)


def batch_script(scripts: Sequence[str]) -> str:
    """One PowerShell script that runs ``scripts`` in order as the PSRP bootstrap does (each in its
    own scope, :data:`STEP_END` after each one's output, stop after the first failed step)."""
    items = ",".join(f"'{base64.b64encode(s.encode('utf-8')).decode('ascii')}'" for s in scripts)
    return f"{BATCH_PREFIX}{items})\n{_BOOTSTRAP_LOOP}"


def batch_scripts(text: str) -> list[str] | None:
    """The scripts of a :func:`batch_script` text (None when ``text`` is not exactly one); an item
    that is not base64 of UTF-8 becomes an empty script (which fails as a script without a header)."""
    match = _BATCH_RE.fullmatch(text.strip())
    if match is None:
        return None
    scripts: list[str] = []
    for item in match["items"].split(","):
        try:
            scripts.append(base64.b64decode(item.strip("'"), validate=True).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            scripts.append("")
    return scripts


def split_steps(objects: Sequence[str], errors: tuple[str, ...]) -> list[Output]:
    """One :class:`Output` per script from a batch's output objects (see :data:`PSRP_BOOTSTRAP`).

    Output after the last marker belongs to a script that ended the pipeline with a terminating
    error; error records are not tied to a script, so all of them go to the last script that ran
    (every script before it succeeded, or the batch would have stopped there).
    """
    outs: list[Output] = []
    current: list[str] = []
    for item in objects:
        if item.startswith(STEP_END):
            try:
                duration: float | None = int(item[len(STEP_END) :].strip()) / 1000
            except ValueError:
                duration = None
            outs.append(Output("\n".join(current), (), None, duration))
            current = []
        else:
            current.append(item)
    if current or not outs:
        outs.append(Output("\n".join(current), (), None))
    if errors:
        last = outs[-1]
        outs[-1] = Output(last.stdout, errors, last.rc, last.duration)
    return outs


def step_failed(stdout: str) -> bool:
    """Whether a step's output ends the batch: no JSON result line, or one whose ``error`` is set.

    The PSRP bootstrap applies the same rule on the host; the other transports apply it here.
    """
    lines = [line.strip() for line in stdout.splitlines() if line.strip().startswith("{")]
    if not lines:
        return True
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        return True
    return not isinstance(result, dict) or result.get("error") is not None


BOOTSTRAP_EXECUTABLE = "powershell"
BOOTSTRAP_ARGUMENTS: tuple[str, ...] = (
    "-NoProfile",
    "-NonInteractive",
    "-EncodedCommand",
    base64.b64encode(BOOTSTRAP_SCRIPT.encode("utf-16-le")).decode("ascii"),
)
#: WINRS_CODEPAGE for the shell: UTF-8, matching the bootstrap's [Console]::OutputEncoding.
UTF8_CODEPAGE = 65001


def stdin_payload(script: RenderedScript) -> bytes:
    """The bootstrap's stdin: ASCII base64 of the UTF-8 script, so the code page does not matter."""
    return base64.b64encode(script.text.encode("utf-8"))


def chunks(data: bytes, size: int) -> list[bytes]:
    """Split stdin into pieces that each fit one WS-Man Send envelope (at least one piece)."""
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def clean_stderr(raw: bytes) -> tuple[str, ...]:
    """Turn powershell.exe's stderr into error messages.

    Under WinRS, powershell.exe writes error records (and progress records, even on success) as
    ``#< CLIXML`` blobs. Only the error strings are kept; progress noise is dropped.
    """
    text = raw.decode("utf-8", errors="replace")
    if "#< CLIXML" not in text:
        stripped = text.strip()
        return (stripped,) if stripped else ()
    messages: list[str] = []
    for raw_part in text.split("#< CLIXML"):
        part = raw_part.strip()
        if not part:
            continue
        if not part.startswith("<"):
            messages.append(part)
            continue
        messages.extend(_clixml_errors(part))
    return tuple(m for m in messages if m)


def fromstring_untrusted(data: bytes | bytearray | str) -> ET.Element:
    """Parse XML from a host, refusing any DTD (and so every entity declaration and external reference).

    Without a ``<!DOCTYPE`` a document can declare no entity, so with the DTD refused the standard
    library's C parser is as safe as defusedxml's and several times faster: defusedxml's ElementTree
    parser is the pure-Python ``XMLParser`` with a Python callback per element, the largest single
    cost of reading WS-Man and PSRP answers. The text is checked as it is parsed: bytes are decoded as
    UTF-8 here and handed to the parser as text, which makes expat read them as UTF-8 whatever an XML
    declaration claims. Bytes in another encoding (UTF-16 with its byte-order mark...) go to
    defusedxml, which refuses DTDs itself. Raises :class:`defusedxml.DTDForbidden` or
    :class:`xml.etree.ElementTree.ParseError` (both ``ValueError``/``SyntaxError`` subclasses callers
    already handle).
    """
    if isinstance(data, str):
        text = data
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            return defused_fromstring(bytes(data), forbid_dtd=True)
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise DTDForbidden("", None, None)
    return ET.fromstring(text)  # noqa: S314 - no DTD: no entity can be declared (see above)


def _clixml_errors(blob: str) -> list[str]:
    try:
        # hostile text: DTDs and entities refused; a blob that fails to parse is kept as text
        root = fromstring_untrusted(blob)
    except (ET.ParseError, ValueError):  # DefusedXmlException is a ValueError
        return [blob]
    namespace = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    prefix = f"{{{namespace}}}" if namespace else ""
    # Windows writes S="Error"; psrpcore (and so the lab) writes S="error".
    strings = [node for node in root.iter(f"{prefix}S") if (node.get("S") or "").lower() == "error"]
    text = "".join(node.text or "" for node in strings)
    text = _unescape_clixml(text).strip()
    return [text] if text else []


def _unescape_clixml(text: str) -> str:
    """CLIXML escapes control characters as ``_xHHHH_`` ([MS-PSRP] 2.2.5.3.2)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("_x", i) and i + 7 <= len(text) and text[i + 6] == "_":
            code = text[i + 2 : i + 6]
            if all(c in "0123456789abcdefABCDEF" for c in code):
                out.append(chr(int(code, 16)))
                i += 7
                continue
        out.append(text[i])
        i += 1
    return "".join(out).replace("\r\n", "\n")


# --- the shared run() wrapper --------------------------------------------------------------------


class SessionBase(ABC):
    """Times, logs and bounds every run, and turns library errors into kmsadmin's error tree."""

    #: name logged and reported for this implementation
    transport_name = "base"

    def __init__(self, options: ConnectionOptions) -> None:
        self._options = options
        #: how many pools/shells this session opened: one for every step, unless a failure reset it
        self.opened_count = 0
        #: what the last handshake negotiated (``kerberos``, ``ntlm``); the auth option where the client
        #: library does not tell
        self.mechanism: str = "" if options.auth in ("negotiate", "kerberos", "ntlm") else options.auth
        #: whether bodies travel wrapped with the auth keys (HTTP) or TLS protects them (HTTPS)
        self.encrypted = options.https or (
            options.auth not in ("basic", "certificate") and options.message_encryption != "never"
        )
        #: whether channel bindings (tls-server-end-point) went with the handshake
        self.channel_binding = options.https and options.auth in ("negotiate", "kerberos", "ntlm")

    @property
    def options(self) -> ConnectionOptions:
        """The options the session was opened with."""
        return self._options

    def run(self, script: RenderedScript, *, deadline: float | None = None) -> ScriptResult:
        """See :class:`Session`."""
        return self.run_many((script,), deadline=deadline)[0]

    def run_many(
        self, scripts: Sequence[RenderedScript], *, deadline: float | None = None
    ) -> list[ScriptResult]:
        """Run ``scripts`` in order within one deadline; see :class:`Session`."""
        from kmsadmin.transports.faults import translate

        if not scripts:
            return []
        seconds = self._options.deadline if deadline is None else deadline
        budget = Deadline(max(seconds, 0.0))
        started = time.monotonic()
        host, step = self._options.name, "+".join(s.step for s in scripts)
        try:
            outs = self._execute_many(scripts, budget)
        except Exception as exc:
            duration = time.monotonic() - started
            error = translate(exc, self._options, step, seconds, budget)
            # Whatever failed, the pool/shell and the connection's auth or encryption state can no
            # longer be trusted: drop them so the next run starts clean. A host that broke the
            # protocol gets no polite cleanup requests (they would meet the same answers).
            if isinstance(error, ProtocolError):
                self._drop()
            else:
                self._abort()
            log.warning(
                "host=%s step=%s transport=%s duration=%.3fs failed=%s",
                host,
                step,
                self.transport_name,
                duration,
                type(error or exc).__name__,
            )
            if error is None:
                raise
            raise error from exc
        duration = time.monotonic() - started
        log.info(
            "host=%s step=%s transport=%s duration=%.3fs errors=%d",
            host,
            step,
            self.transport_name,
            duration,
            sum(len(out.errors) for out in outs),
        )
        return [
            ScriptResult(
                host=host,
                step=script.step,
                stdout=out.stdout,
                errors=out.errors,
                rc=out.rc,
                duration=duration if out.duration is None else out.duration,
            )
            for script, out in zip(scripts, outs, strict=False)
        ]

    def close(self) -> None:
        """See :class:`Session`."""
        try:
            self._close(Deadline(CLEANUP_GRACE * 2))
        except Exception as exc:
            # Closing is best effort: the host drops idle shells itself (IdleTimeout).
            log.debug("host=%s transport=%s close failed: %s", self._options.name, self.transport_name, exc)
        finally:
            self._drop()

    def _abort(self) -> None:
        """After a failure: stop what runs, delete the shell, forget the connection (bounded)."""
        try:
            self._cancel(Deadline(CLEANUP_GRACE))
        except Exception as exc:
            log.debug("host=%s transport=%s cleanup failed: %s", self._options.name, self.transport_name, exc)
        finally:
            self._drop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @abstractmethod
    def _execute(self, script: RenderedScript, budget: Deadline) -> Output:
        """Connect if needed, run the script, collect its output; raise library errors as they come."""

    def _execute_many(self, scripts: Sequence[RenderedScript], budget: Deadline) -> list[Output]:
        """Run scripts one request sequence each, stopping after a failed step (:func:`step_failed`).

        Transports that can send a whole batch at once override this.
        """
        outs: list[Output] = []
        for script in scripts:
            started = time.monotonic()
            out = self._execute(script, budget)
            outs.append(
                Output(out.stdout, out.errors, out.rc, time.monotonic() - started)
                if len(scripts) > 1
                else out
            )
            if step_failed(out.stdout):
                break
        return outs

    @abstractmethod
    def _cancel(self, budget: Deadline) -> None:
        """Stop the running command (if any) and delete the shell/pool within ``budget``."""

    @abstractmethod
    def _close(self, budget: Deadline) -> None:
        """Delete the shell/pool politely within ``budget``."""

    @abstractmethod
    def _drop(self) -> None:
        """Forget every client object and close the HTTP connection; must not raise."""


def _seconds(value: float) -> str:
    return f"{value:.0f}s" if value >= 10 else f"{value:.2g}s"


#: the ways to give a host more time, in the order they win
MORE_TIME = "--deadline, the host's kmsadmin_deadline var or KMSADMIN_DEADLINE"


def host_timeout(
    options: ConnectionOptions, step: str, seconds: float, budget: Deadline | None = None
) -> HostError:
    """The error for a step that got no answer in time, naming the limit that really ran out.

    With the step's ``budget``: either the deadline ran out (the message gives the clock time it
    ended) or a single request's read timeout fired first (the message says so, not the time left).
    """
    responsive = (
        f"the host accepted the connection to {options.endpoint} but did not finish the step in time; "
        "check that it is responsive (WinRM service, CPU, pending reboot) and retry"
    )
    if budget is None:
        message, fix = f"no answer within {seconds:g}s", f"{responsive}, or allow more time with {MORE_TIME}"
    elif budget.remaining() > 1.0:
        message = (
            f"no answer within {_seconds(options.read_timeout)} (the read timeout of one request; "
            f"{_seconds(budget.remaining())} of the deadline were left)"
        )
        fix = f"{responsive}, or raise the read timeout (KMSADMIN_READ_TIMEOUT, ansible_psrp_read_timeout)"
    else:
        ended = datetime.now().astimezone() + timedelta(seconds=budget.remaining())
        message = (
            f"no answer within {_seconds(budget.seconds)} (its deadline, reached at {ended:%H:%M:%S %Z})"
        )
        fix = f"{responsive}, or allow more time with {MORE_TIME}"
    return HostTimeout(options.name, step, message, remediation=fix)


def error_text(record: object) -> str:
    """An error record's message (its ToString), falling back to the exception message."""
    text = str(record)
    if text:
        return text
    exception = getattr(record, "exception", None)
    message = getattr(exception, "message", None)
    return str(message) if message else repr(record)
