"""The lab's script engine: runs kmsadmin step scripts against the simulated hosts.

It does not interpret PowerShell. For each script it reads the ``# kmsadmin-step: <step>/<version>``
header (:func:`kmsadmin.render.parse_header`), checks that the script parses under the PowerShell
grammar (:func:`kmsadmin.lab.pwsh.syntax_errors`; a parse failure gives a ParseException-style error
record, as PowerShell would), reads the parameters block (:func:`kmsadmin.lab.pwsh.read_params`),
applies the step to the host model and answers with exactly the one JSON object the real script
prints (templates/README.md). The hand-off ``.cmd`` variants and scripts without a header are not
run: they get an error record.

Steps are idempotent like the real scripts: a step whose target state already holds answers
``"changed": false`` and needs no elevation; a changing step needs an elevated administrator
(else 0x80070005). A changing step is persisted before the answer is returned.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kmsadmin import catalog, validate
from kmsadmin.errors import InvalidInput
from kmsadmin.lab import kms
from kmsadmin.lab.api import ScriptOutput, Via
from kmsadmin.lab.fleet import Fleet, profile_order
from kmsadmin.lab.model import (
    KMS_VALIDITY_DAYS,
    LICENSED,
    PROFILE_ORDER,
    SPPSVC_NOSCOPE_RULE,
    SPPSVC_RULE,
    ActivationObject,
    FirewallRule,
    HostState,
    Product,
    Service,
    parse_iso,
)
from kmsadmin.render import parse_header

log = logging.getLogger(__name__)

ONLY_STEP_SCRIPTS = "kmsadmin lab: this host only runs kmsadmin step scripts"


@dataclass(slots=True)
class StepResult:
    """What a step did: ``changed``, ``before``, ``after``, ``data`` (None where the script prints null)."""

    changed: bool = False
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    data: dict[str, Any] | None = None


@dataclass(slots=True)
class Context:
    """One step run: the fleet, the host (locked), the lab time and what must be persisted."""

    fleet: Fleet
    host: HostState
    now: datetime
    #: other hosts changed by this step (KMS hosts that counted a request)
    touched: set[str] = field(default_factory=set)
    meta_dirty: bool = False
    #: a step that failed part-way may still have changed something worth persisting
    dirty: bool = False

    def require_elevation(self, stage: str) -> None:
        """Changing calls need an elevated administrator: 0x80070005 "requires elevated privileges" (§g)."""
        if not self.host.security.elevated:
            raise kms.LabFailure(kms.E_ACCESS_DENIED, stage, "Access denied")


Handler = Callable[[Context, dict[str, str]], StepResult]


class StepFailed(Exception):
    """A step failed after changing something (``changed`` stays true in the answer)."""

    def __init__(self, failure: kms.LabFailure, changed: bool) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.changed = changed


def refuse(stage: str, message: str) -> kms.LabFailure:
    """The scripts' own refusals (stages Input and Check): no HRESULT, the script's message."""
    return kms.LabFailure(None, stage, message)


class LabEngine:
    """:class:`kmsadmin.lab.api.ScriptEngine` over a :class:`Fleet`."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def run_script(self, host: str, script: str, *, via: Via) -> ScriptOutput:
        """Run one script on lab host ``host`` and return what it would print."""
        state = self.fleet.find(host)
        if state is None:
            return _error_record(f"kmsadmin lab: no lab host named {host!r}")
        prepared = _prepare(script)
        if isinstance(prepared, ScriptOutput):
            return prepared
        if prepared is None:
            return self._plain(state, script)
        step, handler, params = prepared
        started = time.monotonic()
        answer = self._run(state, step, handler, params)
        log.debug("lab %s %s via %s %.1f ms", state.name, step, via, (time.monotonic() - started) * 1000)
        # the scripts catch every error and print it as JSON, so powershell.exe exits 0 either way
        return ScriptOutput(output=(json.dumps(answer, separators=(",", ":")),))

    def _plain(self, state: HostState, text: str) -> ScriptOutput:
        command = text.strip()
        if command.lower() in ("hostname", "$env:computername", "hostname.exe"):
            return ScriptOutput(output=(state.name.upper(),))
        return _error_record(ONLY_STEP_SCRIPTS)

    def _run(self, state: HostState, step: str, handler: Handler, params: dict[str, str]) -> dict[str, Any]:
        fleet = self.fleet
        with fleet.lock(state.name):
            # a KMS host's own steps and the clients' requests both change its counters: KMS lock too
            kms_lock = fleet.kms_lock if state.role == "kms_host" else None
            if kms_lock is not None:
                kms_lock.acquire()
            try:
                ctx = Context(fleet, state, fleet.now())
                state.refresh(ctx.now)
                try:
                    adba_renewal(ctx)
                    result = handler(ctx, params)
                    answer: dict[str, Any] = {
                        "kmsadmin": 1,
                        "step": step,
                        "changed": result.changed,
                        "before": result.before,
                        "after": result.after,
                        "data": result.data,
                    }
                    changed = result.changed
                    if fleet.dns is not None:
                        # lab DNS publishing: a KMS host registers its SRV record (kmsadmin.lab.dnspublish)
                        fleet.dns.after_step(state, step, changed, ctx.now)
                except (kms.LabFailure, StepFailed) as exc:
                    failure, changed = (
                        (exc.failure, exc.changed) if isinstance(exc, StepFailed) else (exc, False)
                    )
                    answer = {
                        "kmsadmin": 1,
                        "step": step,
                        "changed": changed,
                        "error": {
                            "hresult": failure.hresult_text,
                            "message": failure.message,
                            "stage": failure.stage,
                        },
                    }
                snapshots = [fleet.snapshot(state.name)] if changed or ctx.dirty else []
                if ctx.touched:
                    with fleet.kms_lock:
                        snapshots += [fleet.snapshot(name) for name in sorted(ctx.touched - {state.name})]
                if ctx.meta_dirty:
                    snapshots.append(fleet.snapshot_meta())
            finally:
                if kms_lock is not None:
                    kms_lock.release()
        # files are written outside the locks (see Fleet.snapshot)
        for snapshot in snapshots:
            fleet.write(snapshot)
        return answer


