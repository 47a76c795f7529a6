"""Terminal summaries of a run report: rich tables, and a plain-text form for pipes and logs.

Imported lazily by the CLI (rich is only needed when a summary is printed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from kmsadmin import catalog
from kmsadmin.report.document import NOT_STARTED, STATUSES, failures, stopped_text, waiting_hosts

_STYLES = {
    "ok": "green",
    "changed": "blue",
    "pending": "yellow",
    "waiting": "magenta",
    "failed": "bold red",
    NOT_STARTED: "dim",
}


def _title(report: Mapping[str, Any]) -> str:
    title = f"kmsadmin {report['kind']}"
    if report.get("playbook"):
        title += f" {report['playbook']}"
    flags = [
        flag for flag, on in (("check mode", report["check"]), ("interrupted", report["interrupted"])) if on
    ]
    return title + (f" ({', '.join(flags)})" if flags else "")


MAX_FAILURES = 20
"""Failures listed one by one in a terminal summary; the rest are counted (the files list them all)."""

MAX_WAITING = 20
"""Waiting hosts named in a terminal summary; the rest are counted."""


def _waiting_lines(report: Mapping[str, Any]) -> list[str]:
    """Waiting hosts, apart from failures: a count, the one-line explanation, the first names."""
    rows = waiting_hosts(report)
    if not rows:
        return []
    names = ", ".join(row["host"] for row in rows[:MAX_WAITING])
    if len(rows) > MAX_WAITING:
        names += f", ... and {len(rows) - MAX_WAITING} more"
    return [
        f"Waiting for the KMS count ({len(rows)}, {catalog.NOT_ENOUGH_COUNT}): {catalog.waiting_note()}",
        f"  {names}",
    ]


def render_summary(report: Mapping[str, Any], *, max_failures: int = MAX_FAILURES) -> Group:
    """Rich renderable: host counts per state, KMS host counts, waiting hosts, failures with their fix."""
    summary = report["summary"]
    counts = Table(title=_title(report), title_justify="left")
    for status in ("hosts", *STATUSES, NOT_STARTED, "skipped", "activated"):
        counts.add_column(status.replace("_", " "), justify="right", style=_STYLES.get(status))
    counts.add_row(*(str(summary[key]) for key in ("hosts", *STATUSES, NOT_STARTED, "skipped", "activated")))
    parts: list[Table | Text] = [counts]
    methods = summary.get("by_method") or {}
    if methods:
        parts.append(Text("activated by: " + ", ".join(f"{name} {count}" for name, count in methods.items())))
    if summary["kms_hosts"]:
        kms = Table(title="KMS hosts", title_justify="left")
        kms.add_column("host")
        kms.add_column("current count", justify="right")
        kms.add_column("required", justify="right")
        kms.add_column("threshold")
        for entry in summary["kms_hosts"]:
            met = entry["threshold_met"]
            kms.add_row(
                Text(entry["host"]),
                "unknown" if entry["current_count"] is None else str(entry["current_count"]),
                str(entry["required_count"]),
                Text("met", style="green")
                if met
                else Text("unknown", style="dim")
                if met is None
                else Text("not met", style="bold red"),
            )
        parts.append(kms)
    stopped = stopped_text(report)
    if stopped:
        parts.append(Text(stopped, style="bold red"))
    waiting = _waiting_lines(report)
    if waiting:
        parts.append(Text("\n".join(waiting), style=_STYLES["waiting"]))
    rows = failures(report)
    if rows:
        table = Table(title=f"Failures ({len(rows)})", title_justify="left", show_lines=True)
        for column in ("host", "step", "HRESULT", "message", "remediation"):
            table.add_column(column, overflow="fold")
        for row in rows[:max_failures]:
            hresult = row["hresult"] or ""
            if row["meaning"]:
                hresult += f"\n{row['meaning']}"
            # Text() keeps remote text literal: no rich markup is interpreted from hosts' messages.
            table.add_row(
                Text(row["host"]),
                Text(row["step"] or ""),
                Text(hresult),
                Text(row["message"] or ""),
                Text(row["remediation"] or ""),
            )
        parts.append(table)
        if len(rows) > max_failures:
            parts.append(
                Text(
                    f"... and {len(rows) - max_failures} more failed hosts (see the JSON, CSV or HTML report)"
                )
            )
    return Group(*parts)


def summary_text(report: Mapping[str, Any], *, max_failures: int = MAX_FAILURES) -> str:
    """The same summary as plain text (no colours, no box drawing)."""
    summary = report["summary"]
    lines = [_title(report)]
    lines.append(
        "  ".join(
            f"{key.replace('_', ' ')}: {summary[key]}"
            for key in ("hosts", *STATUSES, NOT_STARTED, "skipped", "activated")
        )
    )
    methods = summary.get("by_method") or {}
    if methods:
        lines.append("activated by: " + ", ".join(f"{name} {count}" for name, count in methods.items()))
    for entry in summary["kms_hosts"]:
        current = "unknown" if entry["current_count"] is None else entry["current_count"]
        met = {True: "met", False: "NOT met", None: "unknown"}[entry["threshold_met"]]
        lines.append(
            f"KMS host {entry['host']}: current count {current} / required {entry['required_count']} ({met})"
        )
    stopped = stopped_text(report)
    if stopped:
        lines.append(stopped)
    lines.extend(_waiting_lines(report))
    rows = failures(report)
    if rows:
        lines.append(f"Failures ({len(rows)}):")
        for row in rows[:max_failures]:
            hresult = (
                f" {row['hresult']}" + (f" ({row['meaning']})" if row["meaning"] else "")
                if row["hresult"]
                else ""
            )
            lines.append(f"  {row['host']}: {row['step']}:{hresult} {row['message'] or ''}".rstrip())
            if row["remediation"]:
                lines.append(f"    fix: {row['remediation']}")
        if len(rows) > max_failures:
            lines.append(
                f"  ... and {len(rows) - max_failures} more failed hosts (see the JSON, CSV or HTML report)"
            )
    return "\n".join(lines)
