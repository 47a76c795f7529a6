"""Rollout engine: batches, forks, failure policies, safe retries, interrupt + resume, journal, secrets.

The hosts are fakes that answer each step script with the JSON a real host would print (facts from
tests/fixtures/facts, state changed by the steps), so the real runner, planners and renderer run.
"""

from __future__ import annotations

import _thread
import copy
import gc
import itertools
import json
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from kmsadmin import catalog
from kmsadmin.errors import AuthenticationFailed, ConfigError, ConnectionFailed, HostTimeout
from kmsadmin.fleet.inventory import Inventory, load_inventory
from kmsadmin.fleet.journal import Journal, read_journal
from kmsadmin.fleet.playbook import Playbook, load_playbook
from kmsadmin.fleet.rollout import (
    YOUNG_COLLECTION_THRESHOLD,
    BatchStarted,
    Event,
    HostFinished,
    HostRetrying,
    HostSkipped,
    HostStarted,
    RolloutFinished,
    RolloutResult,
    RolloutStarted,
    RolloutStopping,
    SessionFactoryFor,
    rollout,
)
from kmsadmin.fleet.runner import Session, run_host
from kmsadmin.operations.convert_client import ConvertClientArgs
from kmsadmin.values import RenderedScript, ScriptResult
from tests.fakes import run_until_failed

FACTS = Path(__file__).parent / "fixtures" / "facts"
NOT_ENOUGH_COUNT = "0xC004F038"
HOST_KEY = "BCDFG-HJKMP-QRTVW-XY234-6789B"
PASSWORD = "Lab-Passw0rd-xyzzy"
CHANGE_STEPS = ("install-gvlk", "set-kms-host", "activate", "install-host-key", "install-feature", "firewall")


# ------------------------------------------------------------------------------------------ fake fleet
class FakeFleet:
    """Simulated hosts answering step scripts; counts calls and concurrency; injects faults."""

    def __init__(self, kms_hosts: list[str], clients: list[str]) -> None:
        client = json.loads((FACTS / "win11-enterprise.json").read_text())
        server = json.loads((FACTS / "server2022-fresh.json").read_text())
        self.state: dict[str, dict[str, Any]] = {h: copy.deepcopy(server) for h in kms_hosts}
        self.state.update({h: copy.deepcopy(client) for h in clients})
        self.lock = threading.Lock()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.connects: Counter[str] = Counter()
        self.active = 0
        self.max_active = 0
        self.delay = 0.0
        self.deadlines: list[float | None] = []
        #: host → the deadline each of its scripts was given
        self.deadlines_of: dict[str, list[float | None]] = {}
        self.scripts: dict[str, list[str]] = {}
        #: host → how many connects fail before one succeeds (-1: always), and with which error
        self.connect_failures: dict[str, int] = {}
        self.connect_error: type[Exception] = ConnectionFailed
        #: host → step that raises ConnectionFailed (after the steps before it ran)
        self.drop_at: dict[str, str] = {}
        #: host → step whose JSON answer is an error (a failure reported by the script)
        self.error_at: dict[str, str] = {}
        #: host → the HRESULT of that error (default: no KMS host could be contacted)
        self.error_hresult: dict[str, str] = {}
        #: host → step that raises an unexpected exception quoting the whole script
        self.crash_at: dict[str, str] = {}
        self.gvlk = catalog.find_client_key("Windows 11 Enterprise").gvlk

    def total(self, step: str) -> int:
        return sum(n for (_, s), n in self.calls.items() if s == step)

    def factory_for(self) -> SessionFactoryFor:
        def for_host(host_vars: Mapping[str, Any]) -> Callable[[str], Session]:
            assert host_vars["inventory_hostname"] in self.state

            def factory(name: str) -> Session:
                with self.lock:
                    self.connects[name] += 1
                    left = self.connect_failures.get(name, 0)
                    if left:
                        self.connect_failures[name] = left - 1 if left > 0 else -1
                        error = self.connect_error
                        raise error(name, "connect", "connection refused (fake)")  # type: ignore[call-arg]
                return FakeSession(self, name)

            return factory

        return for_host

    def answer(self, host: str, script: RenderedScript) -> dict[str, Any]:
        step = script.step
        facts = self.state[host]
        if self.error_at.get(host) == step:
            hresult = self.error_hresult.get(host, "0xC004F074")
            message = "count 3, needs 25" if hresult == NOT_ENOUGH_COUNT else "no KMS could be contacted"
            return {
                "kmsadmin": 1,
                "step": step,
                "changed": False,
                "error": {"hresult": hresult, "message": message, "stage": step},
            }
        windows = facts["products"][0]
        if step == "install-gvlk":
            windows.update(partial_key=self.gvlk[-5:], channel="Volume:GVLK", license_status=5)
        elif step == "set-kms-host":
            host_line = re.search(r"^\$KmsHost = '([^']*)'", script.text, re.M)
            port_line = re.search(r"^\$KmsPort = '([^']*)'", script.text, re.M)
            assert host_line is not None and port_line is not None
            facts["service"]["kms_machine"] = host_line.group(1)
            facts["service"]["kms_port"] = int(port_line.group(1))
        elif step == "activate":
            windows["license_status"] = 1
        elif step == "install-host-key":
            facts["service"]["is_kms_host"] = True
        elif step == "firewall":
            rule = next(r for r in facts["firewall"] if r["name"] == "SPPSVC-In-TCP")
            rule.update(enabled=True, profiles=["Domain", "Private"])
        data = copy.deepcopy(facts) if step == "facts" else {}
        return {
            "kmsadmin": 1,
            "step": step,
            "changed": step != "facts",
            "before": {},
            "after": {},
            "data": data,
        }


