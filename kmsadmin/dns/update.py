"""Adding and removing KMS SRV records by RFC 2136 dynamic update (dnspython), TSIG-signed if a key is given.

This is what a KMS host itself does: "By default, a KMS host server dynamically registers a DNS SRV
record one time every 24 hours" (common-troubleshooting-procedures-kms-dns), which needs a zone
that accepts updates from it (BIND: ``allow-update``). The update is idempotent: the current
records are read first (over TCP, from the same server) and nothing is sent when the record is
already there (add) or already gone (remove).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kmsadmin.dns.records import Action, SrvRecord, fqdn
from kmsadmin.dns.resolver import QUERY_TIMEOUT, DnsClient
from kmsadmin.dns.tsig import TsigKey
from kmsadmin.errors import KmsAdminError


class UpdateFailed(KmsAdminError):
    """The DNS server did not apply the update (refused, not authoritative, TSIG rejected, no answer)."""

    def __init__(self, message: str, *, rcode: str | None = None, remediation: str = "") -> None:
        self.rcode = rcode
        self.remediation = remediation
        super().__init__(message + (f" -- fix: {remediation}" if remediation else ""))


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """What an update did."""

    action: Action
    record: SrvRecord
    changed: bool
    server: str
    zone: str
    key: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the key by name only)."""
        return {
            "action": self.action,
            "changed": self.changed,
            "record": self.record.to_dict(),
            "server": self.server,
            "zone": self.zone,
            "tsig_key": self.key,
        }


_REMEDIATION = {
    "REFUSED": "the zone does not accept this update: allow it for the key "
    "(BIND: allow-update { key NAME; };) or pass --tsig-key-file with a key the zone trusts",
    "NOTAUTH": "the server is not authoritative for the zone, or it rejected the TSIG key: "
    "check --zone and the key",
    "NOTZONE": "the record is outside the zone: pass --zone with the zone that holds the domain",
    "SERVFAIL": "the server failed to apply the update: see its log",
}


def current_records(
    server: tuple[str, int], domain: str, *, timeout: float = QUERY_TIMEOUT
) -> list[SrvRecord]:
    """The SRV records the server holds for ``_vlmcs._tcp.<domain>`` right now."""
    _, records = DnsClient(server, timeout=timeout).srv(domain)
    return records


def apply(
    record: SrvRecord,
    action: Action,
    server: tuple[str, int],
    *,
    zone: str | None = None,
    key: TsigKey | None = None,
    timeout: float = QUERY_TIMEOUT,
) -> UpdateResult:
    """Add or remove ``record`` on ``server`` by dynamic update; raises :class:`UpdateFailed`."""
    import dns.exception
    import dns.query
    import dns.rcode
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype
    import dns.tsig
    import dns.update

    zone_name = fqdn(zone or record.domain)
    host, port = server
    where = f"{host}:{port}"
    present = any(r.same_rdata(record) for r in current_records(server, record.domain, timeout=timeout))
    if (action == "add" and present) or (action == "remove" and not present):
        return UpdateResult(action, record, False, where, zone_name, key.describe() if key else None)
    if key is not None:
        message = dns.update.UpdateMessage(
            zone_name, keyring=key.keyring(), keyname=key.keyname(), keyalgorithm=key.algorithm
        )
    else:
        message = dns.update.UpdateMessage(zone_name)
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SRV, record.rdata_text())
    if action == "add":
        message.add(fqdn(record.owner), record.ttl, rdata)
    else:
        message.delete(fqdn(record.owner), rdata)
    try:
        response = dns.query.tcp(message, host, timeout=timeout, port=port)
    except dns.tsig.PeerError as exc:
        raise UpdateFailed(
            f"DNS server {where} rejected the TSIG signature ({type(exc).__name__})",
            rcode="NOTAUTH",
            remediation="use the key the zone's allow-update names (same name, algorithm and secret)",
        ) from None
    except dns.exception.Timeout:
        raise UpdateFailed(
            f"DNS server {where} did not answer the update in time", remediation="check --server"
        ) from None
    except (OSError, dns.exception.DNSException) as exc:
        raise UpdateFailed(
            f"dynamic update to {where} failed: {type(exc).__name__}: {exc}",
            remediation="check --server and the zone",
        ) from None
    rcode = dns.rcode.to_text(response.rcode())
    if rcode != "NOERROR":
        raise UpdateFailed(
            f"DNS server {where} answered {rcode} to the update of {record.owner} in zone {zone_name}",
            rcode=rcode,
            remediation=_REMEDIATION.get(rcode, "see the DNS server's log"),
        )
    return UpdateResult(action, record, True, where, zone_name, key.describe() if key else None)
