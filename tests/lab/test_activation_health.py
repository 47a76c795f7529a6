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

from kmsadmin import catalog
from kmsadmin.fleet.activation import analyse
from kmsadmin.fleet.inventory import load_inventory
from kmsadmin.fleet.journal import Journal
from kmsadmin.fleet.playbook import load_playbook
from kmsadmin.fleet.rollout import rollout
from kmsadmin.fleet.runner import run_host
from kmsadmin.lab import dnspublish
from kmsadmin.lab.engine import LabEngine
from kmsadmin.lab.fleet import Fleet
from kmsadmin.lab.model import utc_iso
from kmsadmin.operations.convert_client import ConvertClientArgs
from kmsadmin.render import render
from kmsadmin.values import ScriptRef, Secret
from tests.dnsserver import DnsServer, dns_server
from tests.lab.labproc import lab_process
from tests.test_rollout_lab import PLAYBOOKS, LabSessions, make_lab

pytestmark = [pytest.mark.lab]

__all__ = ["dns_server"]

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


def build_mixed_fleet(tmp_path: Path) -> tuple[Fleet, int]:
    """The fleet, and how many activation attempts the rollouts saw refused with 0xC004F038."""
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
    waiting = 0
    for resume in (False, True):
        result = rollout(
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
        waiting += sum(1 for h in result.hosts if h.status == "waiting")
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
    return fleet, waiting


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Fleet, Path, int]]:
    fleet, waiting = build_mixed_fleet(tmp_path)
    # serves the fleet just built in tmp_path/lab
    with lab_process(tmp_path, timeout=300) as (state, inventory):
        assert state == fleet.state_dir
        yield fleet, inventory, waiting