class FakeSession:
    def __init__(self, fleet: FakeFleet, host: str) -> None:
        self.fleet = fleet
        self.host = host
        with fleet.lock:
            fleet.active += 1
            fleet.max_active = max(fleet.max_active, fleet.active)

    def run(self, script: RenderedScript, *, deadline: float | None = None) -> ScriptResult:
        fleet = self.fleet
        with fleet.lock:
            fleet.calls[(self.host, script.step)] += 1
            fleet.deadlines.append(deadline)
            fleet.deadlines_of.setdefault(self.host, []).append(deadline)
            fleet.scripts.setdefault(self.host, []).append(script.text)
        if fleet.delay:
            time.sleep(fleet.delay)
        if fleet.drop_at.get(self.host) == script.step:
            raise ConnectionFailed(self.host, script.step, "connection reset (fake)")
        if fleet.crash_at.get(self.host) == script.step:
            raise RuntimeError(f"unexpected failure while running {script.text}")
        with fleet.lock:
            answer = fleet.answer(self.host, script)
        return ScriptResult(self.host, script.step, json.dumps(answer))

    def run_many(
        self, scripts: Sequence[RenderedScript], *, deadline: float | None = None
    ) -> list[ScriptResult]:
        return run_until_failed(lambda script: self.run(script, deadline=deadline), scripts)

    def close(self) -> None:
        with self.fleet.lock:
            self.fleet.active -= 1


# ------------------------------------------------------------------------------------------ helpers
def inventory(tmp_path: Path, kms_hosts: int, clients: int) -> tuple[Inventory, FakeFleet]:
    kms = [f"kms{i:02d}" for i in range(1, kms_hosts + 1)]
    pcs = [f"pc{i:03d}" for i in range(1, clients + 1)]
    lines = [
        "all:",
        "  vars:",
        f"    ansible_password: {PASSWORD}",
        "    ansible_user: labadmin",
        "  children:",
    ]
    lines += ["    kms_hosts:", "      vars: {kmsadmin_role: kms_host}", "      hosts:"]
    lines += [f"        {h}: {{kmsadmin_fqdn: {h}.corp.example}}" for h in kms] or ["        {}"]
    lines += ["    clients:", "      vars: {kmsadmin_role: client}", "      hosts:"]
    lines += [f"        {h}:" for h in pcs]
    path = tmp_path / "inventory.yml"
    path.write_text("\n".join(lines) + "\n")
    return load_inventory(path), FakeFleet([f"{h}" for h in kms], pcs)


def playbook(tmp_path: Path, text: str, name: str = "play.yml") -> Playbook:
    path = tmp_path / name
    path.write_text(text)
    return load_playbook(path)


CLIENTS = """\
- name: clients
  hosts: clients
  {extra}
  steps:
    - convert-client: {{kms_host: kms.corp.example}}
"""


def clients_play(tmp_path: Path, extra: str = "") -> Playbook:
    return playbook(tmp_path, CLIENTS.format(extra=extra or "vars: {}"))


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def go(pb: Playbook, inv: Inventory, fleet: FakeFleet, **kwargs: Any) -> RolloutResult:
    kwargs.setdefault("retry_delay", 0.0)
    kwargs.setdefault("seed", 1)
    return rollout(pb, inv, session_factory_for=fleet.factory_for(), **kwargs)


def statuses(result: RolloutResult) -> dict[str, str]:
    return {h.host: h.status for h in result.hosts}


# ------------------------------------------------------------------------------------------ basics
def test_converts_every_client_and_reports_per_host(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 5)
    events = Recorder()
    result = go(clients_play(tmp_path), inv, fleet, on_event=events)
    assert statuses(result) == dict.fromkeys(inv.groups["clients"], "changed")
    assert result.counts == {
        "queued": 0,
        "running": 0,
        "ok": 0,
        "changed": 5,
        "pending": 0,
        "waiting": 0,
        "failed": 0,
        "skipped": 0,
        "not_started": 0,
        "total": 5,
    }
    assert result.exit_code == 0 and not result.interrupted and result.stopped is None
    assert result.finished is not None and result.finished >= result.started
    host = result.hosts[0]
    assert host.play == "clients" and host.vars == {"kmsadmin_role": "client"} and host.groups == ("clients",)
    assert [s.step for s in host.reports[0].steps] == ["install-gvlk", "set-kms-host", "activate"]
    assert fleet.total("install-gvlk") == 5 and fleet.total("facts") == 10  # facts + verify per host
    kinds = [type(e) for e in events.events]
    assert kinds[0] is RolloutStarted and kinds[-1] is RolloutFinished
    assert len(events.of(HostStarted)) == len(events.of(HostFinished)) == 5
    for started in events.of(HostStarted):
        finished = next(e for e in events.of(HostFinished) if e.host == started.host)
        assert events.events.index(started) < events.events.index(finished)
    assert events.of(RolloutFinished)[0].counts["changed"] == 5
    assert all(sum(e.counts[s] for s in e.counts if s != "total") == 5 for e in events.events)


