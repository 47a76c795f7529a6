"""Run one operation on one host: facts → plan → steps → verify, over one session.

Every remote step goes through :func:`kmsadmin.render.render` and the session; every result is parsed
into a typed outcome; a failure stops the host's run and becomes a typed :class:`HostError` with host,
step, HRESULT, meaning and remediation. Logs name host, step and duration only.

One refusal is not a failure: a convert-client run that got as far as its ``activate`` step and was
refused there with 0xC004F038 (SL_E_VL_NOT_ENOUGH_COUNT) has the client fully configured; the KMS
host has only not counted enough clients yet, and the client retries by itself. Such a host's status
is ``waiting`` (its error is kept, with the catalog's meaning and remediation), not ``failed``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from kmsadmin import catalog
from kmsadmin.errors import HostError, KmsAdminError, PreflightFailed
from kmsadmin.facts import (
    FACTS,
    HostFacts,
    kms_events_ref,
    kms_reach_ref,
    parse_facts,
    parse_kms_events,
    parse_kms_reach,
    parse_outcome,
    raise_for_error,
)
from kmsadmin.operations import Plan, health
from kmsadmin.operations.adba import AdbaArgs, plan_adba
from kmsadmin.operations.convert_client import ConvertClientArgs, plan_convert_client
from kmsadmin.operations.setup_host import (
    FIREWALL_RULE,
    KMS_HOST_SETTINGS,
    SetupHostArgs,
    plan_setup_host,
    uncovered,
)
from kmsadmin.render import render
from kmsadmin.values import RenderedScript, ScriptRef, ScriptResult

log = logging.getLogger("kmsadmin.fleet")

Status = Literal["ok", "changed", "pending", "waiting", "failed"]


class Session(Protocol):
    """What the runner needs from a transport session."""

    def run(self, script: RenderedScript, *, deadline: float | None = None) -> ScriptResult:
        """Run one rendered script."""
        ...

    def run_many(
        self, scripts: Sequence[RenderedScript], *, deadline: float | None = None
    ) -> list[ScriptResult]:
        """Run scripts in order in as few round trips as possible, stopping after a failed step."""
        ...

    def close(self) -> None:
        """Close the session."""
        ...


SessionFactory = Callable[[str], Session]


@dataclass(slots=True)
class StepRecord:
    """One step as it ran."""

    step: str
    changed: bool
    duration: float
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "step": self.step,
            "changed": self.changed,
            "duration": round(self.duration, 3),
            "reason": self.reason,
            "data": self.data,
            "error": self.error,
        }


@dataclass(slots=True)
class HostReport:
    """What happened on one host."""

    host: str
    operation: str
    status: Status = "ok"
    changes: int = 0
    steps: list[StepRecord] = field(default_factory=list)
    plan: dict[str, Any] | None = None
    state: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    duration: float = 0.0
    #: a status run's facts and the controller's UTC clock when they were read (not in reports)
    facts: HostFacts | None = None
    read_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (no secrets ever reach a report)."""
        return {
            "host": self.host,
            "operation": self.operation,
            "status": self.status,
            "changes": self.changes,
            "steps": [s.to_dict() for s in self.steps],
            "plan": self.plan,
            "state": self.state,
            "error": self.error,
            "duration": round(self.duration, 3),
        }


#: VLActivationTypeEnabled as slmgr /dli names it ("Configured Activation Type: All|AD|KMS|Token") [SLMGRVBS]
ACTIVATION_TYPES = {0: "All", 1: "AD", 2: "KMS", 3: "Token"}


