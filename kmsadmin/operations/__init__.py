"""Pure planners: ``(facts, args) -> Plan``. No I/O, no templates, no transports.

A plan lists the steps that would change the host (each with the reason), notes, and blocking
problems found by the preflight. With ``facts=None`` (``--dry-run``: no connection) a planner lists
every step the operation may run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kmsadmin.values import ScriptRef


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """One step to run, and why."""

    ref: ScriptRef
    reason: str

    @property
    def step(self) -> str:
        """The step (template) name."""
        return self.ref.step


@dataclass(frozen=True, slots=True)
class Problem:
    """A blocking preflight finding: nothing is changed on the host while one exists."""

    check: str
    message: str
    remediation: str
    hresult: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "check": self.check,
            "message": self.message,
            "remediation": self.remediation,
            "hresult": self.hresult,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """What an operation would do on one host."""

    host: str
    operation: str
    steps: tuple[PlannedStep, ...] = ()
    notes: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()
    #: set when the plan stops early on purpose (e.g. phone activation waits for a Confirmation ID)
    stop_after: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def blocked(self) -> bool:
        """A failed preflight: nothing may be changed."""
        return bool(self.problems)

    @property
    def changes(self) -> bool:
        """Whether the plan would change anything."""
        return bool(self.steps) and not self.blocked

    def to_dict(self) -> dict[str, Any]:
        """JSON form (no secrets: secret parameters are listed by name only)."""
        return {
            "host": self.host,
            "operation": self.operation,
            "steps": [
                {
                    "step": s.step,
                    "reason": s.reason,
                    "params": dict(s.ref.params),
                    "secrets": sorted(s.ref.secrets),
                }
                for s in self.steps
            ],
            "notes": list(self.notes),
            "problems": [p.to_dict() for p in self.problems],
            "details": self.details,
        }
