"""Activation health: why a machine is not activated, and what is wrong across the fleet (pure).

Per host (:func:`host_view`, from its facts alone): each volume product's license status, the reason
it is not Licensed (``SoftwareLicensingProduct.LicenseStatusReason``, an HRESULT, with the catalog's
meaning and fix), validity or grace left, the KMS host the client uses (pinned with ``slmgr /skms``,
or discovered through DNS: ``DiscoveredKeyManagementServiceMachineName``/``Port``) and when it last
activated.

Across the fleet (:func:`fleet_findings`, from every host's view): duplicate Client Machine IDs,
editions the client's KMS host cannot activate, KMS hosts below their threshold and the clients they
keep waiting, clients pinned to a name that is not a KMS host of the fleet, clock skew, validity
running out, and KMS hosts whose DNS publishing failed.

Sources (microsoft.md): [SPPWMI] LicenseStatus/LicenseStatusReason/GracePeriodRemaining ("For volume
clients, this is the remaining time before reactivation is required"); [PLAN24] "KMS activations are
valid for 180 days", thresholds 25/5 and the host key group matrix; [TSKMS] "Duplicate CMIDs ... stop
the count from rising"; Microsoft's "Windows activation - duplicate Client Machine ID" support article
(SupportArticles-docs, 12/26/2023) for the CMID fix; [ERR] 0xC004F06C for clock skew.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kmsadmin import catalog
from kmsadmin.catalog import ClientKey, CsvlkGroup, NotFoundInCatalog
from kmsadmin.errors import InvalidInput, KmsAdminError
from kmsadmin.facts import HostFacts, KmsEventLog, ProductFacts

#: KMS refuses a request whose timestamp is too far from the host's clock (0xC004F06C [ERR]). The
#: 4-hour tolerance is the commonly cited value; Microsoft's pages give none (UNCONFIRMED).
MAX_CLOCK_SKEW = timedelta(hours=4)

#: ``--only expiring`` / ``--fail-on expiring`` without ``:DAYS``
DEFAULT_EXPIRING_DAYS = 30

#: the host states ``--only`` and ``--fail-on`` select
STATES = ("not-activated", "expiring", "waiting", "failed")

CMID_FIX = (
    "the image was not generalized (sysprep ran with SkipRearm=1, or not at all), so every copy has the "
    "same Client Machine ID and the KMS host counts them as one machine. On each copy run 'slmgr /rearm' "
    "from an elevated prompt, restart, check the new CMID with 'slmgr /dlv', then activate again; "
    "generalize the source image with SkipRearm=0 (Microsoft: 'Windows activation - duplicate Client "
    "Machine ID')"
)

_HOST_TAG = re.compile(r"VOLUME_KMS_(WS|W)(\d+)", re.IGNORECASE)
_NOT_ENOUGH = catalog.NOT_ENOUGH_COUNT


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong, with the hosts it concerns and the fix."""

    kind: str
    message: str
    fix: str
    hosts: tuple[str, ...] = ()
    hresult: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "kind": self.kind,
            "hosts": list(self.hosts),
            "message": self.message,
            "fix": self.fix,
            "hresult": self.hresult,
        }


@dataclass(frozen=True, slots=True)
class ProductView:
    """One volume product of a host: Windows or an Office product."""

    name: str
    family: str
    license_status: int
    license_status_name: str
    days_left: float | None
    expires: str | None
    last_activated: str | None
    reason: dict[str, Any] | None
    kms_client: bool
    kms_host_key: bool
    pinned: str | None
    discovered: str | None

    @property
    def activated(self) -> bool:
        """LicenseStatus 1 (Licensed) [SPPWMI]."""
        return self.license_status == 1

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "name": self.name,
            "family": self.family,
            "license_status": self.license_status,
            "license_status_name": self.license_status_name,
            "activated": self.activated,
            "days_left": self.days_left,
            "expires": self.expires,
            "last_activated": self.last_activated,
            "reason": self.reason,
            "kms_client": self.kms_client,
            "pinned_kms_host": self.pinned,
            "discovered_kms_host": self.discovered,
        }


