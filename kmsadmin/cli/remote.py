"""Running an operation on hosts named on the command line: options → sessions → runner → output."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from kmsadmin.errors import EXIT_HOST_FAILED, EXIT_OK, EXIT_PENDING, KmsAdminError
from kmsadmin.fleet.runner import HostReport
from kmsadmin.values import DEFAULT_FORKS

if TYPE_CHECKING:
    from kmsadmin.transports.options import ConnectionOptions


def _connection_options(
    hosts: Sequence[str], explicit: Mapping[str, object], hostvars: Mapping[str, Mapping[str, object]]
) -> dict[str, ConnectionOptions]:
    """Each host's connection options (CLI > inventory vars > environment), all built and checked
    before any host is contacted (a :class:`ConfigError` names the host and the fix: exit 4)."""
    from kmsadmin.transports import build_options

    return {host: build_options(host, explicit, hostvars.get(host, {})) for host in hosts}


def run_all(
    operation: str,
    hosts: Sequence[str],
    args: Any,
    *,
    explicit: Mapping[str, object],
    hostvars: Mapping[str, Mapping[str, object]],
    check: bool,
    forks: int = DEFAULT_FORKS,
) -> list[HostReport]:
    """Check every host's options first (exit 4 before contacting anyone), then run at most ``forks``
    hosts at once, each within its own deadline (its options': ``--deadline``, else its
    ``kmsadmin_deadline`` var or ``KMSADMIN_DEADLINE``, else 300 s); one host's failure (even an
    unexpected error) is that host's report and never stops the others."""
    from kmsadmin.cli.output import fail
    from kmsadmin.fleet.rollout import run_host_safely, secret_values
    from kmsadmin.transports import open_session

    try:
        options = _connection_options(hosts, explicit, hostvars)
    except KmsAdminError as exc:
        fail(exc)

    def one(host: str) -> HostReport:
        password = options[host].password
        secrets = secret_values(hostvars.get(host, {}), args) + ((password.value,) if password else ())
        return run_host_safely(
            operation,
            host,
            args,
            lambda _: open_session(options[host]),
            secrets,
            check=check,
            deadline=options[host].deadline,
        )

    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts)))) as pool:
        return list(pool.map(one, hosts))


def run_operation(
    operation: str,
    hosts: Sequence[str],
    args: Any,
    *,
    explicit: Mapping[str, object],
    hostvars: Mapping[str, Mapping[str, object]] | None = None,
    check: bool = False,
    json_out: bool = False,
) -> int:
    """Run ``operation`` on each host; print the results; return the exit code.

    A waiting host (convert-client refused at ``activate`` until its KMS host has counted enough
    clients) exits 1 like a failed one: the machine is configured but not activated yet.
    """
    reports = run_all(operation, hosts, args, explicit=explicit, hostvars=hostvars or {}, check=check)
    print_reports(reports, json_out=json_out, check=check)
    if any(r.status in ("failed", "waiting") for r in reports):
        return EXIT_HOST_FAILED
    if check and any(r.status == "pending" for r in reports):
        return EXIT_PENDING
    return EXIT_OK


def print_reports(reports: Sequence[HostReport], *, json_out: bool, check: bool) -> None:
    """Human or JSON output of host reports."""
    from kmsadmin.cli.output import emit_json

    if json_out:
        docs = [r.to_dict() for r in reports]
        emit_json(docs if len(docs) != 1 else docs[0])
        return
    for report in reports:
        _print_one(report, check=check)


