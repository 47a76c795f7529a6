"""``kmsadmin dns ...`` and ``kmsadmin plan``: KMS SRV records, DNS publishing, capacity planning.

Thin commands: they parse options, load the inventory (fleet layer) and call :mod:`kmsadmin.dns` /
:mod:`kmsadmin.operations.capacity`. Heavy imports happen inside the commands. The CLI owner mounts
``dns_app`` as ``kmsadmin dns`` and registers :func:`plan_command` as ``kmsadmin plan``.

Exit codes: 0 healthy / no problem, 1 findings / a host failed / blocking plan problem, 2 bad input,
4 configuration error (inventory) before any host was contacted.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from kmsadmin.cli.inventory import NO_INVENTORY, InventoryOptions, inventory_options
from kmsadmin.cli.options import ForksOpt, HelpGroup, port_number
from kmsadmin.errors import EXIT_HOST_FAILED, EXIT_USAGE, InvalidInput, KmsAdminError
from kmsadmin.values import DEFAULT_FORKS

if TYPE_CHECKING:
    from kmsadmin.dns.check import CheckReport
    from kmsadmin.dns.fleetview import FleetView
    from kmsadmin.dns.records import Action, SrvRecord
    from kmsadmin.dns.remote import StepRun
    from kmsadmin.fleet.inventory import Inventory
    from kmsadmin.operations.capacity import CapacityPlan

dns_app = typer.Typer(
    help="KMS DNS: check and create _vlmcs._tcp SRV records, turn KMS hosts' DNS publishing on or off.",
    no_args_is_help=True,
    cls=HelpGroup,
)
record_app = typer.Typer(
    help="Add or remove one _vlmcs._tcp SRV record.", no_args_is_help=True, cls=HelpGroup
)
dns_app.add_typer(record_app, name="record")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of text.")]
ServerOpt = Annotated[
    str | None,
    typer.Option("--server", help="DNS server to ask / update: IP[:PORT] (default: the system resolver)"),
]
LimitOpt = Annotated[str | None, typer.Option("--limit", help="Ansible host pattern within the KMS hosts")]


# ------------------------------------------------------------------------------------------ helpers
def _fail(exc: KmsAdminError | str, code: int | None = None) -> NoReturn:
    from kmsadmin.cli.output import fail

    fail(exc, code)


def _view(inventory: Inventory, source: str) -> FleetView:
    from kmsadmin.dns.fleetview import build_view

    return build_view(
        ((name, inventory.vars_for(name), inventory.group_names(name)) for name in inventory.hosts),
        source=source,
    )


def _kms_hosts(inventory: Inventory, limit: str | None) -> list[tuple[str, Any]]:
    """The inventory's KMS hosts (group kms_hosts), narrowed by --limit."""
    members = list(inventory.groups.get("kms_hosts", ()))
    if not members:
        raise InvalidInput("inventory", str(inventory.path or ""), "it has no kms_hosts group")
    if limit:
        from kmsadmin.fleet.limit import limited_hosts

        chosen = limited_hosts(inventory, limit) or set()
        members = [m for m in members if m in chosen]
        if not members:
            raise InvalidInput("--limit", limit, "matches no KMS host")
    return [(name, inventory.vars_for(name)) for name in members]


def _print_runs(runs: list[StepRun], json_out: bool, what: str) -> int:
    from kmsadmin.cli.output import emit_json

    if json_out:
        emit_json({"step": what, "hosts": [r.to_dict() for r in runs]})
    else:
        for run in runs:
            if run.ok:
                state = "changed" if run.changed else "ok"
                typer.echo(f"{run.host}: {state}  before={run.before} after={run.after}")
            else:
                error = run.error or {}
                line = f"{run.host}: FAILED at {error.get('step')}: {error.get('message')}"
                if error.get("hresult"):
                    line += f" (HRESULT {error['hresult']}{': ' + error['meaning'] if error.get('meaning') else ''})"
                if error.get("remediation"):
                    line += f" -- fix: {error['remediation']}"
                typer.echo(line, err=True)
    return 0 if all(r.ok for r in runs) else EXIT_HOST_FAILED


