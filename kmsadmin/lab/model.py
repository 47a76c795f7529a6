"""The simulated Windows host: plain dataclasses, persisted as JSON (one file per host).

A :class:`HostState` holds what kmsadmin's scripts read and change on a real host: the OS identity
(``Win32_OperatingSystem`` + EditionID), Windows features, the ``SPPSVC-In-TCP`` firewall rules, the
licensing products (``SoftwareLicensingProduct``), the licensing service (``SoftwareLicensingService``:
KMS client settings, and on a KMS host its settings, counters and the client contacts it counts),
hotfixes, UI language, the caller's security context and the host's clock skew.

No product key is ever stored: a product keeps its last five characters (``PartialProductKey``),
a SHA-256 digest (to derive the phone-activation Installation ID) and, for host keys, the key group.
GVLKs are public (Microsoft's "KMS client activation keys" pages) and are kept by name.

Files are written atomically (temporary file in the same directory, ``os.replace``): a reader, or a
restart after the lab process died, never sees half a file. Host and fleet state, rewritten after
every changing step, go through :func:`replace_file` without fsync (a simulation, not a record);
everything else through :func:`write_bytes_atomic`, fsynced.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter

Role = Literal["kms_host", "client"]

SCHEMA_VERSION = 1

#: SoftwareLicensingProduct.LicenseStatus values [SPPWMI]
UNLICENSED, LICENSED, OOB_GRACE, OOT_GRACE, NON_GENUINE_GRACE, NOTIFICATION, EXTENDED_GRACE = range(7)

#: out-of-box grace of a volume installation: "During the 30-day out-of-the-box grace period ..." [TSKMS]
OOB_GRACE_DAYS = 30
#: "KMS activations are valid for 180 days" [PLAN24]; 180 * 24 * 60 = 259200 minutes
KMS_VALIDITY_DAYS = 180
#: after a KMS activation expires the product is "out-of-tolerance ... for 30 days" [OKMS]
OOT_GRACE_DAYS = 30
#: VLActivationInterval default "(two hours)", VLRenewalInterval "10,080 minutes (7 days)" [SLMGRDOC]
DEFAULT_ACTIVATION_INTERVAL = 120
DEFAULT_RENEWAL_INTERVAL = 10080
#: "By default, a KMS host is configured to use TCP on port 1688" [PLAN24]
DEFAULT_KMS_PORT = 1688

CHANNEL_GVLK = "Volume:GVLK"
CHANNEL_CSVLK = "Volume:CSVLK"
CHANNEL_MAK = "Volume:MAK"
CHANNEL_RETAIL = "Retail"

#: firewall rules as Windows ships them (microsoft.md §h, default rule definitions): SPPSVC-In-TCP for
#: Private+Public, SPPSVC-In-TCP-NoScope for Domain, both disabled
SPPSVC_RULE = "SPPSVC-In-TCP"
SPPSVC_NOSCOPE_RULE = "SPPSVC-In-TCP-NoScope"
#: the lab LAN: the local subnet of every host without an ``address`` of its own
LAB_SUBNET = "10.0.0.0/16"
PROFILE_ORDER = ("Domain", "Private", "Public")


def utc_iso(moment: datetime) -> str:
    """``2026-11-22T10:00:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@lru_cache(maxsize=4096)
def parse_iso(text: str) -> datetime:
    """Inverse of :func:`utc_iso`.

    Cached: the same few timestamps (grace expiries, KMS contacts) are read on every step, and
    ``strptime`` is slow; datetimes are immutable, so sharing them is safe.
    """
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


@dataclass(slots=True)
class OsInfo:
    """Win32_OperatingSystem + registry EditionID / InstallationType."""

    profile: str
    caption: str
    edition_id: str
    build: int
    sku: int
    product_type: int
    family: str
    installation_type: str
    #: HKLM\...\CurrentVersion\UBR; 0 = not reported (facts: null)
    ubr: int = 0

    @property
    def version(self) -> str:
        """Win32_OperatingSystem.Version."""
        return f"10.0.{self.build}"

    @property
    def is_server(self) -> bool:
        """ProductType 2 (domain controller) and 3 (server)."""
        return self.product_type != 1

    @property
    def is_core(self) -> bool:
        """Server Core installation (no Volume Activation Tools, microsoft.md §h [CORE])."""
        return self.installation_type == "Server Core"


