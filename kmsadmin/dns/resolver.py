"""DNS queries (dnspython) and TCP port probes for the KMS DNS check and the lab's discovery.

Queries go to one named server (``--server IP[:PORT]``) or to the system's resolvers
(``/etc/resolv.conf`` / the Windows resolver settings, as dnspython reads them). Each query is sent
over UDP and repeated over TCP when the answer is truncated (``dns.query.udp_with_fallback``): a
domain with many KMS hosts can exceed a 512-byte UDP answer.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any, Literal

from kmsadmin import validate
from kmsadmin.dns import DNS_PORT
from kmsadmin.dns.records import SrvRecord
from kmsadmin.errors import InvalidInput

#: how long one query waits for an answer, and a port probe for its TCP handshake
QUERY_TIMEOUT = 3.0
PROBE_TIMEOUT = 1.5

Outcome = Literal["ok", "nxdomain", "nodata", "refused", "servfail", "timeout", "error"]


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    """The answer to one query: its outcome, the records' text, and whether TCP was used."""

    name: str
    rdtype: str
    outcome: Outcome
    records: tuple[Any, ...] = ()
    ttl: int = 0
    tcp: bool = False
    server: str = ""
    detail: str = ""


def parse_server(value: str) -> tuple[str, int]:
    """``IP[:PORT]`` / ``[v6]:PORT`` / a host name: the DNS server to ask (port 53 by default)."""
    host, port = validate.host_port(value, default_port=DNS_PORT)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError:
            raise InvalidInput("DNS server", value, "the name does not resolve; give an IP address") from None
        host = str(infos[0][4][0])
    return host, port


def system_servers() -> list[tuple[str, int]]:
    """The system resolver's name servers."""
    import dns.resolver

    try:
        resolver = dns.resolver.Resolver(configure=True)
    except dns.resolver.NoResolverConfiguration:
        return []
    port = int(getattr(resolver, "port", DNS_PORT))
    return [(str(ns), port) for ns in resolver.nameservers]


class DnsClient:
    """Sends queries to one server, or to the system's name servers in turn."""

    def __init__(self, server: tuple[str, int] | None = None, *, timeout: float = QUERY_TIMEOUT) -> None:
        self.explicit = server is not None
        self.servers = [server] if server is not None else system_servers()
        self.timeout = timeout

    def describe(self) -> str:
        """The server(s) asked, for reports."""
        if not self.servers:
            return "(no name server configured)"
        return ", ".join(f"{h}:{p}" if p != DNS_PORT else h for h, p in self.servers)

    def query(self, name: str, rdtype: str) -> QueryAnswer:
        """Ask for ``name``/``rdtype``; never raises for DNS failures (the outcome says what happened)."""
        import dns.exception
        import dns.message
        import dns.query
        import dns.rcode
        import dns.rdatatype

        if not self.servers:
            return QueryAnswer(name, rdtype, "error", detail="no name server configured")
        qname = name.rstrip(".") + "."
        last = QueryAnswer(name, rdtype, "timeout", detail="no answer")
        for host, port in self.servers:
            request = dns.message.make_query(qname, rdtype)
            try:
                response, tcp = dns.query.udp_with_fallback(request, host, timeout=self.timeout, port=port)
            except dns.exception.Timeout:
                last = QueryAnswer(
                    name, rdtype, "timeout", server=f"{host}:{port}", detail="no answer in time"
                )
                continue
            except (OSError, dns.exception.DNSException) as exc:
                last = QueryAnswer(name, rdtype, "error", server=f"{host}:{port}", detail=type(exc).__name__)
                continue
            rcode = response.rcode()
            where = f"{host}:{port}"
            if rcode == dns.rcode.NXDOMAIN:
                return QueryAnswer(name, rdtype, "nxdomain", tcp=tcp, server=where)
            if rcode == dns.rcode.REFUSED:
                last = QueryAnswer(name, rdtype, "refused", tcp=tcp, server=where)
                continue
            if rcode != dns.rcode.NOERROR:
                last = QueryAnswer(
                    name, rdtype, "servfail", tcp=tcp, server=where, detail=dns.rcode.to_text(rcode)
                )
                continue
            wanted = dns.rdatatype.from_text(rdtype)
            for rrset in response.answer:
                if rrset.rdtype == wanted:
                    return QueryAnswer(name, rdtype, "ok", tuple(rrset), int(rrset.ttl), tcp, where)
            return QueryAnswer(name, rdtype, "nodata", tcp=tcp, server=where)
        return last

    def srv(self, domain: str) -> tuple[QueryAnswer, list[SrvRecord]]:
        """The ``_vlmcs._tcp.<domain>`` SRV records (empty unless the outcome is ``ok``)."""
        from kmsadmin.dns.records import srv_owner

        answer = self.query(srv_owner(domain), "SRV")
        records = [
            SrvRecord(
                domain=domain.rstrip(".").lower(),
                target=str(r.target).rstrip(".").lower(),
                port=int(r.port),
                priority=int(r.priority),
                weight=int(r.weight),
                ttl=answer.ttl,
            )
            for r in answer.records
        ]
        return answer, records

    def addresses(self, host: str) -> tuple[list[str], str]:
        """A and AAAA addresses of ``host`` and a note on how they were found.

        With an explicit server a name it is not authoritative for (REFUSED) is looked up by the
        system resolver, as a Windows client would with its own DNS settings.
        """
        try:
            return [str(ipaddress.ip_address(host))], "address literal"
        except ValueError:
            pass
        found: list[str] = []
        outcomes: list[str] = []
        for rdtype in ("A", "AAAA"):
            answer = self.query(host, rdtype)
            outcomes.append(answer.outcome)
            found.extend(str(r.address) for r in answer.records)
        if found:
            return found, "dns"
        if self.explicit and all(o in ("refused", "servfail", "error") for o in outcomes):
            try:
                infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            except OSError:
                return [], "does not resolve (server refused; system resolver: no address)"
            return sorted({str(i[4][0]) for i in infos}), "system resolver"
        return [], "no A/AAAA record" if "nxdomain" not in outcomes else "name does not exist"


@dataclass(frozen=True, slots=True)
class Probe:
    """A TCP connect attempt to one address and port."""

    address: str
    port: int
    open: bool
    millis: int
    error: str = ""


def probe_tcp(address: str, port: int, *, timeout: float = PROBE_TIMEOUT) -> Probe:
    """Try a TCP handshake to ``address:port`` (the KMS RPC endpoint; nothing is sent)."""
    started = time.monotonic()
    try:
        with socket.create_connection((address, port), timeout=timeout):
            pass
    except TimeoutError:
        return Probe(address, port, False, int((time.monotonic() - started) * 1000), "timed out")
    except OSError as exc:
        return Probe(
            address, port, False, int((time.monotonic() - started) * 1000), exc.strerror or type(exc).__name__
        )
    return Probe(address, port, True, int((time.monotonic() - started) * 1000))
