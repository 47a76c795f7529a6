"""Frozen value types shared by every layer.

Nothing here imports anything of kmsadmin's; every other module may import these.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

ScriptFormat = Literal["ps1", "cmd"]
ParamValue = str | int | bool | None

#: How many trailing characters of a secret may ever be shown (as slmgr shows the last five
#: characters of a product key: "Partial Product Key").
SECRET_VISIBLE_CHARS = 5

#: Hosts worked on at once, one default for every command with ``--forks`` (and the library calls).
DEFAULT_FORKS = 64


@dataclass(frozen=True, slots=True)
class Secret:
    """A value that must never be printed, logged or reported beyond its last five characters."""

    value: str = field(repr=False)
    #: for ``--dry-run`` without the secret: what to show instead (e.g. "KMS host key from --host-key-file")
    placeholder: str = ""

    @property
    def tail(self) -> str:
        """The last five characters, the only part that may be shown."""
        return self.value[-SECRET_VISIBLE_CHARS:]

    def masked(self) -> str:
        """A display form such as ``*****-*****-*****-*****-ABCDE`` for a product key."""
        if not self.value and self.placeholder:
            return f"<{self.placeholder}>"
        if len(self.value) == 29 and self.value.count("-") == 4:
            return "*****-*****-*****-*****-" + self.tail
        return "…" + self.tail

    def __str__(self) -> str:
        return self.masked()


@dataclass(frozen=True, slots=True)
class ScriptRef:
    """Which template to render for a step, with its plain and secret parameters."""

    step: str
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    secrets: Mapping[str, Secret] = field(default_factory=dict)
    fmt: ScriptFormat = "ps1"


@dataclass(frozen=True, slots=True)
class RenderedScript:
    """A rendered script: ``text`` is what runs, ``display`` is safe to show (secrets masked)."""

    step: str
    version: int
    fmt: ScriptFormat
    text: str = field(repr=False)
    display: str

    @property
    def header(self) -> str:
        """The machine-readable first line naming step and version."""
        return self.display.split("\r\n", 1)[0]


@dataclass(frozen=True, slots=True)
class ScriptResult:
    """What a transport got back from running one script on one host."""

    host: str
    step: str
    stdout: str
    errors: tuple[str, ...] = ()
    rc: int | None = None
    duration: float = 0.0


# --- text from hosts ------------------------------------------------------------------------------
#: Longest string kept from a host (a product description is ~100 characters, an error message a few
#: hundred); longer values are cut and marked.
MAX_HOST_TEXT = 4096
_CUT_MARK = "…[cut]"
#: Characters that must not reach a terminal or a report from a host: C0 controls but tab and newline
#: (ESC starts ANSI/OSC sequences: retitling, hyperlinks, clearing, recolouring), DEL, C1 controls
#: (8-bit CSI/OSC), Unicode bidi overrides and isolates (text that reads differently than it is), and
#: lone surrogates (invalid Unicode from a mis-decoded value, which no UTF-8 writer can encode).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _replace(match: re.Match[str]) -> str:
    char = match.group()
    return "\ufffd" if "\ud800" <= char <= "\udfff" else ""


def clean_text(value: str, limit: int = MAX_HOST_TEXT) -> str:
    """``value`` safe for every output: invalid Unicode replaced by U+FFFD, control and escape
    characters removed (``\\r\\n`` becomes ``\\n``), at most ``limit`` characters."""
    if len(value) > limit:
        value = value[: limit - len(_CUT_MARK)] + _CUT_MARK
    if _UNSAFE.search(value) is None:
        return value
    return _UNSAFE.sub(_replace, value)


def clean_tree(value: Any) -> tuple[Any, int]:
    """``value`` (parsed JSON) with every string, keys included, passed through :func:`clean_text`;
    also returns how many strings were changed."""
    changed = 0

    def walk(item: Any) -> Any:
        nonlocal changed
        if isinstance(item, str):
            cleaned = clean_text(item)
            if cleaned is not item and cleaned != item:
                changed += 1
            return cleaned
        if isinstance(item, dict):
            return {walk(k): walk(v) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v) for v in item]
        return item

    return walk(value), changed