def _print_one(report: HostReport, *, check: bool) -> None:
    from rich.console import Console
    from rich.markup import escape

    from kmsadmin import catalog

    # Every value from a host or the inventory goes through escape(): "[/]" in a product name is text,
    # never rich markup. Control and escape characters were removed at the facts boundary.
    # soft wrap: long error lines stay whole, so they can be grepped and copied
    console = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    colour = {"ok": "green", "changed": "yellow", "pending": "cyan", "waiting": "magenta", "failed": "red"}[
        report.status
    ]
    console.print(
        f"[bold]{escape(report.host)}[/]: {report.operation} [{colour}]{report.status}[/] "
        f"({report.changes} change{'s' if report.changes != 1 else ''}, {report.duration:.1f}s)"
    )
    plan = report.plan or {}
    for note in plan.get("notes", []):
        console.print(f"  note: {escape(str(note))}")
    if check:
        for step in plan.get("steps", []):
            console.print(f"  would run {escape(str(step['step']))}: {escape(str(step['reason']))}")
    for step in report.steps:
        mark = "changed" if step.changed else "ok"
        if step.error:
            mark = "WAITING" if report.status == "waiting" else "FAILED"
        console.print(f"  {step.step}: {mark} ({step.duration:.2f}s)")
        objects = step.data.get("objects")
        # the host's answer is untrusted: only a list of objects is shown, field by field as text
        for obj in objects if isinstance(objects, list) else []:
            if not isinstance(obj, dict):
                continue
            line = (
                f"activation object {obj.get('name')}: key ending {obj.get('partial_key')}, "
                f"Activation ID {obj.get('sku_id')}, {obj.get('dn')}"
            )
            console.print(f"    {escape(line)}")
        if step.data.get("installation_id"):
            console.print(f"    Installation ID: {escape(str(step.data['installation_id']))}")
            console.print(
                "    Call the Microsoft activation line (run 'slui 4' on the host for the number), "
                "then re-run with --confirmation-id"
            )
    state = report.state
    if state:
        parts = [f"{state.get('edition') or '?'}", f"license: {state.get('license_status_name') or '?'}"]
        if state.get("days_left") is not None:
            parts.append(f"{state['days_left']} days left")
        elif state.get("license_status") == 1:
            parts.append("no expiry")
        if state.get("activation_method"):
            parts.append(f"activated by {method_text(state)}")
        if state.get("is_kms_host"):
            parts.append(f"KMS count {state.get('current_count')}")
        console.print("  " + escape(", ".join(parts)))
        for line in firewall_lines(state):
            console.print(f"  {escape(line)}")
    if report.error:
        e = report.error
        label = "[magenta]waiting[/]" if report.status == "waiting" else "[red]error[/]"
        err.print(
            f"  {label} {escape(str(e['host']))}: {escape(str(e['step']))}: {escape(str(e['message']))}"
        )
        if e.get("hresult"):
            repeated = e.get("meaning") and e["meaning"] in e["message"]
            err.print(
                escape(
                    f"    HRESULT {e['hresult']}"
                    + (f": {e['meaning']}" if e.get("meaning") and not repeated else "")
                )
            )
        if e.get("remediation"):
            err.print(f"    fix: {escape(str(e['remediation']))}")
        if report.status == "waiting":
            err.print(f"    not activated yet: {catalog.waiting_note()}")


def firewall_lines(state: Mapping[str, Any]) -> list[str]:
    """A KMS host's SPPSVC rules: enabled, profiles and remote-address scope (``LocalSubnet`` by default)."""
    lines = []
    for rule in state.get("firewall") or []:
        profiles = ",".join(rule.get("profiles") or []) or "no profile"
        scope = ",".join(rule.get("remote_addresses") or []) or "none"
        enabled = "enabled" if rule.get("enabled") else "disabled"
        lines.append(f"firewall {rule.get('name')}: {enabled}, profiles {profiles}, remote addresses {scope}")
    return lines


def print_status_tail(reports: Sequence[HostReport], written: Sequence[Path]) -> None:
    """After a status table or summary: each KMS host's firewall rules, then the reports written."""
    for r in reports:
        for line in firewall_lines(r.state):
            sys.stdout.write(f"{r.host}: {line}\n")
    for path in written:
        sys.stdout.write(f"report: {path}\n")