@dataclass(slots=True)
class HostView:
    """What :func:`fleet_findings` needs of one host, and what ``status`` shows per host."""

    host: str
    role: str | None = None
    read: bool = True
    error: dict[str, Any] | None = None
    computer_name: str | None = None
    fqdn_names: tuple[str, ...] = ()
    edition: ClientKey | None = None
    products: list[ProductView] = field(default_factory=list)
    cmid: str | None = None
    clock_skew_minutes: float | None = None
    pinned: str | None = None
    lookup_domain: str | None = None
    discovered: str | None = None
    is_kms_host: bool = False
    host_key_groups: tuple[CsvlkGroup, ...] = ()
    current_count: int | None = None
    dns_publishing: bool | None = None
    events: dict[str, Any] | None = None
    reach: dict[str, Any] | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def uses(self) -> str | None:
        """The KMS host the client uses: pinned, else the one it last found through DNS."""
        return self.pinned or self.discovered

    def client_products(self) -> list[ProductView]:
        """Products activated through a KMS host (a GVLK is installed)."""
        return [p for p in self.products if p.kms_client]

    def checked(self) -> list[ProductView]:
        """The products whose status counts: all but host keys, or the host keys of a KMS-only host."""
        return [p for p in self.products if not p.kms_host_key] or list(self.products)

    def activated(self) -> bool:
        """Every volume product (Windows and Office) is Licensed."""
        checked = self.checked()
        return bool(checked) and all(p.activated for p in checked)

    def days_left(self) -> float | None:
        """The fewest days of validity or grace left over the host's products (None: no expiry)."""
        days = [p.days_left for p in self.checked() if p.days_left is not None]
        return min(days) if days else None

    def validity_left(self) -> float | None:
        """The fewest days of KMS validity left over the activated products (None: none expires)."""
        days = [p.days_left for p in self.checked() if p.activated and p.days_left is not None]
        return min(days) if days else None

    def reasons(self) -> list[str]:
        """HRESULTs of the products that are not Licensed."""
        return [str(p.reason["hresult"]) for p in self.products if p.reason and not p.activated]

    def states(self, expiring_days: int = DEFAULT_EXPIRING_DAYS) -> set[str]:
        """Which of :data:`STATES` this host is in."""
        found: set[str] = set()
        if not self.read:
            return {"failed", "not-activated"}
        if not self.activated():
            found.add("not-activated")
            if _NOT_ENOUGH in self.reasons():
                found.add("waiting")
            elif self.reasons():
                found.add("failed")
        left = self.validity_left()
        if left is not None and left <= expiring_days:
            found.add("expiring")
        return found

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the ``activation`` member of a status report's host entry)."""
        return {
            "activated": self.activated() if self.read else None,
            "days_left": self.days_left(),
            "states": sorted(self.states()),
            "reasons": self.reasons(),
            "edition": self.edition.display if self.edition else None,
            "kms_host": {
                "uses": self.uses,
                "pinned": self.pinned,
                "lookup_domain": self.lookup_domain,
                "discovered": self.discovered,
            },
            "client_machine_id": self.cmid,
            "clock_skew_minutes": self.clock_skew_minutes,
            "products": [p.to_dict() for p in self.products],
            "is_kms_host": self.is_kms_host,
            "host_key_groups": [g.name for g in self.host_key_groups],
            "current_count": self.current_count,
            "findings": [f.to_dict() for f in self.findings],
        }


# ------------------------------------------------------------------------------ per host


def _reason(product: ProductFacts) -> dict[str, Any] | None:
    code = product.license_status_reason
    if not code or product.license_status == 1:
        return None
    try:
        normal = catalog.normalize_hresult(code)
    except KmsAdminError:
        return {"hresult": code, "symbol": None, "meaning": None, "fix": None}
    if int(normal, 16) == 0:
        return None
    info = catalog.hresult_info(normal)
    return {
        "hresult": normal,
        "symbol": info.symbol or None,
        "meaning": info.meaning,
        "fix": info.remediation,
    }


