"""Capacity planning for ``kmsadmin plan``: host key group, host OS fit, thresholds, host count, key budget.

Pure: machines in (from inventory variables, or from gathered facts), a :class:`CapacityPlan` out.
The rules, all from Microsoft's KMS planning docs via :mod:`kmsadmin.catalog`:

* the KMS host key (CSVLK) group the fleet needs is the oldest current group that activates every
  client edition (kms-activation-planning, compatibility tables; e.g. Windows 11 Enterprise LTSC 2024
  needs the Windows Server 2025 group);
* each KMS host's OS must be able to carry that group, after the listed updates ("KMS host required
  updates": e.g. a Windows Server 2019 host needs KB5034768 or a later cumulative update for the
  Windows Server 2025 group);
* "Clients activate if the count is 25 or higher"; "Servers and volume editions of Microsoft Office
  products activate if the count is five or greater" — the count is of distinct machines;
* more than 50 clients: "at least two KMS hosts";
* a CSVLK activates "up to six" KMS hosts, and a host "up to nine times" more with the same key
  (0xC004C008: "up to 10 times on up to six different computers").
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kmsadmin import catalog
from kmsadmin.catalog import ClientKey, CsvlkGroup, NotFoundInCatalog
from kmsadmin.errors import InvalidInput
from kmsadmin.facts import HostFacts

Role = Literal["kms_host", "client"]

KMS_HOSTS_GROUP = "kms_hosts"


@dataclass(frozen=True, slots=True)
class Machine:
    """One machine as the plan sees it: role, what it runs, its updates and Office products."""

    name: str
    role: Role
    #: OS name or caption (``kmsadmin_os``), e.g. "Windows Server 2019" or "Microsoft Windows 11 Enterprise"
    os: str | None = None
    #: catalog name (``kmsadmin_edition``), e.g. "windows-11-enterprise-ltsc-2024"
    edition: str | None = None
    edition_id: str | None = None
    build: int | None = None
    #: update build revision (``kmsadmin_ubr`` or facts): with ``build``, decides "or later" updates
    ubr: int | None = None
    sku: int | None = None
    product_type: int | None = None
    #: installed updates (``kmsadmin_hotfixes`` or facts), None when unknown
    hotfixes: tuple[str, ...] | None = None
    #: Office volume products: catalog names, or SoftwareLicensingProduct names from facts
    office: tuple[str, ...] = ()
    #: member of an AD domain (``kmsadmin_domain_joined`` or Win32_ComputerSystem.PartOfDomain); None unknown
    domain_joined: bool | None = None
    #: the admin's choice for this machine (``kmsadmin_activation: mak`` names a MAK exception)
    activation: str | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """A problem (blocking) or a warning, with the fix."""

    check: str
    message: str
    remediation: str
    host: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "check": self.check,
            "host": self.host,
            "message": self.message,
            "remediation": self.remediation,
        }


@dataclass(slots=True)
class HostFit:
    """Whether one KMS host can carry the needed group(s), and what it must install first."""

    name: str
    os: str | None
    group: str
    ok: bool
    reason: str
    required_updates: list[dict[str, Any]] = field(default_factory=list)
    missing_updates: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "host": self.name,
            "os": self.os,
            "group": self.group,
            "ok": self.ok,
            "reason": self.reason,
            "required_updates": self.required_updates,
            "missing_updates": self.missing_updates,
        }


@dataclass(slots=True)
class CapacityPlan:
    """The answer of ``kmsadmin plan``."""

    kms_hosts: list[str] = field(default_factory=list)
    clients: dict[str, int] = field(default_factory=dict)
    editions: dict[str, int] = field(default_factory=dict)
    windows_group: CsvlkGroup | None = None
    office_group: CsvlkGroup | None = None
    fits: list[HostFit] = field(default_factory=list)
    thresholds: list[dict[str, Any]] = field(default_factory=list)
    #: per KMS host: the clients :func:`assign_clients` pins to it (as the rollout does) and its count
    per_host: list[dict[str, Any]] = field(default_factory=list)
    recommended_hosts: int = 1
    budget: dict[str, Any] = field(default_factory=dict)
    unidentified: list[dict[str, str]] = field(default_factory=list)
    #: the activation method recommended per client (ADBA, KMS, MAK) and why (:func:`recommend_methods`)
    activation: dict[str, Any] = field(default_factory=dict)
    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        """A blocking problem: a host cannot carry the group, or a threshold cannot be reached."""
        return bool(self.problems)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "kms_hosts": self.kms_hosts,
            "clients": self.clients,
            "editions": self.editions,
            "windows_host_key_group": self.windows_group.name if self.windows_group else None,
            "windows_host_key_group_id": self.windows_group.id if self.windows_group else None,
            "office_host_key_group": self.office_group.name if self.office_group else None,
            "hosts": [f.to_dict() for f in self.fits],
            "thresholds": self.thresholds,
            "per_host": self.per_host,
            "recommended_kms_hosts": self.recommended_hosts,
            "host_key_budget": self.budget,
            "unidentified": self.unidentified,
            "activation": self.activation,
            "blocked": self.blocked,
            "problems": [p.to_dict() for p in self.problems],
            "warnings": [w.to_dict() for w in self.warnings],
        }


# ------------------------------------------------------------------------------ machines from vars


def _opt_int(name: str, key: str, value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise InvalidInput(f"inventory host {name}: {key}", str(value), "must be a whole number") from None


def _names(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, list | tuple):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return (str(value),)


def machine_from_vars(name: str, hostvars: Mapping[str, Any], groups: Collection[str]) -> Machine:
    """A machine from inventory variables.

    Role: member of ``kms_hosts`` or ``kmsadmin_role: kms_host``. Identity: ``kmsadmin_edition`` (catalog
    name), ``kmsadmin_os`` (OS name or caption, as the lab writes it), optional ``kmsadmin_edition_id``,
    ``kmsadmin_build``, ``kmsadmin_ubr``, ``kmsadmin_sku``; ``kmsadmin_hotfixes`` (list or comma-separated
    KBs);
    ``kmsadmin_office`` (Office catalog names).
    """
    role: Role = (
        "kms_host" if KMS_HOSTS_GROUP in groups or hostvars.get("kmsadmin_role") == "kms_host" else "client"
    )
    hotfixes = hostvars.get("kmsadmin_hotfixes")
    return Machine(
        name=name,
        role=role,
        os=str(hostvars["kmsadmin_os"]) if hostvars.get("kmsadmin_os") else None,
        edition=str(hostvars["kmsadmin_edition"]) if hostvars.get("kmsadmin_edition") else None,
        edition_id=str(hostvars["kmsadmin_edition_id"]) if hostvars.get("kmsadmin_edition_id") else None,
        build=_opt_int(name, "kmsadmin_build", hostvars.get("kmsadmin_build")),
        ubr=_opt_int(name, "kmsadmin_ubr", hostvars.get("kmsadmin_ubr")),
        sku=_opt_int(name, "kmsadmin_sku", hostvars.get("kmsadmin_sku")),
        product_type=_opt_int(name, "kmsadmin_product_type", hostvars.get("kmsadmin_product_type")),
        hotfixes=None if hotfixes is None else tuple(h.upper() for h in _names(hotfixes)),
        office=_names(hostvars.get("kmsadmin_office")),
        domain_joined=_opt_bool(hostvars.get("kmsadmin_domain_joined")),
        activation=str(hostvars["kmsadmin_activation"]).strip().lower()
        if hostvars.get("kmsadmin_activation")
        else None,
    )


def _opt_bool(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "yes", "1", "on")


def machine_from_facts(name: str, role: Role, facts: HostFacts) -> Machine:
    """A machine from gathered facts (``kmsadmin plan --gather``): exact edition ID, build, SKU, updates."""
    office = tuple(p.name for p in facts.office_products())
    return Machine(
        name=name,
        role=role,
        os=facts.os.caption,
        edition_id=facts.os.edition_id,
        build=facts.os.build,
        ubr=facts.os.ubr,
        sku=facts.os.sku,
        product_type=facts.os.product_type,
        hotfixes=tuple(h.upper() for h in facts.hotfixes),
        office=office,
        domain_joined=facts.security.domain_joined,
    )


# ------------------------------------------------------------------------------ identification


def _strip_vendor(text: str) -> str:
    return text.removeprefix("Microsoft ").strip()


def _from_caption(caption: str, product_type: int | None) -> tuple[ClientKey | None, str]:
    try:
        return catalog.find_client_key(_strip_vendor(caption)), "kmsadmin_os"
    except (NotFoundInCatalog, InvalidInput):
        pass
    entry = catalog.identify_windows(
        caption=caption, edition_id=None, build=None, sku=None, product_type=product_type
    )
    if entry is None:
        return None, f"{caption!r} is not a catalog edition"
    channel_words = {"ltsc", "ltsb"} & set(_strip_vendor(caption).lower().split())
    if channel_words and not channel_words & set(entry.name.split("-")):
        # A caption without its release year cannot tell LTSC releases apart (the catalog would fall
        # back to the non-LTSC edition, which needs a different host key group).
        return None, f"{caption!r} names no release; set kmsadmin_edition (e.g. {entry.name}-ltsc-YYYY)"
    return entry, "caption"


def identify(machine: Machine) -> tuple[ClientKey | None, str]:
    """The machine's Windows edition (catalog row) and how it was found, or None and why not."""
    if machine.edition:
        try:
            return catalog.find_client_key(machine.edition), "kmsadmin_edition"
        except (NotFoundInCatalog, InvalidInput) as exc:
            return None, f"kmsadmin_edition: {exc}"
    if machine.edition_id or machine.build or machine.sku:
        entry = catalog.identify_windows(
            caption=machine.os,
            edition_id=machine.edition_id,
            build=machine.build,
            sku=machine.sku,
            product_type=machine.product_type,
        )
        if entry is not None:
            return entry, "edition id / build / SKU"
        if machine.edition_id or machine.sku:
            # A reported edition the catalog does not know is not guessed from its caption.
            return None, catalog.unidentified_reason(
                caption=machine.os, edition_id=machine.edition_id, build=machine.build, sku=machine.sku
            )
    if not machine.os:
        return None, "no kmsadmin_os or kmsadmin_edition"
    return _from_caption(machine.os, machine.product_type)