def _findings(doc: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [f for f in doc["findings"] if f["kind"] == kind]


def _activation(doc: dict[str, Any], host: str) -> dict[str, Any]:
    entry = next(h for h in doc["hosts"] if h["host"] == host)
    activation: dict[str, Any] = entry["state"]["activation"]
    return activation


def test_mixed_fleet_status_names_each_problem_with_its_fix(
    served: tuple[Fleet, Path, int], tmp_path: Path
) -> None:
    fleet, inventory, waiting = served
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
        "--report-html",
        str(tmp_path / "status.html"),
    )
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    page = (tmp_path / "status.html").read_text()
    table = page.split('id="finding-table"', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == len(doc["findings"]) + 1  # header row + one per finding
    assert "duplicate-cmid" in table and "deadkms.lab.test" in table and "slmgr /rearm" in table

    cloned = _findings(doc, "duplicate-cmid")
    assert len(cloned) == 1 and sorted(cloned[0]["hosts"]) == list(CLONED)
    assert "slmgr /rearm" in cloned[0]["fix"] and "SkipRearm" in cloned[0]["fix"]

    targets = {f["hosts"][0]: f for f in _findings(doc, "kms-target")}
    assert set(targets) == {DEAD_PIN, NON_KMS_PIN}
    # the client's own view (kms-reach): the name does not resolve; the live machine refuses TCP 1688
    assert "deadkms.lab.test:1688, which does not resolve from the client" in targets[DEAD_PIN]["message"]
    assert (
        "client001.lab.test:1688, which resolves, but nothing answers on TCP 1688"
        in (targets[NON_KMS_PIN]["message"])
    )
    reach = next(h for h in doc["hosts"] if h["host"] == NON_KMS_PIN)["state"]["kms_reach"]
    assert reach["target"]["source"] == "pinned" and reach["target"]["connects"] is False
    healthy_reach = next(h for h in doc["hosts"] if h["host"] == HEALTHY)["state"]["kms_reach"]
    assert healthy_reach["target"]["connects"] is True
    assert healthy_reach["target"]["name"] == "kms01.lab.test"
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

    # the KMS host's own log (events 12290) against what the lab recorded: its request counters, the
    # refusals the rollouts saw, and the clients that asked (three of them with one cloned CMID)
    events = next(h for h in doc["hosts"] if h["host"] == "kms01")["state"]["kms_events"]
    counters = fleet.hosts["kms01"].service.requests
    assert events["requests"] == counters.total > 0
    assert events["failures_by_hresult"] == {"0xC004F038": waiting, "0xC004F06C": counters.failed}
    assert events["failed_requests"] == waiting + counters.failed
    askers = [h for h in fleet.names("client") if h not in (DEAD_PIN, NON_KMS_PIN)]
    assert events["clients"] == len(askers) == 8
    assert events["distinct_cmids"] == len({fleet.hosts[h].service.cmid for h in askers}) == 6
    assert events["shared_cmids"] == [
        {"cmid": fleet.hosts[CLONED[0]].service.cmid, "clients": [f"{h}.lab.test" for h in CLONED]}
    ]
    assert events["requests_by_minimum_count"] == {"5": counters.total}
    assert events["dns_publishing_failures"] == 0 and events["truncated"] is False

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


def test_only_lists_the_selected_hosts_with_their_reason(served: tuple[Fleet, Path, int]) -> None:
    _, inventory, _ = served
    proc = kmsadmin("status", "-i", str(inventory), "--only", "not-activated")
    assert proc.returncode == 0, proc.stderr
    listed = {line.split("\t")[0] for line in proc.stdout.splitlines() if "\t" in line}
    assert {DEAD_PIN, NON_KMS_PIN, SKEWED, OFFICE} <= listed
    assert HEALTHY not in listed and EXPIRING not in listed
    assert "0xC004F074" in proc.stdout and "[duplicate-cmid]" in proc.stdout
    bad = kmsadmin("status", "-i", str(inventory), "--only", "broken")
    assert bad.returncode == 2 and "not-activated" in bad.stderr


def test_a_kms_host_whose_dns_publishing_fails_is_a_finding(tmp_path: Path, dns_server: DnsServer) -> None:
    # the lab publishes without the zone's TSIG key: BIND refuses the update, the KMS host logs 12293
    created = Fleet.create(tmp_path / "lab", hosts=1, kms_hosts=1, os_mix="server2022-standard=1")
    dnspublish.configure(created.state_dir, dns_server.address, "lab.test", None)
    fleet = Fleet.load(created.state_dir)
    engine = LabEngine(fleet)
    sessions = LabSessions(engine)
    key = fleet.host_keys.keys[fleet.meta.kms_groups["kms01"]]
    for ref in (
        ScriptRef("firewall", {"rule_name": "SPPSVC-In-TCP", "profiles": "Domain,Private"}),
        ScriptRef(
            "install-host-key", {"application_id": catalog.WINDOWS_APP_ID}, {"product_key": Secret(key)}
        ),
        ScriptRef(
            "activate", {"application_id": catalog.WINDOWS_APP_ID, "activation_id": "", "force": False}
        ),
    ):
        answer = json.loads(engine.run_script("kms01", render(ref).text, via="psrp").output[0])
        assert "error" not in answer, answer
    assert fleet.dns is not None and [e.ok for e in fleet.dns.events] == [False]

    report = run_host("status", "kms01", None, sessions.factory_for({}))
    assert report.status == "ok"
    events = report.state["kms_events"]
    assert events["dns_publishing_failures"] == 1 and events["dns_publishing_failed_domains"] == ["lab.test"]
    assert events["requests"] == 0 and events["log_missing"] is False
    result = analyse([report])
    found = [f for f in result.findings if f.kind == "dns-publishing"]
    assert len(found) == 1 and found[0].hosts == ("kms01",)
    assert "slmgr /cdns" in found[0].fix and "1 time(s)" in found[0].message


def test_convert_client_checks_the_kms_host_from_the_client_before_pinning(
    served: tuple[Fleet, Path, int],
) -> None:
    _, inventory, _ = served
    dead = kmsadmin(
        "convert-client", HEALTHY, "-i", str(inventory), "--kms-host", "deadkms.lab.test", "--json"
    )
    assert dead.returncode == 1, dead.stdout + dead.stderr
    report = json.loads(dead.stdout)
    assert report["status"] == "failed" and report["steps"] == []
    assert report["error"]["step"] == "preflight:kms-reach"
    assert "does not resolve from client009" in report["error"]["message"]
    assert "--force" in report["error"]["remediation"]
    # a live machine that is no KMS host: resolves, refuses TCP 1688
    live = kmsadmin(
        "convert-client", HEALTHY, "-i", str(inventory), "--kms-host", "client001.lab.test", "--json"
    )
    assert (
        live.returncode == 1 and "nothing answers on TCP 1688" in json.loads(live.stdout)["error"]["message"]
    )
    # --check changes nothing and refuses nothing: the plan carries the finding as a note
    checked = kmsadmin(
        "convert-client", HEALTHY, "-i", str(inventory), "--kms-host", "deadkms.lab.test", "--check", "--json"
    )
    planned = json.loads(checked.stdout)
    assert planned["status"] == "pending" and checked.returncode == 3, checked.stdout + checked.stderr
    assert any("does not resolve from client009" in n for n in planned["plan"]["notes"])
    # nothing was changed: the client still uses kms01 and is activated
    after = json.loads(kmsadmin("status", HEALTHY, "-i", str(inventory), "--json").stdout)["hosts"][0]
    assert after["state"]["kms_machine"] == "kms01.lab.test"
    assert after["state"]["activation"]["activated"] is True
    # the right host passes the check
    good = kmsadmin("convert-client", HEALTHY, "-i", str(inventory), "--kms-host", "kms01.lab.test:1688")
    assert good.returncode == 0, good.stdout + good.stderr


def _status_of_all(fleet: Fleet, sessions: LabSessions) -> Any:
    reports = [run_host("status", name, None, sessions.factory_for({})) for name in fleet.names()]
    hostvars = {n: {"kmsadmin_fqdn": fleet.hosts[n].fqdn} for n in fleet.names()}
    return analyse(reports, hostvars=hostvars)


def test_a_kms_host_below_its_threshold_and_an_edition_its_key_cannot_activate(tmp_path: Path) -> None:
    # three Windows 11 clients cannot bring a KMS host to 25; Windows 11 LTSC 2024 needs the Windows
    # Server 2025 host key group, which the lab's Server 2022 KMS host does not carry [PLAN24]
    fleet, inventory_path = make_lab(
        tmp_path, hosts=4, kms_hosts=1, os_mix="win11-enterprise=3,win11-enterprise-ltsc2024=1"
    )
    sessions = LabSessions(LabEngine(fleet))
    rollout(
        load_playbook(PLAYBOOKS / "kms-hosts.yml"),
        load_inventory(inventory_path),
        session_factory_for=sessions.factory_for,
        forks=4,
        retry_delay=0.0,
        env={},
    )
    args = ConvertClientArgs(target="host", kms_host="kms01.lab.test")
    outcomes = {
        n: run_host("convert-client", n, args, sessions.factory_for({})) for n in fleet.names("client")
    }
    ltsc = next(n for n in fleet.names("client") if "LTSC" in fleet.hosts[n].os.caption)
    desktops = sorted(n for n in fleet.names("client") if n != ltsc)
    assert {n: r.status for n, r in outcomes.items()} == {
        **dict.fromkeys(desktops, "waiting"),
        ltsc: "failed",
    }
    result = _status_of_all(fleet, sessions)
    kinds = {f.kind: f for f in result.findings}

    below = kinds["below-threshold"]
    assert below.hosts == ("kms01", *desktops) and below.hresult == "0xC004F038"
    assert "counted 3 machine(s)" in below.message and "3 client(s) waiting" in below.message
    assert all("waiting" in result.view(n).states() for n in desktops)  # type: ignore[union-attr]

    mismatch = kinds["edition-not-activatable"]
    assert mismatch.hosts == (ltsc,) and mismatch.hresult == "0xC004F042"
    assert "Windows Server 2022" in mismatch.message and "kmsadmin compat" in mismatch.fix
    view = result.view(ltsc)
    assert view is not None and view.reasons() == ["0xC004F042"] and "failed" in view.states()
