"""Lab DNS publishing and discovery against a real BIND 9, and ``kmsadmin dns`` against what it publishes.

The lab engine runs the project's rendered step scripts in-process (as the WS-Man server calls it);
KMS hosts register ``_vlmcs._tcp.lab.test`` by TSIG-signed dynamic update, clients look it up on the
same server. One test drives ``kmsadmin dns publishing`` over real WinRM to the lab server.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.update
import pytest
import typer
from typer.testing import CliRunner

from kmsadmin import catalog
from kmsadmin.cli.dns import dns_app
from kmsadmin.dns.resolver import DnsClient
from kmsadmin.dns.tsig import load_key_file
from kmsadmin.lab import dnspublish
from kmsadmin.lab.engine import LabEngine
from kmsadmin.lab.fleet import Fleet
from kmsadmin.render import render
from kmsadmin.values import ScriptRef, Secret
from tests.dnsserver import DnsServer, dns_server
from tests.lab.labproc import lab_process

__all__ = ["dns_server"]

W = catalog.WINDOWS_APP_ID


def cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(dns_app, name="dns")
    return app


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli(), list(args))


def _listen() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


@pytest.fixture
def listener() -> Iterator[int]:
    """A real TCP listener standing in for a KMS host's RPC port (the DNS check probes it)."""
    yield from _listen()


@pytest.fixture
def listener2() -> Iterator[int]:
    """A second KMS port (two hosts on one loopback address and port would be one host listed twice)."""
    yield from _listen()


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DnsLab:
    """A lab fleet configured with the BIND server, its engine and step helpers."""

    def __init__(self, path: Path, server: DnsServer, **spec: Any) -> None:
        created = Fleet.create(path, **spec)
        dnspublish.configure(created.state_dir, server.address, "lab.test", server.key_file)
        self.fleet = Fleet.load(created.state_dir)
        assert self.fleet.dns is not None
        self.publisher = self.fleet.dns
        self.engine = LabEngine(self.fleet)
        self.server = server

    def run(
        self, host: str, step: str, secrets: dict[str, str] | None = None, **params: Any
    ) -> dict[str, Any]:
        ref = ScriptRef(step, params, {k: Secret(v) for k, v in (secrets or {}).items()})
        out = self.engine.run_script(host, render(ref).text, via="psrp")
        assert not out.errors, out.errors
        answer: dict[str, Any] = json.loads(out.output[0])
        return answer

    def settings(self, host: str, **wanted: Any) -> dict[str, Any]:
        params = dict.fromkeys(
            ("listening_port", "dns_publishing", "low_priority", "activation_interval", "renewal_interval"),
            "",
        )
        params.update(wanted)
        return self.run(host, "kms-host-settings", **params)

    def setup_kms(self, host: str = "kms01", *, publishing: bool = True) -> None:
        key = self.fleet.host_keys.keys[self.fleet.meta.kms_groups[host]]
        assert "error" not in self.run(host, "firewall", rule_name="SPPSVC-In-TCP", profiles="Domain,Private")
        assert "error" not in self.run(host, "install-host-key", {"product_key": key}, application_id=W)
        if not publishing:
            assert self.settings(host, dns_publishing=False)["changed"]
        answer = self.activate(host)
        assert "error" not in answer, answer

    def activate(self, host: str, force: bool = False) -> dict[str, Any]:
        return self.run(host, "activate", application_id=W, activation_id="", force=force)

    def srv(self) -> list[tuple[str, int]]:
        _, records = DnsClient((self.server.host, self.server.port)).srv("lab.test")
        return sorted((r.target, r.port) for r in records)


def add_address(server: DnsServer, name: str, address: str = "127.0.0.1") -> None:
    """Register an A record as an administrator (or the host's DNS client) would."""
    key = load_key_file(server.key_file)
    update = dns.update.UpdateMessage("lab.test.", keyring=key.keyring(), keyname=key.keyname())
    update.replace(name + ".", 300, "A", address)
    response = dns.query.tcp(update, server.host, timeout=3, port=server.port)
    assert response.rcode() == dns.rcode.NOERROR


