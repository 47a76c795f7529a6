"""Activation health of the hosts a ``status`` run read: per-host views and fleet findings.

Wires :mod:`kmsadmin.operations.health` (pure) to the runner's host reports: each read host's facts
become a :class:`~kmsadmin.operations.health.HostView`, the fleet findings are computed over all of
them, and each report's ``state["activation"]`` is refreshed with its findings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kmsadmin.fleet.runner import HostReport
from kmsadmin.operations import health

#: host variables that name a host the way clients may be pinned to it
NAME_VARS = ("kmsadmin_fqdn", "ansible_host")


@dataclass(slots=True)
class FleetHealth:
    """Every host's view and the fleet findings."""

    views: list[health.HostView] = field(default_factory=list)
    findings: list[health.Finding] = field(default_factory=list)

    def view(self, host: str) -> health.HostView | None:
        """One host's view."""
        return next((v for v in self.views if v.host == host), None)

    def matching(self, wanted: Sequence[tuple[str, int]]) -> list[str]:
        """Hosts in any of the wanted states (all hosts when nothing is wanted)."""
        return [v.host for v in self.views if not wanted or health.matches(v, wanted)]

    def to_dict(self) -> dict[str, Any]:
        """JSON form of the findings."""
        return {
            "findings": [f.to_dict() for f in self.findings],
            "by_kind": health.summarize_findings(self.findings),
        }


def analyse(
    reports: Sequence[HostReport],
    *,
    hostvars: Mapping[str, Mapping[str, Any]] | None = None,
    expiring_days: int = health.DEFAULT_EXPIRING_DAYS,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> FleetHealth:
    """Views and findings for the hosts of one status run; updates each report's ``activation``.

    ``extra`` adds per-host data read by other steps (``events``: the KMS host's event log summary,
    ``reach``: the client's own view of its KMS host).
    """
    hostvars = hostvars or {}
    extra = extra or {}
    result = FleetHealth()
    for report in reports:
        host_vars = hostvars.get(report.host, {})
        role = host_vars.get("kmsadmin_role")
        if report.facts is None:
            result.views.append(health.failed_view(report.host, report.error, str(role) if role else None))
            continue
        names = [str(host_vars[k]) for k in NAME_VARS if host_vars.get(k)]
        view = health.host_view(
            report.host,
            report.facts,
            read_at=report.read_at or datetime.now(UTC),
            role=str(role) if role else None,
            names=names,
        )
        more = extra.get(report.host, {})
        view.events = more.get("events") or report.state.get("kms_events")
        view.reach = more.get("reach") or report.state.get("kms_reach")
        result.views.append(view)
    result.findings = health.fleet_findings(result.views, expiring_days=expiring_days)
    for report in reports:
        found = result.view(report.host)
        if found is not None and found.read:
            report.state["activation"] = found.to_dict()
    return result