# ---------------------------------------------------------------------- script intake


def _prepare(script: str) -> tuple[str, Handler, dict[str, str]] | ScriptOutput | None:
    """Header, grammar and parameters of a step script; None for a script without a header."""
    text = script.lstrip("\ufeff")
    first = text.split("\n", 1)[0].strip()
    if first.startswith("::") or first.lower().startswith("@echo"):
        return _error_record(ONLY_STEP_SCRIPTS + " (the .cmd hand-off scripts are for running by hand)")
    header = parse_header(text)
    if header is None:
        return None
    step, version = header
    from kmsadmin.lab import pwsh

    problems = pwsh.syntax_errors(text)
    if problems:
        return _parse_error(text, problems)
    try:
        params = pwsh.read_params(text)
    except ValueError as exc:
        return _error_record(f"kmsadmin lab: {step}/{version}: unreadable parameters block: {exc}")
    handler = STEPS.get(step)
    if handler is None:
        return _error_record(f"kmsadmin lab: no simulation for step {step}/{version}")
    return step, handler, params


# ---------------------------------------------------------------------- error records


def _error_record(message: str) -> ScriptOutput:
    return ScriptOutput(errors=(message,), rc=1)


def _parse_error(script: str, problems: list[str]) -> ScriptOutput:
    """A PowerShell ParseException-style record for the first problem."""
    first = problems[0]
    line_no = 1
    if first.startswith("line "):
        head = first[5:].split(":", 1)[0]
        line_no = int(head) if head.isdigit() else 1
    lines = script.splitlines()
    code = lines[line_no - 1] if 0 < line_no <= len(lines) else ""
    detail = first.split(": ", 1)[1] if ": " in first else first
    message = (
        f"At line:{line_no} char:1\n+ {code}\n+ ~\n"
        f"The script could not be parsed: {detail}.\n"
        "    + CategoryInfo          : ParserError: (:) [], ParseException\n"
        "    + FullyQualifiedErrorId : ParseError"
    )
    return _error_record(message)


# ---------------------------------------------------------------------- input checks (as _common.ps1.j2)

WINDOWS_APP = "55c92734-d682-4d71-983e-d6ec3f16059f"
_GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
_KEY_SHAPE_RE = re.compile(r"^[0-9A-Z]{5}(-[0-9A-Z]{5}){4}$", re.IGNORECASE)
_NUMBER_RE = re.compile(r"^[0-9]{1,10}$")


def _bool(value: str, name: str) -> bool:
    """ConvertTo-KmsBool: True/1 or False/0 (PowerShell -eq ignores case)."""
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise refuse("Input", f"{name} must be True or False")


def _optional_bool(params: dict[str, str], name: str) -> bool | None:
    value = params.get(name, "")
    return _bool(value, name) if value else None


def _optional_number(params: dict[str, str], name: str, low: int, high: int) -> int | None:
    """ConvertTo-KmsNumber for a parameter that may be left empty."""
    value = params.get(name, "")
    if not value:
        return None
    if not _NUMBER_RE.match(value):
        raise refuse("Input", f"{name} must be a number")
    number = int(value)
    if not low <= number <= high:
        raise refuse("Input", f"{name} must be between {low} and {high}")
    return number


def _guid(value: str, name: str) -> str:
    if value and not _GUID_RE.match(value):
        raise refuse("Input", f"{name} is not a GUID")
    return value.lower()


def _app(params: dict[str, str]) -> str:
    return _guid(params.get("application_id", ""), "application_id") or WINDOWS_APP


def _keyed(host: HostState, app: str, activation_id: str) -> list[Product]:
    """Get-KmsProduct -ApplicationId -ActivationId: keyed products of the app (and that ID)."""
    found = host.keyed(app)
    if activation_id:
        found = [p for p in found if p.activation_id.lower() == activation_id]
    return found


def _candidates(host: HostState, app: str, activation_id: str) -> list[Product]:
    """Keyed products; add-ons only when an Activation ID names them (slmgr /ato, /dti)."""
    return [p for p in _keyed(host, app, activation_id) if activation_id or not p.license_is_addon]


def _hresult(code: int) -> str:
    return f"0x{code:08X}"


# ---------------------------------------------------------------------- facts


def product_facts(product: Product, now: datetime, service: Service) -> dict[str, Any]:
    """One entry of the facts ``products`` list."""
    return {
        "id": product.activation_id,
        "application_id": product.application_id,
        "name": product.name,
        "description": product.description,
        "license_status": product.license_status,
        "license_status_reason": _hresult(product.license_status_reason),
        "partial_key": product.partial_key,
        "channel": product.channel,
        "grace_minutes": product.grace_minutes(now),
        "is_kms_host": product.is_kms_host,
        "license_is_addon": product.license_is_addon,
        "kms_machine": product.kms_machine,
        "kms_port": product.kms_port,
        "lookup_domain": product.lookup_domain,
        "discovered_kms": product.discovered_kms,
        "discovered_port": product.discovered_port,
        "vl_activation_type": product.vl_activation_type,
        "vl_activation_type_enabled": product.vl_activation_type_enabled
        or service.vl_activation_type_enabled,
        "ad_object_name": product.ad_object_name,
        "ad_object_dn": product.ad_object_dn,
    }


