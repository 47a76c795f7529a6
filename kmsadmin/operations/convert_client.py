"""Plan converting a machine into a KMS client: GVLK, KMS host / discovery settings, activation.

Mirrors what slmgr does ([SLMGRVBS]): ``/ipk`` = InstallProductKey + RefreshLicenseStatus;
``/skms`` = SetKeyManagementServiceMachine (+ port); ``/skms-domain`` = SetKeyManagementServiceLookupDomain;
``/ckms`` restores DNS auto-discovery; ``/ato`` = Activate on keyed non-add-on products.
Office products use the Office ApplicationID and their own GVLKs ([OGVLK], [OTOOLS]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kmsadmin import catalog, validate
from kmsadmin.facts import HostFacts, ProductFacts
from kmsadmin.operations import Plan, PlannedStep, Problem
from kmsadmin.values import ScriptRef, Secret

TargetMode = Literal["host", "domain", "auto", "keep"]
#: VLActivationTypeEnabled values as slmgr /dli names them [SLMGRVBS]; 0 = every type allowed
ACT_TYPE_NAMES = {0: "All", 1: "AD", 2: "KMS", 3: "Token"}
Method = Literal["kms", "mak"]


@dataclass(frozen=True, slots=True)
class ConvertClientArgs:
    """What the admin asked for."""

    key: str = "auto"  # "auto" or a validated GVLK
    force: bool = False
    edition: str | None = None  # catalog name, for --dry-run without a connection
    target: TargetMode = "keep"
    kms_host: str | None = None
    kms_port: int = 1688
    lookup_domain: str | None = None
    office: bool = False
    #: the activation method, always chosen by the admin, never inferred from a key
    method: Method = "kms"
    #: the Multiple Activation Key (method "mak"); shown as its last five characters only
    mak: Secret | None = None
    activation: str = "online"  # online | phone (MAK)
    confirmation_id: str | None = None
    #: slmgr /act-type: 0 all, 1 AD, 2 KMS, 3 Token; None = leave as it is
    act_type: int | None = None


def _windows_key(
    facts: HostFacts | None, args: ConvertClientArgs
) -> tuple[catalog.ClientKey | None, str | None, Problem | None]:
    """Pick the GVLK: an explicit key, an explicit edition, or the edition the host reports."""
    if args.key != "auto":
        check = catalog.check_key(args.key)
        match = check.matches[0] if check.is_gvlk and check.matches else None
        # KeyCheck.key is masked for keys outside Microsoft's tables: install the normalised key itself
        return match, validate.product_key(args.key), None
    if args.edition:
        named = catalog.find_client_key(args.edition)
        return named, named.gvlk, None
    if facts is None:
        return (
            None,
            None,
            Problem(
                "edition",
                "--dry-run has no host to read the edition from",
                "pass --edition NAME (see `kmsadmin keys list`) or --key GVLK",
            ),
        )
    os = facts.os
    entry = catalog.identify_windows(
        caption=os.caption, edition_id=os.edition_id, build=os.build, sku=os.sku, product_type=os.product_type
    )
    if entry is None:
        why = catalog.unidentified_reason(
            caption=os.caption, edition_id=os.edition_id, build=os.build, sku=os.sku
        )
        return (
            None,
            None,
            Problem(
                "edition",
                f"no KMS client key for {os.caption or '?'} (EditionID {os.edition_id}, build {os.build}, SKU {os.sku}): {why}",
                "Home and evaluation editions cannot be KMS clients; upgrade the edition, or pass --key "
                "with the GVLK Microsoft lists for this exact edition",
                hresult="0xC004F069",
            ),
        )
    return entry, entry.gvlk, None


def _target_steps(
    current_host: str | None,
    current_port: int | None,
    current_domain: str | None,
    args: ConvertClientArgs,
    activation_id: str,
) -> list[PlannedStep]:
    steps: list[PlannedStep] = []
    port = current_port or 1688
    if args.target == "host" and args.kms_host:
        if (current_host or "").lower() != args.kms_host.lower() or port != args.kms_port:
            steps.append(
                PlannedStep(
                    ScriptRef(
                        "set-kms-host",
                        {
                            "kms_host": args.kms_host,
                            "kms_port": args.kms_port,
                            "activation_id": activation_id,
                        },
                    ),
                    f"KMS host is {current_host or 'not set'}, want {args.kms_host}:{args.kms_port}",
                )
            )
    elif args.target == "domain" and args.lookup_domain:
        if current_host:
            steps.append(
                PlannedStep(
                    ScriptRef("clear-kms-host", {"activation_id": activation_id}),
                    "a pinned KMS host overrides the SRV lookup domain (slmgr /skms-domain)",
                )
            )
        if (current_domain or "").lower() != args.lookup_domain.lower():
            steps.append(
                PlannedStep(
                    ScriptRef(
                        "set-lookup-domain",
                        {"lookup_domain": args.lookup_domain, "activation_id": activation_id},
                    ),
                    f"SRV lookup domain is {current_domain or 'not set'}, want {args.lookup_domain}",
                )
            )
    elif args.target == "auto":
        if current_host:
            steps.append(
                PlannedStep(
                    ScriptRef("clear-kms-host", {"activation_id": activation_id}),
                    "return to DNS auto-discovery (slmgr /ckms)",
                )
            )
        if current_domain:
            steps.append(
                PlannedStep(
                    ScriptRef("clear-lookup-domain", {"activation_id": activation_id}),
                    "clear the SRV lookup domain (slmgr /ckms-domain)",
                )
            )
    return steps


def _windows_target_steps(
    facts: HostFacts | None, product: ProductFacts | None, args: ConvertClientArgs
) -> list[PlannedStep]:
    """The KMS target steps for Windows, at the level that wins.

    A Windows product with its own KMS host or lookup domain (``slmgr /skms host ActivationID``,
    ``/skms-domain FQDN ActivationID``) overrides the machine-wide setting (:meth:`HostFacts.kms_target`):
    changing only the machine-wide one would leave activation going to the old host.
    """
    if facts is None:
        return _target_steps(None, None, None, args, "")
    service = facts.service
    own_host = product is not None and bool(product.kms_machine)
    own_domain = product is not None and bool(product.lookup_domain)
    if product is None or not (own_host or own_domain):
        return _target_steps(service.kms_machine, service.kms_port, service.lookup_domain, args, "")
    if args.target == "host" and own_host:
        return _target_steps(product.kms_machine, product.kms_port, None, args, product.id)
    if args.target == "auto":
        return [
            *_target_steps(product.kms_machine, product.kms_port, product.lookup_domain, args, product.id),
            *_target_steps(service.kms_machine, service.kms_port, service.lookup_domain, args, ""),
        ]
    if args.target == "domain":
        # both pins go (a pinned host overrides the lookup domain); the domain is set where it wins
        wanted = args.lookup_domain
        return [
            *_target_steps(
                product.kms_machine,
                product.kms_port,
                product.lookup_domain if own_domain else wanted,
                args,
                product.id,
            ),
            *_target_steps(
                service.kms_machine,
                service.kms_port,
                wanted if own_domain else service.lookup_domain,
                args,
                "",
            ),
        ]
    return _target_steps(service.kms_machine, service.kms_port, service.lookup_domain, args, "")


def _plan_windows(host: str, facts: HostFacts | None, args: ConvertClientArgs) -> Plan:
    entry, gvlk, problem = _windows_key(facts, args)
    if problem is not None or gvlk is None:
        return Plan(host, "convert-client", problems=(problem,) if problem else ())
    details: dict[str, object] = {
        "product": entry.product if entry else None,
        "edition": entry.edition if entry else None,
        "gvlk": gvlk if entry is not None and entry.gvlk == gvlk else None,
    }
    steps: list[PlannedStep] = []
    product = facts.windows_product() if facts else None
    key_changes = product is None or product.partial_key != gvlk[-5:]
    if key_changes:
        # A key forced past the GVLK check (e.g. a MAK) is a secret: only its last 5 characters show.
        is_public = entry is not None and entry.gvlk == gvlk
        key_params = ({"product_key": gvlk}, {}) if is_public else ({}, {"product_key": Secret(gvlk)})
        steps.append(
            PlannedStep(
                ScriptRef(
                    "install-gvlk", {**key_params[0], "application_id": catalog.WINDOWS_APP_ID}, key_params[1]
                ),
                f"installed key ends {product.partial_key if product else 'nothing'}, want the GVLK ending {gvlk[-5:]}",
            )
        )
    target_steps = _windows_target_steps(facts, product, args)
    steps.extend(target_steps)
    current_type = product.vl_activation_type_enabled if product else None
    if args.act_type is not None and current_type != args.act_type:
        # slmgr /act-type: which volume activation the client may use (AD, KMS, Token or all) [SLMGRVBS]
        target_steps.append(
            PlannedStep(
                ScriptRef("act-type", {"activation_type": args.act_type, "activation_id": ""}),
                f"activation type is {ACT_TYPE_NAMES.get(current_type or 0, '?') if product else 'unknown'}, "
                f"want {ACT_TYPE_NAMES[args.act_type]}",
            )
        )
        steps.append(target_steps[-1])
    if key_changes or target_steps or product is None or product.license_status != 1:
        steps.append(
            PlannedStep(
                ScriptRef(
                    "activate",
                    {
                        "application_id": catalog.WINDOWS_APP_ID,
                        "activation_id": "",
                        "force": bool(target_steps),
                    },
                ),
                "not activated"
                if product is None or product.license_status != 1
                else "re-activate against the new KMS target",
            )
        )
    return Plan(host, "convert-client", tuple(steps), details=details)


def _plan_office_product(
    product: ProductFacts, args: ConvertClientArgs
) -> tuple[list[PlannedStep], list[str]]:
    entry = catalog.identify_office(product.name, product.description)
    if entry is None:
        return [], [f"Office product {product.name!r} is not a volume (KMS client) product: skipped"]
    steps: list[PlannedStep] = []
    key_changes = product.partial_key != entry.gvlk[-5:]
    if key_changes:
        steps.append(
            PlannedStep(
                ScriptRef(
                    "install-gvlk", {"product_key": entry.gvlk, "application_id": catalog.OFFICE_APP_ID}
                ),
                f"{entry.product}: install its GVLK ending {entry.gvlk[-5:]}",
            )
        )
    target = _target_steps(product.kms_machine, product.kms_port, product.lookup_domain, args, product.id)
    steps.extend(target)
    if key_changes or target or product.license_status != 1:
        steps.append(
            PlannedStep(
                ScriptRef(
                    "activate",
                    {
                        "application_id": catalog.OFFICE_APP_ID,
                        "activation_id": product.id,
                        "force": bool(target),
                    },
                ),
                f"{entry.product}: activate against KMS",
            )
        )
    return steps, []


def _plan_mak(host: str, facts: HostFacts | None, args: ConvertClientArgs) -> Plan:
    """Install a MAK and activate it with Microsoft online, or by phone (Installation ID, then the
    Confirmation ID): slmgr /ipk, then /ato, or /dti and /atp ([SLMGRDOC]; VAMT "MAK" [ITPRO])."""
    mak = args.mak or Secret("", placeholder="MAK from --mak-file, KMSADMIN_MAK or the prompt")
    app = catalog.WINDOWS_APP_ID
    product = facts.windows_product() if facts else None
    details: dict[str, object] = {"method": "MAK", "partial_key": mak.tail or None}
    steps: list[PlannedStep] = []
    key_changes = product is None or not mak.value or product.partial_key != mak.tail
    if key_changes:
        steps.append(
            PlannedStep(
                ScriptRef("install-gvlk", {"application_id": app}, {"product_key": mak}),
                f"installed key ends {product.partial_key if product else 'nothing'}, want the MAK ending {mak.tail or '?'}",
            )
        )
    if not key_changes and product is not None and product.license_status == 1:
        return Plan(host, "convert-client", tuple(steps), details=details)
    if args.activation != "phone":
        steps.append(
            PlannedStep(
                ScriptRef("activate", {"application_id": app, "activation_id": "", "force": False}),
                "activate the MAK with Microsoft over the internet",
            )
        )
        return Plan(host, "convert-client", tuple(steps), details=details)
    if args.confirmation_id and not key_changes:
        steps.append(
            PlannedStep(
                ScriptRef(
                    "phone-deposit",
                    {"application_id": app, "activation_id": "", "confirmation_id": args.confirmation_id},
                ),
                "deposit the Confirmation ID from the Microsoft activation line",
            )
        )
        return Plan(host, "convert-client", tuple(steps), details=details)
    notes: tuple[str, ...] = ()
    if args.confirmation_id:
        notes = ("the Confirmation ID belongs to the Installation ID of the installed MAK: it is not used",)
    steps.append(
        PlannedStep(
            ScriptRef("phone-iid", {"application_id": app, "activation_id": ""}),
            "show the Installation ID to read to the Microsoft activation line (slui 4)",
        )
    )
    return Plan(host, "convert-client", tuple(steps), notes, stop_after="phone-iid", details=details)


def plan_convert_client(host: str, facts: HostFacts | None, args: ConvertClientArgs) -> Plan:
    """Plan the conversion; ``facts=None`` lists the steps for ``--dry-run``."""
    if args.method == "mak":
        return _plan_mak(host, facts, args)
    plan = _plan_windows(host, facts, args)
    if not args.office or plan.blocked:
        return plan
    steps = list(plan.steps)
    notes = list(plan.notes)
    if facts is None:
        notes.append("Office products are read from the host; --dry-run shows the Windows steps only")
    else:
        offices = facts.office_products()
        if not offices:
            notes.append("no Office volume product with a key found on the host")
        for product in offices:
            more, why = _plan_office_product(product, args)
            steps.extend(more)
            notes.extend(why)
    return Plan(host, "convert-client", tuple(steps), tuple(notes), plan.problems, details=plan.details)
