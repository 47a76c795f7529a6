"""Tests of the catalog layer: GVLK data, key checks, identification, CSVLK compatibility,
activation rules, LicenseStatus and HRESULT look-ups.

Expected values come from Microsoft's pages as cited in the data files (and reference/microsoft.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from kmsadmin import catalog
from kmsadmin.catalog import (
    ACTIVATION_RULES,
    LICENSE_STATUS,
    NotFoundInCatalog,
    check_key,
    client_keys,
    compat,
    csvlk_group,
    csvlk_groups,
    find_client_key,
    group_activates,
    host_can_carry,
    hresult_info,
    identify_office,
    identify_windows,
    is_evaluation,
    license_status_name,
    minimal_group_for,
    not_gvlk_keys,
    os_product,
    threshold_for,
)
from kmsadmin.errors import EXIT_USAGE, InvalidInput, KmsAdminError
from kmsadmin.validate import product_key

# ---------------------------------------------------------------------------------------------
# GVLK data


def test_counts_match_the_official_tables() -> None:
    # 99 Windows (95 current rows + 4 rows only in the 2023/2017 versions) + 52 Office = 151.
    windows = client_keys("windows")
    office = client_keys("office")
    assert len(windows) == 99
    assert len(office) == 52
    assert len(client_keys()) == 151
    assert sum("KEYS24" not in k.source for k in windows) == 4
    by_version = Counter(k.version for k in office)
    assert by_version == {
        "Office LTSC 2024": 12,
        "Office LTSC 2021": 13,
        "Office 2019": 13,
        "Office 2016": 14,
    }
    assert Counter(k.kind for k in windows) == {"server": 45, "client": 54}


def test_every_gvlk_is_well_formed_and_rows_are_unique() -> None:
    rows = client_keys()
    for row in rows:
        assert product_key(row.gvlk) == row.gvlk
        assert row.source.startswith("[")
        assert "@" in row.source
        assert row.source_date
    assert len({(r.product, r.edition) for r in rows}) == len(rows)
    assert len({r.name for r in rows}) == len(rows)


def test_office_keys_are_distinct_and_publisher_2024_is_absent() -> None:
    office = client_keys("office")
    assert len({k.gvlk for k in office}) == 52
    assert not [k for k in office if "Publisher" in k.product and "2024" in k.product]


@pytest.mark.parametrize(
    ("name", "gvlk"),
    [
        ("windows-server-2022-standard", "VDYBN-27WPP-V4HQT-9VMD4-VMK7H"),
        ("windows-server-2022-datacenter", "WX4NM-KYWYW-QJJR4-XV3QB-6VM33"),
        ("windows-server-2025-standard", "TVRH6-WHNXV-R9WG3-9XRFY-MY832"),
        ("windows-server-2025-datacenter-azure-edition", "XGN3F-F394H-FD2MY-PP6FD-8MCRC"),
        ("windows-server-2016-datacenter", "CB7KF-BWN84-R7R2Y-793K2-8XDDG"),
        ("windows-11-pro", "W269N-WFGWX-YVC9B-4J6C9-T83GX"),
        ("windows-10-pro", "W269N-WFGWX-YVC9B-4J6C9-T83GX"),
        ("windows-11-enterprise-g", "YYVX9-NTFWV-6MDM3-9PT4T-4M68B"),
        ("windows-10-enterprise-g", "YYVX9-NTFWV-6MDM3-9PT4T-4M68B"),
        ("windows-10-enterprise-ltsc-2019", "M7XTQ-FN8P6-TTKYV-9D4CC-J462D"),
        ("windows-10-enterprise-ltsc-2021", "M7XTQ-FN8P6-TTKYV-9D4CC-J462D"),
        ("windows-11-enterprise-ltsc-2024", "M7XTQ-FN8P6-TTKYV-9D4CC-J462D"),
        ("windows-11-iot-enterprise-ltsc-2024", "KBN8V-HFGQ4-MGXVD-347P6-PDQGT"),
        ("windows-server-version-1803-standard", "PTXN8-JFHJM-4WC78-MPCBR-9W4KR"),
        ("windows-server-version-1803-datacenter", "2HXDN-KRXHB-GPYC7-YCKFJ-7FVDG"),
        ("windows-server-2012", "BN3D2-R7TKB-3YPBD-8DRP2-27GG4"),
        ("windows-vista-enterprise-n", "VTC42-BM838-43QHV-84HX6-XJXKV"),
        ("office-ltsc-professional-plus-2021", "FXYTK-NJJ8C-GB6DW-3DYQT-6F7TH"),
        ("word-ltsc-2021", "TN8H9-M34D3-Y64V9-TR72V-X79KV"),
        ("office-ltsc-professional-plus-2024", "XJ2XN-FW8RK-P4HMP-DKDBV-GCVGB"),
        ("office-professional-plus-2016", "XQNVK-8JYDB-WJ9W3-YJ8YR-WFG99"),
        ("onenote-2016", "DR92N-9HTF2-97XKM-XW2WJ-XW3J6"),
    ],
)
def test_known_keys(name: str, gvlk: str) -> None:
    assert find_client_key(name).gvlk == gvlk


def test_seed_003_errors_are_not_reproduced() -> None:
    # microsoft.md section a.1: the seed put the Enterprise LTSC key into the "Enterprise G" row
    # and the Server 2016 Datacenter key into the "LTSC 2021/2019" row.
    for name in ("windows-11-enterprise-g", "windows-10-enterprise-g"):
        assert find_client_key(name).gvlk != "M7XTQ-FN8P6-TTKYV-9D4CC-J462D"
    for name in ("windows-10-enterprise-ltsc-2021", "windows-10-enterprise-ltsc-2019"):
        assert find_client_key(name).gvlk != "CB7KF-BWN84-R7R2Y-793K2-8XDDG"
    assert {m.name for m in check_key("CB7KF-BWN84-R7R2Y-793K2-8XDDG").matches} == {
        "windows-server-2016-datacenter"
    }


def test_1803_keys_follow_the_newer_source_and_record_the_older_one() -> None:
    standard = find_client_key("windows-server-version-1803-standard")
    assert "KEYS17" in standard.note
    assert "KEYS24" in standard.source


def test_retired_2012_rows_cite_both_older_sources() -> None:
    row = find_client_key("Windows Server 2012 Country Specific")
    assert "KEYS23" in row.source
    assert "KEYS17" in row.source
    assert "KEYS24" not in row.source


def test_windows_11_and_10_share_keys_one_row_per_product() -> None:
    check = check_key("NPPR9-FWDCX-D2C8J-H872K-2YT43")
    assert {m.name for m in check.matches} == {"windows-11-enterprise", "windows-10-enterprise"}


def test_to_dict_has_the_cli_fields() -> None:
    data = find_client_key("windows-server-2022-standard").to_dict()
    assert {"product", "edition", "gvlk", "family", "source"} <= set(data)
    assert data["product"] == "Windows Server 2022"
    assert data["edition"] == "Standard"
    assert data["family"] == "windows"
    json.dumps([k.to_dict() for k in client_keys()])


def test_family_filter_rejects_unknown_family() -> None:
    with pytest.raises(InvalidInput):
        client_keys("linux")


# ---------------------------------------------------------------------------------------------
# Look-up by name


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("Windows Server 2022 Standard", "windows-server-2022-standard"),
        ("windows server 2022 datacenter: azure edition", "windows-server-2022-datacenter-azure-edition"),
        ("WINDOWS 10 PRO N", "windows-10-pro-n"),
        ("server 2019 essentials", "windows-server-2019-essentials"),
        ("Office LTSC Professional Plus 2021", "office-ltsc-professional-plus-2021"),
        ("Windows Web Server 2008", "windows-server-2008-web"),
    ],
)
def test_find_client_key_queries(query: str, name: str) -> None:
    assert find_client_key(query).name == name


def test_find_client_key_not_found_lists_near_matches() -> None:
    with pytest.raises(NotFoundInCatalog) as info:
        find_client_key("server 2022 datacenter")
    assert info.value.exit_code == EXIT_USAGE
    assert isinstance(info.value, KmsAdminError)
    assert "windows-server-2022-datacenter" in info.value.near
    with pytest.raises(NotFoundInCatalog) as info:
        find_client_key("Windows Server 2022 Standart")
    assert "windows-server-2022-standard" in info.value.near


# ---------------------------------------------------------------------------------------------
# Key checks


def test_check_key_gvlk() -> None:
    result = check_key(" vdybn-27wpp-v4hqt-9vmd4-vmk7h ")
    assert result.is_gvlk
    assert result.key == "VDYBN-27WPP-V4HQT-9VMD4-VMK7H"
    assert (result.product, result.edition, result.family) == ("Windows Server 2022", "Standard", "windows")
    assert result.to_dict()["matches"] == ["windows-server-2022-standard"]


def test_all_74_seed_non_gvlk_keys_are_not_gvlks() -> None:
    keys = not_gvlk_keys()
    assert len(keys) == 74
    assert len({k.key for k in keys}) == 74
    assert Counter(k.category for k in keys) == {"retail": 64, "subscription": 5, "unofficial-volume": 5}
    for known in keys:
        result = check_key(known.key)
        assert not result.is_gvlk, known
        assert result.note.startswith("not a GVLK: ")


def test_check_key_explains_known_retail_keys() -> None:
    result = check_key("NTMYR-DM4C3-MHK32-7QBRC-RVXB8")
    assert result.note == "not a GVLK: retail/consumer key (Office Home & Student 2019)"
    assert "Microsoft 365 subscription key" in check_key("DRNV7-VGMM2-B3G9T-4BF84-VMFTK").note
    assert "not in Microsoft's GVLK table" in check_key("WGT24-HCNMF-FQ7XH-6M8K7-DRTW9").note


def test_check_key_unknown_well_formed_key_is_masked() -> None:
    result = check_key("BBBBB-CCCCC-DDDDD-FFFFF-GGGGG")
    assert not result.is_gvlk
    assert result.key == "*****-*****-*****-*****-GGGGG"
    assert result.note.startswith("not a GVLK (not in Microsoft's KMS client setup key tables")


@pytest.mark.parametrize(
    "key",
    [
        "",
        "VDYBN-27WPP-V4HQT-9VMD4",
        "VDYBN27WPPV4HQT9VMD4VMK7H",
        "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE",
        "NNBBB-...",
    ],
)
def test_check_key_malformed_raises(key: str) -> None:
    with pytest.raises(InvalidInput):
        check_key(key)


# ---------------------------------------------------------------------------------------------
# Identification


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (
            {
                "caption": "Microsoft Windows Server 2022 Standard",
                "edition_id": "ServerStandard",
                "build": 20348,
                "sku": 7,
                "product_type": 3,
            },
            "windows-server-2022-standard",
        ),
        (
            {"caption": None, "edition_id": "ServerDatacenter", "build": 17763, "sku": 8, "product_type": 2},
            "windows-server-2019-datacenter",
        ),
        (
            {"caption": None, "edition_id": "Enterprise", "build": 22631, "sku": 4, "product_type": 1},
            "windows-11-enterprise",
        ),
        (
            {"caption": None, "edition_id": "Enterprise", "build": 19045, "sku": 4, "product_type": 1},
            "windows-10-enterprise",
        ),
        (
            {"caption": None, "edition_id": "ProfessionalN", "build": 19045, "sku": 49, "product_type": 1},
            "windows-10-pro-n",
        ),
        (
            {"caption": None, "edition_id": "EnterpriseS", "build": 26100, "sku": 125, "product_type": 1},
            "windows-11-enterprise-ltsc-2024",
        ),
        (
            {"caption": None, "edition_id": "EnterpriseS", "build": 19044, "sku": 125, "product_type": 1},
            "windows-10-enterprise-ltsc-2021",
        ),
        (
            {"caption": None, "edition_id": "EnterpriseSN", "build": 17763, "sku": 126, "product_type": 1},
            "windows-10-enterprise-n-ltsc-2019",
        ),
        (
            {"caption": None, "edition_id": "IoTEnterpriseS", "build": 26100, "sku": 191, "product_type": 1},
            "windows-11-iot-enterprise-ltsc-2024",
        ),
        (
            {"caption": None, "edition_id": "ServerTurbine", "build": 20348, "sku": 407, "product_type": 3},
            "windows-server-2022-datacenter-azure-edition",
        ),
        (
            {"caption": None, "edition_id": "ServerTurbine", "build": 26100, "sku": 407, "product_type": 3},
            "windows-server-2025-datacenter-azure-edition",
        ),
        (
            {
                "caption": None,
                "edition_id": "ServerDatacenterCor",
                "build": 26100,
                "sku": 147,
                "product_type": 3,
            },
            "windows-server-2025-datacenter",
        ),
        (
            {"caption": None, "edition_id": "Professional", "build": 7601, "sku": 48, "product_type": 1},
            "windows-7-professional",
        ),
    ],
)
def test_identify_windows_typical_hosts(kwargs: dict[str, object], name: str) -> None:
    row = identify_windows(**kwargs)  # type: ignore[arg-type]
    assert row is not None
    assert row.name == name


def test_identify_windows_is_language_independent() -> None:
    # A German caption and no EditionID: the SKU and build decide.
    row = identify_windows(
        caption="Microsoft Windows 11 Pro für Workstations",
        edition_id=None,
        build=22631,
        sku=161,
        product_type=1,
    )
    assert row is not None
    assert row.name == "windows-11-pro-for-workstations"
    # A localised caption alone doesn't invent an answer.
    assert (
        identify_windows(
            caption="Microsoft Windows 11 Entreprise", edition_id=None, build=22631, sku=None, product_type=1
        )
        is None
    )


def test_identify_windows_caption_is_last_resort() -> None:
    row = identify_windows(
        caption="Microsoft Windows Server 2019 Datacenter",
        edition_id=None,
        build=17763,
        sku=None,
        product_type=None,
    )
    assert row is not None
    assert row.name == "windows-server-2019-datacenter"


def test_identify_windows_server_2019_vs_2022_by_build() -> None:
    for build, name in ((17763, "windows-server-2019-standard"), (20348, "windows-server-2022-standard")):
        row = identify_windows(caption=None, edition_id=None, build=build, sku=7, product_type=3)
        assert row is not None
        assert row.name == name


def test_identify_windows_evaluation_and_unknown() -> None:
    assert is_evaluation("ServerDatacenterEval")
    assert is_evaluation("serverstandardeval")
    assert not is_evaluation("ServerDatacenter")
    assert not is_evaluation(None)
    assert (
        identify_windows(caption=None, edition_id="ServerDatacenterEval", build=20348, sku=80, product_type=3)
        is None
    )
    assert identify_windows(caption=None, edition_id=None, build=20348, sku=79, product_type=3) is None
    assert identify_windows(caption=None, edition_id="Core", build=22631, sku=101, product_type=1) is None
    assert identify_windows(caption=None, edition_id=None, build=22631, sku=None, product_type=1) is None


@pytest.mark.parametrize(
    ("build", "product_type", "expected"),
    [
        (26100, 3, "Windows Server 2025"),
        (20348, 2, "Windows Server 2022"),
        (17763, 3, "Windows Server 2019"),
        (14393, 3, "Windows Server 2016"),
        (17134, 3, "Windows Server, version 1803"),
        (9600, 3, "Windows Server 2012 R2"),
        (7601, 3, "Windows Server 2008 R2"),
        (6002, 3, "Windows Server 2008"),
        (26100, 1, "Windows 11"),
        (22000, 1, "Windows 11"),
        (19045, 1, "Windows 10"),
        (10240, 1, "Windows 10"),
        (9600, 1, "Windows 8.1"),
        (9200, 1, "Windows 8"),
        (7601, 1, "Windows 7"),
        (6002, 1, "Windows Vista"),
        (9600, None, "Windows 8.1 or Windows Server 2012 R2"),
        (99999999, 3, "Windows Server (build 99999999)"),
    ],
)
def test_os_product(build: int, product_type: int | None, expected: str) -> None:
    assert os_product(build, product_type) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Office 21, Office21ProPlus2021VL_KMS_Client_AE edition", "office-ltsc-professional-plus-2021"),
        ("Office 19, Office19ProPlus2019VL_KMS_Client_AE edition", "office-professional-plus-2019"),
        ("Office 16, Office16ProPlusVL_KMS_Client edition", "office-professional-plus-2016"),
        ("Office 24, Office24ProPlus2024VL_KMS_Client_AE edition", "office-ltsc-professional-plus-2024"),
        ("Office 21, Office21VisioPro2021VL_KMS_Client_AE edition", "visio-ltsc-professional-2021"),
        ("Office 16, Office16ProjectProVL_KMS_Client edition", "project-professional-2016"),
        ("Office 16, Office16StandardVL_KMS_Client edition", "office-standard-2016"),
        ("ProjectStd2019VL_KMS_Client_AE", "project-standard-2019"),
    ],
)
def test_identify_office(name: str, expected: str) -> None:
    row = identify_office(name, "Office 21, VOLUME_KMSCLIENT channel")
    assert row is not None
    assert row.name == expected


def test_identify_office_rejects_non_kms_clients() -> None:
    assert (
        identify_office("Office 16, Office16ProPlusVL_MAK edition", "Office 16, VOLUME_MAK channel") is None
    )
    assert (
        identify_office("Office 19, Office19HomeBusinessR_Retail edition", "Office 19, RETAIL channel")
        is None
    )
    assert identify_office("Office 16, Office16O365ProPlusR_Subscription edition", "VOLUME_KMSCLIENT") is None


# ---------------------------------------------------------------------------------------------
# CSVLK groups and compatibility


@pytest.mark.parametrize(
    ("query", "group_id"),
    [
        ("2025", "windows-server-2025"),
        ("Windows Server 2025", "windows-server-2025"),
        ("Volume License for Windows Server 2025", "windows-server-2025"),
        ("windows server 2016", "windows-server-2016"),
        ("Windows 10", "windows-10"),
        ("office 2021", "office-ltsc-2021"),
        ("Office LTSC 2024", "office-ltsc-2024"),
        ("office 2016", "office-2016"),
        ("Windows Server 2012 R2 for Windows 10", "windows-server-2012-r2-for-windows-10"),
    ],
)
def test_csvlk_group_queries(query: str, group_id: str) -> None:
    assert csvlk_group(query).id == group_id


def test_csvlk_group_unknown() -> None:
    with pytest.raises(NotFoundInCatalog):
        csvlk_group("Windows 95")


def test_groups_and_retired_flag() -> None:
    ids = [g.id for g in csvlk_groups("windows")]
    assert ids[-1] == "windows-server-2025"
    retired = [g for g in csvlk_groups() if g.retired]
    assert [g.id for g in retired] == ["windows-server-2012-r2-for-windows-10"]
    assert "windows-server-2012-r2-for-windows-10" not in {g.id for g in csvlk_groups(include_retired=False)}


def test_2025_group_on_server_2019_needs_kb5034768() -> None:
    verdict = host_can_carry(csvlk_group("2025"), "Windows Server 2019")
    assert verdict.ok
    assert [u.kb for u in verdict.required_updates] == ["KB5034768"]
    assert verdict.required_updates[0].date == "2024-02-13"


def test_2025_group_on_server_2016_is_refused() -> None:
    verdict = host_can_carry(csvlk_group("2025"), "Windows Server 2016")
    assert not verdict.ok
    assert "not listed" in verdict.reason


def test_2025_group_on_server_2022_records_the_kb_discrepancy() -> None:
    verdict = host_can_carry(csvlk_group("2025"), "Windows Server 2022 Datacenter")
    assert verdict.ok
    update = verdict.required_updates[0]
    # [PLAN24] prints KB5034765 (a Windows 11 update); Server 2022's 2024-02 B is KB5034770 [RELINFO]
    assert (update.kb, update.doc_kb, update.min_build) == ("KB5034770", "KB5034765", "20348.2322")
    assert "Windows 11" in update.note and "[RELINFO]" in update.source and "[PLAN24]" in update.source


def test_2022_group_on_server_2016_needs_kb5003638() -> None:
    verdict = host_can_carry(csvlk_group("2022"), "Windows Server 2016")
    assert verdict.ok
    assert [u.kb for u in verdict.required_updates] == ["KB5003638"]


def test_2019_group_on_server_2016_needs_the_earliest_update() -> None:
    verdict = host_can_carry(csvlk_group("2019"), "2016")
    assert verdict.ok
    assert [u.kb for u in verdict.required_updates] == ["KB4478877"]


def test_same_version_host_needs_no_update() -> None:
    verdict = host_can_carry(csvlk_group("2022"), "Windows Server 2022 Standard")
    assert verdict.ok
    assert verdict.required_updates == ()


def test_windows_10_group_on_server_is_refused() -> None:
    verdict = host_can_carry(csvlk_group("Windows 10"), "Windows Server 2019")
    assert not verdict.ok
    assert "can't be installed into the KMS in Windows Server" in verdict.reason


def test_windows_10_group_on_client_hosts() -> None:
    assert host_can_carry(csvlk_group("Windows 10"), "Windows 10").ok
    verdict = host_can_carry(csvlk_group("Windows 10"), "Windows 7")
    assert verdict.ok
    assert [u.kb for u in verdict.required_updates] == ["KB3079821"]


def test_server_group_on_client_os_is_refused() -> None:
    verdict = host_can_carry(csvlk_group("2022"), "Windows 11")
    assert not verdict.ok
    assert "client operating systems" in verdict.reason


@pytest.mark.parametrize("group", ["2025", "2022", "office 2024"])
def test_azure_edition_host_is_refused(group: str) -> None:
    verdict = host_can_carry(csvlk_group(group), "Windows Server 2022 Datacenter: Azure Edition")
    assert not verdict.ok
    assert "can't be configured as a KMS host" in verdict.reason
    by_edition_id = host_can_carry(csvlk_group(group), "Windows Server 2025", edition_id="ServerTurbine")
    assert not by_edition_id.ok


def test_server_2008_r2_cannot_carry_2016_or_later() -> None:
    verdict = host_can_carry(csvlk_group("2016"), "Windows Server 2008 R2")
    assert not verdict.ok
    assert "2008 R2" in verdict.reason
    retired = host_can_carry(csvlk_group("2012 R2 for Windows 10"), "Windows Server 2008 R2")
    assert retired.ok
    assert [u.kb for u in retired.required_updates] == ["KB3079821"]


def test_office_host_requirements() -> None:
    assert not host_can_carry(csvlk_group("office 2024"), "Windows Server 2019").ok
    assert host_can_carry(csvlk_group("office 2024"), "Windows Server 2022").ok
    assert host_can_carry(csvlk_group("office 2024"), "Windows 10").ok
    assert host_can_carry(csvlk_group("office 2016"), "Windows Server 2008 R2").ok
    assert not host_can_carry(csvlk_group("office 2019"), "Windows Server 2008 R2").ok
    office24 = csvlk_group("office 2024")
    # [OHOST] and the current [OTOOLS] name one host ID; 8D368FC1-... is the ProPlus 2024 client SKU
    assert office24.kms_host_activation_ids == ("F3D89BBF-C0EC-47CE-A8FA-E5A5F97E447F",)
    assert "8D368FC1-9470-4BE2-8D66-90E836CBB051" in office24.note and "client SKU" in office24.note
    assert "[OTOOLS]" in office24.note and office24.source.startswith(
        "[OHOST] MicrosoftDocs/OfficeDocs-DeployOffice"
    )


def test_unknown_host_os() -> None:
    verdict = host_can_carry(csvlk_group("2025"), "Ubuntu 24.04")
    assert not verdict.ok
    assert "unknown host OS" in verdict.reason


def test_group_activates() -> None:
    g2019 = csvlk_group("2019")
    g2022 = csvlk_group("2022")
    g2025 = csvlk_group("2025")
    win11 = find_client_key("windows-11-enterprise")
    ltsc2024 = find_client_key("windows-11-enterprise-ltsc-2024")
    assert not group_activates(g2019, win11)
    assert group_activates(g2022, win11)
    assert not group_activates(g2022, ltsc2024)
    assert group_activates(g2025, ltsc2024)
    assert group_activates(g2025, find_client_key("windows-server-2008-datacenter"))
    assert not group_activates(g2025, find_client_key("office-ltsc-professional-plus-2021"))
    assert group_activates(csvlk_group("office 2021"), find_client_key("office-ltsc-professional-plus-2021"))
    assert not group_activates(csvlk_group("Windows 10"), find_client_key("windows-server-2016-standard"))


def test_minimal_group_for() -> None:
    def minimal(*names: str) -> str | None:
        group = minimal_group_for([find_client_key(n) for n in names])
        return group.id if group else None

    assert minimal("windows-11-enterprise-ltsc-2024") == "windows-server-2025"
    assert minimal("windows-11-pro") == "windows-server-2022"
    assert minimal("windows-10-pro", "windows-server-2016-standard") == "windows-server-2016"
    assert minimal("windows-server-2019-standard") == "windows-server-2019"
    assert minimal("windows-server-2025-standard", "windows-7-professional") == "windows-server-2025"
    assert minimal("office-professional-plus-2019") == "office-2019"
    assert minimal("windows-11-iot-enterprise-ltsc-2024") is None
    assert minimal("windows-11-pro", "office-professional-plus-2019") is None
    client_group = minimal_group_for([find_client_key("windows-10-pro")], include_client_groups=True)
    assert client_group is not None
    assert client_group.id == "windows-10"


def test_compat_infers_the_group_from_the_client() -> None:
    answer = compat(host_os="Windows Server 2019", csvlk=None, client="Windows 11 Enterprise LTSC 2024")
    assert answer.group is not None
    assert answer.group.id == "windows-server-2025"
    assert answer.host_ok is True
    assert [u.kb for u in answer.required_updates] == ["KB5034768"]
    assert answer.client_activated is True
    data = answer.to_dict()
    assert data["csvlk_id"] == "windows-server-2025"
    assert data["required_updates"][0]["kb"] == "KB5034768"
    json.dumps(data)


def test_compat_reports_unlisted_client() -> None:
    answer = compat(host_os=None, csvlk="2019", client="windows-11-pro")
    assert answer.client_activated is False
    assert "not listed" in answer.client_reason
    assert answer.host_ok is None


def test_compat_host_only_lists_groups() -> None:
    answer = compat(host_os="Windows Server 2016", csvlk=None, client=None)
    assert "Volume License for Windows Server 2022" in answer.groups_for_host
    assert "Volume License for Windows Server 2025" not in answer.groups_for_host
    assert "Office LTSC 2021 KMS host" in answer.groups_for_host


def test_compat_azure_edition_host() -> None:
    answer = compat(host_os="Windows Server 2025 Datacenter: Azure Edition", csvlk="2025", client=None)
    assert answer.host_ok is False


def test_group_to_dict() -> None:
    data = csvlk_group("2025").to_dict()
    assert data["hosts"] == ["Windows Server 2025", "Windows Server 2022", "Windows Server 2019"]
    assert "Windows 11 Enterprise LTSC 2024" in data["activates"]
    assert csvlk_group("office 2019").to_dict()["volume_license_pack"].endswith("id=57342")


# ---------------------------------------------------------------------------------------------
# Rules, LicenseStatus


def test_activation_rules() -> None:
    rules = ACTIVATION_RULES
    assert (rules.client_threshold, rules.server_threshold, rules.office_threshold) == (25, 5, 5)
    assert (rules.count_window_days, rules.max_recent_contacts, rules.validity_days) == (30, 50, 180)
    assert (rules.renewal_interval_minutes, rules.retry_interval_minutes) == (10080, 120)
    assert (rules.interval_min_minutes, rules.interval_max_minutes) == (15, 43200)
    assert (rules.hosts_per_csvlk, rules.port) == (6, 1688)
    assert rules.srv_name == "_vlmcs._tcp"
    assert (
        rules.srv_record("contoso.com", "kms1.contoso.com")
        == "_vlmcs._tcp.contoso.com. IN SRV 0 0 1688 kms1.contoso.com."
    )
    assert rules.recommended_hosts(50) == 1
    assert rules.recommended_hosts(51) == 2
    for name in ("client_threshold", "server_threshold", "validity_days", "port", "srv_record"):
        assert rules.sources[name].startswith("[")
    with pytest.raises(AttributeError):
        rules.port = 1  # type: ignore[misc]


def test_threshold_for() -> None:
    assert threshold_for(find_client_key("windows-11-pro")) == 25
    assert threshold_for(find_client_key("windows-server-2022-standard")) == 5
    assert threshold_for(find_client_key("office-ltsc-professional-plus-2021")) == 5


def test_license_status() -> None:
    assert sorted(LICENSE_STATUS) == [0, 1, 2, 3, 4, 5, 6]
    assert [license_status_name(n) for n in range(7)] == [
        "Unlicensed",
        "Licensed",
        "OOBGrace",
        "OOTGrace",
        "NonGenuineGrace",
        "Notification",
        "ExtendedGrace",
    ]
    assert LICENSE_STATUS[2].slmgr == "Initial grace period"
    assert LICENSE_STATUS[3].slmgr.startswith("Additional grace period")
    assert license_status_name(9) == "Unknown (9)"


def test_app_ids() -> None:
    assert catalog.WINDOWS_APP_ID == "55c92734-d682-4d71-983e-d6ec3f16059f"
    assert catalog.OFFICE_APP_ID == "0ff1ce15-a989-479d-af46-f275c6370663"


# ---------------------------------------------------------------------------------------------
# HRESULTs


@pytest.mark.parametrize(
    "code",
    [
        "0xC004F074",
        "0xc004f074",
        "c004f074",
        "C004F074",
        -1073418124,
        3221549172,
        "-1073418124",
        "3221549172",
    ],
)
def test_hresult_input_forms(code: str | int) -> None:
    info = hresult_info(code)
    assert info.known
    assert info.code == "0xC004F074"
    assert info.symbol == "SL_E_VL_BINDING_SERVICE_UNAVAILABLE"
    assert "_vlmcs._tcp" in info.remediation
    assert "1688" in info.remediation


@pytest.mark.parametrize(
    "code",
    [
        "0xC004F074",
        "0xC004C008",
        "0xC004F038",
        "0xC004F039",
        "0xC004F041",
        "0xC004F042",
        "0xC004F050",
        "0xC004F069",
        "0xC004F06C",
        "0xC004F035",
        "0xC004F014",
        "0xC004E015",
        "0x80070005",
        "0x8007232A",
        "0x8007232B",
        "0x8007251D",
        "0x800706BA",
        "0xC004F056",
        "0xC004F06B",
        "0xC004C001",
        "0xC004C003",
        "0xC004B100",
        "0xC004C020",
        "0xC004C021",
        "0xC004F009",
        "0xC004F00F",
        "0xC004F02C",
        "0xC004F051",
        "0xC004F064",
        "0xC004F065",
        "0x8004FE21",
        "0x80092328",
        "0x8007007B",
        "0x80070490",
    ],
)
def test_every_documented_code_is_known(code: str) -> None:
    info = hresult_info(code)
    assert info.known
    assert info.meaning
    assert info.remediation
    assert info.source.startswith("[")


def test_hresult_details() -> None:
    assert hresult_info("0xC004F069").unconfirmed
    assert hresult_info("0xC004E015").unconfirmed
    assert not hresult_info("0xC004F038").unconfirmed
    assert "LocalAccountTokenFilterPolicy" in hresult_info(-2147024891).remediation
    assert hresult_info("80070005").code == "0x80070005"
    assert "10 times" in hresult_info("0xC004C008").meaning


def test_unknown_hresult() -> None:
    info = hresult_info(0x12345678)
    assert not info.known
    assert info.code == "0x12345678"
    assert "slui.exe 0x2a 0x12345678" in info.remediation
    assert info.to_dict()["known"] is False


@pytest.mark.parametrize("code", ["", "zzz", "0x123456789", 2**32, -(2**31) - 1])
def test_bad_hresult(code: str | int) -> None:
    with pytest.raises(InvalidInput):
        hresult_info(code)


# ---------------------------------------------------------------------------------------------
# Packaging


def test_import_is_lazy() -> None:
    script = (
        "import kmsadmin.catalog as c\n"
        "from kmsadmin.catalog import _data\n"
        "assert _data.load.cache_info().currsize == 0, 'data loaded at import'\n"
        "c.client_keys()\n"
        "assert _data.load.cache_info().currsize >= 2\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
