"""``kmsadmin lab up --detach`` / ``status`` / ``down`` as real subprocesses, and the inventory they write."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kmsadmin.cli.lab import lab_app
from kmsadmin.lab.kms import confirmation_id_for, format_confirmation_id

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]


def _kmsadmin(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "kmsadmin", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        stat_file = Path(f"/proc/{pid}/stat")
        try:
            if stat_file.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except OSError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def test_up_status_down(tmp_path: Path) -> None:
    state = tmp_path / "state"
    inventory = tmp_path / "inv.yml"
    pid: int | None = None
    try:
        up = _kmsadmin(
            "lab",
            "up",
            "--hosts",
            "30",
            "--kms-hosts",
            "1",
            "--state-dir",
            str(state),
            "--inventory-out",
            str(inventory),
            "--detach",
            "--faults",
            "client003=wrong-password",
        )
        runtime_file = state / "runtime.json"
        if runtime_file.exists():
            pid = int(json.loads(runtime_file.read_text())["pid"])
        assert up.returncode == 0, up.stderr
        assert up.stdout.strip() == str(inventory)
        assert pid is not None and pid != os.getpid()
        assert stat.S_IMODE(inventory.stat().st_mode) == 0o600

        data: dict[str, Any] = yaml.safe_load(inventory.read_text())
        groups = data["all"]["children"]
        assert set(groups) == {"kms_hosts", "clients", "servers"}
        kms_hosts = groups["kms_hosts"]["hosts"]
        clients = groups["clients"]["hosts"]
        assert list(kms_hosts) == ["kms01"] and len(clients) == 30
        assert set(groups["servers"]["hosts"]) <= set(clients) and groups["servers"]["hosts"]
        password = json.loads((state / "credentials.json").read_text())["password"]
        kms01 = kms_hosts["kms01"]
        assert kms01["ansible_host"] == "127.0.0.1" and kms01["ansible_connection"] == "psrp"
        assert kms01["ansible_psrp_protocol"] == "https" and kms01["ansible_psrp_auth"] == "ntlm"
        assert kms01["ansible_winrm_transport"] == "ntlm" and kms01["ansible_winrm_scheme"] == "https"
        assert Path(kms01["ansible_psrp_ca_cert"]).is_file()
        assert kms01["ansible_password"] == password and kms01["ansible_user"] == "labadmin"
        assert kms01["kmsadmin_role"] == "kms_host" and kms01["kmsadmin_fqdn"] == "kms01.lab.test"
        key_file = Path(kms01["kmsadmin_lab_host_key_file"])
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        host_keys = json.loads((state / "host-keys.json").read_text())
        assert key_file.read_text().strip() == host_keys[kms01["kmsadmin_lab_host_key_group"]]
        assert all(c["kmsadmin_role"] == "client" for c in clients.values())
        assert clients["client001"]["kmsadmin_fqdn"] == "client001.lab.test"
        ports = {h["ansible_port"] for h in [*kms_hosts.values(), *clients.values()]}
        assert len(ports) == 31

        status = _kmsadmin("lab", "status", "--state-dir", str(state), "--json", timeout=60)
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["running"] is True and report["pid"] == pid
        assert len(report["hosts"]) == 31
        first = report["hosts"][0]
        assert first["name"] == "kms01" and first["os"] == "Microsoft Windows Server 2022 Standard"
        assert {h["license_status"] for h in report["hosts"]} == {2}
        text = _kmsadmin("lab", "status", "--state-dir", str(state), timeout=60)
        assert "running" in text.stdout and "client030" in text.stdout

        again = _kmsadmin("lab", "up", "--state-dir", str(state), "--detach", timeout=60)
        assert again.returncode == 1 and "already running" in again.stderr

        down = _kmsadmin("lab", "down", "--state-dir", str(state), timeout=60)
        assert down.returncode == 0, down.stderr
        assert _gone(pid, 20)
        assert not (state / "runtime.json").exists()
        after = json.loads(_kmsadmin("lab", "status", "--state-dir", str(state), "--json", timeout=60).stdout)
        assert after["running"] is False and len(after["hosts"]) == 31
    finally:
        if pid is not None and not _gone(pid, 0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _gone(pid, 20):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def test_confirmation_id_command() -> None:
    iid = "0123456789" * 6 + "012"
    result = CliRunner().invoke(lab_app, ["confirmation-id", iid])
    assert result.exit_code == 0
    assert result.stdout.strip() == format_confirmation_id(confirmation_id_for(iid))
    assert CliRunner().invoke(lab_app, ["confirmation-id", "123"]).exit_code == 2


def test_lab_cli_import_is_lazy() -> None:
    code = (
        "import sys, kmsadmin.cli.lab as m; m.lab_app; "
        "print(sorted(n for n in sys.modules if n.startswith('kmsadmin.lab')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert out.stdout.strip() == "[]"


def test_up_refuses_a_base_port_whose_hosts_run_past_65535(tmp_path: Path) -> None:
    """--base-port P binds P + index per host: the last one must still be a port. Refused with exit 2
    before anything is created, started or detached, naming the options and the highest base port."""
    state = tmp_path / "state"
    proc = _kmsadmin(
        "lab", "up", "--base-port", "65530", "--hosts", "10", "--state-dir", str(state), "--detach"
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--base-port 65530 with 11 hosts (--hosts 10 and --kms-hosts 1)" in proc.stderr
    assert "65530-65540, past 65535" in proc.stderr
    assert "the highest --base-port for 11 hosts is 65525" in proc.stderr
    assert not state.exists()  # no lab created, no child started

    result = CliRunner().invoke(
        lab_app, ["up", "--base-port", "65527", "--hosts", "9", "--kms-hosts", "1", "--state-dir", str(state)]
    )
    assert result.exit_code == 2 and "the highest --base-port for 10 hosts is 65526" in result.stderr
    assert not state.exists()


def test_up_counts_the_hosts_of_the_lab_already_in_the_state_dir(tmp_path: Path) -> None:
    from kmsadmin.lab.fleet import Fleet

    state = tmp_path / "state"
    Fleet.create(state, hosts=3, kms_hosts=1)
    before = sorted(p.name for p in state.iterdir())
    result = CliRunner().invoke(lab_app, ["up", "--base-port", "65533", "--state-dir", str(state)])
    assert result.exit_code == 2, result.output
    assert f"with 4 hosts (the lab in {state.resolve()})" in result.stderr
    assert "the highest --base-port for 4 hosts is 65532" in result.stderr
    assert sorted(p.name for p in state.iterdir()) == before  # nothing written: no runtime, no log


def test_base_port_span_boundaries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from kmsadmin.cli.lab import _check_port_span

    empty = tmp_path / "none"
    _check_port_span(65526, empty, hosts=9, kms_hosts=1, reset=False)  # 65526..65535: fits
    _check_port_span(65525, empty, hosts=None, kms_hosts=None, reset=False)  # 10 + 1 by default
    with pytest.raises(typer.Exit) as refused:
        _check_port_span(65526, empty, hosts=None, kms_hosts=None, reset=False)
    assert refused.value.exit_code == 2
    with pytest.raises(typer.Exit):
        _check_port_span(1, empty, hosts=70000, kms_hosts=0, reset=False)
    assert "no --base-port fits 70000 hosts" in capsys.readouterr().err
