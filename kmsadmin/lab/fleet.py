"""A lab fleet: the simulated hosts, their locks, the lab's host keys and credentials, on disk.

State directory layout::

    fleet.json          lab settings: domain, host names and roles, clock offset, the activation
                        ledger (what the lab's stand-in for Microsoft's activation service remembers)
    hosts/<name>.json   one simulated host each (kmsadmin.lab.model.HostState)
    host-keys.json      the lab's host keys, one per host-key group (mode 0600)
    mak-keys.json       the lab's MAKs, by name (mode 0600; kmsadmin.lab.kms "Lab MAKs")
    keys/<kms>.key      the host key for that KMS host's group, nothing else (mode 0600)
    credentials.json    the lab's generated user name and password (mode 0600)
    runtime.json        written by ``kmsadmin lab up`` while serving: pid, ports, scheme
    lab.log             output of a detached ``lab up``

Every file is written atomically. Locks: one per host (held while a step runs on it) plus one
fleet-wide KMS lock, always taken after a host lock, guarding the KMS hosts' counters.
"""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from kmsadmin import catalog
from kmsadmin.errors import ConfigError
from kmsadmin.lab import dnspublish, kms, osmix
from kmsadmin.lab.model import (
    CHANNEL_MAK,
    CHANNEL_RETAIL,
    PROFILE_ORDER,
    SPPSVC_NOSCOPE_RULE,
    SPPSVC_RULE,
    ActivationObject,
    FirewallRule,
    HostState,
    OsInfo,
    Role,
    Security,
    Service,
    dump_host,
    json_bytes,
    load_host,
    replace_file,
    utc_iso,
    write_json_atomic,
    write_text_atomic,
)

DEFAULT_DOMAIN = "lab.test"
DEFAULT_USER = "labadmin"
_CLONED_CMID = str(uuid.uuid5(uuid.NAMESPACE_DNS, "cloned-image.kmsadmin.lab.test"))


@dataclass(slots=True)
class FleetMeta:
    """``fleet.json``."""

    domain: str = DEFAULT_DOMAIN
    created: str = ""
    clock_offset_seconds: float = 0.0
    hosts: dict[str, Role] = field(default_factory=dict)
    #: KMS host name -> the host-key group its ``keys/<name>.key`` file holds
    kms_groups: dict[str, str] = field(default_factory=dict)
    #: lab DNS: when on, activated KMS hosts that publish are found through ``_vlmcs._tcp.<domain>``
    dns_srv: bool = False
    ledger_hosts: dict[str, list[str]] = field(default_factory=dict)
    ledger_activations: dict[str, int] = field(default_factory=dict)
    #: activations each lab MAK allows, and the machines each MAK activated (MAK name -> host names)
    mak_limit: int = kms.DEFAULT_MAK_LIMIT
    mak_hosts: dict[str, list[str]] = field(default_factory=dict)
    #: the lab domain is an Active Directory forest and every host is a member (``lab up --forest``)
    forest: bool = False
    #: the forest's activation objects (Active Directory-based activation, kmsadmin.lab.kms "Lab forest")
    activation_objects: list[ActivationObject] = field(default_factory=list)
    #: what ``lab up`` was asked for (to refuse a mismatching restart)
    spec: dict[str, str] = field(default_factory=dict)
    #: per-host fault specs (server-side faults are re-applied on restart)
    faults: str = ""


_META_ADAPTER: TypeAdapter[FleetMeta] = TypeAdapter(FleetMeta)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state file's content at one moment, numbered per file (see :meth:`Fleet.snapshot`)."""

    path: Path
    data: bytes
    version: int


