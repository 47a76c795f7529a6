"""``kmsadmin status HOST...`` (hosts on the command line, no -i): --forks bounds the hosts read at
once, each host has its own deadline, and one host's failure never stops the others.

The CLI, the option building, the runner and the facts parsing are real; the seam is the transport's
``open_session``, below which each session hands the rendered scripts to the lab's engine (the
simulated Windows hosts the lab's WinRM server answers from) and counts the sessions open at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import kmsadmin.transports
from kmsadmin.cli.app import app
from kmsadmin.lab.engine import LabEngine
from kmsadmin.lab.fleet import Fleet
from kmsadmin.transports.options import ConnectionOptions
from kmsadmin.values import RenderedScript, ScriptResult
from tests.fakes import run_until_failed

runner = CliRunner()
PASSWORD = "Status-Passw0rd-xyzzy"
CLIENTS = 8


class CountingSessions:
    """Sessions to the lab engine's hosts; counts the sessions open at once and the deadlines given."""

    def __init__(self, engine: LabEngine, hold: float) -> None:
        self.engine = engine
        self.hold = hold
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.opened: list[ConnectionOptions] = []
        self.deadlines: dict[str, list[float | None]] = {}
        #: host → exception its first script raises (an unexpected failure, not a mapped host error)
        self.crash: dict[str, Exception] = {}

    def open_session(self, options: ConnectionOptions) -> Any:
        sessions = self

        class Session:
            def __init__(self) -> None:
                self.host = options.host
                with sessions.lock:
                    sessions.opened.append(options)
                    sessions.active += 1
                    sessions.max_active = max(sessions.max_active, sessions.active)

            def run(self, script: RenderedScript, *, deadline: float | None = None) -> ScriptResult:
                with sessions.lock:
                    sessions.deadlines.setdefault(self.host, []).append(deadline)
                time.sleep(sessions.hold)  # a host's answer takes a while: the sessions overlap
                if self.host in sessions.crash:
                    raise sessions.crash[self.host]
                out = sessions.engine.run_script(self.host, script.text, via="psrp")
                return ScriptResult(self.host, script.step, "\n".join(out.output), out.errors)

            def run_many(
                self, scripts: Sequence[RenderedScript], *, deadline: float | None = None
            ) -> list[ScriptResult]:
                return run_until_failed(lambda script: self.run(script, deadline=deadline), scripts)

            def close(self) -> None:
                with sessions.lock:
                    sessions.active -= 1

        return Session()


@pytest.fixture
def sessions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CountingSessions:
    fleet = Fleet.create(tmp_path / "lab", hosts=CLIENTS, kms_hosts=0, os_mix=f"win11-enterprise={CLIENTS}")
    counting = CountingSessions(LabEngine(fleet), hold=0.15)
    monkeypatch.setattr(kmsadmin.transports, "open_session", counting.open_session)
    monkeypatch.setenv("KMSADMIN_PASSWORD", PASSWORD)
    return counting


def status(*args: str) -> tuple[int, list[dict[str, Any]], str]:
    hosts = [f"client{i:03d}" for i in range(1, CLIENTS + 1)]
    result = runner.invoke(app, ["status", *hosts, "--user", ".\\labadmin", "--json", *args])
    return result.exit_code, json.loads(result.stdout or "[]"), result.stderr


def test_forks_bounds_the_hosts_read_at_once(sessions: CountingSessions) -> None:
    code, reports, err = status("--forks", "3")
    assert code == 0, err
    assert sorted(r["host"] for r in reports) == [f"client{i:03d}" for i in range(1, CLIENTS + 1)]
    assert all(r["status"] == "ok" and r["state"]["edition"] for r in reports)
    assert len(sessions.opened) == CLIENTS
    assert sessions.max_active == 3


def test_without_forks_all_hosts_run_at_once_up_to_the_default(sessions: CountingSessions) -> None:
    """The counter can see more than 3 at once: the bound above is --forks, not the counting."""
    code, _, err = status()
    assert code == 0, err
    assert sessions.max_active == CLIENTS


def test_forks_1_reads_one_host_at_a_time(sessions: CountingSessions) -> None:
    code, reports, err = status("--forks", "1")
    assert code == 0, err
    assert len(reports) == CLIENTS
    assert sessions.max_active == 1


def test_each_host_has_its_own_deadline_and_one_failure_never_stops_the_others(
    sessions: CountingSessions,
) -> None:
    sessions.crash["client002"] = RuntimeError(f"unexpected failure (password {PASSWORD})")
    code, reports, err = status("--forks", "2", "--deadline", "7")
    assert code == 1, err
    by_host = {r["host"]: r for r in reports}
    assert len(by_host) == CLIENTS
    failed = by_host.pop("client002")
    assert failed["status"] == "failed" and failed["error"]["kind"] == "RuntimeError"
    assert PASSWORD not in json.dumps(failed) and "[redacted]" in failed["error"]["message"]
    assert {r["status"] for r in by_host.values()} == {"ok"}
    assert sessions.max_active == 2
    # every script got what was left of its host's own 7 s, not a run-wide or a default deadline
    given = [d for ds in sessions.deadlines.values() for d in ds]
    assert given and all(d is not None and 0 < d <= 7 for d in given)
    assert {o.deadline for o in sessions.opened} == {7.0}


