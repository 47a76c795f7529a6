"""Operating systems a lab host can run, and the ``--os-mix`` / ``--faults`` spec parsers.

Each :class:`OsProfile` carries what Windows reports about itself (``Win32_OperatingSystem``
Caption / Version / BuildNumber / OperatingSystemSKU / ProductType, the registry's EditionID and
InstallationType). The lab hands these values to ``kmsadmin.catalog.identify_windows`` to find the
catalog entry (and so the GVLK) of each host, exactly as kmsadmin does with a real host's facts.

OS-mix names (``--os-mix "win11-enterprise=20,win10-pro=5,server2019-standard=5"``)::

    win11-enterprise  win11-enterprise-n  win11-pro  win11-pro-n  win11-education
    win11-pro-workstations  win11-enterprise-ltsc2024
    win10-enterprise  win10-enterprise-n  win10-pro  win10-pro-n  win10-education
    win10-enterprise-ltsc2021  win10-enterprise-ltsc2019  win10-enterprise-ltsb2016
    server2016-standard  server2016-datacenter  server2019-standard  server2019-datacenter
    server2022-standard  server2022-datacenter  server2025-standard  server2025-datacenter

A server name may end in ``-core`` (Server Core installation: no Volume Activation Tools).
Modifiers after the name: ``+office2016|+office2019|+office2021|+office2024`` installs that Office
volume suite (Professional Plus, with its GVLK, as volume media does) and ``:retail`` / ``:mak``
installs a retail or MAK-channel key instead of the GVLK, e.g. ``win11-pro:retail=2`` or
``win11-enterprise+office2021=10``. Counts are host counts; when they do not add up to ``--hosts``
they are used as weights.

Faults (``--faults "client003=wrong-password;client004=timeouts:2;kms01=latency:200"``), several
per host separated by ``,``: the WS-Man server's ``wrong-password``, ``access-denied``,
``timeouts:N``, ``reset``, ``503:N`` (``503`` = always), ``hang``, ``latency:MS``, and the host
model's ``not-admin`` (caller is not an administrator), ``token-filter`` (local admin with a
filtered token, LocalAccountTokenFilterPolicy 0), ``clock-skew:MINUTES``, ``cloned-cmid``
(an image that was not sysprepped: it shares its CMID with every other cloned host) and
``kms-port:PORT`` (a KMS host listening on another port).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kmsadmin.errors import InvalidInput

WORKSTATION, SERVER = 1, 3  # Win32_OperatingSystem.ProductType


@dataclass(frozen=True, slots=True)
class OsProfile:
    """What a Windows installation reports about itself."""

    name: str
    caption: str
    edition_id: str
    build: int
    sku: int
    product_type: int
    #: the product family as the catalog names host operating systems ("Windows Server 2022")
    family: str
    #: SoftwareLicensingProduct.Name of the edition's Windows product ("Windows(R), X edition")
    license_name: str
    installation_type: str = "Client"
    #: a representative cumulative update installed on the image
    hotfixes: tuple[str, ...] = ()
    #: the update build revision (UBR) that update brings ([RELINFO] build column); 0 = not reported
    ubr: int = 0

    @property
    def version(self) -> str:
        """Win32_OperatingSystem.Version."""
        return f"10.0.{self.build}"

    @property
    def is_server(self) -> bool:
        """ProductType 2 (domain controller) and 3 (server) are server operating systems."""
        return self.product_type != WORKSTATION

    @property
    def is_core(self) -> bool:
        """Server Core installation."""
        return self.installation_type == "Server Core"


def _client(*, name: str, caption: str, edition_id: str, build: int, sku: int, family: str) -> OsProfile:
    return OsProfile(
        name=name,
        caption=f"Microsoft {caption}",
        edition_id=edition_id,
        build=build,
        sku=sku,
        product_type=WORKSTATION,
        family=family,
        license_name=f"Windows(R), {edition_id} edition",
    )


def _server(
    *, name: str, year: int, edition: str, build: int, sku: int, hotfixes: tuple[str, ...], ubr: int
) -> OsProfile:
    edition_id = f"Server{edition}"
    return OsProfile(
        name=name,
        caption=f"Microsoft Windows Server {year} {edition}",
        edition_id=edition_id,
        build=build,
        sku=sku,
        product_type=SERVER,
        family=f"Windows Server {year}",
        license_name=f"Windows(R), {edition_id} edition",
        installation_type="Server",
        hotfixes=hotfixes,
        ubr=ubr,
    )


# OperatingSystemSKU values: PRODUCT_ENTERPRISE 4, PRODUCT_ENTERPRISE_N 27, PRODUCT_PROFESSIONAL 48,
# PRODUCT_PROFESSIONAL_N 49, PRODUCT_EDUCATION 121, PRODUCT_ENTERPRISE_S 125,
# PRODUCT_PRO_WORKSTATION 161, PRODUCT_STANDARD_SERVER 7, PRODUCT_DATACENTER_SERVER 8,
# PRODUCT_DATACENTER_SERVER_CORE 12, PRODUCT_STANDARD_SERVER_CORE 13 (winnt.h GetProductInfo values).
# Builds: Windows 11 23H2 22631, LTSC 2024 26100; Windows 10 22H2 19045, LTSC 2021 19044,
# LTSC 2019 17763, LTSB 2016 14393; Server 2016 14393, 2019 17763, 2022 20348, 2025 26100.
# Hotfixes are the KMS-host prerequisites of microsoft.md §b.1 ([PLAN24] "KMS host required updates"),
# or a later cumulative update with its UBR from Microsoft's Windows Server release information
# ([RELINFO]: KB5003638 14393.4467, KB5034768 17763.5458, KB5044281 20348.2762 (2024-10 B, later than
# the required KB5034770 20348.2322, which a Server 2022 image therefore does not list), KB5046617
# 26100.2314).
_PROFILES: tuple[OsProfile, ...] = (
    _client(
        name="win11-enterprise",
        caption="Windows 11 Enterprise",
        edition_id="Enterprise",
        build=22631,
        sku=4,
        family="Windows 11",
    ),
    _client(
        name="win11-enterprise-n",
        caption="Windows 11 Enterprise N",
        edition_id="EnterpriseN",
        build=22631,
        sku=27,
        family="Windows 11",
    ),
    _client(
        name="win11-pro",
        caption="Windows 11 Pro",
        edition_id="Professional",
        build=22631,
        sku=48,
        family="Windows 11",
    ),
    _client(
        name="win11-pro-n",
        caption="Windows 11 Pro N",
        edition_id="ProfessionalN",
        build=22631,
        sku=49,
        family="Windows 11",
    ),
    _client(
        name="win11-education",
        caption="Windows 11 Education",
        edition_id="Education",
        build=22631,
        sku=121,
        family="Windows 11",
    ),
    _client(
        name="win11-pro-workstations",
        caption="Windows 11 Pro for Workstations",
        edition_id="ProfessionalWorkstation",
        build=22631,
        sku=161,
        family="Windows 11",
    ),
    _client(
        name="win11-enterprise-ltsc2024",
        caption="Windows 11 Enterprise LTSC",
        edition_id="EnterpriseS",
        build=26100,
        sku=125,
        family="Windows 11",
    ),
    _client(
        name="win10-enterprise",
        caption="Windows 10 Enterprise",
        edition_id="Enterprise",
        build=19045,
        sku=4,
        family="Windows 10",
    ),
    _client(
        name="win10-enterprise-n",
        caption="Windows 10 Enterprise N",
        edition_id="EnterpriseN",
        build=19045,
        sku=27,
        family="Windows 10",
    ),
    _client(
        name="win10-pro",
        caption="Windows 10 Pro",
        edition_id="Professional",
        build=19045,
        sku=48,
        family="Windows 10",
    ),
    _client(
        name="win10-pro-n",
        caption="Windows 10 Pro N",
        edition_id="ProfessionalN",
        build=19045,
        sku=49,
        family="Windows 10",
    ),
    _client(
        name="win10-education",
        caption="Windows 10 Education",
        edition_id="Education",
        build=19045,
        sku=121,
        family="Windows 10",
    ),
    _client(
        name="win10-enterprise-ltsc2021",
        caption="Windows 10 Enterprise LTSC",
        edition_id="EnterpriseS",
        build=19044,
        sku=125,
        family="Windows 10",
    ),
    _client(
        name="win10-enterprise-ltsc2019",
        caption="Windows 10 Enterprise LTSC",
        edition_id="EnterpriseS",
        build=17763,
        sku=125,
        family="Windows 10",
    ),
    _client(
        name="win10-enterprise-ltsb2016",
        caption="Windows 10 Enterprise LTSB",
        edition_id="EnterpriseS",
        build=14393,
        sku=125,
        family="Windows 10",
    ),
    _server(
        name="server2016-standard",
        year=2016,
        edition="Standard",
        build=14393,
        sku=7,
        hotfixes=("KB5003638",),
        ubr=4467,
    ),
    _server(
        name="server2016-datacenter",
        year=2016,
        edition="Datacenter",
        build=14393,
        sku=8,
        hotfixes=("KB5003638",),
        ubr=4467,
    ),
    _server(
        name="server2019-standard",
        year=2019,
        edition="Standard",
        build=17763,
        sku=7,
        hotfixes=("KB5003646", "KB5034768"),
        ubr=5458,
    ),
    _server(
        name="server2019-datacenter",
        year=2019,
        edition="Datacenter",
        build=17763,
        sku=8,
        hotfixes=("KB5003646", "KB5034768"),
        ubr=5458,
    ),
    _server(
        name="server2022-standard",
        year=2022,
        edition="Standard",
        build=20348,
        sku=7,
        hotfixes=("KB5044281",),
        ubr=2762,
    ),
    _server(
        name="server2022-datacenter",
        year=2022,
        edition="Datacenter",
        build=20348,
        sku=8,
        hotfixes=("KB5044281",),
        ubr=2762,
    ),
    _server(
        name="server2025-standard",
        year=2025,
        edition="Standard",
        build=26100,
        sku=7,
        hotfixes=("KB5046617",),
        ubr=2314,
    ),
    _server(
        name="server2025-datacenter",
        year=2025,
        edition="Datacenter",
        build=26100,
        sku=8,
        hotfixes=("KB5046617",),
        ubr=2314,
    ),
)

PROFILES: dict[str, OsProfile] = {p.name: p for p in _PROFILES}

#: Office volume suites a lab client can carry: name -> (SoftwareLicensingProduct Name, major label).
#: Names follow the Office KMS client licences as slmgr /dlv shows them (Office 2019+: "Office 19, ...").
OFFICE_SUITES: dict[str, tuple[str, str]] = {
    "office2016": ("Office 16, Office16ProPlusVL_KMS_Client edition", "Office 16"),
    "office2019": ("Office 19, Office19ProPlus2019VL_KMS_Client_AE edition", "Office 19"),
    "office2021": ("Office 21, Office21ProPlus2021VL_KMS_Client_AE edition", "Office 21"),
    "office2024": ("Office 24, Office24ProPlus2024VL_KMS_Client_AE edition", "Office 24"),
}

CHANNELS = ("gvlk", "retail", "mak")

#: the default KMS host: Windows Server 2022 Standard with the Desktop Experience
DEFAULT_KMS_HOST_OS = "server2022-standard"

#: the default client mix (weights)
DEFAULT_MIX = ",".join(
    (
        "win11-enterprise=8",
        "win11-pro=4",
        "win10-enterprise=4",
        "win11-enterprise+office2021=4",
        "server2019-standard=3",
        "server2022-standard=2",
        "win10-pro=2",
        "server2022-datacenter-core=1",
        "win11-education=1",
        "win10-enterprise-ltsc2021=1",
    )
)


def core_variant(profile: OsProfile) -> OsProfile:
    """The Server Core installation of a server profile (OperatingSystemSKU 13 / 12)."""
    sku = {7: 13, 8: 12}.get(profile.sku, profile.sku)
    return OsProfile(
        name=profile.name + "-core",
        caption=profile.caption,
        edition_id=profile.edition_id,
        build=profile.build,
        sku=sku,
        product_type=profile.product_type,
        family=profile.family,
        license_name=profile.license_name,
        installation_type="Server Core",
        hotfixes=profile.hotfixes,
        ubr=profile.ubr,
    )


def profile(name: str) -> OsProfile:
    """Look an OS-mix name up (``server2022-standard-core`` gives the Server Core variant)."""
    key = name.strip().lower()
    if key in PROFILES:
        return PROFILES[key]
    if key.endswith("-core") and key[: -len("-core")] in PROFILES:
        base = PROFILES[key[: -len("-core")]]
        if base.is_server:
            return core_variant(base)
    raise InvalidInput(
        "OS name", name, "known names: " + ", ".join(sorted(PROFILES)) + " (servers also NAME-core)"
    )


@dataclass(frozen=True, slots=True)
class MixEntry:
    """One ``NAME[+officeYYYY][:channel]=COUNT`` item."""

    os: str
    office: str | None = None
    channel: str = "gvlk"
    count: int = 1


_ENTRY_RE = re.compile(r"^(?P<os>[a-z0-9-]+)(?:\+(?P<office>office\d{4}))?(?::(?P<channel>[a-z]+))?$")


def parse_mix(spec: str) -> list[MixEntry]:
    """Parse an ``--os-mix`` spec."""
    entries: list[MixEntry] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        name, _, count_text = item.partition("=")
        match = _ENTRY_RE.match(name.strip().lower())
        if not match:
            raise InvalidInput("os-mix entry", item, "expected NAME[+officeYYYY][:retail|:mak]=COUNT")
        profile(match["os"])
        office = match["office"]
        if office is not None and office not in OFFICE_SUITES:
            raise InvalidInput("os-mix entry", item, "Office suites: " + ", ".join(OFFICE_SUITES))
        channel = match["channel"] or "gvlk"
        if channel not in CHANNELS:
            raise InvalidInput("os-mix entry", item, "channels: " + ", ".join(CHANNELS))
        try:
            count = int(count_text) if count_text.strip() else 1
        except ValueError:
            raise InvalidInput("os-mix entry", item, "the count must be a whole number") from None
        if count < 0:
            raise InvalidInput("os-mix entry", item, "the count must not be negative")
        entries.append(MixEntry(os=match["os"], office=office, channel=channel, count=count))
    if not entries or sum(e.count for e in entries) == 0:
        raise InvalidInput("os-mix", spec, "give at least one NAME=COUNT")
    return entries


def expand_mix(entries: list[MixEntry], hosts: int) -> list[MixEntry]:
    """One entry per host: exact counts when they add up to ``hosts``, else weighted (largest remainder)."""
    total = sum(e.count for e in entries)
    if total == hosts:
        counts = [e.count for e in entries]
    else:
        shares = [e.count * hosts / total for e in entries]
        counts = [int(s) for s in shares]
        by_remainder = sorted(range(len(entries)), key=lambda i: (-(shares[i] - counts[i]), i))
        for i in by_remainder[: hosts - sum(counts)]:
            counts[i] += 1
    out: list[MixEntry] = []
    # interleave so that any prefix of the fleet is a fair sample of the mix
    remaining = counts[:]
    while len(out) < hosts:
        for i, entry in enumerate(entries):
            if remaining[i] > 0:
                out.append(MixEntry(os=entry.os, office=entry.office, channel=entry.channel, count=1))
                remaining[i] -= 1
    return out


@dataclass(slots=True)
class FaultSpec:
    """Faults for one host: server-side (WS-Man) and model-side switches."""

    wrong_password: bool = False
    access_denied: bool = False
    timeouts: int = 0
    reset: bool = False
    http_503: int = 0
    hang: bool = False
    latency_ms: int | None = None
    not_admin: bool = False
    token_filter: bool = False
    clock_skew_minutes: int = 0
    cloned_cmid: bool = False
    kms_port: int | None = None
    names: list[str] = field(default_factory=list)


def _number(host: str, fault: str, value: str, default: int | None = None) -> int:
    if not value:
        if default is None:
            raise InvalidInput("fault", f"{host}={fault}", "needs a value, e.g. timeouts:2")
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidInput("fault", f"{host}={fault}:{value}", "the value must be a whole number") from None


def parse_faults(spec: str) -> dict[str, FaultSpec]:
    """Parse a ``--faults`` spec into per-host fault switches."""
    result: dict[str, FaultSpec] = {}
    for raw in re.split(r"[;\n]", spec or ""):
        item = raw.strip()
        if not item:
            continue
        host, sep, faults = item.partition("=")
        if not sep or not host.strip() or not faults.strip():
            raise InvalidInput("fault", item, "expected HOST=FAULT[,FAULT...]")
        entry = result.setdefault(host.strip().lower(), FaultSpec())
        for fault_text in faults.split(","):
            kind, _, value = fault_text.strip().lower().partition(":")
            _apply_fault(entry, host, kind, value.strip())
            entry.names.append(fault_text.strip().lower())
    return result


_FLAG_FAULTS = {
    "wrong-password": "wrong_password",
    "access-denied": "access_denied",
    "reset": "reset",
    "hang": "hang",
    "not-admin": "not_admin",
    "token-filter": "token_filter",
    "cloned-cmid": "cloned_cmid",
}
#: fault -> (attribute, default when no value is given; None = a value is required)
_VALUE_FAULTS: dict[str, tuple[str, int | None]] = {
    "timeouts": ("timeouts", 1),
    "503": ("http_503", -1),
    "latency": ("latency_ms", None),
    "clock-skew": ("clock_skew_minutes", None),
    "kms-port": ("kms_port", None),
}


def _apply_fault(entry: FaultSpec, host: str, kind: str, value: str) -> None:
    if kind in _FLAG_FAULTS:
        setattr(entry, _FLAG_FAULTS[kind], True)
        return
    if kind in _VALUE_FAULTS:
        attribute, default = _VALUE_FAULTS[kind]
        setattr(entry, attribute, _number(host, kind, value, default))
        return
    raise InvalidInput(
        "fault",
        f"{host}={kind}",
        "known faults: wrong-password, access-denied, timeouts:N, reset, 503[:N], hang, latency:MS, "
        "not-admin, token-filter, clock-skew:MIN, cloned-cmid, kms-port:PORT",
    )
