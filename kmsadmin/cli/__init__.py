"""kmsadmin command-line interface (typer). Thin: commands parse options and call lower layers."""

from __future__ import annotations

import os


def main() -> None:
    """Console-script entry point."""
    # typer's rich help/error formatter imports rich.markdown, rich.traceback... (~170 ms) on every
    # start; plain click help keeps `kmsadmin --help` fast. Our own tables still use rich, lazily.
    os.environ.setdefault("TYPER_USE_RICH", "0")
    from kmsadmin.cli.app import run

    run()
