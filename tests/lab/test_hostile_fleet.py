"""The attack suite, fleet level: every hostile WS-Man case of tests/hostile.py as one inventory host
next to two healthy lab hosts, through ``kmsadmin status`` and ``kmsadmin rollout`` as processes with
``--deadline 5``.

Per case: the host ends failed with an error naming it and saying what was wrong (a refused answer, a
timeout, a certificate, an HTTP status), never a traceback; the healthy hosts are read and reported ok;
the hostile hosts add at most deadline + 2 s to the run; the process' peak RSS stays bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.hostile import CASES, Authority, HostileServer, inventory_hosts
from tests.lab.labproc import lab_process

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 5.0
#: peak RSS of a status run against 28 hosts; the bombs alone were 800+ MB before the caps
MAX_RSS_MB = 150
HEALTHY = ("client001", "client002")

#: what each error kind's message says
MARKERS = {
    "ProtocolError": "sent an answer kmsadmin refuses",
    "HostTimeout": "no answer within",
}
#: what the cases ending in ConnectionFailed say
CONNECTION_MARKERS = {
    "truncated_xml_short_content_length": "was lost",
    "http_500_with_hostile_xml": "answered HTTP 500",
    "certificate_for_another_name": "certificate",
    "redirect": "answered HTTP 302",
}


def _measured(*args: str) -> tuple[int, str, str, float]:
    """Run kmsadmin; (exit code, stdout, stderr, wall seconds)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kmsadmin", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err, time.monotonic() - started


def _peak_rss(*args: str) -> tuple[int, float, float]:
    """(exit code, wall seconds, peak RSS in MB) of one kmsadmin process, from wait4."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kmsadmin", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.monotonic() - started, usage.ru_maxrss / 1024


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(inventory with the healthy lab hosts only, inventory with every hostile case added)."""
    tmp = tmp_path_factory.mktemp("hostile-fleet")
    with (
        lab_process(tmp, "--hosts", "2", "--kms-hosts", "1", timeout=120) as (_, healthy),
        HostileServer(Authority(tmp)) as server,
    ):
        doc = yaml.safe_load(healthy.read_text())
        doc["all"]["children"]["clients"]["hosts"].update(inventory_hosts(server, "admin", "Hostile-Pw-1"))
        hostile = tmp / "hostile.yml"
        hostile.write_text(yaml.safe_dump(doc))
        yield healthy, hostile


def _check_hosts(report: dict[str, Any], healthy_status: str | tuple[str, ...]) -> None:
    healthy = (healthy_status,) if isinstance(healthy_status, str) else healthy_status
    by_host = {h["host"]: h for h in report["hosts"]}
    assert set(by_host) == set(HEALTHY) | {c.name.replace("_", "-") for c in CASES}
    for name in HEALTHY:
        assert by_host[name]["status"] in healthy, (by_host[name]["error"], by_host[name]["duration"])
        assert by_host[name]["error"] is None or by_host[name]["status"] == "waiting"
    for case in CASES:
        host = case.name.replace("_", "-")
        entry = by_host[host]
        assert entry["status"] == "failed", (case.name, entry)
        error = entry["error"]
        assert error["host"] == host, case.name
        assert error["remediation"], case.name
        marker = MARKERS.get(case.expect) or CONNECTION_MARKERS[case.name]
        assert marker in error["message"], (case.name, error["message"])
        # one host's time is its deadline, whatever the attack
        assert entry["duration"] <= DEADLINE + 0.5, (case.name, entry["duration"])


def test_status_reports_every_attack_per_host_and_the_healthy_hosts(
    fleet: tuple[Path, Path], tmp_path: Path
) -> None:
    healthy, hostile = fleet
    base_code, base_wall, base_rss = _peak_rss("status", "clients", "-i", str(healthy), "--deadline", "5")
    assert base_code == 0

    report = tmp_path / "status.json"
    code, out, err, wall = _measured(
        "status", "clients", "-i", str(hostile), "--deadline", "5", "--report-json", str(report)
    )
    assert code == 1, out + err
    assert "Traceback" not in out + err
    document = json.loads(report.read_text())
    _check_hosts(document, "ok")
    assert document["summary"]["failed"] == len(CASES)
    assert document["summary"]["ok"] == len(HEALTHY)
    # the fleet phase, and the whole process beyond what a healthy run of the same command costs
    assert document["duration"] <= DEADLINE + 2, document["duration"]
    assert wall - base_wall <= DEADLINE + 2, (wall, base_wall)
    for case in CASES:  # the terminal output names each failed host
        assert case.name.replace("_", "-") in out + err, case.name

    code, wall, rss = _peak_rss("status", "clients", "-i", str(hostile), "--deadline", "5", "--json")
    assert code == 1
    assert rss <= MAX_RSS_MB, (rss, base_rss)
    print(
        f"status: {len(CASES)} attacks + {len(HEALTHY)} healthy: {wall:.1f}s (healthy only {base_wall:.1f}s), "
        f"peak RSS {rss:.0f} MB (healthy only {base_rss:.0f} MB)"
    )


def test_rollout_reports_every_attack_per_host_and_the_healthy_hosts(
    fleet: tuple[Path, Path], tmp_path: Path
) -> None:
    _, hostile = fleet
    playbook = tmp_path / "attack.yml"
    playbook.write_text(
        "- name: KMS hosts\n"
        "  hosts: kms_hosts\n"
        "  steps:\n"
        "    - setup-host:\n"
        "        host_key: {file: {var: kmsadmin_lab_host_key_file}}\n"
        "        csvlk: {var: kmsadmin_lab_host_key_group}\n"
        "        activation: online\n"
        "- name: hostile and healthy clients\n"
        "  hosts: clients:!kms_hosts\n"
        "  max_fail_percentage: 100\n"
        "  steps:\n"
        "    - convert-client:\n"
        "        key: auto\n"
        "        kms_host: {group: kms_hosts, var: kmsadmin_fqdn}\n"
        "        office: false\n"
    )
    report, journal = tmp_path / "rollout.json", tmp_path / "rollout.jsonl"
    args = ("rollout", str(playbook), "-i", str(hostile), "--deadline", "5", "--no-progress")
    code, out, err, _ = _measured(*args, "--journal", str(journal), "--report-json", str(report))
    assert code == 1, out + err
    assert "Traceback" not in out + err
    document = json.loads(report.read_text())
    kms = next(h for h in document["hosts"] if h["host"] == "kms01")
    assert kms["status"] in ("changed", "ok"), kms["error"]
    document["hosts"] = [h for h in document["hosts"] if h["host"] != "kms01"]
    # converted, or waiting for the new KMS host's count (0xC004F038): not failed by the attacks
    _check_hosts(document, ("changed", "waiting"))
    # the clients' play is bounded by the deadline whatever the attacks
    assert document["duration"] - kms["duration"] <= DEADLINE + 2, (document["duration"], kms["duration"])
    journaled = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    assert {r.get("host") for r in journaled if r.get("host")} >= {c.name.replace("_", "-") for c in CASES}

    code, wall, rss = _peak_rss(*args, "--check")
    assert code == 1
    assert rss <= MAX_RSS_MB, rss
    print(
        f"rollout: {document['duration']:.1f}s (KMS host {kms['duration']:.1f}s); --check: {wall:.1f}s, peak RSS {rss:.0f} MB"
    )
