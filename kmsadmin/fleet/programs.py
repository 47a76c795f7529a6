"""The user's own programs that inventories name (dynamic inventory scripts, vault password scripts).

Run like Ansible runs them, but bounded: a deadline for the whole run (checked between reads, the
program killed when it passes) and a cap on what it prints, so a script that hangs or prints without
end cannot stop or exhaust kmsadmin. Standard error is kept as its last few KB for messages.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

#: the last bytes of standard error kept for messages
STDERR_TAIL = 4096


class ProgramFailed(Exception):
    """The program could not run, ran too long or printed too much: ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class ProgramResult:
    returncode: int
    stdout: bytes
    #: the end of standard error, decoded, stripped
    stderr: str


def run_program(argv: Sequence[str], *, timeout: float, max_output: int) -> ProgramResult:
    """Run ``argv`` without input; :class:`ProgramFailed` when it cannot start, outlives ``timeout`` or
    prints more than ``max_output`` bytes (it is killed then)."""
    try:
        # the user's own program, named by their inventory
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: a kill reaches what it started too
        )
    except OSError as exc:
        raise ProgramFailed(f"cannot run it: {exc.strerror or exc}") from None
    stdout, stderr = process.stdout, process.stderr
    if stdout is None or stderr is None:  # pragma: no cover - PIPE was asked for both
        process.kill()
        raise ProgramFailed("cannot read its output")
    deadline = time.monotonic() + timeout
    out = bytearray()
    err = bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ, out)
        selector.register(stderr, selectors.EVENT_READ, err)
        try:
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProgramFailed(f"did not finish in {timeout:.0f} s")
                for key, _ in selector.select(min(left, 1.0)):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        selector.unregister(key.fileobj)
                        continue
                    buffer: bytearray = key.data
                    buffer += chunk
                    if buffer is out and len(out) > max_output:
                        raise ProgramFailed(f"printed more than {max_output} bytes")
                    if buffer is err and len(err) > STDERR_TAIL:
                        del err[:-STDERR_TAIL]
            returncode = process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise ProgramFailed(f"did not finish in {timeout:.0f} s") from None
        finally:
            if process.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.kill()
                process.wait()
            stdout.close()
            stderr.close()
    return ProgramResult(returncode, bytes(out), err.decode("utf-8", "replace").strip())
