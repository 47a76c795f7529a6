"""The rollout journal: one JSON line per finished host, fsynced before the next host is counted.

A rollout over thousands of machines takes hours; a crash, a reboot of the admin's laptop or Ctrl-C
must neither lose a finished host's result nor run a finished host twice on ``--resume``. So:

* every host's result is appended as one JSON line and ``os.fsync``\\ ed as soon as the host
  finishes (one writer lock; worker threads append concurrently);
* each run starts with a header line (``"type": "run"``: run id, playbook, inventory, check mode,
  limit, the run it resumes) and ends with an ``"end"`` line (counts, interrupted);
* reading tolerates a torn line (a crash in the middle of a write): it is skipped, and the next
  run starts on a fresh line;
* a host is *done* for a play when its latest non-check entry says ``ok`` or ``changed``;
  ``--resume`` skips done hosts and runs failed ones again, and waiting ones (refused for the KMS
  host's count) too: by then the count may have been reached.

Entries come from :meth:`HostReport.to_dict`, which holds no secrets (host keys only ever appear as
their last five characters, passwords never). The file is locked while a rollout writes it.

Line formats::

    {"type": "run", "journal": 1, "run_id": "...", "playbook": "/abs/site.yml", "inventory": "/abs/inv.yml",
     "check": false, "limit": null, "resumes": null, "started": "2026-...Z"}
    {"type": "host", "run_id": "...", "play": "KMS clients", "host": "pc001", "status": "changed",
     "check": false, "attempts": 1, "started": "...", "finished": "...", "vars": {...}, "groups": [...],
     "reports": [HostReport.to_dict(), ...]}
    {"type": "end", "run_id": "...", "finished": "...", "interrupted": false, "stopped": null,
     "counts": {...}}
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from kmsadmin.errors import ConfigError

JOURNAL_VERSION = 1
DONE_STATUSES = frozenset({"ok", "changed"})

try:  # POSIX: keep two rollouts from writing one journal
    import fcntl
except ImportError:  # pragma: no cover - Windows has no fcntl; the lock is best effort there
    fcntl = None  # type: ignore[assignment]


@dataclass(slots=True)
class JournalState:
    """What a journal file holds."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    ends: list[dict[str, Any]] = field(default_factory=list)
    #: lines that were not whole JSON objects (a write torn by a crash)
    torn: int = 0

    def latest(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(play, host) → its latest entry from a real (non-check) run."""
        result: dict[tuple[str, str], dict[str, Any]] = {}
        for entry in self.entries:
            if entry.get("check"):
                continue
            result[(str(entry.get("play")), str(entry.get("host")))] = entry
        return result

    def done(self) -> set[tuple[str, str]]:
        """(play, host) pairs whose latest real result is ok or changed."""
        return {key for key, entry in self.latest().items() if entry.get("status") in DONE_STATUSES}


def read_journal(path: str | Path) -> JournalState:
    """Read a journal; a missing file is an empty journal, torn lines are counted and skipped."""
    state = JournalState()
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        return state
    except OSError as exc:
        raise ConfigError(f"cannot read journal {file}: {exc.strerror or exc}") from None
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            state.torn += 1
            continue
        if not isinstance(record, dict):
            state.torn += 1
            continue
        kind = record.get("type")
        if kind == "run":
            state.runs.append(record)
        elif kind == "host":
            state.entries.append(record)
        elif kind == "end":
            state.ends.append(record)
        else:
            state.torn += 1
    return state


class Journal:
    """An append-only, fsynced JSON-lines journal for one rollout at a time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self.run_id: str | None = None

    def read(self) -> JournalState:
        """The journal as it is on disk."""
        return read_journal(self.path)

    def start(self, header: Mapping[str, Any]) -> None:
        """Open for appending (locking the file) and write the run's header line."""
        if self._file is not None:
            raise ConfigError(f"journal {self.path} is already open")
        existed = self.path.exists()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = self.path.open("ab")
        except OSError as exc:
            raise ConfigError(f"cannot open journal {self.path}: {exc.strerror or exc}") from None
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                raise ConfigError(f"journal {self.path} is in use by another rollout") from None
        self._file = handle
        if existed and self.path.stat().st_size > 0:
            with self.path.open("rb") as reader:
                reader.seek(-1, os.SEEK_END)
                if reader.read(1) != b"\n":
                    # A torn last line from a crash: end it so it stays one (skipped) line.
                    self._write_raw(b"\n")
        elif not existed:
            self._sync_dir()
        self.run_id = str(header.get("run_id"))
        self.write({"type": "run", "journal": JOURNAL_VERSION, **header})

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record as one line, flushed and fsynced before returning."""
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
        # A lone surrogate (invalid Unicode from a host) is written as its JSON escape, so no host's data
        # can make the journal unwritable and stop the rollout; reading it back gives the same string.
        line = text.encode("utf-8", "backslashreplace") + b"\n"
        with self._lock:
            self._write_raw(line)

    def _write_raw(self, data: bytes) -> None:
        if self._file is None:
            raise ConfigError(f"journal {self.path} is not open")
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())

    def _sync_dir(self) -> None:
        """Make the new file's directory entry durable too (POSIX; a no-op where unsupported)."""
        try:
            fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def close(self) -> None:
        """Release the lock and close the file."""
        with self._lock:
            if self._file is not None:
                if fcntl is not None:
                    fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
                self._file.close()
                self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