@dataclass(slots=True)
class FirewallRule:
    """One Windows Firewall rule (Get-NetFirewallRule Name / Enabled / Profile)."""

    name: str
    enabled: bool = False
    profiles: list[str] = field(default_factory=list)
    #: remote-address scope (Get-NetFirewallAddressFilter RemoteAddress): "Any", "LocalSubnet",
    #: subnets as network/prefix
    remote_addresses: list[str] = field(default_factory=lambda: ["Any"])


@dataclass(slots=True)
class Product:
    """One SoftwareLicensingProduct (a licence with, usually, a product key installed)."""

    activation_id: str
    application_id: str
    name: str
    description: str
    channel: str
    #: the edition (Windows EditionID) or Office suite this licence belongs to
    edition: str
    partial_key: str | None = None
    key_digest: str | None = None
    #: the installed GVLK (public) when ``channel`` is Volume:GVLK
    gvlk: str | None = None
    #: the host-key group when ``channel`` is Volume:CSVLK
    host_key_group: str | None = None
    license_status: int = OOB_GRACE
    license_status_reason: int = 0
    grace_expires: str | None = None
    license_is_addon: bool = False
    kms_machine: str | None = None
    kms_port: int = 0
    lookup_domain: str | None = None
    discovered_kms: str | None = None
    discovered_port: int = 0
    #: VLActivationType: how the product was last activated (1 AD, 2 KMS, 3 Token, 0 never) [WMITABLE]
    vl_activation_type: int = 0
    #: VLActivationTypeEnabled set on this product (slmgr /act-type ... ActID); 0 = the service's setting
    vl_activation_type_enabled: int = 0
    #: ADActivationObjectName / ADActivationObjectDN of the last AD activation [WMITABLE]
    ad_object_name: str | None = None
    ad_object_dn: str | None = None

    @property
    def is_kms_client(self) -> bool:
        """A KMS client setup key (GVLK) is installed: Description contains VOLUME_KMSCLIENT [SLMGRVBS]."""
        return self.channel == CHANNEL_GVLK

    @property
    def is_kms_host(self) -> bool:
        """A KMS host key (CSVLK) is installed: VOLUME_KMS but not VOLUME_KMSCLIENT [SLMGRVBS]."""
        return self.channel == CHANNEL_CSVLK

    def grace_minutes(self, now: datetime) -> int:
        """GracePeriodRemaining: minutes until notification / reactivation is required [SPPWMI]."""
        if self.grace_expires is None:
            return 0
        return max(0, int((parse_iso(self.grace_expires) - now).total_seconds() // 60))


@dataclass(slots=True)
class Requests:
    """KeyManagementService*Requests: requests by the client's LicenseStatus 0..5, total, failed [SPPWMI]."""

    total: int = 0
    failed: int = 0
    unlicensed: int = 0
    licensed: int = 0
    oob_grace: int = 0
    oot_grace: int = 0
    non_genuine_grace: int = 0
    notification: int = 0

    def count(self, license_status: int) -> None:
        """Count one request from a client in ``license_status``."""
        name = {
            UNLICENSED: "unlicensed",
            LICENSED: "licensed",
            OOB_GRACE: "oob_grace",
            OOT_GRACE: "oot_grace",
            NON_GENUINE_GRACE: "non_genuine_grace",
            NOTIFICATION: "notification",
        }.get(license_status)
        if name is not None:
            setattr(self, name, getattr(self, name) + 1)


@dataclass(slots=True)
class Contact:
    """One client machine a KMS host has heard from (kept per Application ID)."""

    cmid: str
    last_seen: str
    #: the activation threshold of the product that client asked for (5 or 25)
    threshold: int


@dataclass(slots=True)
class LogEvent:
    """One event of a KMS host's "Key Management Service" log: ID, time (host clock), insertion strings."""

    id: int
    time: str
    values: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Service:
    """SoftwareLicensingService: KMS client settings, and the KMS host's settings and counters."""

    cmid: str
    kms_machine: str | None = None
    kms_port: int = 0
    lookup_domain: str | None = None
    host_caching: bool = True
    discovered_kms: str | None = None
    discovered_port: int = 0
    activation_interval: int = DEFAULT_ACTIVATION_INTERVAL
    renewal_interval: int = DEFAULT_RENEWAL_INTERVAL
    listening_port: int = DEFAULT_KMS_PORT
    dns_publishing: bool = True
    low_priority: bool = False
    requests: Requests = field(default_factory=Requests)
    #: Application ID -> the client contacts counted for it (most recent last)
    contacts: dict[str, list[Contact]] = field(default_factory=dict)
    #: how many times the Software Protection service was restarted (kms-host-settings restarts it)
    restarts: int = 0
    #: the "Key Management Service" event log of a KMS host (12290 per request, 12293 DNS publishing failed)
    events: list[LogEvent] = field(default_factory=list)
    #: VLActivationTypeEnabled set machine-wide (slmgr /act-type): 0 all, 1 AD, 2 KMS, 3 Token [WMITABLE]
    vl_activation_type_enabled: int = 0


@dataclass(slots=True)
class ActivationObject:
    """One Active Directory activation object (class ``msSPP-ActivationObject`` under ``CN=Activation
    Objects,CN=Microsoft SPP,CN=Services`` of the forest's configuration naming context [SLMGRVBS]).

    It carries what slmgr /ao-list shows: ``displayName``, ``msSPP-CSVLKSkuId``,
    ``msSPP-CSVLKPartialProductKey``, ``msSPP-CSVLKPid``, ``distinguishedName``; the lab adds the
    host-key group and the key's digest (never the key).
    """

    name: str
    dn: str
    host_key_group: str
    partial_key: str
    key_digest: str
    sku_id: str
    csvlk_pid: str
    created: str


@dataclass(slots=True)
class Security:
    """The caller's security context and the settings that shape it."""

    is_admin: bool = True
    is_builtin_admin: bool = False
    #: LocalAccountTokenFilterPolicy: 1 lets remote local admins keep a full token ([ITPRO] VAMT docs)
    token_filter_policy: int = 1
    domain_joined: bool = False
    dns_suffix: str = "lab.test"

    @property
    def elevated(self) -> bool:
        """A remote local account is elevated only as the built-in admin or with the filter policy off."""
        if not self.is_admin:
            return False
        return self.domain_joined or self.is_builtin_admin or self.token_filter_policy == 1


@dataclass(slots=True)
class HostState:
    """Everything the lab knows about one simulated Windows host."""

    name: str
    role: Role
    fqdn: str
    os: OsInfo
    service: Service
    #: Get-WindowsFeature InstallState; None on client operating systems (no Get-WindowsFeature)
    features: dict[str, bool] | None = None
    firewall: list[FirewallRule] = field(default_factory=list)
    products: list[Product] = field(default_factory=list)
    hotfixes: list[str] = field(default_factory=list)
    ui_language: str = "en-US"
    security: Security = field(default_factory=Security)
    #: how far this host's clock is off the lab clock
    clock_skew_minutes: int = 0
    #: the network profile the lab network has on this host (workgroup machines: Private)
    network_profile: str = "Private"
    #: the host's IPv4 address; "" = on the lab LAN (LAB_SUBNET), the local subnet of every lab host
    address: str = ""
    faults: list[str] = field(default_factory=list)
    schema: int = SCHEMA_VERSION

    def rule(self, name: str) -> FirewallRule | None:
        """A firewall rule by name (case-insensitive, as Get-NetFirewallRule -Name)."""
        return next((r for r in self.firewall if r.name.lower() == name.lower()), None)

    def products_of(self, application_id: str) -> list[Product]:
        """Products of one application (Windows or Office)."""
        return [p for p in self.products if p.application_id.lower() == application_id.lower()]

    def keyed(self, application_id: str | None = None) -> list[Product]:
        """Products with a product key installed (PartialProductKey not null)."""
        items = self.products if application_id is None else self.products_of(application_id)
        return [p for p in items if p.partial_key is not None]

    def product(self, activation_id: str) -> Product | None:
        """A product by Activation ID."""
        return next((p for p in self.products if p.activation_id.lower() == activation_id.lower()), None)

    def kms_host_product(self, application_id: str) -> Product | None:
        """The product carrying a KMS host key for that application, if any."""
        return next((p for p in self.keyed(application_id) if p.is_kms_host), None)

    @property
    def is_kms_host(self) -> bool:
        """IsKeyManagementServiceMachine: some product carries a KMS host key."""
        return any(p.is_kms_host for p in self.keyed())

    def serves(self) -> bool:
        """An activated KMS host key: this host answers KMS requests."""
        return any(p.is_kms_host and p.license_status == LICENSED for p in self.keyed())

    def clock(self, lab_now: datetime) -> datetime:
        """This host's own clock."""
        return lab_now + timedelta(minutes=self.clock_skew_minutes)

    def refresh(self, now: datetime) -> None:
        """Move licence states on as time passes (grace and validity running out)."""
        for product in self.products:
            if product.grace_expires is None or product.partial_key is None:
                continue
            if now < parse_iso(product.grace_expires):
                continue
            if product.license_status == LICENSED and product.is_kms_client:
                # KMS activation expired: "out-of-tolerance state for 30 days" [OKMS]
                product.license_status = OOT_GRACE
                product.grace_expires = utc_iso(now + timedelta(days=OOT_GRACE_DAYS))
            elif product.license_status in (OOB_GRACE, OOT_GRACE, EXTENDED_GRACE):
                # then "unlicensed notification" [OKMS]
                product.license_status = NOTIFICATION
                product.grace_expires = None


_HOST_ADAPTER: TypeAdapter[HostState] = TypeAdapter(HostState)


def host_to_dict(state: HostState) -> dict[str, Any]:
    """JSON-ready form of a host."""
    data: dict[str, Any] = _HOST_ADAPTER.dump_python(state, mode="json")
    return data


def host_from_dict(data: dict[str, Any]) -> HostState:
    """Load a host from its JSON form (validated)."""
    return _HOST_ADAPTER.validate_python(data)


def write_json_atomic(path: Path, data: Any, *, mode: int = 0o644) -> None:
    """Write ``data`` as JSON to ``path`` atomically (temporary file, fsync, rename)."""
    # One encode and one write: json.dump would hand the file hundreds of small chunks.
    write_bytes_atomic(path, json_bytes(data), mode=mode)


def write_text_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Write text to ``path`` atomically with the given file mode."""
    write_bytes_atomic(path, text.encode("utf-8"), mode=mode)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def replace_file(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through ``.<name>.tmp`` and a rename, without fsync.

    For writers that are already serialized per file (:meth:`~kmsadmin.lab.fleet.Fleet.write`): a fixed
    temporary name spares ``mkstemp``'s random names and retries on every state save.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_bytes_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename) with the given file mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def save_host(directory: Path, state: HostState) -> Path:
    """Persist one host as ``<directory>/<name>.json`` (the fleet saves through
    :meth:`~kmsadmin.lab.fleet.Fleet.write`, outside its locks)."""
    path = directory / f"{state.name}.json"
    write_bytes_atomic(path, dump_host(state))
    return path


def dump_host(state: HostState) -> bytes:
    """A host's file content (indented JSON, keys in field order): pydantic's own JSON encoder is about
    ten times faster than ``json.dumps`` with an indent, which runs in pure Python."""
    return _HOST_ADAPTER.dump_json(state, indent=1) + b"\n"


def json_bytes(data: Any) -> bytes:
    """What :func:`write_json_atomic` writes for ``data``."""
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8")


def load_host(path: Path) -> HostState:
    """Load one host file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a host object")
    return host_from_dict(data)
