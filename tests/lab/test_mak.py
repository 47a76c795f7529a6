"""MAK clients end to end: the real CLI over real WinRM against the lab's Microsoft activation service.

A MAK is a secret: it reaches kmsadmin through a file, ``KMSADMIN_MAK`` or a prompt, and no output,
report, lab file or log ever holds more than its last five characters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kmsadmin.cli.app import app
from tests.lab.labproc import lab_process
from tests.lab.test_remote_ops import Lab, _kmsadmin

pytestmark = [pytest.mark.lab, pytest.mark.slow]


@dataclass
class MakLab(Lab):
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(app, [*args, "-i", str(self.inventory)], env=self.env)
        self.transcript.extend([result.stdout, result.stderr])
        return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def mak_lab(tmp_path: Path) -> Iterator[MakLab]:
    options = (
        "--hosts",
        "4",
        "--kms-hosts",
        "0",
        "--os-mix",
        "win11-pro=3,win10-enterprise=1",
        "--mak-limit",
        "3",
    )
    with lab_process(tmp_path, *options) as (state, inventory):
        yield MakLab(state, inventory)


def _maks(lab: MakLab) -> dict[str, dict[str, object]]:
    proc = _kmsadmin("lab", "status", "--state-dir", str(lab.state), "--json")
    assert proc.returncode == 0, proc.stderr
    return {m["name"]: m for m in json.loads(proc.stdout)["maks"]}


def test_mak_online_phone_exhausted_and_never_shown(mak_lab: MakLab, tmp_path: Path) -> None:
    lab = mak_lab
    keys = json.loads((lab.state / "mak-keys.json").read_text())
    mak = keys["windows-client"]
    mak_file = tmp_path / "mak.txt"
    mak_file.write_text(mak + "\n")
    assert _maks(lab)["windows-client"]["remaining"] == 3

    # online: installed, activated, counted once by the activation service
    code, out, err = lab.run("convert-client", "client001", "--mak-file", str(mak_file), "--json")
    assert code == 0, out + err
    report = json.loads(out)
    assert [s["step"] for s in report["steps"]] == ["install-gvlk", "activate"]
    assert report["state"]["license_status_name"] == "Licensed"
    assert report["state"]["partial_key"] == mak[-5:]
    assert report["state"]["activation_method"] == "MAK"
    assert _maks(lab)["windows-client"]["remaining"] == 2
    # idempotent: a second run changes nothing and uses no activation
    code, out, err = lab.run("convert-client", "client001", "--mak-file", str(mak_file), "--json")
    assert code == 0 and json.loads(out)["changes"] == 0, out + err
    assert _maks(lab)["windows-client"]["remaining"] == 2

    # phone: the Installation ID is shown, the Confirmation ID deposited; the MAK comes from the environment
    code, out, err = lab.run("convert-client", "client002", "--method", "mak", "--activation", "phone")
    assert code == 2 and "KMSADMIN_MAK" in err  # no MAK given, no terminal to prompt on
    lab.env = {"KMSADMIN_MAK": mak}
    code, out, err = lab.run("convert-client", "client002", "--method", "mak", "--activation", "phone")
    assert code == 0, out + err
    iid = re.search(r"Installation ID: (\d{63})", out)
    assert iid, out
    proc = _kmsadmin("lab", "confirmation-id", iid.group(1))
    cid = proc.stdout.strip()
    code, out, err = lab.run(
        "convert-client", "client002", "--method", "mak", "--activation", "phone", "--confirmation-id", cid
    )
    assert code == 0, out + err
    assert "phone-deposit: changed" in out and "license: Licensed" in out
    lab.env = {"KMSADMIN_MAK": ""}
    assert _maks(lab)["windows-client"]["remaining"] == 1

    code, out, err = lab.run("convert-client", "client003", "--mak-file", str(mak_file))
    assert code == 0, out + err
    assert _maks(lab)["windows-client"]["remaining"] == 0

    # exhausted: the error names host, step, HRESULT and the fix; the client stays as it was
    code, out, err = lab.run("convert-client", "client004", "--mak-file", str(mak_file), "--json")
    assert code == 1, out + err
    failed = json.loads(out)
    assert failed["error"]["host"] == "client004" and failed["error"]["step"] == "activate"
    assert failed["error"]["hresult"] == "0xC004C020"
    assert "Microsoft Licensing Activation Centers" in failed["error"]["remediation"]
    code, out, err = lab.run("convert-client", "client004", "--mak-file", str(mak_file))
    assert "HRESULT 0xC004C020" in err and "fix:" in err
    assert _maks(lab)["windows-client"]["remaining"] == 0

    # a blocked MAK: 0xC004C003
    blocked = tmp_path / "blocked.txt"
    blocked.write_text(keys["windows-client-blocked"])
    code, out, err = lab.run("convert-client", "client004", "--mak-file", str(blocked), "--json")
    assert code == 1 and json.loads(out)["error"]["hresult"] == "0xC004C003", out

    # reports of the fleet
    report_json, report_html = tmp_path / "status.json", tmp_path / "status.html"
    code, out, err = lab.run("status", "--report-json", str(report_json), "--report-html", str(report_html))
    assert code in (0, 1), out + err

    # the MAK never appears beyond its last five characters: outputs, reports, lab state and log
    texts = list(lab.transcript)
    texts += [report_json.read_text(), report_html.read_text()]
    for path in lab.state.rglob("*"):
        if path.is_file() and path.name != "mak-keys.json":
            texts.append(path.read_text(errors="replace"))
    for secret in (mak, keys["windows-client-blocked"]):
        for text in texts:
            assert secret not in text
            assert secret[:-5] not in text
    assert any(mak[-5:] in text for text in texts)


def test_mak_input_is_checked_before_any_host_is_contacted(tmp_path: Path) -> None:
    runner = CliRunner()
    gvlk = tmp_path / "gvlk.txt"
    gvlk.write_text("W269N-WFGWX-YVC9B-4J6C9-T83GX")  # Windows 11/10 Pro GVLK
    cases = [
        (["--mak-file", str(gvlk)], "is a GVLK"),
        (["--method", "kms", "--mak-file", str(gvlk)], "goes with --method mak"),
        (["--mak-file", str(tmp_path / "missing")], "cannot read"),
        (["--method", "mak", "--kms-host", "kms01"], "drop --kms-host"),
        (["--activation", "phone"], "--method mak"),
    ]
    for extra, why in cases:
        result = runner.invoke(app, ["convert-client", "pc1", *extra], env={"KMSADMIN_MAK": ""})
        assert result.exit_code == 2, result.stdout + result.stderr
        assert why in result.stderr
    malformed = tmp_path / "bad.txt"
    malformed.write_text("BCDFG-HJKMP-QRTVW-XY234-6789")
    result = runner.invoke(app, ["convert-client", "pc1", "--mak-file", str(malformed)])
    assert result.exit_code == 2 and "BCDFG-HJKMP" not in result.stderr


def test_a_mak_is_refused_in_a_playbook_without_being_shown(tmp_path: Path) -> None:
    """Playbooks and journals carry no MAK: a non-GVLK key in a playbook is refused, shown masked."""
    mak = "BCDFG-HJKMP-QRTVW-XY234-6789B"
    playbook = tmp_path / "mak.yml"
    playbook.write_text(
        f"- name: MAK\n  hosts: clients\n  steps:\n    - convert-client:\n        key: {mak}\n"
    )
    inventory = tmp_path / "inv.yml"
    inventory.write_text("all:\n  children:\n    clients:\n      hosts:\n        pc1: {}\n")
    result = CliRunner().invoke(app, ["rollout", str(playbook), "-i", str(inventory), "--check"])
    assert result.exit_code == 4, result.stdout + result.stderr
    assert "not a public KMS client key" in result.stderr and "6789B" in result.stderr
    assert mak not in result.stdout + result.stderr and mak[:-5] not in result.stdout + result.stderr