# -------------------------------------------------------------------------------------------- check
@dns_app.command("check")
@inventory_options
def check(
    domain: Annotated[
        str, typer.Argument(help="the DNS domain clients look KMS hosts up in, e.g. contoso.com")
    ],
    server: ServerOpt = None,
    inventory: InventoryOptions = NO_INVENTORY,
    json_out: JsonOpt = False,
) -> None:
    """Check _vlmcs._tcp.DOMAIN: missing, stale, duplicate, wrong-port and wrong-zone records (exit 1 on findings)."""
    from kmsadmin import validate
    from kmsadmin.dns.check import run_check
    from kmsadmin.dns.resolver import DnsClient, parse_server

    try:
        name = validate.domain(domain)
        client = DnsClient(parse_server(server) if server else None)
        view = (
            _view(inventory.load(), ", ".join(map(str, inventory.inventory or [])))
            if inventory.given()
            else None
        )
    except KmsAdminError as exc:
        _fail(exc)
    report = run_check(name, client, view)
    _print_check(report, json_out)
    raise typer.Exit(0 if report.healthy else EXIT_HOST_FAILED)


def _print_check(report: CheckReport, json_out: bool) -> None:
    from kmsadmin.cli.output import emit_json
    from kmsadmin.dns.check import client_error_meaning

    if json_out:
        emit_json(report.to_dict())
        return
    typer.echo(f"DNS server: {report.server}")
    for status in report.domains:
        via = " (TCP)" if status.answer.tcp else ""
        clients = f", {status.clients} inventory client(s)" if status.clients else ""
        typer.echo(f"_vlmcs._tcp.{status.domain}: {status.answer.outcome}{via}{clients}")
        for target in status.targets:
            record = target.record
            port = "open" if target.answers else "closed"
            addresses = ", ".join(target.addresses) or "-"
            known = f" [{target.inventory_host}]" if target.inventory_host else ""
            typer.echo(
                f"  SRV {record.priority} {record.weight} {record.port} {record.target}{known} -> {addresses} port {port}"
            )
    if report.healthy:
        typer.echo("healthy: no findings")
        return
    for finding in report.findings:
        typer.echo(f"{finding.severity.upper()} {finding.kind} ({finding.domain}): {finding.message}")
        typer.echo(f"  client error: {finding.client_error} {client_error_meaning(finding.client_error)}")
        typer.echo(f"  fix: {finding.remediation}")


# ------------------------------------------------------------------------------------------ records
def _record_command(
    action: Action,
    domain: str,
    target: str,
    port: int,
    priority: int,
    weight: int,
    ttl: int,
    zone: str | None,
    via: str | None,
    fmt: str | None,
    server: str | None,
    tsig_key_file: Path | None,
    dns_server: str | None,
    kms_hosts_group: str | None,
    inventory: InventoryOptions,
    json_out: bool,
) -> None:
    from kmsadmin.dns.records import SrvRecord, bind_lines, nsupdate_script, relative_name
    from kmsadmin.dns.resolver import parse_server

    try:
        record = SrvRecord.build(domain, target, port=port, priority=priority, weight=weight, ttl_seconds=ttl)
        if zone is not None:
            relative_name(record.owner, zone)
        if (via is None) == (fmt is None):
            raise InvalidInput(
                "output", via or fmt or "", "choose one: --via rfc2136|winrm or --format bind|nsupdate"
            )
        if fmt is not None and fmt not in ("bind", "nsupdate"):
            raise InvalidInput("--format", fmt, "must be bind or nsupdate")
        if via is not None and via not in ("rfc2136", "winrm"):
            raise InvalidInput("--via", via, "must be rfc2136 or winrm")
        if kms_hosts_group and via != "winrm":
            raise InvalidInput(
                "--kms-hosts-group", kms_hosts_group, "record ACLs are set with --via winrm only"
            )
        if fmt == "bind":
            typer.echo(bind_lines(record, action), nl=False)
            return
        if fmt == "nsupdate":
            where = parse_server(server) if server else None
            typer.echo(
                nsupdate_script(record, action, zone=zone, server=where, key_file=_key_path(tsig_key_file)),
                nl=False,
            )
            return
        if via == "rfc2136":
            _via_rfc2136(record, action, zone, server, tsig_key_file, json_out)
            return
        run = _via_winrm(record, action, zone, dns_server, kms_hosts_group, inventory)
    except KmsAdminError as exc:
        _fail(exc)
    raise typer.Exit(_print_runs([run], json_out, "dns-srv-record"))


