"""Rollout progress from the rollout's events, for a terminal and for pipes and logs.

* ``bar`` (stdout and stderr are terminals): a rich bar with the counts per state on stderr, and the
  hosts in flight below it.
* ``lines`` (stdout is not a terminal, e.g. ``rollout ... | tee log``): one line per finished or
  skipped host on stdout, flushed at once, and a summary line every ``every`` seconds while hosts run.
* ``off``: nothing is shown; the hosts in flight are still tracked (a Ctrl-C says how many).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal, TextIO

ProgressMode = Literal["bar", "lines", "off"]

#: Seconds between two summary lines in ``lines`` mode.
SUMMARY_EVERY = 10.0
#: Hosts named on the terminal's "in flight" line; the rest are counted.
IN_FLIGHT_SHOWN = 8
FINISHED_STATES = ("ok", "changed", "pending", "waiting", "failed", "skipped")


def choose_mode(progress: bool) -> ProgressMode:
    """``bar`` on a terminal, ``lines`` when stdout is piped or redirected, ``off`` with --no-progress."""
    if not progress:
        return "off"
    if sys.stdout.isatty() and sys.stderr.isatty():
        return "bar"
    return "lines"


def _finished(counts: Mapping[str, int]) -> int:
    return sum(counts.get(k, 0) for k in FINISHED_STATES)


def counts_text(counts: Mapping[str, int]) -> str:
    """``ok 3, changed 8, failed 1`` (states with a count only)."""
    return ", ".join(
        f"{k.replace('_', ' ')} {counts[k]}"
        for k in ("ok", "changed", "pending", "waiting", "failed", "skipped", "not_started")
        if counts.get(k)
    )


class RolloutProgress:
    """An ``on_event`` callback for :func:`kmsadmin.fleet.rollout.rollout` that shows progress.

    It also knows which hosts are in flight and since when (:meth:`in_flight`), so that an interrupted
    run can say at once how many hosts are still running and by when they end.
    """

    def __init__(
        self, mode: ProgressMode, *, every: float = SUMMARY_EVERY, out: TextIO | None = None
    ) -> None:
        self.mode = mode
        self.every = every
        self.out = out if out is not None else sys.stdout
        self._lock = threading.Lock()
        self._flight: dict[tuple[str, str], float] = {}
        self._budgets: dict[tuple[str, str], float] = {}
        self._counts: Mapping[str, int] = {}
        self._started = time.monotonic()
        self._stopping: str | None = None
        self._done = threading.Event()
        self._ticker: threading.Thread | None = None
        self._progress: Any = None
        self._task: Any = None

    # ---------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> RolloutProgress:
        self._started = time.monotonic()
        if self.mode == "bar":
            self._start_bar()
        elif self.mode == "lines" and self.every > 0:
            self._ticker = threading.Thread(target=self._tick, name="kmsadmin-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        if self._progress is not None:
            self._progress.stop()

    # ---------------------------------------------------------------------------------- events
    def __call__(self, event: Any) -> None:
        kind = type(event).__name__
        with self._lock:
            self._counts = dict(getattr(event, "counts", None) or self._counts)
            if kind == "HostStarted":
                self._flight[(event.play, event.host)] = time.monotonic()
                if getattr(event, "deadline", None) is not None:
                    self._budgets[(event.play, event.host)] = event.deadline
            elif kind == "HostFinished":
                self._flight.pop((event.play, event.host), None)
                self._budgets.pop((event.play, event.host), None)
            elif kind == "RolloutStopping":
                self._stopping = event.reason
            if self.mode == "lines":
                self._line(kind, event)
            elif self.mode == "bar":
                self._update_bar()

    def in_flight(self) -> list[tuple[str, str, float]]:
        """(play, host, monotonic start) of every host running now, oldest first."""
        with self._lock:
            return sorted(((p, h, t) for (p, h), t in self._flight.items()), key=lambda x: x[2])

    def budgets(self) -> dict[tuple[str, str], float]:
        """(play, host) -> deadline in seconds of every host running now (as its start event gave it)."""
        with self._lock:
            return dict(self._budgets)

    def write(self, text: str) -> None:
        """A message line on stderr that does not break the bar."""
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    # ---------------------------------------------------------------------------------- lines mode
    def _emit(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _line(self, kind: str, event: Any) -> None:
        total = self._counts.get("total", 0)
        width = len(str(total))
        position = f"[{_finished(self._counts):>{width}}/{total}]"
        if kind == "HostFinished":
            result = event.result
            seconds = (result.finished - result.started).total_seconds()
            text = (
                f"{position} {event.host} {event.play}: {event.status} "
                f"({result.changes} change{'s' if result.changes != 1 else ''}, {seconds:.1f}s)"
            )
            error = result.error
            if error:
                message = " ".join(str(error.get("message", "")).split())
                text += f" at {error.get('step')}: {message}"
                if error.get("hresult"):
                    text += f" (HRESULT {error['hresult']})"
            self._emit(text)
        elif kind == "HostSkipped":
            self._emit(f"{position} {event.host} {event.play}: skipped ({event.reason})")
        elif kind == "HostRetrying":
            self._emit(
                f"{position} {event.host} {event.play}: retrying in {event.delay:.0f}s "
                f"(attempt {event.attempt + 1}): {event.reason}"
            )
        elif kind == "PlayStarted":
            self._emit(f"play {event.play}: {len(event.hosts)} host(s)")
        elif kind == "RolloutStopping":
            self._emit(f"stopping: {event.reason}")

    def summary_line(self) -> str:
        """``-- 12/62 finished (ok 3, changed 9), 20 running, 30 queued, 45s``."""
        with self._lock:
            counts = dict(self._counts)
            running = len(self._flight)
        elapsed = time.monotonic() - self._started
        parts = [f"-- {_finished(counts)}/{counts.get('total', 0)} finished"]
        detail = counts_text(counts)
        if detail:
            parts[0] += f" ({detail})"
        parts.append(f"{running} running")
        if counts.get("queued"):
            parts.append(f"{counts['queued']} queued")
        parts.append(f"{elapsed:.0f}s")
        return ", ".join(parts)

    def _tick(self) -> None:
        while not self._done.wait(self.every):
            with self._lock:
                busy = bool(self._flight) or bool(self._counts.get("queued"))
            if busy:
                self._emit(self.summary_line())

    # ---------------------------------------------------------------------------------- bar mode
    def _start_bar(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        from rich.text import Text

        owner = self

        class _Bar(Progress):
            def get_renderables(self) -> Any:
                yield self.make_tasks_table(self.tasks)
                flight = owner.in_flight()
                if flight:
                    names = ", ".join(host for _, host, _ in flight[:IN_FLIGHT_SHOWN])
                    more = len(flight) - IN_FLIGHT_SHOWN
                    text = f"in flight ({len(flight)}): {names}" + (f", +{more} more" if more > 0 else "")
                    yield Text(text, no_wrap=True, overflow="ellipsis", style="dim")

        self._progress = _Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=False,
            redirect_stdout=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("starting", total=None)

    def _update_bar(self) -> None:
        counts = self._counts
        desc = " ".join(
            f"{k} {counts.get(k, 0)}"
            for k in ("running", "ok", "changed", "pending", "waiting", "failed")
            if counts.get(k)
        )
        if self._stopping:
            desc = "stopping: " + desc
        self._progress.update(
            self._task,
            total=counts.get("total") or None,
            completed=_finished(counts),
            description=desc or "starting",
        )


def deadline_text(deadline: float, started: float, now_wall: datetime | None = None) -> str:
    """The wall-clock time a host that started at monotonic ``started`` must end by (its deadline)."""
    wall = (now_wall or datetime.now().astimezone()) + timedelta(
        seconds=started + deadline - time.monotonic()
    )
    return wall.strftime("%H:%M:%S %Z").strip()


__all__ = ["RolloutProgress", "choose_mode", "counts_text", "deadline_text"]
