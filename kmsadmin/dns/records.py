"""The KMS SRV record and its text forms (BIND zone-file lines, nsupdate scripts).

Record format from Microsoft's KMS host documentation (kms-create-host, "DNS SRV record"): Type SRV,
Service ``_vlmcs``, Protocol ``_tcp``, Priority 0, Weight 0, Port 1688, Hostname = the KMS host's
FQDN. The BIND form given in common-troubleshooting-procedures-kms-dns is
``Name: _vlmcs._TCP, Type: SRV, Priority: 0, Weight: 0, Port: 1688, Hostname: <FQDN or A-Name>``.

Everything here is pure: values are validated with :mod:`kmsadmin.validate` when a record is built,
so the text forms never carry anything but well-formed names and numbers.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Literal

from kmsadmin import validate
from kmsadmin.dns import DEFAULT_KMS_PORT, DEFAULT_TTL, DNS_PORT, SRV_PREFIX
from kmsadmin.errors import InvalidInput

Action = Literal["add", "remove"]

#: SRV priority and weight are 16-bit unsigned (RFC 2782); a DNS TTL is 31 bits (RFC 2181 §8)
U16_MAX = 65535
TTL_MAX = 2147483647


def _u16(value: int | str, what: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise InvalidInput(what, str(value), f"must be a number from 0 to {U16_MAX}") from None
    if not 0 <= number <= U16_MAX:
        raise InvalidInput(what, str(value), f"must be a number from 0 to {U16_MAX}")
    return number


def ttl(value: int | str) -> int:
    """A record TTL in seconds, 0..2147483647."""
    try:
        number = int(str(value).strip())
    except ValueError:
        raise InvalidInput("TTL", str(value), "must be whole seconds") from None
    if not 0 <= number <= TTL_MAX:
        raise InvalidInput("TTL", str(value), f"must be from 0 to {TTL_MAX} seconds")
    return number


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def fqdn(name: str) -> str:
    """An absolute name with its trailing dot, lower-cased (DNS names compare case-insensitively)."""
    return name.rstrip(".").lower() + "."


def srv_owner(domain: str) -> str:
    """``_vlmcs._tcp.<domain>`` without the trailing dot."""
    return f"{SRV_PREFIX}.{domain.rstrip('.').lower()}"


def relative_name(owner: str, zone: str) -> str:
    """The owner name relative to its zone, as ``Add-DnsServerResourceRecord -Name`` takes it.

    ``_vlmcs._tcp.branch.contoso.com`` in zone ``contoso.com`` is ``_vlmcs._tcp.branch``.
    """
    own = owner.rstrip(".").lower()
    top = zone.rstrip(".").lower()
    if own == top:
        return "@"
    if not own.endswith("." + top):
        raise InvalidInput("DNS zone", zone, f"{own} is not inside this zone")
    return own[: -len(top) - 1]


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """One ``_vlmcs._tcp`` SRV record: clients of ``domain`` find ``target`` on ``port``."""

    domain: str
    target: str
    port: int = DEFAULT_KMS_PORT
    priority: int = 0
    weight: int = 0
    ttl: int = DEFAULT_TTL

    @classmethod
    def build(
        cls,
        domain: str,
        target: str,
        *,
        port: int | str = DEFAULT_KMS_PORT,
        priority: int | str = 0,
        weight: int | str = 0,
        ttl_seconds: int | str = DEFAULT_TTL,
    ) -> SrvRecord:
        """Validate every part (exit 2 on bad input) and build the record."""
        dom = validate.domain(domain).lower()
        host = validate.hostname(target, what="KMS host FQDN").lower()
        if _is_address(host):
            # SRV targets are domain names (RFC 2782: "The domain name of the target host").
            raise InvalidInput("KMS host FQDN", target, "an SRV target must be a host name, not an address")
        return cls(
            domain=dom,
            target=host,
            port=validate.port(port),
            priority=_u16(priority, "priority"),
            weight=_u16(weight, "weight"),
            ttl=ttl(ttl_seconds),
        )

    @property
    def owner(self) -> str:
        """``_vlmcs._tcp.<domain>`` (no trailing dot)."""
        return srv_owner(self.domain)

    def rdata_text(self) -> str:
        """``priority weight port target.`` as in a zone file."""
        return f"{self.priority} {self.weight} {self.port} {fqdn(self.target)}"

    def zone_line(self) -> str:
        """An absolute zone-file line: ``_vlmcs._tcp.contoso.com. 3600 IN SRV 0 0 1688 kms1.contoso.com.``."""
        return f"{fqdn(self.owner)} {self.ttl} IN SRV {self.rdata_text()}"

    def same_rdata(self, other: SrvRecord) -> bool:
        """Same owner and data (TTL aside): what DNS treats as the same record."""
        return (fqdn(self.owner), self.rdata_text()) == (fqdn(other.owner), other.rdata_text())

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "name": self.owner,
            "domain": self.domain,
            "target": self.target,
            "port": self.port,
            "priority": self.priority,
            "weight": self.weight,
            "ttl": self.ttl,
        }


def bind_lines(record: SrvRecord, action: Action = "add") -> str:
    """Zone-file text for ``record``: the line to add, or the line to delete, with comments."""
    where = f"in the zone file that holds {record.domain} (then reload it: `rndc reload {record.domain}`)"
    if action == "add":
        head = f"; KMS SRV record for clients in {record.domain}: add this line {where}"
    else:
        head = f"; remove this line {where}"
    # The [DNS] troubleshooting doc notes KMS hosts can publish it themselves with allow-update.
    return "\n".join(
        [
            head,
            "; (kms-create-host: Service _vlmcs, Protocol _tcp, Priority 0, Weight 0, Port 1688,"
            " Hostname = KMS host FQDN)",
            record.zone_line(),
            "",
        ]
    )


def nsupdate_script(
    record: SrvRecord,
    action: Action = "add",
    *,
    zone: str | None = None,
    server: tuple[str, int] | None = None,
    key_file: str | None = None,
) -> str:
    """An ``nsupdate`` script that adds or removes ``record`` (run it as ``nsupdate [-k KEYFILE] FILE``).

    The TSIG key stays in its file (``nsupdate -k``): it is never written into the script.
    """
    lines = [f"; {action} the KMS SRV record {record.owner} -> {record.target}:{record.port}"]
    lines.append(f"; run: nsupdate {'-k ' + key_file + ' ' if key_file else ''}<this file>")
    if server is not None:
        host, port = server
        lines.append(f"server {host} {port}" if port != DNS_PORT else f"server {host}")
    lines.append(f"zone {fqdn(zone or record.domain)}")
    if action == "add":
        lines.append(f"update add {record.zone_line()}")
    else:
        lines.append(f"update delete {fqdn(record.owner)} IN SRV {record.rdata_text()}")
    lines.append("send")
    lines.append("")
    return "\n".join(lines)
