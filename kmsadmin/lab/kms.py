"""KMS behaviour of the lab: product-key installation, online/phone activation, KMS requests and counts.

Every rule cites microsoft.md (../shared/reference) and the Microsoft source it was taken from.
Edition identification, key groups, compatibility and thresholds come from ``kmsadmin.catalog``;
this module only applies them to the host model.

Lab host keys
    The lab issues one host key per host-key group (``host-keys.json``). A lab key is 25 characters
    from the product-key alphabet (so ``kmsadmin.validate.product_key`` accepts it) drawn from the OS
    random source, and it never contains the letter ``N``. Every key issued for Windows 8 and later,
    which includes every current host-key group, carries exactly one ``N`` (it marks the key's
    encoding), so a lab key cannot decode as a key of any of these groups on real Windows; and a KMS
    host key only works after Microsoft's activation service has activated it, which knows only the
    keys Microsoft issued. The lab accepts exactly its own keys as host keys.

Lab forest (``lab up --forest``)
    The lab domain is an Active Directory forest and every host a member. Activation objects live in
    ``fleet.json`` with the attributes slmgr /ao-list reads [SLMGRVBS]; their DN is
    ``CN=<name>,CN=Activation Objects,CN=Microsoft SPP,CN=Services,CN=Configuration,DC=...``. Creating
    one online or by phone (forest Installation ID: ``int(SHA-256("kmsadmin-lab-adba-iid/1|" + forest +
    "|" + key digest)) mod 10**63``; its Confirmation ID as below) counts one activation of the host key
    with the activation service. A domain-joined Windows 8 / Server 2012 or later client with a GVLK
    asks AD first when its activation type allows it: an object whose host-key group activates its
    edition activates it, with no count threshold, for 180 days, renewed while the object exists
    [ITPRO: activate-windows-clients-vamt, activate-using-active-directory-based-activation-client].
    Without a matching object the client uses KMS. An ADBA-activated client whose object is gone tries
    KMS at its next licensing check (the lab checks whenever a step runs on the host); if that fails it
    stays licensed until its 180 days run out.

Phone activation (lab rule)
    Installation ID: 63 decimal digits, ``int(SHA-256("kmsadmin-lab-iid/1|" + CMID + "|" +
    Activation ID + "|" + key digest)) mod 10**63`` zero-padded, so it is stable for a host and key.
    Confirmation ID: 48 decimal digits, ``int(SHA-256("kmsadmin-lab-cid/1|" + IID)) mod 10**48``
    zero-padded (shown as 8 blocks of 6). :func:`confirmation_id_for` computes it
    (``kmsadmin lab confirmation-id IID``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kmsadmin import catalog, validate
from kmsadmin.errors import InvalidInput
from kmsadmin.lab.model import (
    CHANNEL_CSVLK,
    CHANNEL_GVLK,
    CHANNEL_MAK,
    CHANNEL_RETAIL,
    DEFAULT_KMS_PORT,
    KMS_VALIDITY_DAYS,
    LAB_SUBNET,
    LICENSED,
    OOB_GRACE,
    OOB_GRACE_DAYS,
    ActivationObject,
    Contact,
    FirewallRule,
    HostState,
    LogEvent,
    Product,
    parse_iso,
    utc_iso,
)

# HRESULTs the lab returns ([SLERR] symbols, microsoft.md §g)
E_ACCESS_DENIED = 0x80070005
E_INVALIDARG = 0x80070057
SL_E_CHPA_MAXIMUM_UNLOCK_EXCEEDED = 0xC004C008
#: "The activation server determined the specified product key is blocked." [ERR]
MAK_BLOCKED = 0xC004C003
#: "The activation server reported that the Multiple Activation Key has exceeded its limit." [ERR]
MAK_LIMIT_EXCEEDED = 0xC004C020
SL_E_PKEY_NOT_INSTALLED = 0xC004F014  # "product key is not available" [ERR]
SL_E_NOT_SUPPORTED = 0xC004F016
SL_E_CIDIID_INVALID_DATA_LENGTH = 0xC004F02F
SL_E_CIDIID_MISMATCHED = 0xC004F031
SL_E_VL_NOT_ENOUGH_COUNT = 0xC004F038
SL_E_VL_KEY_MANAGEMENT_SERVICE_NOT_ACTIVATED = 0xC004F041
SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH = 0xC004F042
SL_E_INVALID_PRODUCT_KEY = 0xC004F050
SL_E_MISMATCHED_PRODUCT_SKU = 0xC004F069
SL_E_VL_INVALID_TIMESTAMP = 0xC004F06C
SL_E_VL_BINDING_SERVICE_UNAVAILABLE = 0xC004F074
#: HRESULT_FROM_WIN32(ERROR_DS_NO_SUCH_OBJECT): slmgr.vbs's HR_ERROR_DS_NO_SUCH_OBJECT for a missing
#: activation object [SLMGRVBS]; the lab also answers it when a client restricted to AD activation
#: finds no matching activation object (lab rule: the code Windows gives there is UNCONFIRMED)
ERROR_DS_NO_SUCH_OBJECT = 0x80072030

#: "The KMS only counts unique connections from the past 30 days, and only stores the 50 most recent
#: contacts" [PLAN24]
COUNT_WINDOW_DAYS = 30
MAX_CONTACTS = 50
#: "the CSVLK ... can be used to activate up to five more KMS hosts ... for a total of six";
#: "A KMS host key can be activated up to 10 times on up to six different computers" [PLAN24][ERR]
MAX_HOSTS_PER_HOST_KEY = 6
MAX_ACTIVATIONS_PER_HOST_KEY = 10
#: KMS rejects requests whose timestamp is too far off the host's clock (0xC004F06C [ERR]: "Client/host
#: clock skew"). The 4-hour tolerance is the commonly cited value, not in microsoft.md (UNCONFIRMED).
MAX_CLOCK_SKEW = timedelta(hours=4)
#: events the lab keeps in a KMS host's "Key Management Service" log (Windows keeps what fits its size
#: limit and overwrites the oldest)
MAX_LOG_EVENTS = 20000

#: the lab's namespace for the Activation IDs it makes up for Windows licences (real SKU IDs differ)
_LAB_NAMESPACE = uuid.UUID("6f1c2b8e-5d0a-4c3e-9b7a-1d2e3f405162")


class LabFailure(Exception):
    """A step fails on the simulated host with a Windows HRESULT."""

    def __init__(self, hresult: int | None, stage: str, detail: str = "") -> None:
        self.hresult = hresult
        self.stage = stage
        self.detail = detail
        super().__init__(self.message)

    @property
    def hresult_text(self) -> str | None:
        """``0x`` + 8 upper-case hex digits."""
        return None if self.hresult is None else f"0x{self.hresult:08X}"

    @property
    def message(self) -> str:
        """The Windows message for the HRESULT (catalog), plus what the lab saw."""
        text = ""
        if self.hresult is not None:
            info = catalog.hresult_info(self.hresult_text or "")
            text = str(info.meaning or "") if info is not None and info.known else ""
            if not text:
                text = f"Windows reported {self.hresult_text}."
        if self.detail:
            text = f"{text} ({self.detail})" if text else self.detail
        return text


def key_digest(key: str) -> str:
    """SHA-256 of a normalised product key: lets the lab recognise a key without storing it."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def lab_activation_id(*parts: str) -> str:
    """A stable, made-up Activation ID for a lab licence (real SKU Activation IDs are not reproduced)."""
    return str(uuid.uuid5(_LAB_NAMESPACE, "|".join(parts)))


