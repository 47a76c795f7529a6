"""Run reports: the document built from fixture inputs, its JSON Schema, and the CSV, JUnit, HTML and
terminal forms (each must show exactly the document's numbers and escape untrusted text)."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from rich.console import Console

from kmsadmin.report import (
    build_report,
    from_input,
    from_rollout,
    waiting_hosts,
    write_csv,
    write_html,
    write_json,
    write_junit,
)
from kmsadmin.report.document import DAYS_LEFT_BUCKETS, STATUSES, required_count
from kmsadmin.report.document import failures as failure_rows
from kmsadmin.report.tabular import CSV_COLUMNS, NOT_STARTED_SUITE, read_csv_cell
from kmsadmin.report.terminal import render_summary, summary_text

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "reports"
SCHEMA = json.loads((ROOT / "docs" / "report.schema.json").read_text(encoding="utf-8"))
NAMES = ("rollout-fleet", "status-branch", "check-dmz", "empty")
HOSTILE = "<script>alert(1)</script>"


def _input(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return data


def _report(name: str) -> dict[str, Any]:
    return from_input(_input(name))


def _parse_xml(path: Path) -> ET.Element:
    # The file is one these tests just wrote from fixture data, not untrusted input.
    return ET.parse(path).getroot()  # noqa: S314


def _validate(report: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(report)


# --- the document ---------------------------------------------------------------------------------------


def test_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("name", NAMES)
def test_fixture_reports_validate_against_the_schema(name: str, tmp_path: Path) -> None:
    report = _report(name)
    _validate(report)
    written = json.loads(write_json(report, tmp_path / "r.json").read_text(encoding="utf-8"))
    assert written == report
    _validate(written)


def test_schema_rejects_extra_host_keys() -> None:
    report = _report("check-dmz")
    report["hosts"][0]["vars"] = {"ansible_user": "x"}
    with pytest.raises(jsonschema.ValidationError):
        _validate(report)


def test_rollout_fleet_summary() -> None:
    report = _report("rollout-fleet")
    summary = report["summary"]
    assert report["kmsadmin_report"] == 1
    assert summary["hosts"] == 200 == len(report["hosts"]) + len(report["not_started"])
    assert summary["hosts"] == sum(
        summary[key] for key in ("ok", "changed", "pending", "waiting", "failed", "not_started")
    )
    assert (
        summary["ok"],
        summary["changed"],
        summary["pending"],
        summary["waiting"],
        summary["failed"],
        summary["not_started"],
    ) == (47, 127, 0, 7, 11, 8)
    hresults = [host["error"]["hresult"] for host in report["hosts"] if host["error"]]
    assert hresults.count("0xC004F038") == 7 and hresults.count("0xC004F074") == 5
    # refused for the KMS count at activate: waiting, with the error kept
    for host in report["hosts"]:
        waits = bool(host["error"]) and host["error"]["hresult"] == "0xC004F038"
        assert (host["status"] == "waiting") == waits, host["host"]
        if waits:
            assert host["error"]["step"] == "activate" and host["error"]["meaning"]
    assert summary["activated"] == sum(
        1 for host in report["hosts"] if host["state"].get("license_status") == 1
    )
    read = [host for host in report["hosts"] if host["state"]]
    assert sum(n for row in summary["by_edition"].values() for n in row.values()) == len(read)
    assert sum(summary["days_left"].values()) == len(read)
    assert list(summary["days_left"]) == [label for label, _, _ in DAYS_LEFT_BUCKETS]
    assert summary["kms_hosts"] == [
        {"host": "kms01.corp.example.com", "current_count": 31, "required_count": 25, "threshold_met": True},
        {"host": "kms02.corp.example.com", "current_count": 12, "required_count": 25, "threshold_met": False},
    ]
    assert report["duration"] == 1843.25 and report["interrupted"] is True
    assert summary["skipped"] == 2 == len(report["skipped"])
    assert report["hosts"][0]["play"] == "KMS hosts" and report["hosts"][0]["role"] == "kms_host"


def test_server_only_fleet_needs_five() -> None:
    report = _report("check-dmz")
    assert report["check"] is True
    assert report["summary"]["pending"] == 10
    assert report["summary"]["kms_hosts"] == [
        {"host": "kms-dmz.dmz.example.net", "current_count": 6, "required_count": 5, "threshold_met": True}
    ]


def test_required_count_follows_the_catalog_rules() -> None:
    client = {"state": {"os": "Microsoft Windows 11 Enterprise", "is_kms_host": False}}
    server = {"state": {"os": "Microsoft Windows Server 2022 Standard", "is_kms_host": False}}
    host = {"state": {"os": "Microsoft Windows Server 2022 Standard", "is_kms_host": True}}
    unknown: dict[str, Any] = {"state": {}}
    assert required_count([host, server, unknown]) == 5
    assert required_count([host, server, client]) == 25
    assert required_count([]) == 5


def test_empty_run() -> None:
    report = _report("empty")
    summary = report["summary"]
    assert summary["hosts"] == 0 and report["hosts"] == [] and summary["kms_hosts"] == []
    assert summary["by_edition"] == {} and set(summary["days_left"].values()) == {0}


def test_build_report_is_pure() -> None:
    data = _input("rollout-fleet")
    before = copy.deepcopy(data)
    first = from_input(data)
    assert data == before
    first["hosts"][0]["state"]["edition"] = "changed"
    assert from_input(data) != first
    assert from_input(data) == from_input(data)


def test_waiting_hosts_are_counted_apart_from_failures(tmp_path: Path) -> None:
    error = {"host": "pc2", "step": "activate", "message": "count 3, needs 25", "hresult": "0xc004f038"}
    hosts = [
        {"host": "pc1", "status": "changed"},
        {"host": "pc2", "status": "waiting", "error": error, "state": {"kms_machine": "kms01"}},
        {"host": "pc3", "status": "failed", "error": {**error, "host": "pc3", "hresult": "0xC004F074"}},
    ]
    report = build_report(
        "rollout", hosts, started="2024-01-01T00:00:00Z", finished="2024-01-01T00:00:05Z", not_started=["pc4"]
    )
    _validate(report)
    summary = report["summary"]
    assert list(STATUSES) == ["ok", "changed", "pending", "waiting", "failed"]
    assert (summary["hosts"], summary["changed"], summary["waiting"], summary["failed"]) == (4, 1, 1, 1)
    waiting = report["hosts"][1]
    assert waiting["status"] == "waiting"
    assert waiting["error"]["hresult"] == "0xC004F038" and waiting["error"]["remediation"]
    assert [row["host"] for row in waiting_hosts(report)] == ["pc2"]
    assert waiting_hosts(report)[0]["kms_machine"] == "kms01"
    assert [row["host"] for row in failure_rows(report)] == ["pc3"]
    with write_csv(report, tmp_path / "r.csv").open(encoding="utf-8", newline="") as handle:
        rows = {row["host"]: row for row in csv.DictReader(handle)}
    assert rows["pc2"]["status"] == "waiting" and rows["pc2"]["hresult"] == "0xC004F038"
    assert rows["pc2"]["error_step"] == "activate" and rows["pc3"]["status"] == "failed"
    root = _parse_xml(write_junit(report, tmp_path / "r.xml"))
    assert root.get("failures") == "1" and root.get("tests") == "4" and root.get("skipped") == "2"
    cases = {case.get("name"): case for case in root.iter("testcase")}
    waiting, failed = cases["pc2"].find("skipped"), cases["pc3"].find("failure")
    assert waiting is not None and cases["pc2"].find("failure") is None
    assert (waiting.get("message") or "").startswith("waiting for the KMS count: ")
    assert failed is not None and failed.get("type") == "0xC004F074"


def test_schema_requires_the_error_of_a_waiting_host() -> None:
    report = _report("rollout-fleet")
    host = next(h for h in report["hosts"] if h["status"] == "waiting")
    host["error"] = None
    with pytest.raises(jsonschema.ValidationError):
        _validate(report)
    report = _report("rollout-fleet")
    summary = report["summary"]
    del summary["waiting"]
    with pytest.raises(jsonschema.ValidationError):
        _validate(report)


def test_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match="status"):
        build_report(
            "rollout",
            [{"host": "pc1", "status": "skipped"}],
            started="2024-01-01T00:00:00+00:00",
            finished="2024-01-01T00:00:01+00:00",
        )
    with pytest.raises(ValueError, match="kind"):
        build_report("deploy", [], started="2024-01-01T00:00:00", finished="2024-01-01T00:00:01")  # type: ignore[arg-type]


def test_missing_meaning_comes_from_the_catalog() -> None:
    host = {
        "host": "pc1",
        "status": "failed",
        "error": {"host": "pc1", "step": "activate", "message": "failed", "hresult": "c004f074"},
    }
    report = build_report("rollout", [host], started="2024-01-01T00:00:00Z", finished="2024-01-01T00:00:05Z")
    error = report["hosts"][0]["error"]
    assert error["hresult"] == "0xC004F074"
    assert error["meaning"] and error["remediation"]
    _validate(report)


def test_secrets_in_host_vars_never_reach_any_report(tmp_path: Path) -> None:
    data = _input("rollout-fleet")
    secret = "Winter2024!kms"
    assert any(host.get("vars", {}).get("ansible_password") == secret for host in data["hosts"])
    data["hosts"][2]["ansible_password"] = secret
    data["hosts"][3]["vars"]["ansible_become_password"] = secret
    report = from_input(data)
    assert secret not in json.dumps(report)
    assert "ansible_password" not in json.dumps(report)
    outputs = [
        write_json(report, tmp_path / "r.json"),
        write_csv(report, tmp_path / "r.csv"),
        write_junit(report, tmp_path / "r.xml"),
        write_html(report, tmp_path / "r.html"),
    ]
    for path in outputs:
        text = path.read_text(encoding="utf-8")
        assert secret not in text and "ansible_password" not in text, path.name
    assert secret not in summary_text(report)


# --- CSV -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_csv_has_one_row_per_host_and_round_trips(name: str, tmp_path: Path) -> None:
    report = _report(name)
    raw = write_csv(report, tmp_path / "r.csv").read_bytes()
    with (tmp_path / "r.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == report["summary"]["hosts"]
    if rows:
        assert b"\r\n" in raw
        assert tuple(rows[0]) == CSV_COLUMNS
    by_host = {row["host"]: row for row in rows}
    for host in report["hosts"]:
        row = by_host[host["host"]]
        state, error = host["state"], host["error"] or {}
        assert row["status"] == host["status"]
        assert row["changes"] == str(host["changes"])
        assert row["edition"] == (state.get("edition") or "")
        assert row["license_status"] == (state.get("license_status_name") or "")
        assert row["days_left"] == ("" if state.get("days_left") is None else str(state["days_left"]))
        assert read_csv_cell(row["message"]) == (error.get("message") or "")
        assert row["hresult"] == (error.get("hresult") or "")
        assert row["remediation"] == (error.get("remediation") or "")
    for name_ in report["not_started"]:
        assert by_host[name_]["status"] == "not_started"


def test_csv_neutralises_formulas_and_keeps_hostile_text(tmp_path: Path) -> None:
    host = {
        "host": "pc1",
        "status": "failed",
        "error": {"step": "activate", "message": '=HYPERLINK("http://x")', "hresult": None},
    }
    other = {"host": 'pc2,"quoted"\nline', "status": "ok", "state": {"edition": HOSTILE}}
    report = build_report(
        "rollout", [host, other], started="2024-01-01T00:00:00Z", finished="2024-01-01T00:00:01Z"
    )
    text = write_csv(report, tmp_path / "r.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert rows[0]["message"] == '\'=HYPERLINK("http://x")'
    assert read_csv_cell(rows[0]["message"]) == '=HYPERLINK("http://x")'
    assert rows[1]["host"] == 'pc2,"quoted"\nline' and rows[1]["edition"] == HOSTILE


# --- JUnit -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_junit_counts(name: str, tmp_path: Path) -> None:
    report = _report(name)
    root = _parse_xml(write_junit(report, tmp_path / "r.xml"))
    summary = report["summary"]
    assert root.tag == "testsuites"
    cases = root.findall("testsuite/testcase")
    assert len(cases) == summary["hosts"] == int(root.get("tests", "-1"))
    assert (
        len(root.findall("testsuite/testcase/failure"))
        == summary["failed"]
        == int(root.get("failures", "-1"))
    )
    waiting = [
        s
        for s in root.findall("testsuite/testcase/skipped")
        if (s.get("message") or "").startswith("waiting")
    ]
    assert len(waiting) == summary["waiting"]
    assert (
        len(root.findall("testsuite/testcase/skipped"))
        == summary["not_started"] + summary["waiting"]
        == int(root.get("skipped", "-1"))
    )
    for suite in root.findall("testsuite"):
        assert suite.get("name")
        assert int(suite.get("tests", "-1")) == len(suite.findall("testcase"))
        assert int(suite.get("failures", "-1")) == len(suite.findall("testcase/failure"))
        assert int(suite.get("skipped", "-1")) == len(suite.findall("testcase/skipped"))
        assert int(suite.get("errors", "-1")) == 0
        assert float(suite.get("time", "x")) >= 0
        for case in suite.findall("testcase"):
            assert case.get("name") and case.get("classname") and float(case.get("time", "x")) >= 0


def test_junit_suites_are_plays_and_failures_carry_the_error(tmp_path: Path) -> None:
    report = _report("rollout-fleet")
    root = _parse_xml(write_junit(report, tmp_path / "r.xml"))
    assert [suite.get("name") for suite in root.findall("testsuite")] == [
        "KMS hosts",
        "Windows clients",
        "Member servers",
        NOT_STARTED_SUITE,
    ]
    failures = {
        case.get("name"): case.find("failure")
        for case in root.iter("testcase")
        if case.find("failure") is not None
    }
    host = next(h for h in report["hosts"] if h["error"] and h["error"]["hresult"] == "0xC004F074")
    failure = failures[host["host"]]
    assert failure is not None and failure.get("type") == "0xC004F074"
    assert failure.get("message") == host["error"]["message"]
    assert "step: activate" in (failure.text or "") and host["error"]["remediation"] in (failure.text or "")
    # a waiting host is configured and activates by itself later: skipped with the reason, not failed
    host = next(h for h in report["hosts"] if h["status"] == "waiting")
    assert host["host"] not in failures
    case = next(c for c in root.iter("testcase") if c.get("name") == host["host"])
    skipped = case.find("skipped")
    assert skipped is not None
    message = skipped.get("message") or ""
    assert message.startswith("waiting for the KMS count: the KMS host has not counted enough clients yet")
    assert "retries every 2 hours" in message
    text = skipped.text or ""
    assert "HRESULT: 0xC004F038" in text and "step: activate" in text


def test_junit_survives_control_characters(tmp_path: Path) -> None:
    host = {"host": "pc1", "status": "failed", "error": {"step": "x", "message": "bad\x00\x1bbytes <&>"}}
    report = build_report("rollout", [host], started="2024-01-01T00:00:00Z", finished="2024-01-01T00:00:01Z")
    failure = _parse_xml(write_junit(report, tmp_path / "r.xml")).find(".//failure")
    assert failure is not None and failure.get("message") == "bad\ufffd\ufffdbytes <&>"


# --- HTML ------------------------------------------------------------------------------------------------


class _Page(HTMLParser):
    """Collects data-metric values, tags, attributes and script/style/link use of a page."""

    VOID = frozenset({"meta", "link", "input", "br", "img", "hr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.metrics: list[tuple[str, str]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._open: list[tuple[str, str, list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        metric = attributes.get("data-metric")
        if metric is not None:
            value = attributes.get("data-value")
            if value is not None:
                self.metrics.append((metric, value))
            elif tag not in self.VOID:
                self._open.append((tag, metric, []))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1][0] == tag:
            _, metric, parts = self._open.pop()
            self.metrics.append((metric, "".join(parts)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        for _, _, parts in self._open:
            parts.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def _resolve(report: dict[str, Any], pointer: str) -> Any:
    value: Any = report
    for part in pointer.split("/")[1:]:
        key = part.replace("~1", "/").replace("~0", "~")
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


@pytest.mark.parametrize("name", NAMES)
def test_html_metrics_equal_the_json(name: str, tmp_path: Path) -> None:
    report = _report(name)
    page = _parse(write_html(report, tmp_path / "r.html"))
    assert page.metrics
    for pointer, shown in page.metrics:
        assert shown == str(_resolve(report, pointer)), pointer
    pointers = {pointer for pointer, _ in page.metrics}
    summary = report["summary"]
    expected = {
        f"/summary/{key}"
        for key in ("hosts", "ok", "changed", "pending", "waiting", "failed", "not_started", "activated")
    }
    expected |= {f"/summary/days_left/{label}" for label in summary["days_left"]}
    expected |= {
        f"/summary/by_edition/{edition.replace('~', '~0').replace('/', '~1')}/{status}"
        for edition, row in summary["by_edition"].items()
        for status in row
    }
    for index, host in enumerate(summary["kms_hosts"]):
        expected.add(f"/summary/kms_hosts/{index}/required_count")
        if host["current_count"] is not None:
            expected.add(f"/summary/kms_hosts/{index}/current_count")
    assert expected <= pointers


@pytest.mark.parametrize("name", NAMES)
def test_html_is_self_contained(name: str, tmp_path: Path) -> None:
    page = _parse(write_html(_report(name), tmp_path / "r.html"))
    for tag, attributes in page.tags:
        for attribute in ("src", "href", "action", "srcset", "xlink:href", "style"):
            value = attributes.get(attribute)
            assert value is None or (attribute == "href" and value == "data:,"), (tag, attribute, value)
        assert not any(key.startswith("on") for key in attributes), (tag, attributes)
    scripts = [attributes for tag, attributes in page.tags if tag == "script"]
    assert scripts == [{}]
    assert [tag for tag, _ in page.tags].count("link") == 1
    csp = next(
        a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    )
    assert csp is not None and "default-src 'none'" in csp and "unsafe-inline" not in csp


def test_html_shows_waiting_hosts_apart(tmp_path: Path) -> None:
    report = _report("rollout-fleet")
    path = write_html(report, tmp_path / "r.html")
    text = path.read_text(encoding="utf-8")
    page = _parse(path)
    tiles = [a for t, a in page.tags if t == "div" and (a.get("class") or "").startswith("tile")]
    assert {"class": "tile waiting"} in tiles
    options = [a.get("value") for t, a in page.tags if t == "option"]
    assert "waiting" in options and "failed" in options
    rows = [a for t, a in page.tags if t == "tr" and a.get("data-status") == "waiting"]
    assert len(rows) == report["summary"]["waiting"] == 7
    badges = [a for t, a in page.tags if t == "span" and a.get("class") == "badge waiting"]
    assert len(badges) == 7
    # a colour of its own, used by the tile and the badge
    colours = dict(re.findall(r"--(\w+): (#[0-9a-f]{6})", text))
    assert colours["waiting"] not in {v for k, v in colours.items() if k != "waiting"}
    assert ".tile.waiting { border-left-color: var(--waiting); }" in text
    assert ".badge.waiting { background: var(--waiting); }" in text
    # the waiting table lists them with the explanation; the failures table does not
    start, end = text.index('id="waiting-table"'), text.index('id="host-table"')
    waiting_part = text[start:end]
    assert all(h["host"] in waiting_part for h in report["hosts"] if h["status"] == "waiting")
    assert "Waiting for the KMS count" in text and "Windows retries every 2 hours" in text
    failure_part = text[text.index('id="failure-table"') : start]
    assert not any(h["host"] in failure_part for h in report["hosts"] if h["status"] == "waiting")
    assert ("/summary/waiting", "7") in page.metrics
    assert 'id="waiting-table"' not in write_html(_report("empty"), tmp_path / "e.html").read_text()


def test_html_escapes_hostile_text(tmp_path: Path) -> None:
    data = _input("rollout-fleet")
    data["hosts"] = data["hosts"][:6]
    data["hosts"][0]["host"] = HOSTILE
    data["hosts"][0]["play"] = '"><img src=x onerror=alert(1)>'
    data["hosts"][1]["state"]["edition"] = "</title><script>alert(2)</script>"
    data["hosts"][2]["status"] = "failed"
    data["hosts"][2]["error"] = {
        "host": "x",
        "step": "<b>step</b>",
        "message": HOSTILE,
        "hresult": None,
        "meaning": None,
        "remediation": "'single' & \"double\"",
    }
    data["not_started"] = ["<svg onload=alert(3)>"]
    report = from_input(data)
    path = write_html(report, tmp_path / "r.html")
    text = path.read_text(encoding="utf-8")
    assert "<script>alert" not in text and "<img" not in text and "<svg onload" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    page = _parse(path)
    assert [tag for tag, _ in page.tags].count("script") == 1
    assert not any(tag in ("img", "b") for tag, _ in page.tags)
    shown = "".join(page.text)
    assert HOSTILE in shown and "'single' & \"double\"" in shown and "<svg onload=alert(3)>" in shown
    for pointer, value in page.metrics:
        assert value == str(_resolve(report, pointer))


# --- terminal --------------------------------------------------------------------------------------------


def test_terminal_summary() -> None:
    report = _report("rollout-fleet")
    console = Console(record=True, width=160, color_system=None)
    console.print(render_summary(report))
    out = console.export_text()
    for number in ("200", "47", "127", "11", "174"):
        assert number in out
    assert "kms02.corp.example.com" in out and "not met" in out
    assert "0xC004F074" in out and "slmgr /skms" in out
    assert "Failures (11)" in out
    assert "Waiting for the KMS count (7, 0xC004F038): the KMS host has not counted" in out
    assert "and 0 more" not in out
    small = Console(record=True, width=160, color_system=None)
    small.print(render_summary(report, max_failures=3))
    assert "and 8 more failed hosts" in small.export_text()


def test_terminal_keeps_markup_literal() -> None:
    host = {"host": "[bold]pc1[/bold]", "status": "failed", "error": {"step": "x", "message": "[red]boom"}}
    report = build_report("rollout", [host], started="2024-01-01T00:00:00Z", finished="2024-01-01T00:00:01Z")
    console = Console(record=True, width=120, color_system=None)
    console.print(render_summary(report))
    out = console.export_text()
    assert "[bold]pc1[/bold]" in out and "[red]boom" in out


def test_plain_text_summary() -> None:
    text = summary_text(_report("rollout-fleet"))
    lines = text.splitlines()
    assert lines[0] == "kmsadmin rollout playbooks/convert-fleet.yml (interrupted)"
    assert (
        lines[1]
        == "hosts: 200  ok: 47  changed: 127  pending: 0  waiting: 7  failed: 11  not started: 8  skipped: 2  "
        "activated: 174"
    )
    assert "KMS host kms02.corp.example.com: current count 12 / required 25 (NOT met)" in lines
    assert "Failures (11):" in lines
    waiting = [h["host"] for h in _report("rollout-fleet")["hosts"] if h["status"] == "waiting"]
    index = lines.index(
        "Waiting for the KMS count (7, 0xC004F038): the KMS host has not counted enough clients yet "
        "(25 Windows clients, 5 servers or Office, within 30 days); activation happens by itself once it "
        "has (Windows retries every 2 hours), or re-run kmsadmin then"
    )
    assert lines[index + 1] == "  " + ", ".join(waiting)
    failure_lines = lines[lines.index("Failures (11):") :]
    assert not any(name in line for name in waiting for line in failure_lines)
    assert summary_text(_report("empty")).splitlines()[1].startswith("hosts: 0")


# --- rollout adapter -------------------------------------------------------------------------------------


def test_from_rollout() -> None:
    from kmsadmin.fleet.rollout import HostResult, NotStarted, RolloutResult, Skipped
    from kmsadmin.fleet.runner import HostReport, StepRecord

    start = datetime(2024, 11, 4, 8, 0, tzinfo=UTC)
    kms_state = {
        "os": "Microsoft Windows Server 2022 Standard",
        "edition": "Windows Server 2022 Standard",
        "license_status": 1,
        "license_status_name": "Licensed",
        "days_left": 0,
        "is_kms_host": True,
        "current_count": 3,
    }
    client_state = {
        "os": "Microsoft Windows 11 Enterprise",
        "edition": "Windows 11 Enterprise",
        "license_status": 1,
        "license_status_name": "Licensed",
        "days_left": 180,
        "is_kms_host": False,
    }
    kms = HostResult(
        "KMS hosts",
        "kms01",
        "changed",
        [
            HostReport(
                "kms01",
                "setup-host",
                "changed",
                1,
                [StepRecord("install-host-key", True, 2.0)],
                state=kms_state,
            )
        ],
        1,
        start,
        start + timedelta(seconds=12),
        vars={"kmsadmin_role": "kms_host", "ansible_password": "Winter2024!kms"},
    )
    error = {
        "host": "pc2",
        "step": "activate",
        "message": "no KMS",
        "hresult": "0xC004F074",
        "meaning": None,
        "remediation": None,
    }
    pc1 = HostResult(
        "Clients",
        "pc1",
        "ok",
        [HostReport("pc1", "convert-client", "ok", state=client_state)],
        1,
        start,
        start + timedelta(seconds=3),
    )
    pc2 = HostResult(
        "Clients",
        "pc2",
        "failed",
        [HostReport("pc2", "convert-client", "failed", 2, error=error)],
        2,
        start,
        start + timedelta(seconds=30),
    )
    result = RolloutResult(
        "run1",
        Path("playbooks/fleet.yml"),
        Path("inv.yml"),
        False,
        start,
        start + timedelta(seconds=40),
        [kms, pc1, pc2],
        skipped=[Skipped("Clients", "pc9", "done in an earlier run")],
        not_started=[NotStarted("Clients", "pc3", "interrupted"), NotStarted("Verify", "pc3", "interrupted")],
        interrupted=True,
    )
    report = from_rollout(result)
    _validate(report)
    summary = report["summary"]
    assert (
        summary["hosts"],
        summary["ok"],
        summary["changed"],
        summary["failed"],
        summary["not_started"],
        summary["skipped"],
    ) == (4, 1, 1, 1, 1, 1)
    assert summary["kms_hosts"] == [
        {"host": "kms01", "current_count": 3, "required_count": 25, "threshold_met": False}
    ]
    first = report["hosts"][0]
    assert (first["play"], first["role"], first["duration"], first["steps"][0]["step"]) == (
        "KMS hosts",
        "kms_host",
        12.0,
        "install-host-key",
    )
    assert report["hosts"][2]["error"]["meaning"]  # filled in from the catalog
    assert report["playbook"] == "playbooks/fleet.yml" and report["interrupted"] is True
    assert "Winter2024!kms" not in json.dumps(report)
