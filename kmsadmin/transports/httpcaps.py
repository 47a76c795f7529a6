"""requests sessions (pypsrp's and pywinrm's) held to the WS-Man client's rules for answers.

Redirects are refused, a body may have at most :data:`~kmsadmin.transports.wsman.MAX_BODY` bytes, and
it is read in pieces that stop once the request's read timeout has passed as a whole, so a host
dripping bytes cannot hold a worker. (Header-level stalls inside ``http.client`` stay bounded only
by the socket timeout per read: the kmsadmin WS-Man client, the default, bounds those too.)
"""

from __future__ import annotations

import time
from typing import Any

import requests

from kmsadmin.transports.wsman import MAX_BODY, ProtocolViolation, ReadTimeout


def bound_answers(session: requests.Session) -> None:
    """Hold a requests session's answers to the WS-Man client's rules: redirects refused, a body of
    at most :data:`~kmsadmin.transports.wsman.MAX_BODY`, read in pieces that stop when the request's
    read timeout has passed as a whole (a host dripping bytes cannot hold a worker)."""
    session.max_redirects = 0
    for adapter in session.adapters.values():
        adapter.send = _bounded_send(adapter.send)  # type: ignore[method-assign]


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