def test_second_run_changes_nothing(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 3)
    go(clients_play(tmp_path), inv, fleet)
    again = go(clients_play(tmp_path), inv, fleet)
    assert set(statuses(again).values()) == {"ok"}
    assert fleet.total("install-gvlk") == 3


def test_check_mode_plans_only(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 4)
    result = go(clients_play(tmp_path), inv, fleet, check=True)
    assert set(statuses(result).values()) == {"pending"}
    assert all(fleet.total(step) == 0 for step in CHANGE_STEPS)
    assert result.exit_code == 3
    assert result.hosts[0].reports[0].plan is not None


def test_status_step_reads_state_without_changes(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 2)
    pb = playbook(tmp_path, "- name: status\n  hosts: all\n  steps: [status]\n")
    result = go(pb, inv, fleet)
    assert set(statuses(result).values()) == {"ok"}
    assert result.hosts[0].reports[0].state["license_status"] is not None
    assert all(fleet.total(step) == 0 for step in CHANGE_STEPS)


def test_deadline_reaches_every_script(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 2)
    go(clients_play(tmp_path), inv, fleet, deadline=30.0)
    assert fleet.deadlines and all(d is not None and 0 < d <= 30.0 for d in fleet.deadlines)


def _with_host_deadlines(tmp_path: Path, deadlines: Mapping[str, str]) -> Inventory:
    """The helper's inventory, with a kmsadmin_deadline var on the hosts named."""
    path = tmp_path / "inventory.yml"
    text = path.read_text()
    for host, value in deadlines.items():
        text = text.replace(f"        {host}:\n", f"        {host}: {{kmsadmin_deadline: {value}}}\n")
    path.write_text(text)
    return load_inventory(path)


@pytest.mark.parametrize(
    ("deadline", "env", "expected"),
    [
        (None, {}, {"pc001": 40.0, "pc002": 900.0, "pc003": 900.0}),
        (None, {"KMSADMIN_DEADLINE": "20"}, {"pc001": 40.0, "pc002": 20.0, "pc003": 20.0}),
        (12.0, {"KMSADMIN_DEADLINE": "20"}, {"pc001": 12.0, "pc002": 12.0, "pc003": 12.0}),
    ],
)
def test_each_hosts_deadline_is_cli_then_host_var_then_environment_then_default(
    tmp_path: Path, deadline: float | None, env: dict[str, str], expected: dict[str, float]
) -> None:
    """A rollout resolves each host's budget as status does: --deadline, its kmsadmin_deadline var,
    KMSADMIN_DEADLINE, else the rollout's default (900 s)."""
    _, fleet = inventory(tmp_path, 1, 3)
    inv = _with_host_deadlines(tmp_path, {"pc001": "40"})
    events = Recorder()
    result = go(clients_play(tmp_path), inv, fleet, deadline=deadline, env=env, on_event=events)
    assert set(statuses(result).values()) == {"changed"}
    assert {e.host: e.deadline for e in events.of(HostStarted)} == expected
    for host, seconds in expected.items():
        given = fleet.deadlines_of[host]
        # every script gets what is left of the host's budget: at most it, and not much less so soon
        assert given and all(d is not None and seconds - 5 < d <= seconds for d in given), (host, given)


def test_a_plays_kmsadmin_deadline_var_is_its_hosts_deadline(tmp_path: Path) -> None:
    """Play vars sit on top of the inventory's, for the deadline as for every host var."""
    _, fleet = inventory(tmp_path, 1, 2)
    inv = _with_host_deadlines(tmp_path, {"pc001": "40"})
    events = Recorder()
    play = clients_play(tmp_path, "vars: {kmsadmin_deadline: 33}")
    go(play, inv, fleet, env={"KMSADMIN_DEADLINE": "20"}, on_event=events)
    assert {e.host: e.deadline for e in events.of(HostStarted)} == {"pc001": 33.0, "pc002": 33.0}


@pytest.mark.parametrize(
    ("host_var", "env", "named"),
    [
        ("inf", {}, "kmsadmin_deadline"),
        (".nan", {}, "kmsadmin_deadline"),
        ("-3", {}, "kmsadmin_deadline"),
        (None, {"KMSADMIN_DEADLINE": "inf"}, "KMSADMIN_DEADLINE"),
        (None, {"KMSADMIN_DEADLINE": "nan"}, "KMSADMIN_DEADLINE"),
    ],
)
def test_a_deadline_that_is_not_finite_is_refused_before_any_host_is_contacted(
    tmp_path: Path, host_var: str | None, env: dict[str, str], named: str
) -> None:
    _, fleet = inventory(tmp_path, 1, 3)
    inv = _with_host_deadlines(tmp_path, {"pc002": host_var} if host_var else {})
    with pytest.raises(ConfigError) as caught:
        go(clients_play(tmp_path), inv, fleet, env=env)
    message = str(caught.value)
    host = "pc002" if host_var else "pc001"
    assert message.startswith(f"{host}: deadline ({named}) must be a finite number of seconds, more than 0")
    assert not fleet.connects and not fleet.calls


