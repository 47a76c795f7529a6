"""The shipped playbooks against the lab: its inventory unchanged, its engine in-process as the hosts.

``kmsadmin lab``'s inventory (groups kms_hosts/clients/servers, kmsadmin_fqdn, the lab's host key
file and key group) is written by the lab itself; sessions hand each rendered script to
``LabEngine.run_script`` as the lab's WS-Man server would.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kmsadmin.fleet.inventory import load_inventory
from kmsadmin.fleet.journal import Journal, read_journal
from kmsadmin.fleet.playbook import load_playbook
from kmsadmin.fleet.rollout import rollout, transport_session_factory_for
from kmsadmin.fleet.runner import Session
from kmsadmin.lab.engine import LabEngine
from kmsadmin.lab.fleet import Fleet
from kmsadmin.lab.inventory import build_inventory
from kmsadmin.values import RenderedScript, ScriptResult
from tests.fakes import run_until_failed

PLAYBOOKS = Path(__file__).resolve().parents[1] / "playbooks"


class LabSessions:
    """In-process sessions to the lab's simulated hosts, counting steps per host."""

    def __init__(self, engine: LabEngine) -> None:
        self.engine = engine
        self.calls: Counter[tuple[str, str]] = Counter()
        #: the steps of each pipeline a host was sent, in order
        self.pipelines: dict[str, list[tuple[str, ...]]] = {}
        self.lock = threading.Lock()

    def _sent(self, host: str, steps: tuple[str, ...]) -> None:
        with self.lock:
            self.pipelines.setdefault(host, []).append(steps)

    def factory_for(self, host_vars: Mapping[str, Any]) -> Callable[[str], Session]:
        sessions = self

        class LabSession:
            def __init__(self, host: str) -> None:
                self.host = host

            def run(self, script: RenderedScript, *, deadline: float | None = None) -> ScriptResult:
                sessions._sent(self.host, (script.step,))
                return self._run(script)

            def _run(self, script: RenderedScript) -> ScriptResult:
                with sessions.lock:
                    sessions.calls[(self.host, script.step)] += 1
                out = sessions.engine.run_script(self.host, script.text, via="psrp")
                return ScriptResult(self.host, script.step, "\n".join(out.output), out.errors)

            def run_many(
                self, scripts: Sequence[RenderedScript], *, deadline: float | None = None
            ) -> list[ScriptResult]:
                sessions._sent(self.host, tuple(s.step for s in scripts))
                return run_until_failed(self._run, scripts)

            def close(self) -> None:
                return None

        return LabSession


def make_lab(tmp_path: Path, **spec: Any) -> tuple[Fleet, Path]:
    fleet = Fleet.create(tmp_path / "lab", **spec)
    path = tmp_path / "inventory.yml"
    data = build_inventory(fleet, dict.fromkeys(fleet.names(), 5985), tls=False)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return fleet, path


def test_site_playbook_sets_up_the_kms_host_then_converts_clients_and_resume_finishes(tmp_path: Path) -> None:
    fleet, inventory_path = make_lab(tmp_path, hosts=7, kms_hosts=1, os_mix="server2022-standard=7")
    inventory = load_inventory(inventory_path)
    sessions = LabSessions(LabEngine(fleet))
    journal = tmp_path / "site.journal"
    site = load_playbook(PLAYBOOKS / "site.yml")

    first = rollout(
        site,
        inventory,
        session_factory_for=sessions.factory_for,
        forks=4,
        journal=Journal(journal),
        retry_delay=0.0,
        env={},
    )
    by_host = {(h.play, h.host): h for h in first.hosts}
    assert by_host[("KMS hosts", "kms01")].status == "changed"
    clients = [h for h in first.hosts if h.play == "KMS clients"]
    assert len(clients) == 7
    # A new KMS host activates Windows Servers from the fifth distinct one on (0xC004F038 before):
    # the first four wait for the count, configured but not activated.
    waiting = [h for h in clients if h.status == "waiting"]
    assert len(waiting) == 4 and len([h for h in clients if h.status == "changed"]) == 3
    assert all((h.error or {}).get("hresult") == "0xC004F038" for h in waiting)
    assert first.counts["waiting"] == 4 and first.counts["failed"] == 0
    assert first.exit_code == 1

    second = rollout(
        site,
        inventory,
        session_factory_for=sessions.factory_for,
        forks=4,
        journal=Journal(journal),
        resume=True,
        retry_delay=0.0,
        env={},
    )
    assert {(s.play, s.host) for s in second.skipped} == {("KMS hosts", "kms01")} | {
        ("KMS clients", h.host) for h in clients if h.status == "changed"
    }
    assert {h.host: h.status for h in second.hosts} == {h.host: "changed" for h in waiting}
    assert second.exit_code == 0
    assert sessions.calls[("kms01", "install-host-key")] == 1
    retried = {h.host for h in waiting}
    for client in inventory.groups["clients"]:
        assert sessions.calls[(client, "set-kms-host")] == 1, client
        assert sessions.calls[(client, "activate")] == (2 if client in retried else 1), client
    assert read_journal(journal).done() == {("KMS hosts", "kms01")} | {
        ("KMS clients", c) for c in inventory.groups["clients"]
    }


def test_lab_host_key_never_reaches_journal_or_result(tmp_path: Path) -> None:
    fleet, inventory_path = make_lab(tmp_path, hosts=1, kms_hosts=1)
    inventory = load_inventory(inventory_path)
    key = Path(str(inventory.hosts["kms01"]["kmsadmin_lab_host_key_file"])).read_text().strip()
    password = str(inventory.hosts["kms01"]["ansible_password"])
    journal = tmp_path / "kms.journal"
    result = rollout(
        load_playbook(PLAYBOOKS / "kms-hosts.yml"),
        inventory,
        session_factory_for=LabSessions(LabEngine(fleet)).factory_for,
        journal=Journal(journal),
        env={},
    )
    assert result.hosts[0].status == "changed"
    text = journal.read_text() + repr(result.to_dict())
    assert key not in text and password not in text
    assert key[-5:] in text  # the last five characters, as slmgr shows them, are all that is kept


def test_real_transport_options_build_for_every_lab_host_before_any_connection(tmp_path: Path) -> None:
    _, inventory_path = make_lab(tmp_path, hosts=3, kms_hosts=1)
    inventory = load_inventory(inventory_path)
    factory_for = transport_session_factory_for(env={})
    for host, host_vars in inventory.hosts.items():
        assert callable(factory_for({**host_vars, "inventory_hostname": host}))


def test_a_converted_client_costs_two_pipelines_with_the_reach_check_read_with_the_facts(
    tmp_path: Path,
) -> None:
    fleet, inventory_path = make_lab(tmp_path, hosts=3, kms_hosts=1, os_mix="win11-enterprise=3")
    inventory = load_inventory(inventory_path)
    sessions = LabSessions(LabEngine(fleet))
    run = rollout(
        load_playbook(PLAYBOOKS / "site.yml"),
        inventory,
        session_factory_for=sessions.factory_for,
        forks=2,
        retry_delay=0.0,
        env={},
    )
    clients = [h for h in run.hosts if h.play == "KMS clients"]
    assert clients and all(h.status in {"changed", "waiting"} for h in clients)
    for host in clients:
        first, second = sessions.pipelines[host.host]
        # read-only first: the facts and the check that the KMS host answers from this client
        assert first == ("facts", "kms-reach")
        assert "set-kms-host" in second and second[-1] == "facts"
