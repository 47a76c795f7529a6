"""What an inventory says about DNS: the KMS hosts (FQDN, listening port) and the clients' DNS domains.

The DNS layer does not read inventory files itself (that is the fleet layer's job); the CLI hands it
each host's name, merged variables and groups. Variables used (all optional):

* ``kmsadmin_fqdn`` — the host's FQDN (the lab writes it; else ``ansible_host`` when it is a name, else
  the inventory name);
* ``kmsadmin_kms_port`` — a KMS host's listening port (default 1688, kms-activation-planning);
* ``kmsadmin_dns_publishing`` — false when a KMS host does not publish its SRV record;
* ``kmsadmin_dns_suffix`` — a client's primary DNS suffix, the zone it looks ``_vlmcs._tcp`` up in
  ("within the membership zone of the client", common-troubleshooting-procedures-kms-dns); else the
  domain part of its FQDN;
* ``kmsadmin_lookup_domain`` — a client pinned to another SRV domain (``slmgr /skms-domain``);
* ``kmsadmin_kms_host`` — a client pinned to one host (``slmgr /skms``): it does not use DNS at all.

KMS hosts are the members of the ``kms_hosts`` group; every other host counts as a client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kmsadmin import validate
from kmsadmin.dns import DEFAULT_KMS_PORT
from kmsadmin.errors import InvalidInput

KMS_HOSTS_GROUP = "kms_hosts"

InventoryHost = tuple[str, Mapping[str, Any], Collection[str]]


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def host_fqdn(name: str, hostvars: Mapping[str, Any]) -> str:
    """The FQDN the inventory gives a host (lower-case, no trailing dot)."""
    for key in ("kmsadmin_fqdn", "ansible_host"):
        value = hostvars.get(key)
        if isinstance(value, str) and value and not _is_address(value):
            return validate.hostname(value).lower()
    return validate.hostname(name).lower()


def parent_domain(fqdn: str) -> str | None:
    """``kms01.lab.test`` -> ``lab.test``; None for a single-label name."""
    _, _, rest = fqdn.partition(".")
    return rest or None


@dataclass(frozen=True, slots=True)
class KmsHostView:
    """A KMS host as the inventory describes it."""

    name: str
    fqdn: str
    port: int = DEFAULT_KMS_PORT
    publishing: bool = True

    @property
    def domain(self) -> str | None:
        """The domain its SRV record goes to by default (its own primary DNS suffix)."""
        return parent_domain(self.fqdn)


@dataclass(frozen=True, slots=True)
class ClientView:
    """A KMS client as the inventory describes it."""

    name: str
    fqdn: str
    #: the SRV domain the client queries (None: pinned to a host, or no DNS domain known)
    srv_domain: str | None
    pinned_host: str | None = None


@dataclass(frozen=True, slots=True)
class FleetView:
    """The DNS-relevant part of an inventory."""

    kms_hosts: tuple[KmsHostView, ...] = ()
    clients: tuple[ClientView, ...] = ()
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def kms_host(self, fqdn: str) -> KmsHostView | None:
        """The KMS host with this FQDN (or inventory name)."""
        key = fqdn.rstrip(".").lower()
        return next((h for h in self.kms_hosts if key in (h.fqdn, h.name.lower())), None)

    def client_domains(self) -> dict[str, int]:
        """SRV domain -> how many clients look their KMS hosts up there."""
        counts: dict[str, int] = {}
        for client in self.clients:
            if client.srv_domain:
                counts[client.srv_domain] = counts.get(client.srv_domain, 0) + 1
        return counts


def build_view(hosts: Iterable[InventoryHost], *, source: str = "") -> FleetView:
    """Build the view from ``(name, merged vars, groups)`` triples; bad values exit 2 with the host named."""
    kms: list[KmsHostView] = []
    clients: list[ClientView] = []
    for name, hostvars, groups in hosts:
        try:
            fqdn = host_fqdn(name, hostvars)
            if KMS_HOSTS_GROUP in groups:
                port = validate.port(hostvars.get("kmsadmin_kms_port", DEFAULT_KMS_PORT))
                publishing = _truthy(hostvars.get("kmsadmin_dns_publishing", True))
                kms.append(KmsHostView(name, fqdn, port, publishing))
                continue
            pinned = hostvars.get("kmsadmin_kms_host")
            lookup = hostvars.get("kmsadmin_lookup_domain")
            suffix = hostvars.get("kmsadmin_dns_suffix")
            if pinned:
                clients.append(ClientView(name, fqdn, None, str(pinned)))
            elif lookup:
                clients.append(ClientView(name, fqdn, validate.domain(str(lookup)).lower()))
            elif suffix:
                clients.append(ClientView(name, fqdn, validate.domain(str(suffix)).lower()))
            else:
                clients.append(ClientView(name, fqdn, parent_domain(fqdn)))
        except InvalidInput as exc:
            raise InvalidInput(f"inventory host {name}: {exc.what}", exc.value, exc.why) from None
    return FleetView(tuple(kms), tuple(clients), source)