# ------------------------------------------------------------------------------------------ scheduling
def test_serial_batches_run_in_order_one_after_another(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 10)
    fleet.delay = 0.01
    events = Recorder()
    result = go(clients_play(tmp_path, 'serial: [1, 3, "50%"]'), inv, fleet, on_event=events, forks=8)
    batches = events.of(BatchStarted)
    assert [len(b.hosts) for b in batches] == [1, 3, 5, 1]
    assert [h for b in batches for h in b.hosts] == list(inv.groups["clients"])
    by_host = {h.host: h for h in result.hosts}
    for earlier, later in itertools.pairwise(batches):
        assert max(by_host[h].finished for h in earlier.hosts) <= min(by_host[h].started for h in later.hosts)


def test_forks_bound_concurrency(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 12)
    fleet.delay = 0.02
    result = go(clients_play(tmp_path), inv, fleet, forks=3)
    assert fleet.max_active == 3
    assert len(result.hosts) == 12
    inv2, fleet2 = inventory(tmp_path, 1, 6)
    fleet2.delay = 0.02
    go(clients_play(tmp_path), inv2, fleet2, forks=64)
    assert fleet2.max_active == 6


def test_max_fail_percentage_stops_later_batches_and_plays(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 8)
    fleet.error_at.update(pc001="activate", pc002="activate")
    pb = playbook(
        tmp_path,
        CLIENTS.format(extra="serial: 4\n  max_fail_percentage: 25")
        + "- name: after\n  hosts: kms_hosts\n  steps: [status]\n",
    )
    events = Recorder()
    result = go(pb, inv, fleet, on_event=events)
    assert statuses(result) == {"pc001": "failed", "pc002": "failed", "pc003": "changed", "pc004": "changed"}
    assert [(n.play, n.host) for n in result.not_started] == [
        ("clients", "pc005"),
        ("clients", "pc006"),
        ("clients", "pc007"),
        ("clients", "pc008"),
        ("after", "kms01"),
    ]
    assert result.stopped is not None and "max_fail_percentage 25%" in result.stopped
    assert result.counts["not_started"] == 5 and result.exit_code == 1
    assert events.of(RolloutStopping)[0].reason == result.stopped
    assert fleet.connects["kms01"] == 0


def test_failures_at_the_threshold_do_not_stop(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 8)
    fleet.error_at.update(pc001="activate")
    result = go(clients_play(tmp_path, "serial: 4\n  max_fail_percentage: 25"), inv, fleet)
    assert result.stopped is None and not result.not_started
    assert Counter(statuses(result).values()) == {"changed": 7, "failed": 1}
    assert result.exit_code == 1


def test_any_errors_fatal_stops_scheduling(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 6)
    fleet.error_at["pc001"] = "activate"
    result = go(clients_play(tmp_path, "any_errors_fatal: true"), inv, fleet, forks=1)
    assert statuses(result) == {"pc001": "failed"}
    assert [n.host for n in result.not_started] == ["pc002", "pc003", "pc004", "pc005", "pc006"]
    assert result.stopped is not None and "any_errors_fatal" in result.stopped


def test_failed_host_is_left_out_of_later_plays(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 3)
    fleet.error_at["pc002"] = "activate"
    pb = playbook(
        tmp_path, CLIENTS.format(extra="vars: {}") + "- name: check\n  hosts: clients\n  steps: [status]\n"
    )
    result = go(pb, inv, fleet)
    # hosts finish in any order within a batch
    assert sorted((h.play, h.host, h.status) for h in result.hosts if h.play == "check") == [
        ("check", "pc001", "ok"),
        ("check", "pc003", "ok"),
    ]
    assert [(s.play, s.host, s.reason) for s in result.skipped] == [
        ("check", "pc002", "failed in an earlier play")
    ]


def test_limit_narrows_every_play(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 5)
    result = go(clients_play(tmp_path), inv, fleet, limit="pc00[24]")
    assert sorted(statuses(result)) == ["pc002", "pc004"]
    assert result.counts["total"] == 2
    with pytest.raises(ConfigError, match="matches no host"):
        go(clients_play(tmp_path), inv, fleet, limit="nothing*")


def servers_inventory(tmp_path: Path, kms_hosts: int, clients: int) -> tuple[Inventory, FakeFleet]:
    """The inventory of :func:`inventory` with every client a Windows Server (threshold 5)."""
    _, fleet = inventory(tmp_path, kms_hosts, clients)
    path = tmp_path / "inventory.yml"
    text = path.read_text().replace(
        "vars: {kmsadmin_role: client}",
        "vars: {kmsadmin_role: client, kmsadmin_edition: windows-server-2022-standard}",
    )
    path.write_text(text)
    return load_inventory(path), fleet


def test_kms_hosts_are_spread_evenly_and_stay_put_under_limit(tmp_path: Path) -> None:
    inv, fleet = servers_inventory(tmp_path, 2, 10)
    pb = playbook(
        tmp_path,
        "- name: c\n  hosts: clients\n  steps:\n    - convert-client:\n"
        "        kms_host: {group: kms_hosts, var: kmsadmin_fqdn}\n",
    )
    go(pb, inv, fleet)
    pinned = {h: fleet.state[h]["service"]["kms_machine"] for h in inv.groups["clients"]}
    one, two = "kms01.corp.example", "kms02.corp.example"
    # ten servers fill both hosts to their threshold of 5: an even spread
    assert pinned == {f"pc{i:03d}": (one if i % 2 else two) for i in range(1, 11)}
    inv2, fleet2 = servers_inventory(tmp_path, 2, 10)
    go(pb, inv2, fleet2, limit="pc004")
    assert fleet2.state["pc004"]["service"]["kms_machine"] == two


