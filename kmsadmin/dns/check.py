"""``kmsadmin dns check``: are the ``_vlmcs._tcp`` SRV records right, and what do clients get if not?

How a client finds its KMS host (common-troubleshooting-procedures-kms-dns, "Manually assign a KMS
host"; configure-dns-to-activate-office-by-using-kms): it queries ``_vlmcs._tcp`` SRV records "within
the membership zone of the client" (its primary DNS suffix), DNS returns the list in random order,
the client tries one host and, when that fails, another at random; a host that answers is cached.

So every finding is explained by the error a client sees (activation-error-codes):

* no records: ``0x8007232B`` "DNS name does not exist" (``0x8007251D`` when the name exists but holds
  no SRV record) — "The KMS client cannot find KMS server resource records (SRV RRs) in DNS";
* a record whose host is gone, does not resolve or does not listen: that attempt fails with
  ``0x800706BA`` (RPC server unavailable; "stale SRV records") and the client retries another host;
  when every host fails, ``0xC004F074`` "No Key Management Service (KMS) could be contacted";
* records only in a parent zone: clients of the child zone never see them (``0x8007232B``).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from kmsadmin.dns.fleetview import FleetView
from kmsadmin.dns.records import SrvRecord, srv_owner
from kmsadmin.dns.resolver import DnsClient, Probe, QueryAnswer, probe_tcp

Severity = Literal["error", "warning"]

#: port probes run at the same time
PROBE_WORKERS = 16

#: client-side errors (activation-error-codes; slerror.h / winerror.h names)
NAME_NOT_FOUND = "0x8007232B"  # DNS_ERROR_RCODE_NAME_ERROR: "DNS name does not exist"
NO_RECORDS = "0x8007251D"  # DNS_INFO_NO_RECORDS: "No records found for DNS query"
SERVER_FAILURE = "0x8007232A"  # DNS_ERROR_RCODE_SERVER_FAILURE: "DNS server failure"
RPC_UNAVAILABLE = "0x800706BA"  # RPC_S_SERVER_UNAVAILABLE: firewall on TCP 1688, stale SRV records
NO_KMS_CONTACTED = "0xC004F074"  # SL_E_VL_BINDING_SERVICE_UNAVAILABLE

CLIENT_ERRORS = {
    NAME_NOT_FOUND: "DNS name does not exist: the client finds no KMS SRV records",
    NO_RECORDS: "No records found for DNS query: the name exists but holds no KMS SRV record",
    SERVER_FAILURE: "DNS server failure: the SRV lookup itself failed",
    RPC_UNAVAILABLE: "The RPC server is unavailable: the KMS host named by the record does not answer",
    NO_KMS_CONTACTED: "No Key Management Service (KMS) could be contacted: every host the client tried "
    "failed",
}


def client_error_meaning(code: str) -> str:
    """The catalog's message and meaning of an activation HRESULT (activation-error-codes), else ours."""
    from kmsadmin.catalog import hresult_info

    info = hresult_info(code)
    if info.known:
        return f"{info.message} {info.meaning}".strip()
    return CLIENT_ERRORS.get(code, "")


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem, the client error it causes, and how to fix it."""

    kind: str
    severity: Severity
    domain: str
    message: str
    client_error: str
    remediation: str
    record: SrvRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "kind": self.kind,
            "severity": self.severity,
            "domain": self.domain,
            "message": self.message,
            "client_error": self.client_error,
            "client_error_meaning": client_error_meaning(self.client_error),
            "remediation": self.remediation,
            "record": self.record.to_dict() if self.record else None,
        }


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """What was found for one record's target."""

    record: SrvRecord
    addresses: tuple[str, ...]
    resolution: str
    probes: tuple[Probe, ...]
    inventory_host: str | None

    @property
    def answers(self) -> bool:
        """Some address accepted a TCP connection on the record's port."""
        return any(p.open for p in self.probes)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            **self.record.to_dict(),
            "addresses": list(self.addresses),
            "resolution": self.resolution,
            "port_open": self.answers,
            "probes": [
                {"address": p.address, "port": p.port, "open": p.open, "ms": p.millis, "error": p.error}
                for p in self.probes
            ],
            "inventory_host": self.inventory_host,
        }


@dataclass(slots=True)
class DomainStatus:
    """The SRV lookup of one domain."""

    domain: str
    answer: QueryAnswer
    targets: list[TargetStatus] = field(default_factory=list)
    clients: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "domain": self.domain,
            "name": srv_owner(self.domain),
            "outcome": self.answer.outcome,
            "tcp": self.answer.tcp,
            "server": self.answer.server,
            "clients": self.clients,
            "records": [t.to_dict() for t in self.targets],
        }


