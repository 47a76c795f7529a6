"""``kmsadmin export``: write a rollout for another tool to run.

The typer sub-app :data:`export_app` (mounted by the main CLI as ``kmsadmin export``) has one command,
``ansible``: the playbook's plays as an Ansible project (``kmsadmin.export.ansible``). Nothing heavier
than typer is imported until the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kmsadmin.cli.inventory import NO_INVENTORY, InventoryOptions, inventory_options
from kmsadmin.cli.options import ForksOpt, HelpGroup
from kmsadmin.values import DEFAULT_FORKS

export_app = typer.Typer(
    help="Write a rollout as a project another tool runs (Ansible).",
    no_args_is_help=True,
    cls=HelpGroup,
)


@export_app.callback()
def _group() -> None:
    """Write a rollout as a project another tool runs (Ansible)."""


@export_app.command("ansible")
@inventory_options
def ansible(
    playbook: Annotated[Path, typer.Argument(help="kmsadmin playbook (see playbooks/)")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="project directory to write (empty or an earlier export)")
    ],
    inventory: InventoryOptions = NO_INVENTORY,
    limit: Annotated[
        str | None, typer.Option("--limit", "-l", help="Ansible host pattern: export only these hosts")
    ] = None,
    gather: Annotated[
        bool,
        typer.Option(
            "--gather", help="read each host's facts over WinRM now (edition, Server Core, Office, preflight)"
        ),
    ] = False,
    forks: ForksOpt = DEFAULT_FORKS,
    json_out: Annotated[bool, typer.Option("--json", help="print a JSON summary")] = False,
) -> None:
    """Export PLAYBOOK over INVENTORY as an Ansible project in DIR (site.yml, inventory.yml, scripts).

    The host key is never written: the project reads it when it runs, from the references the playbook
    gives. Run the result with `ansible-playbook site.yml` inside DIR.
    """
    from kmsadmin.cli.output import emit_json, fail
    from kmsadmin.errors import KmsAdminError
    from kmsadmin.export.ansible import write_project
    from kmsadmin.export.plan import gatherer_for, plan_export
    from kmsadmin.fleet.playbook import load_playbook

    try:
        book = load_playbook(playbook)
        inv = inventory.load(playbook_dir=playbook.resolve().parent)
        gatherer = gatherer_for(inv, forks) if gather else None
        plan = plan_export(book, inv, limit=limit, gather=gatherer)
        summary = write_project(plan, out.resolve(), source=str(playbook))
    except KmsAdminError as exc:
        fail(exc)
    if json_out:
        emit_json(summary)
        return
    plays = ", ".join(f"{p['name']} ({p['hosts']} hosts)" for p in summary["plays"])
    typer.echo(f"wrote {summary['directory']}: {plays}; {summary['scripts']} distinct scripts")
    for note in summary["notes"]:
        typer.echo(f"note: {note}")
    typer.echo(f"run: cd {summary['directory']} && ansible-playbook site.yml")


if __name__ == "__main__":
    export_app()
