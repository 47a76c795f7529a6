"""Printing helpers shared by the commands: JSON for scripts, rich tables for people, one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

import typer

from kmsadmin.errors import KmsAdminError


def emit_json(value: Any) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    tbl = Table(title=title, show_lines=False)
    for column in columns:
        tbl.add_column(column, overflow="fold")
    for row in rows:
        tbl.add_row(*("" if v is None else str(v) for v in row))
    Console(soft_wrap=False).print(tbl)


def fail(error: KmsAdminError | str, code: int | None = None) -> NoReturn:
    """Print a one-line error on stderr and exit with the error's exit code."""
    message = str(error)
    exit_code = code if code is not None else (error.exit_code if isinstance(error, KmsAdminError) else 2)
    sys.stderr.write(f"kmsadmin: error: {message}\n")
    raise typer.Exit(exit_code)
