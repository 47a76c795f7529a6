"""``kmsadmin plan``: host key group, host OS fit and updates, thresholds, host count and key budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from kmsadmin import catalog
from kmsadmin.cli.dns import plan_command
from kmsadmin.facts import HostFacts
from kmsadmin.operations.capacity import (
    Machine,
    assign_clients,
    assignment_threshold,
    identify,
    machine_from_facts,
    machine_from_vars,
    plan_capacity,
)

FIXTURES = Path(__file__).parent / "fixtures" / "facts"


def plan_cli(*args: str) -> Any:
    app = typer.Typer()
    app.command("plan")(plan_command)
    app.command("unused")(lambda: None)  # two commands keep "plan" as a sub-command name
    return CliRunner().invoke(app, ["plan", *args])


def inventory(path: Path, kms: dict[str, dict[str, Any]], clients: dict[str, dict[str, Any]]) -> Path:
    data = {"all": {"children": {"kms_hosts": {"hosts": kms}, "clients": {"hosts": clients}}}}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def clients(count: int, **hostvars: Any) -> list[Machine]:
    return [machine_from_vars(f"pc{i:03}", hostvars, ["clients"]) for i in range(count)]


def host(os_name: str, name: str = "kms01", **hostvars: Any) -> Machine:
    return machine_from_vars(name, {"kmsadmin_os": os_name, **hostvars}, ["kms_hosts"])


def test_ltsc_2024_clients_need_the_2025_group_and_a_2019_host_needs_kb5034768(tmp_path: Path) -> None:
    path = inventory(
        tmp_path / "inv.yml",
        {"kms01": {"kmsadmin_os": "Windows Server 2019"}},
        {f"ltsc{i:02}": {"kmsadmin_edition": "windows-11-enterprise-ltsc-2024"} for i in range(30)},
    )
    result = plan_cli("-i", str(path), "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["windows_host_key_group_id"] == "windows-server-2025"
    assert "Windows Server 2025" in plan["windows_host_key_group"]
    (fit,) = plan["hosts"]
    assert fit["ok"] is True and fit["missing_updates"] == ["KB5034768"]
    assert [u["kb"] for u in fit["required_updates"]] == ["KB5034768"]
    assert plan["thresholds"] == [
        {"kind": "windows client OS", "machines": 30, "count_reachable": 30, "needed": 25, "reachable": True}
    ]
    assert plan["blocked"] is False
    assert [w["check"] for w in plan["warnings"]] == ["host-updates"]
    assert "KB5034768 or a later" in plan["warnings"][0]["message"]

    text = plan_cli("-i", str(path))
    assert text.exit_code == 0
    assert "Windows host key group needed: Volume License for Windows Server 2025" in text.output
    assert "needs KB5034768 (or a later cumulative update)" in text.output


def test_installed_update_is_not_reported_missing() -> None:
    plan = plan_capacity(
        [
            host("Windows Server 2019", kmsadmin_hotfixes="KB5003646,kb5034768"),
            *clients(30, kmsadmin_edition="windows-11-enterprise-ltsc-2024"),
        ]
    )
    assert plan.fits[0].missing_updates == [] and not plan.warnings


def test_a_client_os_host_cannot_carry_a_server_group() -> None:
    plan = plan_capacity([host("Windows 10 Enterprise"), *clients(30, kmsadmin_os="Windows 11 Enterprise")])
    assert plan.blocked
    assert [p.check for p in plan.problems] == ["host-os"]
    assert plan.problems[0].host == "kms01"


def test_windows_11_on_a_2012_r2_host_is_blocked() -> None:
    plan = plan_capacity(
        [host("Windows Server 2012 R2"), *clients(30, kmsadmin_edition="windows-11-enterprise")]
    )
    assert plan.windows_group is not None and plan.windows_group.id == "windows-server-2022"
    assert plan.blocked and plan.problems[0].check == "host-os"


def test_unreachable_client_threshold_blocks(tmp_path: Path) -> None:
    path = inventory(
        tmp_path / "inv.yml",
        {"kms01": {"kmsadmin_os": "Windows Server 2022"}},
        {f"pc{i}": {"kmsadmin_os": "Windows 11 Enterprise"} for i in range(10)},
    )
    result = plan_cli("-i", str(path), "--json")
    assert result.exit_code == 1
    plan = json.loads(result.output)
    (problem,) = plan["problems"]
    assert problem["check"] == "threshold" and "0xC004F038" in problem["message"]


def test_servers_count_toward_the_client_threshold() -> None:
    machines = [host("Windows Server 2022")]
    machines += clients(20, kmsadmin_edition="windows-11-pro")
    machines += [
        machine_from_vars(f"srv{i}", {"kmsadmin_edition": "windows-server-2022-standard"}, [])
        for i in range(5)
    ]
    plan = plan_capacity(machines)
    assert not plan.blocked
    assert {t["kind"]: t["count_reachable"] for t in plan.thresholds} == {
        "windows client OS": 25,
        "windows server": 25,
    }


def test_more_than_50_clients_recommends_two_hosts_and_budget_is_reported() -> None:
    plan = plan_capacity(
        [host("Windows Server 2022"), *clients(60, kmsadmin_edition="windows-11-enterprise")]
    )
    assert plan.recommended_hosts == 2
    assert [w.check for w in plan.warnings] == ["host-count"]
    assert plan.budget == {
        "hosts_per_host_key": 6,
        "activations_per_host_key": 10,
        "kms_hosts": 1,
        "hosts_left": 5,
    }
    seven = [host("Windows Server 2022", f"kms{i}") for i in range(7)]
    plan = plan_capacity(seven + clients(60, kmsadmin_edition="windows-11-enterprise"))
    # 60 Windows clients fill two hosts to 25: the rollout pins none to the other five
    assert [w.check for w in plan.warnings] == ["host-unused"] * 5 + ["host-key-budget"]
    assert [w.host for w in plan.warnings[:5]] == [f"kms{i}" for i in range(2, 7)]
    assert "0xC004C008" in plan.warnings[-1].message
    assert [r["clients"] for r in plan.per_host] == [30, 30, 0, 0, 0, 0, 0]


@pytest.mark.parametrize(
    ("clients_n", "hosts_n", "threshold", "expected"),
    [
        (30, 2, 25, [30, 0]),
        (26, 2, 25, [26, 0]),
        (49, 2, 25, [49, 0]),
        (50, 2, 25, [25, 25]),
        (60, 2, 25, [30, 30]),
        (76, 3, 25, [26, 25, 25]),
        (10, 2, 5, [5, 5]),
        (9, 2, 5, [9, 0]),
        (3, 2, 25, [3, 0]),
        (0, 2, 25, [0, 0]),
    ],
)
def test_clients_fill_a_kms_host_to_its_threshold_before_the_next_one_gets_any(
    clients_n: int, hosts_n: int, threshold: int, expected: list[int]
) -> None:
    names = [f"c{i:03d}" for i in range(clients_n)]
    servers = [f"kms{i}" for i in range(hosts_n)]
    assignment = assign_clients(names, servers, threshold)
    assert set(assignment) == set(names)
    assert [sum(1 for v in assignment.values() if v == s) for s in servers] == expected
    # no host that got clients is left below the threshold while the clients could fill it
    if clients_n >= threshold:
        assert all(n == 0 or n >= threshold for n in expected)


def test_the_threshold_of_a_group_is_its_highest_and_unidentified_clients_count_as_25() -> None:
    server = catalog.find_client_key("windows-server-2022-standard")
    desktop = catalog.find_client_key("windows-11-enterprise")
    assert assignment_threshold([server, server]) == 5
    assert assignment_threshold([server, desktop]) == 25
    assert assignment_threshold([server, None]) == 25


def test_plan_on_two_hosts_and_30_clients_pins_all_to_one() -> None:
    plan = plan_capacity(
        [
            host("Windows Server 2022", "kms01"),
            host("Windows Server 2022", "kms02"),
            *clients(30, kmsadmin_edition="windows-11-enterprise"),
        ]
    )
    assert [(r["host"], r["clients"], r["reachable"]) for r in plan.per_host] == [
        ("kms01", 30, True),
        ("kms02", 0, None),
    ]
    assert [w.check for w in plan.warnings] == ["host-unused"] and not plan.problems


def test_office_clients_need_their_office_host_key() -> None:
    machines = [host("Windows Server 2022")]
    machines += clients(
        30, kmsadmin_edition="windows-11-enterprise", kmsadmin_office="office-ltsc-professional-plus-2024"
    )
    plan = plan_capacity(machines)
    assert plan.office_group is not None and plan.office_group.id == "office-ltsc-2024"
    assert {f.group for f in plan.fits} == {
        plan.office_group.name,
        plan.windows_group.name if plan.windows_group else "",
    }
    assert not plan.blocked


def test_no_kms_host_is_a_problem() -> None:
    plan = plan_capacity(clients(30, kmsadmin_edition="windows-11-enterprise"))
    assert [p.check for p in plan.problems] == ["no-kms-host"]


@pytest.mark.parametrize(
    ("hostvars", "expected"),
    [
        ({"kmsadmin_edition": "windows-11-enterprise-ltsc-2024"}, "windows-11-enterprise-ltsc-2024"),
        ({"kmsadmin_os": "Microsoft Windows 11 Enterprise"}, "windows-11-enterprise"),
        (
            {
                "kmsadmin_os": "Windows 11 Enterprise LTSC",
                "kmsadmin_build": 26100,
                "kmsadmin_edition_id": "EnterpriseS",
            },
            "windows-11-enterprise-ltsc-2024",
        ),
        ({"kmsadmin_os": "Windows 11 Enterprise LTSC"}, None),
        ({"kmsadmin_edition": "no-such-edition"}, None),
        ({}, None),
    ],
)
def test_identification(hostvars: dict[str, Any], expected: str | None) -> None:
    entry, how = identify(machine_from_vars("pc1", hostvars, ["clients"]))
    assert (entry.name if entry else None) == expected, how


def test_machine_from_gathered_facts() -> None:
    facts = HostFacts.model_validate(
        json.loads((FIXTURES / "win11-enterprise.json").read_text(encoding="utf-8"))
    )
    machine = machine_from_facts("pc1", "client", facts)
    entry, how = identify(machine)
    assert entry is not None and entry.product == "Windows 11" and how == "edition id / build / SKU"


def test_plan_on_the_lab_inventory(tmp_path: Path) -> None:
    from kmsadmin.lab.fleet import Fleet
    from kmsadmin.lab.inventory import write_inventory

    fleet = Fleet.create(
        tmp_path / "lab", hosts=30, kms_hosts=1, os_mix="win11-enterprise=25,server2022-standard=5"
    )
    path = write_inventory(tmp_path / "lab.yml", fleet, dict.fromkeys(fleet.names(), 5986), tls=True)
    result = plan_cli("-i", str(path), "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["clients"]["windows_client_os"] == 25 and plan["clients"]["windows_server"] == 5
    assert plan["windows_host_key_group_id"] == "windows-server-2022"
    assert plan["hosts"][0]["ok"] is True


def test_bad_inventory_value_exits_2(tmp_path: Path) -> None:
    path = inventory(
        tmp_path / "inv.yml",
        {"kms01": {"kmsadmin_os": "Windows Server 2022"}},
        {"pc1": {"kmsadmin_build": "x"}},
    )
    assert plan_cli("-i", str(path)).exit_code == 2