def test_report_paths_are_checked_before_any_host_is_contacted(
    sessions: CountingSessions, tmp_path: Path
) -> None:
    hosts = [f"client{i:03d}" for i in range(1, CLIENTS + 1)]
    (tmp_path / "file").write_text("")
    for option, path in (("--report-json", tmp_path), ("--junit", tmp_path / "file" / "r.xml")):
        result = runner.invoke(app, ["status", *hosts, "--user", ".\\labadmin", option, str(path)])
        assert result.exit_code == 2, result.output
        assert option in result.stderr
    assert sessions.opened == []


def test_reports_hold_every_host_read(sessions: CountingSessions, tmp_path: Path) -> None:
    """The document is the one status -i writes (kind status, each host's state, the fleet findings)."""
    report = tmp_path / "out" / "status.json"
    code, reports, err = status("--forks", "3", "--report-json", str(report))
    assert code == 0, err
    document = json.loads(report.read_text())
    assert document["kind"] == "status" and document["summary"]["ok"] == CLIENTS
    assert [h["host"] for h in document["hosts"]] == [r["host"] for r in reports]
    assert all(h["state"]["edition"] for h in document["hosts"])
    assert isinstance(document["findings"], list)


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ((), {}, 300.0),
        ((), {"KMSADMIN_DEADLINE": "9"}, 9.0),
        (("--deadline", "7"), {"KMSADMIN_DEADLINE": "9"}, 7.0),
    ],
)
def test_status_hosts_deadline_cli_then_environment_then_default(
    sessions: CountingSessions,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    env: dict[str, str],
    expected: float,
) -> None:
    monkeypatch.delenv("ANSIBLE_INVENTORY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, _, err = status(*args)
    assert code == 0, err
    assert {o.deadline for o in sessions.opened} == {expected}
    given = [d for ds in sessions.deadlines.values() for d in ds]
    assert given and all(d is not None and 0 < d <= expected for d in given)


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ((), {}, {"client001": 5.0, "client002": 300.0}),
        ((), {"KMSADMIN_DEADLINE": "9"}, {"client001": 5.0, "client002": 9.0}),
        (("--deadline", "7"), {"KMSADMIN_DEADLINE": "9"}, {"client001": 7.0, "client002": 7.0}),
    ],
)
def test_status_inventory_deadline_cli_then_host_vars_then_environment_then_default(
    sessions: CountingSessions,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: tuple[str, ...],
    env: dict[str, str],
    expected: dict[str, float],
) -> None:
    """status -i resolves each host's deadline as status HOST... does (it used --deadline or 300 s)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    inventory = tmp_path / "inv.yml"
    inventory.write_text(
        "all:\n  hosts:\n    client001:\n      kmsadmin_deadline: 5\n    client002:\n"
        "  vars:\n    ansible_user: .\\labadmin\n"
    )
    result = runner.invoke(app, ["status", "-i", str(inventory), "--json", *args])
    assert result.exit_code == 0, result.output
    assert {h["host"]: h["status"] for h in json.loads(result.stdout)["hosts"]} == dict.fromkeys(
        expected, "ok"
    )
    assert {o.host: o.deadline for o in sessions.opened} == expected
    for host, deadlines in sessions.deadlines.items():
        assert deadlines and all(d is not None and 0 < d <= expected[host] for d in deadlines)


@pytest.mark.parametrize(
    ("inventory_var", "env", "host", "named"),
    [
        (None, {"KMSADMIN_DEADLINE": "inf"}, "client001", "KMSADMIN_DEADLINE"),
        (None, {"KMSADMIN_DEADLINE": "nan"}, "client001", "KMSADMIN_DEADLINE"),
        ("inf", {}, "client002", "kmsadmin_deadline"),
        (".nan", {"KMSADMIN_DEADLINE": "9"}, "client002", "kmsadmin_deadline"),
    ],
)
def test_a_deadline_that_is_not_finite_is_refused_before_any_host_is_contacted(
    sessions: CountingSessions,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    inventory_var: str | None,
    env: dict[str, str],
    host: str,
    named: str,
) -> None:
    """--deadline inf is a usage error; the same value from a host var or the environment is refused
    too (exit 4), naming the host, the variable and the allowed range, and no host is contacted."""
    monkeypatch.delenv("ANSIBLE_INVENTORY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    inventory = tmp_path / "inv.yml"
    inventory.write_text(
        "all:\n  hosts:\n    client001:\n    client002:\n"
        + (f"      kmsadmin_deadline: {inventory_var}\n" if inventory_var else "")
        + "  vars:\n    ansible_user: .\\labadmin\n"
    )
    commands = [["status", "-i", str(inventory)]]
    if inventory_var is None:
        commands.append(["status", "client001", "client002", "--user", ".\\labadmin"])
    for command in commands:
        result = runner.invoke(app, command)
        assert result.exit_code == 4, result.output
        assert f"{host}: deadline ({named}) must be a finite number of seconds, more than 0" in result.stderr
    assert sessions.opened == []
    result = runner.invoke(app, ["status", "client001", "--user", ".\\labadmin", "--deadline", "inf"])
    assert result.exit_code == 2 and sessions.opened == []
