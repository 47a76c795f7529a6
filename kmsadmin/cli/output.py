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
    from kmsadmin.report.files import utf8

    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    # always valid UTF-8 on stdout, whatever a host or an inventory held
    sys.stdout.write(utf8(text).decode("utf-8") + "\n")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a table on stdout: rich on a terminal, plain columns (never wrapped) otherwise."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    if not sys.stdout.isatty():
        sys.stdout.write(plain_table(title, columns, cells))
        sys.stdout.flush()
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    tbl = Table(title=title, show_lines=False)
    for column in columns:
        tbl.add_column(column, overflow="fold")
    for row in cells:
        # Text(): values from hosts are never read as rich markup
        tbl.add_row(*(Text(cell) for cell in row))
    Console(soft_wrap=False).print(tbl)


def plain_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, one line per row whatever its length (for pipes and logs).

    A multi-line cell is joined with "; " so that every row stays one line.
    """
    lines = [["; ".join(str(c).splitlines()) for c in row] for row in rows]
    header = list(columns)
    widths = [max([len(header[i]), *(len(r[i]) for r in lines)]) for i in range(len(header))]
    out = [title] if title else []
    heading = [header, ["-" * w for w in widths]] if any(header) else []
    for row in [*heading, *lines]:
        out.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return "\n".join(out) + "\n"


def fail(error: KmsAdminError | str, code: int | None = None) -> NoReturn:
    """Print a one-line error on stderr and exit with the error's exit code."""
    message = str(error)
    exit_code = code if code is not None else (error.exit_code if isinstance(error, KmsAdminError) else 2)
    sys.stderr.write(f"kmsadmin: error: {message}\n")
    raise typer.Exit(exit_code)
