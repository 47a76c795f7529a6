"""``kmsadmin status HOST...`` (hosts named on the command line, no -i) end to end against the lab.

The lab runs as a separate process (``kmsadmin lab up --detach``) and kmsadmin as another one, over
real WinRM (HTTPS, the lab's CA, NTLM). Each lab host has its own port on 127.0.0.1, so a command
line reaches one lab host as ``127.0.0.1 --winrm-port PORT``; 127.0.0.2 on that port refuses the
connection, a second host that fails.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from defusedxml import ElementTree as ET

from tests.lab.labproc import lab_process

pytestmark = [pytest.mark.lab, pytest.mark.slow]

HUNG = "client002"


@dataclass(frozen=True)
class RunningLab:
    state: Path
    inventory: Path
    ports: dict[str, int]
    ca_cert: str
    user: str
    password: str

    def status(
        self, host_port: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``kmsadmin status ARGS`` against the lab host ``host_port``'s listener, password from the environment."""
        command = [
            sys.executable, "-m", "kmsadmin", "status", *args, "--winrm-port", str(self.ports[host_port]),
            "--ca-bundle", self.ca_cert, "--user", self.user, "--auth", "ntlm",
        ]  # fmt: skip
        environment = {**os.environ, "KMSADMIN_PASSWORD": self.password, **(env or {})}
        environment.pop("ANSIBLE_INVENTORY", None)
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, env=environment
        )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    """1 KMS host and 2 clients; the second client never answers (``hang``)."""
    root = tmp_path_factory.mktemp("status-hosts")
    with lab_process(root, "--hosts", "2", "--kms-hosts", "1", "--faults", f"{HUNG}=hang") as (state, inv):
        runtime = json.loads((state / "runtime.json").read_text())
        creds = json.loads((state / "credentials.json").read_text())
        yield RunningLab(
            state,
            inv,
            dict(runtime["ports"]),
            str(runtime["ca_cert"]),
            str(creds.get("username", "labadmin")),
            str(creds["password"]),
        )