def _target(name: str | None, port: int | None) -> str | None:
    if not name:
        return None
    return f"{name}:{port or catalog.ACTIVATION_RULES.port}"


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _product_view(
    product: ProductFacts, facts: HostFacts, host_now: datetime | None, read_at: datetime
) -> ProductView:
    minutes = product.grace_minutes
    days_left = round(minutes / 1440, 1) if minutes > 0 else None
    now = host_now or read_at
    expires = _iso(now + timedelta(minutes=minutes)) if minutes > 0 else None
    last = None
    if product.license_status == 1 and product.is_kms_client and minutes > 0:
        # GracePeriodRemaining of an activated KMS client counts down the 180-day validity from its last
        # activation or renewal ([SPPWMI], [PLAN24])
        validity = timedelta(days=catalog.ACTIVATION_RULES.validity_days)
        last = _iso(now + timedelta(minutes=minutes) - validity)
    service = facts.service
    return ProductView(
        name=product.name,
        family="office" if product.is_office else "windows",
        license_status=product.license_status,
        license_status_name=catalog.license_status_name(product.license_status),
        days_left=days_left,
        expires=expires,
        last_activated=last,
        reason=_reason(product),
        kms_client=product.is_kms_client,
        kms_host_key=product.is_kms_host,
        pinned=_target(product.kms_machine or service.kms_machine, product.kms_port or service.kms_port),
        discovered=_target(
            product.discovered_kms or service.discovered_kms,
            product.discovered_port or service.discovered_port,
        ),
    )


def host_key_groups(facts: HostFacts) -> tuple[CsvlkGroup, ...]:
    """The host key (CSVLK) groups a KMS host carries, from its products' Description and Activation ID.

    Windows host keys are named by their Description's channel tag (``VOLUME_KMS_WS22`` → Windows Server
    2022, ``VOLUME_KMS_W10`` → Windows 10) [SLMGRVBS]; Office host keys by their Activation ID ([OHOST]).
    """
    groups: list[CsvlkGroup] = []
    for product in facts.kms_host_products():
        group = _group_of(product)
        if group is not None and group not in groups:
            groups.append(group)
    return tuple(groups)


def _group_of(product: ProductFacts) -> CsvlkGroup | None:
    if product.is_office:
        for group in catalog.csvlk_groups("office"):
            if product.id.lower() in {str(a).lower() for a in group.kms_host_activation_ids}:
                return group
        return None
    match = _HOST_TAG.search(product.description)
    if match is None:
        return None
    kind, digits = match.group(1).upper(), match.group(2)
    target = f"Windows Server 20{digits[-2:]}" if kind == "WS" else f"Windows {digits}"
    try:
        return catalog.csvlk_group(target)
    except (NotFoundInCatalog, InvalidInput):
        return None


def host_view(
    host: str, facts: HostFacts, *, read_at: datetime, role: str | None = None, names: Iterable[str] = ()
) -> HostView:
    """One host's activation view from its facts (``read_at``: the controller's clock when they were read)."""
    service = facts.service
    target = facts.kms_target()
    host_now = _parse_time(facts.time_utc)
    os = facts.os
    edition = catalog.identify_windows(
        caption=os.caption, edition_id=os.edition_id, build=os.build, sku=os.sku, product_type=os.product_type
    )
    volume = [p for p in facts.products if p.is_windows or p.is_office]
    products = [
        _product_view(p, facts, host_now, read_at)
        for p in volume
        if not p.license_is_addon and (p.is_kms_client or p.is_kms_host or p.is_windows)
    ]
    view = HostView(
        host=host,
        role=role,
        computer_name=facts.computer_name or None,
        fqdn_names=tuple(n.lower() for n in (host, facts.computer_name, *names) if n),
        edition=edition,
        products=products,
        cmid=service.client_machine_id,
        clock_skew_minutes=(
            round((host_now - read_at).total_seconds() / 60, 1) if host_now is not None else None
        ),
        # the Windows product's own KMS host wins over the machine-wide one (HostFacts.kms_target)
        pinned=_target(target.machine, target.port),
        lookup_domain=target.lookup_domain,
        discovered=_target(service.discovered_kms, service.discovered_port),
        is_kms_host=service.is_kms_host,
        host_key_groups=host_key_groups(facts),
        current_count=service.current_count if service.is_kms_host else None,
        dns_publishing=service.dns_publishing if service.is_kms_host else None,
    )
    for product in products:
        if product.reason and not product.activated:
            view.findings.append(
                Finding(
                    "not-activated",
                    f"{product.name}: {product.license_status_name}, "
                    f"{product.reason['hresult']}: {product.reason['meaning'] or 'reason unknown'}",
                    product.reason["fix"] or "",
                    (host,),
                    str(product.reason["hresult"]),
                )
            )
    return view


