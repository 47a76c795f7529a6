"""Plan a KMS host set-up: preflight, role, firewall, host key, activation, settings.

Order and commands follow Microsoft's "Create a KMS host" [HOST25]: install the VolumeActivation role
(``Install-WindowsFeature -Name VolumeActivation -IncludeManagementTools``), open SPPSVC-In-TCP
(``Set-NetFirewallRule -Name SPPSVC-In-TCP -Profile Domain,Private -Enabled True``), install and
activate the CSVLK, then configure the KMS host (slmgr /sprt, /sdns|/cdns, /spri|/cpri, /sai, /sri).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, replace

from kmsadmin import catalog, validate
from kmsadmin.errors import InvalidInput
from kmsadmin.facts import HostFacts
from kmsadmin.operations import Plan, PlannedStep, Problem
from kmsadmin.values import ScriptRef, Secret

FIREWALL_RULE = "SPPSVC-In-TCP"
#: The KMS host settings setup-host applies and verifies (slmgr /sprt, /sdns|/cdns, /spri|/cpri, /sai,
#: /sri); each is a field of SetupHostArgs and of the facts' SoftwareLicensingService.
KMS_HOST_SETTINGS = (
    "listening_port",
    "dns_publishing",
    "low_priority",
    "activation_interval",
    "renewal_interval",
)
#: [HOST25]: "Set-NetFirewallRule -Name SPPSVC-In-TCP -Profile Domain,Private -Enabled True"
DEFAULT_PROFILES = ("Domain", "Private")


@dataclass(frozen=True, slots=True)
class SetupHostArgs:
    """What the admin asked for."""

    host_key: Secret | None = None
    csvlk: str | None = None
    activation: str = "online"  # online | phone
    confirmation_id: str | None = None
    firewall_profiles: tuple[str, ...] = DEFAULT_PROFILES
    include_tools: bool = True
    listening_port: int | None = None
    dns_publishing: bool | None = None
    low_priority: bool | None = None
    activation_interval: int | None = None
    renewal_interval: int | None = None
    assume_updates: bool = False
    #: client subnets the firewall rule must accept (``--allow-from``), as network/prefix
    allow_from: tuple[str, ...] = ()


def _preflight(facts: HostFacts, args: SetupHostArgs) -> tuple[list[Problem], list[str], list[str]]:
    problems: list[Problem] = []
    notes: list[str] = []
    required: list[str] = []
    os = facts.os
    if not facts.security.is_admin:
        problems.append(
            Problem(
                "admin-rights",
                "the account is not an elevated administrator on the host",
                "use an account in the local Administrators group; for local accounts other than the built-in "
                "Administrator, UAC remote restrictions filter the token (KB 951016, LocalAccountTokenFilterPolicy)",
                hresult="0x80070005",
            )
        )
    if catalog.is_evaluation(os.edition_id):
        problems.append(
            Problem(
                "edition",
                f"{os.caption or os.edition_id} is an evaluation edition",
                "convert the evaluation edition to a licensed edition (DISM /online /Set-Edition) before "
                "making it a KMS host",
            )
        )
    if (os.edition_id or "").lower() in {"serverturbine", "serverturbinecor"} or os.sku == 407:
        problems.append(
            Problem(
                "edition",
                "Windows Server Datacenter: Azure Edition cannot be a KMS host",
                "use another Windows Server edition: 'Windows Server Datacenter Azure Edition is activated by "
                "Azure and can't be configured as a KMS host' (Microsoft KMS activation planning)",
            )
        )
    if os.is_core:
        notes.append("Server Core: the Volume Activation Tools (RSAT-VA-Tools, vmw.exe) are not available")
    if args.csvlk:
        group = catalog.csvlk_group(args.csvlk)
        host_os = catalog.os_product(os.build, os.product_type) if os.build else (os.caption or "")
        verdict = catalog.host_can_carry(group, host_os, edition_id=os.edition_id)
        if not verdict.ok:
            problems.append(
                Problem(
                    "host-key-group",
                    f"{host_os} cannot carry a {group.name} host key: {verdict.reason}",
                    "use a host OS listed for this key group, or a host key of an older group "
                    "(`kmsadmin compat` lists both)",
                    hresult="0xC004F050",
                )
            )
        for update in verdict.required_updates:
            required.append(update.kb)
            if facts.has_required_update(update) or args.assume_updates:
                continue
            running = f"{os.build}.{os.ubr}" if os.ubr is not None else "unknown"
            problems.append(
                Problem(
                    "required-update",
                    f"{host_os} needs {update.label} ({update.title}) or a later cumulative update to carry "
                    f"a {group.name} host key; it runs build {running} and does not list {update.kb}",
                    f"install {update.kb} or a later cumulative update; if one is installed but not "
                    "reported, re-run with --assume-updates",
                    hresult="0xC004F050",
                )
            )
    else:
        notes.append(
            "host key group not given (--csvlk): cannot check before installing whether this OS can carry it"
        )
    return problems, notes, required


def scope_of(addresses: Iterable[str]) -> list[str]:
    """A rule's remote-address scope in one spelling (``10.0.0.0/255.0.0.0`` -> ``10.0.0.0/8``);
    entries that are neither an address nor Any/LocalSubnet (other keywords, ranges) stay as read."""
    out = []
    for address in addresses:
        try:
            out.append(validate.remote_address(address))
        except InvalidInput:
            out.append(address)
    return out


def uncovered(wanted: Iterable[str], addresses: Iterable[str]) -> list[str]:
    """The subnets of ``wanted`` that the scope does not already accept (``Any``, or a subnet holding it).

    ``LocalSubnet`` counts for nothing here: whether a subnet is local depends on the host's interfaces.
    """
    scope = scope_of(addresses)
    if "Any" in scope:
        return []
    networks = []
    for entry in scope:
        try:
            networks.append(ipaddress.ip_network(entry))
        except ValueError:
            continue
    missing = []
    for item in wanted:
        network = ipaddress.ip_network(item)
        if not any(network.version == n.version and network.subnet_of(n) for n in networks):  # type: ignore[arg-type]
            missing.append(item)
    return missing


def plan_setup_host(host: str, facts: HostFacts | None, args: SetupHostArgs) -> Plan:
    """Plan the set-up; ``facts=None`` lists every step (``--dry-run``)."""
    steps: list[PlannedStep] = []
    notes: list[str] = []
    problems: list[Problem] = []
    details: dict[str, object] = {}
    if facts is not None:
        problems, notes, required = _preflight(facts, args)
        details["required_updates"] = required
        if problems:
            return Plan(host, "setup-host", (), tuple(notes), tuple(problems), details=details)

    # An Office KMS host key goes onto the Windows KMS host too, but its product (and so its
    # activation) belongs to the Office application ([OHOST]: one host key per Office version).
    office_key = args.csvlk is not None and catalog.csvlk_group(args.csvlk).family == "office"
    app_id = catalog.OFFICE_APP_ID if office_key else catalog.WINDOWS_APP_ID
    tools = args.include_tools and not (facts is not None and facts.os.is_core)
    features = facts.features if facts else {}
    if facts is None or not features.get("VolumeActivation") or (tools and not features.get("RSAT-VA-Tools")):
        steps.append(
            PlannedStep(
                ScriptRef("install-feature", {"include_tools": tools}), "VolumeActivation role not installed"
            )
        )

    profiles = ",".join(args.firewall_profiles)
    rule = facts.firewall_rule(FIREWALL_RULE) if facts else None
    outside = uncovered(args.allow_from, rule.remote_addresses) if rule else list(args.allow_from)
    reasons = []
    if rule is None or not rule.enabled or sorted(rule.profiles) != sorted(args.firewall_profiles):
        reasons.append(f"{FIREWALL_RULE} not enabled for {profiles}")
    if outside:
        reasons.append(f"its remote-address scope does not include {', '.join(outside)}")
    if reasons:
        steps.append(
            PlannedStep(
                ScriptRef(
                    "firewall",
                    {"rule_name": FIREWALL_RULE, "profiles": profiles, "remote_addresses": ",".join(outside)},
                ),
                "; ".join(reasons),
            )
        )
    if facts is not None:
        details["firewall"] = [r.model_dump() for r in facts.firewall]
        if rule is not None and not args.allow_from and "Any" not in scope_of(rule.remote_addresses):
            notes.append(
                f"{FIREWALL_RULE} accepts only {', '.join(rule.remote_addresses) or 'no address'}: KMS clients in "
                "other subnets cannot reach this host; allow them with --allow-from SUBNET[,SUBNET...]"
            )

    host_products = facts.kms_host_products() if facts else []
    key_tail = args.host_key.tail if args.host_key else None
    installed = next((p for p in host_products if key_tail and p.partial_key == key_tail), None)
    if installed is None:
        if args.host_key is None and facts is None:
            # --dry-run without the key: show where it would go, never a made-up key
            args = replace(args, host_key=Secret("", placeholder="KMS host key from --host-key-file"))
        if args.host_key is None:
            problems.append(
                Problem(
                    "host-key",
                    "no KMS host key given and none installed",
                    "pass --host-key-file FILE or set KMSADMIN_HOST_KEY (the key is never taken from the command line)",
                )
            )
            return Plan(host, "setup-host", (), tuple(notes), tuple(problems), details=details)
        steps.append(
            PlannedStep(
                ScriptRef(
                    "install-host-key",
                    {"application_id": app_id},
                    {"product_key": args.host_key},
                ),
                f"host key ending {key_tail} not installed" if key_tail else "install the KMS host key",
            )
        )
    activation_id = installed.id if installed else ""
    if installed is None or installed.license_status != 1:
        if args.activation == "phone":
            if args.confirmation_id:
                steps.append(
                    PlannedStep(
                        ScriptRef(
                            "phone-deposit",
                            {
                                "application_id": app_id,
                                "activation_id": activation_id,
                                "confirmation_id": args.confirmation_id,
                            },
                        ),
                        "deposit the Confirmation ID from the Microsoft activation line",
                    )
                )
            else:
                steps.append(
                    PlannedStep(
                        ScriptRef(
                            "phone-iid",
                            {"application_id": app_id, "activation_id": activation_id},
                        ),
                        "show the Installation ID to read to the Microsoft activation line (slui 4)",
                    )
                )
                return Plan(
                    host,
                    "setup-host",
                    tuple(steps),
                    tuple(notes),
                    (),
                    stop_after="phone-iid",
                    details=details,
                )
        else:
            steps.append(
                PlannedStep(
                    ScriptRef(
                        "activate",
                        {
                            "application_id": app_id,
                            "activation_id": activation_id,
                            "force": False,
                        },
                    ),
                    "host key not activated",
                )
            )

    wanted = {name: getattr(args, name) for name in KMS_HOST_SETTINGS}
    current = facts.service.model_dump() if facts else {}
    differing = {k: v for k, v in wanted.items() if v is not None and (facts is None or current.get(k) != v)}
    if differing:
        params = {k: ("" if differing.get(k) is None else differing[k]) for k in wanted}
        steps.append(
            PlannedStep(
                ScriptRef("kms-host-settings", params),
                "KMS host settings differ: " + ", ".join(f"{k}={v}" for k, v in differing.items()),
            )
        )
    return Plan(host, "setup-host", tuple(steps), tuple(notes), tuple(problems), details=details)