# --------------------------------------------------------------------------- host keys


@dataclass(frozen=True, slots=True)
class HostKeys:
    """The lab's host keys: group name -> key."""

    keys: Mapping[str, str]

    def group_of(self, key: str) -> str | None:
        """The group a lab host key belongs to, or None."""
        return next((group for group, value in self.keys.items() if value == key), None)


#: the lab's MAKs (see the module docstring) and the default number of activations each allows
MAK_NAMES = ("windows-client", "windows-server", "windows-client-blocked")
BLOCKED_MAK = "windows-client-blocked"
DEFAULT_MAK_LIMIT = 5


@dataclass(slots=True)
class MakService:
    """The lab's stand-in for Microsoft's activation service, for MAKs: name -> key, machines activated."""

    keys: Mapping[str, str]
    limit: int
    #: MAK name -> the machines it activated (host names, in order)
    hosts: dict[str, list[str]]

    def name_of(self, key: str) -> str | None:
        """The lab name of a MAK, or None."""
        return next((name for name, value in self.keys.items() if value == key), None)

    def name_of_digest(self, digest: str | None) -> str | None:
        """The lab name of the MAK with that key digest, or None."""
        return next((name for name, value in self.keys.items() if key_digest(value) == digest), None)

    def remaining(self, name: str) -> int:
        """Activations left on a MAK (what VAMT shows as the remaining MAK activation count)."""
        return 0 if name == BLOCKED_MAK else max(0, self.limit - len(self.hosts.get(name, [])))

    def activate(self, name: str, host: str, stage: str) -> None:
        """One activation of a MAK by ``host``: 0xC004C003 when blocked, 0xC004C020 past its limit [ERR]."""
        if name == BLOCKED_MAK:
            raise LabFailure(MAK_BLOCKED, stage, "the MAK is blocked")
        machines = self.hosts.setdefault(name, [])
        if host in machines:
            return
        if len(machines) >= self.limit:
            raise LabFailure(MAK_LIMIT_EXCEEDED, stage, f"all {self.limit} activations of the MAK are used")
        machines.append(host)

    def summary(self) -> list[dict[str, Any]]:
        """Per MAK: name, last five characters, limit, used, remaining (never the key)."""
        return [
            {
                "name": name,
                "partial_key": key[-5:],
                "limit": self.limit,
                "used": len(self.hosts.get(name, [])),
                "remaining": self.remaining(name),
                "blocked": name == BLOCKED_MAK,
            }
            for name, key in self.keys.items()
        ]


def mak_fits(name: str, host: HostState) -> bool:
    """A client MAK installs on client editions, the server MAK on Windows Server."""
    return host.os.is_server == (name == "windows-server")


_LAB_KEY_ALPHABET = validate.PRODUCT_KEY_ALPHABET.replace("N", "")


def generate_host_key(taken: set[str]) -> str:
    """A fresh lab host key (see the module docstring for why it can never work on real Windows)."""
    while True:
        raw = "".join(secrets.choice(_LAB_KEY_ALPHABET) for _ in range(25))
        key = "-".join(raw[i : i + 5] for i in range(0, 25, 5))
        key = validate.product_key(key)
        if key in taken or catalog.check_key(key).is_gvlk:
            continue
        return key


