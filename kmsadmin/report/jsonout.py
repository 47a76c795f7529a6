"""JSON writer for the report document (UTF-8, stable key order, newline-terminated)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(", ", ": "))


def dumps(report: Mapping[str, Any]) -> str:
    """The report as JSON text: one line per top-level key, and one line per item of a top-level list
    (one host per line), so it stays readable and diffable; ``json.dumps(indent=...)`` runs the pure-Python
    encoder, which took longer than the rollout's own work on big fleets."""
    lines = []
    for key, value in report.items():
        if isinstance(value, list) and value:
            text = "[\n    " + ",\n    ".join(_ENCODER.encode(item) for item in value) + "\n  ]"
        else:
            text = _ENCODER.encode(value)
        lines.append(f"  {_ENCODER.encode(key)}: {text}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


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