def write_inventory(path: Path, kms: dict[str, int], clients: dict[str, str] | None = None) -> Path:
    lines = ["all:", "  children:", "    kms_hosts:", "      hosts:"]
    for name, port in kms.items():
        lines.append(f"        {name}: {{kmsadmin_fqdn: {name}.lab.test, kmsadmin_kms_port: {port}}}")
    lines += ["    clients:", "      hosts:"]
    for name, suffix in (clients or {"client001": "lab.test"}).items():
        lines.append(f"        {name}: {{kmsadmin_fqdn: {name}.{suffix}}}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def check_json(server: DnsServer, inventory: Path, domain: str = "lab.test") -> tuple[int, dict[str, Any]]:
    result = invoke("dns", "check", domain, "--server", server.address, "-i", str(inventory), "--json")
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.output)


# ---------------------------------------------------------------------------------------- publishing


def test_kms_host_publishes_and_dns_check_finds_and_probes_it(
    tmp_path: Path, dns_server: DnsServer, listener: int
) -> None:
    lab = DnsLab(tmp_path / "lab", dns_server, hosts=2, kms_hosts=1, os_mix="server2022-standard=2")
    assert lab.srv() == []
    lab.setup_kms()
    # activating the host key registers the record with the default port [kms-create-host]
    assert lab.srv() == [("kms01.lab.test", 1688)]
    # a new listening port restarts sppsvc, which registers again and replaces the old record
    assert lab.settings("kms01", listening_port=listener)["changed"]
    assert lab.srv() == [("kms01.lab.test", listener)]
    assert all(e.ok for e in lab.publisher.events) and len(lab.publisher.events) == 2

    code, report = check_json(dns_server, write_inventory(tmp_path / "inv.yml", {"kms01": listener}))
    assert code == 0, report["findings"]
    (status,) = report["domains"]
    (record,) = status["records"]
    assert record["target"] == "kms01.lab.test" and record["port"] == listener
    assert record["addresses"] == ["127.0.0.1"] and record["port_open"] is True
    assert record["inventory_host"] == "kms01"
    assert report["healthy"] is True


def test_publishing_off_keeps_records_and_stops_reregistration(tmp_path: Path, dns_server: DnsServer) -> None:
    lab = DnsLab(tmp_path / "lab", dns_server, hosts=1, kms_hosts=1, os_mix="server2022-standard=1")
    lab.setup_kms()
    assert lab.srv() == [("kms01.lab.test", 1688)]
    assert lab.settings("kms01", dns_publishing=False)["changed"]
    # slmgr /cdns stops publishing; what is in DNS stays
    assert lab.srv() == [("kms01.lab.test", 1688)]
    assert (
        invoke(
            "dns",
            "record",
            "remove",
            "lab.test",
            "--target",
            "kms01.lab.test",
            "--via",
            "rfc2136",
            "--server",
            dns_server.address,
            "--tsig-key-file",
            str(dns_server.key_file),
        ).exit_code
        == 0
    )
    lab.fleet.advance(timedelta(hours=25))
    lab.run("kms01", "facts")
    assert lab.srv() == []
    # publishing on again: the service restarts and registers
    assert lab.settings("kms01", dns_publishing=True)["changed"]
    assert lab.srv() == [("kms01.lab.test", 1688)]
    # and it registers again 24 hours later on its own
    assert (
        invoke(
            "dns",
            "record",
            "remove",
            "lab.test",
            "--target",
            "kms01.lab.test",
            "--via",
            "rfc2136",
            "--server",
            dns_server.address,
            "--tsig-key-file",
            str(dns_server.key_file),
        ).exit_code
        == 0
    )
    lab.run("kms01", "facts")
    assert lab.srv() == []
    lab.fleet.advance(timedelta(hours=25))
    lab.run("kms01", "facts")
    assert lab.srv() == [("kms01.lab.test", 1688)]


