"""JSON writer for the report document (UTF-8, stable key order, newline-terminated)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kmsadmin.report.files import utf8, write_atomic

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
    return write_atomic(path, utf8(dumps(report)))
