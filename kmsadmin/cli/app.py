"""The typer application: command tree and thin command bodies.

Imports of anything heavier than typer happen inside the commands, so ``kmsadmin --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from kmsadmin.cli.inventory import NO_INVENTORY, InventoryOptions, inventory_options
from kmsadmin.cli.options import Connection, ForksOpt, HelpGroup, connection_options, port_number
from kmsadmin.errors import EXIT_HOST_FAILED, EXIT_INTERRUPTED, EXIT_PENDING, InvalidInput, KmsAdminError
from kmsadmin.values import DEFAULT_FORKS

app = typer.Typer(
    name="kmsadmin",
    help="Set up Microsoft KMS hosts and move Windows/Office fleets onto them over WinRM.",
    no_args_is_help=True,
    cls=HelpGroup,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(
    help="KMS client setup keys (GVLKs) from Microsoft's official tables.",
    no_args_is_help=True,
    cls=HelpGroup,
)
app.add_typer(keys_app, name="keys")

_NO_CONNECTION = Connection()  # filled in by @connection_options

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"kmsadmin {version('kmsadmin')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print kmsadmin's version and exit."
        ),
    ] = False,
) -> None:
    """Set up Microsoft KMS hosts and move Windows/Office fleets onto them over WinRM."""


def _mount_subcommands() -> None:
    """Mount ``kmsadmin lab``, ``dns``, ``plan`` and ``export`` (their modules import lazily inside commands)."""
    from kmsadmin.cli.adba import adba_app
    from kmsadmin.cli.dns import dns_app, plan_command
    from kmsadmin.cli.lab import lab_app

    app.add_typer(adba_app, name="adba")
    app.add_typer(lab_app, name="lab", help="A simulated Windows fleet speaking real WinRM on loopback.")
    app.add_typer(dns_app, name="dns", help="KMS SRV records (_vlmcs._tcp): check, create, publishing.")
    app.command("plan")(plan_command)
    try:
        from kmsadmin.cli.export import export_app
    except ImportError:
        return
    app.add_typer(export_app, name="export", help="Export a rollout as an Ansible project.")


# --------------------------------------------------------------------------------------------- keys
@keys_app.command("list")
def keys_list(
    family: Annotated[str | None, typer.Option(help="windows or office")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List every KMS client setup key (GVLK)."""
    from kmsadmin import catalog
    from kmsadmin.cli.output import emit_json, fail, table

    if family not in (None, "windows", "office"):
        fail(InvalidInput("family", family or "", "must be windows or office"))
    entries = catalog.client_keys(family)
    if json_out:
        emit_json([e.to_dict() for e in entries])
        return
    table(
        f"{len(entries)} KMS client setup keys",
        ["product", "edition", "GVLK", "name"],
        ((e.product, e.edition, e.gvlk, e.name) for e in entries),
    )


@keys_app.command("show")
def keys_show(
    name: Annotated[str, typer.Argument(help="catalog name or product + edition")], json_out: JsonOpt = False
) -> None:
    """Show one catalog entry with its identification data and source."""
    from kmsadmin import catalog
    from kmsadmin.cli.output import emit_json, fail, table

    try:
        entry = catalog.find_client_key(name)
    except KmsAdminError as exc:
        fail(exc)
    data = entry.to_dict()
    if json_out:
        emit_json(data)
        return
    table(
        entry.name,
        ["field", "value"],
        ((k, v if not isinstance(v, list | tuple) else ", ".join(map(str, v))) for k, v in data.items()),
    )


@keys_app.command("check")
def keys_check(key: Annotated[str, typer.Argument(help="a product key")], json_out: JsonOpt = False) -> None:
    """Is KEY a KMS client setup key? Exit 0 if it is, 1 if well-formed but not a GVLK, 2 if malformed."""
    from kmsadmin import catalog
    from kmsadmin.cli.output import emit_json, fail

    try:
        check = catalog.check_key(key)
    except InvalidInput as exc:
        fail(exc)
    if json_out:
        emit_json(check.to_dict())
    elif check.is_gvlk:
        typer.echo(f"{check.key}: GVLK for {check.product} {check.edition}")
    else:
        typer.echo(f"{check.key}: {check.note}")
    raise typer.Exit(0 if check.is_gvlk else EXIT_HOST_FAILED)


