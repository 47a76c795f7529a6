"""CLI contract tests: keys, compat, --dry-run, input validation and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kmsadmin.cli.app import app

runner = CliRunner()
HOST_KEY = "BCDFG-HJKMP-QRTVW-XY234-6789B"


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_keys_list_json_has_the_contract_fields() -> None:
    code, out, _ = invoke("keys", "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert isinstance(rows, list) and len(rows) == 151
    for row in rows:
        assert {"product", "edition", "gvlk", "family", "source"} <= row.keys()
        assert row["family"] in ("windows", "office")
        assert "Microsoft" in row["source"]
    code, out, _ = invoke("keys", "list", "--family", "office", "--json")
    assert {r["family"] for r in json.loads(out)} == {"office"}


@pytest.mark.parametrize(
    ("key", "code", "is_gvlk"),
    [
        ("W269N-WFGWX-YVC9B-4J6C9-T83GX", 0, True),  # Windows 11/10 Pro GVLK
        ("w269n-wfgwx-yvc9b-4j6c9-t83gx", 0, True),  # case does not matter
        ("NR2B6-YBFTG-JFMKK-FGDKF-GX2DJ", 1, False),  # seed 003 "Dostęp 2019": a retail Access key
        ("BCDFG-HJKMP-QRTVW-XY234-6789B", 1, False),  # well-formed, in no table
    ],
)
def test_keys_check_exit_codes(key: str, code: int, is_gvlk: bool) -> None:
    exit_code, out, _ = invoke("keys", "check", key, "--json")
    assert exit_code == code
    data = json.loads(out)
    assert {"key", "is_gvlk", "product", "edition"} <= data.keys()
    assert data["is_gvlk"] is is_gvlk


@pytest.mark.parametrize(
    "key", ["W269N-WFGWX", "W269N-WFGWX-YVC9B-4J6C9-T83GA", "", "W269N—WFGWX—YVC9B—4J6C9"]
)
def test_keys_check_malformed_is_exit_2_with_one_line(key: str) -> None:
    code, out, err = invoke("keys", "check", key, "--json")
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "product key" in err


def test_keys_show() -> None:
    code, out, _ = invoke("keys", "show", "windows-server-2022-standard", "--json")
    assert code == 0
    assert json.loads(out)["gvlk"] == "VDYBN-27WPP-V4HQT-9VMD4-VMK7H"
    assert invoke("keys", "show", "windows-server-1999-bogus")[0] == 2


@pytest.mark.parametrize(
    ("host_os", "csvlk", "ok", "kb"),
    [
        ("Windows Server 2019", "Windows Server 2025", True, "KB5034768"),
        ("Windows Server 2016", "Windows Server 2025", False, None),
        ("Windows Server 2016", "Windows Server 2022", True, "KB5003638"),
        ("Windows Server 2022", "Windows Server 2022", True, None),
        ("Windows Server 2022", "Windows 10", False, None),
    ],
)
def test_compat_answers(host_os: str, csvlk: str, ok: bool, kb: str | None) -> None:
    code, out, _ = invoke("compat", "--host-os", host_os, "--csvlk", csvlk, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["host_ok"] is ok
    assert data["activates"]
    kbs = [u["kb"] for u in data["required_updates"]]
    if kb:
        assert kb in kbs
    elif ok:
        assert kbs == []


def test_setup_host_dry_run_prints_every_step_without_the_key(tmp_path: Path) -> None:
    key_file = tmp_path / "host.key"
    key_file.write_text(HOST_KEY + "\n")
    code, out, _ = invoke(
        "setup-host",
        "kms01.contoso.com",
        "--dry-run",
        "--host-key-file",
        str(key_file),
        "--csvlk",
        "Windows Server 2022",
        "--no-dns-publishing",
        "--kms-port",
        "1690",
    )
    assert code == 0
    headers = [line for line in out.splitlines() if line.startswith("# kmsadmin-step:")]
    assert [h.split(": ")[1] for h in headers] == [
        "install-feature/1",
        "firewall/1",
        "install-host-key/1",
        "activate/1",
        "kms-host-settings/1",
    ]
    assert HOST_KEY not in out
    assert HOST_KEY[:-5] not in out
    assert "*****-*****-*****-*****-6789B" in out


def test_setup_host_dry_run_slmgr_format(tmp_path: Path) -> None:
    code, out, _ = invoke(
        "setup-host", "kms01", "--dry-run", "--format", "slmgr", env={"KMSADMIN_HOST_KEY": HOST_KEY}
    )
    assert code == 0
    assert "cscript //NoLogo" in out and "slmgr.vbs" in out
    assert HOST_KEY not in out


def test_convert_client_dry_run_json() -> None:
    code, out, _ = invoke(
        "convert-client",
        "pc1",
        "--dry-run",
        "--edition",
        "windows-11-enterprise",
        "--kms-host",
        "kms01.contoso.com:1690",
        "--json",
    )
    assert code == 0
    doc = json.loads(out)
    assert [s["step"] for s in doc["scripts"]] == ["install-gvlk", "set-kms-host", "activate"]
    assert "$KmsHost = 'kms01.contoso.com'" in doc["scripts"][1]["script"]
    assert "$KmsPort = '1690'" in doc["scripts"][1]["script"]


def test_convert_client_refuses_non_gvlk_without_force() -> None:
    code, _, err = invoke("convert-client", "pc1", "--dry-run", "--key", "NR2B6-YBFTG-JFMKK-FGDKF-GX2DJ")
    assert code == 2
    assert "not a GVLK" in err and "NR2B6-YBFTG" not in err
    code, out, _ = invoke(
        "convert-client", "pc1", "--dry-run", "--key", "NR2B6-YBFTG-JFMKK-FGDKF-GX2DJ", "--force"
    )
    assert code == 0
    assert "NR2B6-YBFTG" not in out and "GX2DJ" in out


def test_convert_client_force_installs_an_unlisted_well_formed_key() -> None:
    """A key outside Microsoft's tables (a MAK, say) passed with --force is installed, shown masked."""
    code, _, err = invoke("keys", "check", HOST_KEY)
    assert code == 1, err  # well-formed, not a GVLK
    code, out, err = invoke(
        "convert-client", "pc1", "--dry-run", "--key", HOST_KEY.lower(), "--force", "--json"
    )
    assert code == 0, out + err
    doc = json.loads(out)
    assert [s["step"] for s in doc["scripts"]] == ["install-gvlk", "activate"]
    assert HOST_KEY not in out and HOST_KEY[:-5] not in out
    assert "*****-*****-*****-*****-6789B" in doc["scripts"][0]["script"]
    from kmsadmin.operations.convert_client import ConvertClientArgs, plan_convert_client

    plan = plan_convert_client("pc1", None, ConvertClientArgs(key=HOST_KEY, force=True))
    assert plan.steps[0].ref.secrets["product_key"].value == HOST_KEY  # the key itself, not its mask