@dataclass(slots=True)
class CheckReport:
    """The whole check: the domains asked, their records and the findings."""

    domain: str
    server: str
    domains: list[DomainStatus] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    inventory: str | None = None

    @property
    def healthy(self) -> bool:
        """No findings at all."""
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "domain": self.domain,
            "server": self.server,
            "inventory": self.inventory,
            "healthy": self.healthy,
            "domains": [d.to_dict() for d in self.domains],
            "findings": [f.to_dict() for f in self.findings],
        }


Prober = Callable[[str, int], Probe]


def _missing(status: DomainStatus, primary: str, records_elsewhere: list[str]) -> Finding:
    domain = status.domain
    outcome = status.answer.outcome
    code = NO_RECORDS if outcome == "nodata" else NAME_NOT_FOUND
    why = "name exists, no SRV data" if outcome == "nodata" else "name does not exist"
    who = f"{status.clients} inventory client(s) in {domain}" if status.clients else f"clients in {domain}"
    if domain != primary and records_elsewhere:
        return Finding(
            "wrong-zone",
            "error",
            domain,
            f"{who} query {srv_owner(domain)}, which has no SRV record; the KMS records are only in "
            f"{', '.join(records_elsewhere)}, a zone these clients never query",
            code,
            f"publish into {domain} too: `kmsadmin dns publish-list -i INVENTORY --domains "
            f"{','.join([*records_elsewhere, domain])}` (DnsDomainPublishList), or add the record there with "
            f"`kmsadmin dns record add {domain} --target KMS_FQDN`, or point these clients at the other "
            "domain "
            f"with `kmsadmin convert-client --lookup-domain {records_elsewhere[0]}` (slmgr /skms-domain)",
        )
    return Finding(
        "missing",
        "error",
        domain,
        f"no SRV record at {srv_owner(domain)} ({why}): {who} cannot discover a KMS host",
        code,
        "turn DNS publishing on on the KMS hosts (`kmsadmin dns publishing on -i INVENTORY`) with a zone "
        "that accepts their dynamic updates, or create the record: "
        f"`kmsadmin dns record add {domain} --target KMS_FQDN`; "
        "or pin clients with `kmsadmin convert-client --kms-host NAME` (slmgr /skms)",
    )


def _lookup_failed(status: DomainStatus) -> Finding:
    answer = status.answer
    return Finding(
        "lookup-failed",
        "error",
        status.domain,
        f"the SRV lookup of {srv_owner(status.domain)} failed ({answer.outcome}"
        f"{': ' + answer.detail if answer.detail else ''}; server {answer.server or 'none'})",
        SERVER_FAILURE,
        "check that the clients' DNS servers answer for this zone (and --server, if given)",
    )


def _target_findings(
    domain: str, target: TargetStatus, view: FleetView | None, kms_port_of: int | None
) -> list[Finding]:
    record = target.record
    findings: list[Finding] = []
    retry = (
        f"clients that pick it fail with {RPC_UNAVAILABLE} and try another host; when no listed host "
        f"answers they fail with {NO_KMS_CONTACTED}"
    )
    remove = f"`kmsadmin dns record remove {domain} --target {record.target} --port {record.port}`"
    if view is not None and target.inventory_host is None:
        findings.append(
            Finding(
                "stale",
                "error",
                domain,
                f"{record.target}:{record.port} is not a KMS host in the inventory ({retry})",
                NO_KMS_CONTACTED,
                f"remove the record ({remove}) or add the host to the kms_hosts group if it is one",
                record,
            )
        )
    if not target.addresses:
        findings.append(
            Finding(
                "stale",
                "error",
                domain,
                f"{record.target} does not resolve ({target.resolution}); {retry}",
                NO_KMS_CONTACTED,
                f"remove the stale record ({remove}) or register the host's A/AAAA record",
                record,
            )
        )
        return findings
    if kms_port_of is not None and record.port != kms_port_of:
        findings.append(
            Finding(
                "wrong-port",
                "error",
                domain,
                f"{record.target} listens for KMS on port {kms_port_of} (inventory) but the record says "
                f"{record.port}; {retry}",
                RPC_UNAVAILABLE,
                f"replace the record: {remove} then "
                f"`kmsadmin dns record add {domain} --target {record.target} "
                f"--port {kms_port_of}` (or let the host re-publish: `kmsadmin dns publishing on`)",
                record,
            )
        )
    elif not target.answers:
        where = ", ".join(f"{p.address} ({p.error or 'closed'})" for p in target.probes)
        findings.append(
            Finding(
                "stale",
                "error",
                domain,
                f"nothing answers on {record.target} port {record.port}: {where}; {retry}",
                RPC_UNAVAILABLE,
                "open TCP port "
                f"{record.port} on the host "
                "(Set-NetFirewallRule -Name SPPSVC-In-TCP -Profile Domain,Private -Enabled True) "
                f"and check the KMS host is activated, or remove the stale record ({remove})",
                record,
            )
        )
    return findings


