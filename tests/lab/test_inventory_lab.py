"""A rollout against the lab driven by an INI inventory whose password lives in an Ansible Vault.

The inventory is what a Windows team keeps: ``hosts`` (INI, per-host addresses and ports),
``group_vars/all/vars.yml`` (connection settings, ``ansible_password: "{{ vault_lab_password }}"``)
and ``group_vars/all/vault.yml`` encrypted whole with the real ``ansible-vault``. kmsadmin runs as a
process with ``--vault-password-file``, as a user runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmsadmin.fleet.inventory import load_inventory
from tests.lab.labproc import lab_process

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "playbooks" / "site.yml"
BIN = Path(sys.executable).parent
VAULT_PASSWORD = "the team's vault password"
#: connection settings every lab host shares: they go to group_vars/all/vars.yml
SHARED = (
    "ansible_user",
    "ansible_connection",
    "ansible_psrp_protocol",
    "ansible_psrp_auth",
    "ansible_winrm_transport",
    "ansible_winrm_scheme",
    "ansible_psrp_cert_validation",
    "ansible_winrm_server_cert_validation",
    "ansible_psrp_ca_cert",
    "ansible_winrm_ca_trust_path",
)


def kmsadmin(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KMSADMIN_", "ANSIBLE_"))}
    return subprocess.run(
        [sys.executable, "-m", "kmsadmin", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
        env=env,
    )


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Path]:
    with lab_process(tmp_path, "--hosts", "6", "--kms-hosts", "1", timeout=600) as (_, inventory):
        yield inventory


def _ini_value(value: object) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return repr(text) if any(c.isspace() for c in text) else text


def write_team_inventory(lab_inventory: Path, out: Path) -> str:
    """The lab's inventory rewritten as INI + group_vars with a vaulted password; returns the password."""
    source = load_inventory(lab_inventory)
    hosts = source.hosts
    password = str(next(iter(hosts.values()))["ansible_password"])
    first = next(iter(hosts.values()))
    lines = [
        "# the lab, as a Windows team keeps it",
        "[all:vars]",
        "kmsadmin_lab=True",
        "kmsadmin_lab_domain=lab.test",
    ]
    for group in ("kms_hosts", "clients"):
        lines.append(f"[{group}]")
        for name in source.groups[group]:
            own = {
                k: v
                for k, v in hosts[name].items()
                if (k not in SHARED and k != "ansible_password" and not k.startswith("kmsadmin_lab"))
                or k in ("kmsadmin_lab_host_key_file", "kmsadmin_lab_host_key_group")
            }
            lines.append(" ".join([name, *(f"{k}={_ini_value(v)}" for k, v in own.items())]))
    lines += ["[windows:children]", "kms_hosts", "clients"]
    out.mkdir(parents=True)
    (out / "hosts").write_text("\n".join(lines) + "\n")
    group_vars = out / "group_vars" / "all"
    group_vars.mkdir(parents=True)
    shared = "".join(f"{k}: {json.dumps(first[k])}\n" for k in SHARED)
    (group_vars / "vars.yml").write_text(shared + 'ansible_password: "{{ vault_lab_password }}"\n')
    vault = group_vars / "vault.yml"
    vault.write_text(f"vault_lab_password: {json.dumps(password)}\n")
    pw = out.parent / "vault-pass.txt"
    pw.write_text(VAULT_PASSWORD + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update({"ANSIBLE_HOME": str(out.parent / ".ansible-home"), "PYTHONWARNINGS": "ignore"})
    subprocess.run(
        [str(BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(pw), str(vault)],
        capture_output=True,
        env=env,
        timeout=120,
        check=True,
    )
    assert vault.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256") and password not in vault.read_text()
    return password


def test_rollout_with_an_ini_inventory_and_a_vaulted_password(lab: Path, tmp_path: Path) -> None:
    team = tmp_path / "inventory"
    password = write_team_inventory(lab, team)
    hosts = {"kms01", *(f"client{n:03d}" for n in range(1, 7))}
    report = tmp_path / "report.json"
    run = kmsadmin(
        "rollout", str(SITE), "-i", str(team / "hosts"), "--vault-password-file", str(tmp_path / "vault-pass.txt"),
        "--no-progress", "--report-json", str(report),
    )  # fmt: skip
    assert report.exists(), run.stdout + run.stderr
    document = json.loads(report.read_text())
    by_host = {h["host"]: h for h in document["hosts"]}
    assert set(by_host) == hosts
    assert by_host["kms01"]["status"] == "changed", by_host["kms01"]
    for name in hosts - {"kms01"}:
        entry = by_host[name]
        # 6 clients are below the KMS host's activation threshold: configured, then refused at
        # activation with 0xC004F038 (waiting), exactly as on Windows; signing in worked for all.
        assert entry["status"] in ("changed", "waiting"), entry
        if entry["status"] == "waiting":
            assert entry["error"]["hresult"] == "0xC004F038", entry
    assert run.returncode in (0, 1)
    everything = run.stdout + run.stderr + report.read_text()
    assert password not in everything and VAULT_PASSWORD not in everything

    # the same inventory with the wrong vault password: exit 2 naming the file, no host contacted
    wrong = tmp_path / "wrong-pass.txt"
    wrong.write_text("not it\n")
    bad = kmsadmin("status", "-i", str(team / "hosts"), "--vault-password-file", str(wrong))
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "vault.yml" in bad.stderr and "wrong password" in bad.stderr and "Traceback" not in bad.stderr

    # the password through ANSIBLE_VAULT_PASSWORD_FILE and ANSIBLE_INVENTORY, no -i: status reads every host
    env_run = subprocess.run(
        [sys.executable, "-m", "kmsadmin", "status", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("KMSADMIN_", "ANSIBLE_"))},
            "ANSIBLE_INVENTORY": str(team / "hosts"),
            "ANSIBLE_VAULT_PASSWORD_FILE": str(tmp_path / "vault-pass.txt"),
        },
    )
    assert password not in env_run.stdout + env_run.stderr
    status = json.loads(env_run.stdout)
    assert status["inventory"] == str(team / "hosts")
    rows = status["hosts"] if isinstance(status, dict) else status
    assert {r["host"] for r in rows} == hosts
    assert all(r["status"] != "failed" for r in rows), env_run.stdout


