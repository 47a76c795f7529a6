"""``python -m kmsadmin`` runs the command-line interface."""

from __future__ import annotations

from kmsadmin.cli import main

main()
