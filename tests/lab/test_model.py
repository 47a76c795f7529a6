"""The lab host model, its persistence, the state directory and the os-mix / faults specs."""

from __future__ import annotations

import json
import stat
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kmsadmin import catalog, validate
from kmsadmin.errors import ConfigError, InvalidInput
from kmsadmin.lab import kms, osmix
from kmsadmin.lab.fleet import Fleet
from kmsadmin.lab.model import (
    LICENSED,
    NOTIFICATION,
    OOT_GRACE,
    host_from_dict,
    host_to_dict,
    load_host,
    save_host,
    utc_iso,
    write_json_atomic,
)


def test_os_mix_parsing_and_expansion() -> None:
    entries = osmix.parse_mix(
        "win11-enterprise=20, win10-pro:retail=5,server2019-standard-core=5,win11-pro+office2021=2"
    )
    assert [(e.os, e.office, e.channel, e.count) for e in entries] == [
        ("win11-enterprise", None, "gvlk", 20),
        ("win10-pro", None, "retail", 5),
        ("server2019-standard-core", None, "gvlk", 5),
        ("win11-pro", "office2021", "gvlk", 2),
    ]
    exact = osmix.expand_mix(entries, 32)
    assert Counter(e.os for e in exact) == {
        "win11-enterprise": 20,
        "win10-pro": 5,
        "server2019-standard-core": 5,
        "win11-pro": 2,
    }
    weighted = osmix.expand_mix(osmix.parse_mix("win11-enterprise=3,server2022-standard=1"), 8)
    assert Counter(e.os for e in weighted) == {"win11-enterprise": 6, "server2022-standard": 2}
    core = osmix.profile("server2022-datacenter-core")
    assert core.is_core and core.sku == 12 and core.installation_type == "Server Core"
    for bad in (
        "win12-pro=1",
        "win11-pro:oem=1",
        "win11-pro=x",
        "win11-pro-core=1",
        "win11-pro+office2013=1",
        "",
    ):
        with pytest.raises(InvalidInput):
            osmix.parse_mix(bad)


def test_every_profile_is_identified_by_the_catalog() -> None:
    for profile in osmix.PROFILES.values():
        entry = catalog.identify_windows(
            caption=profile.caption,
            edition_id=profile.edition_id,
            build=profile.build,
            sku=profile.sku,
            product_type=profile.product_type,
        )
        assert entry is not None, profile.name
        assert catalog.os_product(profile.build, profile.product_type) == profile.family, profile.name


def test_faults_parsing() -> None:
    faults = osmix.parse_faults(
        "client003=wrong-password;client004=timeouts:2;client005=hang;client006=503:1;client007=reset;"
        "client008=access-denied,not-admin;kms01=latency:200,kms-port:1700"
    )
    assert faults["client003"].wrong_password
    assert faults["client004"].timeouts == 2
    assert faults["client005"].hang
    assert faults["client006"].http_503 == 1
    assert faults["client007"].reset
    assert faults["client008"].access_denied and faults["client008"].not_admin
    assert faults["kms01"].latency_ms == 200 and faults["kms01"].kms_port == 1700
    assert osmix.parse_faults("client001=503")["client001"].http_503 == -1
    for bad in ("client001", "client001=explode", "client001=latency", "client001=timeouts:x"):
        with pytest.raises(InvalidInput):
            osmix.parse_faults(bad)