def test_clients_that_cannot_fill_two_kms_hosts_all_go_to_the_first(tmp_path: Path) -> None:
    # editions unknown: each host needs a count of 25; 6 clients split 3/3 would never activate
    inv, fleet = inventory(tmp_path, 2, 6)
    pb = playbook(
        tmp_path,
        "- name: c\n  hosts: clients\n  steps:\n    - convert-client:\n"
        "        kms_host: {group: kms_hosts, var: kmsadmin_fqdn}\n",
    )
    go(pb, inv, fleet)
    pinned = {fleet.state[h]["service"]["kms_machine"] for h in inv.groups["clients"]}
    assert pinned == {"kms01.corp.example"}


# ------------------------------------------------------------------------------------------ retries
def test_connect_failure_is_retried_with_backoff(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 2)
    fleet.connect_failures["pc001"] = 2
    events = Recorder()
    result = go(clients_play(tmp_path), inv, fleet, retries=2, on_event=events)
    by_host = {h.host: h for h in result.hosts}
    assert by_host["pc001"].status == "changed" and by_host["pc001"].attempts == 3
    assert by_host["pc002"].attempts == 1
    assert fleet.connects["pc001"] == 3
    assert [(e.host, e.attempt) for e in events.of(HostRetrying)] == [("pc001", 2), ("pc001", 3)]


def test_retries_give_up_after_the_limit(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 1)
    fleet.connect_failures["pc001"] = -1
    result = go(clients_play(tmp_path), inv, fleet, retries=2)
    assert result.hosts[0].status == "failed" and result.hosts[0].attempts == 3
    assert result.hosts[0].error is not None and result.hosts[0].error["kind"] == "ConnectionFailed"


def test_timeout_while_reading_facts_is_retried(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 1)
    fleet.connect_failures["pc001"] = 1
    fleet.connect_error = HostTimeout
    result = go(clients_play(tmp_path), inv, fleet, retries=1)
    assert result.hosts[0].status == "changed" and result.hosts[0].attempts == 2


def test_wrong_credentials_are_not_retried(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 1)
    fleet.connect_failures["pc001"] = 1
    fleet.connect_error = AuthenticationFailed
    result = go(clients_play(tmp_path), inv, fleet, retries=3)
    assert result.hosts[0].status == "failed" and result.hosts[0].attempts == 1
    assert fleet.connects["pc001"] == 1


def test_connection_lost_after_a_change_is_not_retried(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 1)
    fleet.drop_at["pc001"] = "set-kms-host"
    result = go(clients_play(tmp_path), inv, fleet, retries=3)
    host = result.hosts[0]
    assert host.status == "failed" and host.attempts == 1
    assert (
        host.error is not None
        and host.error["step"] == "set-kms-host"
        and host.error["kind"] == "ConnectionFailed"
    )
    assert fleet.calls[("pc001", "install-gvlk")] == 1


def test_backoff_sleeps_are_jittered_and_growing(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 1)
    fleet.connect_failures["pc001"] = 2
    events = Recorder()
    started = time.monotonic()
    go(clients_play(tmp_path), inv, fleet, retries=2, retry_delay=0.05, on_event=events)
    delays = [e.delay for e in events.of(HostRetrying)]
    assert 0.025 <= delays[0] <= 0.05 and 0.05 <= delays[1] <= 0.1
    assert time.monotonic() - started >= sum(delays)


def test_unexpected_exception_fails_one_host_only(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 3)
    fleet.crash_at["pc002"] = "activate"
    result = go(clients_play(tmp_path), inv, fleet)
    assert statuses(result) == {"pc001": "changed", "pc002": "failed", "pc003": "changed"}
    error = next(h.error for h in result.hosts if h.host == "pc002")
    assert error is not None and error["kind"] == "RuntimeError"


# ------------------------------------------------------------------------------------------ preflight
def test_configuration_errors_come_before_any_host_is_contacted(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 2, 3)
    pb = playbook(
        tmp_path,
        "- name: kms\n  hosts: kms_hosts\n  steps:\n    - setup-host: {host_key: {env: NO_SUCH_VAR}}\n",
    )
    with pytest.raises(ConfigError, match="no host key: none of environment variable NO_SUCH_VAR is set"):
        go(pb, inv, fleet, env={})
    assert not fleet.connects
    with pytest.raises(ConfigError, match="forks"):
        go(clients_play(tmp_path), inv, fleet, forks=0)
    with pytest.raises(ConfigError, match="--resume needs a journal"):
        go(clients_play(tmp_path), inv, fleet, resume=True)


