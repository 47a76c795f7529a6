"""Findings of the Windows-names documentation audit, each checked against its Microsoft source."""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path

import pytest

from kmsadmin import catalog
from kmsadmin.errors import RemoteScriptError
from kmsadmin.facts import HostFacts, parse_outcome, raise_for_error
from kmsadmin.lab import pwsh
from kmsadmin.operations.capacity import Machine, _builds, _fit, identify
from kmsadmin.operations.convert_client import ConvertClientArgs, plan_convert_client
from kmsadmin.operations.setup_host import SetupHostArgs, plan_setup_host
from kmsadmin.render import render
from kmsadmin.values import ScriptRef, ScriptResult, Secret

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
WINDOWS_APP = "55c92734-d682-4d71-983e-d6ec3f16059f"


def _function(script: str, name: str) -> str:
    """The text of one PowerShell function of a rendered script."""
    start = script.index(f"function {name} {{")
    end = script.index("\r\n}\r\n", start)
    return script[start:end]


# --- 1. the HRESULT of a failed CIM call ----------------------------------------------------------


def test_hresult_comes_from_wmi_error_data_or_a_com_exception_only() -> None:
    script = render(
        ScriptRef(
            step="activate", params={"application_id": WINDOWS_APP, "activation_id": "", "force": False}
        )
    ).text
    body = _function(script, "Get-KmsHResult")
    # MSFT_WmiError.error_Code first (the licensing HRESULT), with its source named in the comment
    assert "$data.error_Code" in body and "MSFT_WmiError" in body
    # A CimException's own HResult is COR_E_EXCEPTION (0x80131500): it is read only from a COMException
    assert "0x80131500" in body and "COR_E_EXCEPTION" in body
    reads = [
        line.strip() for line in body.split("\r\n") if ".HResult" in line and not line.strip().startswith("#")
    ]
    assert reads == ["$fromCom = ConvertTo-KmsHResult -Code $item.HResult"]
    guard = body[: body.index("$fromCom = ")].rsplit("foreach", 1)[1]
    assert "-is [System.Runtime.InteropServices.COMException]" in guard
    # and the COMException is what Assert-KmsReturn throws for a non-zero ReturnValue
    assert "System.Runtime.InteropServices.COMException" in _function(script, "Assert-KmsReturn")
    assert pwsh.syntax_errors(script) == []


def _failed(stage: str, hresult: str | None) -> ScriptResult:
    line = {"kmsadmin": 1, "step": "activate", "changed": False}
    line["error"] = {"hresult": hresult, "message": "Activate failed", "stage": stage}
    return ScriptResult(host="pc1", step="activate", stdout=json.dumps(line))


def test_a_windows_failure_without_a_code_reports_the_hresult_unknown() -> None:
    result = _failed("Activate", None)
    with pytest.raises(RemoteScriptError) as caught:
        raise_for_error(result, parse_outcome(result))
    assert caught.value.hresult is None and "HRESULT unknown" in str(caught.value)
    assert "0x80131500" not in str(caught.value)


@pytest.mark.parametrize("stage", ["Input", "Check"])
def test_own_refusals_carry_no_hresult_and_do_not_call_it_unknown(stage: str) -> None:
    result = _failed(stage, None)
    with pytest.raises(RemoteScriptError) as caught:
        raise_for_error(result, parse_outcome(result))
    assert "HRESULT" not in str(caught.value)


def test_a_reported_code_is_explained() -> None:
    result = _failed("Activate", "0xC004F074")
    with pytest.raises(RemoteScriptError) as caught:
        raise_for_error(result, parse_outcome(result))
    assert caught.value.hresult == "0xC004F074" and "unknown" not in str(caught.value)


# --- 7. smaller findings --------------------------------------------------------------------------


def test_phone_deposit_names_the_installation_id_parameter() -> None:
    text = (TEMPLATES / "ps1" / "phone-deposit.ps1.j2").read_text(encoding="utf-8")
    assert "DepositOfflineConfirmationId(InstallationId, ConfirmationId)" in text
    assert "DepositOfflineConfirmationId(OfflineInstallationId" not in text
    assert "InstallationId = [string]$product.OfflineInstallationId" in text