def group_names() -> list[str]:
    """The id of every current host-key group the catalog knows (retired groups get no lab key)."""
    return [str(group.id) for group in catalog.csvlk_groups(include_retired=False)]


def group_is_office(group_id: str) -> bool:
    """Office host-key groups activate the Office application."""
    return bool(catalog.csvlk_group(group_id).family == "office")


def group_target(group_id: str) -> str:
    """The product a group is named for (``Windows Server 2022``, ``Windows 10``, ``Office LTSC 2021``)."""
    group = catalog.csvlk_group(group_id)
    return str(group.office_version or group.target or group.name)


def office_label(group_id: str) -> str:
    """``Office 21`` for the Office LTSC 2021 group, etc. (the licence name prefix Office uses)."""
    digits = "".join(ch for ch in group_target(group_id) if ch.isdigit())
    return f"Office {digits[-2:]}" if digits else "Office"


def channel_tag(group_id: str) -> str:
    """The Description tag of a Windows host key: VOLUME_KMS_WS22 for Windows Server 2022, W10, ..."""
    target = group_target(group_id)
    digits = "".join(ch for ch in target if ch.isdigit())
    if "server" in target.lower():
        return f"WS{digits[-2:]}"
    return f"W{digits}" if digits else "W"


def host_os_name(host: HostState) -> str:
    """The host OS as the catalog names it (``Windows Server 2022``)."""
    return str(catalog.os_product(host.os.build, host.os.product_type))


def carry_verdict(group_name: str, host: HostState) -> tuple[bool, str, list[str]]:
    """Can this host carry a host key of that group: (ok, reason, required KBs)."""
    group = catalog.csvlk_group(group_name)
    verdict = catalog.host_can_carry(group, host_os_name(host), edition_id=host.os.edition_id)
    kbs = [str(update.kb) for update in getattr(verdict, "required_updates", ())]
    return bool(verdict.ok), str(getattr(verdict, "reason", "") or ""), kbs


def missing_updates(group_name: str, host: HostState) -> list[str]:
    """The required updates (KBs) the host has neither listed nor superseded by its build.UBR."""
    group = catalog.csvlk_group(group_name)
    verdict = catalog.host_can_carry(group, host_os_name(host), edition_id=host.os.edition_id)
    return [
        str(update.kb)
        for update in verdict.required_updates
        if not update.installed(build=host.os.build, ubr=host.os.ubr or None, hotfixes=host.hotfixes)
    ]


# --------------------------------------------------------------------------- identification


def windows_entry(host: HostState) -> Any:
    """The catalog's client-key entry for the host's edition (None: not volume-licensable)."""
    return catalog.identify_windows(
        caption=host.os.caption,
        edition_id=host.os.edition_id,
        build=host.os.build,
        sku=host.os.sku,
        product_type=host.os.product_type,
    )


def client_entry(host: HostState, product: Product) -> Any:
    """The catalog's client-key entry for a product (Windows by the OS, Office by the licence name)."""
    if product.application_id == catalog.WINDOWS_APP_ID:
        return windows_entry(host)
    return catalog.identify_office(product.name, product.description)


# --------------------------------------------------------------------------- key installation


def windows_gvlk_product(host: HostState, gvlk: str, now: datetime) -> Product:
    """The Windows product of a volume installation: the edition's GVLK, in its 30-day grace."""
    return Product(
        activation_id=lab_activation_id("windows", host.os.edition_id, CHANNEL_GVLK),
        application_id=catalog.WINDOWS_APP_ID,
        name=f"Windows(R), {host.os.edition_id} edition",
        description="Windows(R) Operating System, VOLUME_KMSCLIENT channel",
        channel=CHANNEL_GVLK,
        edition=host.os.edition_id,
        partial_key=gvlk[-5:],
        key_digest=key_digest(gvlk),
        gvlk=gvlk,
        license_status=OOB_GRACE,
        grace_expires=utc_iso(now + timedelta(days=OOB_GRACE_DAYS)),
    )


def windows_other_product(host: HostState, channel: str, key: str, now: datetime) -> Product:
    """A retail or MAK Windows product (key made up by the lab), in its grace period."""
    tag = "RETAIL" if channel == CHANNEL_RETAIL else "VOLUME_MAK"
    return Product(
        activation_id=lab_activation_id("windows", host.os.edition_id, channel),
        application_id=catalog.WINDOWS_APP_ID,
        name=f"Windows(R), {host.os.edition_id} edition",
        description=f"Windows(R) Operating System, {tag} channel",
        channel=channel,
        edition=host.os.edition_id,
        partial_key=key[-5:],
        key_digest=key_digest(key),
        license_status=OOB_GRACE,
        grace_expires=utc_iso(now + timedelta(days=OOB_GRACE_DAYS)),
    )


def office_gvlk_product(suite_name: str, label: str, gvlk: str | None, now: datetime) -> Product:
    """An Office volume suite as Office volume media installs it: its licence with the GVLK."""
    return Product(
        activation_id=lab_activation_id("office", suite_name, CHANNEL_GVLK),
        application_id=catalog.OFFICE_APP_ID,
        name=suite_name,
        description=f"{label}, VOLUME_KMSCLIENT channel",
        channel=CHANNEL_GVLK,
        edition=suite_name,
        partial_key=gvlk[-5:] if gvlk else None,
        key_digest=key_digest(gvlk) if gvlk else None,
        gvlk=gvlk,
        license_status=OOB_GRACE,
        grace_expires=utc_iso(now + timedelta(days=OOB_GRACE_DAYS)),
    )


