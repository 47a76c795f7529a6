"""The lab end to end: real pypsrp clients against LabServer + LabEngine over loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from kmsadmin import catalog
from kmsadmin.facts import HostFacts
from kmsadmin.lab.api import EndpointConfig
from kmsadmin.lab.engine import LabEngine
from kmsadmin.lab.fleet import Fleet
from kmsadmin.lab.server import LabServer
from kmsadmin.render import render
from kmsadmin.values import ScriptRef, Secret

pytestmark = pytest.mark.lab


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Fleet, LabServer]]:
    fleet = Fleet.create(tmp_path / "lab", hosts=5, kms_hosts=1, os_mix="server2022-standard=5")
    configs = [
        EndpointConfig(name=n, username=fleet.username, password=fleet.password, tls=True)
        for n in fleet.names()
    ]
    server = LabServer(LabEngine(fleet), configs, state_dir=tmp_path / "tls")
    server.start()
    try:
        yield fleet, server
    finally:
        server.stop()


def _wsman(fleet: Fleet, server: LabServer, name: str) -> WSMan:
    return WSMan(
        "127.0.0.1",
        port=server.port(name),
        username=fleet.username,
        password=fleet.password,
        ssl=True,
        auth="ntlm",
        cert_validation=str(server.ca_path),
        connection_timeout=5,
        read_timeout=30,
        operation_timeout=10,
        no_proxy=True,
    )


def _run(pool: RunspacePool, ref: ScriptRef) -> dict[str, Any]:
    ps = PowerShell(pool)
    ps.add_script(render(ref).text)
    output = ps.invoke()
    assert not ps.had_errors and not ps.streams.error
    assert len(output) == 1
    answer: dict[str, Any] = json.loads(str(output[0]))
    return answer


def test_facts_over_psrp(served: tuple[Fleet, LabServer]) -> None:
    fleet, server = served
    with _wsman(fleet, server, "client001") as wsman, RunspacePool(wsman) as pool:
        answer = _run(pool, ScriptRef("facts"))
    assert answer["step"] == "facts" and answer["changed"] is False
    facts = HostFacts.model_validate(answer["data"])
    assert facts.computer_name == "CLIENT001"
    assert facts.os.edition_id == "ServerStandard"


def test_host_setup_and_client_activation_over_psrp(served: tuple[Fleet, LabServer]) -> None:
    fleet, server = served
    app = catalog.WINDOWS_APP_ID
    key = fleet.host_keys.keys[fleet.meta.kms_groups["kms01"]]
    with _wsman(fleet, server, "kms01") as wsman, RunspacePool(wsman) as pool:
        assert _run(pool, ScriptRef("install-feature", {"include_tools": True}))["changed"] is True
        assert _run(
            pool, ScriptRef("firewall", {"rule_name": "SPPSVC-In-TCP", "profiles": "Domain,Private"})
        )["changed"]
        installed = _run(
            pool, ScriptRef("install-host-key", {"application_id": app}, {"product_key": Secret(key)})
        )
        assert installed["data"]["partial_key"] == key[-5:]
        activated = _run(
            pool, ScriptRef("activate", {"application_id": app, "activation_id": "", "force": False})
        )
        assert activated["data"]["products"][0]["license_status"] == 1
    results = []
    for name in fleet.names("client"):
        with _wsman(fleet, server, name) as wsman, RunspacePool(wsman) as pool:
            _run(
                pool,
                ScriptRef(
                    "set-kms-host", {"kms_host": "kms01.lab.test", "kms_port": 1688, "activation_id": ""}
                ),
            )
            results.append(
                _run(
                    pool, ScriptRef("activate", {"application_id": app, "activation_id": "", "force": False})
                )
            )
    assert [r.get("error", {}).get("hresult") for r in results[:4]] == ["0xC004F038"] * 4
    assert results[4]["data"]["products"][0]["license_status"] == 1
    assert results[4]["data"]["products"][0]["grace_minutes"] == 259200