def _key_path(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def _via_rfc2136(
    record: SrvRecord,
    action: Action,
    zone: str | None,
    server: str | None,
    key_file: Path | None,
    json_out: bool,
) -> None:
    from kmsadmin.cli.output import emit_json
    from kmsadmin.dns.resolver import parse_server
    from kmsadmin.dns.tsig import load_key_file
    from kmsadmin.dns.update import apply

    if not server:
        raise InvalidInput("--server", "", "--via rfc2136 needs the DNS server to update: --server IP[:PORT]")
    key = load_key_file(key_file) if key_file else None
    result = apply(record, action, parse_server(server), zone=zone, key=key)
    if json_out:
        emit_json(result.to_dict())
    else:
        state = "changed" if result.changed else "unchanged (already so)"
        signed = f", signed with {result.key}" if result.key else ""
        typer.echo(f"{action} {record.zone_line()} on {result.server} (zone {result.zone}{signed}): {state}")


def _via_winrm(
    record: SrvRecord,
    action: Action,
    zone: str | None,
    dns_server: str | None,
    kms_hosts_group: str | None,
    inventory: InventoryOptions,
) -> StepRun:
    from kmsadmin import validate
    from kmsadmin.dns.remote import run_step, srv_record_ref, winrm_session

    if not dns_server:
        raise InvalidInput("--dns-server", "", "--via winrm needs the Windows DNS server to run on")
    name = validate.hostname(dns_server)
    ref = srv_record_ref(record, action, zone=zone, kms_hosts_group=kms_hosts_group)
    hostvars: dict[str, Any] = {}
    if inventory.given():
        loaded = inventory.load()
        if name in loaded.hosts:
            hostvars = dict(loaded.vars_for(name))
    return run_step(name, hostvars, ref, winrm_session())


def _record_options(action: Action) -> Any:
    @inventory_options
    def command(
        domain: Annotated[
            str, typer.Argument(help="the DNS domain whose clients use the record, e.g. contoso.com")
        ],
        target: Annotated[str, typer.Option("--target", help="the KMS host's FQDN")],
        port: Annotated[
            int, typer.Option("--port", help="the KMS host's listening port", callback=port_number)
        ] = 1688,
        priority: Annotated[
            int, typer.Option("--priority", help="SRV priority: clients try lower values first")
        ] = 0,
        weight: Annotated[
            int, typer.Option("--weight", help="SRV weight: share among records of equal priority")
        ] = 0,
        ttl: Annotated[int, typer.Option("--ttl", help="seconds")] = 3600,
        zone: Annotated[
            str | None, typer.Option("--zone", help="the zone holding DOMAIN (default: DOMAIN)")
        ] = None,
        via: Annotated[
            str | None, typer.Option("--via", help="rfc2136 (dynamic update) or winrm (Windows DNS)")
        ] = None,
        fmt: Annotated[
            str | None, typer.Option("--format", help="bind (zone-file lines) or nsupdate (script)")
        ] = None,
        server: ServerOpt = None,
        tsig_key_file: Annotated[
            Path | None,
            typer.Option(
                "--tsig-key-file", help='BIND key file: key "NAME" { algorithm ...; secret "..."; };'
            ),
        ] = None,
        dns_server: Annotated[
            str | None,
            typer.Option("--dns-server", help="Windows DNS server to run the step on (--via winrm)"),
        ] = None,
        kms_hosts_group: Annotated[
            str | None,
            typer.Option(
                "--kms-hosts-group", help="grant this security group Full Control on the record (--via winrm)"
            ),
        ] = None,
        inventory: InventoryOptions = NO_INVENTORY,
        json_out: JsonOpt = False,
    ) -> None:
        _record_command(
            action,
            domain,
            target,
            port,
            priority,
            weight,
            ttl,
            zone,
            via,
            fmt,
            server,
            tsig_key_file,
            dns_server,
            kms_hosts_group,
            inventory,
            json_out,
        )

    command.__doc__ = (
        "Add the _vlmcs._tcp SRV record DOMAIN -> --target:--port (idempotent)."
        if action == "add"
        else "Remove the _vlmcs._tcp SRV record DOMAIN -> --target:--port (idempotent)."
    )
    return command


record_app.command("add")(_record_options("add"))
record_app.command("remove")(_record_options("remove"))


# ---------------------------------------------------------------------------------------- publishing
@dns_app.command("publishing")
@inventory_options
def publishing(
    state: Annotated[str, typer.Argument(help="on or off")],
    inventory: InventoryOptions = NO_INVENTORY,
    limit: LimitOpt = None,
    forks: ForksOpt = DEFAULT_FORKS,
    json_out: JsonOpt = False,
) -> None:
    """Turn DNS publishing on or off on every KMS host (slmgr /sdns | /cdns; the kms-host-settings step)."""
    from kmsadmin.dns.remote import publishing_ref, run_on_hosts, winrm_session

    try:
        if state not in ("on", "off"):
            raise InvalidInput("state", state, "must be on or off")
        hosts = _kms_hosts(inventory.load(), limit)
    except KmsAdminError as exc:
        _fail(exc)
    runs = run_on_hosts(hosts, publishing_ref(state == "on"), winrm_session(), forks=forks)
    raise typer.Exit(_print_runs(runs, json_out, "kms-host-settings"))


@dns_app.command("publish-list")
@inventory_options
def publish_list(
    inventory: InventoryOptions = NO_INVENTORY,
    domains: Annotated[
        str | None,
        typer.Option("--domains", help="DNS domains to publish in, e.g. contoso.com,branch.contoso.com"),
    ] = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="remove DnsDomainPublishList (publish in the own domain only)")
    ] = False,
    limit: LimitOpt = None,
    forks: ForksOpt = DEFAULT_FORKS,
    json_out: JsonOpt = False,
) -> None:
    """Set DnsDomainPublishList on every KMS host (then sppsvc restarts): publish in several DNS domains."""
    from kmsadmin.dns.remote import publish_list_ref, run_on_hosts, split_domains, winrm_session

    try:
        ref = publish_list_ref(split_domains(domains or ""), clear=clear)
        hosts = _kms_hosts(inventory.load(), limit)
    except KmsAdminError as exc:
        _fail(exc)
    runs = run_on_hosts(hosts, ref, winrm_session(), forks=forks)
    raise typer.Exit(_print_runs(runs, json_out, "kms-dns-publish-list"))


