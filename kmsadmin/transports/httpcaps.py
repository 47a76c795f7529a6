"""requests sessions (pypsrp's and pywinrm's) held to the WS-Man client's rules for answers.

Redirects are refused, a body may have at most :data:`~kmsadmin.transports.wsman.MAX_BODY` bytes, and
it is read in pieces that stop once the request's read timeout has passed as a whole, so a host
dripping bytes cannot hold a worker.

Stalls inside ``http.client`` (headers dripped a byte at a time, an endless stream of ``100
Continue``) never trip a per-read socket timeout, so :class:`Connections` cuts them: it tracks the
sockets of one client's connections, and :meth:`Connections.cut_after` has one shared scheduler
thread shut them down when a request outlives its time, which makes the blocked read return and the
library raise; the request then ends as :class:`~kmsadmin.transports.base.DeadlineExpired`.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import requests

from kmsadmin.transports.base import DeadlineExpired, log
from kmsadmin.transports.wsman import MAX_BODY, ProtocolViolation, ReadTimeout


class _Alarm:
    __slots__ = ("action", "cancelled", "fired", "when")

    def __init__(self, when: float, action: Callable[[], None]) -> None:
        self.when = when
        self.action = action
        self.cancelled = False
        self.fired = False


class _Scheduler:
    """One daemon thread running the alarms of every client in the process, earliest first.

    Cancelled alarms stay in the heap until their time comes, unless they are most of it (then the heap
    is rebuilt), so arming and cancelling stay O(log n) for hundreds of hosts.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Alarm]] = []
        self._order = itertools.count()
        self._cancelled = 0
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, action: Callable[[], None]) -> _Alarm:
        alarm = _Alarm(time.monotonic() + seconds, action)
        with self._cond:
            heapq.heappush(self._heap, (alarm.when, next(self._order), alarm))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kmsadmin-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
        return alarm

    def cancel(self, alarm: _Alarm) -> None:
        with self._cond:
            if alarm.cancelled or alarm.fired:
                return
            alarm.cancelled = True
            self._cancelled += 1
            if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                when, _, alarm = self._heap[0]
                wait = when - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                if alarm.cancelled:
                    self._cancelled -= 1
                    continue
                alarm.fired = True
            try:
                alarm.action()
            except Exception as exc:  # an alarm must never stop the others
                log.debug("watchdog action failed: %s", exc)


_SCHEDULER = _Scheduler()


class Connections:
    """The HTTP connections one pypsrp or pywinrm client opened (over every session it rebuilds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()

    def add(self, connection: Any) -> None:
        with self._lock:
            self._connections.add(connection)

    def cut(self) -> None:
        """Shut down every open socket: a read blocked on one returns at once (end of stream)."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            sock = getattr(connection, "sock", None)
            # an HTTPS-in-HTTPS proxy tunnel wraps the socket in urllib3's SSLTransport
            sock = getattr(sock, "socket", sock)
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    # socket.socket's own shutdown, not SSLSocket's: that one also drops the TLS
                    # object under the thread reading it
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    @contextlib.contextmanager
    def cut_after(self, seconds: float) -> Iterator[None]:
        """Run the body (one request, with its auth rounds and retries) within ``seconds``: once they
        pass, the connections are cut and the body ends with
        :class:`~kmsadmin.transports.base.DeadlineExpired`, whatever the library made of the cut (an
        answer read after the cut is not trusted either)."""
        alarm = _SCHEDULER.arm(seconds, self.cut)
        try:
            yield
        except Exception as exc:
            if alarm.fired:
                raise DeadlineExpired from exc
            raise
        finally:
            _SCHEDULER.cancel(alarm)
        if alarm.fired:
            raise DeadlineExpired


def bound_answers(session: requests.Session, connections: Connections) -> None:
    """Hold a requests session's answers to the WS-Man client's rules: redirects refused, a body of
    at most :data:`~kmsadmin.transports.wsman.MAX_BODY`, read in pieces that stop when the request's
    read timeout has passed as a whole (a host dripping bytes cannot hold a worker); every
    connection it opens is added to ``connections``, for :meth:`Connections.cut_after`."""
    session.max_redirects = 0
    for mounted in session.adapters.values():
        adapter: Any = mounted  # requests.adapters.HTTPAdapter (pypsrp's subclass over HTTPS)
        adapter.send = _bounded_send(adapter.send)
        _track(adapter.poolmanager, connections)
        proxy_manager_for = adapter.proxy_manager_for

        def tracked_proxy_manager(proxy: str, _for: Any = proxy_manager_for, **kwargs: Any) -> Any:
            manager = _for(proxy, **kwargs)
            _track(manager, connections)
            return manager

        adapter.proxy_manager_for = tracked_proxy_manager


def _track(manager: Any, connections: Connections) -> None:
    """Add every connection the pools of urllib3 ``manager`` open to ``connections`` (once)."""
    if getattr(manager, "_kmsadmin_tracked", False):
        return
    manager._kmsadmin_tracked = True
    new_pool = manager._new_pool

    def tracked_pool(*args: Any, **kwargs: Any) -> Any:
        pool = new_pool(*args, **kwargs)
        new_conn = pool._new_conn

        def tracked_conn() -> Any:
            connection = new_conn()
            connections.add(connection)
            return connection

        pool._new_conn = tracked_conn
        return pool

    manager._new_pool = tracked_pool


def _bounded_send(send: Any) -> Any:
    def bounded(
        request: requests.PreparedRequest, stream: bool = False, timeout: Any = None, **kwargs: Any
    ) -> Any:
        response = send(request, stream=True, timeout=timeout, **kwargs)
        if response.status_code == 401:
            # the auth handlers (requests_ntlm, pypsrp's) read the socket of a 401 for channel
            # binding, so it stays unread here: only its announced size is checked
            _check_length(response)
        elif not stream:
            read = timeout[1] if isinstance(timeout, tuple) else timeout
            response._content = _read_capped(response, read)
            response._content_consumed = True
            response.raw.release_conn()
        return response

    return bounded


def _check_length(response: Any) -> None:
    length = response.headers.get("content-length")
    if length is not None and (not length.strip().isdigit() or int(length) > MAX_BODY):
        raise ProtocolViolation(
            f"a Content-Length of {length[:40]!r}, over the {MAX_BODY // 1024} kB an answer may have"
        )


def _read_capped(response: Any, seconds: float | None) -> bytes:
    _check_length(response)
    end = None if seconds is None else time.monotonic() + seconds
    parts: list[bytes] = []
    total = 0
    while True:
        if end is not None and time.monotonic() > end:
            raise ReadTimeout(f"the answer did not complete within {seconds:g}s")
        chunk = response.raw.read1(65536)
        if not chunk:
            return b"".join(parts)
        total += len(chunk)
        if total > MAX_BODY:
            raise ProtocolViolation(f"an answer larger than {MAX_BODY // 1024} kB")
        parts.append(chunk)
