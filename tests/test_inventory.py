"""Inventory loading (Ansible YAML and ``ansible-inventory --list`` JSON), precedence, errors, patterns."""

from __future__ import annotations

from pathlib import Path

import pytest

from kmsadmin.errors import ConfigError
from kmsadmin.fleet.inventory import Inventory, expand_host_range, load_inventory
from kmsadmin.fleet.limit import split_pattern

FIXTURES = Path(__file__).parent / "fixtures" / "inventories"
EVERYONE = (
    "jump01 kms01.corp.example kms02.corp.example pc-ber-01 pc-ber-02 pc-ber-03 pc-par-01 pc-par-02 app01"
)


@pytest.fixture(scope="module")
def nested() -> Inventory:
    return load_inventory(FIXTURES / "nested.yml")


@pytest.fixture(scope="module")
def listed() -> Inventory:
    return load_inventory(FIXTURES / "ansible-list.json")


# ------------------------------------------------------------------------------------------ YAML form
def test_yaml_hosts_in_inventory_order_with_ranges_expanded(nested: Inventory) -> None:
    assert list(nested.hosts) == [
        "jump01",
        "kms01.corp.example",
        "kms02.corp.example",
        "pc-ber-01",
        "pc-ber-02",
        "pc-ber-03",
        "pc-par-01",
        "pc-par-02",
        "app01",
    ]


def test_yaml_groups_resolve_children_recursively(nested: Inventory) -> None:
    assert nested.groups["clients"] == ("pc-ber-01", "pc-ber-02", "pc-ber-03", "pc-par-01", "pc-par-02")
    assert nested.groups["berlin"] == ("pc-ber-01", "pc-ber-02", "pc-ber-03")
    assert nested.groups["servers"] == ("app01", "kms01.corp.example")
    assert nested.groups["ungrouped"] == ("jump01",)
    assert nested.groups["all"] == tuple(nested.hosts)
    assert nested.children["clients"] == ("berlin", "paris")
    assert set(nested.group_names("kms01.corp.example")) == {"kms_hosts", "servers"}


def test_yaml_precedence_all_then_parent_then_child_then_host(nested: Inventory) -> None:
    assert nested.hosts["jump01"]["level"] == "all"
    assert nested.hosts["kms01.corp.example"]["level"] == "kms_hosts"
    assert nested.hosts["kms02.corp.example"]["level"] == "host"
    assert nested.hosts["pc-ber-01"]["level"] == "berlin"  # child group beats parent 'clients'
    assert nested.hosts["pc-par-01"]["level"] == "clients"  # paris sets no 'level': parent's value stays
    assert nested.hosts["pc-par-01"]["kmsadmin_site"] == "paris"  # child beats all
    assert nested.hosts["app01"]["kmsadmin_role"] == "server"  # host beats everything
    assert nested.hosts["pc-par-01"]["ansible_host"] == "10.1.0.11"
    assert nested.hosts["pc-ber-02"]["ansible_port"] == 5986


def test_group_priority_orders_groups_of_equal_depth(tmp_path: Path) -> None:
    path = tmp_path / "inv.yml"
    path.write_text(
        "all:\n  children:\n"
        "    a_first:\n      vars: {x: a, ansible_group_priority: 10}\n      hosts: {h1: }\n"
        "    b_second:\n      vars: {x: b}\n      hosts: {h1: }\n"
    )
    assert load_inventory(path).hosts["h1"]["x"] == "a"


def test_host_vars_given_twice_merge(tmp_path: Path) -> None:
    path = tmp_path / "inv.yml"
    path.write_text(
        "all:\n  children:\n    g1:\n      hosts: {h1: {a: 1, b: 1}}\n    g2:\n      hosts: {h1: {b: 2}}\n"
    )
    assert dict(load_inventory(path).hosts["h1"]) == {"a": 1, "b": 2}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("pc[1:3]", ["pc1", "pc2", "pc3"]),
        ("pc[08:10].lab", ["pc08.lab", "pc09.lab", "pc10.lab"]),
        ("pc[0:10:5]", ["pc0", "pc5", "pc10"]),
        ("db-[a:c]", ["db-a", "db-b", "db-c"]),
        ("r[1:2]-[a:b]", ["r1-a", "r1-b", "r2-a", "r2-b"]),
        ("plain", ["plain"]),
    ],
)
def test_host_ranges(pattern: str, expected: list[str]) -> None:
    assert expand_host_range(pattern) == expected


# ------------------------------------------------------------------------------------------ JSON form
def test_list_json_groups_and_children(listed: Inventory) -> None:
    assert list(listed.hosts) == [
        "kms01.corp.example",
        "pc-0001.corp.example",
        "pc-0002.corp.example",
        "srv-app01.corp.example",
        "lonely.corp.example",
    ]
    assert listed.groups["windows"] == (
        "pc-0001.corp.example",
        "pc-0002.corp.example",
        "srv-app01.corp.example",
    )
    assert listed.groups["ungrouped"] == ("lonely.corp.example",)