# ---------------------------------------------------------------------------------------------- plan
@inventory_options
def plan_command(
    inventory: InventoryOptions = NO_INVENTORY,
    gather: Annotated[
        bool, typer.Option("--gather", help="read each host's facts over WinRM instead of inventory vars")
    ] = False,
    forks: ForksOpt = DEFAULT_FORKS,
    json_out: JsonOpt = False,
) -> None:
    """Capacity plan: host key group, host OS fit and updates, thresholds, host count, key budget (exit 1 if blocked)."""
    from kmsadmin.operations.capacity import machine_from_vars, plan_capacity

    try:
        loaded = inventory.load()
        if gather:
            machines = _gather(loaded, forks)
        else:
            machines = [machine_from_vars(n, loaded.vars_for(n), loaded.group_names(n)) for n in loaded.hosts]
    except KmsAdminError as exc:
        _fail(exc)
    plan = plan_capacity(machines)
    _print_plan(plan, json_out)
    raise typer.Exit(EXIT_HOST_FAILED if plan.blocked else 0)


def _gather(loaded: Inventory, forks: int) -> list[Any]:
    from concurrent.futures import ThreadPoolExecutor

    from kmsadmin.dns.remote import winrm_session
    from kmsadmin.facts import FACTS, parse_facts
    from kmsadmin.operations.capacity import machine_from_facts, machine_from_vars
    from kmsadmin.render import render

    sessions = winrm_session()
    script = render(FACTS)

    def one(name: str) -> Any:
        hostvars = loaded.vars_for(name)
        fallback = machine_from_vars(name, hostvars, loaded.group_names(name))
        session = sessions(name, hostvars)
        try:
            facts = parse_facts(session.run(script))
        finally:
            session.close()
        return machine_from_facts(name, fallback.role, facts)

    names = list(loaded.hosts)
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(names) or 1))) as pool:
        return list(pool.map(one, names))


