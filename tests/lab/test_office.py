"""Office volume activation end to end against the lab: an Office KMS host key on the Windows KMS host,
then `convert-client --office` on clients with Office LTSC 2021 (threshold 5, Office application ID)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kmsadmin import catalog
from kmsadmin.cli.app import app
from tests.lab.labproc import lab_process

pytestmark = [pytest.mark.lab, pytest.mark.slow]

runner = CliRunner()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    options = ("--hosts", "6", "--kms-hosts", "1", "--os-mix", "server2022-standard+office2021=6")
    with lab_process(tmp_path, *options, timeout=120) as started:
        yield started


def run(inventory: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "-i", str(inventory)])
    return result.exit_code, result.stdout, result.stderr


def host_key(state: Path, group: str, tmp: Path) -> Path:
    keys = json.loads((state / "host-keys.json").read_text())
    entry = keys[group]
    path = tmp / f"{group}.key"
    path.write_text(entry["key"] if isinstance(entry, dict) else entry)
    return path


def test_office_kms_host_key_and_office_clients(lab: tuple[Path, Path], tmp_path: Path) -> None:
    state, inventory = lab
    code, out, err = run(
        inventory,
        "setup-host",
        "kms01",
        "--host-key-file",
        str(host_key(state, "windows-server-2022", tmp_path)),
        "--json",
    )
    assert code == 0, out + err

    # The Office host key goes onto the same KMS host; its product is activated under Office's ID.
    office_key = host_key(state, "office-ltsc-2021", tmp_path)
    code, out, err = run(
        inventory,
        "setup-host",
        "kms01",
        "--host-key-file",
        str(office_key),
        "--csvlk",
        "Office LTSC 2021",
        "--json",
    )
    assert code == 0, out + err
    report = json.loads(out)
    assert [s["step"] for s in report["steps"]] == ["install-host-key", "activate"]
    activate = next(s for s in report["plan"]["steps"] if s["step"] == "activate")
    assert activate["params"]["application_id"] == catalog.OFFICE_APP_ID

    # Servers and Office activate from a count of 5: with 6 clients, a few rounds (each client
    # retrying as Windows would) activate everything.
    for _ in range(4):
        code, out, err = run(
            inventory, "convert-client", "clients", "--kms-host", "kms01.lab.test", "--office", "--json"
        )
        if code == 0:
            break
        assert {r["error"]["hresult"] for r in json.loads(out) if r["error"]} == {"0xC004F038"}, out
    assert code == 0, out + err
    gvlk = catalog.find_client_key("Office LTSC Professional Plus 2021").gvlk
    for host in json.loads(out):
        assert host["state"]["license_status_name"] == "Licensed"
        [office] = host["state"]["office"]
        assert office["license_status"] == 1
        assert office["partial_key"] == gvlk[-5:]
        assert office["days_left"] and office["days_left"] > 179

    code, out, err = run(
        inventory, "convert-client", "clients", "--kms-host", "kms01.lab.test", "--office", "--json"
    )
    assert code == 0
    assert sum(h["changes"] for h in json.loads(out)) == 0
    assert office_key.read_text() not in out + err
