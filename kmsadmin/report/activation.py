"""Terminal listing of activation health: every selected host with its reason, then the fleet findings.

Imported lazily by ``kmsadmin status`` (rich only when printing to a terminal). Host-supplied text is
wrapped in ``Text`` so that no rich markup from a host is interpreted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kmsadmin.operations import health

COLUMNS = ("host", "license", "reason", "days left", "KMS host", "last activated")


def host_rows(views: Sequence[health.HostView]) -> list[tuple[str, ...]]:
    """One row per host: license, the reason and its meaning, days left, KMS host used, last activation."""
    rows: list[tuple[str, ...]] = []
    for view in views:
        if not view.read:
            error = view.error or {}
            rows.append(
                (view.host, "unread", f"{error.get('step', '')}: {error.get('message', '')}", "", "", "")
            )
            continue
        shown = [p for p in view.products if not p.kms_host_key] or view.products
        license_text = ", ".join(f"{p.family}: {p.license_status_name}" for p in shown) or "no product key"
        reasons = [
            f"{p.reason['hresult']} {p.reason['meaning'] or ''}".strip()
            for p in shown
            if p.reason and not p.activated
        ]
        left = view.days_left()
        last = max((p.last_activated for p in shown if p.last_activated), default=None)
        kms = view.uses or (
            f"SRV in {view.lookup_domain}"
            if view.lookup_domain
            else ("(KMS host)" if view.is_kms_host else "")
        )
        rows.append(
            (
                view.host,
                license_text,
                "; ".join(reasons),
                "" if left is None else f"{left:g}",
                kms or "auto (DNS)",
                last or "",
            )
        )
    return rows


def event_lines(views: Sequence[health.HostView]) -> list[str]:
    """Each KMS host's event-log summary: requests, clients, distinct CMIDs, failures by HRESULT."""
    lines = []
    for view in views:
        events = view.events
        if not view.is_kms_host or not events:
            continue
        if events.get("error"):
            lines.append(f"KMS host {view.host} event log: not read ({events['error']})")
            continue
        failures = ", ".join(f"{code}: {n}" for code, n in events.get("failures_by_hresult", {}).items())
        lines.append(
            f"KMS host {view.host} event log, last {events.get('days')} days: {events.get('requests')} "
            f"request(s) from {events.get('clients')} client(s) with {events.get('distinct_cmids')} distinct "
            f"CMID(s); {events.get('failed_requests')} failed"
            + (f" ({failures})" if failures else "")
            + (" [more events than read]" if events.get("truncated") else "")
        )
    return lines


def finding_lines(findings: Sequence[health.Finding]) -> list[str]:
    """Plain-text findings: kind, hosts, message, fix."""
    lines = []
    for finding in findings:
        lines.append(f"[{finding.kind}] {', '.join(finding.hosts)}: {finding.message}")
        if finding.fix:
            lines.append(f"    fix: {finding.fix}")
    return lines


def activation_text(views: Sequence[health.HostView], findings: Sequence[health.Finding]) -> str:
    """Plain text (pipes, logs)."""
    lines = ["\t".join(COLUMNS)]
    lines += ["\t".join(row) for row in host_rows(views)]
    lines += event_lines(views)
    if findings:
        lines.append(f"Findings ({len(findings)}):")
        lines += finding_lines(findings)
    return "\n".join(lines)


def render_activation(views: Sequence[health.HostView], findings: Sequence[health.Finding]) -> Any:
    """A rich renderable of the same."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Activation", title_justify="left")
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for row in host_rows(views):
        table.add_row(*(Text(cell) for cell in row))
    parts: list[Any] = [table]
    parts += [Text(line) for line in event_lines(views)]
    if findings:
        found = Table(title=f"Findings ({len(findings)})", title_justify="left", show_lines=True)
        for column in ("finding", "hosts", "what", "fix"):
            found.add_column(column, overflow="fold")
        for finding in findings:
            found.add_row(
                Text(finding.kind), Text(", ".join(finding.hosts)), Text(finding.message), Text(finding.fix)
            )
        parts.append(found)
    return Group(*parts)
