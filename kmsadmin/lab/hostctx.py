"""What the WinRS and PSRP shells of one lab host share: the engine, a worker pool, fault state, limits.

Scripts run on a small pool of daemon worker threads rather than inside the HTTP request, so that a
``Receive`` can wait at most its ``OperationTimeout`` and then answer ``w:TimedOut`` while the script is
still running, exactly as a slow command behaves on Windows.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from kmsadmin.lab.api import HostFaults, ScriptEngine, ScriptOutput, Via

log = logging.getLogger("kmsadmin.lab.server")

T = TypeVar("T")


class ConnectionAbort(Exception):
    """Drop the TCP connection without answering (fault injection)."""


class Job(Generic[T]):
    """The result of work handed to :class:`EngineRunner`."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Job[T]], None]] = []
        self._lock = threading.Lock()

    def set(self, value: T | None, error: BaseException | None = None) -> None:
        with self._lock:
            self._value, self._error = value, error
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb(self)

    def add_done_callback(self, cb: Callable[[Job[T]], None]) -> None:
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(cb)
                return
        cb(self)

    def wait(self, timeout: float | None) -> bool:
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def error(self) -> BaseException | None:
        return self._error

    @property
    def value(self) -> T | None:
        return self._value


class EngineRunner:
    """A bounded pool of daemon threads running scripts (daemon: a stuck engine cannot block exit)."""

    def __init__(self, workers: int) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], object], Job[object]] | None] = queue.SimpleQueue()
        self._workers = workers
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._idle = 0

    def submit(self, fn: Callable[[], T]) -> Job[T]:
        job: Job[T] = Job()
        with self._lock:
            if self._closed:
                job.set(None, RuntimeError("lab server is stopping"))
                return job
            # Threads start lazily and only when none is idle, so an idle server costs no threads.
            if self._idle == 0 and len(self._threads) < self._workers:
                thread = threading.Thread(target=self._work, name="lab-engine", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._queue.put((fn, job))  # type: ignore[arg-type]
        return job

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            item = self._queue.get()
            with self._lock:
                self._idle -= 1
            if item is None:
                return
            fn, job = item
            try:
                job.set(fn())
            except Exception as exc:  # the engine's failure is reported to the client, not raised here
                job.set(None, exc)


@dataclass(slots=True)
class HostContext:
    """Per-host state every shell of that host sees."""

    name: str
    username: str
    engine: ScriptEngine
    runner: EngineRunner
    faults: HostFaults
    stop: threading.Event
    #: cap on how long a Receive waits (the client's OperationTimeout is honoured up to this)
    max_operation_wait: float
    #: the listener URL as a client addresses it (a:Address in CreateResponse)
    address: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run_script(self, script: str, via: Via) -> Job[ScriptOutput]:
        started = time.monotonic()
        name = self.name

        def call() -> ScriptOutput:
            try:
                return self.engine.run_script(name, script, via=via)
            finally:
                # Host, channel and duration only: script text can carry product keys.
                log.debug("lab %s: %s script ran in %.3fs", name, via, time.monotonic() - started)

        return self.runner.submit(call)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Wait for ``event`` up to ``timeout`` seconds, giving up early when the server stops."""
        deadline = time.monotonic() + timeout
        while not event.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self.stop.is_set():
                return event.is_set()
            event.wait(min(left, 0.1))
        return True

    def wait_budget(self, requested: float | None) -> float:
        requested = 20.0 if requested is None else requested
        return max(0.0, min(requested, self.max_operation_wait))


@dataclass(slots=True)
class CommandFaults:
    """Fault injection state of one command (a WinRS process or a PSRP pipeline)."""

    timeouts_left: int = 0
    reset_pending: bool = False

    @classmethod
    def for_host(cls, faults: HostFaults) -> CommandFaults:
        return cls(timeouts_left=max(0, faults.operation_timeouts), reset_pending=faults.reset_mid_receive)