def _replace_product(host: HostState, old: Product | None, new: Product) -> None:
    if old is not None and old in host.products:
        host.products[host.products.index(old)] = new
    else:
        host.products.append(new)


def install_product_key(
    host: HostState, raw_key: str, host_keys: HostKeys, now: datetime, maks: MakService | None = None
) -> Product:
    """SoftwareLicensingService.InstallProductKey + RefreshLicenseStatus on the model.

    Raises :class:`LabFailure` with 0xC004F050 (invalid key, a host key this OS cannot carry, or a MAK
    for another kind of Windows) or 0xC004F069 (a GVLK whose licence is not installed here).
    """
    try:
        key = validate.product_key(raw_key)
    except InvalidInput:
        # "Typo, beta key, or em-dashes instead of hyphens" [ERR] 0xC004F050
        raise LabFailure(SL_E_INVALID_PRODUCT_KEY, "InstallProductKey", "malformed product key") from None
    group = host_keys.group_of(key)
    if group is not None:
        return _install_host_key(host, key, group, now)
    mak = maks.name_of(key) if maks is not None else None
    if mak is not None:
        return _install_mak(host, key, mak, now)
    check = catalog.check_key(key)
    if check.is_gvlk:
        return _install_gvlk(host, key, now)
    # neither a GVLK nor a key the lab issued: the lab's "Microsoft" knows no other keys
    raise LabFailure(
        SL_E_INVALID_PRODUCT_KEY, "InstallProductKey", f"key ending {key[-5:]} is not known to the lab"
    )


def _install_gvlk(host: HostState, key: str, now: datetime) -> Product:
    entry = windows_entry(host)
    if entry is not None and entry.gvlk == key:
        old = next(iter(host.products_of(catalog.WINDOWS_APP_ID)), None)
        product = windows_gvlk_product(host, key, now)
        if old is not None and old.partial_key == product.partial_key:
            return old
        _keep_client_settings(old, product)
        _replace_product(host, old, product)
        return product
    for office in host.products_of(catalog.OFFICE_APP_ID):
        office_entry = catalog.identify_office(office.name, office.description)
        if office_entry is not None and office_entry.gvlk == key:
            if office.partial_key != key[-5:]:
                office.partial_key = key[-5:]
                office.key_digest = key_digest(key)
                office.gvlk = key
                office.license_status = OOB_GRACE
                office.license_status_reason = 0
                office.grace_expires = utc_iso(now + timedelta(days=OOB_GRACE_DAYS))
            return office
    # a GVLK of another edition, or of an Office product whose licence is absent:
    # SL_E_MISMATCHED_PRODUCT_SKU "the product SKU is not found" (microsoft.md §g, [SLERR])
    raise LabFailure(
        SL_E_MISMATCHED_PRODUCT_SKU,
        "InstallProductKey",
        f"the GVLK ending {key[-5:]} belongs to an edition not installed on {host.os.caption}",
    )


def _install_mak(host: HostState, key: str, mak: str, now: datetime) -> Product:
    if not mak_fits(mak, host) or windows_entry(host) is None:
        # a MAK activates the product group it was issued for: "the product key is invalid" [ERR] 0xC004F050
        raise LabFailure(
            SL_E_INVALID_PRODUCT_KEY,
            "InstallProductKey",
            f"the MAK ending {key[-5:]} is not for {host.os.caption}",
        )
    old = next(iter(host.products_of(catalog.WINDOWS_APP_ID)), None)
    if old is not None and old.partial_key == key[-5:]:
        return old
    product = windows_other_product(host, CHANNEL_MAK, key, now)
    _keep_client_settings(old, product)
    _replace_product(host, old, product)
    return product


def _keep_client_settings(old: Product | None, new: Product) -> None:
    if old is None:
        return
    new.kms_machine, new.kms_port, new.lookup_domain = old.kms_machine, old.kms_port, old.lookup_domain


def _install_host_key(host: HostState, key: str, group: str, now: datetime) -> Product:
    ok, reason, _ = carry_verdict(group, host)
    if not ok:
        # host OS outside the group's "can be hosted on" list [PLAN24]; a client-OS host key on a
        # server: "A client KMS key can't be installed into the KMS in Windows Server" [ITPRO]
        raise LabFailure(
            SL_E_INVALID_PRODUCT_KEY, "InstallProductKey", reason or f"{host.os.caption} cannot carry it"
        )
    missing = missing_updates(group, host)
    if missing:
        # "the fix for 0xC004F050 ... when installing a newer CSVLK ... is to install" the host KB [KEYS17]
        raise LabFailure(
            SL_E_INVALID_PRODUCT_KEY,
            "InstallProductKey",
            "required update not installed: " + ", ".join(missing),
        )
    if group_is_office(group):
        label = office_label(group)
        # the Office KMS host Activation IDs of [OHOST] (catalog; LTSC 2024: the fixed F3D89BBF-...)
        known = catalog.csvlk_group(group).kms_host_activation_ids
        activation_id = str(known[0]).lower() if known else lab_activation_id("office-host", group)
        product = Product(
            activation_id=activation_id,
            application_id=catalog.OFFICE_APP_ID,
            name=f"{label}, {label.replace(' ', '')}_KMSHostVL_KMS_Host edition",
            description=f"{label}, VOLUME_KMS channel",
            channel=CHANNEL_CSVLK,
            edition=group,
            host_key_group=group,
        )
        old = next(
            (p for p in host.products_of(catalog.OFFICE_APP_ID) if p.activation_id == activation_id), None
        )
    else:
        product = Product(
            activation_id=lab_activation_id("windows-host", group),
            application_id=catalog.WINDOWS_APP_ID,
            name=f"Windows(R), {host.os.edition_id} edition",
            description=f"Windows(R) Operating System, VOLUME_KMS_{channel_tag(group)} channel",
            channel=CHANNEL_CSVLK,
            edition=host.os.edition_id,
            host_key_group=group,
        )
        old = next(iter(host.products_of(catalog.WINDOWS_APP_ID)), None)
    product.partial_key = key[-5:]
    product.key_digest = key_digest(key)
    product.license_status = OOB_GRACE
    grace_left = old.grace_expires if old is not None and old.license_status == OOB_GRACE else None
    product.grace_expires = grace_left or utc_iso(now + timedelta(days=OOB_GRACE_DAYS))
    _keep_client_settings(old, product)
    _replace_product(host, old, product)
    return product


