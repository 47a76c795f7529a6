"""Planner tests: facts fixtures (JSON) in, plans out. Pure, no network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kmsadmin import catalog
from kmsadmin.facts import HostFacts
from kmsadmin.operations.convert_client import ConvertClientArgs, plan_convert_client
from kmsadmin.operations.setup_host import SetupHostArgs, plan_setup_host
from kmsadmin.values import Secret

FIXTURES = Path(__file__).parent / "fixtures" / "facts"
HOST_KEY = Secret("BCDFG-HJKMP-QRTVW-XY234-6789B")


def facts(name: str, **changes: object) -> HostFacts:
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    for path, value in changes.items():
        node = data
        *parents, leaf = path.split("__")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[leaf] = value
    return HostFacts.model_validate(data)


def steps(plan: object) -> list[str]:
    return [s.step for s in plan.steps]  # type: ignore[attr-defined]


def test_setup_host_fresh_server_plans_every_step_in_order() -> None:
    plan = plan_setup_host(
        "kms01",
        facts("server2022-fresh"),
        SetupHostArgs(host_key=HOST_KEY, csvlk="Windows Server 2022", dns_publishing=False),
    )
    assert not plan.blocked
    assert steps(plan) == ["install-feature", "firewall", "install-host-key", "activate", "kms-host-settings"]
    firewall = plan.steps[1].ref.params
    assert firewall == {"rule_name": "SPPSVC-In-TCP", "profiles": "Domain,Private", "remote_addresses": ""}
    assert plan.steps[2].ref.secrets == {"product_key": HOST_KEY}
    assert "product_key" not in plan.steps[2].ref.params
    assert plan.steps[4].ref.params["dns_publishing"] is False


def test_setup_host_already_done_plans_nothing() -> None:
    done = facts(
        "server2022-fresh",
        features__VolumeActivation=True,
        **{"features__RSAT-VA-Tools": True},
        firewall__0__enabled=True,
        firewall__0__profiles=["Domain", "Private"],
        products__0__partial_key=HOST_KEY.tail,
        products__0__is_kms_host=True,
        products__0__description="Windows(R) Operating System, VOLUME_KMS_2022 channel",
        service__dns_publishing=False,
    )
    plan = plan_setup_host(
        "kms01", done, SetupHostArgs(host_key=HOST_KEY, csvlk="Windows Server 2022", dns_publishing=False)
    )
    assert plan.steps == ()
    assert not plan.changes


def test_setup_host_key_too_new_for_host_os_is_blocked() -> None:
    plan = plan_setup_host(
        "oldkms", facts("server2016-fresh"), SetupHostArgs(host_key=HOST_KEY, csvlk="Windows Server 2025")
    )
    assert plan.blocked
    assert plan.steps == ()
    assert plan.problems[0].check == "host-key-group"
    assert plan.problems[0].hresult == "0xC004F050"


def test_setup_host_missing_required_update_is_blocked_until_installed() -> None:
    args = SetupHostArgs(host_key=HOST_KEY, csvlk="Windows Server 2022")
    blocked = plan_setup_host("oldkms", facts("server2016-fresh"), args)
    assert [p.check for p in blocked.problems] == ["required-update"]
    assert "KB5003638" in blocked.problems[0].message
    ok = plan_setup_host("oldkms", facts("server2016-fresh", hotfixes=["KB5003638"]), args)
    assert not ok.blocked


def test_setup_host_refuses_non_admin_and_azure_edition() -> None:
    plan = plan_setup_host(
        "kms01", facts("server2022-fresh", security__is_admin=False), SetupHostArgs(host_key=HOST_KEY)
    )
    assert plan.problems[0].hresult == "0x80070005"
    azure = facts("server2022-fresh", os__edition_id="ServerTurbine", os__sku=407)
    assert any(
        p.check == "edition"
        for p in plan_setup_host("kms01", azure, SetupHostArgs(host_key=HOST_KEY)).problems
    )


def test_setup_host_phone_activation_stops_after_installation_id() -> None:
    plan = plan_setup_host(
        "kms01", facts("server2022-fresh"), SetupHostArgs(host_key=HOST_KEY, activation="phone")
    )
    assert steps(plan)[-1] == "phone-iid"
    assert plan.stop_after == "phone-iid"


def test_convert_client_installs_the_editions_gvlk_and_pins_host() -> None:
    args = ConvertClientArgs(target="host", kms_host="kms01.contoso.com", kms_port=1688)
    plan = plan_convert_client("pc0001", facts("win11-enterprise"), args)
    gvlk = catalog.find_client_key("Windows 11 Enterprise").gvlk
    assert steps(plan) == ["install-gvlk", "set-kms-host", "activate"]
    assert plan.steps[0].ref.params["product_key"] == gvlk
    assert plan.steps[1].ref.params["kms_host"] == "kms01.contoso.com"


def test_convert_client_second_run_is_a_no_op() -> None:
    gvlk = catalog.find_client_key("Windows 11 Enterprise").gvlk
    done = facts(
        "win11-enterprise",
        products__0__partial_key=gvlk[-5:],
        products__0__license_status=1,
        products__0__description="Windows(R) Operating System, VOLUME_KMSCLIENT channel",
        service__kms_machine="kms01.contoso.com",
        service__kms_port=1688,
    )
    plan = plan_convert_client("pc0001", done, ConvertClientArgs(target="host", kms_host="kms01.contoso.com"))
    assert plan.steps == ()


def test_convert_client_auto_discovery_clears_pins() -> None:
    pinned = facts(
        "win11-enterprise", service__kms_machine="old.contoso.com", service__lookup_domain="contoso.com"
    )
    plan = plan_convert_client("pc0001", pinned, ConvertClientArgs(target="auto"))
    assert steps(plan) == ["install-gvlk", "clear-kms-host", "clear-lookup-domain", "activate"]


def test_convert_client_unknown_edition_is_blocked() -> None:
    home = facts(
        "win11-enterprise", os__edition_id="Core", os__sku=101, os__caption="Microsoft Windows 11 Home"
    )
    plan = plan_convert_client("pc0001", home, ConvertClientArgs())
    assert plan.blocked
    assert plan.problems[0].check == "edition"


def test_convert_client_dry_run_needs_edition_or_key() -> None:
    assert plan_convert_client("pc", None, ConvertClientArgs()).blocked
    plan = plan_convert_client("pc", None, ConvertClientArgs(edition="Windows 11 Pro"))
    assert steps(plan) == ["install-gvlk", "activate"]


@pytest.mark.parametrize("key", ["W269N-WFGWX-YVC9B-4J6C9-T83GX"])
def test_convert_client_explicit_gvlk_is_public(key: str) -> None:
    plan = plan_convert_client("pc", None, ConvertClientArgs(key=key))
    assert plan.steps[0].ref.params["product_key"] == key
    assert plan.details["gvlk"] == key
