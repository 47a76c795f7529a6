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
from kmsadmin.lab.fleet import Fleet
from kmsadmin.lab.pwsh import syntax_errors
from kmsadmin.lab.server import LabServer
from kmsadmin.render import render
from kmsadmin.transports.base import STEP_END, batch_script, batch_scripts
from kmsadmin.values import ScriptRef, Secret
from tests.lab.served import served_fleet

pytestmark = pytest.mark.lab


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Fleet, LabServer]]:
    fleet = Fleet.create(tmp_path / "lab", hosts=5, kms_hosts=1, os_mix="server2022-standard=5")
    with served_fleet(fleet, tmp_path / "tls") as server:
        yield fleet, server


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


def test_a_batch_sent_as_one_script_runs_its_steps_in_order_and_stops_after_a_failed_one(
    served: tuple[Fleet, LabServer],
) -> None:
    """What a best-practice Ansible ``raw`` task sends (benchmarks/rollout.py): the batch as one
    script's text, with ansible-core's ``exit $LASTEXITCODE`` after it."""
    fleet, server = served
    app = catalog.WINDOWS_APP_ID
    pin = render(
        ScriptRef("set-kms-host", {"kms_host": "kms01.lab.test", "kms_port": 1688, "activation_id": ""})
    )
    activate = render(ScriptRef("activate", {"application_id": app, "activation_id": "", "force": True}))
    facts = render(ScriptRef("facts"))
    steps = [pin.text, activate.text, facts.text]
    text = batch_script(steps)
    assert syntax_errors(text) == []
    assert batch_scripts(text + "\nexit $LASTEXITCODE") == steps
    # anything else around or inside the loop is not a batch: the lab runs it as one (unknown) script
    assert batch_scripts("Remove-Item C:\\ -Recurse\n" + text) is None
    assert batch_scripts(text.replace("break", "Remove-Item C:\\ -Recurse", 1)) is None
    assert batch_scripts(text.replace("','", "';Remove-Item C:\\;'", 1)) is None

    def invoke(pool: RunspacePool, script: str) -> tuple[list[dict[str, Any]], int]:
        ps = PowerShell(pool)
        ps.add_script(script + "\nexit $LASTEXITCODE")
        lines = [str(o) for o in ps.invoke()]
        assert not ps.had_errors
        results = [json.loads(line) for line in lines if line.startswith("{")]
        return results, sum(1 for line in lines if line.startswith(STEP_END))

    with _wsman(fleet, server, "client001") as wsman, RunspacePool(wsman) as pool:
        # the KMS host is not activated yet: activate fails, so the read-back does not run
        results, ends = invoke(pool, text)
        assert [r["step"] for r in results] == ["set-kms-host", "activate"] and ends == 2
        assert results[0]["changed"] is True and results[1]["error"]["hresult"].startswith("0x")
        results, ends = invoke(pool, batch_script([pin.text, facts.text]))
    assert [r["step"] for r in results] == ["set-kms-host", "facts"] and ends == 2
    assert results[0]["changed"] is False
    assert HostFacts.model_validate(results[1]["data"]).computer_name == "CLIENT001"
