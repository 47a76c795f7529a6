"""One lab server, 200 hosts on 200 ports, reached concurrently by real pypsrp clients."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pypsrp.powershell import PowerShell, RunspacePool

from kmsadmin.lab.api import EndpointConfig
from kmsadmin.lab.server import LabServer
from tests.lab.conftest import EchoEngine, LabFactory
from tests.lab.test_wire import wsman_for

pytestmark = [pytest.mark.lab, pytest.mark.slow]

HOSTS = 200


def test_two_hundred_hosts_from_one_server(make_lab: LabFactory, engine: EchoEngine) -> None:
    threads_before = threading.active_count()
    configs = [EndpointConfig(f"host{i:03d}", tls=i % 4 == 0) for i in range(HOSTS)]
    lab = make_lab(*configs, max_connections=64)
    # Idle hosts cost sockets, not threads: one accept loop serves every listener.
    assert threading.active_count() - threads_before <= 2
    ports = {ep.port for ep in lab.endpoints.values()}
    assert len(ports) == HOSTS

    def run(name: str) -> dict[str, object]:
        auth = "basic" if lab.endpoint(name).tls else "ntlm"
        with wsman_for(lab, name, auth=auth, read_timeout=20) as wsman, RunspacePool(wsman) as pool:
            ps = PowerShell(pool)
            ps.add_script(f"# facts for {name}")
            return dict(json.loads(ps.invoke()[0]))

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(run, sorted(lab.endpoints)))
    elapsed = time.monotonic() - started

    assert [r["host"] for r in results] == sorted(lab.endpoints)
    assert all(r["first"] == f"# facts for {r['host']}" for r in results)
    assert len(engine.calls) == HOSTS
    assert elapsed < 30, f"200 hosts took {elapsed:.1f}s"
    # Connections end with their clients; handler threads do not pile up.
    deadline = time.monotonic() + 5
    while threading.active_count() - threads_before > 40 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert threading.active_count() - threads_before <= 40


def test_server_with_a_thousand_idle_hosts_starts_and_stops(engine: EchoEngine) -> None:
    threads_before = threading.active_count()
    server = LabServer(engine, [EndpointConfig(f"idle{i:04d}") for i in range(1000)])
    started = time.monotonic()
    with server:
        assert len(server.endpoints) == 1000
        assert threading.active_count() - threads_before <= 2
    assert time.monotonic() - started < 15
