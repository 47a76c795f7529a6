"""CSV and JUnit XML writers for a run report.

CSV: one RFC 4180 row per host (not-started hosts included, with status ``not_started``), written by
the csv module. Cells that a spreadsheet would run as a formula (starting with ``= + - @`` or a tab or
carriage return) get a leading apostrophe; :func:`read_csv_cell` undoes it.

JUnit: one ``<testsuite>`` per play, one ``<testcase>`` per host, ``<failure>`` for failed hosts and
``<skipped>`` for hosts that never started, in the shape CI servers read (Ant/Jenkins JUnit XML). A
waiting host (refused at ``activate`` until its KMS host has counted enough clients) is configured and
activates by itself later: it is ``<skipped>`` with the reason, not a failure (the exit code still
tells a CI job that machines are not activated yet).
"""

from __future__ import annotations

import csv
import io
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kmsadmin import catalog
from kmsadmin.report.document import NOT_STARTED, shown_meaning
from kmsadmin.report.files import utf8, write_atomic

CSV_COLUMNS: tuple[str, ...] = (
    "host",
    "play",
    "role",
    "status",
    "changes",
    "edition",
    "license_status",
    "days_left",
    "kms_machine",
    "kms_count",
    "activation_method",
    "activated_by",
    "error_step",
    "hresult",
    "meaning",
    "message",
    "remediation",
)

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

NOT_STARTED_SUITE = "not started"
"""JUnit suite that holds hosts the run never reached (they belong to no play yet)."""

# Characters XML 1.0 cannot carry at all (remote error text may contain them).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text


def read_csv_cell(text: str) -> str:
    """The original value of a cell written by :func:`write_csv`."""
    if text.startswith("'") and text[1:].startswith(_FORMULA_START):
        return text[1:]
    return text


def _whole_days(value: Any) -> int | None:
    """Days left as a whole number (the days not yet fully used are not counted)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return max(0, int(value))


def _kms_count(state: Mapping[str, Any]) -> int | None:
    """A KMS host's count of clients (0 before any request); empty for other machines."""
    count = state.get("current_count")
    if not state.get("is_kms_host") or isinstance(count, bool) or not isinstance(count, int) or count < -1:
        return None
    return max(0, count)


def csv_rows(report: Mapping[str, Any]) -> list[dict[str, str]]:
    """The CSV rows of a report, as written (header names → cell text)."""
    rows = []
    for entry in report["hosts"]:
        state = entry.get("state") or {}
        error = entry.get("error") or {}
        values = {
            "host": entry["host"],
            "play": entry.get("play"),
            "role": entry.get("role"),
            "status": entry["status"],
            "changes": entry.get("changes", 0),
            "edition": state.get("edition"),
            "license_status": state.get("license_status_name"),
            "days_left": _whole_days(state.get("days_left")),
            "kms_machine": state.get("kms_machine"),
            "kms_count": _kms_count(state),
            "activation_method": state.get("activation_method"),
            "activated_by": state.get("activated_by"),
            "error_step": error.get("step"),
            "hresult": error.get("hresult"),
            "meaning": error.get("meaning"),
            "message": error.get("message"),
            "remediation": error.get("remediation"),
        }
        rows.append({key: _cell(values[key]) for key in CSV_COLUMNS})
    for name in report["not_started"]:
        row = dict.fromkeys(CSV_COLUMNS, "")
        row.update(host=_cell(name), status=NOT_STARTED)
        rows.append(row)
    return rows


