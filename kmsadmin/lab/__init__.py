"""The lab: simulated Windows hosts that speak real WS-Management (WinRS and PSRP) on loopback.

A product feature (``kmsadmin lab``, ``kmsadmin demo``) and the project's test bed. Only the CLI and
the tests import it.
"""

from __future__ import annotations