def test_hresults_header_names_the_real_source_of_the_messages() -> None:
    header = catalog_text("hresults.toml").split("[sources.ERR]", 1)[0]
    assert 'Messages: the "Error message"\n# text of [ERR]' in header
    assert "[SLERR] is the source of the symbol only" in header
    # the message is [ERR]'s wording, not slerror.h's ("Software Licensing Service ...")
    assert catalog.hresult_info("0xC004C008").message.startswith("The activation server determined")


def catalog_text(name: str) -> str:
    return (files("kmsadmin.catalog") / "data" / name).read_text(encoding="utf-8")


def test_informational_nongenuine_code_is_an_alias_with_its_slerror_symbol() -> None:
    documented = catalog.hresult_info("0xC004F065")
    alias = catalog.hresult_info(0x4004F065)
    assert alias.known and alias.code == "0x4004F065"
    assert alias.symbol == "SL_I_NONGENUINE_GRACE_PERIOD"
    assert alias.meaning == documented.meaning and alias.remediation == documented.remediation
    assert "Alias of 0xC004F065" in alias.note and "slerror.h" in alias.note
    assert "[SLERR]" in alias.source and "[ERR]" in alias.source


def test_srv_record_lookup_is_limited_to_the_node() -> None:
    params = {
        "action": "add",
        "zone_name": "contoso.com",
        "record_name": "_vlmcs._tcp",
        "kms_host": "kms1.contoso.com",
        "kms_port": 1688,
        "priority": 0,
        "weight": 0,
        "ttl": 3600,
        "kms_hosts_group": "",
    }
    script = render(ScriptRef(step="dns-srv-record", params=params)).text
    lookups = re.findall(r"Get-DnsServerResourceRecord -[^\r\n]*", script)
    assert lookups and all(" -Node " in call for call in lookups)
    assert "Get-DnsServerResourceRecord.md" in script


# --- 6. editions the catalog does not know are not guessed from the caption ------------------------

#: What such hosts report: EditionID (registry), OperatingSystemSKU = the PRODUCT_* value of
#: GetProductInfo (MicrosoftDocs/sdk-api nf-sysinfoapi-getproductinfo.md: PRODUCT_SERVERRDSH 0xAF
#: "Windows 10 Enterprise for Virtual Desktops"; PRODUCT_IOTENTERPRISE 0xBC).
UNCATALOGUED = [
    ("Microsoft Windows 11 Enterprise multi-session", "ServerRdsh", 0xAF),
    ("Microsoft Windows 11 IoT Enterprise", "IoTEnterprise", 0xBC),
]


@pytest.mark.parametrize(("caption", "edition_id", "sku"), UNCATALOGUED)
def test_uncatalogued_edition_gets_no_gvlk_from_its_caption(caption: str, edition_id: str, sku: int) -> None:
    # the caption alone would name Windows 11 Enterprise: that GVLK would change the edition
    assert catalog.identify_windows(caption=caption, edition_id=None, build=22631, sku=None, product_type=1)
    for reported in ({"edition_id": edition_id, "sku": sku}, {"edition_id": edition_id, "sku": None}):
        assert catalog.identify_windows(caption=caption, build=22631, product_type=1, **reported) is None
    assert (
        catalog.identify_windows(caption=caption, edition_id=None, build=22631, sku=sku, product_type=1)
        is None
    )
    reason = catalog.unidentified_reason(caption=caption, edition_id=edition_id, build=22631, sku=sku)
    assert f"EditionID {edition_id} / SKU {sku}" in reason and "no KMS client key" in reason


@pytest.mark.parametrize(("caption", "edition_id", "sku"), UNCATALOGUED)
def test_convert_client_refuses_an_uncatalogued_edition_with_the_reason(
    caption: str, edition_id: str, sku: int
) -> None:
    data = json.loads((FIXTURES / "facts" / "win11-enterprise.json").read_text(encoding="utf-8"))
    data["os"].update(caption=caption, edition_id=edition_id, sku=sku)
    plan = plan_convert_client("pc1", HostFacts.model_validate(data), ConvertClientArgs())
    assert plan.blocked and not plan.steps
    (problem,) = plan.problems
    assert (
        edition_id in problem.message and "not in Microsoft's KMS client setup key tables" in problem.message
    )