# ------------------------------------------------------------------------------------------- compat
@app.command()
def compat(
    host_os: Annotated[
        str | None, typer.Option("--host-os", help='KMS host OS, e.g. "Windows Server 2019"')
    ] = None,
    csvlk: Annotated[str | None, typer.Option(help='host key group, e.g. "Windows Server 2025"')] = None,
    client: Annotated[
        str | None, typer.Option(help="client edition (catalog name or product + edition)")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Which KMS host key groups an OS can carry, what they activate, and which updates the host needs."""
    from kmsadmin import catalog
    from kmsadmin.cli.output import emit_json, fail, table

    try:
        answer = catalog.compat(host_os=host_os, csvlk=csvlk, client=client)
    except KmsAdminError as exc:
        fail(exc)
    data = answer.to_dict()
    if json_out:
        emit_json(data)
        return
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        shown = value
        if isinstance(value, list):
            shown = "\n".join(
                v if isinstance(v, str) else ", ".join(f"{a}: {b}" for a, b in v.items()) for v in value
            )
        rows.append((key, shown))
    table("KMS host key compatibility", ["", ""], rows)


# ------------------------------------------------------------------------- connection and run options
def _read_secret_file(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InvalidInput(what, str(path), f"cannot read: {exc.strerror}") from None


def _host_key(host_key_file: Path | None, required: bool) -> Any:
    """The host key from a file, KMSADMIN_HOST_KEY, or a prompt: never from argv."""
    from kmsadmin import validate
    from kmsadmin.values import Secret

    raw = None
    if host_key_file is not None:
        raw = _read_secret_file(host_key_file, "host key file")
    elif os.environ.get("KMSADMIN_HOST_KEY"):
        raw = os.environ["KMSADMIN_HOST_KEY"]
    elif required and sys.stdin.isatty():
        raw = typer.prompt("KMS host key (CSVLK)", hide_input=True)
    return Secret(validate.product_key(raw)) if raw else None


def _method(method: str | None, mak_file: Path | None) -> Any:
    """The activation method the admin chose: --method, or --mak-file (never guessed from a key)."""
    if method not in (None, "kms", "mak"):
        raise InvalidInput("--method", method or "", "must be kms or mak")
    if mak_file is not None and method == "kms":
        raise InvalidInput("--mak-file", str(mak_file), "goes with --method mak")
    return "mak" if mak_file is not None else (method or "kms")


def _mak(mak_file: Path | None, required: bool) -> Any:
    """The MAK from a file, KMSADMIN_MAK, or a prompt (never from argv): well-formed and not a GVLK."""
    from kmsadmin import catalog, validate
    from kmsadmin.values import Secret

    raw = None
    if mak_file is not None:
        raw = _read_secret_file(mak_file, "MAK file")
    elif os.environ.get("KMSADMIN_MAK"):
        raw = os.environ["KMSADMIN_MAK"]
    elif required and sys.stdin.isatty():
        raw = typer.prompt("MAK (Multiple Activation Key)", hide_input=True)
    if not raw:
        if required:
            raise InvalidInput("MAK", "", "give --mak-file FILE or set KMSADMIN_MAK")
        return None
    key = validate.product_key(raw)
    if catalog.check_key(key).is_gvlk:
        raise InvalidInput(
            "MAK", "…" + key[-5:], "is a GVLK (KMS client setup key), not a MAK: use --method kms"
        )
    return Secret(key)


def _print_scripts(plans: list[Any], fmt: str, json_out: bool) -> None:
    """--dry-run output: the exact scripts, secrets masked."""
    from kmsadmin.cli.output import emit_json
    from kmsadmin.render import render
    from kmsadmin.values import ScriptFormat, ScriptRef

    script_fmt: ScriptFormat = "cmd" if fmt == "slmgr" else "ps1"
    documents = []
    for plan in plans:
        scripts = []
        for planned in plan.steps:
            ref = ScriptRef(planned.ref.step, planned.ref.params, planned.ref.secrets, script_fmt)
            scripts.append({"step": planned.step, "reason": planned.reason, "script": render(ref).display})
        documents.append({**plan.to_dict(), "scripts": scripts})
    if json_out:
        emit_json(documents if len(documents) > 1 else documents[0])
        return
    if script_fmt == "cmd":
        from kmsadmin.render import cmd_handoff

        for doc in documents:
            notes = doc["notes"] + [
                f"problem ({p['check']}): {p['message']} -- fix: {p['remediation']}" for p in doc["problems"]
            ]
            steps = [(s["step"], s["reason"], s["script"]) for s in doc["scripts"]]
            sys.stdout.write(cmd_handoff(doc["host"], notes, steps))
        return
    for doc in documents:
        for note in doc["notes"]:
            typer.echo(f"# note: {note}")
        for problem in doc["problems"]:
            typer.echo(
                f"# problem ({problem['check']}): {problem['message']} -- fix: {problem['remediation']}"
            )
        for script in doc["scripts"]:
            typer.echo(f"# ---- {doc['host']}: {script['step']} ({script['reason']})")
            typer.echo(script["script"].replace("\r\n", "\n"), nl=False)


FormatOpt = Annotated[
    str, typer.Option("--format", help="ps1 (PowerShell/CIM, default) or slmgr (cmd for hand-off)")
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Do not connect: print the scripts that would run.")
]
CheckOpt = Annotated[
    bool, typer.Option("--check", help="Connect read-only and print what would change (exit 3 if anything).")
]


def _validate_format(fmt: str) -> None:
    if fmt not in ("ps1", "slmgr"):
        raise InvalidInput("format", fmt, "must be ps1 or slmgr")


def _hosts_and_vars(
    hosts: list[str], inventory: InventoryOptions
) -> tuple[list[str], dict[str, dict[str, object]]]:
    """Expand inventory patterns (with -i or ANSIBLE_INVENTORY) and collect each host's vars.

    A name or pattern that matches no host is an error (exit 2) that lists close matches.
    """
    from kmsadmin import validate

    if not inventory.given():
        return [validate.hostname(h) for h in hosts], {}
    from kmsadmin.fleet.limit import select_each

    inv = inventory.load()
    names = select_each(inv, hosts or ["all"])
    return names, {n: dict(inv.vars_for(n)) for n in names}


# ------------------------------------------------------------------------------------------ setup-host
@app.command("setup-host")
@connection_options
@inventory_options
def setup_host(
    host: Annotated[str, typer.Argument(help="the KMS host to set up (name or address)")],
    host_key_file: Annotated[
        Path | None, typer.Option(help="file holding the KMS host key (CSVLK); or set KMSADMIN_HOST_KEY")
    ] = None,
    csvlk: Annotated[
        str | None,
        typer.Option(
            help='the host key\'s group, e.g. "Windows Server 2022", checked against the host OS before installing'
        ),
    ] = None,
    activation: Annotated[str, typer.Option(help="online, or phone (prints the Installation ID)")] = "online",
    confirmation_id: Annotated[str | None, typer.Option(help="Confirmation ID for phone activation")] = None,
    firewall_profiles: Annotated[str, typer.Option(help="profiles for SPPSVC-In-TCP")] = "Domain,Private",
    allow_from: Annotated[
        str | None,
        typer.Option(
            help="client subnets SPPSVC-In-TCP must accept, e.g. 10.0.0.0/8,192.168.0.0/16 "
            "(Windows ships it limited to the local subnet)"
        ),
    ] = None,
    tools: Annotated[
        bool, typer.Option("--tools/--no-tools", help="also install the Volume Activation Tools")
    ] = True,
    kms_port: Annotated[
        int | None,
        typer.Option("--kms-port", help="KMS listening port (default 1688)", callback=port_number),
    ] = None,
    dns_publishing: Annotated[
        bool | None,
        typer.Option("--dns-publishing/--no-dns-publishing", help="publish the _vlmcs._tcp SRV record"),
    ] = None,
    low_priority: Annotated[
        bool | None,
        typer.Option(
            "--low-priority/--normal-priority",
            help="run the KMS service at low CPU priority (slmgr /cpri) or normal (/spri)",
        ),
    ] = None,
    activation_interval: Annotated[
        int | None, typer.Option(help="minutes unactivated clients wait between attempts (15..43200)")
    ] = None,
    renewal_interval: Annotated[int | None, typer.Option(help="minutes between renewals (15..43200)")] = None,
    assume_updates: Annotated[
        bool, typer.Option(help="treat required host updates as installed (a later cumulative update)")
    ] = False,
    fmt: FormatOpt = "ps1",
    dry_run: DryRunOpt = False,
    check: CheckOpt = False,
    json_out: JsonOpt = False,
    inventory: InventoryOptions = NO_INVENTORY,
    connection: Connection = _NO_CONNECTION,
) -> None:
    """Make HOST a KMS host: preflight, role, firewall, host key, activation, settings, verify."""
    from kmsadmin import validate
    from kmsadmin.cli.output import fail
    from kmsadmin.operations.setup_host import SetupHostArgs, plan_setup_host

    try:
        _validate_format(fmt)
        name = host if inventory.given() else validate.hostname(host)
        if activation not in ("online", "phone"):
            raise InvalidInput("activation", activation, "must be online or phone")
        args = SetupHostArgs(
            host_key=_host_key(host_key_file, required=not dry_run),
            csvlk=_csvlk(csvlk),
            activation=activation,
            confirmation_id=validate.confirmation_id(confirmation_id) if confirmation_id else None,
            firewall_profiles=validate.firewall_profiles(firewall_profiles),
            include_tools=tools,
            listening_port=validate.port(kms_port) if kms_port is not None else None,
            dns_publishing=dns_publishing,
            low_priority=low_priority,
            activation_interval=validate.interval(activation_interval, what="activation interval")
            if activation_interval is not None
            else None,
            renewal_interval=validate.interval(renewal_interval, what="renewal interval")
            if renewal_interval is not None
            else None,
            assume_updates=assume_updates,
            allow_from=validate.remote_addresses(allow_from) if allow_from is not None else (),
        )
        if dry_run:
            _print_scripts([plan_setup_host(name, None, args)], fmt, json_out)
            return
        names, hostvars = _hosts_and_vars([name], inventory)
        if len(names) != 1:
            raise InvalidInput("host", host, f"matches {len(names)} hosts; setup-host takes one KMS host")
        group_var = hostvars.get(names[0], {}).get("kmsadmin_csvlk_group") or hostvars.get(names[0], {}).get(
            "kmsadmin_lab_host_key_group"
        )
        if args.csvlk is None and group_var:
            # the inventory names the host key's group: the preflight can check it before installing
            args = dataclasses.replace(args, csvlk=_csvlk(str(group_var)))
        explicit = connection.explicit()
    except KmsAdminError as exc:
        fail(exc)
    _run_remote(
        "setup-host", names, args, explicit=explicit, hostvars=hostvars, check=check, json_out=json_out
    )


def _csvlk(value: str | None) -> str | None:
    if value is None:
        return None
    from kmsadmin import catalog

    return str(catalog.csvlk_group(value).name)


# -------------------------------------------------------------------------------------- convert-client
@app.command("convert-client")
@connection_options
@inventory_options
def convert_client(
    hosts: Annotated[list[str], typer.Argument(help="machines to convert")],
    kms_host: Annotated[
        str | None, typer.Option("--kms-host", help="pin a KMS host: NAME[:PORT] (slmgr /skms)")
    ] = None,
    lookup_domain: Annotated[str | None, typer.Option(help="SRV lookup domain (slmgr /skms-domain)")] = None,
    auto_discover: Annotated[
        bool, typer.Option("--auto-discover", help="clear pinned host and domain (slmgr /ckms)")
    ] = False,
    key: Annotated[str, typer.Option(help="auto (from the detected edition) or a GVLK")] = "auto",
    force: Annotated[
        bool,
        typer.Option(
            help="install --key even if it is not a GVLK; pin --kms-host even if it does not resolve or answer from the client"
        ),
    ] = False,
    edition: Annotated[
        str | None, typer.Option(help="edition for --dry-run (see `kmsadmin keys list`)")
    ] = None,
    office: Annotated[bool, typer.Option("--office", help="also convert Office volume products")] = False,
    method: Annotated[
        str | None, typer.Option("--method", help="kms (default) or mak: how the machines activate")
    ] = None,
    mak_file: Annotated[
        Path | None,
        typer.Option("--mak-file", help="file holding the MAK (--method mak); or KMSADMIN_MAK / a prompt"),
    ] = None,
    activation: Annotated[
        str, typer.Option(help="MAK activation: online, or phone (prints the Installation ID)")
    ] = "online",
    confirmation_id: Annotated[
        str | None, typer.Option(help="Confirmation ID for MAK phone activation")
    ] = None,
    act_type: Annotated[
        str | None,
        typer.Option("--act-type", help="volume activation allowed: all, ad, kms or token (slmgr /act-type)"),
    ] = None,
    fmt: FormatOpt = "ps1",
    dry_run: DryRunOpt = False,
    check: CheckOpt = False,
    json_out: JsonOpt = False,
    inventory: InventoryOptions = NO_INVENTORY,
    connection: Connection = _NO_CONNECTION,
) -> None:
    """Make HOSTS KMS clients: detect the edition, install its GVLK, point at KMS, activate, verify."""
    from kmsadmin import catalog, validate
    from kmsadmin.cli.output import fail
    from kmsadmin.operations.convert_client import ConvertClientArgs, plan_convert_client

    try:
        _validate_format(fmt)
        names, hostvars = _hosts_and_vars(hosts, inventory)
        if sum(bool(x) for x in (kms_host, lookup_domain, auto_discover)) > 1:
            raise InvalidInput(
                "KMS target", "", "give only one of --kms-host, --lookup-domain, --auto-discover"
            )
        target: Any = "keep"
        kms_name, kms_port_num = None, 1688
        if kms_host:
            kms_name, kms_port_num = validate.host_port(kms_host)
            target = "host"
        elif lookup_domain:
            lookup_domain = validate.domain(lookup_domain)
            target = "domain"
        elif auto_discover:
            target = "auto"
        if key != "auto":
            checked = catalog.check_key(key)
            if not checked.is_gvlk and not force:
                raise InvalidInput(
                    "--key", "…" + checked.key[-5:], f"{checked.note}; pass --force to install it anyway"
                )
            # checked.key is masked for a key that is not in Microsoft's tables (it may be a MAK)
            key = validate.product_key(key)
        if edition is not None:
            catalog.find_client_key(edition)
        chosen = _method(method, mak_file)
        if chosen == "mak" and (target != "keep" or key != "auto" or office):
            raise InvalidInput(
                "--method",
                "mak",
                "a MAK activates with Microsoft: drop --kms-host, --lookup-domain, "
                "--auto-discover, --key and --office",
            )
        if activation not in ("online", "phone") or (activation == "phone" and chosen != "mak"):
            raise InvalidInput("--activation", activation, "online, or phone with --method mak")
        act_types = {"all": 0, "ad": 1, "kms": 2, "token": 3}
        if act_type is not None and (act_type.lower() not in act_types or chosen == "mak"):
            raise InvalidInput(
                "--act-type", act_type, "all, ad, kms or token (volume clients, not --method mak)"
            )
        if confirmation_id is not None and activation != "phone":
            raise InvalidInput("--confirmation-id", confirmation_id, "goes with --activation phone")
        args = ConvertClientArgs(
            key=key,
            force=force,
            edition=edition,
            target=target,
            kms_host=kms_name,
            kms_port=kms_port_num,
            lookup_domain=lookup_domain,
            office=office,
            method=chosen,
            mak=_mak(mak_file, required=not dry_run) if chosen == "mak" else None,
            activation=activation,
            confirmation_id=validate.confirmation_id(confirmation_id) if confirmation_id else None,
            act_type=act_types[act_type.lower()] if act_type is not None else None,
        )
        if dry_run:
            plans = [plan_convert_client(n, None, args) for n in names]
            _print_scripts(plans, fmt, json_out)
            if any(p.blocked for p in plans):
                raise typer.Exit(2)
            return
        explicit = connection.explicit()
    except KmsAdminError as exc:
        fail(exc)
    _run_remote(
        "convert-client", names, args, explicit=explicit, hostvars=hostvars, check=check, json_out=json_out
    )


def _run_remote(
    operation: str,
    hosts: list[str],
    args: Any,
    *,
    explicit: dict[str, object],
    hostvars: dict[str, dict[str, object]],
    check: bool,
    json_out: bool,
) -> None:
    """Connect to each host, plan from its facts, apply (unless --check), verify, report."""
    from kmsadmin.cli.remote import run_operation

    code = run_operation(
        operation, hosts, args, explicit=explicit, hostvars=hostvars, check=check, json_out=json_out
    )
    raise typer.Exit(code)


# ------------------------------------------------------------------------------------- status, doctor
ReportJsonOpt = Annotated[Path | None, typer.Option("--report-json", help="write the JSON report here")]
ReportHtmlOpt = Annotated[
    Path | None, typer.Option("--report-html", help="write the self-contained HTML report here")
]
ReportCsvOpt = Annotated[Path | None, typer.Option("--report-csv", help="write one CSV row per host here")]
JunitOpt = Annotated[Path | None, typer.Option("--junit", help="write a JUnit XML report here (for CI)")]


@app.command()
@connection_options
@inventory_options
def status(
    hosts: Annotated[list[str] | None, typer.Argument(help="hosts, or inventory patterns with -i")] = None,
    inventory: InventoryOptions = NO_INVENTORY,
    json_out: JsonOpt = False,
    forks: ForksOpt = DEFAULT_FORKS,
    report_json: ReportJsonOpt = None,
    report_html: ReportHtmlOpt = None,
    report_csv: ReportCsvOpt = None,
    junit: JunitOpt = None,
    only: Annotated[
        str | None,
        typer.Option(
            help="list only hosts that are: not-activated, expiring[:DAYS], waiting, failed (comma list)"
        ),
    ] = None,
    fail_on: Annotated[
        str | None,
        typer.Option(
            help="exit 1 if any host is: not-activated, expiring[:DAYS], waiting, failed (comma list)"
        ),
    ] = None,
    metrics: Annotated[
        Path | None, typer.Option(help="write OpenMetrics text here (node_exporter textfile collector)")
    ] = None,
    connection: Connection = _NO_CONNECTION,
) -> None:
    """Licensing status of hosts (read-only): license status and why not activated, days left, KMS host used.

    Fleet findings follow: duplicate Client Machine IDs, editions the KMS host cannot activate, KMS hosts
    below their threshold, clock skew, expiring activations. --fail-on sets the exit code for cron and CI.

    The hosts are read in parallel, at most --forks at once, each within its --deadline. With
    -i INVENTORY the selected hosts (default: all) are read. The same reports as a rollout can be
    written (--report-json, --report-html, --report-csv, --junit), with or without -i.
    """
    from kmsadmin.cli import remote
    from kmsadmin.cli.activation import HealthOptions
    from kmsadmin.cli.output import fail

    try:
        if not hosts and not inventory.given():
            raise InvalidInput("hosts", "", "name at least one host, or give -i INVENTORY")
        health = HealthOptions.parse(only, fail_on, metrics)
        explicit = connection.explicit()
        if inventory.given():
            from kmsadmin.cli.rollout import fleet_status

            code = fleet_status(
                inventory.load(),
                ":".join(hosts or ["all"]),
                explicit=explicit,
                forks=forks,
                json_out=json_out,
                reports={"json": report_json, "html": report_html, "csv": report_csv, "junit": junit},
                health=health,
            )
            raise typer.Exit(code)
        names, hostvars = _hosts_and_vars(list(hosts or []), NO_INVENTORY)
    except KmsAdminError as exc:
        fail(exc)
    raise typer.Exit(
        remote.status(
            names,
            explicit=explicit,
            hostvars=hostvars,
            json_out=json_out,
            health=health,
            forks=forks,
            report_paths={"json": report_json, "html": report_html, "csv": report_csv, "junit": junit},
        )
    )


# ------------------------------------------------------------------------------------------ rollout
@app.command()
@connection_options
@inventory_options
def rollout(
    playbook: Annotated[Path, typer.Argument(help="playbook (see playbooks/ for ready ones)")],
    inventory: InventoryOptions = NO_INVENTORY,
    forks: ForksOpt = DEFAULT_FORKS,
    limit: Annotated[
        str | None, typer.Option("--limit", "-l", help="Ansible host pattern to narrow the run")
    ] = None,
    check: CheckOpt = False,
    journal: Annotated[
        Path | None, typer.Option(help="append each host's result here (JSON lines, fsynced)")
    ] = None,
    resume: Annotated[bool, typer.Option(help="skip hosts the journal already has as done")] = False,
    report_json: ReportJsonOpt = None,
    report_html: ReportHtmlOpt = None,
    report_csv: ReportCsvOpt = None,
    junit: JunitOpt = None,
    no_progress: Annotated[
        bool,
        typer.Option("--no-progress", help="no progress: no bar on a terminal, no line per host when piped"),
    ] = False,
    connection: Connection = _NO_CONNECTION,
) -> None:
    """Roll a playbook out over an inventory: parallel, resumable, with reports. --check plans only (exit 3 if changes)."""
    from kmsadmin.cli.output import fail
    from kmsadmin.cli.rollout import run_rollout

    try:
        explicit = connection.explicit(with_deadline=False)
        code, _ = run_rollout(
            playbook,
            inventory,
            explicit=explicit,
            forks=forks,
            limit=limit,
            check=check,
            journal_path=journal,
            resume=resume,
            deadline=connection.deadline,
            progress=not no_progress,
            reports={"json": report_json, "html": report_html, "csv": report_csv, "junit": junit},
        )
    except KmsAdminError as exc:
        fail(exc)
    raise typer.Exit(code)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="where the reports (and the lab's state) go")] = Path(
        "kmsadmin-demo"
    ),
    clients: Annotated[int, typer.Option(help="lab clients")] = 60,
    kms_hosts: Annotated[int, typer.Option(help="lab KMS hosts")] = 2,
    keep_lab: Annotated[bool, typer.Option(help="leave the lab running afterwards")] = False,
) -> None:
    """Try kmsadmin without Windows: start a lab, roll out the site playbook, show the report, stop the lab."""
    from kmsadmin.cli.output import fail
    from kmsadmin.cli.rollout import demo as run_demo

    try:
        code = run_demo(out, clients, kms_hosts, keep_lab)
    except KmsAdminError as exc:
        fail(exc)
    raise typer.Exit(code)


@app.command()
@connection_options
@inventory_options
def doctor(
    host: Annotated[str, typer.Argument(help="the host to diagnose")],
    inventory: InventoryOptions = NO_INVENTORY,
    json_out: JsonOpt = False,
    connection: Connection = _NO_CONNECTION,
) -> None:
    """Diagnose WinRM reachability, auth and encryption, admin rights, UAC remote restrictions, clock skew."""
    from kmsadmin.cli import remote
    from kmsadmin.cli.output import fail

    try:
        names, hostvars = _hosts_and_vars([host], inventory)
        if len(names) != 1:
            raise InvalidInput("host", host, f"matches {len(names)} hosts; doctor takes one")
        explicit = connection.explicit()
    except KmsAdminError as exc:
        fail(exc)
    raise typer.Exit(
        remote.doctor(names[0], explicit=explicit, hostvars=hostvars.get(names[0]), json_out=json_out)
    )


def run() -> None:
    """Run the application, mapping Ctrl-C to exit code 130."""
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("kmsadmin: interrupted\n")
        sys.exit(EXIT_INTERRUPTED)


_mount_subcommands()

__all__ = ["EXIT_PENDING", "app", "run"]