class Fleet:
    """The simulated hosts of one lab and everything shared between them."""

    def __init__(
        self,
        state_dir: Path,
        meta: FleetMeta,
        hosts: dict[str, HostState],
        host_keys: dict[str, str],
        password: str,
        mak_keys: dict[str, str] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.meta = meta
        self.hosts = hosts
        self.host_keys = kms.HostKeys(host_keys)
        self.username = DEFAULT_USER
        self.password = password
        self._locks = {name: threading.RLock() for name in hosts}
        self._index = _index(hosts)
        #: guards the KMS hosts' counters, contacts and the activation ledger; take it after a host lock
        self.kms_lock = threading.RLock()
        self._files_lock = threading.Lock()
        self._file_locks: dict[Path, threading.Lock] = {}
        self._versions: dict[Path, int] = {}
        self._written: dict[Path, int] = {}
        self.ledger = kms.ActivationLedger(meta.ledger_hosts, meta.ledger_activations)
        self.maks = kms.MakService(mak_keys or {}, meta.mak_limit, meta.mak_hosts)
        #: lab DNS on a real DNS server (``lab up --dns-server``), else None (kmsadmin.lab.dnspublish)
        self.dns = dnspublish.Publisher.load(state_dir)

    # ------------------------------------------------------------------ construction

    @classmethod
    def exists(cls, state_dir: Path) -> bool:
        """A lab was created in this state directory."""
        return (state_dir / "fleet.json").is_file()

    @classmethod
    def create(
        cls,
        state_dir: Path,
        *,
        hosts: int,
        kms_hosts: int = 1,
        os_mix: str | None = None,
        faults: str = "",
        domain: str = DEFAULT_DOMAIN,
        dns_srv: bool = False,
        mak_limit: int = kms.DEFAULT_MAK_LIMIT,
        forest: bool = False,
    ) -> Fleet:
        """A new lab: ``kms_hosts`` KMS hosts (kms01..) and ``hosts`` clients (client001..)."""
        if hosts < 0 or kms_hosts < 0 or hosts + kms_hosts == 0:
            raise ConfigError("a lab needs at least one host")
        fault_specs = osmix.parse_faults(faults)
        mix = osmix.expand_mix(osmix.parse_mix(os_mix or osmix.DEFAULT_MIX), hosts) if hosts else []
        state_dir.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC).replace(microsecond=0)
        meta = FleetMeta(
            domain=domain,
            created=utc_iso(now),
            dns_srv=dns_srv,
            spec={"hosts": str(hosts), "kms_hosts": str(kms_hosts), "os_mix": os_mix or "", "domain": domain},
            faults=faults,
            mak_limit=mak_limit,
            forest=forest,
        )
        taken: set[str] = set()
        host_keys: dict[str, str] = {}
        for group in kms.group_names():
            host_keys[group] = kms.generate_host_key(taken)
            taken.add(host_keys[group])
        mak_keys: dict[str, str] = {}
        for name in kms.MAK_NAMES:
            mak_keys[name] = kms.generate_host_key(taken)
            taken.add(mak_keys[name])
        made: dict[str, HostState] = {}
        width = max(3, len(str(hosts)))
        for i in range(1, kms_hosts + 1):
            name = f"kms{i:02d}"
            spec = fault_specs.get(name, osmix.FaultSpec())
            made[name] = _new_host(
                name=name,
                role="kms_host",
                profile=osmix.profile(osmix.DEFAULT_KMS_HOST_OS),
                domain=domain,
                now=now,
                faults=spec,
            )
        for i, entry in enumerate(mix, start=1):
            name = f"client{i:0{width}d}"
            spec = fault_specs.get(name, osmix.FaultSpec())
            host = _new_host(
                name=name,
                role="client",
                profile=osmix.profile(entry.os),
                domain=domain,
                now=now,
                faults=spec,
                channel=entry.channel,
            )
            if entry.office:
                _add_office(host, entry.office, now)
            made[name] = host
        unknown = sorted(set(fault_specs) - set(made))
        if unknown:
            raise ConfigError("faults name hosts that are not in the lab: " + ", ".join(unknown))
        meta.hosts = {name: host.role for name, host in made.items()}
        for host in made.values():
            # members of the lab forest: Win32_ComputerSystem.PartOfDomain is true
            host.security.domain_joined = forest
        for name, host in made.items():
            if host.role == "kms_host":
                meta.kms_groups[name] = _default_group(host)
        fleet = cls(state_dir, meta, made, host_keys, secrets.token_urlsafe(18), mak_keys)
        fleet._write_all()
        return fleet

    @classmethod
    def load(cls, state_dir: Path) -> Fleet:
        """Load a lab back from its state directory."""
        try:
            meta = _META_ADAPTER.validate_python(
                json.loads((state_dir / "fleet.json").read_text(encoding="utf-8"))
            )
            host_keys = json.loads((state_dir / "host-keys.json").read_text(encoding="utf-8"))
            creds = json.loads((state_dir / "credentials.json").read_text(encoding="utf-8"))
            mak_file = state_dir / "mak-keys.json"
            mak_keys = json.loads(mak_file.read_text(encoding="utf-8")) if mak_file.is_file() else {}
            hosts = {name: load_host(state_dir / "hosts" / f"{name}.json") for name in meta.hosts}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the lab in {state_dir}: {exc}") from exc
        fleet = cls(state_dir, meta, hosts, dict(host_keys), str(creds["password"]), dict(mak_keys))
        fleet.username = str(creds.get("username", DEFAULT_USER))
        return fleet

    # ------------------------------------------------------------------ persistence

    def _write_all(self) -> None:
        write_json_atomic(self.state_dir / "host-keys.json", dict(self.host_keys.keys), mode=0o600)
        write_json_atomic(self.state_dir / "mak-keys.json", dict(self.maks.keys), mode=0o600)
        write_json_atomic(
            self.state_dir / "credentials.json",
            {"username": self.username, "password": self.password},
            mode=0o600,
        )
        for name, group in self.meta.kms_groups.items():
            write_text_atomic(self.key_file(name), self.host_keys.keys[group] + "\n", mode=0o600)
        for name in self.hosts:
            self.save(name)
        self.save_meta()

    def save_meta(self) -> None:
        """Write ``fleet.json``."""
        self.write(self.snapshot_meta())

    def save(self, name: str) -> None:
        """Write one host's file."""
        self.write(self.snapshot(name))

    # A save is a snapshot (the state's bytes, taken under the lock that guards it) and a write (file
    # I/O, done after that lock is released). Under a fleet's load, file I/O inside the KMS lock let
    # every syscall hand the GIL to another thread while the lock was held, serializing all clients'
    # activations; snapshots are numbered so that a late write never replaces a newer file.

    def snapshot(self, name: str) -> Snapshot:
        """One host's state as it is now; the caller holds the lock guarding it."""
        data = dump_host(self.hosts[name])
        return self._numbered(self.state_dir / "hosts" / f"{name}.json", data)

    def snapshot_meta(self) -> Snapshot:
        """``fleet.json`` as it is now."""
        with self.kms_lock:
            meta = _META_ADAPTER.dump_python(self.meta, mode="json")
        return self._numbered(self.state_dir / "fleet.json", json_bytes(meta))

    def _numbered(self, path: Path, data: bytes) -> Snapshot:
        with self._files_lock:
            version = self._versions.get(path, 0) + 1
            self._versions[path] = version
        return Snapshot(path, data, version)

    def write(self, snapshot: Snapshot) -> None:
        """Write a snapshot unless a newer one of the same file was written already."""
        with self._files_lock:
            file_lock = self._file_locks.setdefault(snapshot.path, threading.Lock())
        with file_lock:
            if snapshot.version <= self._written.get(snapshot.path, 0):
                return
            replace_file(snapshot.path, snapshot.data)
            self._written[snapshot.path] = snapshot.version

    def key_file(self, name: str) -> Path:
        """The file holding the host key for a KMS host's group."""
        return self.state_dir / "keys" / f"{name}.key"

    # ------------------------------------------------------------------ access

    def lock(self, name: str) -> threading.RLock:
        """The lock of one host."""
        return self._locks[name]

    def find(self, name: str) -> HostState | None:
        """A host by inventory name or FQDN (case-insensitive)."""
        key = name.strip().rstrip(".").lower()
        # Every script looks its host up: an index instead of a scan over the whole fleet. A hit is
        # checked against the host's current name and FQDN; anything else takes the scan.
        host = self._index.get(key)
        if host is not None and self.hosts.get(host.name) is host and key in _keys(host):
            return host
        for host in self.hosts.values():
            if key in _keys(host):
                self._index = _index(self.hosts)
                return host
        return None

    def names(self, role: Role | None = None) -> list[str]:
        """Host names, KMS hosts first, each role in name order; optionally of one role only."""
        order = {"kms_host": 0, "client": 1}
        chosen = [n for n, r in self.meta.hosts.items() if role is None or r == role]
        return sorted(chosen, key=lambda n: (order[self.meta.hosts[n]], n))

    def now(self) -> datetime:
        """The lab clock (UTC; can be moved forward with :meth:`advance`)."""
        return (datetime.now(UTC) + timedelta(seconds=self.meta.clock_offset_seconds)).replace(microsecond=0)

    def advance(self, delta: timedelta) -> None:
        """Move the lab clock forward (tests, demos of the 30-day window and 180-day validity)."""
        with self.kms_lock:
            self.meta.clock_offset_seconds += delta.total_seconds()
            self.save_meta()

    def network(self) -> kms.Network:
        """Name resolution and DNS as lab clients see them."""
        return kms.Network(resolve=self.find, srv=self._srv)

    def _srv(self, domain: str) -> list[HostState]:
        if self.dns is not None:
            # a real DNS server: clients query its _vlmcs._tcp SRV records (kmsadmin.lab.dnspublish)
            return self.dns.srv_hosts(domain, self.find)
        # a KMS host "dynamically registers a DNS SRV record" unless publishing is disabled [DNS];
        # the lab only has DNS when dns_srv is on
        if not self.meta.dns_srv:
            return []
        zone = domain.strip(".").lower()
        return [
            host
            for host in self.hosts.values()
            if host.is_kms_host and host.service.dns_publishing and host.fqdn.lower().endswith("." + zone)
        ]

    def fault_specs(self) -> dict[str, osmix.FaultSpec]:
        """The per-host faults this lab was created with."""
        return osmix.parse_faults(self.meta.faults)

    def summary(self) -> list[dict[str, Any]]:
        """Per host: role, OS, edition, Windows licence status, KMS count (for ``lab status``)."""
        now = self.now()
        rows: list[dict[str, Any]] = []
        for name in self.names():
            host = self.hosts[name]
            with self.lock(name):
                host.refresh(now)
                windows = next(iter(host.keyed(catalog.WINDOWS_APP_ID)), None)
                rows.append(
                    {
                        "name": name,
                        "role": host.role,
                        "os": host.os.caption,
                        "edition": host.os.edition_id,
                        "license_status": windows.license_status if windows else 0,
                        "channel": windows.channel if windows else None,
                        "partial_key": windows.partial_key if windows else None,
                        "kms_count": kms.current_count(host, catalog.WINDOWS_APP_ID, now)
                        if host.is_kms_host
                        else None,
                        "office": [p.name for p in host.keyed(catalog.OFFICE_APP_ID)],
                    }
                )
        return rows


