"""A lab Kerberos realm for tests: one real MIT KDC per test process, realm LAB.TEST on loopback."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kmsadmin.lab.kdc import LabKdc

USER = "labadmin"
PASSWORD = "Lab-Passw0rd!"
CLOCKSKEW = 5


class Realm:
    """The started KDC, with ``KRB5_CONFIG`` pointing at it while the realm is in use."""

    def __init__(self, kdc: LabKdc) -> None:
        self.kdc = kdc
        self._hosts: dict[str, Path] = {}

    def keytab(self, host: str) -> str:
        """The host's keytab (``HTTP/<host>.lab.test``, ``WSMAN/...``), made on first use."""
        if host not in self._hosts:
            self._hosts[host] = self.kdc.add_hosts([host])[host].keytab
        return str(self._hosts[host])

    def fqdn(self, host: str) -> str:
        return self.kdc.fqdn(host)

    def ticket(self, directory: Path, name: str = "ccache", *, lifetime: str | None = None) -> str:
        """``kinit`` as the lab's administrator into a new cache; returns ``FILE:<path>``."""
        path = directory / name
        self.kdc.kinit(USER, PASSWORD, path, lifetime=lifetime)
        return f"FILE:{path}"


def start_realm() -> Iterator[Realm]:
    with tempfile.TemporaryDirectory(prefix="kmsadmin-test-kdc-") as tmp:
        # A 5-second tolerance: a ticket that expired 6 seconds ago is refused by everyone, as one
        # expired for more than 5 minutes is in a real realm.
        kdc = LabKdc(Path(tmp) / "kdc", clockskew=CLOCKSKEW).start()
        previous = os.environ.get("KRB5_CONFIG")
        os.environ["KRB5_CONFIG"] = str(kdc.krb5_conf)
        try:
            kdc.add_users({USER: PASSWORD})
            yield Realm(kdc)
        finally:
            kdc.stop()
            if previous is None:
                os.environ.pop("KRB5_CONFIG", None)
            else:
                os.environ["KRB5_CONFIG"] = previous
