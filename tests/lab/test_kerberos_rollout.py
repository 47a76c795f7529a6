"""The shipped site playbook over real WinRM against a lab domain that signs in with Kerberos and refuses
NTLM: the lab's MIT KDC, each host accepting tickets with its own keytab, kmsadmin's real transports.

* every host reaches its end state; over HTTP every body travels Kerberos-encrypted, over HTTPS every
  handshake carries channel bindings the host verified;
* the same fleet with one host behind a wrong SPN, one whose clock is 10 minutes off, one with an
  expired ticket and one told to use NTLM: each fails alone with its own error, the rest succeed;
* without python-gssapi a Kerberos host fails alone with "install kmsadmin[kerberos]".
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

from kmsadmin.fleet.inventory import load_inventory
from kmsadmin.fleet.playbook import load_playbook
from kmsadmin.fleet.rollout import RolloutResult, rollout, transport_session_factory_for
from kmsadmin.lab.engine import LabEngine
from kmsadmin.lab.fleet import Fleet
from kmsadmin.lab.inventory import build_inventory
from kmsadmin.lab.server import LabServer
from tests.lab.kerberos import CLOCKSKEW, USER, Realm, kerberos_endpoints, start_realm
from tests.lab.labproc import lab_process

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "playbooks" / "site.yml"
#: the lab's HTTPS hosts; the others listen on HTTP with message encryption
TLS_HOSTS = {"client002", "client004", "client006"}


@pytest.fixture(scope="module")
def realm() -> Iterator[Realm]:
    yield from start_realm()


def kerberos_lab(
    tmp_path: Path, realm: Realm, *, skewed: str | None = None
) -> tuple[Fleet, LabServer, dict[str, Any]]:
    """Seven Windows Servers and a KMS host, all refusing NTLM; the inventory as `lab up --kerberos`
    writes it, with the ticket of a `kinit` as the credentials."""
    fleet = Fleet.create(tmp_path / "lab", hosts=7, kms_hosts=1, os_mix="server2022-standard=7")
    assert fleet.username == USER
    configs = kerberos_endpoints(realm, fleet, tls_hosts=TLS_HOSTS, skewed=skewed)
    server = LabServer(LabEngine(fleet), configs, state_dir=tmp_path / "tls")
    server.start()
    ports = {name: server.port(name) for name in fleet.names()}
    data = build_inventory(fleet, ports, tls=True, ca_cert=server.ca_path, kerberos_realm=realm.kdc.realm)
    ccache = realm.ticket(tmp_path)
    for group in data["all"]["children"].values():
        for name, entry in (group.get("hosts") or {}).items():
            if not entry:
                continue
            entry["kmsadmin_kerberos_ccache"] = ccache
            del entry["ansible_password"]  # the ticket is the credential
            if name not in TLS_HOSTS:
                entry["ansible_psrp_protocol"] = "http"
                entry["ansible_psrp_cert_validation"] = "ignore"
    return fleet, server, data


#: site.yml's KMS host play, then every client at once: site.yml's canary batch would stop the run at
#: the first failed client, and this run is about each host's own failure.
ALL_CLIENTS = """\
- import_playbook: {kms_hosts}
- name: KMS clients, all at once
  hosts: clients:!kms_hosts
  steps:
    - convert-client:
        key: auto
        kms_host: {{group: kms_hosts, var: kmsadmin_fqdn}}
        office: false
