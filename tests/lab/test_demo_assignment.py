"""Threshold-aware assignment end to end: ``kmsadmin demo`` with 30 and 26 clients on 2 KMS hosts ends
with every client activated, and ``kmsadmin plan`` shows the per-host counts the rollout then produced.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lab]

ROOT = Path(__file__).resolve().parents[2]


def kmsadmin(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmsadmin", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


@pytest.mark.parametrize("clients", [30, 26])
def test_demo_activates_every_client_and_plan_predicts_the_pins(tmp_path: Path, clients: int) -> None:
    out = tmp_path / "demo"
    demo = kmsadmin("demo", "--clients", str(clients), "--kms-hosts", "2", "--out", str(out))
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    hosts = [h for h in report["hosts"] if h["role"] == "client"]
    assert len(hosts) == clients
    assert all(h["state"]["license_status"] == 1 for h in hosts), [
        (h["host"], h["state"].get("license_status_name")) for h in hosts if h["state"]["license_status"] != 1
    ]
    pinned = Counter(h["state"]["kms_machine"] for h in hosts)

    plan = kmsadmin("plan", "-i", str(out / "inventory.yml"), "--json")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    per_host = json.loads(plan.stdout)["per_host"]
    fqdn = {"kms01": "kms01.lab.test", "kms02": "kms02.lab.test"}
    assert {fqdn[r["host"]]: r["clients"] for r in per_host if r["clients"]} == dict(pinned)
    assert [(r["host"], r["clients"], r["needed"]) for r in per_host] == [
        ("kms01", clients, 25),
        ("kms02", 0, 25),
    ]
    text = kmsadmin("plan", "-i", str(out / "inventory.yml"))
    assert f"kms01: {clients} client(s) pinned by the rollout, count {clients} of 25 needed: reachable" in (
        text.stdout
    )
    assert "WARNING host-unused: kms02 gets no clients" in text.stdout
