"""Activation method, activation type, ADBA planning and input checks: pure unit tests."""

from __future__ import annotations

import pytest

from kmsadmin import validate
from kmsadmin.errors import InvalidInput
from kmsadmin.facts import HostFacts, ProductFacts
from kmsadmin.fleet.runner import summarize_state
from kmsadmin.operations.adba import AdbaArgs, plan_adba
from kmsadmin.values import Secret

WINDOWS = "55c92734-d682-4d71-983e-d6ec3f16059f"
KEY = "BCDFG-HJKMP-QRTVW-XY234-6789B"


def product(**kw: object) -> ProductFacts:
    base: dict[str, object] = {
        "id": "3c102355-d027-42c6-ad23-2e7ef8a02585",
        "application_id": WINDOWS,
        "description": "Windows(R) Operating System, VOLUME_KMSCLIENT channel",
        "channel": "Volume:GVLK",
        "license_status": 1,
        "grace_minutes": 259200,
    }
    base.update(kw)
    return ProductFacts.model_validate(base)


@pytest.mark.parametrize(
    ("kw", "method", "by"),
    [
        ({"vl_activation_type": 1, "ad_object_name": "Contoso AO"}, "ADBA", "Contoso AO"),
        ({"vl_activation_type": 2, "discovered_kms": "kms1.contoso.com"}, "KMS", "kms1.contoso.com"),
        ({"vl_activation_type": 0, "kms_machine": "kms2.contoso.com"}, "KMS", "kms2.contoso.com"),
        ({"vl_activation_type": 3}, "Token", None),
        (
            {"description": "Windows(R) Operating System, VOLUME_MAK channel", "channel": "Volume:MAK"},
            "MAK",
            None,
        ),
        ({"description": "Windows(R) Operating System, RETAIL channel", "channel": "Retail"}, "Retail", None),
        ({"description": "Windows(R) Operating System, OEM_DM channel", "channel": "OEM:DM"}, "OEM", None),
        ({"vl_activation_type": 1, "license_status": 2}, None, None),  # not activated: no method
    ],
)
def test_activation_method(kw: dict[str, object], method: str | None, by: str | None) -> None:
    item = product(**kw)
    assert (item.activation_method, item.activated_by) == (method, by)


def test_state_shows_method_type_failed_renewal_and_oslicense() -> None:
    facts = HostFacts(
        computer_name="PC1",
        products=[
            product(
                vl_activation_type=1,
                vl_activation_type_enabled=1,
                ad_object_name="Contoso AO",
                license_status_reason="0xC004F074",
            )
        ],
        oslicense_module=True,
    )
    state = summarize_state(facts)
    assert state["activation_method"] == "ADBA" and state["activated_by"] == "Contoso AO"
    assert state["activation_type"] == "AD"
    assert state["renewal_hresult"] == "0xC004F074"
    assert state["oslicense_module"] is True
    clean = summarize_state(HostFacts(products=[product(license_status_reason="0x00000000")]))
    assert "renewal_hresult" not in clean and "oslicense_module" not in clean


def test_adba_needs_a_domain_member_and_keeps_the_key_secret() -> None:
    args = AdbaArgs(action="activate", host_key=Secret(KEY), name="Contoso AO")
    plan = plan_adba("pc1", HostFacts(), args)
    assert plan.blocked and plan.problems[0].check == "domain-member"
    member = HostFacts.model_validate({"security": {"domain_joined": True}})
    plan = plan_adba("dc1", member, args)
    [step] = plan.steps
    assert step.step == "adba-activate" and plan.stop_after == "adba-activate"
    assert step.ref.params == {"activation_object_name": "Contoso AO", "confirmation_id": ""}
    assert step.ref.secrets["product_key"].value == KEY and KEY not in str(plan.to_dict())
    phone = plan_adba("dc1", member, AdbaArgs(action="activate", host_key=Secret(KEY), activation="phone"))
    assert [s.step for s in phone.steps] == ["adba-iid"] and phone.stop_after == "adba-iid"
    deposit = plan_adba(
        "dc1",
        member,
        AdbaArgs(action="activate", host_key=Secret(KEY), activation="phone", confirmation_id="1" * 48),
    )
    assert deposit.steps[0].ref.params["confirmation_id"] == "1" * 48
    assert [s.step for s in plan_adba("dc1", member, AdbaArgs(action="list")).steps] == ["adba-list"]


@pytest.mark.parametrize(
    "good",
    ["Contoso AO", "WS2022-host_key.1", "CN=Contoso AO", "CN=x,CN=Activation Objects,DC=contoso,DC=com"],
)
def test_activation_object_names_accepted(good: str) -> None:
    assert validate.activation_object(good) == good


@pytest.mark.parametrize(
    "bad", ["", " ", "a;b", "x\\,y", "CN=a+b", "OU=x", "CN=", "'); Remove-Item C:\\", "a" * 65]
)
def test_activation_object_names_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        validate.activation_object(bad)


def _machines(rows: list[tuple[str, dict[str, object]]]) -> list[object]:
    from kmsadmin.operations.capacity import machine_from_vars

    return [machine_from_vars(name, hostvars, ["clients"]) for name, hostvars in rows]


def test_plan_recommends_adba_kms_and_mak_exceptions() -> None:
    from kmsadmin.operations.capacity import plan_capacity

    win11 = {"kmsadmin_os": "Microsoft Windows 11 Enterprise", "kmsadmin_domain_joined": True}
    plan = plan_capacity(_machines([(f"pc{i}", win11) for i in range(3)]))  # type: ignore[arg-type]
    assert plan.activation["counts"] == {"ADBA": 3, "KMS": 0, "MAK": 0}
    assert plan.activation["recommended"].startswith("ADBA: every volume client")
    assert "no KMS host is needed" in plan.activation["recommended"]

    mixed = plan_capacity(
        _machines(  # type: ignore[arg-type]
            [
                ("pc1", win11),
                ("pc2", {**win11, "kmsadmin_domain_joined": False}),
                ("pc3", {"kmsadmin_os": "Microsoft Windows 11 Pro"}),
                ("old", {"kmsadmin_os": "Microsoft Windows 7 Enterprise", "kmsadmin_domain_joined": "yes"}),
                ("ship", {**win11, "kmsadmin_activation": "MAK"}),
            ]
        )
    )
    assert mixed.activation["per_host"] == {
        "pc1": "ADBA",
        "pc2": "KMS",
        "pc3": "KMS",
        "old": "KMS",
        "ship": "MAK",
    }
    assert mixed.activation["reasons"]["pc2"] == "not domain-joined"
    assert "older than Windows 8" in mixed.activation["reasons"]["old"]
    assert mixed.activation["recommended"].startswith(
        "ADBA for the 1 domain-joined clients, KMS for the other 3"
    )
    assert "MAK for the 1 named exception" in mixed.activation["recommended"]
    assert mixed.to_dict()["activation"] == mixed.activation


def test_activation_objects_from_a_hostile_host_print_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    from kmsadmin.cli.remote import print_reports
    from kmsadmin.fleet.runner import HostReport, StepRecord

    hostile = [
        {"name": "[/]x[bold]", "partial_key": "[red]", "sku_id": None, "dn": "CN=[/]"},
        "not an object",
        7,
    ]
    for objects in (hostile, "[/]", {"a": 1}):
        report = HostReport(
            "dc1", "adba-list", steps=[StepRecord("adba-list", False, 0.1, data={"objects": objects})]
        )
        print_reports([report], json_out=False, check=False)
    out = capsys.readouterr().out
    assert "activation object [/]x[bold]: key ending [red]" in out and "CN=[/]" in out