# ---------------------------------------------------------------------- host construction


def _firewall_defaults() -> list[FirewallRule]:
    # Windows defaults (microsoft.md §h): SPPSVC-In-TCP Private+Public scoped to LocalSubnet (RA4/RA6),
    # SPPSVC-In-TCP-NoScope Domain with no remote-address scope, both Active=FALSE
    return [
        FirewallRule(
            SPPSVC_RULE, enabled=False, profiles=["Private", "Public"], remote_addresses=["LocalSubnet"]
        ),
        FirewallRule(SPPSVC_NOSCOPE_RULE, enabled=False, profiles=["Domain"], remote_addresses=["Any"]),
    ]


def _keys(host: HostState) -> tuple[str, str]:
    return host.name.lower(), host.fqdn.lower()


def _index(hosts: dict[str, HostState]) -> dict[str, HostState]:
    """Lower-cased name and FQDN -> host; the first host in order wins, as in a scan."""
    index: dict[str, HostState] = {}
    for host in hosts.values():
        for key in _keys(host):
            index.setdefault(key, host)
    return index


def _new_host(
    *,
    name: str,
    role: Role,
    profile: osmix.OsProfile,
    domain: str,
    now: datetime,
    faults: osmix.FaultSpec,
    channel: str = "gvlk",
) -> HostState:
    os_info = OsInfo(
        profile=profile.name,
        caption=profile.caption,
        edition_id=profile.edition_id,
        build=profile.build,
        sku=profile.sku,
        product_type=profile.product_type,
        family=profile.family,
        installation_type=profile.installation_type,
        ubr=profile.ubr,
    )
    host = HostState(
        name=name,
        role=role,
        fqdn=f"{name}.{domain}",
        os=os_info,
        service=Service(cmid=_CLONED_CMID if faults.cloned_cmid else str(uuid.uuid4())),
        features={"VolumeActivation": False, "RSAT-VA-Tools": False} if profile.is_server else None,
        firewall=_firewall_defaults(),
        security=Security(
            is_admin=not faults.not_admin,
            token_filter_policy=0 if faults.token_filter else 1,
            dns_suffix=domain,
        ),
        clock_skew_minutes=faults.clock_skew_minutes,
        faults=list(faults.names),
    )
    if faults.kms_port is not None:
        host.service.listening_port = faults.kms_port
    host.hotfixes = _patched(host, profile)
    entry = kms.windows_entry(host)
    if channel == "gvlk" and entry is not None:
        # volume media installs the edition's GVLK; the machine starts in its 30-day OOB grace
        host.products.append(kms.windows_gvlk_product(host, str(entry.gvlk), now))
    else:
        made_up = kms.generate_host_key(set())
        kind = CHANNEL_MAK if channel == "mak" else CHANNEL_RETAIL
        host.products.append(kms.windows_other_product(host, kind, made_up, now))
    return host


