"""LabEngine against the host model: every step, every KMS rule, idempotence and persistence.

Scripts are the project's own rendered templates (kmsadmin.render), so the engine is exercised exactly
as the WS-Man server calls it.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from kmsadmin import catalog
from kmsadmin.lab import kms
from kmsadmin.lab.engine import LabEngine
from kmsadmin.lab.fleet import Fleet
from kmsadmin.render import render
from kmsadmin.values import ScriptRef, Secret

W = catalog.WINDOWS_APP_ID
OFFICE = catalog.OFFICE_APP_ID


class Lab:
    """A fleet, its engine and helpers to run rendered steps."""

    def __init__(self, path: Path, **spec: Any) -> None:
        self.fleet = Fleet.create(path, **spec)
        self.engine = LabEngine(self.fleet)

    def run(
        self, host: str, step: str, secrets: dict[str, str] | None = None, **params: Any
    ) -> dict[str, Any]:
        ref = ScriptRef(step, params, {k: Secret(v) for k, v in (secrets or {}).items()})
        out = self.engine.run_script(host, render(ref).text, via="psrp")
        assert not out.errors, out.errors
        assert len(out.output) == 1
        answer: dict[str, Any] = json.loads(out.output[0])
        assert answer["kmsadmin"] == 1 and answer["step"] == step
        return answer

    def facts(self, host: str) -> dict[str, Any]:
        data: dict[str, Any] = self.run(host, "facts")["data"]
        return data

    def key(self, group: str) -> str:
        return self.fleet.host_keys.keys[group]

    def setup_kms(self, host: str = "kms01", group: str | None = None) -> None:
        group = group or self.fleet.meta.kms_groups[host]
        assert self.run(host, "firewall", rule_name="SPPSVC-In-TCP", profiles="Domain,Private")["changed"]
        self.install(host, self.key(group))
        answer = self.activate(host)
        assert "error" not in answer, answer

    def install(self, host: str, key: str, step: str = "install-host-key", app: str = W) -> dict[str, Any]:
        if step == "install-gvlk":  # GVLKs are public: a plain parameter
            return self.run(host, step, product_key=key, application_id=app)
        return self.run(host, step, {"product_key": key}, application_id=app)

    def activate(
        self, host: str, app: str = W, activation_id: str = "", force: bool = False
    ) -> dict[str, Any]:
        return self.run(host, "activate", application_id=app, activation_id=activation_id, force=force)

    def point(self, host: str, kms_host: str = "kms01.lab.test", port: int = 1688) -> None:
        self.run(host, "set-kms-host", kms_host=kms_host, kms_port=port, activation_id="")

    def windows(self, host: str) -> dict[str, Any]:
        return next(p for p in self.facts(host)["products"] if p["application_id"] == W)


def hresult(answer: dict[str, Any]) -> str | None:
    error = answer.get("error")
    assert error is not None, answer
    return error["hresult"]  # type: ignore[no-any-return]


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path / "lab", hosts=30, kms_hosts=1, os_mix="win11-enterprise=30")


# --------------------------------------------------------------------------- facts


def test_facts_match_the_documented_shape(lab: Lab) -> None:
    answer = lab.run("client001", "facts")
    assert answer["changed"] is False and answer["before"] is None and answer["after"] is None
    data = answer["data"]
    assert set(data) == {
        "computer_name",
        "os",
        "products",
        "service",
        "features",
        "firewall",
        "hotfixes",
        "security",
        "oslicense_module",
        "time_utc",
    }
    assert data["oslicense_module"] is False
    assert data["computer_name"] == "CLIENT001"
    assert data["os"] == {
        "caption": "Microsoft Windows 11 Enterprise",
        "version": "10.0.22631",
        "build": 22631,
        "ubr": None,
        "sku": 4,
        "edition_id": "Enterprise",
        "product_type": 1,
        "installation_type": "Client",
        "ui_language": "en-US",
    }
    (product,) = data["products"]
    entry = catalog.identify_windows(
        caption=None, edition_id="Enterprise", build=22631, sku=4, product_type=1
    )
    assert entry is not None
    # volume media: the edition's GVLK, out-of-box grace (LicenseStatus 2) for 30 days
    assert product["partial_key"] == entry.gvlk[-5:]
    assert product["channel"] == "Volume:GVLK"
    assert "VOLUME_KMSCLIENT" in product["description"]
    assert product["license_status"] == 2
    assert product["grace_minutes"] in (43199, 43200)
    assert product["license_status_reason"] == "0x00000000"
    assert data["features"] == {"VolumeActivation": None, "RSAT-VA-Tools": None}
    assert data["firewall"] == [
        {
            "name": "SPPSVC-In-TCP",
            "enabled": False,
            "profiles": ["Private", "Public"],
            "remote_addresses": ["LocalSubnet"],
        },
        {
            "name": "SPPSVC-In-TCP-NoScope",
            "enabled": False,
            "profiles": ["Domain"],
            "remote_addresses": ["Any"],
        },
    ]
    service = data["service"]
    assert (
        service["is_kms_host"] is False
        and service["current_count"] == -1
        and service["listening_port"] == 1688
    )
    assert service["host_caching"] is True and service["activation_interval"] == 120
    assert service["renewal_interval"] == 10080
    assert set(service["requests"]) == {
        "total",
        "failed",
        "unlicensed",
        "licensed",
        "oob_grace",
        "oot_grace",
        "non_genuine_grace",
        "notification",
    }
    assert data["security"]["is_admin"] is True and data["security"]["dns_suffix"] == "lab.test"
    assert data["time_utc"].endswith("Z")
    server = lab.facts("kms01")
    assert server["features"] == {"VolumeActivation": False, "RSAT-VA-Tools": False}
    assert server["os"]["caption"] == "Microsoft Windows Server 2022 Standard"


def test_facts_parse_with_the_project_parser(lab: Lab) -> None:
    from kmsadmin.facts import HostFacts

    facts = HostFacts.model_validate(lab.facts("kms01"))
    assert facts.os.is_server


# --------------------------------------------------------------------------- host set-up


def test_install_feature_and_firewall_are_idempotent(lab: Lab) -> None:
    first = lab.run("kms01", "install-feature", include_tools=True)
    assert first["changed"] is True
    assert first["after"] == {"VolumeActivation": True, "RSAT-VA-Tools": True}
    assert first["data"] == {"restart_needed": False}
    assert lab.run("kms01", "install-feature", include_tools=True)["changed"] is False
    fw = lab.run("kms01", "firewall", rule_name="SPPSVC-In-TCP", profiles="Domain,Private")
    assert fw["before"] == {
        "enabled": False,
        "profiles": ["Private", "Public"],
        "remote_addresses": ["LocalSubnet"],
    }
    assert fw["after"] == {
        "enabled": True,
        "profiles": ["Domain", "Private"],
        "remote_addresses": ["LocalSubnet"],
    }
    assert (
        lab.run("kms01", "firewall", rule_name="SPPSVC-In-TCP", profiles="Private,Domain")["changed"] is False
    )
    anyp = lab.run("kms01", "firewall", rule_name="SPPSVC-In-TCP", profiles="Any")
    assert anyp["after"]["profiles"] == ["Domain", "Private", "Public"]


def test_install_feature_on_client_os_and_core(tmp_path: Path) -> None:
    lab = Lab(tmp_path, hosts=2, kms_hosts=0, os_mix="win11-pro=1,server2022-standard-core=1")
    assert lab.run("client001", "install-feature", include_tools=True)["error"]["stage"] == "Check"
    core = lab.run("client002", "install-feature", include_tools=True)
    # RSAT-VA-Tools is not available on Server Core [CORE]
    assert core["after"] == {"VolumeActivation": True, "RSAT-VA-Tools": False}
    assert lab.facts("client002")["os"]["installation_type"] == "Server Core"


def test_host_key_install_activate_and_settings(lab: Lab) -> None:
    key = lab.key("windows-server-2022")
    first = lab.install("kms01", key)
    assert first["changed"] is True
    data = first["data"]
    assert data["partial_key"] == key[-5:]
    assert "VOLUME_KMS_WS22" in data["description"] and "KMSCLIENT" not in data["description"]
    assert lab.install("kms01", key)["changed"] is False
    product = lab.windows("kms01")
    assert product["is_kms_host"] is True and product["channel"] == "Volume:CSVLK"
    assert product["license_status"] == 2
    activated = lab.activate("kms01")
    assert activated["changed"] is True
    assert activated["data"]["products"][0]["license_status"] == 1
    assert lab.activate("kms01")["changed"] is False
    service = lab.facts("kms01")["service"]
    assert (
        service["is_kms_host"] is True and service["current_count"] == -1 and service["required_count"] == 25
    )
    settings = lab.run(
        "kms01",
        "kms-host-settings",
        listening_port=1689,
        dns_publishing=False,
        low_priority=True,
        activation_interval=60,
        renewal_interval="",
    )
    assert settings["changed"] is True
    assert settings["after"] == {
        "listening_port": 1689,
        "dns_publishing": False,
        "low_priority": True,
        "activation_interval": 60,
        "renewal_interval": 10080,
    }
    again = lab.run(
        "kms01",
        "kms-host-settings",
        listening_port=1689,
        dns_publishing=False,
        low_priority=True,
        activation_interval=60,
        renewal_interval="",
    )
    assert again["changed"] is False
    bad = lab.run(
        "kms01",
        "kms-host-settings",
        listening_port="",
        dns_publishing="",
        low_priority="",
        activation_interval=14,
        renewal_interval="",
    )
    assert bad["error"] == {
        "hresult": None,
        "message": "activation_interval must be between 15 and 43200",
        "stage": "Input",
    }


def test_kms_host_settings_refused_on_a_client(lab: Lab) -> None:
    answer = lab.run(
        "client001",
        "kms-host-settings",
        listening_port=1700,
        dns_publishing="",
        low_priority="",
        activation_interval="",
        renewal_interval="",
    )
    assert answer["error"]["stage"] == "Check" and answer["changed"] is False


def test_host_key_group_the_os_cannot_carry_gives_c004f050(tmp_path: Path) -> None:
    lab = Lab(tmp_path, hosts=2, kms_hosts=0, os_mix="server2016-standard=1,win11-enterprise=1")
    # Server 2025 CSVLK "can be hosted on" Server 2025, 2022, 2019 only [PLAN24]
    assert hresult(lab.install("client001", lab.key("windows-server-2025"))) == "0xC004F050"
    # "A client KMS key can't be installed into the KMS in Windows Server" [ITPRO]
    assert hresult(lab.install("client001", lab.key("windows-10"))) == "0xC004F050"
    # the Server 2016 group on Server 2016 is fine
    assert lab.install("client001", lab.key("windows-server-2016"))["changed"] is True
    # a server host key on a client OS
    assert hresult(lab.install("client002", lab.key("windows-server-2022"))) == "0xC004F050"
    # nothing changed on a failed install
    assert lab.windows("client002")["channel"] == "Volume:GVLK"


def test_unknown_keys_and_foreign_gvlks(lab: Lab) -> None:
    # a well-formed key the lab never issued
    assert (
        hresult(lab.install("client001", "BBBBB-CCCCC-DDDDD-FFFFF-GGGGG", step="install-gvlk"))
        == "0xC004F050"
    )
    # the GVLK of another edition: SL_E_MISMATCHED_PRODUCT_SKU
    datacenter = catalog.identify_windows(
        caption=None, edition_id="ServerDatacenter", build=20348, sku=8, product_type=3
    )
    assert datacenter is not None
    assert hresult(lab.install("kms01", datacenter.gvlk, step="install-gvlk")) == "0xC004F069"
    malformed = lab.install("client001", "ABC", step="install-gvlk")
    assert malformed["error"]["stage"] == "Input"


def test_install_gvlk_converts_a_mak_client_idempotently(tmp_path: Path) -> None:
    lab = Lab(tmp_path, hosts=1, kms_hosts=0, os_mix="win11-pro:mak=1")
    assert lab.windows("client001")["channel"] == "Volume:MAK"
    entry = catalog.identify_windows(
        caption=None, edition_id="Professional", build=22631, sku=48, product_type=1
    )
    assert entry is not None
    first = lab.install("client001", entry.gvlk, step="install-gvlk")
    assert first["changed"] is True and first["data"]["partial_key"] == entry.gvlk[-5:]
    assert lab.install("client001", entry.gvlk, step="install-gvlk")["changed"] is False
    assert lab.windows("client001")["channel"] == "Volume:GVLK"


# --------------------------------------------------------------------------- KMS activation


def test_client_count_reaches_25_then_everyone_activates(lab: Lab) -> None:
    lab.setup_kms()
    clients = lab.fleet.names("client")
    for n, name in enumerate(clients[:24], start=1):
        lab.point(name)
        answer = lab.activate(name)
        # "Clients activate if the count is 25 or higher" [PLAN24]; the count includes the requester
        assert hresult(answer) == "0xC004F038", (n, answer)
        assert answer["changed"] is False
        assert lab.facts("kms01")["service"]["current_count"] == n
        assert lab.windows(name)["license_status_reason"] == "0xC004F038"
        assert lab.windows(name)["license_status"] == 2
    lab.point(clients[24])
    answer = lab.activate(clients[24])
    assert answer["changed"] is True
    (product,) = answer["data"]["products"]
    # "KMS activations are valid for 180 days" [PLAN24]: 259200 minutes
    assert product["license_status"] == 1 and product["grace_minutes"] == 259200
    assert lab.activate(clients[0])["data"]["products"][0]["license_status"] == 1
    assert lab.activate(clients[0])["changed"] is False
    windows = lab.windows(clients[0])
    assert windows["discovered_kms"] == "kms01.lab.test" and windows["license_status_reason"] == "0x00000000"
    service = lab.facts("kms01")["service"]
    assert service["current_count"] == 25
    assert service["requests"]["total"] == 26 and service["requests"]["oob_grace"] == 26


def test_servers_need_five(tmp_path: Path) -> None:
    lab = Lab(tmp_path, hosts=6, kms_hosts=1, os_mix="server2022-standard=3,server2019-datacenter=3")
    lab.setup_kms()
    names = lab.fleet.names("client")
    for name in names[:4]:
        lab.point(name)
        assert hresult(lab.activate(name)) == "0xC004F038"
    lab.point(names[4])
    # "Servers and volume editions of Microsoft Office products activate if the count is five or greater"
    assert lab.activate(names[4])["data"]["products"][0]["license_status"] == 1
    # a server-only count never goes beyond 10 [TSKMS]
    for name in names:
        lab.point(name)
        lab.activate(name)
    assert lab.facts("kms01")["service"]["current_count"] == 6


def test_server_only_count_is_capped_at_ten(tmp_path: Path) -> None:
    lab = Lab(tmp_path, hosts=12, kms_hosts=1, os_mix="server2022-standard=12")
    lab.setup_kms()
    for name in lab.fleet.names("client"):
        lab.point(name)
        lab.activate(name)
    assert lab.facts("kms01")["service"]["current_count"] == 10


def test_edition_the_group_cannot_activate_gives_c004f042(tmp_path: Path) -> None:
    lab = Lab(tmp_path, hosts=1, kms_hosts=1, os_mix="win11-enterprise-ltsc2024=1")
    lab.setup_kms()  # Server 2022 group: "Windows 11 LTSC 2024 is NOT listed" [PLAN24]
    lab.point("client001")
    answer = lab.activate("client001")
    assert hresult(answer) == "0xC004F042"
    assert lab.facts("kms01")["service"]["requests"]["failed"] == 1


def test_unreachable_hosts_give_c004f074(lab: Lab) -> None:
    # nothing pinned and no DNS: no KMS host can be found
    assert hresult(lab.activate("client001")) == "0xC004F074"
    # a pinned name that is no lab KMS host
    lab.point("client001", "nosuchhost.lab.test")
    assert hresult(lab.activate("client001")) == "0xC004F074"
    # a lab host that is not a KMS host
    lab.point("client001", "client002.lab.test")
    assert hresult(lab.activate("client001")) == "0xC004F074"
    # host key installed but the firewall rule disabled
    lab.install("kms01", lab.key("windows-server-2022"))
    lab.activate("kms01")
    lab.point("client001", "kms01")
    assert hresult(lab.activate("client001")) == "0xC004F074"
    # firewall open for Domain only: the lab network is Private on workgroup hosts
    lab.run("kms01", "firewall", rule_name="SPPSVC-In-TCP", profiles="Domain")
    assert hresult(lab.activate("client001")) == "0xC004F074"
    lab.run("kms01", "firewall", rule_name="SPPSVC-In-TCP", profiles="Domain,Private")
    # port mismatch
    lab.point("client001", "kms01", 1700)
    assert hresult(lab.activate("client001")) == "0xC004F074"
    lab.point("client001", "kms01", 1688)
    assert hresult(lab.activate("client001")) == "0xC004F038"


def test_unactivated_kms_host_gives_c004f041(lab: Lab) -> None:
    lab.run("kms01", "firewall", rule_name="SPPSVC-In-TCP", profiles="Domain,Private")
    lab.install("kms01", lab.key("windows-server-2022"))
    lab.point("client001")
    assert hresult(lab.activate("client001")) == "0xC004F041"


def test_dns_discovery_when_the_lab_has_dns(tmp_path: Path) -> None:
    lab = Lab(tmp_path, hosts=5, kms_hosts=1, os_mix="server2022-standard=5", dns_srv=True)
    lab.setup_kms()
    for name in lab.fleet.names("client"):
        lab.activate(name)
    assert lab.windows("client005")["license_status"] == 1
    lab.run("client001", "set-lookup-domain", lookup_domain="elsewhere.test", activation_id="")
    lab.activate("client001", force=True)
    assert hresult(lab.activate("client001", force=True)) == "0xC004F074"


def test_count_window_is_thirty_days_and_cloned_cmids_count_once(tmp_path: Path) -> None:
    faults = ";".join(f"client00{i}=cloned-cmid" for i in range(1, 4))
    lab = Lab(tmp_path, hosts=6, kms_hosts=1, os_mix="server2022-standard=6", faults=faults)
    lab.setup_kms()
    for name in lab.fleet.names("client")[:3]:
        lab.point(name)
        lab.activate(name)
    # three clones share one CMID: "Duplicate CMIDs stop the count from rising" [TSKMS]
    assert lab.facts("kms01")["service"]["current_count"] == 1
    lab.fleet.advance(timedelta(days=31))
    lab.point("client004")
    answer = lab.activate("client004")
    # "only counts unique connections from the past 30 days" [PLAN24]
    assert hresult(answer) == "0xC004F038"
    assert lab.facts("kms01")["service"]["current_count"] == 1


def test_clock_skew_gives_c004f06c(tmp_path: Path) -> None:
    lab = Lab(
        tmp_path, hosts=1, kms_hosts=1, os_mix="server2022-standard=1", faults="client001=clock-skew:600"
    )
    lab.setup_kms()
    lab.point("client001")
    assert hresult(lab.activate("client001")) == "0xC004F06C"


def test_validity_runs_out(tmp_path: Path) -> None:
    lab = Lab(tmp_path, hosts=5, kms_hosts=1, os_mix="server2022-standard=5")
    lab.setup_kms()
    for name in lab.fleet.names("client"):
        lab.point(name)
        lab.activate(name)
    lab.fleet.advance(timedelta(days=181))
    # after 180 days without renewal: out-of-tolerance grace [OKMS]
    assert lab.windows("client005")["license_status"] == 3


def test_office_activates_with_an_office_host_key(tmp_path: Path) -> None:
    lab = Lab(tmp_path, hosts=5, kms_hosts=1, os_mix="win11-enterprise+office2021=5")
    lab.setup_kms()
    office = [p for p in lab.facts("client001")["products"] if p["application_id"] == OFFICE]
    assert len(office) == 1 and "VOLUME_KMSCLIENT" in office[0]["description"]
    assert catalog.identify_office(office[0]["name"], office[0]["description"]) is not None
    lab.point("client001")
    # no Office host key on the KMS host yet: nothing answers for Office
    assert hresult(lab.activate("client001", app=OFFICE)) == "0xC004F074"
    installed = lab.install("kms01", lab.key("office-ltsc-2021"), app=OFFICE)
    assert installed["changed"] is True
    assert installed["data"]["activation_id"] == "47f3b983-7c53-4d45-abc6-bcd91e2dd90a"
    assert lab.activate("kms01", app=OFFICE)["data"]["products"][0]["license_status"] == 1
    names = lab.fleet.names("client")
    for name in names[:4]:
        lab.point(name)
        assert hresult(lab.activate(name, app=OFFICE)) == "0xC004F038"
    lab.point(names[4])
    assert lab.activate(names[4], app=OFFICE)["data"]["products"][0]["license_status"] == 1


def test_host_key_on_more_than_six_hosts_gives_c004c008(tmp_path: Path) -> None:
    lab = Lab(tmp_path, hosts=7, kms_hosts=0, os_mix="server2022-standard=7")
    key = lab.key("windows-server-2022")
    for name in lab.fleet.names()[:6]:
        lab.install(name, key)
        assert lab.activate(name)["changed"] is True
    lab.install("client007", key)
    # "A KMS host key can be activated up to 10 times on up to six different computers" [ERR]
    assert hresult(lab.activate("client007")) == "0xC004C008"


# --------------------------------------------------------------------------- phone activation


def test_phone_activation_with_the_lab_confirmation_id(lab: Lab) -> None:
    lab.install("kms01", lab.key("windows-server-2022"))
    iid = lab.run("kms01", "phone-iid", application_id=W, activation_id="")["data"]["installation_id"]
    assert len(iid) == 63 and iid.isdigit()
    again = lab.run("kms01", "phone-iid", application_id=W, activation_id="")["data"]["installation_id"]
    assert again == iid
    wrong = "1" * 48
    assert hresult(
        lab.run("kms01", "phone-deposit", application_id=W, activation_id="", confirmation_id=wrong)
    ) == ("0xC004F031")
    cid = kms.format_confirmation_id(kms.confirmation_id_for(iid))
    deposit = lab.run("kms01", "phone-deposit", application_id=W, activation_id="", confirmation_id=cid)
    assert deposit["changed"] is True
    assert deposit["before"] == {"license_status": 2} and deposit["after"] == {"license_status": 1}
    second = lab.run("kms01", "phone-deposit", application_id=W, activation_id="", confirmation_id=cid)
    assert second["changed"] is False


# --------------------------------------------------------------------------- client settings


def test_client_settings_steps_are_idempotent(lab: Lab) -> None:
    first = lab.run("client001", "set-kms-host", kms_host="kms01.lab.test", kms_port=1688, activation_id="")
    assert first["changed"] is True
    assert first["before"] == {"kms_machine": None, "kms_port": 0}
    assert first["after"] == {"kms_machine": "kms01.lab.test", "kms_port": 1688}
    assert (
        lab.run("client001", "set-kms-host", kms_host="KMS01.lab.test", kms_port=1688, activation_id="")[
            "changed"
        ]
        is False
    )
    assert lab.run("client001", "clear-kms-host", activation_id="")["after"] == {
        "kms_machine": None,
        "kms_port": 0,
    }
    assert lab.run("client001", "clear-kms-host", activation_id="")["changed"] is False
    domain = lab.run("client001", "set-lookup-domain", lookup_domain="lab.test", activation_id="")
    assert domain["changed"] is True and domain["after"] == {"lookup_domain": "lab.test"}
    assert (
        lab.run("client001", "set-lookup-domain", lookup_domain="lab.test", activation_id="")["changed"]
        is False
    )
    assert lab.run("client001", "clear-lookup-domain", activation_id="")["changed"] is True
    assert lab.run("client001", "clear-lookup-domain", activation_id="")["changed"] is False
    caching = lab.run("client001", "host-caching", enabled=False)
    assert caching["before"] == {"host_caching": True} and caching["after"] == {"host_caching": False}
    assert lab.run("client001", "host-caching", enabled=False)["changed"] is False
    product_id = lab.windows("client001")["id"]
    per_product = lab.run(
        "client001", "set-kms-host", kms_host="kms01", kms_port="", activation_id=product_id
    )
    assert per_product["after"] == {"kms_machine": "kms01", "kms_port": 0}
    assert lab.windows("client001")["kms_machine"] == "kms01"
    missing = lab.run(
        "client001",
        "set-kms-host",
        kms_host="kms01",
        kms_port="",
        activation_id="00000000-0000-0000-0000-000000000000",
    )
    assert missing["error"]["stage"] == "Check"


# --------------------------------------------------------------------------- elevation


def test_non_admin_gets_access_denied_on_changes_only(tmp_path: Path) -> None:
    lab = Lab(
        tmp_path,
        hosts=2,
        kms_hosts=1,
        os_mix="server2022-standard=2",
        faults="client001=not-admin;kms01=token-filter",
    )
    facts = lab.facts("client001")
    assert facts["security"]["is_admin"] is False
    denied = lab.run("client001", "set-kms-host", kms_host="kms01", kms_port=1688, activation_id="")
    assert denied["error"]["hresult"] == "0x80070005"
    assert lab.facts("kms01")["security"]["token_filter_policy"] == 0
    assert hresult(lab.run("kms01", "firewall", rule_name="SPPSVC-In-TCP", profiles="Domain,Private")) == (
        "0x80070005"
    )
    # read-only and no-op steps still answer
    assert lab.run("client001", "host-caching", enabled=True)["changed"] is False


# --------------------------------------------------------------------------- scripts the lab refuses


def test_syntax_error_gives_a_parse_error_record(lab: Lab) -> None:
    text = render(ScriptRef("facts")).text.replace("try {", "try {{", 1)
    out = lab.engine.run_script("client001", text, via="psrp")
    assert out.output == () and out.errors and "ParseException" in out.errors[0]
    assert out.errors[0].startswith("At line:")


def test_cmd_scripts_and_plain_scripts_are_not_run(lab: Lab) -> None:
    cmd = render(ScriptRef("facts", fmt="cmd")).text
    out = lab.engine.run_script("client001", cmd, via="winrs")
    assert out.errors and "only runs kmsadmin step scripts" in out.errors[0] and out.rc == 1
    plain = lab.engine.run_script("client001", "Get-Process", via="psrp")
    assert plain.errors and not plain.output
    assert lab.engine.run_script("client001", "hostname", via="winrs").output == ("CLIENT001",)
    assert lab.engine.run_script("nosuch", "hostname", via="winrs").errors


# --------------------------------------------------------------------------- persistence and threads


def test_state_survives_a_reload(lab: Lab) -> None:
    lab.setup_kms()
    lab.point("client001")
    lab.activate("client001")
    before = {name: lab.facts(name) for name in ("kms01", "client001")}
    reloaded = LabEngine(Fleet.load(lab.fleet.state_dir))
    for name, facts in before.items():
        out = reloaded.run_script(name, render(ScriptRef("facts")).text, via="psrp")
        data = json.loads(out.output[0])["data"]
        data.pop("time_utc")
        facts.pop("time_utc")
        for product in data["products"] + facts["products"]:
            product.pop("grace_minutes")
        assert data == facts
    assert reloaded.fleet.password == lab.fleet.password
    assert reloaded.fleet.host_keys.keys == lab.fleet.host_keys.keys


def test_concurrent_requests_count_every_client_once(lab: Lab) -> None:
    lab.setup_kms()
    clients = lab.fleet.names("client")
    for name in clients:
        lab.point(name)
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            lab.activate(name)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert lab.facts("kms01")["service"]["current_count"] == 30
    assert lab.facts("kms01")["service"]["requests"]["total"] == 30
    saved = Fleet.load(lab.fleet.state_dir)
    assert len(saved.hosts["kms01"].service.contacts[W]) == 30
