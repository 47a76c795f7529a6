"""Fleet: the only layer that wires transports, render, facts and operations together.

``runner`` runs one operation on one host over one session; the rollout machinery (inventories,
playbooks, scheduling, journal) builds on it.
"""

from __future__ import annotations