def summarize_state(facts: HostFacts) -> dict[str, Any]:
    """The final state worth reporting: edition, license status, days left, KMS host counters."""
    os = facts.os
    entry = catalog.identify_windows(
        caption=os.caption, edition_id=os.edition_id, build=os.build, sku=os.sku, product_type=os.product_type
    )
    product = facts.windows_product() or next(iter(facts.kms_host_products()), None)
    target = facts.kms_target()
    state: dict[str, Any] = {
        "computer_name": facts.computer_name,
        "os": os.caption,
        "build": os.build,
        "edition": f"{entry.product} {entry.edition}" if entry else os.edition_id,
        "license_status": product.license_status if product else None,
        "license_status_name": catalog.license_status_name(product.license_status) if product else None,
        "partial_key": product.partial_key if product else None,
        # a KMS host (and any permanently activated product) reports 0 minutes left: no expiry
        "days_left": product.days_left if product and product.grace_minutes else None,
        # the KMS target that wins: the Windows product's own (slmgr /skms host ActID), else machine-wide
        "kms_machine": target.machine,
        "kms_port": target.effective_port if target.machine else None,
        "kms_level": target.level if target.machine or target.lookup_domain else None,
        "lookup_domain": target.lookup_domain,
        "is_kms_host": facts.service.is_kms_host,
        # ADBA, KMS, MAK, Retail... and the activation object or KMS host behind it (facts.ProductFacts)
        "activation_method": product.activation_method if product else None,
        "activated_by": product.activated_by if product else None,
        "activation_type": ACTIVATION_TYPES.get(product.vl_activation_type_enabled) if product else None,
    }
    if product is not None and product.license_status == 1 and _nonzero(product.license_status_reason):
        # still licensed, but its last activation attempt failed (e.g. an ADBA client whose activation
        # object is gone and whose KMS fallback was refused): LicenseStatusReason [SPPWMI]
        state["renewal_hresult"] = product.license_status_reason
    if facts.cleaned:
        # flagged: some of what the host reported was not valid, printable text
        state["host_text_cleaned"] = facts.cleaned
    if facts.oslicense_module:
        # Microsoft's OSLicense module can do the same on this host (Get-ADLicenseInfo, Invoke-ADLicense)
        state["oslicense_module"] = True
    if facts.service.is_kms_host:
        state.update(
            # the rules clients reach the host through, with their effective profiles and scope
            firewall=[rule.model_dump() for rule in facts.firewall],
            current_count=facts.service.current_count,
            listening_port=facts.service.listening_port,
            dns_publishing=facts.service.dns_publishing,
            low_priority=facts.service.low_priority,
            activation_interval=facts.service.activation_interval,
            renewal_interval=facts.service.renewal_interval,
        )
    offices = facts.office_products()
    if offices:
        state["office"] = [
            {
                "name": p.name,
                "license_status": p.license_status,
                "partial_key": p.partial_key,
                "days_left": p.days_left,
            }
            for p in offices
        ]
    return state


def _nonzero(code: str | None) -> bool:
    try:
        return bool(code) and int(catalog.normalize_hresult(code or ""), 16) != 0
    except KmsAdminError:
        return False


def _remaining(deadline_at: float | None) -> float | None:
    return None if deadline_at is None else max(0.1, deadline_at - time.monotonic())


def gather_facts(session: Session, host: str, deadline_at: float | None = None) -> HostFacts:
    """Run the read-only facts step."""
    result = session.run(render(FACTS), deadline=_remaining(deadline_at))
    return parse_facts(result)


def read_kms_events(session: Session, deadline_at: float | None = None) -> dict[str, Any]:
    """A KMS host's event-log summary (events 12290/12293, last 30 days); a failure is noted, not fatal."""
    try:
        result = session.run(render(kms_events_ref()), deadline=_remaining(deadline_at))
        return health.summarize_events(parse_kms_events(result))
    except KmsAdminError as exc:
        return {"error": str(exc)}


def read_kms_reach(session: Session, deadline_at: float | None = None) -> dict[str, Any]:
    """The client's own view of its KMS host (SRV lookup, TCP connect); a failure is noted, not fatal."""
    try:
        result = session.run(render(kms_reach_ref()), deadline=_remaining(deadline_at))
        return parse_kms_reach(result).model_dump()
    except KmsAdminError as exc:
        return {"error": str(exc)}


def _reach_ref(operation: str, args: Any) -> ScriptRef | None:
    """The ``kms-reach`` step a ``convert-client --kms-host`` run checks before pinning, or None."""
    if operation != "convert-client" or not isinstance(args, ConvertClientArgs):
        return None
    if args.target != "host" or not args.kms_host or args.force:
        return None
    return kms_reach_ref(args.kms_host, args.kms_port)


def check_kms_reach(
    session: Session,
    host: str,
    facts: HostFacts,
    args: ConvertClientArgs,
    deadline_at: float | None,
    result: ScriptResult | None = None,
) -> PreflightFailed | None:
    """Before ``convert-client --kms-host`` pins a host: does it resolve and answer on its port from the
    client? The refusal to raise (nothing changed) unless ``--force``; a host already pinned there is not
    re-checked. ``result`` is the step's answer when it was read with the facts (otherwise it runs now)."""
    ref = _reach_ref("convert-client", args)
    if ref is None or not args.kms_host:
        return None
    pinned = (facts.service.kms_machine or "").lower()
    if pinned == args.kms_host.lower() and (facts.service.kms_port or 1688) == args.kms_port:
        return None
    if result is None:
        result = session.run(render(ref), deadline=_remaining(deadline_at))
    target = parse_kms_reach(result).target
    shown = f"{args.kms_host}:{args.kms_port}"
    if target.resolves is False:
        problem = f"{shown} does not resolve from {host} ({target.error or 'no address'})"
    elif target.connects is False:
        problem = (
            f"{shown} resolves but nothing answers on TCP {args.kms_port} from {host} "
            f"({target.error or 'no connection'})"
        )
    else:
        return None
    return PreflightFailed(
        host,
        "preflight:kms-reach",
        f"{problem}: the client would not activate there (0xC004F074)",
        hresult="0xC004F074",
        remediation=(
            "check the name and port (a KMS host listens on TCP 1688 unless set otherwise), DNS, and the "
            "SPPSVC-In-TCP firewall rule on the KMS host; pass --force to pin it anyway"
        ),
    )