# --------------------------------------------------------------------------- online / phone activation


@dataclass(slots=True)
class ActivationLedger:
    """What the lab's stand-in for Microsoft's activation service remembers per host key digest."""

    hosts: dict[str, list[str]]
    activations: dict[str, int]

    def record(self, digest: str, host: str) -> None:
        """Count one activation of a host key; 0xC004C008 past the limits [PLAN24][ERR]."""
        machines = self.hosts.setdefault(digest, [])
        count = self.activations.get(digest, 0)
        if (
            host not in machines and len(machines) >= MAX_HOSTS_PER_HOST_KEY
        ) or count >= MAX_ACTIVATIONS_PER_HOST_KEY:
            raise LabFailure(
                SL_E_CHPA_MAXIMUM_UNLOCK_EXCEEDED,
                "Activate",
                f"host key used on {len(machines)} computers, activated {count} times",
            )
        if host not in machines:
            machines.append(host)
        self.activations[digest] = count + 1


def _count_activation(
    host: HostState, product: Product, ledger: ActivationLedger, maks: MakService | None, stage: str
) -> None:
    """What Microsoft's activation service counts: host keys in the ledger, MAKs against their limit."""
    try:
        if product.is_kms_host and product.key_digest:
            ledger.record(product.key_digest, host.name)
        mak = maks.name_of_digest(product.key_digest) if maks is not None else None
        if product.channel == CHANNEL_MAK and mak is not None and maks is not None:
            maks.activate(mak, host.name, stage)
    except LabFailure as failure:
        # the product keeps its state and reports the HRESULT as LicenseStatusReason
        product.license_status_reason = failure.hresult or 0
        raise


def activate_online(
    host: HostState, product: Product, ledger: ActivationLedger, maks: MakService | None = None
) -> None:
    """Activation "over the internet" of a host key, MAK or retail key (host keys and MAKs are counted)."""
    _count_activation(host, product, ledger, maks, "Activate")
    product.license_status = LICENSED
    product.license_status_reason = 0
    product.grace_expires = None


def installation_id(host: HostState, product: Product) -> str:
    """OfflineInstallationId (lab rule in the module docstring): 63 digits, stable per host and key."""
    seed = f"kmsadmin-lab-iid/1|{host.service.cmid}|{product.activation_id}|{product.key_digest or ''}"
    return str(int.from_bytes(hashlib.sha256(seed.encode()).digest(), "big") % 10**63).zfill(63)


def confirmation_id_for(iid: str) -> str:
    """The Confirmation ID the lab accepts for an Installation ID (48 digits)."""
    digits = "".join(ch for ch in iid if ch.isdigit())
    seed = f"kmsadmin-lab-cid/1|{digits}"
    return str(int.from_bytes(hashlib.sha256(seed.encode()).digest(), "big") % 10**48).zfill(48)


def format_confirmation_id(cid: str) -> str:
    """8 blocks of 6 digits, as the activation line reads it out."""
    return "-".join(cid[i : i + 6] for i in range(0, 48, 6))


def deposit_confirmation(
    host: HostState, product: Product, cid: str, ledger: ActivationLedger, maks: MakService | None = None
) -> None:
    """DepositOfflineConfirmationId(OfflineInstallationId, CID) on the model."""
    digits = "".join(ch for ch in cid if ch.isdigit())
    if len(digits) != 48 or len(digits) != len(cid.replace("-", "").replace(" ", "")):
        # SL_E_CIDIID_INVALID_DATA_LENGTH: "the length of the offline Confirmation ID (CID) is incorrect"
        raise LabFailure(SL_E_CIDIID_INVALID_DATA_LENGTH, "DepositOfflineConfirmationId")
    if digits != confirmation_id_for(installation_id(host, product)):
        # SL_E_CIDIID_MISMATCHED: "The Installation ID (IID) and the Confirmation ID (CID) do not match"
        raise LabFailure(SL_E_CIDIID_MISMATCHED, "DepositOfflineConfirmationId")
    _count_activation(host, product, ledger, maks, "DepositOfflineConfirmationId")
    product.license_status = LICENSED
    product.license_status_reason = 0
    product.grace_expires = None