"""


def run(tmp_path: Path, data: dict[str, Any], name: str, playbook: Path = SITE) -> RolloutResult:
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return rollout(
        load_playbook(playbook),
        load_inventory(path),
        session_factory_for=transport_session_factory_for(env={}),
        forks=4,
        retry_delay=0.0,
        deadline=60,
        env={},
    )


def test_site_rollout_in_a_kerberos_domain_that_refuses_ntlm(realm: Realm, tmp_path: Path) -> None:
    fleet, server, data = kerberos_lab(tmp_path, realm)
    try:
        first = run(tmp_path, data, "first")
        assert first.counts["failed"] == 0, [h.error for h in first.hosts if h.status == "failed"]
        # a new KMS host counts 5 servers before it activates them: the rest activate on the next run
        second = run(tmp_path, data, "second")
        assert second.counts["failed"] == 0 and second.counts["waiting"] == 0, second.counts
        assert second.exit_code == 0
        for report in second.hosts:
            assert report.reports[-1].state["license_status_name"] == "Licensed", report.host
        for name in fleet.names():
            stats = server.auth_stats(name)
            assert stats.get("kerberos", 0) >= 2 and "ntlm" not in stats and "refused" not in stats, (
                name,
                stats,
            )
            if name in TLS_HOSTS:
                # every handshake carried the tls-server-end-point bindings and they matched
                assert stats["channel_bound"] == stats["kerberos"], (name, stats)
                assert "encrypted" not in stats
            else:
                # every envelope travelled wrapped with the Kerberos session key; none in the clear
                assert stats["encrypted"] >= 4 and "plain" not in stats, (name, stats)
    finally:
        server.stop()


def test_each_broken_host_gets_its_own_error_and_the_rest_succeed(realm: Realm, tmp_path: Path) -> None:
    fleet, server, data = kerberos_lab(tmp_path, realm, skewed="client002")
    clients = data["all"]["children"]["clients"]["hosts"]
    clients["client001"]["ansible_psrp_negotiate_hostname_override"] = "wrong-name.lab.test"
    expired = realm.ticket(tmp_path, "expired", lifetime="1s")
    clients["client003"]["kmsadmin_kerberos_ccache"] = expired
    clients["client004"].update(
        {"ansible_psrp_auth": "ntlm", "ansible_user": USER, "ansible_password": fleet.password}
    )
    playbook = tmp_path / "all-clients.yml"
    playbook.write_text(ALL_CLIENTS.format(kms_hosts=ROOT / "playbooks" / "kms-hosts.yml"))
    time.sleep(1 + CLOCKSKEW + 0.5)  # the ticket and the realm's tolerance have run out
    try:
        result = run(tmp_path, data, "broken", playbook)
    finally:
        server.stop()
    by_host = {h.host: h for h in result.hosts}
    errors = {name: h.error for name, h in by_host.items() if h.status == "failed"}
    assert set(errors) == {"client001", "client002", "client003", "client004"}, errors
    expected = {
        "client001": ("KerberosFailed", "KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN", "HTTP/wrong-name.lab.test"),
        "client002": ("KerberosFailed", "KRB5KRB_AP_ERR_SKEW", "clock skew"),
        "client003": ("KerberosFailed", "KRB5KRB_AP_ERR_TKT_EXPIRED", "expired"),
        "client004": ("NtlmRefused", "STATUS_NTLM_BLOCKED", "refuses NTLM"),
    }
    for name, (kind, meaning, text) in expected.items():
        error = errors[name]
        assert error is not None
        assert (error["kind"], error["meaning"]) == (kind, meaning), (name, error)
        assert text in error["message"] and error["host"] == name and error["remediation"], error
    for name in ("kms01", "client005", "client006", "client007"):
        assert by_host[name].status in ("changed", "waiting", "ok"), (name, by_host[name].error)
    assert by_host["kms01"].status == "changed"
    assert result.exit_code == 1


def _kmsadmin(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmsadmin", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
        env=env,
    )


def without_gssapi(tmp_path: Path) -> dict[str, str]:
    """An environment where python-gssapi is "not installed": importing it fails as when it is absent."""
    shadow = tmp_path / "no-gssapi" / "gssapi"
    shadow.mkdir(parents=True, exist_ok=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'gssapi'\", name='gssapi')\n")
    return {**os.environ, "PYTHONPATH": str(shadow.parent)}


def test_lab_up_kerberos_without_gssapi_says_what_to_install(tmp_path: Path) -> None:
    up = _kmsadmin(
        "lab",
        "up",
        "--kerberos",
        "--hosts",
        "1",
        "--state-dir",
        str(tmp_path / "lab"),
        env=without_gssapi(tmp_path),
    )
    assert up.returncode == 4 and "install kmsadmin[kerberos]" in up.stderr + up.stdout
    assert "Traceback" not in up.stderr


def test_without_gssapi_a_kerberos_host_fails_alone(tmp_path: Path) -> None:
    with lab_process(tmp_path, "--kerberos", "--hosts", "4", timeout=300) as (state, inventory):
        runtime = json.loads((state / "runtime.json").read_text())
        doc = yaml.safe_load(inventory.read_text())
        password = json.loads((state / "credentials.json").read_text())["password"]
        for group in doc["all"]["children"].values():
            for name, entry in (group.get("hosts") or {}).items():
                if entry and name != "client002":
                    # everyone else signs in with NTLM, which this lab still accepts
                    entry.update(
                        {"ansible_psrp_auth": "ntlm", "ansible_user": USER, "ansible_password": password}
                    )
        inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
        env = {**without_gssapi(tmp_path), "KRB5_CONFIG": runtime["krb5_config"]}
        report = tmp_path / "report.json"
        playbook = tmp_path / "all-clients.yml"
        playbook.write_text(ALL_CLIENTS.format(kms_hosts=ROOT / "playbooks" / "kms-hosts.yml"))
        proc = _kmsadmin(
            "rollout",
            str(playbook),
            "-i",
            str(inventory),
            "--no-progress",
            "--report-json",
            str(report),
            env=env,
        )
        assert "Traceback" not in proc.stdout + proc.stderr
        result = json.loads(report.read_text())
        doctor = _kmsadmin("doctor", "client002", "-i", str(inventory), "--json", env=env)
    by_host = {h["host"]: h for h in result["hosts"]}
    failed = {name for name, h in by_host.items() if h["status"] == "failed"}
    assert failed == {"client002"}, {n: by_host[n]["error"] for n in failed}
    error = by_host["client002"]["error"]
    # the first pipeline of a converting client: its facts and the KMS reach check, read together
    assert error["step"] == "facts+kms-reach" and "python-gssapi" in error["message"]
    assert "install kmsadmin[kerberos]" in error["remediation"]
    assert by_host["kms01"]["status"] == "changed"
    for name in ("client001", "client003", "client004"):
        assert by_host[name]["status"] in ("changed", "waiting"), by_host[name]
    assert proc.returncode == 1
    assert "install kmsadmin[kerberos]" in proc.stdout + proc.stderr
    assert doctor.returncode == 1 and "Traceback" not in doctor.stderr
    auth = {c["check"]: c for c in json.loads(doctor.stdout)["checks"]}["auth"]
    assert not auth["ok"] and "install kmsadmin[kerberos]" in auth["fix"]


def test_lab_up_kerberos_refusing_ntlm_serves_the_site_rollout(tmp_path: Path) -> None:
    options = ("--kerberos", "--refuse-ntlm", "--hosts", "3", "--os-mix", "server2022-standard=3")
    with lab_process(tmp_path, *options, timeout=300) as (state, inventory):
        runtime = json.loads((state / "runtime.json").read_text())
        password = json.loads((state / "credentials.json").read_text())["password"]
        env = {**os.environ, "KRB5_CONFIG": runtime["krb5_config"]}
        env.pop("KRB5CCNAME", None)
        host = yaml.safe_load(inventory.read_text())["all"]["children"]["kms_hosts"]["hosts"]["kms01"]
        assert host["ansible_psrp_auth"] == "kerberos" and host["ansible_user"] == f"{USER}@LAB.TEST"
        report = tmp_path / "report.json"
        proc = _kmsadmin(
            "rollout", str(SITE), "-i", str(inventory), "--no-progress", "--report-json", str(report), env=env
        )
        result = json.loads(report.read_text())
        assert result["summary"]["failed"] == 0, proc.stdout + proc.stderr
        doctor = _kmsadmin("doctor", "kms01", "-i", str(inventory), "--json", env=env)
        checks = {c["check"]: c for c in json.loads(doctor.stdout)["checks"]}
        assert checks["auth"]["ok"] and "negotiated Kerberos" in checks["auth"]["detail"], checks
        assert checks["encryption"]["detail"] == "TLS with channel binding (tls-server-end-point)"
        # the same inventory told to use NTLM: refused, with the fix
        doc = yaml.safe_load(inventory.read_text())
        doc["all"]["vars"]["ansible_psrp_auth"] = "ntlm"
        for group in doc["all"]["children"].values():
            for entry in (group.get("hosts") or {}).values():
                if entry:
                    entry.pop("ansible_psrp_auth")
                    entry["ansible_user"] = USER
        ntlm_inventory = tmp_path / "ntlm.yml"
        ntlm_inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
        proc = _kmsadmin("status", "-i", str(ntlm_inventory), "--json", env=env)
        doctor = _kmsadmin("doctor", "client001", "-i", str(ntlm_inventory), "--json", env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "refuses NTLM" in proc.stdout + proc.stderr
    assert password not in proc.stdout + proc.stderr
    assert doctor.returncode == 1 and "Traceback" not in doctor.stderr
    auth = {c["check"]: c for c in json.loads(doctor.stdout)["checks"]}["auth"]
    assert not auth["ok"] and "refuses NTLM" in auth["detail"] and "Kerberos" in auth["fix"]