def _print_plan(plan: CapacityPlan, json_out: bool) -> None:
    from kmsadmin.cli.output import emit_json

    if json_out:
        emit_json(plan.to_dict())
        return
    counts = plan.clients
    typer.echo(
        f"clients: {counts.get('total', 0)} ({counts.get('windows_client_os', 0)} Windows client OS, "
        f"{counts.get('windows_server', 0)} Windows Server, {counts.get('office', 0)} with Office, "
        f"{counts.get('unidentified', 0)} unidentified); KMS hosts: {len(plan.kms_hosts)}"
    )
    if plan.windows_group:
        typer.echo(f"Windows host key group needed: {plan.windows_group.name}")
    if plan.office_group:
        typer.echo(f"Office host key needed: {plan.office_group.name}")
    for fit in plan.fits:
        mark = "ok" if fit.ok else "CANNOT"
        needs = (
            f"; needs {', '.join(fit.missing_updates)} (or a later cumulative update)"
            if fit.missing_updates
            else ""
        )
        typer.echo(f"  {fit.name} ({fit.os}): {mark} carry {fit.group}{needs}")
    for row in plan.thresholds:
        state = "reachable" if row["reachable"] else "UNREACHABLE"
        typer.echo(
            f"  threshold {row['kind']} (all clients on one KMS host): count {row['count_reachable']} of "
            f"{row['needed']} needed: {state}"
        )
    for row in plan.per_host:
        state = {True: "reachable", False: "UNREACHABLE", None: "no clients pinned"}[row["reachable"]]
        typer.echo(
            f"  {row['host']}: {row['clients']} client(s) pinned by the rollout, count "
            f"{row['clients']} of {row['needed']} needed: {state}"
        )
    if plan.activation:
        typer.echo(f"activation: {plan.activation['recommended']}")
    budget = plan.budget
    typer.echo(
        f"recommended KMS hosts: {plan.recommended_hosts}; host key budget: {budget.get('kms_hosts')} of "
        f"{budget.get('hosts_per_host_key')} hosts, {budget.get('activations_per_host_key')} activations per key"
    )
    for item in plan.unidentified:
        typer.echo(f"  unidentified {item['host']}: {item['why']}")
    for warning in plan.warnings:
        typer.echo(f"WARNING {warning.check}: {warning.message} -- fix: {warning.remediation}")
    for problem in plan.problems:
        typer.echo(f"PROBLEM {problem.check}: {problem.message} -- fix: {problem.remediation}")


__all__ = ["EXIT_USAGE", "dns_app", "plan_command"]
