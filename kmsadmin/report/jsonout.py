"""JSON writer for the report document (UTF-8, stable key order, newline-terminated)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def dumps(report: Mapping[str, Any]) -> str:
    """The report as JSON text."""
    return json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(report: Mapping[str, Any], path: str | Path) -> Path:
    """Write the report; the file is replaced atomically so a reader never sees half a report."""
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    with partial.open("w", encoding="utf-8") as handle:
        handle.write(dumps(report))
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(target)
    return target
