"""``kmsadmin adba activate|list|delete``: Active Directory-based activation of a forest.

Each command runs on one domain member of the forest (as slmgr.vbs /ad-activation-online, /ao-list
and /del-ao do), over the same connection options as the other remote commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kmsadmin.cli.inventory import NO_INVENTORY, InventoryOptions, inventory_options
from kmsadmin.cli.options import Connection, HelpGroup, connection_options
from kmsadmin.errors import InvalidInput, KmsAdminError

adba_app = typer.Typer(
    cls=HelpGroup,
    help="Active Directory-based activation: activation objects in the forest (slmgr /ad-activation-*, /ao-list, /del-ao).",
    no_args_is_help=True,
)

_NO_CONNECTION = Connection()  # filled in by @connection_options
HostArg = Annotated[str, typer.Argument(help="a domain member of the forest (name or address)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of text.")]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Do not connect: print the script that would run.")
]


def _run(
    host: str,
    inventory: InventoryOptions,
    args: Any,
    connection: Connection,
    json_out: bool,
    dry_run: bool,
) -> None:
    from kmsadmin.cli.app import _hosts_and_vars, _print_scripts
    from kmsadmin.cli.output import fail
    from kmsadmin.cli.remote import run_operation
    from kmsadmin.operations.adba import plan_adba

    operation = f"adba-{args.action}"
    try:
        if dry_run:
            _print_scripts([plan_adba(host, None, args)], "ps1", json_out)
            return
        names, hostvars = _hosts_and_vars([host], inventory)
        if len(names) != 1:
            raise InvalidInput(
                "host", host, f"matches {len(names)} hosts; kmsadmin adba runs on one domain member"
            )
        explicit = connection.explicit()
    except KmsAdminError as exc:
        fail(exc)
    raise typer.Exit(
        run_operation(operation, names, args, explicit=explicit, hostvars=hostvars, json_out=json_out)
    )


@adba_app.command("activate")
@connection_options
@inventory_options
def activate(
    host: HostArg,
    host_key_file: Annotated[
        Path | None, typer.Option(help="file holding the KMS host key (CSVLK); or set KMSADMIN_HOST_KEY")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="the activation object's name")] = None,
    activation: Annotated[
        str, typer.Option(help="online, or phone (prints the forest Installation ID)")
    ] = "online",
    confirmation_id: Annotated[str | None, typer.Option(help="Confirmation ID for phone activation")] = None,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
    inventory: InventoryOptions = NO_INVENTORY,
    connection: Connection = _NO_CONNECTION,
) -> None:
    """Activate the forest with a KMS host key: create an activation object, online or by phone."""
    from kmsadmin import validate
    from kmsadmin.cli.app import _host_key
    from kmsadmin.cli.output import fail
    from kmsadmin.operations.adba import AdbaArgs

    try:
        if activation not in ("online", "phone"):
            raise InvalidInput("--activation", activation, "must be online or phone")
        if confirmation_id is not None and activation != "phone":
            raise InvalidInput("--confirmation-id", confirmation_id, "goes with --activation phone")
        args = AdbaArgs(
            action="activate",
            host_key=_host_key(host_key_file, required=not dry_run),
            name=validate.activation_object_name(name) if name is not None else "",
            activation=activation,
            confirmation_id=validate.confirmation_id(confirmation_id) if confirmation_id else None,
        )
        if args.host_key is None and not dry_run:
            raise InvalidInput("KMS host key", "", "give --host-key-file FILE or set KMSADMIN_HOST_KEY")
    except KmsAdminError as exc:
        fail(exc)
    _run(host, inventory, args, connection, json_out, dry_run)


@adba_app.command("list")
@connection_options
@inventory_options
def list_objects(
    host: HostArg,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
    inventory: InventoryOptions = NO_INVENTORY,
    connection: Connection = _NO_CONNECTION,
) -> None:
    """List the forest's activation objects (slmgr /ao-list)."""
    from kmsadmin.operations.adba import AdbaArgs

    _run(
        host,
        inventory,
        AdbaArgs(action="list"),
        connection,
        json_out,
        dry_run,
    )


@adba_app.command("delete")
@connection_options
@inventory_options
def delete(
    host: HostArg,
    activation_object: Annotated[str, typer.Argument(help="the object: its name, CN=name, or its DN")],
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
    inventory: InventoryOptions = NO_INVENTORY,
    connection: Connection = _NO_CONNECTION,
) -> None:
    """Delete one activation object (slmgr /del-ao); its clients fall back to KMS at their next check."""
    from kmsadmin import validate
    from kmsadmin.cli.output import fail
    from kmsadmin.operations.adba import AdbaArgs

    try:
        args = AdbaArgs(action="delete", activation_object=validate.activation_object(activation_object))
    except KmsAdminError as exc:
        fail(exc)
    _run(host, inventory, args, connection, json_out, dry_run)
