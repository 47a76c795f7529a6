"""Frozen value types shared by every layer.

Nothing here imports anything of kmsadmin's; every other module may import these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

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
