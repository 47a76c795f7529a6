"""kmsadmin command-line interface (typer). Thin: commands parse options and call lower layers."""

from __future__ import annotations


def main() -> None:
    """Console-script entry point."""
    from kmsadmin.cli.app import run

    run()