def write_csv(report: Mapping[str, Any], path: str | Path) -> Path:
    """Write one CSV row per host (UTF-8, CRLF line ends as RFC 4180 asks)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, dialect="excel")
    writer.writeheader()
    writer.writerows(csv_rows(report))
    return write_atomic(path, utf8(buffer.getvalue()))


def _xml_text(value: Any) -> str:
    return _XML_INVALID.sub("\ufffd", "" if value is None else str(value))


def _failure_text(error: Mapping[str, Any]) -> str:
    lines = [f"step: {error.get('step') or ''}"]
    if error.get("hresult"):
        meaning = shown_meaning(error)
        lines.append(f"HRESULT: {error['hresult']}" + (f" ({meaning})" if meaning else ""))
    lines.append(f"message: {error.get('message') or ''}")
    if error.get("remediation"):
        lines.append(f"remediation: {error['remediation']}")
    return "\n".join(lines)


def _set(element: ET.Element, **attributes: Any) -> None:
    for key, value in attributes.items():
        element.set(key, _xml_text(value))


def junit_tree(report: Mapping[str, Any]) -> ET.ElementTree[ET.Element]:
    """The JUnit XML tree of a report."""
    suites: dict[str, list[Mapping[str, Any]]] = {}
    fallback = report.get("playbook") or report["kind"]
    for entry in report["hosts"]:
        suites.setdefault(entry.get("play") or fallback, []).append(entry)
    root = ET.Element("testsuites")
    summary = report["summary"]
    _set(
        root,
        name=f"kmsadmin {report['kind']}" + (f" {report['playbook']}" if report.get("playbook") else ""),
        tests=summary["hosts"],
        failures=summary["failed"],
        errors=0,
        skipped=summary[NOT_STARTED] + summary["waiting"],
        time=f"{report['duration']:.3f}",
        timestamp=report["started"],
    )
    for suite_id, (play, entries) in enumerate(suites.items()):
        suite = ET.SubElement(root, "testsuite")
        failed = sum(1 for entry in entries if entry["status"] == "failed")
        _set(
            suite,
            name=play,
            id=suite_id,
            tests=len(entries),
            failures=failed,
            errors=0,
            skipped=sum(1 for entry in entries if entry["status"] == "waiting"),
            time=f"{sum(float(entry.get('duration') or 0) for entry in entries):.3f}",
            timestamp=report["started"],
        )
        for entry in entries:
            case = ET.SubElement(suite, "testcase")
            _set(
                case,
                name=entry["host"],
                classname=f"kmsadmin.{play}",
                time=f"{float(entry.get('duration') or 0):.3f}",
            )
            error = entry.get("error") or {}
            if entry["status"] == "failed":
                failure = ET.SubElement(case, "failure")
                _set(
                    failure,
                    message=error.get("message") or "failed",
                    type=error.get("hresult") or error.get("step") or "failed",
                )
                failure.text = _xml_text(_failure_text(error))
            elif entry["status"] == "waiting":
                skipped = ET.SubElement(case, "skipped")
                _set(skipped, message=f"waiting for the KMS count: {catalog.waiting_note()}")
                skipped.text = _xml_text(_failure_text(error))
            else:
                out = ET.SubElement(case, "system-out")
                out.text = _xml_text(f"status: {entry['status']}, changes: {entry.get('changes', 0)}")
    if report["not_started"]:
        suite = ET.SubElement(root, "testsuite")
        _set(
            suite,
            name=NOT_STARTED_SUITE,
            id=len(suites),
            tests=len(report["not_started"]),
            failures=0,
            errors=0,
            skipped=len(report["not_started"]),
            time="0.000",
            timestamp=report["started"],
        )
        for name in report["not_started"]:
            case = ET.SubElement(suite, "testcase")
            _set(case, name=name, classname=f"kmsadmin.{NOT_STARTED}", time="0.000")
            skipped = ET.SubElement(case, "skipped")
            _set(
                skipped,
                message="interrupted before this host started" if report["interrupted"] else "not started",
            )
    return ET.ElementTree(root)


def write_junit(report: Mapping[str, Any], path: str | Path) -> Path:
    """Write the report as JUnit XML (UTF-8, with an XML declaration)."""
    tree = junit_tree(report)
    ET.indent(tree)
    buffer = io.BytesIO()
    tree.write(buffer, encoding="utf-8", xml_declaration=True)
    return write_atomic(path, buffer.getvalue())