def _duplicates(status: DomainStatus) -> list[Finding]:
    findings: list[Finding] = []
    by_target: dict[str, list[SrvRecord]] = {}
    for target in status.targets:
        by_target.setdefault(target.record.target, []).append(target.record)
    for name, records in sorted(by_target.items()):
        if len(records) > 1:
            shown = ", ".join(f"port {r.port} priority {r.priority} weight {r.weight}" for r in records)
            findings.append(
                Finding(
                    "duplicate",
                    "warning",
                    status.domain,
                    f"{name} is listed {len(records)} times ({shown}); clients may pick the wrong entry",
                    RPC_UNAVAILABLE,
                    "keep one record per KMS host: remove the extra ones with "
                    f"`kmsadmin dns record remove {status.domain} "
                    f"--target {name} --port N`",
                    records[-1],
                )
            )
    by_endpoint: dict[tuple[str, int], list[str]] = {}
    for target in status.targets:
        for address in target.addresses:
            by_endpoint.setdefault((address, target.record.port), []).append(target.record.target)
    reported: set[tuple[str, ...]] = set()
    for (address, port), names in sorted(by_endpoint.items()):
        distinct = tuple(sorted(set(names)))
        if len(distinct) > 1 and distinct not in reported:
            reported.add(distinct)
            findings.append(
                Finding(
                    "duplicate",
                    "warning",
                    status.domain,
                    f"{', '.join(distinct)} all point at {address} port {port}: "
                    "one KMS host listed under several names",
                    RPC_UNAVAILABLE,
                    "keep one record per KMS host (the host's FQDN) and remove the aliases",
                )
            )
    return findings


def run_check(
    domain: str,
    client: DnsClient,
    view: FleetView | None = None,
    *,
    prober: Prober | None = None,
) -> CheckReport:
    """Query ``_vlmcs._tcp.<domain>`` and each client domain of the inventory; resolve and probe targets."""
    probe = prober or probe_tcp
    primary = domain.rstrip(".").lower()
    report = CheckReport(primary, client.describe(), inventory=view.source if view else None)
    client_domains = view.client_domains() if view else {}
    names = [primary, *sorted(d for d in client_domains if d != primary)]
    resolved: list[tuple[DomainStatus, SrvRecord, list[str], str]] = []
    for name in names:
        answer, records = client.srv(name)
        status = DomainStatus(name, answer, clients=client_domains.get(name, 0))
        report.domains.append(status)
        for record in records:
            addresses, how = client.addresses(record.target)
            resolved.append((status, record, addresses, how))
    # probes run in parallel: a filtered port costs a full timeout, and a domain may list many hosts
    endpoints = sorted({(a, r.port) for _, r, addresses, _ in resolved for a in addresses})
    with ThreadPoolExecutor(max_workers=max(1, min(PROBE_WORKERS, len(endpoints)))) as pool:
        probed = dict(zip(endpoints, pool.map(lambda e: probe(e[0], e[1]), endpoints), strict=True))
    for status, record, addresses, how in resolved:
        host = view.kms_host(record.target) if view else None
        probes = tuple(probed[(a, record.port)] for a in addresses)
        status.targets.append(
            TargetStatus(record, tuple(addresses), how, probes, host.name if host else None)
        )
    with_records = [d.domain for d in report.domains if d.targets]
    for status in report.domains:
        if status.answer.outcome in ("nxdomain", "nodata"):
            if status.domain == primary or status.clients:
                report.findings.append(
                    _missing(status, primary, [d for d in with_records if d != status.domain])
                )
            continue
        if status.answer.outcome != "ok":
            report.findings.append(_lookup_failed(status))
            continue
        report.findings.extend(_duplicates(status))
        for target in status.targets:
            host = view.kms_host(target.record.target) if view else None
            report.findings.extend(_target_findings(status.domain, target, view, host.port if host else None))
    if view is not None:
        report.findings.extend(_unpublished(report, view))
    return report


def _unpublished(report: CheckReport, view: FleetView) -> list[Finding]:
    """Publishing KMS hosts whose own domain was checked but holds no record for them."""
    findings: list[Finding] = []
    listed = {(d.domain, t.record.target) for d in report.domains for t in d.targets}
    checked = {d.domain for d in report.domains if d.answer.outcome in ("ok", "nxdomain", "nodata")}
    for host in view.kms_hosts:
        if not host.publishing or host.domain not in checked or (host.domain, host.fqdn) in listed:
            continue
        findings.append(
            Finding(
                "unpublished",
                "warning",
                host.domain,
                f"KMS host {host.fqdn} (inventory {host.name}) publishes but has no record in "
                f"{srv_owner(host.domain)}: "
                "clients never discover it (no failover or load sharing with it)",
                NO_KMS_CONTACTED,
                "only the first KMS host can create the SRV record; give the others rights on it "
                f"(`kmsadmin dns record add {host.domain} --target {host.fqdn} --via winrm --dns-server DNS "
                "--kms-hosts-group GROUP`), or add the record directly",
            )
        )
    return findings
