"""setup-host and the firewall scope Windows ships: SPPSVC-In-TCP accepts only the local subnet.

The lab's KMS host carries both shipped rules (microsoft.md §h): ``SPPSVC-In-TCP`` for Private+Public
scoped to LocalSubnet, ``SPPSVC-In-TCP-NoScope`` for Domain with no scope. Its clients sit in another
subnet (192.168.10.0/24, the KMS host on the lab LAN 10.0.0.0/16). The real CLI runs over real WinRM
(PSRP over HTTPS) against the lab's WS-Management server in this process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kmsadmin.cli.app import app
from kmsadmin.lab.fleet import Fleet
from kmsadmin.lab.inventory import write_inventory
from tests.lab.served import served_fleet

pytestmark = pytest.mark.lab


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Fleet, Path]]:
    fleet = Fleet.create(tmp_path / "lab", hosts=2, kms_hosts=1, os_mix="server2022-standard=2")
    for number, name in enumerate(fleet.names("client"), start=20):
        fleet.hosts[name].address = f"192.168.10.{number}"
        fleet.save(name)
    with served_fleet(fleet, tmp_path / "tls") as server:
        ports = {n: server.port(n) for n in fleet.names()}
        yield fleet, write_inventory(tmp_path / "lab.yml", fleet, ports, tls=True, ca_cert=server.ca_path)


def run(inventory: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [*args, "-i", str(inventory)])
    return result.exit_code, result.stdout, result.stderr


def setup_host(inventory: Path, key_file: Path, *extra: str) -> dict[str, Any]:
    code, out, err = run(inventory, "setup-host", "kms01", "--host-key-file", str(key_file), "--json", *extra)
    assert code == 0, out + err
    report: dict[str, Any] = json.loads(out)
    return report


def test_allow_from_widens_the_shipped_local_subnet_scope(lab: tuple[Fleet, Path], tmp_path: Path) -> None:
    fleet, inventory = lab
    group = fleet.meta.kms_groups["kms01"]
    key_file = tmp_path / "host.key"
    key_file.write_text(fleet.host_keys.keys[group])

    first = setup_host(inventory, key_file)
    state = first["state"]
    # the effective profile and scope of both shipped rules: the one enabled keeps LocalSubnet
    assert state["firewall"] == [
        {
            "name": "SPPSVC-In-TCP",
            "enabled": True,
            "profiles": ["Domain", "Private"],
            "remote_addresses": ["LocalSubnet"],
        },
        {
            "name": "SPPSVC-In-TCP-NoScope",
            "enabled": False,
            "profiles": ["Domain"],
            "remote_addresses": ["Any"],
        },
    ]
    plan = first["plan"]
    assert any("accepts only LocalSubnet" in note and "--allow-from" in note for note in plan["notes"])
    # a client in another subnet cannot reach the host: no KMS host could be contacted
    code, out, err = run(inventory, "convert-client", "client001", "--kms-host", "kms01.lab.test")
    assert code == 1 and "0xC004F074" in err, out + err

    widened = setup_host(inventory, key_file, "--allow-from", "192.168.0.0/16,10.20.0.0/255.255.0.0")
    assert widened["changes"] == 1
    assert [s["step"] for s in widened["steps"]] == ["firewall"]
    firewall = widened["state"]["firewall"][0]
    # Windows keeps IPv4 subnets in mask form (the lab reports them so); both forms compare equal
    assert firewall["remote_addresses"] == ["LocalSubnet", "192.168.0.0/255.255.0.0", "10.20.0.0/255.255.0.0"]

    again = setup_host(inventory, key_file, "--allow-from", "192.168.10.0/24,10.20.0.0/16")
    assert again["changes"] == 0 and again["steps"] == []

    code, out, err = run(inventory, "status", "kms01")
    assert code == 0, out + err
    assert (
        "kms01: firewall SPPSVC-In-TCP: enabled, profiles Domain,Private, remote addresses "
        "LocalSubnet,192.168.0.0/255.255.0.0,10.20.0.0/255.255.0.0" in out
    )
    assert "kms01: firewall SPPSVC-In-TCP-NoScope: disabled, profiles Domain, remote addresses Any" in out

    # now the client's request reaches the host (which counts it: 5 servers needed, 0xC004F038)
    code, out, err = run(inventory, "convert-client", "client001", "--kms-host", "kms01.lab.test")
    assert "0xC004F074" not in err and "0xC004F038" in err, out + err
