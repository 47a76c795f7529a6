"""A lab fleet served in-process (``LabServer`` + ``LabEngine`` on loopback) for one test."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from kmsadmin.lab.api import EndpointConfig
from kmsadmin.lab.engine import LabEngine
from kmsadmin.lab.fleet import Fleet
from kmsadmin.lab.server import LabServer


@contextmanager
def served_fleet(
    fleet: Fleet, state_dir: Path, configs: Sequence[EndpointConfig] | None = None
) -> Iterator[LabServer]:
    """Serve ``fleet`` (every host over HTTPS with the fleet's NTLM account unless ``configs`` says
    otherwise), certificates under ``state_dir``; stopped after."""
    if configs is None:
        configs = [
            EndpointConfig(name=n, username=fleet.username, password=fleet.password, tls=True)
            for n in fleet.names()
        ]
    server = LabServer(LabEngine(fleet), configs, state_dir=state_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
