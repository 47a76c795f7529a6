"""Lab DNS: KMS hosts publish ``_vlmcs._tcp`` SRV records on a real DNS server; clients discover them there.

Used when a lab is started with a DNS server (``kmsadmin lab up --dns-server IP:PORT --dns-zone ZONE
[--tsig-key-file FILE]``; :func:`configure` stores that in ``<state>/dns.json``).

Publishing, as a Windows KMS host does it (common-troubleshooting-procedures-kms-dns: "By default, a
KMS host server dynamically registers a DNS SRV record one time every 24 hours"; kms-create-host:
the record is ``_vlmcs._tcp`` SRV, priority 0, weight 0, the listening port, the host's FQDN):

* a lab KMS host that serves (activated host key) and has publishing on registers
  ``_vlmcs._tcp.<zone>`` SRV -> ``<its FQDN>``:``<its listening port>`` by RFC 2136 dynamic update
  (TSIG-signed when a key file is given), together with its own A record, as the Windows DNS client
  registers the host's address;
* it does so when its host key is activated, when its KMS settings change (the Software Protection
  service restarts and registers again, e.g. publishing turned on or a new port), and again on any
  step once 24 hours of lab time have passed since the last registration;
* best effort: a refused or failed update is logged and remembered (:attr:`Publisher.events`), never
  fails the step (Windows logs a failed publication in its event log and carries on);
* publishing turned off stops re-registration; records already in DNS stay ("slmgr /cdns" does not
  delete them).

Discovery, as a KMS client does it ("Manually assign a KMS host" in the same doc): a client with no
pinned host queries ``_vlmcs._tcp.<lookup domain or its DNS suffix>`` on the lab's DNS server. No
record: ``0x8007232B`` ("DNS name does not exist"; ``0x8007251D`` when the name holds no SRV data). A
record whose target is not a serving lab host or whose port is not that host's listening port is a
host that does not answer; when no listed host answers: ``0xC004F074``. Answers come back in random
order within a priority (RFC 2782), and the KMS host cache of :mod:`kmsadmin.lab.kms` (the last host
that activated the client is tried first) applies to the answer.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from kmsadmin import validate
from kmsadmin.dns.records import SrvRecord, fqdn, srv_owner
from kmsadmin.dns.resolver import DnsClient, parse_server
from kmsadmin.dns.tsig import TsigKey, load_key_file
from kmsadmin.dns.update import UpdateFailed
from kmsadmin.errors import InvalidInput
from kmsadmin.lab import kms
from kmsadmin.lab.model import HostState, write_json_atomic

log = logging.getLogger(__name__)

CONFIG_FILE = "dns.json"
#: "dynamically registers a DNS SRV record one time every 24 hours" [DNS]
REREGISTER_AFTER = timedelta(hours=24)
#: TTL of what the lab registers (Windows registers A records with a 20-minute TTL by default)
RECORD_TTL = 1200
#: DNS_ERROR_RCODE_NAME_ERROR "DNS name does not exist" and DNS_INFO_NO_RECORDS "No records found"
E_DNS_NAME_NOT_FOUND = 0x8007232B
E_DNS_NO_RECORDS = 0x8007251D
#: DNS_ERROR_RCODE_SERVER_FAILURE "DNS server failure"
E_DNS_SERVER_FAILURE = 0x8007232A
#: DNS_ERROR_RCODE_REFUSED "DNS operation refused" (Win32 9005)
E_DNS_REFUSED = 0x8007232D
#: steps after which a serving KMS host registers (host key activated; settings changed: sppsvc restarted)
REGISTERING_STEPS = frozenset({"activate", "phone-deposit", "kms-host-settings"})


@dataclass(frozen=True, slots=True)
class LabDns:
    """The lab's DNS server, the zone its hosts publish in, and the TSIG key file that may update it."""

    server: str
    port: int
    zone: str
    key_file: str | None = None
    #: the address lab hosts register for themselves (the lab listens on loopback)
    address: str = "127.0.0.1"

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the key by file name only; the secret stays in its file)."""
        return {
            "server": self.server,
            "port": self.port,
            "zone": self.zone,
            "key_file": self.key_file,
            "address": self.address,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabDns:
        """Inverse of :meth:`to_dict`."""
        return cls(
            server=str(data["server"]),
            port=int(data["port"]),
            zone=str(data["zone"]),
            key_file=str(data["key_file"]) if data.get("key_file") else None,
            address=str(data.get("address") or "127.0.0.1"),
        )

    def key(self) -> TsigKey | None:
        """The TSIG key, read from its file each time (never kept in the lab's state files)."""
        return load_key_file(self.key_file) if self.key_file else None

    def client(self) -> DnsClient:
        """A dnspython client asking this server."""
        return DnsClient((self.server, self.port), timeout=2.0)


def make_config(
    dns_server: str, zone: str, tsig_key_file: Path | str | None = None, *, address: str = "127.0.0.1"
) -> LabDns:
    """Validate ``--dns-server IP[:PORT]``, ``--dns-zone`` and ``--tsig-key-file`` (exit 2 on bad input)."""
    host, port = parse_server(dns_server)
    key_path = str(Path(tsig_key_file).resolve()) if tsig_key_file else None
    if key_path:
        load_key_file(key_path)
    return LabDns(host, port, validate.domain(zone).lower(), key_path, validate.hostname(address))


def configure(state_dir: Path, dns_server: str, zone: str, tsig_key_file: Path | str | None = None) -> LabDns:
    """Check the options and store them in ``<state_dir>/dns.json`` (what ``lab up --dns-server`` calls)."""
    config = make_config(dns_server, zone, tsig_key_file)
    write_json_atomic(state_dir / CONFIG_FILE, config.to_dict())
    return config


def load_config(state_dir: Path) -> LabDns | None:
    """The stored configuration, or None when the lab has no DNS server."""
    path = state_dir / CONFIG_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise InvalidInput("lab DNS configuration", str(path), "not a JSON object")
    return LabDns.from_dict(data)


def remove_config(state_dir: Path) -> None:
    """Forget the lab's DNS server (``lab up`` without ``--dns-server`` on a lab that had one)."""
    (state_dir / CONFIG_FILE).unlink(missing_ok=True)


def publisher_for_options(
    state_dir: Path, dns_server: str | None, zone: str, tsig_key_file: Path | str | None = None
) -> Publisher | None:
    """What ``lab up`` calls: with ``--dns-server`` store the settings and return a publisher; without
    it forget any earlier DNS settings of this lab (the lab then has no DNS server)."""
    if not dns_server:
        remove_config(state_dir)
        return None
    return Publisher(configure(state_dir, dns_server, zone, tsig_key_file))


@dataclass(frozen=True, slots=True)
class PublishEvent:
    """One registration attempt (the lab's stand-in for the KMS host's event log)."""

    host: str
    time: str
    ok: bool
    record: str
    detail: str = ""


class Publisher:
    """Registers lab KMS hosts' SRV records and answers lab clients' SRV lookups (thread-safe)."""

    def __init__(self, config: LabDns, *, rng: random.Random | None = None) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._last: dict[str, datetime] = {}
        self._rng = rng or random.Random()  # noqa: S311 - ordering of SRV answers, not security
        self.events: list[PublishEvent] = []

    @classmethod
    def load(cls, state_dir: Path) -> Publisher | None:
        """The publisher of a lab started with a DNS server, else None."""
        config = load_config(state_dir)
        return None if config is None else cls(config)

    # ---------------------------------------------------------------- publishing

    def wants_to_publish(self, host: HostState) -> bool:
        """A serving KMS host with DNS publishing on (DisableKeyManagementServiceDnsPublishing not set)."""
        return host.role == "kms_host" and host.serves() and host.service.dns_publishing

    def after_step(self, host: HostState, step: str, changed: bool, now: datetime) -> None:
        """The engine's hook after every step: register when Windows would."""
        if not self.wants_to_publish(host):
            return
        last = self._last.get(host.name)
        due = last is None or now - last >= REREGISTER_AFTER
        if (changed and step in REGISTERING_STEPS) or due:
            self.publish(host, now)

    def record_for(self, host: HostState) -> SrvRecord:
        """The SRV record ``host`` registers: ``_vlmcs._tcp.<zone>`` -> FQDN:listening port, priority/weight 0."""
        return SrvRecord.build(
            self.config.zone, host.fqdn, port=host.service.listening_port, ttl_seconds=RECORD_TTL
        )

    def publish(self, host: HostState, now: datetime) -> bool:
        """Register ``host``'s A and SRV records now (best effort); True when the server took them."""
        record = self.record_for(host)
        shown = f"{record.owner} SRV {record.rdata_text()}"
        try:
            self._update(host, record)
        except (UpdateFailed, InvalidInput, OSError) as exc:
            log.warning("lab dns: %s could not register %s: %s", host.name, record.owner, exc)
            # Windows logs event 12293 "Publishing the Key Management Service (KMS) to DNS in the '%2'
            # domain failed. Info: %1" in the Key Management Service log (sppsvc.exe message table)
            refused = isinstance(exc, UpdateFailed) and exc.rcode == "REFUSED"
            code = E_DNS_REFUSED if refused else E_DNS_SERVER_FAILURE
            kms.log_event(host, 12293, [f"0x{code:X}", self.config.zone], now)
            with self._lock:
                self.events.append(PublishEvent(host.name, now.isoformat(), False, shown, str(exc)))
                self._last[host.name] = now
            return False
        with self._lock:
            self.events.append(PublishEvent(host.name, now.isoformat(), True, shown))
            self._last[host.name] = now
        return True

    def _update(self, host: HostState, record: SrvRecord) -> None:
        import dns.exception
        import dns.query
        import dns.rcode
        import dns.rdata
        import dns.rdataclass
        import dns.rdatatype
        import dns.update

        key = self.config.key()
        zone = fqdn(self.config.zone)
        if key is not None:
            message = dns.update.UpdateMessage(
                zone, keyring=key.keyring(), keyname=key.keyname(), keyalgorithm=key.algorithm
            )
        else:
            message = dns.update.UpdateMessage(zone)
        name = fqdn(host.fqdn)
        if name.endswith("." + zone):
            # the host's own address, as the DNS client service registers it
            message.replace(name, RECORD_TTL, "A", self.config.address)
        owner = fqdn(record.owner)
        _, current = self.config.client().srv(record.domain)
        for old in current:
            # the host replaces its own earlier registration (e.g. after a listening-port change)
            if old.target == record.target and not old.same_rdata(record):
                message.delete(
                    owner, dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SRV, old.rdata_text())
                )
        message.add(
            owner, record.ttl, dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SRV, record.rdata_text())
        )
        try:
            response = dns.query.tcp(message, self.config.server, timeout=3.0, port=self.config.port)
        except dns.exception.DNSException as exc:
            raise UpdateFailed(f"dynamic update failed: {type(exc).__name__}") from None
        rcode = dns.rcode.to_text(response.rcode())
        if rcode != "NOERROR":
            raise UpdateFailed(f"the DNS server answered {rcode}", rcode=rcode)

    # ---------------------------------------------------------------- discovery

    def srv_hosts(self, domain: str, resolve: Callable[[str], HostState | None]) -> list[HostState]:
        """The serving lab KMS hosts ``_vlmcs._tcp.<domain>`` names, in client try order.

        Raises :class:`kmsadmin.lab.kms.LabFailure` with the client's error when there is nothing to try.
        """
        owner = srv_owner(domain)
        answer, records = self.config.client().srv(domain)
        if answer.outcome == "nxdomain":
            raise kms.LabFailure(E_DNS_NAME_NOT_FOUND, "Activate", f"no SRV record at {owner}")
        if answer.outcome == "nodata":
            raise kms.LabFailure(E_DNS_NO_RECORDS, "Activate", f"{owner} holds no SRV record")
        if answer.outcome != "ok":
            raise kms.LabFailure(E_DNS_SERVER_FAILURE, "Activate", f"SRV lookup of {owner}: {answer.outcome}")
        ordered = self._order(records)
        found: list[HostState] = []
        dead: list[str] = []
        for record in ordered:
            host = resolve(record.target)
            if host is None or not host.is_kms_host or record.port != host.service.listening_port:
                # nothing answers there: that attempt fails (RPC server unavailable) and the client
                # tries the next record
                dead.append(f"{record.target}:{record.port}")
                continue
            if host not in found:
                found.append(host)
        if not found:
            raise kms.LabFailure(
                kms.SL_E_VL_BINDING_SERVICE_UNAVAILABLE,
                "Activate",
                f"no KMS host listed at {owner} answered ({', '.join(dead)})",
            )
        return found

    def _order(self, records: list[SrvRecord]) -> list[SrvRecord]:
        """Lowest priority first; within a priority a random order (DNS "returns the list in random order")."""
        shuffled = list(records)
        with self._lock:
            self._rng.shuffle(shuffled)
        return sorted(shuffled, key=lambda r: r.priority)
