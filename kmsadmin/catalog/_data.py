"""Loading of the catalog's package data (TOML files under ``kmsadmin/catalog/data``).

Files are read with the standard library's :mod:`tomllib` on first use and cached, so importing
:mod:`kmsadmin.catalog` reads nothing.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from typing import Any

from kmsadmin.errors import CatalogError

DATA_PACKAGE = "kmsadmin.catalog.data"


@cache
def load(name: str) -> dict[str, Any]:
    """Parse ``data/<name>.toml`` once; raise :class:`CatalogError` if it is missing or broken."""
    try:
        raw = resources.files(DATA_PACKAGE).joinpath(f"{name}.toml").read_bytes()
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise CatalogError(f"catalog data file {name}.toml is missing: {exc}") from exc
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"catalog data file {name}.toml is not valid TOML: {exc}") from exc


def source_text(sources: dict[str, Any], ids: list[str] | str) -> str:
    """Render source ids as ``repo:path@commit (date)``, several joined by ``; ``."""
    names = [ids] if isinstance(ids, str) else ids
    parts = []
    for ident in names:
        entry = sources.get(ident)
        if entry is None:
            raise CatalogError(f"catalog data names an unknown source {ident!r}")
        text = f"{entry['repo']}:{entry['path']}"
        if entry.get("commit"):
            text += f"@{str(entry['commit'])[:8]}"
        if entry.get("date"):
            text += f" ({entry['date']})"
        parts.append(f"[{ident}] {text}")
    return "; ".join(parts)


def source_date(sources: dict[str, Any], ids: list[str] | str) -> str:
    """The date of the first (preferred) source."""
    first = ids if isinstance(ids, str) else ids[0]
    return str(sources.get(first, {}).get("date", ""))