def facts_data(host: HostState, now: datetime) -> dict[str, Any]:
    """The facts object exactly as templates/ps1/facts.ps1.j2 builds it."""
    service = host.service
    is_kms = host.is_kms_host
    requests = service.requests
    features: dict[str, bool | None] = {"VolumeActivation": None, "RSAT-VA-Tools": None}
    if host.features is not None:
        # Get-WindowsFeature exists on Windows Server only; client OSes report null
        features = {name: bool(host.features.get(name, False)) for name in features}
    rule = host.rule(SPPSVC_RULE)
    return {
        "computer_name": host.name.upper(),
        "os": {
            "caption": host.os.caption,
            "version": host.os.version,
            "build": host.os.build,
            "ubr": host.os.ubr or None,
            "sku": host.os.sku,
            "edition_id": host.os.edition_id,
            "product_type": host.os.product_type,
            "installation_type": host.os.installation_type,
            "ui_language": host.ui_language,
        },
        "products": [product_facts(p, now, service) for p in host.keyed()],
        "service": {
            "version": f"{host.os.version}.1",
            "kms_machine": service.kms_machine,
            "kms_port": service.kms_port,
            "lookup_domain": service.lookup_domain,
            "host_caching": service.host_caching,
            "discovered_kms": service.discovered_kms,
            "discovered_port": service.discovered_port,
            "client_machine_id": service.cmid,
            "is_kms_host": is_kms,
            # KeyManagementServiceCurrentCount: -1 when not a KMS host or no requests yet [SPPWMI]
            "current_count": kms.current_count(host, catalog.WINDOWS_APP_ID, now) if is_kms else -1,
            # RequiredClientCount on a KMS host: the client-OS threshold, 25 [PLAN24]
            "required_count": 25 if is_kms else 0,
            "listening_port": service.listening_port,
            "dns_publishing": service.dns_publishing,
            "low_priority": service.low_priority,
            "activation_interval": service.activation_interval,
            "renewal_interval": service.renewal_interval,
            "requests": {
                "total": requests.total,
                "failed": requests.failed,
                "unlicensed": requests.unlicensed,
                "licensed": requests.licensed,
                "oob_grace": requests.oob_grace,
                "oot_grace": requests.oot_grace,
                "non_genuine_grace": requests.non_genuine_grace,
                "notification": requests.notification,
            },
        },
        "features": features,
        # the script reads the rule Microsoft's setup enables and its Domain-profile twin, with scopes
        "firewall": [_rule_facts(r) for r in (rule, host.rule(SPPSVC_NOSCOPE_RULE)) if r is not None],
        "hotfixes": sorted(set(host.hotfixes)),
        "security": {
            # IsInRole(Administrators) is false for a filtered token (KB 951016)
            "is_admin": host.security.elevated,
            "is_builtin_admin": host.security.is_builtin_admin,
            "token_filter_policy": host.security.token_filter_policy,
            "domain_joined": host.security.domain_joined,
            "dns_suffix": host.security.dns_suffix,
        },
        # the lab's images predate Microsoft's OSLicense module (Get-Command Invoke-ADLicense finds nothing)
        "oslicense_module": False,
        "time_utc": host.clock(now).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def step_facts(ctx: Context, params: dict[str, str]) -> StepResult:
    """``facts``: read-only inventory."""
    return StepResult(data=facts_data(ctx.host, ctx.now))


# ---------------------------------------------------------------------- role and firewall


def step_install_feature(ctx: Context, params: dict[str, str]) -> StepResult:
    """``install-feature``: VolumeActivation (+ RSAT-VA-Tools when asked, not on Server Core [CORE])."""
    host = ctx.host
    want_tools = _bool(params["include_tools"], "include_tools") if params.get("include_tools") else False
    if host.features is None:
        raise refuse(
            "Check",
            "Get-WindowsFeature is not available (the Volume Activation Services role needs Windows Server)",
        )
    before = {
        "VolumeActivation": host.features.get("VolumeActivation", False),
        "RSAT-VA-Tools": host.features.get("RSAT-VA-Tools", False),
    }
    missing = [] if before["VolumeActivation"] else ["VolumeActivation"]
    if want_tools and not before["RSAT-VA-Tools"] and not host.os.is_core:
        missing.append("RSAT-VA-Tools")
    if missing:
        ctx.require_elevation("Install-WindowsFeature")
        for name in missing:
            host.features[name] = True
    after = {name: host.features.get(name, False) for name in before}
    return StepResult(bool(missing), before, after, {"restart_needed": False})


def _windows_address(address: str) -> str:
    """A scope entry as the lab reports it: an IPv4 subnet by network mask (``10.0.0.0/255.0.0.0``),
    one of the two subnet forms Set-NetFirewallRule -RemoteAddress takes ([PSDOCS] NetSecurity)."""
    try:
        network = ipaddress.ip_network(address, strict=False)
    except ValueError:
        return address
    if network.version == 4 and network.prefixlen < 32:
        return f"{network.network_address}/{network.netmask}"
    return str(network.network_address) if network.num_addresses == 1 else str(network)


def _rule_facts(rule: FirewallRule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "enabled": rule.enabled,
        "profiles": list(rule.profiles),
        "remote_addresses": [_windows_address(a) for a in rule.remote_addresses],
    }


def step_firewall(ctx: Context, params: dict[str, str]) -> StepResult:
    """``firewall``: enable the rule for exactly the given profiles; add client subnets to its scope."""
    name = params.get("rule_name") or SPPSVC_RULE
    wanted: set[str] = set()
    for item in (params.get("profiles") or "Domain,Private").split(","):
        profile = item.strip().lower()
        if profile == "any":
            wanted.update(PROFILE_ORDER)
        elif profile in ("domain", "private", "public"):
            wanted.add(profile.capitalize())
        else:
            raise refuse("Input", "profiles must be a comma-separated list of Domain, Private, Public or Any")
    rule = ctx.host.rule(name)
    if rule is None:
        raise kms.LabFailure(
            None,
            "Get-NetFirewallRule",
            f"No MSFT_NetFirewallRule objects found with property 'Name' equal to '{name}'.  "
            "Verify the value of the property and retry.",
        )
    try:
        asked = [
            validate.remote_address(a) for a in (params.get("remote_addresses") or "").split(",") if a.strip()
        ]
    except InvalidInput as exc:
        raise refuse("Input", f"remote_addresses: {exc}") from None
    before = _rule_facts(rule)
    del before["name"]
    scope = [validate.remote_address(a) if "/" in a or a[:1].isdigit() else a for a in rule.remote_addresses]
    missing = [] if "Any" in scope else [a for a in dict.fromkeys(asked) if a not in scope]
    ordered = profile_order(sorted(wanted))
    changed = not rule.enabled or sorted(rule.profiles) != sorted(ordered) or bool(missing)
    if changed:
        ctx.require_elevation("Set-NetFirewallRule")
        rule.enabled = True
        rule.profiles = ordered
        rule.remote_addresses = [*scope, *missing]
    after = _rule_facts(rule)
    del after["name"]
    return StepResult(changed, before, after, None)


# ---------------------------------------------------------------------- keys


def _install(ctx: Context, params: dict[str, str], *, host_key: bool) -> StepResult:
    host = ctx.host
    key = params.get("product_key", "")
    if not _KEY_SHAPE_RE.match(key):
        raise refuse("Input", "product_key is not in the form XXXXX-XXXXX-XXXXX-XXXXX-XXXXX")
    app = _app(params)
    tail = key[-5:].upper()
    product = next((p for p in host.keyed(app) if p.partial_key == tail), None)
    changed = False
    if product is None:
        # slmgr.vbs /ipk: SoftwareLicensingService.InstallProductKey, then RefreshLicenseStatus [SLMGRVBS]
        ctx.require_elevation("InstallProductKey")
        kms.install_product_key(host, key, ctx.fleet.host_keys, ctx.now, ctx.fleet.maks)
        changed = True
        product = next((p for p in host.keyed(app) if p.partial_key == tail), None)
        if product is None:
            raise StepFailed(
                refuse("Check", f"the key was installed but no product of application {app} reports it"), True
            )
    data: dict[str, Any] = {
        "activation_id": product.activation_id,
        "partial_key": product.partial_key,
        "name": product.name,
    }
    if host_key:
        data["description"] = product.description
    return StepResult(changed, None, None, data)


def step_install_host_key(ctx: Context, params: dict[str, str]) -> StepResult:
    """``install-host-key``: InstallProductKey(CSVLK) + RefreshLicenseStatus."""
    return _install(ctx, params, host_key=True)


def step_install_gvlk(ctx: Context, params: dict[str, str]) -> StepResult:
    """``install-gvlk``: InstallProductKey(GVLK) + RefreshLicenseStatus."""
    return _install(ctx, params, host_key=False)


# ---------------------------------------------------------------------- activation


def step_activate(ctx: Context, params: dict[str, str]) -> StepResult:
    """``activate``: Activate() on every keyed, non-add-on product of the app (or the one asked for)."""
    forced = _bool(params["force"], "force") if params.get("force") else False
    app = _app(params)
    activation_id = _guid(params.get("activation_id", ""), "activation_id")
    targets = _candidates(ctx.host, app, activation_id)
    if not targets:
        raise refuse("Check", "no product with an installed key matches (install a key first)")
    changed = False
    for product in targets:
        # LicenseStatus 1 = Licensed [SPPWMI]: nothing to do unless forced
        if product.license_status == LICENSED and not forced:
            continue
        try:
            if product.is_kms_client:
                # "/ato ... no elevation needed for KMS activation" [SLMGRDOC]
                _volume_activate(ctx, product)
            else:
                ctx.require_elevation("Activate")
                with ctx.fleet.kms_lock:
                    ctx.meta_dirty = True
                    kms.activate_online(ctx.host, product, ctx.fleet.ledger, ctx.fleet.maks)
        except kms.LabFailure as failure:
            ctx.dirty = True
            raise StepFailed(failure, changed) from None
        changed = True
    products = [
        {
            "activation_id": p.activation_id,
            "name": p.name,
            "license_status": p.license_status,
            "grace_minutes": p.grace_minutes(ctx.now),
        }
        for p in _candidates(ctx.host, app, activation_id)
    ]
    return StepResult(changed, None, None, {"products": products})


def _forest_objects(ctx: Context) -> list[ActivationObject] | None:
    """The forest's activation objects, when this host is a member of the lab forest."""
    if not (ctx.fleet.meta.forest and ctx.host.security.domain_joined):
        return None
    return ctx.fleet.meta.activation_objects


def _try_adba(ctx: Context, product: Product) -> bool:
    """A domain member asks AD for an activation object first [ITPRO activate-windows-clients-vamt]."""
    objects = _forest_objects(ctx)
    if objects is None:
        return False
    with ctx.fleet.kms_lock:
        found = kms.matching_object(objects, ctx.host, product)
    if found is None:
        return False
    kms.adba_activate(product, found, ctx.now)
    return True


def adba_renewal(ctx: Context) -> None:
    """The licensing service's periodic check of an ADBA-activated product (lab rule, kmsadmin.lab.kms).

    While its activation object exists the 180 days are renewed (at the renewal interval); once the
    object is gone, another matching object or, where the activation type allows it, KMS takes over;
    if neither answers, the product stays licensed until its validity runs out.
    """
    objects = _forest_objects(ctx) or []
    for product in ctx.host.keyed(WINDOWS_APP):
        if product.license_status != LICENSED or product.vl_activation_type != ACT_TYPE_AD:
            continue
        with ctx.fleet.kms_lock:
            current = next(
                (ao for ao in objects if ao.dn.lower() == (product.ad_object_dn or "").lower()), None
            )
            found = current or kms.matching_object(objects, ctx.host, product)
        renew_at = (
            ctx.now + timedelta(days=KMS_VALIDITY_DAYS) - timedelta(minutes=ctx.host.service.renewal_interval)
        )
        if found is not None:
            if (
                current is None
                or product.grace_expires is None
                or parse_iso(product.grace_expires) < renew_at
            ):
                kms.adba_activate(product, found, ctx.now)
                ctx.dirty = True
            continue
        if configured_type(ctx.host, product) not in (ACT_TYPE_ALL, ACT_TYPE_KMS):
            continue
        ctx.dirty = True
        try:
            _kms_request(ctx, product)
        except kms.LabFailure as failure:
            # not re-activated: still licensed by its last AD activation, the failure as LicenseStatusReason
            product.license_status = LICENSED
            product.license_status_reason = failure.hresult or 0


def _volume_activate(ctx: Context, product: Product) -> None:
    """A GVLK product activates from an activation object (domain members, activation type All or AD),
    else through KMS (type All or KMS)."""
    kind = configured_type(ctx.host, product)
    if kind in (ACT_TYPE_ALL, ACT_TYPE_AD) and _try_adba(ctx, product):
        return
    if kind in (ACT_TYPE_ALL, ACT_TYPE_KMS):
        _kms_request(ctx, product)
        return
    if kind == ACT_TYPE_AD:
        failure = kms.LabFailure(
            kms.ERROR_DS_NO_SUCH_OBJECT,
            "Activate",
            "activation type AD (slmgr /act-type 1) and no activation object in the forest activates it",
        )
    else:
        failure = refuse("Check", "token-based activation (slmgr /act-type 3) is not modelled by the lab")
    product.license_status_reason = failure.hresult or 0
    raise failure


def _kms_request(ctx: Context, product: Product) -> None:
    fleet = ctx.fleet
    with fleet.kms_lock:
        try:
            kms.kms_activate(ctx.host, product, fleet.network(), ctx.now)
        finally:
            # any KMS host may have counted the request (contacts, request counters)
            ctx.touched.update(n for n in fleet.names("kms_host") if n != ctx.host.name)
            if ctx.host.role == "kms_host":
                ctx.dirty = True


def _one_candidate(ctx: Context, params: dict[str, str]) -> Product:
    app = _app(params)
    activation_id = _guid(params.get("activation_id", ""), "activation_id")
    candidates = _candidates(ctx.host, app, activation_id)
    if not candidates:
        raise refuse("Check", "no product with an installed key matches")
    if len(candidates) > 1:
        raise refuse("Check", "several products match: give an activation_id")
    return candidates[0]


def step_phone_iid(ctx: Context, params: dict[str, str]) -> StepResult:
    """``phone-iid``: read OfflineInstallationId (slmgr /dti)."""
    product = _one_candidate(ctx, params)
    data = {"activation_id": product.activation_id, "installation_id": kms.installation_id(ctx.host, product)}
    return StepResult(False, None, None, data)


def step_phone_deposit(ctx: Context, params: dict[str, str]) -> StepResult:
    """``phone-deposit``: DepositOfflineConfirmationId(OfflineInstallationId, CID) (slmgr /atp)."""
    confirmation = re.sub(r"[\s-]", "", params.get("confirmation_id", ""))
    if not re.match(r"^[0-9]{6,}$", confirmation):
        raise refuse("Input", "confirmation_id must be the digits read out by the activation centre")
    product = _one_candidate(ctx, params)
    before = {"license_status": product.license_status}
    changed = False
    if product.license_status != LICENSED:
        ctx.require_elevation("DepositOfflineConfirmationId")
        if product.is_kms_client:
            # a KMS client setup key activates through a KMS host only: SL_E_NOT_SUPPORTED [SLERR]
            raise kms.LabFailure(
                kms.SL_E_NOT_SUPPORTED, "DepositOfflineConfirmationId", "a GVLK activates through KMS"
            )
        with ctx.fleet.kms_lock:
            ctx.meta_dirty = True
            kms.deposit_confirmation(ctx.host, product, confirmation, ctx.fleet.ledger, ctx.fleet.maks)
        changed = True
    return StepResult(changed, before, {"license_status": product.license_status}, None)


# ---------------------------------------------------------------------- KMS host settings

#: (setting, CIM method used as the stage name)
_HOST_SETTINGS = (
    ("listening_port", "SetKeyManagementServiceListeningPort"),
    ("dns_publishing", "DisableKeyManagementServiceDnsPublishing"),
    ("low_priority", "EnableKeyManagementServiceLowPriority"),
    ("activation_interval", "SetVLActivationInterval"),
    ("renewal_interval", "SetVLRenewalInterval"),
)


def step_kms_host_settings(ctx: Context, params: dict[str, str]) -> StepResult:
    """``kms-host-settings``: only the settings that differ; restarts sppsvc if anything changed."""
    service = ctx.host.service
    wanted: dict[str, int | bool | None] = {
        "listening_port": _optional_number(params, "listening_port", 1, 65535),
        "dns_publishing": _optional_bool(params, "dns_publishing"),
        "low_priority": _optional_bool(params, "low_priority"),
        # ">= 15 and <= 43200" minutes [SPPWMI]
        "activation_interval": _optional_number(params, "activation_interval", 15, 43200),
        "renewal_interval": _optional_number(params, "renewal_interval", 15, 43200),
    }
    before = {name: getattr(service, name) for name, _ in _HOST_SETTINGS}
    pending = [
        (name, stage)
        for name, stage in _HOST_SETTINGS
        if wanted[name] is not None and before[name] != wanted[name]
    ]
    if pending:
        if not ctx.host.is_kms_host:
            # the methods fail on a machine that is not a KMS host [SPPWMI]; the script refuses first
            raise refuse("Check", "this machine is not a KMS host (install and activate a host key first)")
        ctx.require_elevation(pending[0][1])
        for name, _ in pending:
            setattr(service, name, wanted[name])
        # "You must restart the Software Licensing Service for any changes to take effect" [OTOOLS]
        service.restarts += 1
    after = {name: getattr(service, name) for name, _ in _HOST_SETTINGS}
    return StepResult(bool(pending), before, after, None)


# ---------------------------------------------------------------------- KMS client settings


def _target(ctx: Context, params: dict[str, str]) -> Service | Product:
    """Get-KmsTarget: the service, or the product (keyed or not) with that Activation ID."""
    activation_id = _guid(params.get("activation_id", ""), "activation_id")
    if not activation_id:
        return ctx.host.service
    product = ctx.host.product(activation_id)
    if product is None:
        raise refuse("Check", f"no product with activation id {activation_id}")
    return product


def _machine(target: Service | Product) -> dict[str, Any]:
    return {"kms_machine": target.kms_machine or None, "kms_port": target.kms_port}


def step_set_kms_host(ctx: Context, params: dict[str, str]) -> StepResult:
    """``set-kms-host``: SetKeyManagementServiceMachine (+ SetKeyManagementServicePort), slmgr /skms."""
    want_port = _optional_number(params, "kms_port", 1, 65535)
    name = params.get("kms_host", "")
    if not name and want_port is None:
        raise refuse("Input", "give kms_host, kms_port or both")
    target = _target(ctx, params)
    before = _machine(target)
    changed = False
    if name and (before["kms_machine"] or "").lower() != name.lower():
        ctx.require_elevation("SetKeyManagementServiceMachine")
        target.kms_machine = name
        changed = True
    if want_port is not None and before["kms_port"] != want_port:
        ctx.require_elevation("SetKeyManagementServicePort")
        target.kms_port = want_port
        changed = True
    if name and want_port is None and before["kms_port"] != 0:
        # slmgr /skms name (no port) clears the port back to the default ([SLMGRVBS] SetKmsMachineName)
        ctx.require_elevation("ClearKeyManagementServicePort")
        target.kms_port = 0
        changed = True
    return StepResult(changed, before, _machine(target), None)


def step_clear_kms_host(ctx: Context, params: dict[str, str]) -> StepResult:
    """``clear-kms-host``: ClearKeyManagementServiceMachine + ClearKeyManagementServicePort (slmgr /ckms)."""
    target = _target(ctx, params)
    before = _machine(target)
    changed = False
    if before["kms_machine"] is not None:
        ctx.require_elevation("ClearKeyManagementServiceMachine")
        target.kms_machine = None
        changed = True
    if before["kms_port"] != 0:
        ctx.require_elevation("ClearKeyManagementServicePort")
        target.kms_port = 0
        changed = True
    return StepResult(changed, before, _machine(target), None)


def step_set_lookup_domain(ctx: Context, params: dict[str, str]) -> StepResult:
    """``set-lookup-domain``: SetKeyManagementServiceLookupDomain (slmgr /skms-domain)."""
    domain = params.get("lookup_domain", "")
    if not domain:
        raise refuse("Input", "lookup_domain is required")
    target = _target(ctx, params)
    before = {"lookup_domain": target.lookup_domain or None}
    changed = (before["lookup_domain"] or "").lower() != domain.lower()
    if changed:
        ctx.require_elevation("SetKeyManagementServiceLookupDomain")
        target.lookup_domain = domain
    return StepResult(changed, before, {"lookup_domain": target.lookup_domain or None}, None)


def step_clear_lookup_domain(ctx: Context, params: dict[str, str]) -> StepResult:
    """``clear-lookup-domain``: ClearKeyManagementServiceLookupDomain (slmgr /ckms-domain)."""
    target = _target(ctx, params)
    before = {"lookup_domain": target.lookup_domain or None}
    changed = before["lookup_domain"] is not None
    if changed:
        ctx.require_elevation("ClearKeyManagementServiceLookupDomain")
        target.lookup_domain = None
    return StepResult(changed, before, {"lookup_domain": target.lookup_domain or None}, None)


def step_host_caching(ctx: Context, params: dict[str, str]) -> StepResult:
    """``host-caching``: DisableKeyManagementServiceHostCaching(-not enabled) (slmgr /skhc, /ckhc)."""
    wanted = _bool(params.get("enabled", ""), "enabled")
    service = ctx.host.service
    before = {"host_caching": service.host_caching}
    changed = service.host_caching != wanted
    if changed:
        ctx.require_elevation("DisableKeyManagementServiceHostCaching")
        service.host_caching = wanted
    return StepResult(changed, before, {"host_caching": service.host_caching}, None)


#: VLActivationTypeEnabled values: 0 all, 1 Active Directory, 2 KMS, 3 Token [WMITABLE]
ACT_TYPE_ALL, ACT_TYPE_AD, ACT_TYPE_KMS, ACT_TYPE_TOKEN = range(4)


def configured_type(host: HostState, product: Product) -> int:
    """The activation type a product may use: its own VLActivationTypeEnabled, else the machine's."""
    return product.vl_activation_type_enabled or host.service.vl_activation_type_enabled


def step_act_type(ctx: Context, params: dict[str, str]) -> StepResult:
    """``act-type``: SetVLActivationTypeEnabled / ClearVLActivationTypeEnabled (slmgr /act-type)."""
    wanted = _optional_number(params, "activation_type", 0, 3)
    if wanted is None:
        raise refuse("Input", "activation_type must be a number")
    target = _target(ctx, params)
    windows = [target] if isinstance(target, Product) else _candidates(ctx.host, WINDOWS_APP, "")
    current = configured_type(ctx.host, windows[0]) if windows else 0
    before = {"activation_type": current}
    changed = current != wanted
    if changed:
        ctx.require_elevation("ClearVLActivationTypeEnabled" if wanted == 0 else "SetVLActivationTypeEnabled")
        target.vl_activation_type_enabled = wanted
    after = {"activation_type": configured_type(ctx.host, windows[0]) if windows else wanted}
    return StepResult(changed, before, after, None)


# ---------------------------------------------------------------------- Active Directory-based activation


def _forest(ctx: Context, stage: str) -> list[ActivationObject]:
    objects = _forest_objects(ctx)
    if objects is None:
        # slmgr.vbs reads the machine's domain (ADSystemInfo.DomainDNSName) before any LDAP call
        raise refuse("Check", f"{ctx.host.name} is not a member of an Active Directory domain ({stage})")
    return objects


def _object_data(obj: ActivationObject) -> dict[str, Any]:
    """What slmgr /ao-list prints for an object: name, Activation ID, partial key, extended PID, DN."""
    return {
        "name": obj.name,
        "dn": obj.dn,
        "sku_id": obj.sku_id,
        "partial_key": obj.partial_key,
        "csvlk_pid": obj.csvlk_pid,
    }


def _objects_data(ctx: Context) -> dict[str, Any]:
    with ctx.fleet.kms_lock:
        return {"objects": [_object_data(o) for o in ctx.fleet.meta.activation_objects]}


def _host_key_param(params: dict[str, str]) -> str:
    key = params.get("product_key", "")
    if not _KEY_SHAPE_RE.match(key):
        raise refuse("Input", "product_key is not in the form XXXXX-XXXXX-XXXXX-XXXXX-XXXXX")
    return key.upper()


def step_adba_activate(ctx: Context, params: dict[str, str]) -> StepResult:
    """``adba-activate``: DoActiveDirectoryOnlineActivation(ProductKey, ActivationObjectName), or with a
    Confirmation ID DepositActiveDirectoryOfflineActivationConfirmation (slmgr /ad-activation-online,
    /ad-activation-apply-cid)."""
    key = _host_key_param(params)
    confirmation = re.sub(r"[\s-]", "", params.get("confirmation_id", ""))
    if confirmation and not confirmation.isdigit():
        raise refuse("Input", "confirmation_id must be the digits read out by the activation centre")
    objects = _forest(ctx, "activation objects")
    domain = ctx.fleet.meta.domain
    group = ctx.fleet.host_keys.group_of(key)
    name = params.get("activation_object_name", "") or (kms.group_target(group) if group else "")
    before = _objects_data(ctx)
    with ctx.fleet.kms_lock:
        if group is not None and any(
            o.key_digest == kms.key_digest(key) and o.name.lower() == name.lower() for o in objects
        ):
            return StepResult(False, before, before, {"activation_object": name, **before})
        ctx.require_elevation("DoActiveDirectoryOnlineActivation")
        _, created = kms.create_activation_object(
            objects,
            domain,
            key,
            name or "activation object",
            ctx.fleet.host_keys,
            ctx.fleet.ledger,
            ctx.now,
            confirmation=confirmation or None,
        )
        ctx.meta_dirty = True
    after = _objects_data(ctx)
    return StepResult(created, before, after, {"activation_object": name, **after})


def step_adba_iid(ctx: Context, params: dict[str, str]) -> StepResult:
    """``adba-iid``: GenerateActiveDirectoryOfflineActivationId(ProductKey) (slmgr /ad-activation-get-iid)."""
    key = _host_key_param(params)
    _forest(ctx, "forest Installation ID")
    if ctx.fleet.host_keys.group_of(key) is None:
        raise kms.LabFailure(
            kms.SL_E_INVALID_PRODUCT_KEY, "GenerateActiveDirectoryOfflineActivationId", "not a KMS host key"
        )
    return StepResult(
        False, None, None, {"installation_id": kms.forest_installation_id(ctx.fleet.meta.domain, key)}
    )


def step_adba_list(ctx: Context, params: dict[str, str]) -> StepResult:
    """``adba-list``: the activation objects in the forest (slmgr /ao-list)."""
    _forest(ctx, "activation objects")
    return StepResult(False, None, None, _objects_data(ctx))


def step_adba_delete(ctx: Context, params: dict[str, str]) -> StepResult:
    """``adba-delete``: delete one activation object by DN, RDN or name (slmgr /del-ao)."""
    spec = params.get("activation_object", "").strip()
    if not spec:
        raise refuse("Input", "activation_object is required")
    objects = _forest(ctx, "activation objects")
    before = _objects_data(ctx)
    with ctx.fleet.kms_lock:
        found = kms.find_activation_object(objects, ctx.fleet.meta.domain, spec)
        if found is None:
            # HR_ERROR_DS_NO_SUCH_OBJECT, as slmgr.vbs gets it for a missing object [SLMGRVBS]
            raise kms.LabFailure(kms.ERROR_DS_NO_SUCH_OBJECT, "Delete", f"no activation object {spec!r}")
        ctx.require_elevation("Delete")
        objects.remove(found)
        ctx.meta_dirty = True
    after = _objects_data(ctx)
    return StepResult(True, before, after, {"deleted": found.dn, **after})


def step_kms_events(ctx: Context, params: dict[str, str]) -> StepResult:
    """``kms-events``: the newest events 12290/12293 of the "Key Management Service" log in the window."""
    days = _optional_number(params, "days", 1, 366)
    limit = _optional_number(params, "max_events", 1, 100000)
    if days is None or limit is None:
        raise refuse("Input", "days and max_events are required")
    events = ctx.host.service.events
    log_missing = not ctx.host.is_kms_host and not events
    horizon = ctx.host.clock(ctx.now) - timedelta(days=days)
    # Get-WinEvent returns the newest first and stops at -MaxEvents
    found = [e for e in reversed(events) if e.id in (12290, 12293) and parse_iso(e.time) >= horizon][:limit]
    data = {
        "days": days,
        "max_events": limit,
        "log_missing": log_missing,
        "truncated": len(found) >= limit,
        "events": [{"id": e.id, "time": e.time, "values": list(e.values)} for e in found],
    }
    return StepResult(data=data)


#: WSAECONNREFUSED as a SocketException's HResult, and WSAHOST_NOT_FOUND "No such host is known"
E_CONNECTION_REFUSED = 0x8000274D
E_HOST_NOT_FOUND = 0x80004005


def step_kms_reach(ctx: Context, params: dict[str, str]) -> StepResult:
    """``kms-reach``: the client's SRV lookup and a TCP connection to the KMS host it would use."""
    port = _optional_number(params, "kms_port", 1, 65535) or 0
    timeout = _optional_number(params, "timeout_ms", 100, 60000)
    if timeout is None:
        raise refuse("Input", "timeout_ms is required")
    service = ctx.host.service
    domain = params.get("lookup_domain") or service.lookup_domain or ctx.host.security.dns_suffix
    srv: dict[str, Any] = {"name": f"_vlmcs._tcp.{domain}", "answered": False, "error": None, "records": []}
    try:
        found = ctx.fleet.network().srv(domain)
    except kms.LabFailure as failure:
        found, srv["error"] = [], failure.hresult_text
    if not found and srv["error"] is None:
        # DNS_ERROR_RCODE_NAME_ERROR "DNS name does not exist" [ERR]
        srv["error"] = "0x8007232B"
    srv["records"] = [
        {"target": h.fqdn, "port": h.service.listening_port, "priority": 0, "weight": 0} for h in found[:20]
    ]
    srv["answered"] = bool(found)
    name, source = params.get("kms_host", ""), "given"
    if not name:
        name, source = service.kms_machine or "", "pinned"
        port = port or service.kms_port
    if not name and found:
        name, source = found[0].fqdn, "srv"
        port = port or found[0].service.listening_port
    port = port or 1688
    target: dict[str, Any] = {
        "name": name or None,
        "port": port,
        "source": source,
        "resolves": False,
        "addresses": [],
        "connects": False,
        "error": None,
    }
    if name:
        other = ctx.fleet.find(name)
        if other is None:
            target["error"] = f"0x{E_HOST_NOT_FOUND:08X}"
        else:
            target["resolves"], target["addresses"] = True, ["127.0.0.1"]
            target["connects"] = kms.answers(other, port, ctx.host)
            if not target["connects"]:
                target["error"] = f"0x{E_CONNECTION_REFUSED:08X}"
    data = {"domain": domain, "timeout_ms": timeout, "srv": srv, "target": target}
    return StepResult(data=data)


STEPS: dict[str, Handler] = {
    "adba-activate": step_adba_activate,
    "adba-iid": step_adba_iid,
    "adba-list": step_adba_list,
    "adba-delete": step_adba_delete,
    "act-type": step_act_type,
    "facts": step_facts,
    "install-feature": step_install_feature,
    "firewall": step_firewall,
    "install-host-key": step_install_host_key,
    "activate": step_activate,
    "phone-iid": step_phone_iid,
    "phone-deposit": step_phone_deposit,
    "kms-host-settings": step_kms_host_settings,
    "install-gvlk": step_install_gvlk,
    "set-kms-host": step_set_kms_host,
    "clear-kms-host": step_clear_kms_host,
    "set-lookup-domain": step_set_lookup_domain,
    "clear-lookup-domain": step_clear_lookup_domain,
    "host-caching": step_host_caching,
    "kms-events": step_kms_events,
    "kms-reach": step_kms_reach,
}
