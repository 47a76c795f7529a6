"""kmsadmin: set up Microsoft KMS hosts and convert Windows/Office fleets to KMS clients over WinRM."""

from __future__ import annotations

__version__ = "0.1.0"
