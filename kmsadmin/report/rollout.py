"""Adapter from the rollout engine's result to the report document.

A :class:`kmsadmin.fleet.rollout.HostResult` is one host's run of one play and may hold several
HostReports (one per operation in the play); the report shows it as one host entry: steps in order,
the last state read, the failing step's error, and the play's wall time. Only ``kmsadmin_role`` is
taken from the host's variables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kmsadmin.report.document import Report, build_report

if TYPE_CHECKING:
    from kmsadmin.fleet.rollout import HostResult, RolloutResult


def host_entry(result: HostResult) -> dict[str, Any]:
    """One HostResult as a report input host (a HostReport dict plus ``play`` and ``role``)."""
    reports = [report.to_dict() for report in result.reports]
    state: dict[str, Any] = next((r["state"] for r in reversed(reports) if r["state"]), {})
    plan = next((r["plan"] for r in reversed(reports) if r["plan"] is not None), None)
    return {
        "host": result.host,
        "operation": "+".join(dict.fromkeys(r["operation"] for r in reports)) or None,
        "status": result.status,
        "changes": result.changes,
        "steps": [step for r in reports for step in r["steps"]],
        "plan": plan,
        "state": state,
        "error": result.error,
        "duration": max(0.0, (result.finished - result.started).total_seconds()),
        "play": result.play,
        "role": result.vars.get("kmsadmin_role"),
    }


def from_rollout(result: RolloutResult) -> Report:
    """The report of a finished (or interrupted) rollout."""
    finished = result.finished or max((h.finished for h in result.hosts), default=result.started)
    return build_report(
        "rollout",
        [host_entry(host) for host in result.hosts],
        started=result.started,
        finished=finished,
        playbook=str(result.playbook),
        inventory=None if result.inventory is None else str(result.inventory),
        check=result.check,
        interrupted=result.interrupted,
        not_started=[entry.host for entry in result.not_started],
        skipped=[
            {"play": entry.play, "host": entry.host, "reason": entry.reason} for entry in result.skipped
        ],
        stopped=result.stop_detail,
    )