def test_a_winrm_transport_list_is_tried_in_order(lab: Path, tmp_path: Path) -> None:
    """``ansible_winrm_transport: [kerberos, ntlm]``: the lab has no KDC, so Kerberos is refused and NTLM signs in."""
    team = tmp_path / "inventory"
    write_team_inventory(lab, team)
    vars_file = team / "group_vars" / "all" / "vars.yml"
    lines = [
        line
        for line in vars_file.read_text().splitlines()
        if not line.startswith(("ansible_psrp_auth", "ansible_winrm_transport"))
    ]
    vars_file.write_text("\n".join([*lines, "ansible_winrm_transport: [kerberos, ntlm]"]) + "\n")
    done = kmsadmin(
        "status",
        "-i",
        str(team / "hosts"),
        "--vault-password-file",
        str(tmp_path / "vault-pass.txt"),
        "--json",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(done.stdout)["hosts"]
    assert len(rows) == 7 and all(r["status"] == "ok" for r in rows), done.stdout
    # only NTLM: the same inventory with [kerberos] alone fails at sign-in, every host, with exit 1
    vars_file.write_text("\n".join([*lines, "ansible_winrm_transport: [kerberos]"]) + "\n")
    only = kmsadmin(
        "status",
        "-i",
        str(team / "hosts"),
        "--vault-password-file",
        str(tmp_path / "vault-pass.txt"),
        "--json",
    )
    assert only.returncode == 1, only.stdout + only.stderr
    assert all(r["status"] == "failed" for r in json.loads(only.stdout)["hosts"])
