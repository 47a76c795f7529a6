"""A lab started as a user starts it (``kmsadmin lab up --detach``) for one test, and stopped after it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.lab.test_remote_ops import _kmsadmin


@contextmanager
def lab_process(tmp_path: Path, *options: str, timeout: float = 60) -> Iterator[tuple[Path, Path]]:
    """``lab up OPTIONS --detach`` in ``tmp_path``: yields (state directory, inventory); ``lab down`` after
    (which must succeed when the test did).

    ``timeout``: the seconds ``lab up`` may take (creating a large lab takes longer).
    """
    state, inventory = tmp_path / "lab", tmp_path / "inv.yml"
    proc = _kmsadmin(
        "lab",
        "up",
        *options,
        *("--state-dir", str(state), "--inventory-out", str(inventory), "--detach"),
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        yield state, inventory
    finally:
        down = _kmsadmin("lab", "down", "--state-dir", str(state))
    # reached when the test passed: the lab stopped as a user stops it
    assert down.returncode == 0, down.stdout + down.stderr