# --------------------------------------------------------------------------- Active Directory-based activation

#: Active Directory-based activation needs Windows 8 / Windows Server 2012 (build 9200) or later [ITPRO]
ADBA_MIN_BUILD = 9200
#: the container slmgr.vbs reads and writes activation objects in, below the configuration NC [SLMGRVBS]
AO_CONTAINER = "CN=Activation Objects,CN=Microsoft SPP,CN=Services,"


def configuration_nc(domain: str) -> str:
    """``CN=Configuration,DC=lab,DC=test`` for the forest root domain ``lab.test``."""
    return "CN=Configuration," + ",".join(f"DC={label}" for label in domain.split("."))


def ao_dn(domain: str, name: str) -> str:
    """The DN of the activation object called ``name``."""
    return f"CN={name},{AO_CONTAINER}{configuration_nc(domain)}"


def forest_installation_id(domain: str, key: str) -> str:
    """GenerateActiveDirectoryOfflineActivationId for a host key (lab rule in the module docstring)."""
    seed = f"kmsadmin-lab-adba-iid/1|{domain.lower()}|{key_digest(key)}"
    return str(int.from_bytes(hashlib.sha256(seed.encode()).digest(), "big") % 10**63).zfill(63)


def create_activation_object(
    objects: list[ActivationObject],
    domain: str,
    key: str,
    name: str,
    host_keys: HostKeys,
    ledger: ActivationLedger,
    now: datetime,
    *,
    confirmation: str | None = None,
) -> tuple[ActivationObject, bool]:
    """DoActiveDirectoryOnlineActivation, or DepositActiveDirectoryOfflineActivationConfirmation with a
    Confirmation ID: the activation service checks the host key, then the object is published.

    Returns the object and whether it was created (an object for the same key and name already there
    is left as it is).
    """
    stage = (
        "DoActiveDirectoryOnlineActivation"
        if confirmation is None
        else ("DepositActiveDirectoryOfflineActivationConfirmation")
    )
    group = host_keys.group_of(key)
    if group is None:
        # only a KMS host key (CSVLK) creates an activation object [ITPRO]; anything else is refused
        raise LabFailure(SL_E_INVALID_PRODUCT_KEY, stage, f"key ending {key[-5:]} is not a KMS host key")
    digest = key_digest(key)
    same = next((ao for ao in objects if ao.name.lower() == name.lower()), None)
    if same is not None:
        if same.key_digest == digest:
            return same, False
        raise LabFailure(None, "Check", f"an activation object named {name!r} already exists")
    if confirmation is not None:
        digits = "".join(ch for ch in confirmation if ch.isdigit())
        if len(digits) != 48:
            raise LabFailure(SL_E_CIDIID_INVALID_DATA_LENGTH, stage)
        if digits != confirmation_id_for(forest_installation_id(domain, key)):
            raise LabFailure(SL_E_CIDIID_MISMATCHED, stage)
    ledger.record(digest, f"forest:{domain.lower()}")
    obj = ActivationObject(
        name=name,
        dn=ao_dn(domain, name),
        host_key_group=group,
        partial_key=key[-5:],
        key_digest=digest,
        sku_id=lab_activation_id("windows-host", group),
        csvlk_pid=f"0{int(digest[:10], 16) % 10**5:05d}-03{int(digest[10:20], 16) % 10**3:03d}-000-000000-00-1033",
        created=utc_iso(now),
    )
    objects.append(obj)
    return obj, True


def find_activation_object(
    objects: list[ActivationObject], domain: str, spec: str
) -> ActivationObject | None:
    """An object by DN, by RDN (``CN=name``) or by name, as slmgr /del-ao takes it [SLMGRVBS]."""
    wanted = spec.strip()
    if ",cn=" in wanted.lower():
        dn = wanted
    elif wanted.lower().startswith("cn="):
        dn = f"{wanted},{AO_CONTAINER}{configuration_nc(domain)}"
    else:
        dn = ao_dn(domain, wanted)
    return next((ao for ao in objects if ao.dn.lower() == dn.lower()), None)


def matching_object(
    objects: list[ActivationObject], client: HostState, product: Product
) -> ActivationObject | None:
    """The first activation object whose host-key group activates this client's edition [PLAN24]."""
    entry = client_entry(client, product)
    if entry is None or client.os.build < ADBA_MIN_BUILD:
        return None
    return next((ao for ao in objects if _activates(ao.host_key_group, entry)), None)


def adba_activate(product: Product, obj: ActivationObject, now: datetime) -> None:
    """Activated from an activation object: no count threshold, valid for 180 days [ITPRO]."""
    product.license_status = LICENSED
    product.license_status_reason = 0
    product.grace_expires = utc_iso(now + timedelta(days=KMS_VALIDITY_DAYS))
    product.vl_activation_type = 1  # VLActivationType 1 = Active Directory [WMITABLE]
    product.ad_object_name = obj.name
    product.ad_object_dn = obj.dn


# --------------------------------------------------------------------------- KMS client requests


@dataclass(frozen=True, slots=True)
class Network:
    """How a client finds lab KMS hosts: name resolution and (optional) DNS SRV records."""

    resolve: Callable[[str], HostState | None]
    #: ``_vlmcs._tcp.<domain>`` SRV answers (hosts); empty when the lab has no DNS
    srv: Callable[[str], list[HostState]]


