"""Output when piped, progress on a terminal, and Ctrl-C during a rollout.

Unit tests feed rollout events to :class:`RolloutProgress`; the lab tests run ``kmsadmin rollout`` as
a real process against a lab (one client hangs) through a pipe, a pseudo-terminal and SIGINT.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kmsadmin.cli.output import plain_table
from kmsadmin.cli.progress import RolloutProgress
from kmsadmin.fleet.rollout import HostFinished, HostResult, HostStarted, RolloutStopping
from kmsadmin.fleet.runner import HostReport
from tests.lab.labproc import lab_process

REPO = Path(__file__).resolve().parents[1]
KMSADMIN = Path(sys.executable).with_name("kmsadmin")
SITE = REPO / "playbooks" / "site.yml"
CLIENTS = [f"client{n:03d}" for n in range(1, 6)]
HUNG = "client005"


# ------------------------------------------------------------------------------------------ tables
def test_plain_table_keeps_every_row_on_one_line() -> None:
    text = plain_table(
        "hosts",
        ["host", "address", "GVLK"],
        [["pc1", "127.0.0.1", "W269N-WFGWX-YVC9B-4J6C9-T83GX"], ["a-much-longer-host-name", "::1", "x\ny"]],
    )
    lines = text.splitlines()
    assert lines[0] == "hosts"
    assert lines[2].startswith("-----------------------  ---------")
    assert lines[3].split() == ["pc1", "127.0.0.1", "W269N-WFGWX-YVC9B-4J6C9-T83GX"]
    assert lines[4].split() == ["a-much-longer-host-name", "::1", "x;", "y"]
    assert len({line.index("127.0.0.1") for line in lines if "127.0.0.1" in line}) == 1


def test_piped_tables_are_not_wrapped() -> None:
    proc = subprocess.run([KMSADMIN, "keys", "list"], capture_output=True, text=True, timeout=60, check=True)
    rows = [line for line in proc.stdout.splitlines() if re.search(r"[0-9A-Z]{5}(-[0-9A-Z]{5}){4}", line)]
    assert len(rows) == 151  # one line per key, each key whole
    assert max(len(line) for line in rows) > 80  # the full line, not cut at 80 columns
    assert "│" not in proc.stdout


# ------------------------------------------------------------------------------------------ events
def _result(host: str, status: str, seconds: float, error: dict[str, str] | None = None) -> HostResult:
    report = HostReport(host=host, operation="convert-client", status=status)  # type: ignore[arg-type]
    report.error = error
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return HostResult("clients", host, status, [report], 1, start, start + timedelta(seconds=seconds))  # type: ignore[arg-type]


def test_lines_mode_prints_one_flushed_line_per_finished_host_and_periodic_summaries() -> None:
    out = io.StringIO()
    view = RolloutProgress("lines", every=0.05, out=out)
    counts = {"total": 3, "queued": 1, "running": 2}
    with view:
        view(HostStarted(counts=counts, play="clients", host="pc1"))
        view(HostStarted(counts=counts, play="clients", host="pc2"))
        assert [h for _, h, _ in view.in_flight()] == ["pc1", "pc2"]
        time.sleep(0.3)
        done = {"total": 3, "queued": 1, "running": 1, "changed": 1}
        view(
            HostFinished(
                counts=done,
                play="clients",
                host="pc1",
                status="changed",
                result=_result("pc1", "changed", 1.25),
            )
        )
        failed = {"total": 3, "queued": 1, "running": 0, "changed": 1, "failed": 1}
        error = {"step": "activate", "message": "no KMS host\nanswered", "hresult": "0xC004F074"}
        view(
            HostFinished(
                counts=failed,
                play="clients",
                host="pc2",
                status="failed",
                result=_result("pc2", "failed", 2.0, error),
            )
        )
        view(RolloutStopping(counts=failed, reason="interrupted", interrupted=True))
    lines = out.getvalue().splitlines()
    assert "[1/3] pc1 clients: changed (0 changes, 1.2s)" in lines
    assert (
        "[2/3] pc2 clients: failed (0 changes, 2.0s) at activate: no KMS host answered (HRESULT 0xC004F074)"
        in lines
    )
    assert "stopping: interrupted" in lines
    summaries = [line for line in lines if line.startswith("-- ")]
    assert summaries and re.fullmatch(r"-- 0/3 finished, 2 running, 1 queued, \d+s", summaries[0])
    assert view.in_flight() == []


# ------------------------------------------------------------------------------------------ the lab
def test_stopping_message_ends_by_each_hosts_own_deadline() -> None:
    """Without --deadline each running host ends by its own deadline (from its start event)."""
    from kmsadmin.cli.rollout import stopping_message

    view = RolloutProgress("lines", out=io.StringIO())
    counts = {"total": 2, "running": 2}
    view(HostStarted(counts=counts, play="clients", host="pc1", deadline=3600.0))
    view(HostStarted(counts=counts, play="clients", host="pc2", deadline=60.0))
    assert view.budgets() == {("clients", "pc1"): 3600.0, ("clients", "pc2"): 60.0}
    now = datetime.now().astimezone()
    message = stopping_message(view.in_flight(), None, view.budgets())
    match = re.search(r"end by (\d\d:\d\d:\d\d)", message)
    assert match, message
    ends = datetime.strptime(match.group(1), "%H:%M:%S").time()
    expected = (now + timedelta(seconds=3600)).time()  # pc1's hour, not pc2's minute
    apart = abs(
        (ends.hour - expected.hour) * 3600
        + (ends.minute - expected.minute) * 60
        + ends.second
        - expected.second
    )
    assert min(apart, 86400 - apart) <= 2, (message, expected)
    assert "kmsadmin_deadline var, else KMSADMIN_DEADLINE, else 900s" in message
    assert "--deadline 8s per host" in stopping_message(view.in_flight(), 8.0, view.budgets())


@pytest.fixture(scope="module")
def lab_inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A lab (1 KMS host, 5 clients, the last one hangs) served by a detached `kmsadmin lab up`."""
    options = ("--hosts", "5", "--kms-hosts", "1", "--no-tls", "--faults", f"{HUNG}=hang")
    with lab_process(tmp_path_factory.mktemp("lab"), *options, timeout=120) as (_, inventory):
        yield inventory