def test_record_added_by_rfc2136_for_a_host_that_does_not_publish(
    tmp_path: Path, dns_server: DnsServer, listener: int, listener2: int
) -> None:
    lab = DnsLab(tmp_path / "lab", dns_server, hosts=2, kms_hosts=2, os_mix="server2022-standard=2")
    lab.setup_kms("kms01")
    lab.setup_kms("kms02", publishing=False)
    assert lab.srv() == [("kms01.lab.test", 1688)]
    assert lab.settings("kms01", listening_port=listener)["changed"]
    assert lab.settings("kms02", listening_port=listener2)["changed"]
    assert lab.srv() == [("kms01.lab.test", listener)]

    args = [
        "dns",
        "record",
        "add",
        "lab.test",
        "--target",
        "kms02.lab.test",
        "--port",
        str(listener2),
        "--via",
        "rfc2136",
        "--server",
        dns_server.address,
        "--tsig-key-file",
        str(dns_server.key_file),
        "--json",
    ]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["changed"] is True
    assert json.loads(invoke(*args).output)["changed"] is False  # idempotent
    secret = load_key_file(dns_server.key_file).secret.value
    assert secret not in first.output
    assert lab.srv() == [("kms01.lab.test", listener), ("kms02.lab.test", listener2)]

    add_address(dns_server, "kms02.lab.test")
    inventory = write_inventory(tmp_path / "inv.yml", {"kms01": listener, "kms02": listener2})
    code, report = check_json(dns_server, inventory)
    assert code == 0, report["findings"]
    assert sorted(r["target"] for r in report["domains"][0]["records"]) == [
        "kms01.lab.test",
        "kms02.lab.test",
    ]


def test_unsigned_update_is_refused_and_reported(dns_server: DnsServer) -> None:
    result = invoke(
        "dns",
        "record",
        "add",
        "lab.test",
        "--target",
        "kms09.lab.test",
        "--via",
        "rfc2136",
        "--server",
        dns_server.address,
    )
    assert result.exit_code == 1
    assert "REFUSED" in result.output and "allow-update" in result.output


# --------------------------------------------------------------------------------------- stale records


def test_stale_records_are_reported(tmp_path: Path, dns_server: DnsServer, listener: int) -> None:
    dead = closed_port()
    key = ["--via", "rfc2136", "--server", dns_server.address, "--tsig-key-file", str(dns_server.key_file)]
    for target, port in (("kms01.lab.test", listener), ("dead.lab.test", dead), ("gone.lab.test", 1688)):
        result = invoke("dns", "record", "add", "lab.test", "--target", target, "--port", str(port), *key)
        assert result.exit_code == 0, result.output
    add_address(dns_server, "kms01.lab.test")
    add_address(dns_server, "dead.lab.test")
    inventory = write_inventory(tmp_path / "inv.yml", {"kms01": listener, "dead": dead})
    code, report = check_json(dns_server, inventory)
    assert code == 1
    by_target = {(f["kind"], (f["record"] or {}).get("target")): f for f in report["findings"]}
    refused = by_target[("stale", "dead.lab.test")]
    assert refused["client_error"] == "0x800706BA" and "nothing answers" in refused["message"]
    assert "0xC004F074" in refused["message"]
    unresolved = [f for f in report["findings"] if (f["record"] or {}).get("target") == "gone.lab.test"]
    assert {f["kind"] for f in unresolved} == {"stale"}
    assert any("does not resolve" in f["message"] for f in unresolved)
    assert any("not a KMS host in the inventory" in f["message"] for f in unresolved)
    assert ("stale", "kms01.lab.test") not in by_target


def test_missing_and_wrong_port_and_wrong_zone(tmp_path: Path, dns_server: DnsServer, listener: int) -> None:
    inventory = write_inventory(
        tmp_path / "inv.yml", {"kms01": listener}, {"client001": "lab.test", "client002": "branch.lab.test"}
    )
    code, report = check_json(dns_server, inventory)
    assert code == 1
    assert {(f["kind"], f["domain"], f["client_error"]) for f in report["findings"]} >= {
        ("missing", "lab.test", "0x8007232B"),
        ("missing", "branch.lab.test", "0x8007232B"),
    }
    key = ["--via", "rfc2136", "--server", dns_server.address, "--tsig-key-file", str(dns_server.key_file)]
    assert (
        invoke(
            "dns", "record", "add", "lab.test", "--target", "kms01.lab.test", "--port", "1688", *key
        ).exit_code
        == 0
    )
    add_address(dns_server, "kms01.lab.test")
    code, report = check_json(dns_server, inventory)
    kinds = {(f["kind"], f["domain"]) for f in report["findings"]}
    assert ("wrong-port", "lab.test") in kinds
    assert ("wrong-zone", "branch.lab.test") in kinds
    wrong_zone = next(f for f in report["findings"] if f["kind"] == "wrong-zone")
    assert wrong_zone["client_error"] == "0x8007232B"
    assert (
        "publish-list" in wrong_zone["remediation"]
        and "--lookup-domain lab.test" in wrong_zone["remediation"]
    )
    text = invoke("dns", "check", "lab.test", "--server", dns_server.address, "-i", str(inventory))
    assert text.exit_code == 1 and "ERROR wrong-port" in text.output