def _office_keys(machine: Machine) -> tuple[list[ClientKey], list[str]]:
    keys: list[ClientKey] = []
    unknown: list[str] = []
    for name in machine.office:
        entry = catalog.identify_office(name, "VOLUME_KMSCLIENT")
        if entry is None:
            try:
                entry = catalog.find_client_key(name)
            except (NotFoundInCatalog, InvalidInput):
                entry = None
        if entry is None or entry.family != "office":
            unknown.append(name)
        else:
            keys.append(entry)
    return keys, unknown


# ------------------------------------------------------------------------------ client assignment


def assignment_threshold(keys: Iterable[ClientKey | None]) -> int:
    """The count every KMS host of a group of clients must reach: the highest threshold among them.

    25 as soon as one client runs a Windows client OS, or is not identified (its threshold may be 25);
    5 when all are Windows Servers or Office ([PLAN24]: "Clients activate if the count is 25 or higher";
    "Servers and volume editions of Microsoft Office products activate if the count is five or greater").
    The count is of distinct machines, servers included, so one figure serves the whole group.
    """
    rules = catalog.ACTIVATION_RULES
    listed = list(keys)
    if not listed or any(k is None for k in listed):
        return rules.client_threshold
    return max(catalog.threshold_for(k) for k in listed if k is not None)