def test_capacity_plan_does_not_guess_a_reported_edition_from_its_caption() -> None:
    machine = Machine(
        name="avd1",
        role="client",
        os="Microsoft Windows 11 Enterprise multi-session",
        edition_id="ServerRdsh",
        build=22631,
        sku=0xAF,
        product_type=1,
    )
    entry, why = identify(machine)
    assert entry is None and "EditionID ServerRdsh" in why
    # with nothing but the caption, the caption is still the last resort
    assert identify(Machine(name="pc", role="client", os="Microsoft Windows 11 Enterprise"))[0] is not None


# --- 3. required host updates are decided by OS build and UBR ---------------------------------------

#: [RELINFO] (Windows Server release history, Build / KB article columns) for every [PLAN24] row of a
#: Windows 10-based host; the KB is what the admin is shown.
RELINFO_BUILDS = {
    "KB5034770": "20348.2322",
    "KB5034768": "17763.5458",
    "KB5003646": "17763.1999",
    "KB5003638": "14393.4467",
    "KB4478877": "14393.2641",
}
HOST_BUILDS = {"Windows Server 2022": 20348, "Windows Server 2019": 17763, "Windows Server 2016": 14393}


def _update(group: str, host_os: str) -> catalog.RequiredUpdate:
    (update,) = catalog.required_updates(catalog.csvlk_group(group), host_os)
    return update


def test_every_windows_10_based_required_update_has_its_release_build() -> None:
    seen = {}
    for group in catalog.csvlk_groups():
        for host_os, build in HOST_BUILDS.items():
            for update in catalog.required_updates(group, host_os):
                assert update.min_build.split(".")[0] == str(build), (update.kb, host_os)
                assert "[RELINFO] MicrosoftDocs/windows-release-pr" in update.source
                seen[update.kb] = update.min_build
    assert seen == {kb: RELINFO_BUILDS[kb] for kb in seen} and len(seen) >= 4
    # pre-Windows 10 rollups have no UBR in the release information: KB only
    assert _update("windows-server-2016", "Windows Server 2012 R2").min_build == ""


def test_an_installed_later_cumulative_update_satisfies_the_requirement() -> None:
    update = _update("windows-server-2025", "Windows Server 2022")
    assert update.kb == "KB5034770" and update.label == "KB5034770 (build 20348.2322 or later)"
    later_lcu = {"build": 20348, "hotfixes": ["KB5044281"]}
    assert update.installed(ubr=2762, **later_lcu)  # 2024-10 B supersedes 2024-02 B
    assert update.installed(ubr=2322, **later_lcu)
    assert not update.installed(ubr=2227, **later_lcu)  # 2024-01 B is too old
    assert not update.installed(build=20348, ubr=None, hotfixes=["KB5044281"])
    assert not update.installed(build=17763, ubr=9999, hotfixes=[])  # another OS: the build decides nothing
    assert update.installed(build=20348, ubr=None, hotfixes=["kb5034770"])
    rollup = _update("windows-server-2016", "Windows Server 2012 R2")
    assert not rollup.installed(build=9600, ubr=99999, hotfixes=[])
    assert rollup.installed(build=9600, ubr=None, hotfixes=[rollup.kb])


def _server2022(ubr: int | None, hotfixes: list[str]) -> HostFacts:
    data = json.loads((FIXTURES / "facts" / "server2022-fresh.json").read_text(encoding="utf-8"))
    data["os"]["ubr"] = ubr
    data["hotfixes"] = hotfixes
    return HostFacts.model_validate(data)


def test_setup_host_accepts_a_later_lcu_without_the_listed_kb() -> None:
    args = SetupHostArgs(host_key=Secret("BCDFG-HJKMP-QRTVW-XY234-6789B"), csvlk="windows-server-2025")
    plan = plan_setup_host("kms1", _server2022(2762, ["KB5044281"]), args)
    assert not plan.problems and plan.details["required_updates"] == ["KB5034770"]
    old = plan_setup_host("kms1", _server2022(2227, ["KB5034129"]), args)
    (problem,) = old.problems
    assert problem.check == "required-update" and problem.hresult == "0xC004F050"
    assert "KB5034770 (build 20348.2322 or later)" in problem.message
    assert "runs build 20348.2227" in problem.message


