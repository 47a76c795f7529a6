"""Pure tests of the DNS layer: records and their text forms, TSIG key files, the inventory view,
the check's findings (wrong zone, duplicates, wrong port) with a scripted resolver, step references,
running steps over a fake session, and the CLI's input handling. No network."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from kmsadmin.cli.dns import dns_app
from kmsadmin.dns.check import run_check
from kmsadmin.dns.fleetview import build_view
from kmsadmin.dns.records import SrvRecord, bind_lines, nsupdate_script, relative_name, srv_owner
from kmsadmin.dns.remote import publish_list_ref, publishing_ref, run_step, split_domains, srv_record_ref
from kmsadmin.dns.resolver import DnsClient, Probe, QueryAnswer, parse_server
from kmsadmin.dns.tsig import key_text, parse_key_text
from kmsadmin.errors import ConnectionFailed, InvalidInput
from kmsadmin.lab import pwsh
from kmsadmin.render import render
from kmsadmin.values import RenderedScript, ScriptRef, ScriptResult
from tests import dnsserver

SECRET = "c2VjcmV0Ly9zZWNyZXQrLz0/c2VjcmV0LXNlY3JldA=="


def cli(*args: str) -> Any:
    app = typer.Typer()
    app.add_typer(dns_app, name="dns")
    return CliRunner().invoke(app, list(args))


# ------------------------------------------------------------------------------------------ records


def test_record_is_validated_and_normalised() -> None:
    record = SrvRecord.build(
        "Contoso.COM.", "KMS1.contoso.com", port="1689", priority=1, weight=5, ttl_seconds=60
    )
    assert record == SrvRecord("contoso.com", "kms1.contoso.com", 1689, 1, 5, 60)
    assert record.owner == "_vlmcs._tcp.contoso.com" == srv_owner("contoso.com.")
    assert record.zone_line() == "_vlmcs._tcp.contoso.com. 60 IN SRV 1 5 1689 kms1.contoso.com."


@pytest.mark.parametrize(
    ("domain", "target", "extra"),
    [
        ("10.0.0.1", "kms1.contoso.com", {}),
        ("contoso..com", "kms1.contoso.com", {}),
        ("contoso.com", "10.0.0.5", {}),
        ("contoso.com", "kms1.contoso.com; rm", {}),
        ("contoso.com", "kms1.contoso.com", {"port": 0}),
        ("contoso.com", "kms1.contoso.com", {"port": 70000}),
        ("contoso.com", "kms1.contoso.com", {"priority": 65536}),
        ("contoso.com", "kms1.contoso.com", {"weight": -1}),
        ("contoso.com", "kms1.contoso.com", {"ttl_seconds": "soon"}),
    ],
)
def test_bad_record_values_are_refused(domain: str, target: str, extra: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as caught:
        SrvRecord.build(domain, target, **extra)
    assert caught.value.exit_code == 2


def test_relative_name_for_windows_zone_records() -> None:
    assert relative_name("_vlmcs._tcp.contoso.com", "contoso.com") == "_vlmcs._tcp"
    assert relative_name("_vlmcs._tcp.branch.contoso.com", "Contoso.com.") == "_vlmcs._tcp.branch"
    with pytest.raises(InvalidInput):
        relative_name("_vlmcs._tcp.fabrikam.com", "contoso.com")


def test_bind_lines() -> None:
    record = SrvRecord.build("contoso.com", "kms1.contoso.com")
    text = bind_lines(record)
    lines = text.splitlines()
    assert lines[-1] == "_vlmcs._tcp.contoso.com. 3600 IN SRV 0 0 1688 kms1.contoso.com."
    assert all(line.startswith(";") for line in lines[:-1])
    assert "remove this line" in bind_lines(record, "remove")


def test_nsupdate_script_add_and_remove() -> None:
    record = SrvRecord.build("branch.contoso.com", "kms1.contoso.com", port=1700)
    add = nsupdate_script(record, zone="contoso.com", server=("192.0.2.53", 5353), key_file="/etc/kms.key")
    assert add.splitlines()[2:] == [
        "server 192.0.2.53 5353",
        "zone contoso.com.",
        "update add _vlmcs._tcp.branch.contoso.com. 3600 IN SRV 0 0 1700 kms1.contoso.com.",
        "send",
    ]
    assert "nsupdate -k /etc/kms.key" in add
    remove = nsupdate_script(record, "remove", server=("192.0.2.53", 53))
    assert "server 192.0.2.53\n" in remove and "zone branch.contoso.com.\n" in remove
    assert "update delete _vlmcs._tcp.branch.contoso.com. IN SRV 0 0 1700 kms1.contoso.com." in remove


# --------------------------------------------------------------------------------------------- TSIG


def test_tsig_key_file_parsing_keeps_the_secret_hidden() -> None:
    text = (
        "// generated\n"
        + key_text("other", SECRET, "hmac-sha512")
        + "# kms\n"
        + key_text("kms-update", SECRET)
    )
    first = parse_key_text(text)
    assert (first.name, first.algorithm) == ("other", "hmac-sha512")
    named = parse_key_text(text, name="kms-update")
    assert named.secret.value == SECRET  # "//" inside the quoted secret is not a comment
    assert SECRET not in repr(named) and SECRET not in named.describe()
    assert named.describe() == "kms-update (hmac-sha256)"
    keyring = named.keyring()
    assert len(keyring) == 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        'key "k" { algorithm hmac-sha256; };',
        'key "k" { secret "AAAA"; };',
        'key "k" { algorithm hmac-foo; secret "AAAA"; };',
        'key "k" { algorithm hmac-sha256; secret "not base64!"; };',
    ],
)
def test_bad_tsig_key_files(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_key_text(text)
    assert "AAAA" not in str(caught.value)


def test_parse_server() -> None:
    assert parse_server("192.0.2.1") == ("192.0.2.1", 53)
    assert parse_server("192.0.2.1:5353") == ("192.0.2.1", 5353)
    assert parse_server("[2001:db8::1]:53") == ("2001:db8::1", 53)
    with pytest.raises(InvalidInput):
        parse_server("192.0.2.1:0")


# ------------------------------------------------------------------------------------ inventory view


def test_fleet_view_from_inventory_vars() -> None:
    view = build_view(
        [
            ("kms01", {"ansible_host": "10.0.0.5", "kmsadmin_fqdn": "KMS01.contoso.com"}, ["kms_hosts"]),
            (
                "kms02",
                {
                    "ansible_host": "kms02.branch.contoso.com",
                    "kmsadmin_kms_port": "1700",
                    "kmsadmin_dns_publishing": "false",
                },
                ["kms_hosts"],
            ),
            ("pc1", {"ansible_host": "pc1.branch.contoso.com"}, ["clients"]),
            ("pc2", {"ansible_host": "10.1.1.1", "kmsadmin_dns_suffix": "Branch.contoso.com"}, ["clients"]),
            ("pc3", {"kmsadmin_lookup_domain": "contoso.com"}, ["clients"]),
            ("pc4", {"kmsadmin_kms_host": "kms01.contoso.com"}, ["clients"]),
            ("pc5", {}, ["clients"]),
        ]
    )
    assert [(h.name, h.fqdn, h.port, h.publishing) for h in view.kms_hosts] == [
        ("kms01", "kms01.contoso.com", 1688, True),
        ("kms02", "kms02.branch.contoso.com", 1700, False),
    ]
    assert view.client_domains() == {"branch.contoso.com": 2, "contoso.com": 1}
    assert view.kms_host("KMS01.contoso.com.") is view.kms_hosts[0]
    assert view.kms_host("kms02") is view.kms_hosts[1]


def test_fleet_view_names_the_host_with_a_bad_value() -> None:
    with pytest.raises(InvalidInput, match="inventory host kms01"):
        build_view([("kms01", {"kmsadmin_kms_port": 99999}, ["kms_hosts"])])


# -------------------------------------------------------------------------------- check (scripted DNS)


class ScriptedDns(DnsClient):
    """A resolver answering from a table: SRV records per domain, addresses per host."""

    def __init__(self, srv: dict[str, list[SrvRecord]], addresses: dict[str, list[str]]) -> None:
        super().__init__(("192.0.2.53", 53))
        self.table = srv
        self.hosts = addresses

    def srv(self, domain: str) -> tuple[QueryAnswer, list[SrvRecord]]:
        records = self.table.get(domain)
        outcome = "ok" if records else "nxdomain"
        return QueryAnswer(srv_owner(domain), "SRV", outcome, server="192.0.2.53:53"), list(records or [])

    def addresses(self, host: str) -> tuple[list[str], str]:
        found = self.hosts.get(host, [])
        return found, "dns" if found else "name does not exist"


def open_ports(*endpoints: tuple[str, int]) -> Any:
    def prober(address: str, port: int) -> Probe:
        return Probe(
            address, port, (address, port) in endpoints, 1, "" if (address, port) in endpoints else "refused"
        )

    return prober


def branch_view() -> Any:
    return build_view(
        [
            ("kms1", {"kmsadmin_fqdn": "kms1.contoso.com"}, ["kms_hosts"]),
            ("pc1", {"kmsadmin_fqdn": "pc1.branch.contoso.com"}, ["clients"]),
            ("pc2", {"kmsadmin_fqdn": "pc2.branch.contoso.com"}, ["clients"]),
        ],
        source="inv.yml",
    )


def test_records_only_in_the_parent_zone_are_the_wrong_zone_for_branch_clients() -> None:
    record = SrvRecord.build("contoso.com", "kms1.contoso.com")
    client = ScriptedDns({"contoso.com": [record]}, {"kms1.contoso.com": ["10.0.0.5"]})
    report = run_check("contoso.com", client, branch_view(), prober=open_ports(("10.0.0.5", 1688)))
    assert [(f.kind, f.domain, f.client_error) for f in report.findings] == [
        ("wrong-zone", "branch.contoso.com", "0x8007232B")
    ]
    finding = report.findings[0]
    assert (
        "2 inventory client(s) in branch.contoso.com query _vlmcs._tcp.branch.contoso.com" in finding.message
    )
    assert "--domains contoso.com,branch.contoso.com" in finding.remediation
    assert [d.domain for d in report.domains] == ["contoso.com", "branch.contoso.com"]
    meaning = report.to_dict()["findings"][0]["client_error_meaning"]
    assert meaning.startswith("DNS name does not exist") and "SRV" in meaning


def test_records_in_the_clients_zone_are_healthy() -> None:
    record = SrvRecord.build("branch.contoso.com", "kms1.contoso.com")
    client = ScriptedDns({"branch.contoso.com": [record]}, {"kms1.contoso.com": ["10.0.0.5"]})
    report = run_check("branch.contoso.com", client, branch_view(), prober=open_ports(("10.0.0.5", 1688)))
    assert report.healthy, [f.to_dict() for f in report.findings]


def test_duplicates_wrong_port_and_unpublished_host() -> None:
    view = build_view(
        [
            ("kms1", {"kmsadmin_fqdn": "kms1.contoso.com", "kmsadmin_kms_port": 1700}, ["kms_hosts"]),
            ("kms2", {"kmsadmin_fqdn": "kms2.contoso.com"}, ["kms_hosts"]),
            ("alias", {"kmsadmin_fqdn": "alias.contoso.com", "kmsadmin_kms_port": 1700}, ["kms_hosts"]),
            ("pc1", {"kmsadmin_fqdn": "pc1.contoso.com"}, ["clients"]),
        ]
    )
    records = [
        SrvRecord.build("contoso.com", "kms1.contoso.com", port=1700),
        SrvRecord.build("contoso.com", "kms1.contoso.com", port=1688),
        SrvRecord.build("contoso.com", "alias.contoso.com", port=1700),
    ]
    client = ScriptedDns(
        {"contoso.com": records}, {"kms1.contoso.com": ["10.0.0.5"], "alias.contoso.com": ["10.0.0.5"]}
    )
    report = run_check("contoso.com", client, view, prober=open_ports(("10.0.0.5", 1700)))
    kinds = sorted((f.kind, f.severity) for f in report.findings)
    assert kinds == [
        ("duplicate", "warning"),
        ("duplicate", "warning"),
        ("unpublished", "warning"),
        ("wrong-port", "error"),
    ]
    wrong = next(f for f in report.findings if f.kind == "wrong-port")
    assert wrong.record is not None and wrong.record.port == 1688
    assert "--port 1700" in wrong.remediation and wrong.client_error == "0x800706BA"
    unpublished = next(f for f in report.findings if f.kind == "unpublished")
    assert "kms2.contoso.com" in unpublished.message


def test_check_without_inventory_reports_missing_records_only_for_the_domain() -> None:
    report = run_check("contoso.com", ScriptedDns({}, {}))
    assert [(f.kind, f.client_error) for f in report.findings] == [("missing", "0x8007232B")]
    assert "dns publishing on" in report.findings[0].remediation


# ----------------------------------------------------------------------------------- remote steps


def test_srv_record_ref_renders_in_both_formats() -> None:
    record = SrvRecord.build("branch.contoso.com", "kms1.contoso.com", port=1700, ttl_seconds=600)
    ref = srv_record_ref(record, "add", zone="contoso.com", kms_hosts_group="CONTOSO\\KMS Hosts")
    assert ref.params == {
        "action": "add",
        "zone_name": "contoso.com",
        "record_name": "_vlmcs._tcp.branch",
        "kms_host": "kms1.contoso.com",
        "kms_port": 1700,
        "priority": 0,
        "weight": 0,
        "ttl": 600,
        "kms_hosts_group": "CONTOSO\\KMS Hosts",
    }
    script = render(ref).text
    assert pwsh.syntax_errors(script) == []
    assert pwsh.read_params(script)["record_name"] == "_vlmcs._tcp.branch"
    assert (
        "Add-DnsServerResourceRecord -Srv -ZoneName $ZoneName -Name $RecordName -DomainName $wantTarget"
        in script
    )
    cmd = render(ScriptRef(ref.step, ref.params, fmt="cmd")).text
    assert 'set KMSADMIN_RECORD_NAME="_vlmcs._tcp.branch"' in cmd
    assert "dnscmd /RecordAdd %KMSADMIN_ZONE_NAME% %KMSADMIN_RECORD_NAME% %KMSADMIN_TTL% SRV" in cmd
    remove = render(
        ScriptRef("dns-srv-record", {**ref.params, "action": "remove", "kms_hosts_group": ""}, fmt="cmd")
    )
    assert "\r\ndnscmd /RecordDelete" in remove.text and "\r\ndnscmd /RecordAdd" not in remove.text


def test_srv_record_ref_refuses_bad_groups_and_zones() -> None:
    record = SrvRecord.build("contoso.com", "kms1.contoso.com")
    with pytest.raises(InvalidInput):
        srv_record_ref(record, "remove", kms_hosts_group="KMS Hosts")
    with pytest.raises(InvalidInput):
        srv_record_ref(record, "add", kms_hosts_group="KMS'; Stop-Computer")
    with pytest.raises(InvalidInput):
        srv_record_ref(record, "add", zone="fabrikam.com")


def test_publishing_and_publish_list_refs() -> None:
    assert publishing_ref(False).params == {
        "listening_port": "",
        "dns_publishing": False,
        "low_priority": "",
        "activation_interval": "",
        "renewal_interval": "",
    }
    ref = publish_list_ref(split_domains(" Contoso.com, branch.contoso.com ,contoso.com"))
    assert ref.params == {"domains": "contoso.com,branch.contoso.com", "clear": False}
    script = render(ref).text
    assert "SoftwareProtectionPlatform" in script and "CurrentVersion\\SL" in script
    assert "-PropertyType MultiString" in script and "Restart-Service -Name 'sppsvc'" in script
    cmd = render(ScriptRef(ref.step, ref.params, fmt="cmd")).text
    assert "/t REG_MULTI_SZ" in cmd and "net start sppsvc <NUL" in cmd
    assert publish_list_ref(clear=True).params == {"domains": "", "clear": True}
    for bad in ((), ("10.0.0.1",), ("contoso..com",)):
        with pytest.raises(InvalidInput):
            publish_list_ref(bad)
    with pytest.raises(InvalidInput):
        publish_list_ref(["contoso.com"], clear=True)


class FakeSession:
    def __init__(self, answer: dict[str, Any] | Exception) -> None:
        self.answer = answer
        self.scripts: list[RenderedScript] = []
        self.closed = False

    def run(self, script: RenderedScript, *, deadline: float | None = None) -> ScriptResult:
        self.scripts.append(script)
        if isinstance(self.answer, Exception):
            raise self.answer
        return ScriptResult(host="kms01", step=script.step, stdout=json.dumps(self.answer) + "\r\n")

    def close(self) -> None:
        self.closed = True


def test_run_step_parses_results_and_errors() -> None:
    ok = FakeSession(
        {
            "kmsadmin": 1,
            "step": "kms-host-settings",
            "changed": True,
            "before": {"dns_publishing": True},
            "after": {"dns_publishing": False},
            "data": None,
        }
    )
    run = run_step("kms01", {}, publishing_ref(False), lambda name, hostvars: ok)
    assert run.ok and run.changed and run.after == {"dns_publishing": False} and run.data == {}
    assert ok.closed and ok.scripts[0].header == "# kmsadmin-step: kms-host-settings/1"

    failed = FakeSession(
        {
            "kmsadmin": 1,
            "step": "kms-host-settings",
            "changed": False,
            "error": {"hresult": "0xC004F074", "message": "no KMS", "stage": "Activate"},
        }
    )
    run = run_step("kms01", {}, publishing_ref(True), lambda name, hostvars: failed)
    assert not run.ok and run.error is not None and run.error["hresult"] == "0xC004F074"
    assert run.error["meaning"]

    down = FakeSession(ConnectionFailed("kms01", "kms-host-settings", "refused", remediation="start WinRM"))
    run = run_step("kms01", {}, publishing_ref(True), lambda name, hostvars: down)
    assert run.error == {
        "host": "kms01",
        "step": "kms-host-settings",
        "message": "refused",
        "hresult": None,
        "meaning": None,
        "remediation": "start WinRM",
    }


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_record_formats() -> None:
    bind = cli("dns", "record", "add", "contoso.com", "--target", "kms1.contoso.com", "--format", "bind")
    assert bind.exit_code == 0
    assert "_vlmcs._tcp.contoso.com. 3600 IN SRV 0 0 1688 kms1.contoso.com." in bind.output
    ns = cli(
        "dns",
        "record",
        "remove",
        "contoso.com",
        "--target",
        "kms1.contoso.com",
        "--port",
        "1700",
        "--format",
        "nsupdate",
        "--server",
        "192.0.2.53",
    )
    assert ns.exit_code == 0
    assert "update delete _vlmcs._tcp.contoso.com. IN SRV 0 0 1700 kms1.contoso.com." in ns.output


@pytest.mark.parametrize(
    "args",
    [
        ["dns", "record", "add", "contoso.com", "--target", "kms1.contoso.com"],
        [
            "dns",
            "record",
            "add",
            "contoso.com",
            "--target",
            "kms1.contoso.com",
            "--format",
            "bind",
            "--via",
            "rfc2136",
        ],
        ["dns", "record", "add", "contoso.com", "--target", "kms1.contoso.com", "--format", "json"],
        ["dns", "record", "add", "contoso.com", "--target", "kms1.contoso.com", "--via", "rfc2136"],
        ["dns", "record", "add", "contoso.com", "--target", "kms1.contoso.com", "--via", "winrm"],
        [
            "dns",
            "record",
            "add",
            "contoso.com",
            "--target",
            "kms1.contoso.com",
            "--format",
            "bind",
            "--kms-hosts-group",
            "G",
        ],
        ["dns", "record", "add", "10.0.0.1", "--target", "kms1.contoso.com", "--format", "bind"],
        ["dns", "check", "contoso..com"],
        ["dns", "check", "contoso.com", "--server", "192.0.2.1:99999"],
        ["dns", "publishing", "maybe", "-i", "inv.yml"],
        ["dns", "publish-list", "-i", "inv.yml"],
    ],
)
def test_cli_bad_input_exits_2(args: list[str]) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result.output


def test_cli_rfc2136_key_file_errors_never_show_the_secret(tmp_path: Path) -> None:
    key = tmp_path / "bad.key"
    key.write_text(f'key "k" {{ algorithm hmac-nope; secret "{SECRET}"; }};', encoding="utf-8")
    result = cli(
        "dns",
        "record",
        "add",
        "contoso.com",
        "--target",
        "kms1.contoso.com",
        "--via",
        "rfc2136",
        "--server",
        "127.0.0.1:1",
        "--tsig-key-file",
        str(key),
    )
    assert result.exit_code == 2 and SECRET not in result.output


def test_publishing_needs_kms_hosts_in_the_inventory(tmp_path: Path) -> None:
    inventory = tmp_path / "inv.yml"
    inventory.write_text("all:\n  hosts:\n    pc1: {}\n", encoding="utf-8")
    result = cli("dns", "publishing", "off", "-i", str(inventory))
    assert result.exit_code == 2 and "kms_hosts" in result.output


# ------------------------------------------------------------------------------------- BIND fixture


def test_missing_named_fails_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dnsserver.shutil, "which", lambda name: None)
    monkeypatch.setattr(dnsserver, "NAMED_CANDIDATES", ("/nonexistent/named",))
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y bind9 bind9-utils"):
        dnsserver.named_binary()


def test_record_via_winrm_renders_and_runs_the_step(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from kmsadmin.dns import remote

    seen: dict[str, Any] = {}
    answer = {
        "kmsadmin": 1,
        "step": "dns-srv-record",
        "changed": True,
        "before": {"records": []},
        "after": {
            "records": [{"target": "kms1.contoso.com", "port": 1688, "priority": 0, "weight": 0, "ttl": 3600}]
        },
        "data": {
            "zone": "contoso.com",
            "name": "_vlmcs._tcp.branch",
            "is_ds_integrated": True,
            "kms_hosts_group": "KMS Hosts",
            "acl_changed": True,
        },
    }

    def factory(name: str, hostvars: Any) -> FakeSession:
        seen["host"], seen["vars"] = name, dict(hostvars)
        session = FakeSession(answer)
        seen["session"] = session
        return session

    monkeypatch.setattr(remote, "winrm_session", lambda explicit=None: factory)
    inventory = tmp_path / "inv.yml"
    inventory.write_text("all:\n  hosts:\n    dc01.contoso.com: {ansible_port: 5986}\n", encoding="utf-8")
    result = cli(
        "dns",
        "record",
        "add",
        "branch.contoso.com",
        "--zone",
        "contoso.com",
        "--target",
        "kms1.contoso.com",
        "--via",
        "winrm",
        "--dns-server",
        "dc01.contoso.com",
        "--kms-hosts-group",
        "KMS Hosts",
        "-i",
        str(inventory),
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert seen["host"] == "dc01.contoso.com" and seen["vars"] == {"ansible_port": 5986}
    params = pwsh.read_params(seen["session"].scripts[0].text)
    assert params["record_name"] == "_vlmcs._tcp.branch" and params["kms_hosts_group"] == "KMS Hosts"
    (run,) = json.loads(result.output)["hosts"]
    assert run["changed"] is True and run["data"]["acl_changed"] is True


def test_publish_list_runs_on_every_kms_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from kmsadmin.dns import remote

    ran: list[str] = []

    def factory(name: str, hostvars: Any) -> FakeSession:
        ran.append(name)
        return FakeSession(
            {
                "kmsadmin": 1,
                "step": "kms-dns-publish-list",
                "changed": True,
                "before": {"domains": []},
                "after": {"domains": ["contoso.com", "branch.contoso.com"]},
                "data": {"restarted": True},
            }
        )

    monkeypatch.setattr(remote, "winrm_session", lambda explicit=None: factory)
    inventory = tmp_path / "inv.yml"
    inventory.write_text(
        "all:\n  children:\n    kms_hosts:\n      hosts:\n        kms1: {}\n        kms2: {}\n"
        "    clients:\n      hosts:\n        pc1: {}\n",
        encoding="utf-8",
    )
    result = cli("dns", "publish-list", "-i", str(inventory), "--domains", "contoso.com,branch.contoso.com")
    assert result.exit_code == 0, result.output
    assert sorted(ran) == ["kms1", "kms2"]
    assert "kms1: changed" in result.output
    limited = cli("dns", "publish-list", "-i", str(inventory), "--domains", "contoso.com", "--limit", "kms2")
    assert limited.exit_code == 0 and ran[-1] == "kms2" and len(ran) == 3
