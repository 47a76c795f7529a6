"""Playbooks: the committed schema, the shipped playbooks, validation errors, secret references, batches."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from kmsadmin.errors import ConfigError
from kmsadmin.fleet.playbook import (
    ConvertClientParams,
    Play,
    ResolveContext,
    SetupHostParams,
    batch_sizes,
    build_args,
    load_playbook,
    schema_text,
)
from kmsadmin.operations.convert_client import ConvertClientArgs
from kmsadmin.operations.setup_host import SetupHostArgs

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOKS = ROOT / "playbooks"
SHIPPED = sorted(PLAYBOOKS.glob("*.yml"))
HOST_KEY = "BCDFG-HJKMP-QRTVW-XY234-6789B"
WIN11_ENTERPRISE_GVLK = "NPPR9-FWDCX-D2C8J-H872K-2YT43"


def write(tmp_path: Path, text: str, name: str = "play.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_playbook(path)
    return str(info.value)


# ------------------------------------------------------------------------------------------ schema
def test_committed_schema_is_the_generated_one() -> None:
    committed = (PLAYBOOKS / "schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(), "regenerate: python -m kmsadmin.fleet.playbook > playbooks/schema.json"
    jsonschema.Draft202012Validator.check_schema(json.loads(committed))


def test_ships_the_three_playbooks() -> None:
    assert {p.name for p in SHIPPED} == {"kms-hosts.yml", "clients.yml", "site.yml", "adba.yml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_playbooks_validate_against_the_schema_and_the_models(path: Path) -> None:
    schema = json.loads((PLAYBOOKS / "schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(yaml.safe_load(path.read_text(encoding="utf-8")), schema)
    assert load_playbook(path).plays


def test_site_runs_kms_hosts_before_clients() -> None:
    plays = load_playbook(PLAYBOOKS / "site.yml").plays
    assert [p.name for p in plays] == ["KMS hosts", "KMS clients"]
    assert [p.source.name for p in plays] == ["kms-hosts.yml", "clients.yml"]
    assert plays[0].max_fail_percentage == 0
    # clients waiting for a new KMS host's count are not failures, so the clients play can stop on
    # real failures from the first batch on
    assert plays[1].max_fail_percentage == 10
    assert [op for op, _ in plays[0].step_calls()] == ["setup-host"]
    assert [op for op, _ in plays[1].step_calls()] == ["convert-client"]


def test_schema_refuses_what_the_models_refuse() -> None:
    schema = json.loads((PLAYBOOKS / "schema.json").read_text(encoding="utf-8"))
    bad = [
        [{"name": "x", "hosts": "all", "steps": ["reboot"]}],
        [{"name": "x", "hosts": "all", "serial": "0%", "steps": ["status"]}],
        [{"name": "x", "hosts": "all", "steps": [{"setup-host": {"host_key": HOST_KEY}}]}],
        [{"name": "x", "hosts": "all", "max_fail_percentage": 101, "steps": ["status"]}],
        [{"name": "x", "hosts": "all", "steps": []}],
    ]
    for document in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(document, schema)


# ------------------------------------------------------------------------------------------ validation
def test_literal_host_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"- name: KMS\n  hosts: kms_hosts\n  steps:\n    - setup-host:\n        host_key: {HOST_KEY}\n",
    )
    message = config_error(path)
    assert message.startswith(
        "play.yml: line 5: play 'KMS': step 1 (setup-host): host_key: a literal host key is refused"
    )
    assert "{env: VAR}" in message
    assert HOST_KEY not in message and HOST_KEY[:23] not in message


def test_literal_key_in_a_list_of_references_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"- name: KMS\n  hosts: all\n  steps:\n    - setup-host:\n        host_key: [{{env: K}}, {HOST_KEY}]\n",
    )
    message = config_error(path)
    assert "a literal host key is refused" in message
    assert HOST_KEY not in message


def test_non_gvlk_client_key_is_refused_and_masked(tmp_path: Path) -> None:
    path = write(tmp_path, f"- name: C\n  hosts: all\n  steps:\n    - convert-client: {{key: {HOST_KEY}}}\n")
    message = config_error(path)
    assert "is not a public KMS client key (GVLK)" in message
    assert HOST_KEY not in message
    assert "…6789B" in message


def test_public_gvlk_is_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"- name: C\n  hosts: all\n  steps:\n    - convert-client: {{key: {WIN11_ENTERPRISE_GVLK}}}\n",
    )
    params = load_playbook(path).plays[0].step_calls()[0][1]
    assert isinstance(params, ConvertClientParams) and params.key == WIN11_ENTERPRISE_GVLK


@pytest.mark.parametrize("serial", ["0", "-1", '"0%"', '"101%"', '"ten"', "[]", "[1, 0]", "1.5", '"5 %"'])
def test_bad_serial_is_refused_with_its_line(tmp_path: Path, serial: str) -> None:
    path = write(tmp_path, f"- name: P\n  hosts: all\n  serial: {serial}\n  steps: [status]\n")
    message = config_error(path)
    assert message.startswith("play.yml: ") and "line 3: play 'P': serial" in message, message


@pytest.mark.parametrize("serial", ["1", '"10%"', '"100%"', '[1, "10%", "50%"]', "25"])
def test_good_serial_is_accepted(tmp_path: Path, serial: str) -> None:
    path = write(tmp_path, f"- name: P\n  hosts: all\n  serial: {serial}\n  steps: [status]\n")
    assert load_playbook(path).plays[0].serial is not None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "  steps: [reboot]\n",
            "line 3: play 'P': step 1: Input should be 'setup-host', 'convert-client' or 'status'",
        ),
        (
            "  steps:\n    - reboot: {}\n",
            "line 4: play 'P': step 1: a step is one of setup-host, convert-client, status",
        ),
        ("  max_fail_percentage: 150\n  steps: [status]\n", "line 3: play 'P': max_fail_percentage"),
        (
            "  steps:\n    - convert-client:\n        kms_host: 'bad host!'\n",
            "line 5: play 'P': step 1 (convert-client): kms_host: invalid host name",
        ),
        (
            "  steps:\n    - convert-client: {kms_host: kms01, lookup_domain: corp.example}\n",
            "give only one of kms_host",
        ),
        ("  steps:\n    - convert-client: {kms_host: 'kms01:1700', kms_port: 1700}\n", "either in kms_host"),
        ("  steps:\n    - convert-client: {target: host}\n", "target: host needs kms_host"),
        (
            "  steps:\n    - setup-host: {activation_interval: 5}\n",
            "line 4: play 'P': step 1 (setup-host): activation_interval: invalid interval",
        ),
        (
            "  steps:\n    - setup-host: {firewall_profiles: [Domain, Office]}\n",
            "invalid firewall profile 'Office'",
        ),
        (
            "  steps:\n    - setup-host: {csvlk: Windows 3.1}\n",
            "line 4: play 'P': step 1 (setup-host): csvlk",
        ),
        ("  steps:\n    - setup-host: {host_key: {env: K, file: x}}\n", "host_key"),
        ("  steps:\n    - setup-host: {hostkey: {env: K}}\n", "hostkey: Extra inputs are not permitted"),
        ("  srial: 1\n  steps: [status]\n", "line 3: play 'P': srial: Extra inputs are not permitted"),
        ("  steps: []\n", "steps: List should have at least 1 item"),
        ("  vars: {bad-name: 1}\n  steps: [status]\n", "invalid variable name 'bad-name'"),
    ],
)
def test_validation_errors_name_line_play_step_and_field(tmp_path: Path, body: str, expected: str) -> None:
    path = write(tmp_path, "- name: P\n  hosts: all\n" + body)
    assert expected in config_error(path)


def test_structure_errors(tmp_path: Path) -> None:
    assert "a playbook is a list of plays" in config_error(write(tmp_path, "name: P\nhosts: all\n"))
    assert "the playbook is empty" in config_error(write(tmp_path, "# nothing\n"))
    assert "line 2:" in config_error(write(tmp_path, "- name: P\n hosts: all\n"))
    two = "- name: P\n  hosts: all\n  steps: [status]\n" * 2
    assert "two plays are named 'P'" in config_error(write(tmp_path, two))
    missing = config_error(write(tmp_path, "- hosts: all\n  steps: [status]\n"))
    assert "line 1: play 1: name: Field required" in missing


def test_import_playbook_expands_in_place_and_refuses_loops(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path, "- name: B\n  hosts: all\n  steps: [status]\n", "sub/b.yml")
    main = write(
        tmp_path, "- name: A\n  hosts: all\n  steps: [status]\n- import_playbook: sub/b.yml\n", "main.yml"
    )
    book = load_playbook(main)
    assert [p.name for p in book.plays] == ["A", "B"]
    assert book.plays[1].source == tmp_path / "sub" / "b.yml"
    write(tmp_path, "- import_playbook: loop2.yml\n", "loop1.yml")
    write(tmp_path, "- import_playbook: loop1.yml\n", "loop2.yml")
    assert "import_playbook loop: loop1.yml → loop2.yml → loop1.yml" in config_error(tmp_path / "loop1.yml")


# ------------------------------------------------------------------------------------------ resolution
def _play(tmp_path: Path, steps: str) -> Play:
    return load_playbook(write(tmp_path, f"- name: P\n  hosts: all\n  steps:\n{steps}")).plays[0]


def _ctx(tmp_path: Path, **host_vars: object) -> ResolveContext:
    return ResolveContext(host="kms01", host_vars=host_vars, inventory_dir=tmp_path, env={})


def test_host_key_from_a_host_var_file_relative_to_the_inventory(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "kms01.key").write_text(f"\n{HOST_KEY.lower()}\n")
    play = _play(tmp_path, "    - setup-host:\n        host_key: {file: {var: kmsadmin_lab_host_key_file}}\n")
    op, params = play.step_calls()[0]
    args = build_args(op, params, _ctx(tmp_path, kmsadmin_lab_host_key_file="keys/kms01.key"), play)
    assert isinstance(args, SetupHostArgs) and args.host_key is not None
    assert args.host_key.value == HOST_KEY
    assert HOST_KEY not in repr(args)


def test_host_key_alternatives_first_set_wins(tmp_path: Path) -> None:
    (tmp_path / "key.txt").write_text(HOST_KEY)
    play = _play(
        tmp_path,
        "    - setup-host:\n        host_key:\n          - file: {var: kmsadmin_host_key_file}\n"
        "          - env: KMS_KEY\n          - file: key.txt\n",
    )
    op, params = play.step_calls()[0]
    from_file = build_args(op, params, _ctx(tmp_path), play)
    assert isinstance(from_file, SetupHostArgs) and from_file.host_key is not None
    assert from_file.host_key.value == HOST_KEY
    env_ctx = ResolveContext(
        host="kms01", host_vars={}, inventory_dir=tmp_path, env={"KMS_KEY": "KMSAD-MINKE-YBCDF-GHJKM-PQRTV"}
    )
    with pytest.raises(ConfigError) as info:
        build_args(op, params, env_ctx, play)
    assert "host key from environment variable KMS_KEY: invalid product key '…PQRTV'" in str(info.value)


def test_missing_host_key_names_every_reference_tried(tmp_path: Path) -> None:
    play = _play(
        tmp_path,
        "    - setup-host:\n        host_key: [{file: {var: kmsadmin_host_key_file}}, {env: KMS_KEY}]\n",
    )
    op, params = play.step_calls()[0]
    with pytest.raises(
        ConfigError,
        match="no host key: none of host var kmsadmin_host_key_file, environment variable KMS_KEY",
    ):
        build_args(op, params, _ctx(tmp_path), play)
    with pytest.raises(ConfigError, match="cannot read the host key file"):
        build_args(op, params, _ctx(tmp_path, kmsadmin_host_key_file="nope.key"), play)


def test_csvlk_from_the_first_set_host_var(tmp_path: Path) -> None:
    play = _play(
        tmp_path,
        "    - setup-host:\n        csvlk: [{var: kmsadmin_host_key_group}, {var: kmsadmin_lab_host_key_group}]\n",
    )
    op, params = play.step_calls()[0]
    args = build_args(op, params, _ctx(tmp_path, kmsadmin_lab_host_key_group="windows-server-2022"), play)
    assert isinstance(args, SetupHostArgs) and args.csvlk is not None and "2022" in args.csvlk
    none = build_args(op, params, _ctx(tmp_path), play)
    assert isinstance(none, SetupHostArgs) and none.csvlk is None
    with pytest.raises(ConfigError, match="csvlk from host var kmsadmin_host_key_group"):
        build_args(op, params, _ctx(tmp_path, kmsadmin_host_key_group="windows 3.1"), play)


def test_convert_client_targets(tmp_path: Path) -> None:
    play = _play(
        tmp_path,
        "    - convert-client: {kms_host: 'kms01.corp.example:1700'}\n"
        "    - convert-client: {lookup_domain: corp.example}\n"
        "    - convert-client: {target: auto}\n"
        "    - convert-client\n"
        "    - convert-client: {kms_host: {group: kms_hosts, port: 1690}}\n",
    )
    calls = play.step_calls()
    ctx = ResolveContext(
        host="pc1", host_vars={}, inventory_dir=tmp_path, assigned_kms_host="kms02.corp.example"
    )
    got = [build_args(op, params, ctx, play) for op, params in calls]
    assert all(isinstance(a, ConvertClientArgs) for a in got)
    pinned, domain, auto, keep, grouped = got
    assert isinstance(pinned, ConvertClientArgs) and (pinned.target, pinned.kms_host, pinned.kms_port) == (
        "host",
        "kms01.corp.example",
        1700,
    )
    assert isinstance(domain, ConvertClientArgs) and (domain.target, domain.lookup_domain) == (
        "domain",
        "corp.example",
    )
    assert isinstance(auto, ConvertClientArgs) and auto.target == "auto"
    assert isinstance(keep, ConvertClientArgs) and keep.target == "keep"
    assert isinstance(grouped, ConvertClientArgs) and (grouped.kms_host, grouped.kms_port) == (
        "kms02.corp.example",
        1690,
    )


def test_status_step_has_no_arguments(tmp_path: Path) -> None:
    play = _play(tmp_path, "    - status\n    - status:\n")
    assert play.step_calls() == [("status", None), ("status", None)]
    assert build_args("status", None, _ctx(tmp_path), play) is None
    assert isinstance(SetupHostParams(), SetupHostParams)


# ------------------------------------------------------------------------------------------ batches
@pytest.mark.parametrize(
    ("serial", "total", "expected"),
    [
        (None, 7, [7]),
        (2, 7, [2, 2, 2, 1]),
        ("30%", 10, [3, 3, 3, 1]),
        ("1%", 10, [1] * 10),
        ("100%", 5, [5]),
        ([1, "10%", "50%"], 20, [1, 2, 10, 7]),
        ([1, 5], 3, [1, 2]),
        (3, 0, []),
    ],
)
def test_batch_sizes_follow_ansible_serial(
    serial: int | str | list[int | str] | None, total: int, expected: list[int]
) -> None:
    sizes = batch_sizes(serial, total)
    assert sizes == expected
    assert sum(sizes) == total