# ------------------------------------------------------------------------------------------- discovery


def test_client_without_pinned_host_activates_through_dns(tmp_path: Path, dns_server: DnsServer) -> None:
    lab = DnsLab(tmp_path / "lab", dns_server, hosts=5, kms_hosts=1, os_mix="server2022-standard=5")
    # no KMS host has published yet: the SRV lookup finds no name [ERR] 0x8007232B
    answer = lab.activate("client001")
    assert answer["error"]["hresult"] == "0x8007232B", answer
    lab.setup_kms()
    # servers activate at a count of 5 [PLAN24]: the first four requests reach the host and are counted
    for name in ("client001", "client002", "client003", "client004"):
        assert lab.activate(name)["error"]["hresult"] == "0xC004F038"
    assert "error" not in lab.activate("client005")
    for name in ("client001", "client002", "client003", "client004"):
        assert "error" not in lab.activate(name)
    facts = lab.run("client005", "facts")["data"]
    assert facts["service"]["discovered_kms"] == "kms01.lab.test"

    key = ["--via", "rfc2136", "--server", dns_server.address, "--tsig-key-file", str(dns_server.key_file)]
    assert invoke("dns", "record", "remove", "lab.test", "--target", "kms01.lab.test", *key).exit_code == 0
    assert invoke("dns", "record", "add", "lab.test", "--target", "ghost.lab.test", *key).exit_code == 0
    # the only listed host does not exist: every host the client tried failed [ERR] 0xC004F074
    answer = lab.activate("client002", force=True)
    assert answer["error"]["hresult"] == "0xC004F074", answer
    assert "ghost.lab.test" in answer["error"]["message"]


def test_dns_publishing_command_over_winrm(tmp_path: Path, dns_server: DnsServer) -> None:
    from kmsadmin.lab.api import EndpointConfig
    from kmsadmin.lab.inventory import write_inventory as write_lab_inventory
    from kmsadmin.lab.server import LabServer

    lab = DnsLab(tmp_path / "lab", dns_server, hosts=1, kms_hosts=1, os_mix="server2022-standard=1")
    lab.setup_kms()
    configs = [
        EndpointConfig(name=n, username=lab.fleet.username, password=lab.fleet.password, tls=True)
        for n in lab.fleet.names()
    ]
    server = LabServer(lab.engine, configs, state_dir=tmp_path / "tls")
    server.start()
    try:
        ports = {n: server.port(n) for n in lab.fleet.names()}
        inventory = write_lab_inventory(
            tmp_path / "lab.yml", lab.fleet, ports, tls=True, ca_cert=server.ca_path
        )
        off = invoke("dns", "publishing", "off", "-i", str(inventory), "--json")
        assert off.exit_code == 0, off.output
        (run,) = json.loads(off.output)["hosts"]
        assert run["host"] == "kms01" and run["changed"] is True
        assert run["before"]["dns_publishing"] is True and run["after"]["dns_publishing"] is False
        assert lab.fleet.hosts["kms01"].service.dns_publishing is False
        again = json.loads(invoke("dns", "publishing", "off", "-i", str(inventory), "--json").output)
        assert again["hosts"][0]["changed"] is False
        on = invoke("dns", "publishing", "on", "-i", str(inventory), "--limit", "kms01")
        assert on.exit_code == 0, on.output
        assert lab.fleet.hosts["kms01"].service.dns_publishing is True
    finally:
        server.stop()