def failed_view(host: str, error: Mapping[str, Any] | None, role: str | None = None) -> HostView:
    """A host whose facts could not be read."""
    return HostView(host=host, role=role, read=False, error=dict(error or {}))


# ------------------------------------------------------------------------------ states and filters


def parse_state(text: str) -> tuple[str, int]:
    """``expiring:14`` -> (``expiring``, 14); other states take no value."""
    name, _, value = text.strip().lower().partition(":")
    if name not in STATES:
        raise InvalidInput("state", text, f"expected one of {', '.join(STATES)} (expiring[:DAYS])")
    if value and name != "expiring":
        raise InvalidInput("state", text, f"{name} takes no value")
    days = DEFAULT_EXPIRING_DAYS
    if value:
        if not value.isdigit() or not 0 <= int(value) <= 3650:
            raise InvalidInput("state", text, "DAYS must be a whole number of days (0-3650)")
        days = int(value)
    return name, days


def parse_states(text: str | None) -> list[tuple[str, int]]:
    """``not-activated,expiring:30`` -> [(not-activated, 30), (expiring, 30)]."""
    if not text:
        return []
    return [parse_state(item) for item in text.split(",") if item.strip()]


def matches(view: HostView, wanted: Sequence[tuple[str, int]]) -> bool:
    """Whether the host is in any of the wanted states."""
    return any(name in view.states(days) for name, days in wanted)


# ------------------------------------------------------------------------------ fleet findings


def _name(target: str | None) -> str | None:
    if not target:
        return None
    name = target.rsplit(":", 1)[0] if target.count(":") == 1 else target
    return name.strip().rstrip(".").lower()


def _port(target: str | None) -> int:
    if target and target.count(":") == 1:
        tail = target.rsplit(":", 1)[1]
        if tail.isdigit():
            return int(tail)
    return catalog.ACTIVATION_RULES.port


def _index(views: Sequence[HostView]) -> dict[str, HostView]:
    index: dict[str, HostView] = {}
    for view in views:
        if not view.is_kms_host:
            continue
        for name in view.fqdn_names:
            index.setdefault(name, view)
            index.setdefault(name.split(".", 1)[0], view)
    return index


def kms_host_of(view: HostView, kms_index: Mapping[str, HostView]) -> HostView | None:
    """The fleet's KMS host a client uses, if it is one."""
    name = _name(view.uses)
    if name is None:
        return None
    return kms_index.get(name) or kms_index.get(name.split(".", 1)[0])


def fleet_findings(views: Sequence[HostView], *, expiring_days: int = DEFAULT_EXPIRING_DAYS) -> list[Finding]:
    """Findings that need every host's view. Per-host findings are also added to each view."""
    read = [v for v in views if v.read]
    kms_index = _index(read)
    found: list[Finding] = []
    found += _duplicate_cmids(read)
    for view in read:
        if view.is_kms_host and not view.client_products():
            continue
        kms = kms_host_of(view, kms_index)
        found += _target_findings(view, kms, kms_index)
        if kms is not None:
            found += _group_findings(view, kms)
        found += _skew_findings(view, kms)
        found += _expiring_findings(view, expiring_days)
    found += _threshold_findings(read, kms_index)
    found += _event_cmid_findings(read, found)
    found += _dns_findings(read)
    for finding in found:
        for view in views:
            if view.host in finding.hosts and finding not in view.findings:
                view.findings.append(finding)
    return found


