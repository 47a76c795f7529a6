"""Activation health against a mixed lab fleet, read by ``kmsadmin status -i`` over real WinRM.

The fleet is built in-process (the shipped site playbook through the lab engine, then the faults a
real fleet collects), saved, served with ``kmsadmin lab up``, and read with the CLI as an admin would:
cloned CMIDs on three clients, a client pinned to a name that does not resolve, one pinned to a live
machine that is not a KMS host, one with 10 days of validity left, one with a 10-hour clock skew, and
an Office client whose KMS host has no Office host key.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from kmsadmin.fleet.inventory import load_inventory
from kmsadmin.fleet.journal import Journal
from kmsadmin.fleet.playbook import load_playbook
from kmsadmin.fleet.rollout import rollout
from kmsadmin.fleet.runner import run_host
from kmsadmin.lab.engine import LabEngine
from kmsadmin.lab.fleet import Fleet
from kmsadmin.lab.model import utc_iso
from kmsadmin.operations.convert_client import ConvertClientArgs
from tests.test_rollout_lab import PLAYBOOKS, LabSessions, make_lab

pytestmark = [pytest.mark.lab]

ROOT = Path(__file__).resolve().parents[2]
OFFICE = "client002"  # the lab interleaves its os-mix: the one Office client comes second
CLONED = ("client003", "client004", "client005")
DEAD_PIN = "client006"
NON_KMS_PIN = "client007"
EXPIRING = "client008"
HEALTHY = "client009"
SKEWED = "client010"  # last: its failure stops the rollout's batches (max_fail_percentage)


def kmsadmin(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmsadmin", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


def build_mixed_fleet(tmp_path: Path) -> Fleet:
    faults = ";".join([*(f"{h}=cloned-cmid" for h in CLONED), f"{SKEWED}=clock-skew:600"])
    fleet, inventory_path = make_lab(
        tmp_path,
        hosts=10,
        kms_hosts=1,
        os_mix="server2022-standard=9,server2022-standard+office2021=1",
        faults=faults,
    )
    sessions = LabSessions(LabEngine(fleet))
    inventory = load_inventory(inventory_path)
    site = load_playbook(PLAYBOOKS / "site.yml")
    limit = f"all:!{DEAD_PIN}:!{NON_KMS_PIN}"
    for resume in (False, True):
        rollout(
            site,
            inventory,
            session_factory_for=sessions.factory_for,
            forks=4,
            limit=limit,
            resume=resume,
            retry_delay=0.0,
            env={},
            journal=Journal(tmp_path / "site.journal"),
        )
    # pinned by hand to a name that resolves nowhere, and to a live machine that is no KMS host
    for host, target in ((DEAD_PIN, "deadkms.lab.test"), (NON_KMS_PIN, "client001.lab.test")):
        args = ConvertClientArgs(target="host", kms_host=target, force=True)
        report = run_host("convert-client", host, args, sessions.factory_for({}))
        assert report.status == "failed" and report.error is not None
        assert report.error["hresult"] == "0xC004F074", report.error
    # a client that stopped renewing 170 days ago: 10 days of validity left
    with fleet.lock(EXPIRING):
        product = fleet.hosts[EXPIRING].keyed()[0]
        assert product.license_status == 1
        product.grace_expires = utc_iso(fleet.now() + timedelta(days=10))
        fleet.save(EXPIRING)
    return fleet


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Fleet, Path]]:
    fleet = build_mixed_fleet(tmp_path)
    state, inventory = tmp_path / "lab", tmp_path / "served.yml"
    up = kmsadmin("lab", "up", "--state-dir", str(state), "--inventory-out", str(inventory), "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield fleet, inventory
    finally:
        kmsadmin("lab", "down", "--state-dir", str(state), timeout=60)


def _findings(doc: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [f for f in doc["findings"] if f["kind"] == kind]


def _activation(doc: dict[str, Any], host: str) -> dict[str, Any]:
    entry = next(h for h in doc["hosts"] if h["host"] == host)
    activation: dict[str, Any] = entry["state"]["activation"]
    return activation


def test_mixed_fleet_status_names_each_problem_with_its_fix(
    served: tuple[Fleet, Path], tmp_path: Path
) -> None:
    _, inventory = served
    metrics = tmp_path / "kmsadmin.prom"
    proc = kmsadmin(
        "status",
        "-i",
        str(inventory),
        "--json",
        "--fail-on",
        "not-activated,expiring:30,waiting",
        "--metrics",
        str(metrics),
    )
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)

    cloned = _findings(doc, "duplicate-cmid")
    assert len(cloned) == 1 and sorted(cloned[0]["hosts"]) == list(CLONED)
    assert "slmgr /rearm" in cloned[0]["fix"] and "SkipRearm" in cloned[0]["fix"]

    targets = {f["hosts"][0]: f for f in _findings(doc, "kms-target")}
    assert set(targets) == {DEAD_PIN, NON_KMS_PIN}
    assert "deadkms.lab.test:1688" in targets[DEAD_PIN]["message"]
    assert "client001.lab.test:1688" in targets[NON_KMS_PIN]["message"]
    for host in (DEAD_PIN, NON_KMS_PIN):
        activation = _activation(doc, host)
        assert activation["activated"] is False
        assert activation["reasons"] == ["0xC004F074"]
        windows = activation["products"][0]
        assert windows["reason"]["symbol"] == "SL_E_VL_BINDING_SERVICE_UNAVAILABLE"
        assert "_vlmcs._tcp" in windows["reason"]["fix"]
        assert activation["kms_host"]["pinned"].endswith(":1688")

    expiring = _findings(doc, "expiring")
    assert EXPIRING in {h for f in expiring for h in f["hosts"]}
    mine = _activation(doc, EXPIRING)
    assert mine["activated"] is True and 9.5 <= mine["days_left"] <= 10.0
    assert "expiring" in mine["states"]
    # the last activation is read back from the remaining validity (180 days) [PLAN24]
    assert mine["products"][0]["last_activated"] is not None

    skew = _findings(doc, "clock-skew")
    assert [f["hosts"] for f in skew] == [[SKEWED]]
    assert skew[0]["hresult"] == "0xC004F06C" and "NTP" in skew[0]["fix"]
    assert _activation(doc, SKEWED)["reasons"] == ["0xC004F06C"]

    office = _findings(doc, "office-no-host-key")
    assert [f["hosts"] for f in office] == [[OFFICE]]
    assert "kms01" in office[0]["message"] and "Volume License Pack" in office[0]["fix"]

    healthy = _activation(doc, HEALTHY)
    assert healthy["activated"] is True and healthy["findings"] == []
    assert healthy["kms_host"]["uses"] == "kms01.lab.test:1688"
    assert doc["summary"]["findings"]["duplicate-cmid"] == 1

    # --fail-on passes when no host is in the named state
    quiet = kmsadmin("status", "-i", str(inventory), "--json", "--fail-on", "waiting", "--only", "waiting")
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)["hosts"] == []

    # the OpenMetrics file parses with prometheus_client's own parser
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    activated = {s.labels["host"]: s.value for s in families["kmsadmin_host_activated"].samples}
    assert activated[DEAD_PIN] == 0 and activated[HEALTHY] == 1
    counts = {s.labels["host"]: s.value for s in families["kmsadmin_kms_current_count"].samples}
    required = {s.labels["host"]: s.value for s in families["kmsadmin_kms_required_count"].samples}
    assert counts["kms01"] >= 5 and required["kms01"] == 5
    kinds = {s.labels["kind"]: s.value for s in families["kmsadmin_findings"].samples}
    assert kinds["duplicate-cmid"] == 1 and kinds["kms-target"] == 2 and kinds["clock-skew"] == 1
    days = [
        s.value
        for s in families["kmsadmin_product_days_left"].samples
        if s.labels["host"] == EXPIRING and s.labels["family"] == "windows"
    ]
    assert len(days) == 1 and 9.5 <= days[0] <= 10.0


def test_only_lists_the_selected_hosts_with_their_reason(served: tuple[Fleet, Path]) -> None:
    _, inventory = served
    proc = kmsadmin("status", "-i", str(inventory), "--only", "not-activated")
    assert proc.returncode == 0, proc.stderr
    listed = {line.split("\t")[0] for line in proc.stdout.splitlines() if "\t" in line}
    assert {DEAD_PIN, NON_KMS_PIN, SKEWED, OFFICE} <= listed
    assert HEALTHY not in listed and EXPIRING not in listed
    assert "0xC004F074" in proc.stdout and "[duplicate-cmid]" in proc.stdout
    bad = kmsadmin("status", "-i", str(inventory), "--only", "broken")
    assert bad.returncode == 2 and "not-activated" in bad.stderr