def test_capacity_plan_uses_the_build_and_ubr() -> None:
    host = Machine(name="kms1", role="kms_host", os="Windows Server 2022", build=20348, ubr=2762, hotfixes=())
    group = catalog.csvlk_group("windows-server-2025")
    assert _fit(host, group).missing_updates == []
    old = Machine(name="kms1", role="kms_host", os="Windows Server 2022", build=20348, ubr=2227, hotfixes=())
    fit = _fit(old, group)
    assert fit.missing_updates == ["KB5034770"] and "(OS build 20348.2322 or later)" in _builds(fit)


# --- 5. firewall scope ---------------------------------------------------------------------------


def test_allow_from_subnets_are_validated_and_normalised() -> None:
    from kmsadmin import validate
    from kmsadmin.errors import InvalidInput

    # Set-NetFirewallRule -RemoteAddress takes a subnet by bit count or by mask ([PSDOCS] NetSecurity)
    assert validate.remote_addresses("10.0.0.0/8, 192.168.1.0/255.255.255.0,10.0.0.0/8") == (
        "10.0.0.0/8",
        "192.168.1.0/24",
    )
    for bad in ("10.0.0.0/33", "LocalSubnet", "kms01", ""):
        with pytest.raises(InvalidInput):
            validate.remote_addresses(bad)


def test_uncovered_subnets_against_a_rule_scope() -> None:
    from kmsadmin.operations.setup_host import uncovered

    wanted = ["10.0.0.0/8", "192.168.10.0/24"]
    assert uncovered(wanted, ["LocalSubnet"]) == wanted  # LocalSubnet depends on the host's interfaces
    assert uncovered(wanted, ["Any"]) == []
    assert uncovered(wanted, ["LocalSubnet", "10.0.0.0/255.0.0.0", "192.168.0.0/16"]) == []
    assert uncovered(wanted, ["10.1.0.0/16", "DNS"]) == wanted


def test_setup_host_widens_the_scope_only_by_what_is_missing() -> None:
    data = json.loads((FIXTURES / "facts" / "server2022-fresh.json").read_text(encoding="utf-8"))
    data["firewall"] = [
        {
            "name": "SPPSVC-In-TCP",
            "enabled": True,
            "profiles": ["Domain", "Private"],
            "remote_addresses": ["LocalSubnet", "10.0.0.0/255.0.0.0"],
        },
    ]
    key = Secret("BCDFG-HJKMP-QRTVW-XY234-6789B")
    args = SetupHostArgs(host_key=key, allow_from=("10.0.0.0/8", "172.16.0.0/12"))
    plan = plan_setup_host("kms1", HostFacts.model_validate(data), args)
    (step,) = [s for s in plan.steps if s.step == "firewall"]
    assert step.ref.params["remote_addresses"] == "172.16.0.0/12" and "172.16.0.0/12" in step.reason
    assert plan.details["firewall"][0]["remote_addresses"] == ["LocalSubnet", "10.0.0.0/255.0.0.0"]
    # without --allow-from, the plan says who cannot reach the host
    quiet = plan_setup_host("kms1", HostFacts.model_validate(data), SetupHostArgs(host_key=key))
    assert not [s for s in quiet.steps if s.step == "firewall"]
    assert any("--allow-from" in note for note in quiet.notes)


def test_firewall_cmd_adds_subnets_through_the_environment_and_never_narrows_any() -> None:
    params = {"rule_name": "SPPSVC-In-TCP", "profiles": "Domain,Private", "remote_addresses": "10.0.0.0/8"}
    script = render(ScriptRef(step="firewall", params=params, fmt="cmd")).text
    (line,) = [x for x in script.split("\r\n") if x.startswith("powershell.exe") and "-RemoteAddress" in x]
    assert "$env:KMSADMIN_REMOTE_ADDRESSES" in line and "10.0.0.0/8" not in line
    assert "if (-not ($a -contains 'Any'))" in line
    none = render(ScriptRef(step="firewall", params={**params, "remote_addresses": ""}, fmt="cmd")).text
    assert "-RemoteAddress" not in none
    ps1 = render(ScriptRef(step="firewall", params=params)).text
    assert "-not ($scope -contains 'Any')" in ps1 and "-RemoteAddress ([string[]]($scope + $missing))" in ps1
    assert pwsh.syntax_errors(ps1) == []