def test_fleet_state_directory_layout(tmp_path: Path) -> None:
    state = tmp_path / "state"
    fleet = Fleet.create(state, hosts=4, kms_hosts=2, os_mix="win11-enterprise=3,server2022-standard:mak=1")
    assert fleet.names("kms_host") == ["kms01", "kms02"]
    assert fleet.names("client") == ["client001", "client002", "client003", "client004"]
    for name in fleet.names():
        assert (state / "hosts" / f"{name}.json").is_file()
    for secret in ("host-keys.json", "credentials.json", "keys/kms01.key", "keys/kms02.key"):
        assert stat.S_IMODE((state / secret).stat().st_mode) == 0o600, secret
    keys = json.loads((state / "host-keys.json").read_text())
    assert set(keys) == {g.id for g in catalog.csvlk_groups(include_retired=False)}
    assert (state / "keys/kms01.key").read_text().strip() == keys["windows-server-2022"]
    # no product key is written into a host file: only partial keys and digests
    for name in fleet.names():
        text = (state / "hosts" / f"{name}.json").read_text()
        assert not any(key in text for key in keys.values())
    creds = json.loads((state / "credentials.json").read_text())
    assert creds["username"] == "labadmin" and len(creds["password"]) >= 20
    other = Fleet.create(tmp_path / "other", hosts=1, kms_hosts=0)
    assert other.password != fleet.password
    (server,) = [h for h in fleet.hosts.values() if h.role == "client" and h.os.is_server]
    mak = server.keyed(catalog.WINDOWS_APP_ID)[0]
    assert mak.channel == "Volume:MAK" and "VOLUME_MAK" in mak.description


def test_lab_host_keys_are_well_formed_but_never_real(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, hosts=1, kms_hosts=1)
    for key in fleet.host_keys.keys.values():
        assert validate.product_key(key) == key
        # every key issued for Windows 8 and later has exactly one N; the lab's have none
        assert "N" not in key
        assert not catalog.check_key(key).is_gvlk
    assert len(set(fleet.host_keys.keys.values())) == len(fleet.host_keys.keys)


def test_host_round_trip_and_atomic_save(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path / "lab", hosts=2, kms_hosts=1, os_mix="win11-enterprise+office2021=2")
    host = fleet.hosts["client001"]
    assert host_from_dict(host_to_dict(host)) == host
    path = save_host(tmp_path / "copy", host)
    assert load_host(path) == host
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert len(host.keyed(catalog.OFFICE_APP_ID)) == 1
    reloaded = Fleet.load(fleet.state_dir)
    assert reloaded.hosts == fleet.hosts
    assert reloaded.meta == fleet.meta


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_licence_states_move_on_with_time(tmp_path: Path) -> None:
    fleet = Fleet.create(tmp_path, hosts=1, kms_hosts=0, os_mix="win11-enterprise=1")
    host = fleet.hosts["client001"]
    product = host.keyed(catalog.WINDOWS_APP_ID)[0]
    now = datetime.now(UTC).replace(microsecond=0)
    host.refresh(now + timedelta(days=31))
    # OOB grace over: notification
    assert product.license_status == NOTIFICATION and product.grace_minutes(now) == 0
    product.license_status = LICENSED
    product.grace_expires = utc_iso(now + timedelta(days=180))
    host.refresh(now + timedelta(days=181))
    assert product.license_status == OOT_GRACE


def test_confirmation_id_rule_is_deterministic() -> None:
    iid = "1" * 63
    cid = kms.confirmation_id_for(iid)
    assert len(cid) == 48 and cid.isdigit()
    assert kms.confirmation_id_for(iid) == cid
    assert kms.confirmation_id_for("2" * 63) != cid
    assert validate.confirmation_id(kms.format_confirmation_id(cid)) == cid


def test_faults_for_unknown_hosts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Fleet.create(tmp_path, hosts=2, kms_hosts=1, faults="client099=hang")


def test_model_faults_shape_hosts(tmp_path: Path) -> None:
    fleet = Fleet.create(
        tmp_path, hosts=2, kms_hosts=1, faults="kms01=kms-port:1700;client001=clock-skew:-30,cloned-cmid"
    )
    assert fleet.hosts["kms01"].service.listening_port == 1700
    assert fleet.hosts["client001"].clock_skew_minutes == -30
    assert fleet.hosts["client001"].faults == ["clock-skew:-30", "cloned-cmid"]
