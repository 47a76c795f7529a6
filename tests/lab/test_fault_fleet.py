"""Fault fleet durability: 200 lab clients (and 2 KMS hosts), 20 % of them faulty (wrong password, access
denied, not admin, operation timeouts, hang, HTTP 503, connection reset), ``kmsadmin rollout --journal``
SIGKILLed at a random moment and resumed, three times, with the journal's last line cut once as a
crash in the middle of a write would leave it; then resumed until nothing is left.

Every host ends with a definitive status, no host's changing step is recorded twice, no host is lost,
and the cut line is detected and warned about.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab.labproc import lab_process

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 200
KMS_HOSTS = 2
#: fault -> how many clients carry it (40 = 20 % of 200)
FAULTS = {
    "wrong-password": 6,
    "access-denied": 6,
    "not-admin": 6,
    "timeouts:2": 6,
    "hang": 5,
    "503": 5,
    "reset": 6,
}
#: faults the client recovers from within a run (a Receive asked again on a new connection); operation
#: timeouts recover when the host's deadline leaves room for them and end failed (HostTimeout) otherwise;
#: the others always end failed
RECOVERS = {"reset"}
EITHER = {"timeouts:2"}
DEFINITIVE = {"ok", "changed", "failed", "waiting"}
PLAYBOOK = """\
- name: KMS hosts
  hosts: kms_hosts
  serial: 1
  max_fail_percentage: 0
  steps:
    - setup-host:
        host_key:
          - file: {var: kmsadmin_lab_host_key_file}
        csvlk:
          - var: kmsadmin_lab_host_key_group
        activation: online
        firewall_profiles: [Domain, Private]
        include_tools: true
- name: KMS clients
  hosts: clients:!kms_hosts
  max_fail_percentage: 100
  steps:
    - convert-client:
        key: auto
        kms_host: {group: kms_hosts, var: kmsadmin_fqdn}
        office: false
"""


def kmsadmin(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmsadmin", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def fault_plan(seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    names = [f"client{i:03d}" for i in range(1, CLIENTS + 1)]
    chosen = rng.sample(names, sum(FAULTS.values()))
    plan: dict[str, str] = {}
    for fault, count in FAULTS.items():
        for _ in range(count):
            plan[chosen.pop()] = fault
    return plan


@pytest.fixture
def fault_lab(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    faults = fault_plan(18)
    options = ("--hosts", str(CLIENTS), "--kms-hosts", str(KMS_HOSTS))
    plan = ";".join(f"{host}={fault}" for host, fault in faults.items())
    with lab_process(tmp_path, *options, "--faults", plan, timeout=120) as (_, inventory):
        yield inventory, faults


def records(journal: Path) -> list[dict[str, Any]]:
    out = []
    for line in journal.read_bytes().split(b"\n"):
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a cut or damaged line
        if isinstance(record, dict) and record.get("type") == "host":
            out.append(record)
    return out


def start(playbook: Path, inventory: Path, journal: Path, report: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kmsadmin",
            "rollout",
            str(playbook),
            "-i",
            str(inventory),
            "--journal",
            str(journal),
            "--report-json",
            str(report),
            "--no-progress",
            "--deadline",
            "8",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )


def test_sigkill_and_resume_three_times_loses_and_repeats_nothing(
    fault_lab: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    inventory, faults = fault_lab
    doc = yaml.safe_load(inventory.read_text())
    hosts = {h for group in doc["all"]["children"].values() for h in (group.get("hosts") or {})}
    assert len(hosts) == CLIENTS + KMS_HOSTS
    playbook = tmp_path / "fleet.yml"
    playbook.write_text(PLAYBOOK)
    journal, report = tmp_path / "fleet.journal", tmp_path / "report.json"
    rng = random.Random(2026)

    kills, cut_warned, resumed_skips = 0, False, []
    for round_ in range(3):
        before = len(records(journal)) if journal.exists() else 0
        proc = start(playbook, inventory, journal, report, *(("--resume",) if round_ else ()))
        # SIGKILL at a random moment: after a random number of newly finished hosts
        target = before + rng.randint(5, 40)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists() and len(records(journal)) >= target:
                break
            time.sleep(rng.uniform(0.01, 0.2))
        assert proc.poll() is None, "the rollout ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        kills += 1
        if round_ > 0:
            cut_warned = cut_warned or "is cut" in err
        if round_ == 1:
            # a crash in the middle of a write: the last line cut in half
            data = journal.read_bytes().rstrip(b"\n")
            last = data.rsplit(b"\n", 1)[-1]
            journal.write_bytes(data[: len(data) - len(last) // 2])

    runs = 0
    while True:
        runs += 1
        proc = start(playbook, inventory, journal, report, "--resume")
        out, err = proc.communicate(timeout=900)
        if runs == 1:
            cut_warned = cut_warned or "is cut" in err
        assert "Traceback" not in out + err
        document = json.loads(report.read_text())
        resumed_skips.append(len(document.get("skipped") or []))
        latest = {(e["play"], e["host"]): e["status"] for e in records(journal)}
        waiting = [k for k, v in latest.items() if v == "waiting"]
        if not waiting or runs >= 4:
            break
    assert cut_warned, "the cut last line was detected and warned about"

    entries = records(journal)
    latest: dict[str, str] = {}
    changed_steps: Counter[tuple[str, str, str]] = Counter()
    history: defaultdict[tuple[str, str], list[str]] = defaultdict(list)
    for e in entries:
        latest[e["host"]] = e["status"]
        history[(e["play"], e["host"])].append(e["status"])
        for rep in e.get("reports") or []:
            for step in rep.get("steps") or []:
                if step.get("changed"):
                    changed_steps[(e["play"], e["host"], step["step"])] += 1
    lost = hosts - set(latest)
    duplicates = [k for k, n in changed_steps.items() if n > 1]
    done_twice = [k for k, v in history.items() if sum(s in ("ok", "changed") for s in v) > 1]
    assert lost == set(), f"lost: {sorted(lost)}"
    assert duplicates == [] and done_twice == [], (duplicates, done_twice)
    assert set(latest.values()) <= DEFINITIVE, Counter(latest.values())
    for host, fault in faults.items():
        expected = (
            DEFINITIVE
            if fault in EITHER
            else {"ok", "changed", "waiting"}
            if fault in RECOVERS
            else {"failed"}
        )
        assert latest[host] in expected, (host, fault, latest[host])
    healthy = hosts - set(faults)
    assert all(latest[h] in ("ok", "changed", "waiting") for h in healthy), Counter(
        latest[h] for h in healthy
    )
    print(
        f"fault fleet: hosts={len(hosts)} faults={len(faults)} kills={kills} "
        f"resumed hosts skipped per resume={resumed_skips} final runs={runs} "
        f"statuses={dict(Counter(latest.values()))} duplicates={len(duplicates)} lost={len(lost)}\n"
        f"per fault: { {f: dict(Counter(latest[h] for h, g in faults.items() if g == f)) for f in FAULTS} }"
    )
