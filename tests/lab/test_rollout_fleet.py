"""Fleet rollout end to end, as users run it: `kmsadmin lab up` (200+ hosts), `kmsadmin rollout` as a
process, JSON reports, a zero-change re-run, and a rollout killed midway (SIGINT, then SIGKILL) and
resumed with no host lost and none done twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.lab.labproc import lab_process

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "playbooks" / "site.yml"


def kmsadmin(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmsadmin", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


@pytest.fixture
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Path, Path]]:
    clients, latency = request.param
    options = ("--hosts", str(clients), "--kms-hosts", "2", "--latency-ms", str(latency))
    with lab_process(tmp_path, *options, timeout=600) as started:
        yield started


def all_hosts(inventory: Path) -> set[str]:
    doc = yaml.safe_load(inventory.read_text())
    return {h for group in doc["all"]["children"].values() for h in (group.get("hosts") or {})}


def rollout(tmp: Path, inventory: Path, name: str, *extra: str) -> tuple[int, dict[str, object]]:
    report = tmp / f"{name}.json"
    proc = kmsadmin(
        "rollout", str(SITE), "-i", str(inventory), "--no-progress", "--report-json", str(report), *extra
    )
    assert report.exists(), proc.stdout + proc.stderr
    return proc.returncode, json.loads(report.read_text())


@pytest.mark.parametrize("lab", [(198, 0)], indirect=True)
def test_site_rollout_of_200_hosts_then_zero_changes(lab: tuple[Path, Path], tmp_path: Path) -> None:
    _, inventory = lab
    hosts = all_hosts(inventory)
    assert len(hosts) == 200

    code, first = rollout(tmp_path, inventory, "first")
    reported = {h["host"] for h in first["hosts"]}  # type: ignore[index]
    assert reported == hosts, "every host is in the report"
    # Clients that reached a KMS host before it had counted 25 (5 for servers) are refused with
    # 0xC004F038, as on Windows: they are waiting, not failed; nothing may fail.
    assert [h["host"] for h in first["hosts"] if h["status"] == "failed"] == []  # type: ignore[index]
    waiting = [h for h in first["hosts"] if h["status"] == "waiting"]  # type: ignore[index]
    assert {(h["error"]["step"], h["error"]["hresult"]) for h in waiting} <= {("activate", "0xC004F038")}
    assert first["summary"]["waiting"] == len(waiting)  # type: ignore[index]
    assert code == (1 if waiting else 0)

    # The clients' own retry (every 2 hours on Windows): a second run activates the rest.
    code, second = rollout(tmp_path, inventory, "second")
    assert code == 0, second["summary"]
    by_host = {h["host"]: h for h in second["hosts"]}  # type: ignore[index]
    assert set(by_host) == hosts
    for name, host in by_host.items():
        assert host["state"]["license_status_name"] == "Licensed", name
    assert second["summary"]["changed"] == len(waiting)  # type: ignore[index]

    code, third = rollout(tmp_path, inventory, "third")
    assert code == 0
    assert third["summary"]["changed"] == 0  # type: ignore[index]
    assert sum(h["changes"] for h in third["hosts"]) == 0  # type: ignore[index]
    assert third["summary"]["ok"] == 200  # type: ignore[index]
    counts = {k["host"]: k["current_count"] for k in third["summary"]["kms_hosts"]}  # type: ignore[index]
    assert set(counts) == {"kms01", "kms02"}
    assert all(count >= 25 for count in counts.values())


def journal_entries(path: Path) -> list[dict[str, object]]:
    entries = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by SIGKILL
        if record.get("type") == "host":
            entries.append(record)
    return entries


def start_rollout(inventory: Path, journal: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kmsadmin",
            "rollout",
            str(SITE),
            "-i",
            str(inventory),
            "--journal",
            str(journal),
            "--no-progress",
            "--forks",
            "4",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )


def wait_for_entries(journal: Path, at_least: int, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if journal.exists() and len(journal_entries(journal)) >= at_least:
            return
        assert proc.poll() is None, "the rollout ended before it could be interrupted"
        time.sleep(0.1)
    raise AssertionError(f"fewer than {at_least} journal entries after {timeout}s")


@pytest.mark.parametrize("lab", [(58, 40)], indirect=True)
def test_interrupted_rollout_resumes_without_loss_or_repeat(lab: tuple[Path, Path], tmp_path: Path) -> None:
    _, inventory = lab
    hosts = all_hosts(inventory)
    journal = tmp_path / "site.journal"

    # 1. SIGINT midway: running hosts finish, nothing new starts, every finished host is journaled.
    proc = start_rollout(inventory, journal)
    wait_for_entries(journal, 10, proc)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "interrupted" in out
    after_sigint = journal_entries(journal)
    assert 10 <= len(after_sigint) < len(hosts)

    # 2. Resume, then SIGKILL midway: no chance to clean up.
    proc = start_rollout(inventory, journal, "--resume")
    wait_for_entries(journal, len(after_sigint) + 10, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    after_sigkill = journal_entries(journal)
    assert after_sigkill[: len(after_sigint)] == after_sigint, "the journal only grows"

    # 3. Resume until nothing is left (count-limited clients are retried, as Windows retries them).
    for _ in range(3):
        proc = start_rollout(inventory, journal, "--resume")
        out, err = proc.communicate(timeout=600)
        if proc.returncode == 0:
            break
    assert proc.returncode == 0, out + err

    entries = journal_entries(journal)
    done = Counter((e["play"], e["host"]) for e in entries if e["status"] in ("ok", "changed"))
    assert {host for _, host in done} == hosts, "no host lost"
    assert max(done.values()) == 1, f"done twice: {[k for k, v in done.items() if v > 1]}"
    # a host only runs again after a failed attempt or one waiting for its KMS host's count
    for key in done:
        attempts = [e["status"] for e in entries if (e["play"], e["host"]) == key]
        assert attempts[-1] in ("ok", "changed") and set(attempts[:-1]) <= {"failed", "waiting"}, (
            key,
            attempts,
        )