def _in_scope(rule: FirewallRule, kms: HostState, client: HostState) -> bool:
    """Whether the client's address is in the rule's remote-address scope (Set-NetFirewallRule
    -RemoteAddress: Any, LocalSubnet, addresses and subnets; [PSDOCS] NetSecurity)."""
    local = ipaddress.ip_network(kms.address + "/16" if kms.address else LAB_SUBNET, strict=False)
    source = ipaddress.ip_address(client.address or local.network_address + 2)
    for entry in rule.remote_addresses:
        if entry.lower() == "any" or (entry.lower() == "localsubnet" and source in local):
            return True
        try:
            if source in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue  # another keyword (DNS, DHCP...): never a lab client
    return False


def _firewall_open(kms: HostState, client: HostState) -> bool:
    # the client reaches TCP 1688 only through an enabled SPPSVC rule for the host's network profile
    # whose scope holds the client's address ([HOST25] Set-NetFirewallRule -Name SPPSVC-In-TCP ...;
    # rule defaults in microsoft.md §h: SPPSVC-In-TCP is LocalSubnet only)
    return any(
        rule.enabled
        and (kms.network_profile in rule.profiles or "Any" in rule.profiles)
        and _in_scope(rule, kms, client)
        for rule in kms.firewall
        if rule.name.upper().startswith("SPPSVC-IN-TCP")
    )


def _candidates(client: HostState, product: Product, net: Network) -> tuple[list[tuple[HostState, int]], str]:
    """Where the client sends its request: the pinned host, else the SRV records of its lookup domain."""
    service = client.service
    # A product's own KMS host (slmgr /skms host ActivationID) wins over the machine-wide one, with its
    # own port (0 = 1688): slmgr /dlv reads both from the product ([SLMGRVBS] DisplayKMSClientInformation).
    level = product if product.kms_machine else service
    pinned = level.kms_machine
    port = level.kms_port or DEFAULT_KMS_PORT
    if pinned:
        # `slmgr /skms <host[:port]>` pins one host and disables auto-discovery [DNS][SLMGRDOC]
        name = pinned.rsplit(":", 1)[0] if pinned.count(":") == 1 else pinned
        kms = net.resolve(name)
        return ([(kms, port)] if kms is not None else []), f"KMS host {pinned}:{port}"
    # auto-discovery: `_vlmcs._tcp` SRV records in the lookup domain (/skms-domain) or the client's
    # DNS suffix; a cached host is tried first when host caching is on [DNS][ODNS]
    domain = product.lookup_domain or service.lookup_domain or client.security.dns_suffix
    found = [(kms, kms.service.listening_port) for kms in net.srv(domain)]
    cached = service.discovered_kms if service.host_caching else None
    found.sort(key=lambda item: 0 if cached and item[0].fqdn.lower() == cached.lower() else 1)
    return found, f"_vlmcs._tcp.{domain}"


def answers(kms: HostState, port: int, client: HostState) -> bool:
    """Whether a TCP connection from ``client`` to ``kms`` on ``port`` succeeds: a KMS host listening there
    behind an SPPSVC firewall rule open to the client. Any other machine refuses it (nothing listens)."""
    return kms.is_kms_host and _firewall_open(kms, client) and port == kms.service.listening_port


def kms_activate(client: HostState, product: Product, net: Network, now: datetime) -> HostState:
    """One KMS activation request of ``product`` on ``client``; returns the KMS host that activated it.

    On failure the product keeps its state, gets the HRESULT as LicenseStatusReason, and
    :class:`LabFailure` is raised.
    """
    try:
        return _kms_activate(client, product, net, now)
    except LabFailure as failure:
        if failure.hresult is not None:
            product.license_status_reason = failure.hresult
        raise


def _kms_activate(client: HostState, product: Product, net: Network, now: datetime) -> HostState:
    candidates, target = _candidates(client, product, net)
    if not candidates:
        raise LabFailure(SL_E_VL_BINDING_SERVICE_UNAVAILABLE, "Activate", f"no KMS host found at {target}")
    errors: list[LabFailure] = []
    for kms, port in candidates:
        kms_product = kms.kms_host_product(product.application_id)
        if kms_product is None or not _firewall_open(kms, client) or port != kms.service.listening_port:
            # nothing answers on that name and port: "No Key Management Service (KMS) could be
            # contacted" [SLERR] 0xC004F074
            errors.append(
                LabFailure(
                    SL_E_VL_BINDING_SERVICE_UNAVAILABLE, "Activate", f"{kms.fqdn}:{port} did not answer"
                )
            )
            continue
        if kms_product.license_status != LICENSED:
            # SL_E_VL_KEY_MANAGEMENT_SERVICE_NOT_ACTIVATED: KMS host not activated [ERR]
            errors.append(LabFailure(SL_E_VL_KEY_MANAGEMENT_SERVICE_NOT_ACTIVATED, "Activate", f"{kms.fqdn}"))
            continue
        try:
            _request(client, product, kms, kms_product, now)
        except LabFailure as failure:
            if failure.hresult == SL_E_VL_INVALID_TIMESTAMP:
                errors.append(failure)
                continue
            raise
        product.discovered_kms = kms.fqdn
        product.discovered_port = port
        client.service.discovered_kms = kms.fqdn
        client.service.discovered_port = port
        return kms
    if len(errors) == 1:
        raise errors[0]
    # "All of the KMS host systems returned an error" [ERR] 0xC004F074
    raise LabFailure(
        SL_E_VL_BINDING_SERVICE_UNAVAILABLE, "Activate", f"all {len(errors)} KMS hosts at {target} failed"
    )


