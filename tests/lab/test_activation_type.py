"""Activation type (slmgr /act-type) and activation method in status, against the lab over real WinRM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.lab import test_remote_ops
from tests.lab.test_remote_ops import Lab

#: the lab fixture of the setup-host / convert-client tests (a lab started as users start it)
start_lab = test_remote_ops.start_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def _states(lab: Lab, tmp_path: Path, name: str) -> dict[str, dict[str, object]]:
    report = tmp_path / f"{name}.json"
    code, out, err = lab.run(
        "status",
        "clients",
        "--report-json",
        str(report),
        "--report-csv",
        str(tmp_path / "s.csv"),
        "--report-html",
        str(tmp_path / "s.html"),
    )
    assert code in (0, 1), out + err
    doc = json.loads(report.read_text())
    return {h["host"]: h["state"] for h in doc["hosts"]}


def test_kms_clients_show_their_method_and_act_type_restricts_them(start_lab: object, tmp_path: Path) -> None:
    lab: Lab = start_lab(5, "server2022-standard=5")  # type: ignore[operator]
    key_file = lab.host_key("windows-server-2022", tmp_path)
    code, out, err = lab.run(
        "setup-host", "kms01", "--host-key-file", str(key_file), "--csvlk", "Windows Server 2022"
    )
    assert code == 0, out + err
    # servers activate from a count of 5 [PLAN24]: the first run counts them, the second activates all
    lab.run("convert-client", "clients", "--kms-host", "kms01.lab.test")
    code, out, err = lab.run("convert-client", "clients", "--kms-host", "kms01.lab.test", "--json")
    assert code == 0, out + err

    states = _states(lab, tmp_path, "kms")
    for state in states.values():
        assert state["activation_method"] == "KMS"
        assert state["activated_by"] == "kms01.lab.test"
        assert state["activation_type"] == "All"
    assert "KMS,kms01.lab.test" in (tmp_path / "s.csv").read_text()
    assert "<td>KMS (kms01.lab.test)</td>" in (tmp_path / "s.html").read_text()
    code, out, err = lab.run("status", "client001", "client002")
    assert "activated by: KMS 2" in out, out

    # Restricted to AD activation with no activation object in the forest: the client keeps its KMS
    # activation, the forced re-activation fails with the HRESULT and the fix.
    code, out, err = lab.run("convert-client", "client001", "--act-type", "ad", "--json")
    assert code == 1, out + err
    report = json.loads(out)
    assert [s["step"] for s in report["steps"]] == ["act-type", "activate"]
    assert report["error"]["step"] == "activate" and report["error"]["hresult"] == "0x80072030"
    assert "kmsadmin adba activate" in report["error"]["remediation"]
    assert _states(lab, tmp_path, "ad")["client001"]["activation_type"] == "AD"

    # and back: every activation type allowed, KMS activates it again
    code, out, err = lab.run("convert-client", "client001", "--act-type", "all", "--json")
    assert code == 0, out + err
    state = json.loads(out)["state"]
    assert (state["activation_type"], state["activation_method"]) == ("All", "KMS")
    # idempotent
    code, out, err = lab.run("convert-client", "client001", "--act-type", "all", "--json")
    assert code == 0 and json.loads(out)["changes"] == 0, out + err
