"""Negotiate against the lab's real MIT KDC: when Kerberos fails and NTLM is tried (and refused), the
host's error still says why Kerberos failed, and how to fix it, in the terminal and in ``--json``.

The lab hosts refuse NTLM (a domain that restricts it), but one. Each host is given its own Kerberos
problem: addressed by a name no SPN carries, a ticket cache that does not exist, a wrong password (and
on the host that takes NTLM, a wrong password for both); a second run points at a realm whose KDC does
not answer. A host that can use Kerberos signs in as usual.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kmsadmin.lab.fleet import Fleet
from kmsadmin.lab.inventory import build_inventory
from kmsadmin.transports.faults import NTLM_BLOCKED
from tests.lab.kerberos import PASSWORD, USER, Realm, kerberos_endpoints, start_realm
from tests.lab.served import served_fleet

pytestmark = [pytest.mark.lab, pytest.mark.slow]

WRONG_PASSWORD = "Not-The-Lab-Passw0rd-51x"


@pytest.fixture(scope="module")
def realm() -> Iterator[Realm]:
    yield from start_realm()


def _status(
    inventory: Path, *hosts: str, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "kmsadmin", "status", "-i", str(inventory), *hosts, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc, json.loads(proc.stdout)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_kerberos_reason_is_kept_when_negotiate_falls_back_to_ntlm(realm: Realm, tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path / "lab", hosts=4, kms_hosts=1, os_mix="server2022-standard=4")
    configs = kerberos_endpoints(realm, fleet, tls_hosts=fleet.names(), ntlm_hosts={"client004"})
    with served_fleet(fleet, tmp_path / "tls", configs) as server:
        ports = {name: server.port(name) for name in fleet.names()}
        data = build_inventory(fleet, ports, tls=True, ca_cert=server.ca_path, kerberos_realm=realm.kdc.realm)
        hosts: dict[str, dict[str, Any]] = {}
        for group in data["all"]["children"].values():
            for name, entry in (group.get("hosts") or {}).items():
                if entry:
                    hosts[name] = entry
                    entry["ansible_psrp_auth"] = "negotiate"
                    entry["ansible_password"] = PASSWORD  # the realm's password of labadmin@LAB.TEST
                    entry.pop("ansible_winrm_transport", None)
        # addressed by IP with no override: the SPN is HTTP/client001, which the KDC does not know
        for var in ("ansible_psrp_negotiate_hostname_override", "ansible_winrm_kerberos_hostname_override"):
            hosts["client001"].pop(var)
        # a ticket cache that does not exist (no kinit was run)
        hosts["client002"]["kmsadmin_kerberos_ccache"] = f"FILE:{tmp_path / 'no-kinit-ccache'}"
        # the KDC refuses the password (and so would NTLM, which the host refuses anyway)
        hosts["client003"]["ansible_password"] = WRONG_PASSWORD
        # a host that takes NTLM: the wrong password fails Kerberos, then NTLM
        hosts["client004"]["ansible_password"] = WRONG_PASSWORD
        inventory = tmp_path / "inventory.yml"
        inventory.write_text(yaml.safe_dump(data, sort_keys=False))
        env = {
            **os.environ,
            "KRB5_CONFIG": str(realm.kdc.krb5_conf),
            "KRB5CCNAME": f"FILE:{tmp_path / 'none'}",
        }
        proc, report = _status(inventory, "all", env=env)

        # a realm whose KDC does not answer: every Kerberos attempt fails before the host is asked
        dead = tmp_path / "krb5-dead-kdc.conf"
        dead.write_text(realm.kdc.krb5_conf.read_text().replace(f":{realm.kdc.port}", f":{_closed_port()}"))
        dead_proc, dead_report = _status(inventory, "kms01", env={**env, "KRB5_CONFIG": str(dead)})
        # the terminal (no --json) shows the code too
        terminal = subprocess.run(
            [sys.executable, "-m", "kmsadmin", "status", "-i", str(inventory), "client002"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env=env,
        )

    errors = {h["host"]: h["error"] for h in report["hosts"] if h["status"] == "failed"}
    assert set(errors) == {"client001", "client002", "client003", "client004"}, errors
    statuses = {h["host"]: h["status"] for h in report["hosts"]}
    assert statuses["kms01"] == "ok", "a host Kerberos works for still signs in"
    expected = {
        # (Kerberos error, GSSAPI's words, a word of the fix)
        "client001": (
            "KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN",
            "Server HTTP/client001@LAB.TEST not found",
            "DNS name",
        ),
        "client002": ("KRB5_FCC_NOFILE", "No credentials cache found", "kinit"),
        "client003": ("KRB5KDC_ERR_PREAUTH_FAILED", "", "password"),
    }
    for name, (code, words, fix) in expected.items():
        error = errors[name]
        assert error["meaning"] == "STATUS_NTLM_BLOCKED" and error["host"] == name, error
        assert error["hresult"] == NTLM_BLOCKED == "0xC0000418", error
        message = error["message"]
        assert "fell back to NTLM because Kerberos failed" in message, message
        assert code in message and words in message, message
        assert fix in error["remediation"], error
        assert "SpnegoError" not in message and "Major (" not in message, "GSSAPI boilerplate is dropped"
        assert len(message) < 600
        # the same reason in the terminal's text, and never a password
        assert code in proc.stderr + proc.stdout
    both = errors["client004"]
    assert both["meaning"] is None and "refused the credentials of labadmin@LAB.TEST" in both["message"], both
    assert "with NTLM; Kerberos failed: the KDC refused the password" in both["message"], both
    assert "KRB5KDC_ERR_PREAUTH_FAILED" in both["message"] and "check the password" in both["remediation"]
    everything = proc.stdout + proc.stderr + dead_proc.stdout + dead_proc.stderr
    assert WRONG_PASSWORD not in everything and PASSWORD not in everything
    assert proc.returncode == 1

    dead_error = dead_report["hosts"][0]["error"]
    assert dead_error["meaning"] == "STATUS_NTLM_BLOCKED" and dead_error["hresult"] == NTLM_BLOCKED, (
        dead_error
    )
    assert terminal.returncode == 1 and "Traceback" not in terminal.stderr, terminal.stderr
    shown = terminal.stdout + terminal.stderr
    assert "client002" in shown and "refuses NTLM" in shown, shown
    assert "client002: facts: 0xC0000418 (STATUS_NTLM_BLOCKED)" in shown, shown
    assert "fix: sign in with Kerberos" in shown, shown
    assert "KRB5_KDC_UNREACH" in dead_error["message"] and "LAB.TEST" in dead_error["message"], dead_error
    assert "krb5.conf" in dead_error["remediation"]
    assert dead_proc.returncode == 1
    assert USER in dead_error["message"]