# ------------------------------------------------------------------------------------------ journal, interrupt, resume
def test_every_host_is_journaled_and_fsynced_before_it_is_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv, fleet = inventory(tmp_path, 1, 4)
    path = tmp_path / "run.journal"
    import kmsadmin.fleet.journal as journal_module

    synced: list[int] = []
    real_fsync = journal_module.os.fsync
    monkeypatch.setattr(journal_module.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    seen_in_file: list[bool] = []

    def on_event(event: Event) -> None:
        if isinstance(event, HostFinished):
            seen_in_file.append(any(e["host"] == event.host for e in read_journal(path).entries))

    result = go(clients_play(tmp_path), inv, fleet, journal=Journal(path), on_event=on_event)
    assert seen_in_file == [True] * 4
    assert len(synced) == 1 + 1 + 4 + 1  # the new file's directory entry, header, one per host, end
    state = read_journal(path)
    assert [r["run_id"] for r in state.runs] == [result.run_id]
    assert state.runs[0]["playbook"] == str((tmp_path / "play.yml").resolve())
    assert state.runs[0]["inventory"] == str((tmp_path / "inventory.yml").resolve())
    assert {e["host"]: e["status"] for e in state.entries} == dict.fromkeys(inv.groups["clients"], "changed")
    assert state.ends[0]["counts"]["changed"] == 4 and state.torn == 0


def test_interrupt_then_resume_runs_each_host_exactly_once(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 10)
    fleet.delay = 0.01
    path = tmp_path / "run.journal"
    stop = threading.Event()
    finished: list[str] = []

    def on_event(event: Event) -> None:
        if isinstance(event, HostFinished):
            finished.append(event.host)
            if len(finished) == 3:
                stop.set()

    first = go(
        clients_play(tmp_path), inv, fleet, forks=2, journal=Journal(path), on_event=on_event, stop=stop
    )
    assert first.interrupted and first.stopped == "interrupted" and first.exit_code == 130
    done_first = {h.host for h in first.hosts}
    assert 3 <= len(done_first) <= 4  # the two running hosts finish their current host
    assert {n.host for n in first.not_started} == set(inv.groups["clients"]) - done_first
    assert {e["host"] for e in read_journal(path).entries} == done_first

    events = Recorder()
    second = go(
        clients_play(tmp_path), inv, fleet, forks=2, journal=Journal(path), resume=True, on_event=events
    )
    assert {s.host for s in second.skipped} == done_first
    assert all(s.reason == "done in an earlier run" for s in second.skipped)
    assert {h.host for h in second.hosts} == set(inv.groups["clients"]) - done_first
    assert {e.host for e in events.of(HostSkipped)} == done_first
    for host in inv.groups["clients"]:
        assert fleet.calls[(host, "install-gvlk")] == 1, host
        assert fleet.connects[host] == 1, host
    state = read_journal(path)
    assert [r["resumes"] for r in state.runs] == [None, first.run_id]
    assert state.done() == {("clients", h) for h in inv.groups["clients"]}


@pytest.fixture
def python_sigint() -> Iterator[None]:
    """Python's own SIGINT handler for the test: a runner started in the background (``cmd &``) inherits
    SIGINT ignored, and then ``_thread.interrupt_main`` does nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("python_sigint")
def test_keyboard_interrupt_finishes_running_hosts_and_reports_the_rest(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 8)
    # each step takes a while, so the main thread sees the interrupt while hosts remain queued even on
    # a loaded machine
    fleet.delay = 0.05
    path = tmp_path / "run.journal"
    fired = threading.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, HostFinished) and not fired.is_set():
            fired.set()
            _thread.interrupt_main()

    result = go(clients_play(tmp_path), inv, fleet, forks=2, journal=Journal(path), on_event=on_event)
    assert result.interrupted and result.stopped == "interrupted" and result.exit_code == 130
    assert len(result.hosts) + len(result.not_started) == 8 and result.not_started
    assert all(h.status == "changed" for h in result.hosts)
    assert {e["host"] for e in read_journal(path).entries} == {h.host for h in result.hosts}
    assert read_journal(path).ends[0]["interrupted"] is True
    resumed = go(clients_play(tmp_path), inv, fleet, journal=Journal(path), resume=True)
    assert {h.host for h in resumed.hosts} == {n.host for n in result.not_started}
    assert all(fleet.calls[(h, "install-gvlk")] == 1 for h in inv.groups["clients"])


def test_resume_retries_failed_hosts(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 3)
    fleet.error_at["pc002"] = "activate"
    path = tmp_path / "run.journal"
    go(clients_play(tmp_path), inv, fleet, journal=Journal(path))
    del fleet.error_at["pc002"]
    again = go(clients_play(tmp_path), inv, fleet, journal=Journal(path), resume=True)
    assert statuses(again) == {"pc002": "changed"}
    assert {s.host for s in again.skipped} == {"pc001", "pc003"}


def test_resume_tolerates_a_torn_last_line(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 4)
    path = tmp_path / "run.journal"
    first = go(clients_play(tmp_path), inv, fleet, journal=Journal(path), limit="pc001:pc002")
    text = path.read_text()
    torn = json.dumps(
        {"type": "host", "run_id": first.run_id, "play": "clients", "host": "pc003", "status": "changed"}
    )
    path.write_text(text + torn[: len(torn) // 2])  # a crash in the middle of writing pc003's line
    state = read_journal(path)
    assert state.torn == 1 and state.done() == {("clients", "pc001"), ("clients", "pc002")}
    second = go(clients_play(tmp_path), inv, fleet, journal=Journal(path), resume=True)
    assert {h.host for h in second.hosts} == {"pc003", "pc004"}
    after = read_journal(path)
    assert after.torn == 1 and len(after.runs) == 2
    assert after.done() == {("clients", h) for h in ("pc001", "pc002", "pc003", "pc004")}


def test_journal_of_another_playbook_is_refused_on_resume(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 2)
    path = tmp_path / "run.journal"
    go(clients_play(tmp_path), inv, fleet, journal=Journal(path))
    other = playbook(tmp_path, "- name: s\n  hosts: all\n  steps: [status]\n", "other.yml")
    with pytest.raises(ConfigError, match="belongs to playbook"):
        go(other, inv, fleet, journal=Journal(path), resume=True)


def test_check_runs_do_not_count_as_done(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 2)
    path = tmp_path / "run.journal"
    go(clients_play(tmp_path), inv, fleet, journal=Journal(path), check=True)
    real = go(clients_play(tmp_path), inv, fleet, journal=Journal(path), resume=True)
    assert set(statuses(real).values()) == {"changed"} and not real.skipped


# ------------------------------------------------------------------------------------------ secrets
def test_no_host_key_or_password_in_journal_result_or_events(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 2, 0)
    fleet.crash_at["kms02"] = "install-host-key"  # an exception quoting the script, key and all
    (tmp_path / "kms.key").write_text(HOST_KEY + "\n")
    pb = playbook(
        tmp_path,
        "- name: kms\n  hosts: kms_hosts\n  steps:\n    - setup-host:\n"
        "        host_key: [{env: KMS_KEY}, {file: kms.key}]\n        csvlk: Windows Server 2022\n",
    )
    events = Recorder()
    path = tmp_path / "run.journal"
    result = go(pb, inv, fleet, journal=Journal(path), on_event=events, env={"KMS_KEY": HOST_KEY})
    assert statuses(result) == {"kms01": "changed", "kms02": "failed"}
    assert any(HOST_KEY in text for text in fleet.scripts["kms02"])  # the key did reach the host
    error = result.hosts[1].error if result.hosts[1].host == "kms02" else result.hosts[0].error
    assert error is not None and "[redacted]" in error["message"]
    outputs = [path.read_text(), json.dumps(result.to_dict()), repr(result), repr(events.events)]
    for text in outputs:
        assert HOST_KEY not in text
        assert HOST_KEY.replace("-", "") not in text
        assert PASSWORD not in text
    assert "ansible_password" not in json.dumps(result.to_dict())


def test_result_to_dict_shape(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 2)
    result = go(clients_play(tmp_path), inv, fleet)
    data = result.to_dict()
    assert set(data) == {
        "run_id",
        "playbook",
        "inventory",
        "check",
        "started",
        "finished",
        "interrupted",
        "stopped",
        "counts",
        "hosts",
        "skipped",
        "not_started",
    }
    host = data["hosts"][0]
    assert host["status"] == "changed" and host["changes"] == 3 and host["attempts"] == 1
    assert host["reports"][0]["operation"] == "convert-client"
    assert host["started"].endswith("Z")
    json.dumps(data)


# ------------------------------------------------------------------------------------------ waiting for the KMS count
def wait_for_count(fleet: FakeFleet, *hosts: str) -> None:
    """These hosts' KMS host refuses activation with 0xC004F038 (its count is below the threshold)."""
    for host in hosts:
        fleet.error_at[host] = "activate"
        fleet.error_hresult[host] = NOT_ENOUGH_COUNT


def run_one(fleet: FakeFleet, host: str, operation: str = "convert-client") -> Any:
    factory = fleet.factory_for()({"inventory_hostname": host})
    args = ConvertClientArgs(target="host", kms_host="kms.corp.example")
    return run_host(operation, host, args, factory)


def test_runner_reports_not_enough_count_at_activate_as_waiting(tmp_path: Path) -> None:
    _, fleet = inventory(tmp_path, 1, 1)
    wait_for_count(fleet, "pc001")
    report = run_one(fleet, "pc001")
    assert report.status == "waiting"
    assert [s.step for s in report.steps] == ["install-gvlk", "set-kms-host", "activate"]
    assert report.changes == 2  # everything before activate applied
    error = report.error
    assert error is not None
    assert (error["host"], error["step"], error["hresult"]) == ("pc001", "activate", NOT_ENOUGH_COUNT)
    assert "count 3, needs 25" in error["message"]
    assert error["meaning"] and "25" in error["meaning"] and "slmgr /dli" in error["remediation"]
    assert report.to_dict()["status"] == "waiting"


@pytest.mark.parametrize(
    ("step", "hresult"),
    [("activate", "0xC004F074"), ("set-kms-host", NOT_ENOUGH_COUNT), ("install-gvlk", NOT_ENOUGH_COUNT)],
)
def test_runner_reports_other_errors_as_failed(tmp_path: Path, step: str, hresult: str) -> None:
    _, fleet = inventory(tmp_path, 1, 1)
    fleet.error_at["pc001"] = step
    fleet.error_hresult["pc001"] = hresult
    report = run_one(fleet, "pc001")
    assert report.status == "failed"
    assert report.error is not None and report.error["step"] == step and report.error["hresult"] == hresult


def test_runner_waits_only_in_convert_client(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 0)
    fleet.error_at["kms01"] = "activate"
    fleet.error_hresult["kms01"] = NOT_ENOUGH_COUNT
    (tmp_path / "kms.key").write_text(HOST_KEY + "\n")
    pb = playbook(
        tmp_path,
        "- name: kms\n  hosts: kms_hosts\n  steps:\n    - setup-host:\n"
        "        host_key: {file: kms.key}\n        csvlk: Windows Server 2022\n",
    )
    result = go(pb, inv, fleet)
    assert statuses(result) == {"kms01": "failed"}


def test_waiting_hosts_do_not_trip_max_fail_percentage(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 8)
    wait_for_count(fleet, "pc001", "pc002", "pc003", "pc004")
    pb = playbook(
        tmp_path,
        CLIENTS.format(extra="serial: 4\n  max_fail_percentage: 10")
        + "- name: after\n  hosts: clients\n  steps: [status]\n",
    )
    events = Recorder()
    result = go(pb, inv, fleet, on_event=events)
    assert result.stopped is None and not result.not_started and not events.of(RolloutStopping)
    clients = {h.host: h.status for h in result.hosts if h.play == "clients"}
    assert clients == dict.fromkeys(("pc001", "pc002", "pc003", "pc004"), "waiting") | dict.fromkeys(
        ("pc005", "pc006", "pc007", "pc008"), "changed"
    )
    # a waiting host did not fail: later plays run for it
    assert not result.skipped
    assert {h.host for h in result.hosts if h.play == "after"} == set(inv.groups["clients"])
    assert result.counts["waiting"] == 4 and result.counts["failed"] == 0
    assert result.exit_code == 1  # not activated yet
    waiting = next(h for h in result.hosts if h.host == "pc001" and h.play == "clients")
    assert waiting.error is not None and waiting.error["hresult"] == NOT_ENOUGH_COUNT
    assert waiting.to_dict()["status"] == "waiting"
    finished = [e for e in events.of(HostFinished) if e.status == "waiting"]
    assert len(finished) == 4 and max(e.counts["waiting"] for e in events.events) == 4


def test_real_failures_still_trip_max_fail_percentage_next_to_waiting_hosts(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 8)
    wait_for_count(fleet, "pc001", "pc002")
    fleet.error_at["pc003"] = "activate"  # 0xC004F074: no KMS host answered
    result = go(clients_play(tmp_path, "serial: 4\n  max_fail_percentage: 10"), inv, fleet)
    assert statuses(result) == {"pc001": "waiting", "pc002": "waiting", "pc003": "failed", "pc004": "changed"}
    assert result.stopped is not None and "1 of 4 hosts in batch 1 failed" in result.stopped
    assert [n.host for n in result.not_started] == ["pc005", "pc006", "pc007", "pc008"]
    assert result.exit_code == 1


def test_any_errors_fatal_ignores_waiting_hosts(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 3)
    wait_for_count(fleet, "pc001")
    result = go(clients_play(tmp_path, "any_errors_fatal: true"), inv, fleet, forks=1)
    assert statuses(result) == {"pc001": "waiting", "pc002": "changed", "pc003": "changed"}
    assert result.stopped is None and result.exit_code == 1


def test_only_waiting_and_done_hosts_exit_one_then_zero(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 2)
    wait_for_count(fleet, "pc002")
    assert go(clients_play(tmp_path), inv, fleet).exit_code == 1
    del fleet.error_at["pc002"]
    assert go(clients_play(tmp_path), inv, fleet).exit_code == 0


def test_resume_reruns_waiting_hosts(tmp_path: Path) -> None:
    inv, fleet = inventory(tmp_path, 1, 4)
    wait_for_count(fleet, "pc002", "pc004")
    path = tmp_path / "run.journal"
    first = go(clients_play(tmp_path), inv, fleet, journal=Journal(path))
    assert Counter(statuses(first).values()) == {"changed": 2, "waiting": 2}
    state = read_journal(path)
    assert {e["host"]: e["status"] for e in state.entries}["pc002"] == "waiting"
    assert state.done() == {("clients", "pc001"), ("clients", "pc003")}
    assert state.ends[0]["counts"]["waiting"] == 2

    # the KMS host has counted enough clients by now
    del fleet.error_at["pc002"], fleet.error_at["pc004"]
    again = go(clients_play(tmp_path), inv, fleet, journal=Journal(path), resume=True)
    assert statuses(again) == {"pc002": "changed", "pc004": "changed"}
    assert {s.host for s in again.skipped} == {"pc001", "pc003"}
    assert again.exit_code == 0
    assert fleet.calls[("pc002", "activate")] == 2 and fleet.calls[("pc001", "activate")] == 1
    # the configuration steps were already in place: the second run only activated
    assert fleet.calls[("pc002", "install-gvlk")] == 1
    assert read_journal(path).done() == {("clients", h) for h in inv.groups["clients"]}


def test_the_garbage_collector_is_tuned_for_the_run_only_and_restored_even_when_stopped(
    tmp_path: Path,
) -> None:
    inv, fleet = inventory(tmp_path, 1, 4)
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    seen: list[tuple[int, int]] = []

    def on_event(event: Event) -> None:
        if isinstance(event, HostFinished) and not seen:
            seen.append((gc.get_threshold()[0], gc.get_freeze_count()))
            _thread.interrupt_main()

    result = go(clients_play(tmp_path), inv, fleet, forks=1, on_event=on_event)
    assert result.interrupted and seen
    # during the run: young collections less often, what the run was given out of the collector's reach
    threshold, frozen = seen[0]
    assert threshold >= YOUNG_COLLECTION_THRESHOLD and frozen > frozen_before
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen_before
