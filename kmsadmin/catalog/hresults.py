"""HRESULT look-up: code -> symbol, message, meaning, remediation, source.

Data: ``data/hresults.toml`` (Microsoft "Resolving common activation error codes" [ERR],
slerror.h [SLERR] and the KMS/DNS troubleshooting pages). Codes are accepted as Windows and
PowerShell print them: ``0xC004F074``, ``c004f074``, unsigned ``3221549172`` or signed
``-1073418124``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from kmsadmin.catalog._data import load, source_text
from kmsadmin.errors import InvalidInput

_HEX = re.compile(r"^(?:0x)?([0-9a-f]{1,8})$")


@dataclass(frozen=True, slots=True)
class HResultInfo:
    """What an activation HRESULT means and how to fix it. ``known=False`` for codes not in the catalog."""

    code: str
    symbol: str
    message: str
    meaning: str
    remediation: str
    source: str
    unconfirmed: bool = False
    note: str = ""
    known: bool = True

    @property
    def value(self) -> int:
        """The unsigned 32-bit value."""
        return int(self.code, 16)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "code": self.code,
            "symbol": self.symbol,
            "message": self.message,
            "meaning": self.meaning,
            "remediation": self.remediation,
            "source": self.source,
            "unconfirmed": self.unconfirmed,
            "note": self.note,
            "known": self.known,
        }


def normalize_hresult(code: str | int) -> str:
    """``-1073418124`` / ``3221549172`` / ``c004f074`` / ``0xC004F074`` -> ``0xC004F074``."""
    if isinstance(code, bool):
        raise InvalidInput("HRESULT", str(code), "expected a number or hex code such as 0xC004F074")
    if isinstance(code, int):
        value = code
    else:
        text = code.strip().lower()
        match = _HEX.match(text)
        if re.fullmatch(r"-?\d+", text) and not (text.startswith("0x") or re.search(r"[a-f]", text)):
            value = int(text)
            # A decimal string of 8 digits could also be hex ("80070005"); Windows prints HRESULTs
            # in hex with 8 digits, so 8-digit unsigned strings starting with 8 or c are hex.
            if len(text) == 8 and text[0] in "8c":
                value = int(text, 16)
        elif match:
            value = int(match.group(1), 16)
        else:
            raise InvalidInput("HRESULT", code, "expected a number or hex code such as 0xC004F074")
    if not -(2**31) <= value < 2**32:
        raise InvalidInput("HRESULT", str(code), "out of the 32-bit range")
    return f"0x{value & 0xFFFFFFFF:08X}"


@cache
def _table() -> dict[str, HResultInfo]:
    raw = load("hresults")
    sources = raw["sources"]
    table = {}
    for row in raw["code"]:
        code = normalize_hresult(row["code"])
        table[code] = HResultInfo(
            code=code,
            symbol=row.get("symbol", ""),
            message=row.get("message", ""),
            meaning=row["meaning"],
            remediation=row["remediation"],
            source=source_text(sources, row["source"]),
            unconfirmed=bool(row.get("unconfirmed", False)),
            note=row.get("note", ""),
        )
        # Another code for the same condition (e.g. slerror.h's informational 0x4004F065 for
        # [ERR]'s 0xC004F065): the same entry under its own code.
        for alias in row.get("aliases", ()):
            other = normalize_hresult(alias["code"])
            note = f"Alias of {code}. {table[code].note}".strip()
            table[other] = replace(table[code], code=other, symbol=alias.get("symbol", ""), note=note)
    return table


def hresult_codes() -> tuple[str, ...]:
    """All codes in the catalog, normalised (``0xC004F074``)."""
    return tuple(_table())


def hresult_info(code: str | int) -> HResultInfo:
    """Meaning and remediation of an HRESULT; unknown codes give a generic entry with ``known=False``."""
    normal = normalize_hresult(code)
    info = _table().get(normal)
    if info is not None:
        return info
    return HResultInfo(
        code=normal,
        symbol="",
        message="",
        meaning="Not in kmsadmin's catalog of activation errors.",
        remediation=f"Get Windows' text for it with 'slui.exe 0x2a {normal}' on the host, or "
        f"'cscript ospp.vbs /ddescr:{normal}' for Office.",
        source="[ERR] windowsserverdocs activation-error-codes.md",
        known=False,
    )