def _duplicate_cmids(views: Sequence[HostView]) -> list[Finding]:
    by_cmid: dict[str, list[str]] = defaultdict(list)
    for view in views:
        if view.cmid and view.client_products():
            by_cmid[view.cmid.lower()].append(view.host)
    return [
        Finding(
            "duplicate-cmid",
            f"{len(hosts)} hosts share the Client Machine ID {cmid}: the KMS host counts them as one "
            "machine, so its count will not rise",
            CMID_FIX,
            tuple(hosts),
        )
        for cmid, hosts in sorted(by_cmid.items())
        if len(hosts) > 1
    ]


def _target_findings(
    view: HostView, kms: HostView | None, kms_index: Mapping[str, HostView]
) -> list[Finding]:
    """The client's KMS host: pinned outside the fleet, not resolving or not answering from the client
    (its own ``kms-reach`` view), or no ``_vlmcs._tcp`` answer for a client that relies on DNS."""
    reach = view.reach if view.reach and not view.reach.get("error") else None
    target = (reach or {}).get("target") or {}
    srv = (reach or {}).get("srv") or {}
    names = sorted({v.host for v in kms_index.values()})
    fleet = f" ({', '.join(names)})" if names else ""
    found: list[Finding] = []
    shown = f"{target.get('name')}:{target.get('port')}" if target.get("name") else view.uses
    if reach is not None and target.get("name") and target.get("resolves") is False:
        problem = f"does not resolve from the client ({target.get('error') or 'no address'})"
    elif reach is not None and target.get("name") and target.get("connects") is False:
        problem = (
            f"resolves, but nothing answers on TCP {target.get('port')} from the client "
            f"({target.get('error') or 'no connection'})"
        )
    elif view.pinned and kms is None and kms_index:
        problem = "answers, but is not a KMS host of this fleet" if target.get("connects") else ""
        problem = problem or "is not a KMS host of this fleet"
    else:
        problem = ""
    if problem:
        how = "pinned to" if view.pinned else "uses"
        found.append(
            Finding(
                "kms-target",
                f"{how} {shown}, which {problem}{fleet if 'fleet' in problem else ''}",
                f"pin a KMS host of the fleet (kmsadmin convert-client {view.host} --kms-host NAME), or clear "
                "the pin to use DNS auto-discovery (slmgr /ckms, kmsadmin convert-client --auto-discover)",
                (view.host,),
                "0xC004F074",
            )
        )
    if reach is not None and not view.pinned and srv.get("name") and not srv.get("answered"):
        found.append(
            Finding(
                "srv-lookup",
                f"the client's lookup of {srv.get('name')} has no answer ({srv.get('error') or 'no record'}); "
                "it finds no KMS host through DNS",
                "publish the KMS host's SRV record in that domain (kmsadmin dns record, or DNS publishing on "
                "the KMS host), set the lookup domain (slmgr /skms-domain), or pin a host (slmgr /skms)",
                (view.host,),
                srv.get("error") or "0x8007232B",
            )
        )
    return found


def _group_findings(view: HostView, kms: HostView) -> list[Finding]:
    found: list[Finding] = []
    windows_groups = [g for g in kms.host_key_groups if g.family != "office"]
    office_groups = [g for g in kms.host_key_groups if g.family == "office"]
    edition = view.edition
    if (
        edition is not None
        and windows_groups
        and edition.family == "windows"
        and not any(catalog.group_activates(g, edition) for g in windows_groups)
    ):
        groups = ", ".join(g.name for g in windows_groups)
        found.append(
            Finding(
                "edition-not-activatable",
                f"{edition.display} cannot be activated by {kms.host}'s host key ({groups}); "
                "requests fail with 0xC004F042",
                "install a newer host key group on the KMS host (kmsadmin compat --client "
                f"'{edition.name}'), or point the client at a KMS host that carries one",
                (view.host,),
                "0xC004F042",
            )
        )
    for product in view.client_products():
        if product.family != "office":
            continue
        entry = catalog.identify_office(product.name, "VOLUME_KMSCLIENT")
        if not office_groups:
            found.append(
                Finding(
                    "office-no-host-key",
                    f"{product.name} uses {kms.host}, which has no Office host key: no Office "
                    "activation is possible there",
                    "install the Office Volume License Pack and an Office host key on the KMS host and "
                    "activate it ([OHOST]), or point the client at a KMS host that has one",
                    (view.host,),
                    "0xC004F074",
                )
            )
        elif entry is not None and not any(catalog.group_activates(g, entry) for g in office_groups):
            found.append(
                Finding(
                    "edition-not-activatable",
                    f"{product.name} cannot be activated by {kms.host}'s Office host key "
                    f"({', '.join(g.name for g in office_groups)})",
                    "install the host key of this Office version on the KMS host (one per Office version, "
                    "[OHOST])",
                    (view.host,),
                    "0xC004F042",
                )
            )
    return found