@pytest.mark.lab
def test_rollout_piped_prints_a_line_per_host(lab_inventory: Path) -> None:
    proc = subprocess.run(
        ["bash", "-c", f"'{KMSADMIN}' rollout '{SITE}' -i '{lab_inventory}' --limit 'all:!{HUNG}' | cat"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = proc.stdout.splitlines()
    for host in ["kms01", *CLIENTS[:-1]]:
        assert [line for line in lines if re.match(rf"\[\d/5\] {host} KMS (hosts|clients): \w+ \(", line)], (
            host,
            lines,
        )
    assert HUNG not in proc.stdout
    assert any(line.startswith("hosts: 5") for line in lines)  # then the summary


@pytest.mark.lab
def test_rollout_on_a_terminal_shows_the_hosts_in_flight(lab_inventory: Path) -> None:
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [
            KMSADMIN,
            "rollout",
            str(SITE),
            "-i",
            str(lab_inventory),
            "--limit",
            f"kms01:{HUNG}",
            "--deadline",
            "4",
        ],
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
    )
    os.close(secondary)
    seen = b""
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(primary, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
    finally:
        proc.wait(timeout=30)
        os.close(primary)
    text = seen.decode("utf-8", "replace")
    assert f"in flight (1): {HUNG}" in text
    assert "[1/2]" not in text  # no per-host lines on a terminal: the bar


def _start(lab_inventory: Path, tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            KMSADMIN, "rollout", str(SITE), "-i", str(lab_inventory), "--report-json", str(tmp_path / "r.json"),
            "--journal", str(tmp_path / "j.jsonl"), *extra,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _wait_for_line(stream: io.TextIOBase | None, pattern: str, timeout: float) -> list[str]:
    assert stream is not None
    lines: list[str] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = stream.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"no {pattern!r} in {lines}")


@pytest.mark.lab
def test_ctrl_c_says_at_once_what_runs_and_reports_what_finished(lab_inventory: Path, tmp_path: Path) -> None:
    proc = _start(lab_inventory, tmp_path, "--deadline", "8")
    try:
        _wait_for_line(proc.stdout, r"client004 KMS clients", 60)  # the healthy clients are done
        time.sleep(0.5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        message = _wait_for_line(proc.stderr, r"kmsadmin: stopping", 5)[-1]
        assert time.monotonic() - sent < 2  # at once, not after the hung host's deadline
        match = re.search(r"1 host\(s\) still running \(client005\) end by (\d\d:\d\d:\d\d)", message)
        assert match, message
        assert "--deadline 8s per host" in message
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "interrupted: " in out and "report: " in out and "hosts: 6" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["interrupted"] is True
    statuses = {h["host"]: h["status"] for h in report["hosts"]}
    assert statuses[HUNG] == "failed"  # it ended at its deadline and was reported
    assert {statuses[h] for h in CLIENTS[:-1]} <= {"ok", "changed", "waiting"}


@pytest.mark.lab
def test_second_ctrl_c_ends_the_run_at_once_and_writes_what_is_known(
    lab_inventory: Path, tmp_path: Path
) -> None:
    proc = _start(lab_inventory, tmp_path, "--deadline", "300")
    try:
        _wait_for_line(proc.stdout, r"client004 KMS clients", 60)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _wait_for_line(proc.stderr, r"kmsadmin: stopping", 5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert took < 10  # not the 300 s the hung host may take
    assert "stopping now: 1 host(s) still running are reported as not finished" in err
    report = json.loads((tmp_path / "r.json").read_text())
    assert HUNG in report["not_started"]
    assert {h["host"] for h in report["hosts"]} >= {"kms01", *CLIENTS[:-1]}
    journal = [json.loads(line) for line in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert HUNG not in {
        line.get("host") for line in journal if line.get("type") == "host"
    }  # resume re-runs it


@pytest.mark.lab
def test_a_host_var_deadline_ends_the_hung_host_on_time_while_the_others_succeed(
    lab_inventory: Path, tmp_path: Path
) -> None:
    """No --deadline: the hung client's kmsadmin_deadline var (6 s, over KMSADMIN_DEADLINE=600 and the
    rollout's 900 s default) ends it on time; the timeout names every way to allow more time."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(lab_inventory.read_text())
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / f"{HUNG}.yml").write_text("kmsadmin_deadline: 6\n")
    started = time.monotonic()
    proc = subprocess.run(
        [KMSADMIN, "rollout", str(SITE), "-i", str(inventory), "--report-json", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "KMSADMIN_DEADLINE": "600"},
    )
    took = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one host failed, the run finished
    report = json.loads((tmp_path / "r.json").read_text())
    hosts = {h["host"]: h for h in report["hosts"]}
    assert {hosts[h]["status"] for h in ["kms01", *CLIENTS[:-1]]} <= {"ok", "changed", "waiting"}
    hung = hosts[HUNG]
    assert hung["status"] == "failed"
    assert 5.5 <= hung["duration"] < 6 + 4, hung  # its own 6 s, not KMSADMIN_DEADLINE's 600 s
    assert took < 60, took
    error = hung["error"]
    assert "no answer within" in error["message"], error
    for way in ("--deadline", "kmsadmin_deadline", "KMSADMIN_DEADLINE"):
        assert way in error["remediation"], error
