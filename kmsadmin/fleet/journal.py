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
    #: lines that were not whole records (a write torn by a crash, or damage)
    torn: int = 0
    #: 1-based numbers of those lines
    bad_lines: list[int] = field(default_factory=list)
    #: the last line is one of them and has no line end: a write cut by a crash
    last_torn: bool = False
    #: the file exists but holds nothing
    empty: bool = False

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
    state.empty = not raw.strip()
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            record = None
        kind = record.get("type") if isinstance(record, dict) else None
        if kind == "run" and _valid(record, ("run_id",)):
            state.runs.append(record)
        elif kind == "host" and _valid(record, ("run_id", "play", "host", "status")):
            state.entries.append(record)
        elif kind == "end" and _valid(record, ("run_id",)):
            state.ends.append(record)
        else:
            state.torn += 1
            state.bad_lines.append(number)
            state.last_torn = number == len(lines)  # no line end after it
    return state


def _valid(record: Any, keys: tuple[str, ...]) -> bool:
    return all(isinstance(record.get(key), str) for key in keys)


def resume_state(path: str | Path, playbook: str | Path) -> tuple[JournalState, list[str]]:
    """The journal as far as it can be trusted for ``--resume`` of ``playbook``, and warnings.

    A cut last line (a crash in the middle of a write), damaged lines and host records whose run
    header is unreadable are warned about and left out: those hosts run again, and each host's steps
    check its state before changing anything. Refused (:class:`ConfigError`): a journal of a newer
    format, one of another playbook, and host records without any readable run header (nothing tells
    which playbook they belong to).
    """
    state = read_journal(path)
    warnings: list[str] = []
    playbook = str(playbook)
    if state.empty:
        warnings.append(f"journal {path} is empty: nothing to resume, every host runs")
    for run in state.runs:
        version = run.get("journal")
        if isinstance(version, int) and version > JOURNAL_VERSION:
            raise ConfigError(
                f"journal {path} was written by a newer kmsadmin (format {version}); use that version to resume"
            )
        if run.get("playbook") not in (None, playbook):
            raise ConfigError(f"journal {path} belongs to playbook {run.get('playbook')}, not {playbook}")
    if state.entries and not state.runs:
        raise ConfigError(
            f"journal {path} holds host records but no readable run header (damaged line "
            f"{state.bad_lines[0] if state.bad_lines else 1}?), so nothing shows which playbook they "
            "belong to: refusing to resume from it. Restore it, or move it aside and run without --resume "
            "(each host's steps check its state before changing anything)"
        )
    runs = {str(run["run_id"]) for run in state.runs}
    orphans = [e for e in state.entries if str(e["run_id"]) not in runs]
    if orphans:
        state.entries = [e for e in state.entries if str(e["run_id"]) in runs]
        warnings.append(
            f"journal {path}: {len(orphans)} host record(s) belong to a run whose header line is damaged; "
            "those hosts run again"
        )
    damaged = [n for n in state.bad_lines if not (state.last_torn and n == state.bad_lines[-1])]
    if state.last_torn:
        warnings.append(
            f"journal {path}: the last line ({state.bad_lines[-1]}) is cut (a write interrupted by a "
            "crash); resuming from the last complete record"
        )
    if damaged:
        shown = ", ".join(str(n) for n in damaged[:5]) + (" ..." if len(damaged) > 5 else "")
        warnings.append(
            f"journal {path}: {len(damaged)} damaged line(s) ({shown}) skipped; the hosts they recorded "
            "run again"
        )
    return state, warnings


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