def test_lab_up_with_dns_server_publishes_over_winrm(
    tmp_path: Path, dns_server: DnsServer, listener: int
) -> None:
    """``kmsadmin lab up --dns-server`` as a real background process; the host is set up over WinRM."""
    from kmsadmin.dns.remote import run_on_hosts, winrm_session
    from kmsadmin.fleet.inventory import load_inventory

    options = ("--hosts", "1", "--kms-hosts", "1", "--os-mix", "server2022-standard=1")
    dns = ("--dns-server", dns_server.address, "--dns-zone", "lab.test")
    tsig = ("--tsig-key-file", str(dns_server.key_file))
    with lab_process(tmp_path, *options, *dns, *tsig, timeout=120) as (_, lab_inventory):
        loaded = load_inventory(lab_inventory)
        kms_vars = loaded.vars_for("kms01")
        key = Path(str(kms_vars["kmsadmin_lab_host_key_file"])).read_text(encoding="utf-8").strip()
        hosts = [("kms01", kms_vars)]
        sessions = winrm_session()
        steps = [
            ScriptRef("firewall", {"rule_name": "SPPSVC-In-TCP", "profiles": "Domain,Private"}),
            ScriptRef("install-host-key", {"application_id": W}, {"product_key": Secret(key)}),
            ScriptRef("activate", {"application_id": W, "activation_id": "", "force": False}),
            ScriptRef(
                "kms-host-settings",
                {
                    "listening_port": listener,
                    "dns_publishing": "",
                    "low_priority": "",
                    "activation_interval": "",
                    "renewal_interval": "",
                },
            ),
        ]
        for ref in steps:
            (run,) = run_on_hosts(hosts, ref, sessions)
            assert run.ok, run.to_dict()
        inventory = write_inventory(tmp_path / "kms-listener.yml", {"kms01": listener})
        code, report = check_json(dns_server, inventory)
        assert code == 0, report["findings"]
        (record,) = report["domains"][0]["records"]
        assert (record["target"], record["port"], record["port_open"]) == ("kms01.lab.test", listener, True)


def test_large_answers_fall_back_to_tcp(dns_server: DnsServer) -> None:
    key = load_key_file(dns_server.key_file)
    update = dns.update.UpdateMessage("lab.test.", keyring=key.keyring(), keyname=key.keyname())
    for index in range(40):
        update.add("_vlmcs._tcp.lab.test.", 300, "SRV", f"0 0 1688 kms{index:02}.lab.test.")
    assert (
        dns.query.tcp(update, dns_server.host, timeout=3, port=dns_server.port).rcode() == dns.rcode.NOERROR
    )
    result = invoke("dns", "check", "lab.test", "--server", dns_server.address, "--json")
    assert result.exit_code == 1
    (status,) = json.loads(result.output)["domains"]
    assert status["tcp"] is True and len(status["records"]) == 40


def test_plan_gathers_facts_over_winrm(tmp_path: Path) -> None:
    from kmsadmin.cli.dns import plan_command
    from kmsadmin.lab.inventory import write_inventory as write_lab_inventory
    from tests.lab.served import served_fleet

    fleet = Fleet.create(tmp_path / "lab", hosts=25, kms_hosts=1, os_mix="win11-enterprise-ltsc2024=25")
    with served_fleet(fleet, tmp_path / "tls") as server:
        ports = {n: server.port(n) for n in fleet.names()}
        inventory = write_lab_inventory(tmp_path / "lab.yml", fleet, ports, tls=True, ca_cert=server.ca_path)
        app = typer.Typer()
        app.command("plan")(plan_command)
        app.command("other")(lambda: None)
        # from inventory vars alone the lab's caption "Windows 11 Enterprise LTSC" names no release
        by_vars = json.loads(CliRunner().invoke(app, ["plan", "-i", str(inventory), "--json"]).output)
        assert by_vars["clients"]["unidentified"] == 25
        result = CliRunner().invoke(app, ["plan", "-i", str(inventory), "--gather", "--json"])
        assert result.exit_code == 0, result.output
        plan = json.loads(result.output)
        assert plan["editions"] == {"windows-11-enterprise-ltsc-2024": 25}
        assert plan["windows_host_key_group_id"] == "windows-server-2025"
        (fit,) = plan["hosts"]
        assert fit["host"] == "kms01" and fit["ok"] is True
