"""Messages say each thing once and name what really happened: timeouts, HRESULT meanings, typos."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from defusedxml import ElementTree as ET

from kmsadmin import catalog
from kmsadmin.catalog.errors import NotFoundInCatalog
from kmsadmin.report import build_report, write_html, write_junit
from kmsadmin.report.terminal import summary_text
from kmsadmin.transports.base import Deadline, host_timeout
from kmsadmin.transports.options import ConnectionOptions

UAC = (
    "User Account Control (UAC) prohibits activation processes from running without elevation; over the "
    "network, UAC remote restrictions strip the administrator token of local accounts."
)


def _uac_report() -> dict[str, object]:
    host = {
        "host": "client002",
        "status": "failed",
        "error": {
            "host": "client002",
            "step": "set-kms-host",
            "message": f"{UAC} (Access denied)",
            "hresult": "0x80070005",
            "meaning": UAC,
            "remediation": "use a domain account",
        },
    }
    return dict(
        build_report("rollout", [host], started="2026-01-01T00:00:00Z", finished="2026-01-01T00:00:05Z")
    )


def test_an_hresult_meaning_already_in_the_message_is_shown_once(tmp_path: Path) -> None:
    report = _uac_report()
    assert summary_text(report).count("User Account Control") == 1
    write_html(report, tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text(encoding="utf-8").count("User Account Control") == 1
    write_junit(report, tmp_path / "r.xml")
    failure = ET.parse(tmp_path / "r.xml").getroot().find(".//failure")
    assert failure is not None and (failure.text or "").count("User Account Control") == 1


def test_a_meaning_the_message_lacks_is_still_shown() -> None:
    host = {
        "host": "pc1",
        "status": "failed",
        "error": {
            "host": "pc1",
            "step": "activate",
            "message": "Activate returned 0xC004F074",
            "hresult": "0xC004F074",
        },
    }
    report = build_report("rollout", [host], started="2026-01-01T00:00:00Z", finished="2026-01-01T00:00:05Z")
    meaning = catalog.hresult_info("0xC004F074").meaning
    assert meaning and f"({meaning})" in summary_text(report)


@pytest.mark.parametrize(
    ("typo", "expected"),
    [("Office 2O19", ["office-2019"]), ("Windows Sever 2O25", ["windows-server-2025"])],
)
def test_a_csvlk_typo_suggests_the_closest_group(typo: str, expected: list[str]) -> None:
    with pytest.raises(NotFoundInCatalog) as info:
        catalog.csvlk_group(typo)
    assert list(info.value.near) == expected
    assert len(catalog.csvlk_groups()) >= 10  # not every group


def test_a_csvlk_tie_lists_only_the_nearest() -> None:
    with pytest.raises(NotFoundInCatalog) as info:
        catalog.csvlk_group("Office LTSC 2012")
    assert set(info.value.near) <= {"office-ltsc-2021", "office-ltsc-2024"} and info.value.near


OPTIONS = ConnectionOptions(host="127.0.0.1", name="pc1", read_timeout=30.0)


def test_timeout_names_the_read_timeout_when_it_fired_before_the_deadline() -> None:
    budget = Deadline(834.091)
    error = host_timeout(OPTIONS, "facts", 834.091, budget)
    assert error.message.startswith("no answer within 30s (the read timeout of one request; ")
    assert "834.091" not in error.message
    assert "read timeout" in (error.remediation or "")


def test_timeout_at_the_deadline_gives_the_clock_time_it_ran_out() -> None:
    budget = Deadline(0.2)
    time.sleep(0.3)
    error = host_timeout(OPTIONS, "facts", 0.2, budget)
    assert re.fullmatch(
        r"no answer within 0\.2s \(its deadline, reached at \d\d:\d\d:\d\d \w+\)", error.message
    )
    assert "--deadline" in (error.remediation or "")


def test_a_max_fail_percentage_stop_says_which_play_why_and_at_what_rate(tmp_path: Path) -> None:
    import json

    import jsonschema

    from kmsadmin.report import from_rollout, render_html
    from tests.test_rollout import CLIENTS, go, inventory, playbook

    inv, fleet = inventory(tmp_path, 1, 8)
    fleet.error_at.update(pc001="activate", pc002="activate")
    result = go(playbook(tmp_path, CLIENTS.format(extra="serial: 4\n  max_fail_percentage: 25")), inv, fleet)
    report = dict(from_rollout(result))
    assert report["stopped"] == {
        "reason": "max_fail_percentage",
        "message": "play 'clients': 2 of 4 hosts in batch 1 failed (50%), more than max_fail_percentage 25%",
        "play": "clients",
        "batch": 1,
        "failed": 2,
        "batch_size": 4,
        "failure_rate": 50.0,
        "max_fail_percentage": 25,
    }
    schema = json.loads((Path(__file__).parents[1] / "docs" / "report.schema.json").read_text())
    jsonschema.validate(report, schema)
    line = (
        "Stopped: play 'clients': 2 of 4 hosts in batch 1 failed (50%), more than max_fail_percentage 25%; "
        "4 host(s) not started"
    )
    assert line in summary_text(report).splitlines()
    assert "Stopped: play &#x27;clients&#x27;: 2 of 4 hosts in batch 1 failed (50%)" in render_html(report)


def test_a_run_that_did_not_stop_has_no_stopped_entry(tmp_path: Path) -> None:
    from kmsadmin.report import from_rollout
    from tests.test_rollout import CLIENTS, go, inventory, playbook

    inv, fleet = inventory(tmp_path, 1, 4)
    report = from_rollout(go(playbook(tmp_path, CLIENTS.format(extra="serial: 4")), inv, fleet))
    assert "stopped" not in report and "Stopped:" not in summary_text(report)
