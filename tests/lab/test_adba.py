"""Active Directory-based activation end to end: the real CLI over real WinRM against the lab's forest.

The lab runs with ``--forest``: its domain is an AD forest and every host a member. kms01 is the domain
member the ``kmsadmin adba`` commands run on; it is not a KMS host until the test makes it one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.labproc import lab_process
from tests.lab.test_remote_ops import Lab, _kmsadmin

pytestmark = [pytest.mark.lab, pytest.mark.slow]

AO = "Lab Windows Server 2022"


@pytest.fixture
def forest_lab(tmp_path: Path) -> Iterator[Lab]:
    options = (
        "--forest",
        "--hosts",
        "10",
        "--kms-hosts",
        "1",
        "--os-mix",
        "win11-enterprise=5,server2022-standard=5",
    )
    with lab_process(tmp_path, *options) as (state, inventory):
        yield Lab(state, inventory)


def _status(lab: Lab, tmp_path: Path, name: str, pattern: str = "clients") -> dict[str, dict[str, object]]:
    report = tmp_path / f"{name}.json"
    code, out, err = lab.run("status", pattern, "--report-json", str(report))
    assert code in (0, 1), out + err
    return {h["host"]: h["state"] for h in json.loads(report.read_text())["hosts"]}


def _objects(lab: Lab) -> list[dict[str, object]]:
    code, out, err = lab.run("adba", "list", "kms01", "--json")
    assert code == 0, out + err
    return list(json.loads(out)["state"]["objects"])


def test_adba_forest_clients_fallback_and_act_type(forest_lab: Lab, tmp_path: Path) -> None:
    lab = forest_lab
    key_file = lab.host_key("windows-server-2022", tmp_path)
    servers = sorted(
        h for h, v in lab.hosts().items() if "Server" in str(v.get("kmsadmin_os")) and h != "kms01"
    )
    win11 = sorted(h for h, v in lab.hosts().items() if "Windows 11" in str(v.get("kmsadmin_os")))
    assert len(servers) == 5 and len(win11) == 5
    assert _objects(lab) == []

    # online forest activation: one activation object, idempotent
    code, out, err = lab.run("adba", "activate", "kms01", "--host-key-file", str(key_file), "--name", AO)
    assert code == 0, out + err
    assert f"activation object {AO}: key ending {lab.key_text('windows-server-2022')[-5:]}" in out
    code, out, err = lab.run(
        "adba", "activate", "kms01", "--host-key-file", str(key_file), "--name", AO, "--json"
    )
    assert code == 0 and json.loads(out)["changes"] == 0, out + err
    [obj] = _objects(lab)
    assert obj["name"] == AO
    assert (
        obj["dn"]
        == f"CN={AO},CN=Activation Objects,CN=Microsoft SPP,CN=Services,CN=Configuration,DC=lab,DC=test"
    )

    # five Windows 11 clients (and five servers) activate through it: no KMS host, no count threshold
    code, out, err = lab.run("convert-client", "clients", "--json")
    assert code == 0, out + err
    before = _status(lab, tmp_path, "before")
    for host in win11 + servers:
        state = before[host]
        assert (state["license_status_name"], state["activation_method"], state["activated_by"]) == (
            "Licensed",
            "ADBA",
            AO,
        ), host
        assert 179 <= float(str(state["days_left"])) <= 180  # valid for 180 days
    kms01 = _status(lab, tmp_path, "kms01", "kms01")["kms01"]
    assert kms01["is_kms_host"] is False

    # a KMS host appears and the clients are pointed at it: AD still comes first while the object exists
    code, out, err = lab.run(
        "setup-host", "kms01", "--host-key-file", str(key_file), "--csvlk", "Windows Server 2022"
    )
    assert code == 0, out + err
    code, out, err = lab.run("convert-client", "clients", "--kms-host", "kms01.lab.test", "--json")
    assert code == 0, out + err
    assert {s["activation_method"] for s in _status(lab, tmp_path, "pinned").values()} == {"ADBA"}

    # the object is deleted: at their next licensing check the clients fall back to KMS, as Windows does.
    code, out, err = lab.run("adba", "delete", "kms01", AO)
    assert code == 0, out + err
    assert _objects(lab) == []
    _status(lab, tmp_path, "fallback1")  # every client asks the KMS host once: the count rises to 10
    after = _status(lab, tmp_path, "fallback2")
    for host in servers:  # servers activate from a count of 5 [PLAN24]
        assert (after[host]["activation_method"], after[host]["activated_by"]) == ("KMS", "kms01.lab.test"), (
            host
        )
    for host in win11:  # Windows clients need 25: still licensed by their last AD activation, renewal refused
        state = after[host]
        assert (state["license_status_name"], state["activation_method"]) == ("Licensed", "ADBA"), host
        assert state["renewal_hresult"] == "0xC004F038", host

    # deleting a missing object: the HRESULT and the fix
    code, out, err = lab.run("adba", "delete", "kms01", AO, "--json")
    assert code == 1, out + err
    error = json.loads(out)["error"]
    assert error["step"] == "adba-delete" and error["hresult"] == "0x80072030"
    assert "kmsadmin adba list" in error["remediation"]

    # the server fleet moved from KMS to ADBA with --act-type ad, and back with --act-type kms
    code, out, err = lab.run("adba", "activate", "kms01", "--host-key-file", str(key_file), "--name", AO)
    assert code == 0, out + err
    code, out, err = lab.run("convert-client", "servers", "--act-type", "ad", "--json")
    assert code == 0, out + err
    moved = _status(lab, tmp_path, "to-adba", "servers")
    assert {(s["activation_method"], s["activation_type"]) for s in moved.values()} == {("ADBA", "AD")}
    code, out, err = lab.run("convert-client", "servers", "--act-type", "kms", "--json")
    assert code == 0, out + err
    back = _status(lab, tmp_path, "to-kms", "servers")
    assert {(s["activation_method"], s["activation_type"], s["activated_by"]) for s in back.values()} == {
        ("KMS", "KMS", "kms01.lab.test")
    }
    doc = json.loads((tmp_path / "to-kms.json").read_text())
    assert doc["summary"]["by_method"] == {"KMS": 5}
    assert json.loads((tmp_path / "to-adba.json").read_text())["summary"]["by_method"] == {"ADBA": 5}

    secret = lab.key_text("windows-server-2022")
    assert secret not in "\n".join(lab.transcript)


def test_adba_by_phone(forest_lab: Lab, tmp_path: Path) -> None:
    lab = forest_lab
    key_file = lab.host_key("windows-server-2025", tmp_path)
    code, out, err = lab.run(
        "adba", "activate", "kms01", "--host-key-file", str(key_file), "--activation", "phone"
    )
    assert code == 0, out + err
    iid = re.search(r"Installation ID: (\d{63})", out)
    assert iid, out
    assert _objects(lab) == []  # nothing created yet
    cid = _kmsadmin("lab", "confirmation-id", iid.group(1)).stdout.strip()

    wrong = "1" * 48
    code, out, err = lab.run(
        "adba",
        "activate",
        "kms01",
        "--host-key-file",
        str(key_file),
        "--activation",
        "phone",
        "--confirmation-id",
        wrong,
        "--json",
    )
    assert code == 1 and json.loads(out)["error"]["hresult"] == "0xC004F031", out + err

    code, out, err = lab.run(
        "adba",
        "activate",
        "kms01",
        "--host-key-file",
        str(key_file),
        "--name",
        "Phone AO",
        "--activation",
        "phone",
        "--confirmation-id",
        cid,
    )
    assert code == 0, out + err
    [obj] = _objects(lab)
    assert obj["name"] == "Phone AO" and obj["partial_key"] == lab.key_text("windows-server-2025")[-5:]

    # a Windows 11 domain member activates from it (the Server 2025 key group activates Windows 11 [PLAN24])
    code, out, err = lab.run("convert-client", "client001", "--json")
    assert code == 0, out + err
    state = json.loads(out)["state"]
    assert (state["activation_method"], state["activated_by"]) == ("ADBA", "Phone AO")


def test_plan_recommends_adba_and_the_adba_playbook_rolls_it_out(forest_lab: Lab, tmp_path: Path) -> None:
    lab = forest_lab
    code, out, err = lab.run("plan", "--json")
    plan = json.loads(out)
    assert plan["activation"]["counts"] == {"ADBA": 10, "KMS": 0, "MAK": 0}, out + err
    assert plan["activation"]["recommended"].startswith("ADBA: every volume client")

    key_file = lab.host_key("windows-server-2025", tmp_path)
    code, out, err = lab.run("adba", "activate", "kms01", "--host-key-file", str(key_file), "--name", AO)
    assert code == 0, out + err
    playbook = Path(__file__).parents[2] / "playbooks" / "adba.yml"
    journal, report = tmp_path / "adba.journal", tmp_path / "adba.json"
    code, out, err = lab.run(
        "rollout", str(playbook), "--journal", str(journal), "--report-json", str(report), "--no-progress"
    )
    assert code == 0, out + err
    doc = json.loads(report.read_text())
    assert doc["summary"]["by_method"] == {"ADBA": 10}
    for host in doc["hosts"]:
        assert [s["step"] for s in host["steps"]] == ["act-type", "activate"], host
        assert (host["state"]["activation_method"], host["state"]["activation_type"]) == ("ADBA", "AD")
    assert len(journal.read_text().splitlines()) >= 10
    secret = lab.key_text("windows-server-2025")
    for text in [*lab.transcript, journal.read_text(), report.read_text()]:
        assert secret not in text