def make_plan(operation: str, host: str, facts: HostFacts | None, args: Any) -> Plan:
    """Dispatch to the operation's planner."""
    if operation == "setup-host" and isinstance(args, SetupHostArgs):
        return plan_setup_host(host, facts, args)
    if operation == "convert-client" and isinstance(args, ConvertClientArgs):
        return plan_convert_client(host, facts, args)
    if operation.startswith("adba-") and isinstance(args, AdbaArgs):
        return plan_adba(host, facts, args)
    raise KmsAdminError(f"unknown operation {operation!r} or arguments {type(args).__name__}")


def _verify(operation: str, host: str, facts: HostFacts, args: Any) -> None:
    """Read back what the operation promised."""
    if operation == "setup-host":
        if not facts.service.is_kms_host:
            raise HostError(
                host,
                "verify",
                "the host does not report itself as a KMS host after set-up",
                remediation="check the host key and its activation (slmgr /dlv)",
            )
        rule = facts.firewall_rule(FIREWALL_RULE)
        outside = uncovered(args.allow_from, rule.remote_addresses) if rule else list(args.allow_from)
        if rule is None or not rule.enabled or outside:
            raise HostError(
                host,
                "verify",
                f"{FIREWALL_RULE} reads back "
                + (
                    f"enabled={rule.enabled}, profiles {','.join(rule.profiles)}, remote addresses "
                    f"{','.join(rule.remote_addresses)}"
                    if rule
                    else "missing"
                )
                + (f"; not allowed: {', '.join(outside)}" if outside else ""),
                remediation="check the rule with Get-NetFirewallRule -Name SPPSVC-In-TCP | "
                "Get-NetFirewallAddressFilter",
            )
        for name in KMS_HOST_SETTINGS:
            wanted = getattr(args, name)
            if wanted is not None and getattr(facts.service, name) != wanted:
                raise HostError(
                    host,
                    "verify",
                    f"{name} reads back {getattr(facts.service, name)!r}, expected {wanted!r}",
                    remediation="restart the Software Protection service (net stop sppsvc && net start sppsvc)",
                )
    elif operation == "convert-client":
        product = facts.windows_product()
        if product is None or product.license_status != 1:
            status = catalog.license_status_name(product.license_status) if product else "no key installed"
            raise HostError(
                host, "verify", f"Windows is not activated after conversion (LicenseStatus: {status})"
            )
        target = facts.kms_target(product)
        if (
            isinstance(args, ConvertClientArgs)
            and args.target == "host"
            and args.kms_host
            and ((target.machine or "").lower(), target.effective_port)
            != (args.kms_host.lower(), args.kms_port)
        ):
            raise HostError(
                host,
                "verify",
                f"Windows activates against {target.machine}:{target.effective_port} ({target.level}-level "
                f"setting), not {args.kms_host}:{args.kms_port}",
                remediation="slmgr /dlv shows the registered KMS host; a per-product one is set with "
                "slmgr /skms HOST ACTIVATION-ID",
            )


def is_waiting(operation: str, error: HostError) -> bool:
    """Whether ``error`` leaves the host waiting for its KMS host's count rather than failed.

    Only convert-client's ``activate`` step refused with SL_E_VL_NOT_ENOUGH_COUNT: every step before
    it applied, and Windows retries activation by itself ([PLAN24] thresholds, [TSKMS] retry interval).
    """
    if operation != "convert-client" or error.step != "activate" or not error.hresult:
        return False
    try:
        return catalog.normalize_hresult(error.hresult) == catalog.NOT_ENOUGH_COUNT
    except KmsAdminError:
        return False


