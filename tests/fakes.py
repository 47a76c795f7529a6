"""Pieces shared by the tests' fake sessions (below the transport seam)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kmsadmin.transports.base import step_failed
from kmsadmin.values import RenderedScript, ScriptResult


def run_until_failed(
    run: Callable[[RenderedScript], ScriptResult], scripts: Sequence[RenderedScript]
) -> list[ScriptResult]:
    """A session's ``run_many`` over ``run``: each script in order, stopping after the first failed step.

    The rule of :meth:`kmsadmin.transports.base.Session.run_many` (:func:`step_failed`): one result
    per step that ran.
    """
    results: list[ScriptResult] = []
    for script in scripts:
        results.append(run(script))
        if step_failed(results[-1].stdout):
            break
    return results
