"""Errors raised by catalog look-ups."""

from __future__ import annotations

from collections.abc import Sequence

from kmsadmin.errors import EXIT_USAGE, KmsAdminError


class NotFoundInCatalog(KmsAdminError, LookupError):
    """A name or query matched nothing in the catalog (bad user input: exit code 2)."""

    exit_code = EXIT_USAGE

    def __init__(self, what: str, query: str, near: Sequence[str] = ()) -> None:
        self.what = what
        self.query = query
        self.near = tuple(near)
        message = f"no {what} matches {query!r}"
        if self.near:
            message += "; did you mean: " + ", ".join(self.near)
        super().__init__(message)
