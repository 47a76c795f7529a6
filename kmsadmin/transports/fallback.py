"""Several auth methods tried in order, as Ansible tries an ``ansible_winrm_transport`` list.

``ansible_winrm_transport: [kerberos, ntlm]`` means: sign in with Kerberos; if the host (or the
controller, missing a Kerberos library) refuses it, sign in with NTLM. The first method that signs in
is kept for the rest of the session; a refusal after that is the host's answer and is raised.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self, TypeVar

from kmsadmin.errors import AuthenticationFailed
from kmsadmin.transports.base import Session
from kmsadmin.transports.options import ConnectionOptions
from kmsadmin.values import RenderedScript, ScriptResult

T = TypeVar("T")


class AuthFallbackSession:
    """A :class:`Session` that moves to the next auth method when sign-in is refused."""

    def __init__(self, options: ConnectionOptions, opener: Callable[[ConnectionOptions], Session]) -> None:
        self._candidates = [
            options,
            *(dataclasses.replace(options, auth=auth, auth_fallbacks=()) for auth in options.auth_fallbacks),
        ]
        self._opener = opener
        self._index = 0
        self._session = opener(self._candidates[0])
        self._signed_in = False
        #: the auth methods refused so far, with the reason (for the last error's message)
        self.refused: list[str] = []

    @property
    def options(self) -> ConnectionOptions:
        """The options of the auth method in use."""
        return self._session.options

    def _call(self, action: Callable[[Session], T]) -> T:
        while True:
            try:
                result = action(self._session)
            except AuthenticationFailed as exc:  # AuthLibraryMissing (no Kerberos library) too
                if self._signed_in or self._index + 1 >= len(self._candidates):
                    if self.refused:
                        exc.message = f"{exc.message} (also refused: {'; '.join(self.refused)})"
                    raise
                self.refused.append(f"{self._candidates[self._index].auth}: {exc.message}")
                self._session.close()
                self._index += 1
                self._session = self._opener(self._candidates[self._index])
                continue
            self._signed_in = True
            return result

    def run(self, script: RenderedScript, *, deadline: float | None = None) -> ScriptResult:
        """See :meth:`Session.run`."""
        return self._call(lambda session: session.run(script, deadline=deadline))

    def run_many(
        self, scripts: Sequence[RenderedScript], *, deadline: float | None = None
    ) -> list[ScriptResult]:
        """See :meth:`Session.run_many`."""
        return self._call(lambda session: session.run_many(scripts, deadline=deadline))

    def close(self) -> None:
        """See :meth:`Session.close`."""
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
