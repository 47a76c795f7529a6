"""Fixtures for the lab wire tests: a tiny script engine and started lab servers.

The engine does not interpret PowerShell. It answers every script with one JSON line naming the host,
the channel and the script's first line, and it understands a few directive lines so tests can ask
for errors, exceptions, exit codes and slow scripts.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from kmsadmin.lab.api import EndpointConfig, ScriptOutput, Via
from kmsadmin.lab.server import LabServer

PASSWORD = "Lab-Passw0rd!"
USER = "labadmin"


class EchoEngine:
    """``#lab:error TEXT`` adds an error record, ``#lab:raise`` raises, ``#lab:rc N`` sets the exit code,
    ``#lab:sleep S`` sleeps (bounded by ``release``), ``#lab:lines N`` prints N extra lines."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Via, int]] = []
        self.release = threading.Event()
        self._lock = threading.Lock()

    def run_script(self, host: str, script: str, *, via: Via) -> ScriptOutput:
        with self._lock:
            self.calls.append((host, via, len(script)))
        lines = script.splitlines()
        errors: list[str] = []
        rc = 0
        extra: list[str] = []
        for line in lines:
            directive, _, arg = line.partition(" ")
            if directive == "#lab:error":
                errors.append(arg)
            elif directive == "#lab:raise":
                raise RuntimeError("the simulated host failed: " + arg)
            elif directive == "#lab:rc":
                rc = int(arg)
            elif directive == "#lab:sleep":
                self.release.wait(float(arg))
            elif directive == "#lab:lines":
                extra += [f"line {i}" for i in range(int(arg))]
        first = lines[0] if lines else ""
        record = {"host": host, "via": via, "first": first, "chars": len(script)}
        return ScriptOutput(
            output=(json.dumps(record, ensure_ascii=False), *extra), errors=tuple(errors), rc=rc
        )


@pytest.fixture
def engine() -> Iterator[EchoEngine]:
    eng = EchoEngine()
    yield eng
    eng.release.set()  # let any sleeping script finish so worker threads drain


LabFactory = Callable[..., LabServer]


@pytest.fixture
def make_lab(engine: EchoEngine) -> Iterator[LabFactory]:
    """Start a :class:`LabServer` over the given endpoint configs; every one is stopped at teardown."""
    started: list[LabServer] = []

    def factory(*hosts: EndpointConfig, **kwargs: object) -> LabServer:
        server = LabServer(engine, hosts, **kwargs)  # type: ignore[arg-type]
        server.start()
        started.append(server)
        return server

    yield factory
    deadline = time.monotonic() + 10
    for server in started:
        server.stop()
    assert time.monotonic() < deadline, "stopping the lab took too long"


@pytest.fixture
def lab(make_lab: LabFactory) -> LabServer:
    """One HTTP host (``web``, NTLM + encryption), one HTTPS host (``sec``), one AllowUnencrypted host."""
    return make_lab(
        EndpointConfig("web"),
        EndpointConfig("sec", tls=True),
        EndpointConfig("open", allow_unencrypted=True),
    )