def test_list_json_precedence(listed: Inventory) -> None:
    assert listed.hosts["lonely.corp.example"]["kmsadmin_role"] == "unknown"  # all
    assert listed.hosts["srv-app01.corp.example"]["kmsadmin_role"] == "windows"  # parent (servers sets none)
    assert listed.hosts["pc-0001.corp.example"]["kmsadmin_role"] == "client"  # child beats parent
    assert listed.hosts["pc-0002.corp.example"]["kmsadmin_role"] == "kiosk"  # host beats group
    assert listed.hosts["kms01.corp.example"]["ansible_host"] == "10.0.0.5"
    assert listed.hosts["kms01.corp.example"]["ansible_psrp_auth"] == "kerberos"
    assert listed.hosts["lonely.corp.example"]["ansible_port"] == 5985


def test_list_json_with_vars_already_merged_into_hostvars(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text(
        '{"_meta": {"hostvars": {"a": {"ansible_host": "10.0.0.1", "kmsadmin_role": "client"}}},'
        ' "all": {"children": ["ungrouped", "clients"]}, "clients": {"hosts": ["a"]}}'
    )
    inv = load_inventory(path)
    assert inv.hosts["a"]["kmsadmin_role"] == "client"
    assert inv.groups["clients"] == ("a",)


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bad-hosts-list.yml", "bad-hosts-list.yml line 10: group 'clients': hosts must be a mapping"),
        ("bad-indent.yml", "bad-indent.yml line 6:"),
        ("bad-fqdn.yml", "bad-fqdn.yml line 3: host 'kms01': kmsadmin_fqdn: invalid kmsadmin_fqdn"),
        ("bad-key.yml", "bad-key.yml line 4: group 'clients': unknown key 'host'"),
        ("bad-vault.yml", "bad-vault.yml line 3: variable 'ansible_password': the vault text is truncated"),
        ("bad-cycle.yml", "bad-cycle.yml line 3: group cycle: a → b → a"),
        ("bad.json", "bad.json line 4: group 'clients': hosts must be a list of host names"),
        ("broken.json", "broken.json line 4: invalid JSON"),
    ],
)
def test_bad_inventories_name_file_and_line(name: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_inventory(FIXTURES / name)
    assert str(info.value).startswith(expected), str(info.value)
    assert info.value.exit_code == 2


def test_missing_and_empty_inventories(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read inventory"):
        load_inventory(tmp_path / "nope.yml")
    (tmp_path / "empty.yml").write_text("# nothing\n")
    with pytest.raises(ConfigError, match=r"empty\.yml: the inventory is empty"):
        load_inventory(tmp_path / "empty.yml")
    (tmp_path / "list.yml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list\.yml line 1: an inventory must be a mapping"):
        load_inventory(tmp_path / "list.yml")


# ------------------------------------------------------------------------------------------ patterns
@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("all", EVERYONE),
        ("*", EVERYONE),
        ("app01", "app01"),
        ("kms_hosts", "kms01.corp.example kms02.corp.example"),
        ("pc-par-*", "pc-par-01 pc-par-02"),
        ("pc-?er-0[12]", "pc-ber-01 pc-ber-02"),
        ("*.corp.example", "kms01.corp.example kms02.corp.example"),
        ("servers:paris", "app01 kms01.corp.example pc-par-01 pc-par-02"),
        ("paris,servers", "pc-par-01 pc-par-02 app01 kms01.corp.example"),
        ("clients:&berlin", "pc-ber-01 pc-ber-02 pc-ber-03"),
        ("kms_hosts:&servers", "kms01.corp.example"),
        ("clients:!berlin", "pc-par-01 pc-par-02"),
        ("all:!clients:!kms_hosts", "jump01 app01"),
        ("!clients:!kms_hosts", "jump01 app01"),
        ("!berlin:&clients", "pc-par-01 pc-par-02"),
        ("~pc-(ber|par)-0[13]", "pc-ber-01 pc-ber-03 pc-par-01"),
        ("~kms\\d+", "kms01.corp.example kms02.corp.example"),
        ("clients[0]", "pc-ber-01"),
        ("clients[-1]", "pc-par-02"),
        ("clients[1:2]", "pc-ber-02 pc-ber-03"),
        ("clients[3:]", "pc-par-01 pc-par-02"),
        ("nosuchthing", ""),
        ("kms*:!kms02*", "kms01.corp.example"),
    ],
)
def test_patterns(nested: Inventory, pattern: str, expected: str) -> None:
    assert nested.select(pattern) == expected.split()


def test_pattern_from_file(nested: Inventory, tmp_path: Path) -> None:
    hosts = tmp_path / "retry.txt"
    hosts.write_text("pc-par-02\n\napp01\nnot-in-inventory\n")
    assert nested.select(f"@{hosts}") == ["pc-par-02", "app01"]
    assert nested.select(f"@{hosts}:!app01") == ["pc-par-02"]


def test_split_keeps_ipv6_and_brackets() -> None:
    assert split_pattern("fe80::1") == ["fe80::1"]
    assert split_pattern("web[1:3]:db") == ["web[1:3]", "db"]
    assert split_pattern("a:&b:!c") == ["a", "&b", "!c"]
    assert split_pattern("a, b ,c") == ["a", "b", "c"]


def test_bad_regex_and_empty_pattern(nested: Inventory) -> None:
    with pytest.raises(ConfigError, match="invalid host pattern"):
        nested.select("~pc-(")
    with pytest.raises(ConfigError, match="empty host pattern"):
        nested.select(" ")