@pytest.mark.parametrize(
    "args",
    [
        ["setup-host", "kms01;Stop-Computer", "--dry-run"],
        ["setup-host", "kms01", "--dry-run", "--activation-interval", "14"],
        ["setup-host", "kms01", "--dry-run", "--renewal-interval", "43201"],
        ["setup-host", "kms01", "--dry-run", "--firewall-profiles", "Domain,Evil"],
        ["setup-host", "kms01", "--dry-run", "--csvlk", "Windows Server 1999"],
        [
            "convert-client",
            "pc1",
            "--dry-run",
            "--edition",
            "windows-11-pro",
            "--kms-host",
            "$(Stop-Computer)",
        ],
        [
            "convert-client",
            "pc1",
            "--dry-run",
            "--edition",
            "windows-11-pro",
            "--lookup-domain",
            "'; rm -r; '",
        ],
        ["convert-client", "pc1", "--dry-run", "--edition", "windows-11-pro", "--kms-host", "kms:0"],
        ["convert-client", "pc1", "--dry-run", "--format", "vbs", "--edition", "windows-11-pro"],
    ],
)
def test_invalid_values_are_rejected_before_rendering(args: list[str]) -> None:
    code, out, err = invoke(*args, env={"KMSADMIN_HOST_KEY": HOST_KEY})
    assert code == 2, out + err
    assert "kmsadmin-step" not in out
    assert err.startswith("kmsadmin: error:")