def run_host(
    operation: str,
    host: str,
    args: Any,
    session_factory: SessionFactory,
    *,
    check: bool = False,
    deadline: float | None = None,
) -> HostReport:
    """Run ``operation`` on ``host``; never raises for a host-level failure (it is in the report).

    ``operation`` is ``setup-host``, ``convert-client`` or ``status`` (facts only: the report's
    ``state``, no plan, no change). A failure's ``error`` carries ``kind``, the error class name
    (``ConnectionFailed``, ``HostTimeout``...), so callers can tell retryable failures apart. A
    convert-client run refused at ``activate`` for the KMS host's count ends ``waiting`` with the same
    error (see :func:`is_waiting`).
    """
    started = time.monotonic()
    deadline_at = None if deadline is None else started + deadline
    report = HostReport(host=host, operation=operation)
    session: Session | None = None
    step_name = "connect"
    try:
        session = session_factory(host)
        step_name = "facts"
        reach = _reach_ref(operation, args)
        reach_result: ScriptResult | None = None
        if reach is None:
            facts = gather_facts(session, host, deadline_at)
        else:
            # The reachability check is read-only too: it travels with the facts read, in one pipeline.
            read = session.run_many([render(FACTS), render(reach)], deadline=_remaining(deadline_at))
            facts = parse_facts(read[0])
            reach_result = read[1] if len(read) > 1 else None
        if operation == "status":
            report.facts, report.read_at = facts, datetime.now(UTC)
            report.state = summarize_state(facts)
            report.state["activation"] = health.host_view(host, facts, read_at=report.read_at).to_dict()
            if facts.service.is_kms_host:
                report.state["kms_events"] = read_kms_events(session, deadline_at)
            elif any(p.is_kms_client for p in facts.products):
                report.state["kms_reach"] = read_kms_reach(session, deadline_at)
            return report
        unreachable = None
        if operation == "convert-client" and isinstance(args, ConvertClientArgs):
            step_name = "preflight:kms-reach"
            unreachable = check_kms_reach(session, host, facts, args, deadline_at, reach_result)
            if unreachable is not None and not check:
                raise unreachable
        plan = make_plan(operation, host, facts, args)
        report.plan = plan.to_dict()
        if unreachable is not None:
            # --check changes nothing: the KMS host may still be set up by an earlier play of the run
            report.plan.setdefault("notes", []).append(f"{unreachable.message}; {unreachable.remediation}")
        if plan.blocked:
            first = plan.problems[0]
            raise PreflightFailed(
                host,
                f"preflight:{first.check}",
                "; ".join(p.message for p in plan.problems),
                hresult=first.hresult,
                remediation=first.remediation,
            )
        if check:
            report.status = "pending" if plan.changes else "ok"
            report.state = summarize_state(facts)
            return report
        # The plan's steps and the read-back that verifies them travel as one batch: one pipeline,
        # one round trip on PSRP. The host stops the batch at the first failed step.
        verify = bool(plan.steps) and not plan.stop_after
        scripts = [render(planned.ref) for planned in plan.steps]
        if verify:
            scripts.append(render(FACTS))
        step_name = "+".join(s.step for s in scripts) or step_name
        results = session.run_many(scripts, deadline=_remaining(deadline_at)) if scripts else []
        for planned, result in zip(plan.steps, results, strict=False):
            step_name = planned.step
            outcome = parse_outcome(result)
            log.info("host=%s step=%s duration=%.3fs", host, planned.step, result.duration)
            record = StepRecord(planned.step, outcome.changed, result.duration, planned.reason, outcome.data)
            report.steps.append(record)
            if outcome.error is not None:
                record.error = outcome.error.model_dump()
                raise_for_error(result, outcome)
            report.changes += int(outcome.changed)
        if len(results) < len(scripts):
            # Only reachable if the host stopped the batch after a step that reported success.
            raise HostError(host, step_name, "the host ended the run before every step had run")
        if plan.stop_after:
            report.state = {
                **summarize_state(facts),
                **{k: v for s in report.steps for k, v in s.data.items()},
            }
            report.status = "changed" if report.changes else "ok"
            return report
        step_name = "verify"
        # Nothing ran: the facts just read are the state to verify.
        after = parse_facts(results[-1]) if verify else facts
        report.state = summarize_state(after)
        _verify(operation, host, after, args)
        report.status = "changed" if report.changes else "ok"
    except HostError as exc:
        report.status = "waiting" if is_waiting(operation, exc) else "failed"
        report.error = {**exc.to_dict(), "kind": type(exc).__name__}
    except KmsAdminError as exc:
        report.status = "failed"
        report.error = {**HostError(host, step_name, str(exc)).to_dict(), "kind": type(exc).__name__}
    finally:
        report.duration = time.monotonic() - started
        if session is not None:
            try:
                session.close()
            except Exception as exc:  # closing is best effort; the result is already known
                log.debug("host=%s close failed: %s", host, type(exc).__name__)
    return report
