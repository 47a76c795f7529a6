"""The inventory options every command that takes ``-i`` shares, and loading the inventory from them.

``-i`` may be given several times (files, directories, scripts, ``host1,host2,``); without it,
``ANSIBLE_INVENTORY`` names the sources. Vault passwords come from ``--vault-password-file``,
``--vault-id [label@]FILE`` or ``ANSIBLE_VAULT_PASSWORD_FILE``. ``ansible_*`` variables kmsadmin does not
use are warned about once per run, one line each.

A command takes the three options by decorating it with :func:`inventory_options` and declaring one
``inventory: InventoryOptions = NO_INVENTORY`` parameter where they belong in its --help.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from kmsadmin.cli.options import option_group

if TYPE_CHECKING:
    from kmsadmin.fleet.inventory import Inventory

InventoryOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--inventory",
        "-i",
        metavar="<path>",
        help="Ansible inventory: INI, YAML, JSON, a directory or a script; repeatable; default ANSIBLE_INVENTORY",
    ),
]
VaultPasswordFileOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--vault-password-file",
        metavar="<path>",
        help="Ansible Vault password file (or script); ANSIBLE_VAULT_PASSWORD_FILE",
    ),
]
VaultIdOpt = Annotated[
    list[str] | None,
    typer.Option("--vault-id", metavar="<id>", help="Ansible Vault identity: [LABEL@]FILE or LABEL@prompt"),
]


@dataclasses.dataclass(frozen=True)
class InventoryOptions:
    """``-i/--inventory``, ``--vault-password-file`` and ``--vault-id`` as given (None = not given)."""

    inventory: list[Path] | None = None
    vault_password_file: list[Path] | None = None
    vault_id: list[str] | None = None

    def given(self) -> bool:
        """Whether an inventory was given (``-i`` or ``ANSIBLE_INVENTORY``)."""
        return given(self.inventory)

    def load(self, *, playbook_dir: Path | None = None) -> Inventory:
        """Load the inventory, with the Vault passwords given; see :func:`load`."""
        return load(self.inventory, self.vault_password_file, self.vault_id, playbook_dir=playbook_dir)


#: the placeholder default of a command's ``inventory`` parameter (filled in by :func:`inventory_options`)
NO_INVENTORY = InventoryOptions()

#: The inventory options, in --help order: (parameter name, annotation, default).
_INVENTORY_PARAMS = (
    ("inventory", InventoryOpt, None),
    ("vault_password_file", VaultPasswordFileOpt, None),
    ("vault_id", VaultIdOpt, None),
)

F = TypeVar("F", bound=Callable[..., Any])


def inventory_options(func: F) -> F:
    """Give a command ``-i/--inventory``, ``--vault-password-file`` and ``--vault-id`` where its
    ``inventory: InventoryOptions`` parameter stands; it receives them as that one value."""
    return option_group("inventory", InventoryOptions, _INVENTORY_PARAMS)(func)


_warned: set[str] = set()


def given(inventory: list[Path] | None) -> bool:
    """Whether an inventory was given (``-i`` or ``ANSIBLE_INVENTORY``)."""
    return bool(inventory) or bool(os.environ.get("ANSIBLE_INVENTORY", "").strip())


def load(
    inventory: list[Path] | Path | None,
    vault_password_file: list[Path] | None = None,
    vault_id: list[str] | None = None,
    *,
    playbook_dir: Path | None = None,
) -> Inventory:
    """Load the inventory the options name; warn once about unsupported ``ansible_*`` variables."""
    from kmsadmin.fleet.inventory import load_inventory
    from kmsadmin.fleet.vault import load_secrets

    secrets = load_secrets(vault_password_file or (), vault_id or ())
    paths = [inventory] if isinstance(inventory, Path) else inventory
    loaded = load_inventory(paths, vault=secrets, playbook_dir=playbook_dir)
    for name in loaded.unsupported:
        if name not in _warned:
            _warned.add(name)
            sys.stderr.write(
                f"kmsadmin: warning: inventory variable {name} is not supported by kmsadmin and is ignored\n"
            )
    return loaded