def status(
    hosts: Sequence[str],
    *,
    explicit: Mapping[str, object],
    hostvars: Mapping[str, Mapping[str, object]] | None = None,
    json_out: bool = False,
    health: Any = None,
    forks: int = DEFAULT_FORKS,
    report_paths: Mapping[str, Path | None] | None = None,
) -> int:
    """Read-only licensing status of each host (``health``: ``--only``, ``--fail-on``, ``--metrics``),
    at most ``forks`` hosts at once. ``report_paths`` (``json``, ``html``, ``csv``, ``junit``: a path
    or None) are checked before any host is contacted and written as ``status -i`` writes them."""
    from datetime import UTC, datetime

    from kmsadmin.cli.activation import HealthOptions, assess, exit_code, print_activation, selected
    from kmsadmin.cli.output import emit_json, table
    from kmsadmin.cli.rollout import check_report_paths, status_document, write_reports

    paths = dict(report_paths or {})
    check_report_paths(paths)
    options = health if health is not None else HealthOptions()
    started = datetime.now(UTC)
    reports = run_all(
        "status", hosts, None, explicit=explicit, hostvars=hostvars or {}, check=False, forks=forks
    )
    assessed = assess(reports, options, hostvars=hostvars)
    written: list[Path] = []
    if any(path is not None for path in paths.values()):
        document = status_document(
            reports, assessed, hostvars=hostvars or {}, started=started, inventory=None
        )
        written = write_reports(document, paths)
    failed = EXIT_HOST_FAILED if any(r.status == "failed" for r in reports) else EXIT_OK
    if json_out:
        chosen = {v.host for v in selected(assessed, options)}
        emit_json([r.to_dict() for r in reports if r.host in chosen])
        return failed or exit_code(assessed, options)
    if options.only or assessed.findings or any(v.read and not v.activated() for v in assessed.views):
        print_activation(assessed, options)
    else:
        table(
            None,
            [
                "host",
                "status",
                "edition",
                "license",
                "days left",
                "method",
                "KMS target",
                "KMS host count",
                "error",
            ],
            (
                (
                    r.host,
                    r.status,
                    r.state.get("edition"),
                    r.state.get("license_status_name"),
                    r.state.get("days_left"),
                    method_text(r.state),
                    r.state.get("kms_machine")
                    or r.state.get("lookup_domain")
                    or ("auto" if r.state else None),
                    r.state.get("current_count") if r.state.get("is_kms_host") else None,
                    (f"{r.error['step']}: {r.error['message']}" if r.error else None),
                )
                for r in reports
            ),
        )
        for r in reports:
            if r.error and r.error.get("remediation"):
                sys.stderr.write(f"{r.host}: fix: {r.error['remediation']}\n")
    print_status_tail(reports, written)
    return failed or exit_code(assessed, options)


def method_text(state: Mapping[str, Any]) -> str | None:
    """``ADBA (Contoso AO)``, ``KMS (kms01.contoso.com)``, ``MAK``: how the host is activated."""
    method = state.get("activation_method")
    if not method:
        return None
    by = state.get("activated_by")
    return f"{method} ({by})" if by else str(method)


def doctor(
    host: str,
    *,
    explicit: Mapping[str, object],
    hostvars: Mapping[str, object] | None = None,
    json_out: bool = False,
) -> int:
    """Connection and permission diagnosis for one host."""
    from kmsadmin.cli.output import emit_json, fail, table
    from kmsadmin.fleet.doctor import diagnose
    from kmsadmin.transports import build_options

    try:
        options = build_options(host, explicit, hostvars or {})
    except KmsAdminError as exc:
        fail(exc)
    checks = diagnose(options)
    if json_out:
        emit_json({"host": host, "checks": [c.to_dict() for c in checks]})
    else:
        table(
            f"kmsadmin doctor {host}",
            ["check", "result", "detail", "fix"],
            ((c.name, "ok" if c.ok else ("warn" if c.warning else "FAIL"), c.detail, c.fix) for c in checks),
        )
    return EXIT_OK if all(c.ok or c.warning for c in checks) else EXIT_HOST_FAILED


def exit_with(code: int) -> None:
    """Leave with ``code``."""
    raise typer.Exit(code)