def _request(
    client: HostState, product: Product, kms: HostState, kms_product: Product, now: datetime
) -> None:
    """One request reaching the KMS host; it logs event 12290 whatever the outcome."""
    entry = client_entry(client, product)
    needed = int(catalog.threshold_for(entry)) if entry is not None else 25
    before = (product.license_status, product.grace_minutes(now))
    try:
        _process(client, product, kms, kms_product, entry, now)
    except LabFailure as failure:
        log_request(kms, client, product, needed, before, failure.hresult or 0, now)
        raise
    log_request(kms, client, product, needed, before, 0, now)


def _process(
    client: HostState, product: Product, kms: HostState, kms_product: Product, entry: Any, now: datetime
) -> None:
    service = kms.service
    if abs(client.clock(now) - kms.clock(now)) > MAX_CLOCK_SKEW:
        service.requests.total += 1
        service.requests.failed += 1
        raise LabFailure(SL_E_VL_INVALID_TIMESTAMP, "Activate", "client and KMS host clocks differ")
    group = kms_product.host_key_group or ""
    if entry is None or not _activates(group, entry):
        # the host's key group does not list this edition (compatibility matrix [PLAN24]):
        # SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH [ERR]
        service.requests.total += 1
        service.requests.failed += 1
        raise LabFailure(
            SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH,
            "Activate",
            f"a {group_target(group)} host cannot activate {product.name}",
        )
    threshold = int(catalog.threshold_for(entry))
    count = record_contact(kms, product.application_id, client.service.cmid, threshold, now)
    service.requests.total += 1
    service.requests.count(product.license_status)
    if count < threshold:
        # "Clients activate if the count is 25 or higher"; "Servers and volume editions of Microsoft
        # Office products activate if the count is five or greater" [PLAN24]; the count includes the
        # requesting client. SL_E_VL_NOT_ENOUGH_COUNT [ERR]
        raise LabFailure(SL_E_VL_NOT_ENOUGH_COUNT, "Activate", f"count {count}, needs {threshold}")
    # "KMS activations are valid for 180 days" [PLAN24]; VLActivationType 2 = KMS [WMITABLE]
    product.license_status = LICENSED
    product.license_status_reason = 0
    product.grace_expires = utc_iso(now + timedelta(days=KMS_VALIDITY_DAYS))
    product.vl_activation_type = 2


def log_request(
    kms: HostState,
    client: HostState,
    product: Product,
    needed: int,
    before: tuple[int, int],
    hresult: int,
    now: datetime,
) -> None:
    """Event 12290 on the KMS host, as Windows writes it: one Info string of nine comma-separated fields
    (result, minimum count needed, client FQDN, CMID, client timestamp, is VM, license state, minutes to
    expiration, SKU ID; activation-troubleshoot-kms-general "Event ID 12290")."""
    status, minutes = before
    info = ", ".join(
        (
            f"0x{hresult:X}",
            str(needed),
            client.fqdn,
            client.service.cmid,
            client.clock(now).strftime("%Y/%m/%d %H:%M"),
            "0",
            str(status),
            str(minutes),
            product.activation_id,
        )
    )
    log_event(kms, 12290, [info], now)


def log_event(kms: HostState, event_id: int, values: list[str], now: datetime) -> None:
    """Append one event to the host's "Key Management Service" log (the newest MAX_LOG_EVENTS are kept)."""
    events = kms.service.events
    events.append(LogEvent(id=event_id, time=utc_iso(kms.clock(now)), values=values))
    if len(events) > MAX_LOG_EVENTS:
        del events[: len(events) - MAX_LOG_EVENTS]


def _activates(group: str, entry: Any) -> bool:
    return bool(catalog.group_activates(catalog.csvlk_group(group), entry))


def record_contact(kms: HostState, application_id: str, cmid: str, threshold: int, now: datetime) -> int:
    """Count a client machine on a KMS host and return the host's current count for that application."""
    contacts = kms.service.contacts.setdefault(application_id.lower(), [])
    horizon = now - timedelta(days=COUNT_WINDOW_DAYS)
    # "only counts unique connections from the past 30 days" [PLAN24]
    kept = [c for c in contacts if c.cmid != cmid and parse_iso(c.last_seen) >= horizon]
    kept.append(Contact(cmid=cmid, last_seen=utc_iso(now), threshold=threshold))
    # "only stores the 50 most recent contacts" [PLAN24]
    kept = kept[-MAX_CONTACTS:]
    contacts[:] = kept
    return current_count(kms, application_id, now)


def current_count(kms: HostState, application_id: str, now: datetime) -> int:
    """KeyManagementServiceCurrentCount for one application; -1 before any request [SPPWMI]."""
    contacts = kms.service.contacts.get(application_id.lower())
    if not contacts:
        return -1
    horizon = now - timedelta(days=COUNT_WINDOW_DAYS)
    live = [c for c in contacts if parse_iso(c.last_seen) >= horizon]
    if not live:
        return 0
    # the count never exceeds twice the highest threshold it has seen: "50 or 2 x 25", "server-only
    # environments max 10" [TSKMS]; Office: "The maximum current count is ... 10" [OHOST]
    ceiling = 2 * max(c.threshold for c in live)
    return min(len(live), ceiling)