def assign_clients(clients: list[str], servers: list[str], threshold: int) -> dict[str, str]:
    """Pin clients to KMS hosts so that no host is left below its threshold while another could reach it.

    Only as many hosts as the clients can each fill to ``threshold`` are used (at least one), and the
    clients are spread round robin over those, in the given orders: 30 clients and 2 hosts at 25 all go
    to the first host (a 15/15 split would leave both below 25 for good); 60 go 30/30. Hosts left out
    get no client (they stay as fail-over for DNS auto-discovery). Depends only on the inputs, so
    ``--limit`` and ``--resume`` keep every client on the same host.
    """
    if not servers:
        return {}
    usable = max(1, min(len(servers), len(clients) // max(1, threshold)))
    chosen = servers[:usable]
    return {client: chosen[i % usable] for i, client in enumerate(clients)}


# ------------------------------------------------------------------------------ the plan


def _host_os(machine: Machine) -> str | None:
    if machine.edition:
        try:
            return catalog.find_client_key(machine.edition).product
        except (NotFoundInCatalog, InvalidInput):
            return machine.os
    return machine.os


def _fit(machine: Machine, group: CsvlkGroup) -> HostFit:
    host_os = _host_os(machine)
    if not host_os:
        return HostFit(machine.name, None, group.name, False, "the host's OS is unknown (set kmsadmin_os)")
    verdict = catalog.host_can_carry(group, host_os, edition_id=machine.edition_id)
    fit = HostFit(machine.name, host_os, group.name, verdict.ok, verdict.reason)
    for update in verdict.required_updates:
        fit.required_updates.append(update.to_dict())
        if not update.installed(build=machine.build, ubr=machine.ubr, hotfixes=machine.hotfixes):
            fit.missing_updates.append(update.kb)
    return fit


def _builds(fit: HostFit) -> str:
    """`` (OS build 17763.5458 or later)`` for the missing updates whose build is known ([RELINFO])."""
    builds = [
        u["min_build"] for u in fit.required_updates if u["kb"] in fit.missing_updates and u["min_build"]
    ]
    return f" (OS build {', '.join(builds)} or later)" if builds else ""


def plan_capacity(machines: Iterable[Machine]) -> CapacityPlan:
    """Plan the KMS hosts for this fleet (pure)."""
    plan = CapacityPlan()
    hosts = list(machines)
    kms = [m for m in hosts if m.role == "kms_host"]
    clients = [m for m in hosts if m.role == "client"]
    plan.kms_hosts = [m.name for m in kms]
    windows_keys: dict[str, ClientKey] = {}
    office_keys: dict[str, list[ClientKey]] = {}
    for machine in clients:
        entry, how = identify(machine)
        if entry is None:
            plan.unidentified.append({"host": machine.name, "why": how})
        else:
            windows_keys[machine.name] = entry
            plan.editions[entry.name] = plan.editions.get(entry.name, 0) + 1
        found, unknown = _office_keys(machine)
        if found:
            office_keys[machine.name] = found
            for key in found:
                plan.editions[key.name] = plan.editions.get(key.name, 0) + 1
        for name in unknown:
            plan.unidentified.append(
                {"host": machine.name, "why": f"Office product {name!r} is not in the catalog"}
            )
    client_os = sorted(n for n, k in windows_keys.items() if k.kind == "client")
    server_os = sorted(n for n, k in windows_keys.items() if k.kind == "server")
    plan.clients = {
        "windows_client_os": len(client_os),
        "windows_server": len(server_os),
        "office": len(office_keys),
        "unidentified": len({u["host"] for u in plan.unidentified}),
        "total": len(clients),
    }
    _groups(plan, list(windows_keys.values()), [k for keys in office_keys.values() for k in keys])
    for group in (plan.windows_group, plan.office_group):
        if group is None:
            continue
        for machine in kms:
            fit = _fit(machine, group)
            plan.fits.append(fit)
            if not fit.ok:
                plan.problems.append(
                    Finding(
                        "host-os",
                        fit.reason,
                        f"run the {group.name} host key on a host OS that can carry it "
                        f"({', '.join(group.hosts) or group.host_text}),"
                        " or upgrade this host",
                        machine.name,
                    )
                )
            elif fit.missing_updates:
                plan.warnings.append(
                    Finding(
                        "host-updates",
                        f"{machine.name} ({fit.os}) needs {', '.join(fit.missing_updates)} or a later "
                        f"cumulative update{_builds(fit)} before it can take the {group.name} host key "
                        "(without it: 0xC004F050 'product key is invalid')",
                        "install the latest cumulative update on the KMS host before installing the host key",
                        machine.name,
                    )
                )
    _thresholds(plan, len(client_os), len(server_os), len(office_keys))
    _per_host(plan, [m.name for m in kms], [m.name for m in clients], windows_keys)
    _host_count(plan, len(clients), len(kms))
    _budget(plan, len(kms))
    plan.activation = recommend_methods(clients, windows_keys)
    return plan


#: Active Directory-based activation needs Windows 8 / Windows Server 2012 (build 9200) or later [ITPRO]
ADBA_MIN_BUILD = 9200
_PRE_ADBA = ("windows 7", "windows vista", "server 2008")


def _adba_capable(machine: Machine, entry: ClientKey | None) -> bool:
    if machine.build is not None:
        return machine.build >= ADBA_MIN_BUILD
    if entry is None:
        return False
    return not any(old in str(entry.product).lower() for old in _PRE_ADBA)


def recommend_methods(clients: Iterable[Machine], windows_keys: Mapping[str, ClientKey]) -> dict[str, Any]:
    """ADBA, KMS or MAK per client, as Microsoft's volume activation planning advises [ITPRO]:

    * MAK for the machines the admin names (``kmsadmin_activation: mak``): they never reach the corporate
      network, so neither a domain controller nor a KMS host;
    * ADBA for domain-joined Windows 8 / Server 2012 or later machines with a GVLK: no host, no count
      threshold, activation renewed from the forest;
    * KMS for the rest (not domain-joined, older, or not known to be domain-joined).
    """
    methods: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for machine in clients:
        entry = windows_keys.get(machine.name)
        if machine.activation == "mak":
            methods[machine.name], reasons[machine.name] = (
                "MAK",
                "named as a MAK exception (kmsadmin_activation: mak)",
            )
        elif entry is None:
            continue
        elif machine.domain_joined and _adba_capable(machine, entry):
            methods[machine.name], reasons[machine.name] = (
                "ADBA",
                "domain-joined, Windows 8 / Server 2012 or later",
            )
        elif machine.domain_joined:
            methods[machine.name], reasons[machine.name] = (
                "KMS",
                "older than Windows 8 / Server 2012: no ADBA",
            )
        else:
            why = "not domain-joined" if machine.domain_joined is False else "not known to be domain-joined"
            methods[machine.name], reasons[machine.name] = "KMS", why
    counts = {name: sum(1 for m in methods.values() if m == name) for name in ("ADBA", "KMS", "MAK")}
    if counts["ADBA"] and not counts["KMS"]:
        summary = (
            "ADBA: every volume client is domain-joined and new enough; create the forest's activation object "
            "(kmsadmin adba activate DC --host-key-file FILE) and no KMS host is needed"
        )
    elif counts["ADBA"]:
        summary = (
            f"ADBA for the {counts['ADBA']} domain-joined clients, KMS for the other {counts['KMS']} "
            "(a KMS host and its count threshold are still needed for them)"
        )
    elif counts["KMS"]:
        summary = "KMS: no client is known to be a domain-joined Windows 8 / Server 2012 or later machine"
    else:
        summary = "no volume client to plan for"
    if counts["MAK"]:
        summary += f"; MAK for the {counts['MAK']} named exception(s) (convert-client --mak-file FILE)"
    return {"recommended": summary, "counts": counts, "per_host": methods, "reasons": reasons}


def _groups(plan: CapacityPlan, windows: list[ClientKey], office: list[ClientKey]) -> None:
    if windows:
        plan.windows_group = catalog.minimal_group_for(windows)
        if plan.windows_group is None:
            plan.problems.append(
                Finding(
                    "host-key-group",
                    "no single current Windows Server host key group activates every client edition: "
                    + ", ".join(sorted({k.display for k in windows})),
                    "split the fleet over KMS hosts with different host key groups, "
                    "or upgrade the oldest clients",
                )
            )
    if office:
        plan.office_group = catalog.minimal_group_for(office)
        if plan.office_group is None:
            plan.problems.append(
                Finding(
                    "host-key-group",
                    "no single Office KMS host key activates every Office version: "
                    + ", ".join(sorted({k.display for k in office})),
                    "install one Office Volume License Pack and host key per Office version on the KMS host",
                )
            )


def _thresholds(plan: CapacityPlan, client_os: int, servers: int, office: int) -> None:
    rules = catalog.ACTIVATION_RULES
    windows = client_os + servers
    rows: list[tuple[str, int, int, int]] = []
    if client_os:
        rows.append(("windows client OS", client_os, windows, rules.client_threshold))
    if servers:
        rows.append(("windows server", servers, windows, rules.server_threshold))
    if office:
        rows.append(("office", office, office, rules.office_threshold))
    for kind, machines, count, needed in rows:
        reachable = count >= needed
        plan.thresholds.append(
            {
                "kind": kind,
                "machines": machines,
                "count_reachable": count,
                "needed": needed,
                "reachable": reachable,
            }
        )
        if not reachable:
            plan.problems.append(
                Finding(
                    "threshold",
                    f"{kind}: only {count} distinct machine(s) can be counted but activation needs a "
                    "count of "
                    f"{needed}; clients stay unactivated with 0xC004F038 (count insufficient)",
                    "add machines that request activation from the same KMS host (servers count toward the "
                    "client threshold too), or use MAK or Active Directory-based activation",
                )
            )


def _per_host(
    plan: CapacityPlan, servers: list[str], clients: list[str], keys: Mapping[str, ClientKey]
) -> None:
    """Counts per KMS host from the rollout's own assignment; a host left below its threshold is a problem."""
    if not servers or not clients:
        return
    threshold = assignment_threshold(keys.get(c) for c in clients)
    assignment = assign_clients(clients, servers, threshold)
    for server in servers:
        mine = [c for c in clients if assignment.get(c) == server]
        needed = assignment_threshold(keys.get(c) for c in mine) if mine else threshold
        row = {
            "host": server,
            "clients": len(mine),
            "windows_client_os": sum(1 for c in mine if c in keys and keys[c].kind == "client"),
            "windows_server": sum(1 for c in mine if c in keys and keys[c].kind == "server"),
            "needed": needed,
            "reachable": len(mine) >= needed if mine else None,
        }
        plan.per_host.append(row)
        if not mine:
            plan.warnings.append(
                Finding(
                    "host-unused",
                    f"{server} gets no clients: {len(clients)} client(s) can bring only "
                    f"{sum(1 for r in plan.per_host if r['clients'])} KMS host(s) to the count of {threshold} "
                    "they need, so the rollout pins none to it (it still serves clients that find it "
                    "through DNS)",
                    "nothing to do; with more clients the rollout spreads them over this host too",
                    server,
                )
            )
        elif len(mine) < needed and all(t["reachable"] for t in plan.thresholds):
            plan.problems.append(
                Finding(
                    "host-threshold",
                    f"{server}: {len(mine)} client(s) pinned to it, but it needs a count of {needed}; they "
                    "stay unactivated with 0xC004F038 (count insufficient)",
                    "add machines that request activation from this KMS host, or use MAK or Active "
                    "Directory-based activation",
                    server,
                )
            )


def _host_count(plan: CapacityPlan, clients: int, hosts: int) -> None:
    rules = catalog.ACTIVATION_RULES
    plan.recommended_hosts = rules.recommended_hosts(clients)
    if hosts < plan.recommended_hosts:
        plan.warnings.append(
            Finding(
                "host-count",
                f"{clients} clients and {hosts} KMS host(s): with more than {rules.two_hosts_above_clients} "
                "clients Microsoft recommends at least two KMS hosts (failover; clients pick hosts "
                "from DNS at random)",
                "add a second KMS host with the same host key group and DNS publishing on",
            )
        )
    if hosts == 0:
        plan.problems.append(
            Finding(
                "no-kms-host",
                "the inventory has no KMS host (group kms_hosts)",
                "add the KMS host(s) to the kms_hosts group",
            )
        )


def _budget(plan: CapacityPlan, hosts: int) -> None:
    rules = catalog.ACTIVATION_RULES
    per_key_activations = 1 + rules.reactivations_per_host
    plan.budget = {
        "hosts_per_host_key": rules.hosts_per_csvlk,
        "activations_per_host_key": per_key_activations,
        "kms_hosts": hosts,
        "hosts_left": max(0, rules.hosts_per_csvlk - hosts),
    }
    if hosts > rules.hosts_per_csvlk:
        plan.warnings.append(
            Finding(
                "host-key-budget",
                f"{hosts} KMS hosts but one host key activates at most {rules.hosts_per_csvlk} hosts "
                f"({per_key_activations} activations); the rest fail with 0xC004C008",
                "ask the Microsoft Activation Center for more activations, or run fewer KMS hosts",
            )
        )