def _skew_findings(view: HostView, kms: HostView | None) -> list[Finding]:
    if view.clock_skew_minutes is None:
        return []
    base = kms.clock_skew_minutes if kms is not None and kms.clock_skew_minutes is not None else 0.0
    skew = view.clock_skew_minutes - base
    if abs(skew) <= MAX_CLOCK_SKEW.total_seconds() / 60:
        return []
    against = f"its KMS host {kms.host}" if kms is not None else "this computer"
    return [
        Finding(
            "clock-skew",
            f"clock is {abs(skew) / 60:.1f} hours {'ahead of' if skew > 0 else 'behind'} {against}; KMS "
            "refuses the request (0xC004F06C)",
            str(catalog.hresult_info("0xC004F06C").remediation),
            (view.host,),
            "0xC004F06C",
        )
    ]


def _expiring_findings(view: HostView, days: int) -> list[Finding]:
    left = view.validity_left()
    if left is None or left > days:
        return []
    rules = catalog.ACTIVATION_RULES
    return [
        Finding(
            "expiring",
            f"activation expires in {left:g} days: the client has not renewed (every "
            f"{rules.renewal_interval_minutes // 1440} days) for {rules.validity_days - left:g} days",
            "check that the client still reaches its KMS host ('slmgr /ato' on it shows the error); when "
            "validity runs out it falls back to grace and then notification",
            (view.host,),
        )
    ]


def _threshold_findings(views: Sequence[HostView], kms_index: Mapping[str, HostView]) -> list[Finding]:
    waiting: dict[str, list[str]] = defaultdict(list)
    for view in views:
        if _NOT_ENOUGH not in view.reasons():
            continue
        kms = kms_host_of(view, kms_index)
        waiting[kms.host if kms else (view.uses or "unknown")].append(view.host)
    found = []
    for host, clients in sorted(waiting.items()):
        kms = next((v for v in views if v.host == host), None)
        count = kms.current_count if kms is not None else None
        rules = catalog.ACTIVATION_RULES
        found.append(
            Finding(
                "below-threshold",
                f"KMS host {host} has counted {'?' if count is None or count < 0 else count} machine(s), "
                f"below the threshold ({rules.client_threshold} for Windows clients, "
                f"{rules.server_threshold} for servers and Office); it keeps {len(clients)} client(s) "
                "waiting",
                "add clients to this KMS host (or move these to a host that has reached its threshold), "
                "and check for duplicate Client Machine IDs",
                (host, *clients),
                _NOT_ENOUGH,
            )
        )
    return found


def _event_cmid_findings(views: Sequence[HostView], found: Sequence[Finding]) -> list[Finding]:
    """Duplicate CMIDs the KMS hosts saw in their requests that the clients' own facts did not show."""
    known = {
        m.split("Client Machine ID ", 1)[1].split(":", 1)[0]
        for f in found
        if f.kind == "duplicate-cmid"
        for m in [f.message]
    }
    result = []
    for view in views:
        for shared in (view.events or {}).get("shared_cmids") or []:
            if shared["cmid"] in known:
                continue
            names = ", ".join(shared["clients"][:10])
            result.append(
                Finding(
                    "duplicate-cmid",
                    f"KMS host {view.host} received requests from {len(shared['clients'])} clients with the "
                    f"Client Machine ID {shared['cmid']} ({names}): it counts them as one machine",
                    CMID_FIX,
                    (view.host,),
                )
            )
    return result