def _patched(host: HostState, profile: osmix.OsProfile) -> list[str]:
    """The image's updates: its baseline plus every KMS-host prerequisite the catalog lists for it
    that its cumulative update (build.UBR) does not already supersede."""
    kbs = list(profile.hotfixes)
    host.hotfixes = kbs
    if profile.is_server or host.role == "kms_host":
        for group in kms.group_names():
            ok, _, _ = kms.carry_verdict(group, host)
            if ok:
                kbs.extend(kb for kb in kms.missing_updates(group, host) if kb not in kbs)
    return kbs


def _add_office(host: HostState, suite: str, now: datetime) -> None:
    name, label = osmix.OFFICE_SUITES[suite]
    entry = catalog.identify_office(name, f"{label}, VOLUME_KMSCLIENT channel")
    gvlk = str(entry.gvlk) if entry is not None else None
    host.products.append(kms.office_gvlk_product(name, label, gvlk, now))


def _default_group(host: HostState) -> str:
    """The Windows host-key group a lab KMS host gets: the one named for its OS, else the newest carried."""
    carried = [g for g in kms.group_names() if not kms.group_is_office(g) and kms.carry_verdict(g, host)[0]]
    if not carried:
        raise ConfigError(f"{host.os.caption} can carry no host-key group")
    named = [g for g in carried if kms.group_target(g) == host.os.family]
    return named[0] if named else carried[-1]


def profile_order(profiles: list[str]) -> list[str]:
    """Firewall profiles in Windows' order (Domain, Private, Public; Any alone)."""
    if any(p.lower() == "any" for p in profiles):
        return ["Any"]
    wanted = {p.lower() for p in profiles}
    return [p for p in PROFILE_ORDER if p.lower() in wanted]
