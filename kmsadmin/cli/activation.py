"""``kmsadmin status`` activation health: ``--only`` filters, ``--fail-on`` exit codes, ``--metrics``."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kmsadmin.errors import EXIT_HOST_FAILED, EXIT_OK
from kmsadmin.fleet.activation import FleetHealth, analyse
from kmsadmin.fleet.runner import HostReport
from kmsadmin.operations import health


@dataclass(frozen=True, slots=True)
class HealthOptions:
    """What ``status`` was asked to select, fail on and write."""

    only: tuple[tuple[str, int], ...] = ()
    fail_on: tuple[tuple[str, int], ...] = ()
    metrics: Path | None = None

    @classmethod
    def parse(cls, only: str | None, fail_on: str | None, metrics: Path | None) -> HealthOptions:
        """Validate ``--only`` and ``--fail-on`` (exit 2 on a bad value, before any host is contacted)."""
        return cls(tuple(health.parse_states(only)), tuple(health.parse_states(fail_on)), metrics)

    @property
    def expiring_days(self) -> int:
        """The ``expiring:DAYS`` window the findings use (the widest one asked for)."""
        days = [d for name, d in (*self.only, *self.fail_on) if name == "expiring"]
        return max(days) if days else health.DEFAULT_EXPIRING_DAYS


def assess(
    reports: Sequence[HostReport],
    options: HealthOptions,
    *,
    hostvars: Mapping[str, Mapping[str, Any]] | None = None,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> FleetHealth:
    """Views and findings; writes ``--metrics``."""
    result = analyse(reports, hostvars=hostvars, expiring_days=options.expiring_days, extra=extra)
    if options.metrics is not None:
        from kmsadmin.report.metrics import write_metrics

        write_metrics(result.views, result.findings, options.metrics)
    return result


def selected(result: FleetHealth, options: HealthOptions) -> list[health.HostView]:
    """The views ``--only`` selects (all without it)."""
    names = set(result.matching(options.only))
    return [v for v in result.views if v.host in names]


def exit_code(result: FleetHealth, options: HealthOptions) -> int:
    """1 when a host is in a ``--fail-on`` state, else 0."""
    if options.fail_on and any(health.matches(v, options.fail_on) for v in result.views):
        return EXIT_HOST_FAILED
    return EXIT_OK


def print_activation(result: FleetHealth, options: HealthOptions) -> None:
    """The per-host listing and the findings, rich on a terminal, plain text otherwise."""
    from kmsadmin.report.activation import activation_text, render_activation

    views = selected(result, options)
    if sys.stdout.isatty():
        from rich.console import Console

        Console().print(render_activation(views, result.findings))
    else:
        sys.stdout.write(activation_text(views, result.findings) + "\n")