def test_status_hosts_writes_every_report_format(lab: RunningLab, tmp_path: Path) -> None:
    out = tmp_path / "reports"  # not there yet: created, as with -i
    paths = {
        "json": out / "status.json",
        "html": out / "status.html",
        "csv": out / "status.csv",
        "junit": out / "status.junit.xml",
    }
    proc = lab.status(
        "client001", "127.0.0.1", "127.0.0.2",
        "--report-json", str(paths["json"]), "--report-html", str(paths["html"]),
        "--report-csv", str(paths["csv"]), "--junit", str(paths["junit"]),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr  # 127.0.0.2 refused: that host failed
    for path in paths.values():
        assert path.is_file() and f"report: {path}" in proc.stdout, (path, proc.stdout)
    assert not list(out.glob(".*tmp*")) and len(list(out.iterdir())) == 4  # renamed whole, no leftovers

    document = json.loads(paths["json"].read_text())
    assert document["kind"] == "status" and document["inventory"] is None
    hosts = {h["host"]: h for h in document["hosts"]}
    assert set(hosts) == {"127.0.0.1", "127.0.0.2"}
    good, bad = hosts["127.0.0.1"], hosts["127.0.0.2"]
    assert good["status"] == "ok" and good["error"] is None
    assert good["state"]["edition"] and good["state"]["license_status_name"]
    assert bad["status"] == "failed" and "127.0.0.2" in bad["error"]["message"]
    assert document["summary"]["ok"] == 1 and document["summary"]["failed"] == 1
    assert "findings" in document and "findings" in document["summary"]

    rows = {r["host"]: r for r in csv.DictReader(paths["csv"].read_text(encoding="utf-8").splitlines())}
    assert rows["127.0.0.1"]["status"] == "ok"
    assert rows["127.0.0.1"]["edition"] == good["state"]["edition"]
    assert rows["127.0.0.2"]["status"] == "failed" and rows["127.0.0.2"]["error_step"] == bad["error"]["step"]

    cases = {c.get("name"): c for c in ET.parse(paths["junit"]).getroot().iter("testcase")}
    assert set(cases) == {"127.0.0.1", "127.0.0.2"}
    assert cases["127.0.0.1"].find("failure") is None
    assert "status: ok" in (cases["127.0.0.1"].findtext("system-out") or "")
    assert cases["127.0.0.2"].find("failure") is not None

    html = paths["html"].read_text(encoding="utf-8")
    rows_shown = re.findall(r'<tr data-status="(\w+)"><td>([^<]+)</td>', html)
    shown = {host: status for status, host in rows_shown}
    assert shown == {"127.0.0.1": "ok", "127.0.0.2": "failed"}


def test_status_hosts_json_output_and_a_report_together(lab: RunningLab, tmp_path: Path) -> None:
    """--json keeps its output (the host reports) and stdout stays pure JSON; the report is written."""
    report = tmp_path / "r.json"
    proc = lab.status("kms01", "127.0.0.1", "--json", "--report-json", str(report))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    printed = json.loads(proc.stdout)
    written = json.loads(report.read_text())
    assert [r["host"] for r in printed] == [h["host"] for h in written["hosts"]] == ["127.0.0.1"]
    assert "Server" in printed[0]["state"]["edition"]  # kms01 runs Windows Server
    assert written["hosts"][0]["state"]["edition"] == printed[0]["state"]["edition"]


# ------------------------------------------------------------------------------ deadline resolution
def _hung_inventory(lab: RunningLab, tmp_path: Path, deadline: float | None) -> Path:
    """The lab's inventory with the hung client's ``kmsadmin_deadline`` set (None: not set)."""
    doc = yaml.safe_load(lab.inventory.read_text())
    for group in doc["all"]["children"].values():
        entry = (group.get("hosts") or {}).get(HUNG)
        if entry is not None and deadline is not None:
            entry["kmsadmin_deadline"] = deadline
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _timed_out(proc: subprocess.CompletedProcess[str], host: str, within: float) -> dict[str, object]:
    """The one host report of a ``status --json`` run that ended at its deadline, within ``within`` s."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    printed = json.loads(proc.stdout)
    (report,) = printed["hosts"] if isinstance(printed, dict) else printed
    assert report["host"] == host and report["status"] == "failed", report
    error = report["error"]
    assert isinstance(error, dict) and error["step"] == "facts"
    # the 3 s that won, not the 300 s default or the 600 s another source gave
    assert re.match(r"no answer within (3|2\.\d)s \(its deadline", str(error["message"])), error
    assert float(report["duration"]) < within, report
    return dict(report)


@pytest.mark.parametrize(
    ("args", "env"),
    [((), {"KMSADMIN_DEADLINE": "3"}), (("--deadline", "3"), {"KMSADMIN_DEADLINE": "600"})],
    ids=["environment", "cli-beats-environment"],
)
def test_status_hosts_deadline_from_environment_or_cli(
    lab: RunningLab, args: tuple[str, ...], env: dict[str, str]
) -> None:
    """The hung client answers nothing: the run ends at the deadline that wins, not the default 300 s."""
    proc = lab.status(HUNG, "127.0.0.1", "--json", *args, env=env, timeout=60)
    _timed_out(proc, "127.0.0.1", within=20)


@pytest.mark.parametrize(
    ("host_var", "args", "env"),
    [
        (3, (), {}),
        (None, (), {"KMSADMIN_DEADLINE": "3"}),
        (600, ("--deadline", "3"), {}),
        (3, (), {"KMSADMIN_DEADLINE": "600"}),
    ],
    ids=["host-var", "environment", "cli-beats-host-var", "host-var-beats-environment"],
)
def test_status_inventory_deadline_from_host_vars_environment_or_cli(
    lab: RunningLab, tmp_path: Path, host_var: float | None, args: tuple[str, ...], env: dict[str, str]
) -> None:
    """status -i: the hung client's own deadline (its var, the environment, --deadline) ends it."""
    inventory = _hung_inventory(lab, tmp_path, host_var)
    environment = {**os.environ, **env}
    environment.pop("ANSIBLE_INVENTORY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "kmsadmin", "status", HUNG, "-i", str(inventory), "--json", *args],
        capture_output=True, text=True, timeout=60, check=False, env=environment,
    )  # fmt: skip
    _timed_out(proc, HUNG, within=20)
