"""WinRS over pypsrp: one cmd shell per host, each script fed to a fixed PowerShell bootstrap on stdin.

For hosts whose ``Microsoft.PowerShell`` PSRP endpoint is unusable (disabled, restricted, or broken
by a profile), WinRS still runs ``powershell.exe``. The command line is always the same short
``-EncodedCommand`` bootstrap (:data:`~kmsadmin.transports.base.BOOTSTRAP_SCRIPT`); the script
itself goes over stdin as base64 of UTF-8, split into Send messages that fit the host's envelope
size, so its length is not bounded by cmd.exe's 8191 characters.
"""

from __future__ import annotations

from pypsrp.shell import CommandState, Process, SignalCode, WinRS

from kmsadmin.transports.base import (
    BOOTSTRAP_ARGUMENTS,
    BOOTSTRAP_EXECUTABLE,
    UTF8_CODEPAGE,
    Deadline,
    Output,
    SessionBase,
    chunks,
    clean_stderr,
    log,
    stdin_payload,
)
from kmsadmin.transports.options import ConnectionOptions
from kmsadmin.transports.pypsrp_client import BoundedWSMan
from kmsadmin.values import RenderedScript

#: Room left in each Send envelope for the SOAP header around the stdin bytes.
_SEND_OVERHEAD = 2048


class WinRSSession(SessionBase):
    """A WinRS session: one shell, one ``powershell.exe`` per script."""

    transport_name = "winrs"

    def __init__(self, options: ConnectionOptions) -> None:
        super().__init__(options)
        self._wsman: BoundedWSMan | None = None
        self._shell: WinRS | None = None
        self._process: Process | None = None

    @property
    def wsman(self) -> BoundedWSMan | None:
        """The open WS-Man connection, if any (tests read its request counter)."""
        return self._wsman

    def _ensure_shell(self, budget: Deadline) -> tuple[BoundedWSMan, WinRS]:
        if self._wsman is None:
            self._wsman = BoundedWSMan(self._options)
        self._wsman.budget = budget
        if self._shell is None:
            # Kept before open() so that a half-made shell is still deleted by _cancel.
            self._shell = WinRS(self._wsman, codepage=UTF8_CODEPAGE)
            self._shell.open()
            self.opened_count += 1
        return self._wsman, self._shell

    def _execute(self, script: RenderedScript, budget: Deadline) -> Output:
        wsman, shell = self._ensure_shell(budget)
        process = Process(shell, BOOTSTRAP_EXECUTABLE, list(BOOTSTRAP_ARGUMENTS))
        self._process = process
        process.begin_invoke()
        # pypsrp's max_payload_size is the base64 text a Send may carry; stdin bytes are 3/4 of it.
        size = max(1024, (wsman.max_payload_size - _SEND_OVERHEAD) * 3 // 4)
        pieces = chunks(stdin_payload(script), size)
        for index, piece in enumerate(pieces):
            process.send(piece, end=index == len(pieces) - 1)
        while process.state != CommandState.DONE:
            # One Receive per call; BoundedWSMan re-asks after OperationTimeouts and ends the loop
            # with DeadlineExpired when the step is out of time.
            process.poll_invoke()
        # Terminate releases the command on the host (it stays listed until signalled).
        process.signal(SignalCode.TERMINATE)
        self._process = None
        stdout = process.stdout.decode("utf-8", errors="replace").replace("\r\n", "\n")
        return Output(stdout=stdout, errors=clean_stderr(process.stderr), rc=process.rc)

    def _cancel(self, budget: Deadline) -> None:
        if self._wsman is None:
            return
        self._wsman.budget = budget
        process, self._process = self._process, None
        if process is not None and process.id is not None:
            try:
                process.signal(SignalCode.TERMINATE)
            except Exception as exc:
                log.debug("host=%s terminating the command failed: %s", self._options.name, exc)
        self._close(budget)

    def _close(self, budget: Deadline) -> None:
        if self._wsman is not None:
            self._wsman.budget = budget
        shell, self._shell = self._shell, None
        if shell is not None:
            shell.close()

    def _drop(self) -> None:
        wsman, self._wsman = self._wsman, None
        self._shell = None
        self._process = None
        if wsman is not None:
            try:
                wsman.close()
            except Exception as exc:
                log.debug("host=%s closing the connection failed: %s", self._options.name, exc)
