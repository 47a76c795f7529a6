"""setup-host and convert-client end to end: the real CLI over real WinRM (PSRP and WinRS) against the lab.

The lab runs as a separate process (`kmsadmin lab up --detach`), exactly as a user starts it; the
commands run in-process through typer's runner so every byte they print can be checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kmsadmin.cli.app import app

pytestmark = [pytest.mark.lab, pytest.mark.slow]

runner = CliRunner()


@dataclass
class Lab:
    state: Path
    inventory: Path
    transcript: list[str] = field(default_factory=list)

    def run(self, *args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, [*args, "-i", str(self.inventory)])
        self.transcript.extend([result.stdout, result.stderr])
        return result.exit_code, result.stdout, result.stderr

    def host_key(self, group: str, tmp: Path) -> Path:
        keys = json.loads((self.state / "host-keys.json").read_text())
        path = tmp / f"{group}.key"
        path.write_text(keys[group]["key"] if isinstance(keys[group], dict) else keys[group])
        return path

    def key_text(self, group: str) -> str:
        keys = json.loads((self.state / "host-keys.json").read_text())
        return str(keys[group]["key"] if isinstance(keys[group], dict) else keys[group])

    def hosts(self) -> dict[str, dict[str, object]]:
        doc = yaml.safe_load(self.inventory.read_text())
        out: dict[str, dict[str, object]] = {}
        for group in doc["all"]["children"].values():
            for name, hostvars in (group.get("hosts") or {}).items():
                out.setdefault(name, {}).update(hostvars or {})
        return out


def _kmsadmin(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmsadmin", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def start_lab(tmp_path: Path) -> Iterator[object]:
    started: list[Path] = []

    def start(hosts: int, os_mix: str, faults: str = "") -> Lab:
        state = tmp_path / f"lab{len(started)}"
        inventory = tmp_path / f"inv{len(started)}.yml"
        args = [
            "lab",
            "up",
            "--hosts",
            str(hosts),
            "--kms-hosts",
            "1",
            "--os-mix",
            os_mix,
            "--state-dir",
            str(state),
            "--inventory-out",
            str(inventory),
            "--detach",
        ]
        if faults:
            args += ["--faults", faults]
        proc = _kmsadmin(*args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        started.append(state)
        return Lab(state, inventory)

    yield start
    for state in started:
        _kmsadmin("lab", "down", "--state-dir", str(state))


@pytest.mark.parametrize("transport", ["psrp", "winrs"])
def test_kms_host_then_25_windows_11_clients(start_lab: object, tmp_path: Path, transport: str) -> None:
    lab: Lab = start_lab(25, "win11-enterprise=25")  # type: ignore[operator]
    key_file = lab.host_key("windows-server-2022", tmp_path)
    setup = [
        "setup-host",
        "kms01",
        "--host-key-file",
        str(key_file),
        "--csvlk",
        "Windows Server 2022",
        "--transport",
        transport,
        "--json",
    ]

    code, out, err = lab.run(*setup)
    assert code == 0, out + err
    report = json.loads(out)
    assert [s["step"] for s in report["steps"]] == [
        "install-feature",
        "firewall",
        "install-host-key",
        "activate",
    ]
    assert report["changes"] == 4
    assert report["state"]["is_kms_host"] is True
    assert report["state"]["license_status_name"] == "Licensed"

    clients = sorted(h for h in lab.hosts() if h.startswith("client"))
    assert len(clients) == 25
    for number, client in enumerate(clients[:24], start=1):
        code, out, err = lab.run(
            "convert-client", client, "--kms-host", "kms01.lab.test", "--transport", transport
        )
        assert code == 1, out + err  # configured, but not activated yet
        assert "0xC004F038" in err
        assert f"count {number}, needs 25" in err, err  # the message says why: the host's count so far
        assert "fix:" in err
        # shown as waiting for the KMS count, not as a failure, with what happens next
        assert f"{client}: convert-client waiting (" in out, out
        assert "activate: WAITING" in out and "FAILED" not in out
        assert f"waiting {client}: activate: " in err and f"error {client}" not in err, err
        assert "not activated yet: the KMS host has not counted enough clients yet" in err
        assert "activation happens by itself" in err and "Windows retries every 2 hours" in err

    code, out, err = lab.run(
        "convert-client", clients[24], "--kms-host", "kms01.lab.test", "--transport", transport, "--json"
    )
    assert code == 0, out + err
    assert json.loads(out)["state"]["license_status_name"] == "Licensed"

    # The first 24 activate now that the host has seen 25 distinct clients.
    code, out, err = lab.run(
        "convert-client", "clients", "--kms-host", "kms01.lab.test", "--transport", transport, "--json"
    )
    assert code == 0, out + err
    reports = json.loads(out)
    assert {r["state"]["license_status_name"] for r in reports} == {"Licensed"}
    assert all(180 - 1 <= r["state"]["days_left"] <= 180 for r in reports)
    assert sum(r["changes"] for r in reports) == 24

    # Second runs change nothing.
    code, out, err = lab.run(
        "convert-client", "clients", "--kms-host", "kms01.lab.test", "--transport", transport, "--json"
    )
    assert code == 0, out + err
    assert sum(r["changes"] for r in json.loads(out)) == 0
    code, out, err = lab.run(*setup)
    assert code == 0, out + err
    assert json.loads(out)["changes"] == 0
    assert json.loads(out)["state"]["current_count"] == 25

    # --check agrees: nothing pending.
    code, out, err = lab.run(
        "convert-client", "clients", "--kms-host", "kms01.lab.test", "--check", "--transport", transport
    )
    assert code == 0, out + err

    # The host key never appears in anything the commands printed, nor in the lab's log.
    secret = lab.key_text("windows-server-2022")
    produced = "\n".join(lab.transcript) + (lab.state / "lab.log").read_text(errors="replace")
    assert secret not in produced
    assert secret[:-5] not in produced
    assert secret.replace("-", "") not in produced


def test_failures_are_clear_and_change_nothing(start_lab: object, tmp_path: Path) -> None:
    lab: Lab = start_lab(4, "win11-pro=2,server2016-standard=2", "client001=wrong-password;client003=hang")  # type: ignore[operator]
    hosts = lab.hosts()

    # Wrong password: authentication failure naming host and fix, exit 1.
    code, out, err = lab.run("convert-client", "client001", "--kms-host", "kms01.lab.test")
    assert code == 1
    assert "client001" in err and "fix:" in err
    assert "password" in err.lower() or "credential" in err.lower()

    # Unreachable host: a closed port.
    code, out, err = lab.run("status", "client001", "--winrm-port", "1", "--json")
    assert code == 1, out + err
    [unreachable] = json.loads(out)["hosts"]  # with -i, status prints the fleet report
    assert unreachable["error"]["host"] == "client001"
    assert "refused" in unreachable["error"]["message"].lower()
    assert "WinRM listens on 1" in unreachable["error"]["remediation"]

    # A 2025 host key on Windows Server 2016: preflight refuses, nothing changes.
    server2016 = next(h for h, v in hosts.items() if "2016" in str(v.get("kmsadmin_os")) and h != "client003")
    host_file = lab.state / "hosts" / f"{server2016}.json"
    before = host_file.read_bytes()
    key_file = lab.host_key("windows-server-2025", tmp_path)
    code, out, err = lab.run(
        "setup-host", server2016, "--host-key-file", str(key_file), "--csvlk", "Windows Server 2025"
    )
    assert code == 1
    assert server2016 in err and "preflight:host-key-group" in err
    assert "0xC004F050" in err and "fix:" in err
    assert host_file.read_bytes() == before  # the simulated host is exactly as it was

    # Without --csvlk the preflight cannot know the group: the lab (as Windows) refuses the key with 0xC004F050.
    code, out, err = lab.run("setup-host", server2016, "--host-key-file", str(key_file), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["error"]["step"] == "install-host-key"
    assert report["error"]["hresult"] == "0xC004F050"
    assert report["error"]["remediation"]

    # A hung host: bounded by the per-host deadline.
    started = time.monotonic()
    code, out, err = lab.run("convert-client", "client003", "--kms-host", "kms01.lab.test", "--deadline", "3")
    assert code == 1
    assert time.monotonic() - started < 15
    assert "client003" in err and ("no answer" in err or "timed out" in err.lower())

    secret = lab.key_text("windows-server-2025")
    assert secret not in "\n".join(lab.transcript) + (lab.state / "lab.log").read_text(errors="replace")


def test_doctor_reports_each_check(start_lab: object) -> None:
    lab: Lab = start_lab(2, "win11-pro=2", "client002=access-denied")  # type: ignore[operator]
    code, out, err = lab.run("doctor", "client001", "--json")
    assert code == 0, out + err
    checks = {c["check"]: c for c in json.loads(out)["checks"]}
    assert list(checks) == ["tcp", "auth", "encryption", "admin", "uac-remote-restrictions", "clock-skew"]
    assert all(c["ok"] for c in checks.values()), checks
    assert checks["encryption"]["detail"].startswith("TLS")

    code, out, err = lab.run("doctor", "client002", "--json")
    assert code == 1
    failed = [c for c in json.loads(out)["checks"] if not c["ok"]]
    assert failed[0]["check"] == "uac-remote-restrictions"
    assert "951016" in failed[0]["fix"]

    code, out, err = lab.run("doctor", "client001", "--winrm-port", "1", "--json")
    assert code == 1
    assert json.loads(out)["checks"][0]["check"] == "tcp" and not json.loads(out)["checks"][0]["ok"]
