"""Integrity tests of the catalog's package data: cross-references between the TOML files hold,
so a typo in a product or edition name can't silently make a look-up answer "no".
"""

from __future__ import annotations

import re
from itertools import pairwise

from kmsadmin.catalog import client_keys, csvlk_groups, hresult_codes, not_gvlk_keys
from kmsadmin.catalog._data import load
from kmsadmin.validate import guid, kb_number


def test_csvlk_selectors_name_existing_rows() -> None:
    rows = {(k.product, k.edition) for k in client_keys("windows")}
    products = {p for p, _ in rows}
    for group in csvlk_groups("windows"):
        assert group.activates, group.id
        for rule in group.activates:
            assert rule.product in products, (group.id, rule.product)
            for edition in rule.editions:
                assert edition == "*" or (rule.product, edition) in rows, (group.id, rule.product, edition)


def test_csvlk_hosts_and_updates_name_known_host_os() -> None:
    raw = load("csvlk")
    known = set(raw["host_os"]["server"]) | set(raw["host_os"]["client"])
    for group in csvlk_groups():
        for host in (*group.hosts, *group.azure_footnote_hosts):
            assert host in known, (group.id, host)
        for minimum in (group.min_server, group.min_client):
            assert not minimum or minimum in known, (group.id, minimum)
        for act_id in group.kms_host_activation_ids:
            guid(act_id)
    targets = {g.target for g in csvlk_groups("windows")}
    for update in raw["update"]:
        assert update["host"] in known
        assert kb_number(update["kb"]) == update["kb"]
        assert update["kb"] in update["title"] or update["kb"] in {"KB3172614", "KB3172615", "KB3079821"}
        assert set(update["activates"]) <= known
        assert targets & set(update["activates"]), update


def test_windows_rows_reference_products_and_profiles() -> None:
    raw = load("windows_keys")
    for row in raw["key"]:
        assert row["product"] in raw["products"]
        assert row["profile"] in raw["profiles"]
        assert set(row["source"]) <= set(raw["sources"])
        assert row["label"]
    for profile in raw["profiles"].values():
        assert set(profile.get("unverified_edition_ids", [])) <= set(profile["edition_ids"])
        assert set(profile.get("unverified_skus", [])) <= set(profile["skus"])


def test_identification_data_is_present_and_marked() -> None:
    bare = []
    for key in client_keys("windows"):
        assert key.builds, key.name
        if not key.edition_ids:
            bare.append(key.name)
        else:
            assert key.skus, key.name
    # Only the four KEYS23/KEYS17 "Windows Server 2012 ..." rows, which name no edition.
    assert sorted(bare) == [
        "windows-server-2012",
        "windows-server-2012-country-specific",
        "windows-server-2012-n",
        "windows-server-2012-single-language",
    ]
    g = next(k for k in client_keys("windows") if k.name == "windows-11-enterprise-g")
    assert "OperatingSystemSKU 171" in g.unverified
    std = next(k for k in client_keys("windows") if k.name == "windows-server-2022-standard")
    assert "EditionID ServerStandard" not in std.unverified
    for key in client_keys("office"):
        assert key.license_tokens, key.name
        assert all(t.endswith("VL_KMS_Client") for t in key.license_tokens)
        assert key.unverified


def test_build_ranges_do_not_overlap_within_an_edition_id() -> None:
    # Identification by EditionID + build must be unambiguous.
    ranges: dict[str, list[tuple[int, int, str]]] = {}
    for key in client_keys("windows"):
        for edition_id in key.edition_ids:
            ranges.setdefault(edition_id.lower(), []).extend((lo, hi, key.name) for lo, hi in key.builds)
    for edition_id, spans in ranges.items():
        spans.sort()
        for (_, hi, name), (lo, _, other) in pairwise(spans):
            assert hi < lo, (edition_id, name, other)


def test_not_gvlk_keys_never_collide_with_gvlks() -> None:
    gvlks = {k.gvlk for k in client_keys()}
    assert not gvlks & {k.key for k in not_gvlk_keys()}


def test_hresult_codes_are_normalised_and_unique() -> None:
    codes = hresult_codes()
    assert len(codes) == len(set(codes))
    assert all(re.fullmatch(r"0x[0-9A-F]{8}", c) for c in codes)
