"""A lab Kerberos realm for tests: one real MIT KDC per test process, realm LAB.TEST on loopback."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path

from kmsadmin.lab.api import EndpointConfig
from kmsadmin.lab.fleet import Fleet
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


def kerberos_endpoints(
    realm: Realm,
    fleet: Fleet,
    *,
    tls_hosts: Collection[str],
    ntlm_hosts: Collection[str] = (),
    skewed: str | None = None,
) -> list[EndpointConfig]:
    """Every host of ``fleet`` as a lab endpoint with its keytab in the realm (its SPNs under its FQDN).

    HTTPS for ``tls_hosts`` (the others: HTTP with message encryption); NTLM refused but by
    ``ntlm_hosts``; the ``skewed`` host's clock 10 minutes off (beyond the realm's tolerance).
    """
    keytabs = realm.kdc.add_hosts({name: fleet.hosts[name].fqdn for name in fleet.names()})
    return [
        EndpointConfig(
            name=name,
            username=fleet.username,
            password=fleet.password,
            tls=name in tls_hosts,
            kerberos_keytab=str(keytabs[name].keytab),
            kerberos_realm=realm.kdc.realm,
            refuse_ntlm=name not in ntlm_hosts,
            clock_skew=600 if name == skewed else 0,
        )
        for name in fleet.names()
    ]


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
