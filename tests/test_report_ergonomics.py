"""Reports people read: local times and durations in the HTML header, whole days and the KMS count in
CSV, and the count a KMS host's verify step read right after set-up."""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmsadmin.report import build_report, render_html, write_csv
from kmsadmin.report.htmlpage import human_duration, local_time
from kmsadmin.report.terminal import summary_text


@pytest.fixture
def berlin() -> Iterator[None]:
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(4.25, "4.2 s"), (37.4, "37 s"), (97.0, "1 min 37 s"), (3600 * 2 + 301, "2 h 5 min")],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_html_header_shows_local_times_with_zone_and_the_duration(berlin: None) -> None:
    report = build_report("status", [], started="2026-01-01T00:00:00Z", finished="2026-01-01T00:01:37Z")
    page = render_html(report)
    header = page.split("<header>", 1)[1].split("</header>", 1)[0]
    assert '<time datetime="2026-01-01T00:00:00+00:00">Thu 1 Jan 2026 01:00:00 CET</time>' in header
    assert "Thu 1 Jan 2026 01:01:37 CET" in header
    assert "took 1 min 37 s" in header
    assert local_time("2026-07-01T12:00:00Z") == "Wed 1 Jul 2026 14:00:00 CEST"


def _fleet() -> list[dict[str, object]]:
    return [
        {
            "host": "kms01",
            "status": "changed",
            "role": "kms_host",
            "state": {"is_kms_host": True, "current_count": -1, "license_status": 1, "days_left": None},
        },
        {"host": "kms02", "status": "ok", "state": {"is_kms_host": True, "current_count": 31}},
        {
            "host": "pc1",
            "status": "ok",
            "state": {"license_status": 1, "days_left": 179.62, "current_count": -1},
        },
    ]


def test_csv_has_whole_days_and_the_kms_count(tmp_path: Path) -> None:
    report = build_report(
        "rollout", _fleet(), started="2026-01-01T00:00:00Z", finished="2026-01-01T00:00:05Z"
    )
    with write_csv(report, tmp_path / "r.csv").open(encoding="utf-8", newline="") as handle:
        rows = {row["host"]: row for row in csv.DictReader(handle)}
    assert rows["pc1"]["days_left"] == "179"
    assert (rows["kms01"]["kms_count"], rows["kms02"]["kms_count"], rows["pc1"]["kms_count"]) == (
        "0",
        "31",
        "",
    )


def test_a_new_kms_host_shows_the_count_its_verify_step_read(tmp_path: Path) -> None:
    """-1 (KeyManagementServiceCurrentCount before any request) is a count of 0, not 'unknown'."""
    report = build_report(
        "rollout", _fleet(), started="2026-01-01T00:00:00Z", finished="2026-01-01T00:00:05Z"
    )
    kms = {entry["host"]: entry for entry in report["summary"]["kms_hosts"]}
    assert kms["kms01"]["current_count"] == 0 and kms["kms01"]["threshold_met"] is False
    assert "KMS host kms01: current count 0 / required 5 (NOT met)" in summary_text(report)
    missing = build_report(
        "rollout",
        [{"host": "kms03", "status": "failed", "state": {"is_kms_host": True}}],
        started="2026-01-01T00:00:00Z",
        finished="2026-01-01T00:00:05Z",
    )
    assert missing["summary"]["kms_hosts"][0]["current_count"] is None  # not read: unknown