def _dns_findings(views: Sequence[HostView]) -> list[Finding]:
    found = []
    for view in views:
        events = view.events or {}
        failures = events.get("dns_publishing_failures") or 0
        if view.is_kms_host and failures:
            found.append(
                Finding(
                    "dns-publishing",
                    f"KMS host {view.host} failed to publish its _vlmcs._tcp SRV record {failures} time(s)",
                    "allow the KMS host to update its SRV record (dynamic update, or DNS permissions for "
                    "the KMS hosts), or publish it by hand (kmsadmin dns record) and disable publishing "
                    "(slmgr /cdns) [DNS][HOST25]",
                    (view.host,),
                )
            )
    return found


# ------------------------------------------------------------------------------ the KMS host's event log

#: the nine fields of event 12290's Info string, in order (activation-troubleshoot-kms-general,
#: "Event ID 12290": result, "Minimum count needed to activate", client FQDN, "Client Machine ID (CMID)",
#: client time stamp, VM, license state, time to state expiration, SKU ID)
EVENT_FIELDS = ("result", "needed", "client", "cmid", "client_time", "vm", "license_state", "minutes", "sku")


def event_fields(values: Sequence[str]) -> dict[str, str] | None:
    """The fields of one 12290 event: one comma-separated Info string, or the nine values themselves."""
    parts = [v.strip() for v in values]
    if len(parts) == 1:
        parts = [p.strip() for p in parts[0].split(",")]
    if len(parts) > len(EVENT_FIELDS):
        parts = parts[-len(EVENT_FIELDS) :]
    if len(parts) != len(EVENT_FIELDS):
        return None
    return dict(zip(EVENT_FIELDS, parts, strict=True))


def summarize_events(log: KmsEventLog) -> dict[str, Any]:
    """Clients seen, distinct CMIDs vs requests, failing requests by HRESULT, DNS publishing failures."""
    requests = 0
    unreadable = 0
    clients: set[str] = set()
    cmids: dict[str, set[str]] = defaultdict(set)
    failures: dict[str, int] = defaultdict(int)
    needed: dict[str, int] = defaultdict(int)
    dns_failures: dict[str, int] = defaultdict(int)
    for event in log.events:
        if event.id == 12293:
            domain = event.values[1] if len(event.values) > 1 else ""
            dns_failures[domain.strip() or "?"] += 1
            continue
        if event.id != 12290:
            continue
        fields = event_fields(event.values)
        if fields is None:
            unreadable += 1
            continue
        requests += 1
        client = fields["client"].lower()
        clients.add(client)
        cmids[fields["cmid"].lower()].add(client)
        needed[fields["needed"]] += 1
        try:
            result = catalog.normalize_hresult(fields["result"])
        except KmsAdminError:
            result = fields["result"][:16]
        if result != "0x00000000":
            failures[result] += 1
    shared = [
        {"cmid": cmid, "clients": sorted(names)} for cmid, names in sorted(cmids.items()) if len(names) > 1
    ]
    return {
        "days": log.days,
        "events": len(log.events),
        "truncated": log.truncated,
        "log_missing": log.log_missing,
        "requests": requests,
        "clients": len(clients),
        "distinct_cmids": len(cmids),
        "failed_requests": sum(failures.values()),
        "failures_by_hresult": dict(sorted(failures.items())),
        "requests_by_minimum_count": dict(sorted(needed.items())),
        "shared_cmids": shared,
        "dns_publishing_failures": sum(dns_failures.values()),
        "dns_publishing_failed_domains": sorted(dns_failures),
        "unreadable": unreadable,
    }


def summarize_findings(findings: Iterable[Finding]) -> dict[str, int]:
    """Findings by kind."""
    counts: dict[str, int] = defaultdict(int)
    for finding in findings:
        counts[finding.kind] += 1
    return dict(sorted(counts.items()))
