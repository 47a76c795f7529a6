"""Facts: what a host reports about itself, parsed from the one JSON object a script prints.

The remote JSON is a boundary, so it is validated with pydantic here and turned into typed values.
Every step script prints ``{"kmsadmin": 1, "step": ..., "changed": ..., "before", "after", "data"}``
or ``{..., "error": {"hresult", "message", "stage"}}`` (templates/README.md).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from kmsadmin.catalog import OFFICE_APP_ID, WINDOWS_APP_ID, RequiredUpdate, hresult_info
from kmsadmin.errors import RemoteScriptError
from kmsadmin.values import ScriptRef, ScriptResult, clean_tree

log = logging.getLogger("kmsadmin.facts")


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class OsFacts(_Model):
    """Win32_OperatingSystem plus the registry's EditionID."""

    caption: str | None = None
    version: str | None = None
    build: int | None = None
    #: update build revision (CurrentVersion\UBR): the "2322" of 20348.2322; None before Windows 10
    ubr: int | None = None
    sku: int | None = None
    edition_id: str | None = None
    product_type: int | None = None
    installation_type: str | None = None
    ui_language: str | None = None

    @property
    def is_server(self) -> bool:
        """ProductType 2 (domain controller) and 3 (server) are server OSes."""
        return self.product_type in (2, 3)

    @property
    def is_core(self) -> bool:
        """Server Core has no Volume Activation Tools (RSAT-VA-Tools)."""
        return (self.installation_type or "").lower() == "server core"


class ProductFacts(_Model):
    """One SoftwareLicensingProduct with a product key installed."""

    id: str
    application_id: str
    name: str = ""
    description: str = ""
    license_status: int = 0
    license_status_reason: str | None = None
    partial_key: str | None = None
    channel: str | None = None
    grace_minutes: int = 0
    is_kms_host: bool = False
    license_is_addon: bool = False
    kms_machine: str | None = None
    kms_port: int | None = None
    lookup_domain: str | None = None
    discovered_kms: str | None = None
    discovered_port: int | None = None
    vl_activation_type: int = 0
    vl_activation_type_enabled: int = 0
    ad_object_name: str | None = None
    ad_object_dn: str | None = None

    @property
    def is_windows(self) -> bool:
        """A Windows product (Windows ApplicationID)."""
        return self.application_id.lower() == WINDOWS_APP_ID

    @property
    def is_office(self) -> bool:
        """An Office 2013+ product (Office ApplicationID)."""
        return self.application_id.lower() == OFFICE_APP_ID

    @property
    def is_kms_client(self) -> bool:
        """Description contains VOLUME_KMSCLIENT: a GVLK is installed ([TSKMS])."""
        return "VOLUME_KMSCLIENT" in self.description.upper()

    @property
    def activation_method(self) -> str | None:
        """How this product is activated: ADBA, KMS, Token, MAK, Retail, OEM or KMS host; None if not.

        A GVLK (VOLUME_KMSCLIENT) product says how it was last activated in VLActivationType
        (1 AD, 2 KMS, 3 Token [WMITABLE]); other channels activate with Microsoft by their key type
        (Description / ProductKeyChannel, as slmgr.vbs tells them apart [SLMGRVBS]).
        """
        if self.license_status != 1:
            return None
        if self.is_kms_host:
            return "KMS host"
        text = f"{self.description} {self.channel or ''}".upper()
        if self.is_kms_client:
            return {1: "ADBA", 3: "Token"}.get(self.vl_activation_type, "KMS")
        for tag, name in (("MAK", "MAK"), ("RETAIL", "Retail"), ("OEM", "OEM")):
            if tag in text:
                return name
        return None

    @property
    def activated_by(self) -> str | None:
        """The activation object (ADBA) or KMS host (KMS) that activated the product."""
        method = self.activation_method
        if method == "ADBA":
            return self.ad_object_name
        if method == "KMS":
            return self.discovered_kms or self.kms_machine
        return None

    @property
    def days_left(self) -> float:
        """Validity left in days (GracePeriodRemaining is in minutes)."""
        return round(self.grace_minutes / 1440, 1)


class RequestCounters(_Model):
    """KMS host request counters by client license status."""

    total: int = 0
    failed: int = 0
    unlicensed: int = 0
    licensed: int = 0
    oob_grace: int = 0
    oot_grace: int = 0
    non_genuine_grace: int = 0
    notification: int = 0


class ServiceFacts(_Model):
    """SoftwareLicensingService: KMS client and KMS host settings and counters."""

    version: str | None = None
    kms_machine: str | None = None
    kms_port: int | None = None
    lookup_domain: str | None = None
    host_caching: bool = True
    discovered_kms: str | None = None
    discovered_port: int | None = None
    client_machine_id: str | None = None
    is_kms_host: bool = False
    current_count: int = -1
    required_count: int = 0
    listening_port: int = 1688
    dns_publishing: bool = True
    low_priority: bool = False
    activation_interval: int = 120
    renewal_interval: int = 10080
    requests: RequestCounters = Field(default_factory=RequestCounters)


@dataclass(frozen=True, slots=True)
class KmsTarget:
    """Where a product sends KMS activation, and at which level that setting lives.

    ``level`` is ``product`` when the product has its own KMS host (``slmgr /skms host ActivationID``:
    SoftwareLicensingProduct.SetKeyManagementServiceMachine; its KeyManagementServiceMachine is then
    set, [SPPWMI] softwarelicensingproduct.md), which wins over the machine-wide
    SoftwareLicensingService setting; else ``machine``. ``activation_id`` is what a step must be given
    to change that level ('' = machine-wide).
    """

    machine: str | None
    port: int | None
    lookup_domain: str | None
    level: str
    activation_id: str = ""

    @property
    def effective_port(self) -> int:
        """The port used: 0 (never set, or cleared) means 1688 ([SLMGRVBS] DisplayKMSClientInformation)."""
        return self.port or 1688


class FirewallRuleFacts(_Model):
    """One firewall rule's state."""

    name: str
    enabled: bool = False
    profiles: list[str] = Field(default_factory=list)
    #: remote-address scope (Get-NetFirewallAddressFilter RemoteAddress): "Any", "LocalSubnet", subnets
    remote_addresses: list[str] = Field(default_factory=lambda: ["Any"])


class SecurityFacts(_Model):
    """Elevation and UAC remote-restriction state of the connecting account."""

    is_admin: bool = False
    is_builtin_admin: bool = False
    token_filter_policy: int | None = None
    domain_joined: bool = False
    dns_suffix: str | None = None


class HostFacts(_Model):
    """Everything the ``facts`` step reports."""

    computer_name: str = ""
    #: strings of the facts that had to be cleaned (invalid Unicode, control characters, length)
    cleaned: int = 0
    os: OsFacts = Field(default_factory=OsFacts)
    products: list[ProductFacts] = Field(default_factory=list)
    service: ServiceFacts = Field(default_factory=ServiceFacts)
    features: dict[str, bool | None] = Field(default_factory=dict)
    firewall: list[FirewallRuleFacts] = Field(default_factory=list)
    hotfixes: list[str] = Field(default_factory=list)
    security: SecurityFacts = Field(default_factory=SecurityFacts)
    #: Microsoft's OSLicense module (Invoke-ADLicense, Get-ADLicenseInfo...) is installed [OSLIC]
    oslicense_module: bool = False
    time_utc: str | None = None

    def windows_product(self) -> ProductFacts | None:
        """The Windows product that is not an add-on and not a KMS host key, if any."""
        for product in self.products:
            if product.is_windows and not product.license_is_addon and not product.is_kms_host:
                return product
        return None

    def kms_target(self, product: ProductFacts | None = None) -> KmsTarget:
        """The KMS host ``product`` (default: the Windows product) activates against.

        A product's own KMS host and lookup domain win over the machine-wide ones; slmgr.vbs /dlv shows
        the product's KeyManagementServiceMachine and KeyManagementServicePort (0 = 1688) as the
        "Registered KMS machine name" ([SLMGRVBS] DisplayKMSClientInformation).
        """
        product = product or self.windows_product()
        service = self.service
        own_domain = product.lookup_domain if product else None
        if product is not None and product.kms_machine:
            return KmsTarget(
                product.kms_machine,
                product.kms_port,
                own_domain or service.lookup_domain,
                "product",
                product.id,
            )
        return KmsTarget(
            service.kms_machine, service.kms_port, own_domain or service.lookup_domain, "machine"
        )

    def kms_host_products(self) -> list[ProductFacts]:
        """Products whose installed key is a KMS host key (VOLUME_KMS, not VOLUME_KMSCLIENT)."""
        return [p for p in self.products if p.is_kms_host]

    def office_products(self) -> list[ProductFacts]:
        """Office products with a key installed."""
        return [p for p in self.products if p.is_office and not p.is_kms_host]

    def firewall_rule(self, name: str) -> FirewallRuleFacts | None:
        """A firewall rule by name."""
        return next((r for r in self.firewall if r.name.lower() == name.lower()), None)

    def has_update(self, kb: str) -> bool:
        """Whether an update (KB) is in Get-HotFix's list."""
        return kb.upper() in {h.upper() for h in self.hotfixes}

    def has_required_update(self, update: RequiredUpdate) -> bool:
        """The update's KB is listed, or the OS build.UBR is at least the update's (a later LCU)."""
        return update.installed(build=self.os.build, ubr=self.os.ubr, hotfixes=self.hotfixes)


class StepError(_Model):
    """The ``error`` member of a step's JSON."""

    hresult: str | None = None
    message: str = ""
    stage: str | None = None


class StepOutcome(_Model):
    """The parsed result of one step script."""

    step: str
    changed: bool = False
    before: dict[str, Any] = Field(default_factory=dict)
    after: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    error: StepError | None = None
    #: strings the host sent that had to be cleaned (:func:`~kmsadmin.values.clean_text`)
    cleaned: int = 0

    @field_validator("before", "after", "data", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        """Scripts print null for the members a step does not use (templates/README.md)."""
        return {} if value is None else value


def parse_outcome(result: ScriptResult) -> StepOutcome:
    """Find the one JSON object in a script's output and validate it."""
    candidates = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("{")]
    if not candidates:
        detail = "; ".join(result.errors) or (result.stdout.strip()[:200] or "no output")
        raise RemoteScriptError(result.host, result.step, f"the script printed no result: {detail}")
    try:
        # the one boundary for host data: every string cleaned once (invalid Unicode, escapes, length)
        raw, cleaned = clean_tree(json.loads(candidates[-1]))
        # the count is ours, never the host's
        outcome = StepOutcome.model_validate(raw).model_copy(update={"cleaned": cleaned})
        if cleaned:
            log.warning(
                "host=%s step=%s: %d strings from the host were cleaned (invalid Unicode replaced by "
                "U+FFFD, control and escape characters removed, over-long values cut)",
                result.host,
                result.step,
                cleaned,
            )
    except (json.JSONDecodeError, ValidationError) as exc:
        raise RemoteScriptError(result.host, result.step, f"unreadable script result: {exc}") from None
    if outcome.step != result.step:
        raise RemoteScriptError(result.host, result.step, f"result is for step {outcome.step!r}")
    return outcome


def raise_for_error(result: ScriptResult, outcome: StepOutcome) -> None:
    """Turn a step's ``error`` into a typed error with the catalog's meaning and remediation."""
    if outcome.error is None:
        return
    code = outcome.error.hresult
    info = hresult_info(code) if code else None
    message = outcome.error.message or "the step failed"
    if not code and outcome.error.stage not in (None, "Input", "Check"):
        # Windows failed but gave no licensing code (templates/README.md, rule 4): say so rather
        # than guess one.
        message += " (HRESULT unknown)"
    raise RemoteScriptError(
        result.host,
        result.step,
        message,
        hresult=code,
        meaning=info.meaning if info and info.known else None,
        remediation=info.remediation if info and info.known else None,
    )


FACTS = ScriptRef("facts")


def parse_facts(result: ScriptResult) -> HostFacts:
    """Parse the ``facts`` step's result."""
    outcome = parse_outcome(result)
    raise_for_error(result, outcome)
    try:
        facts = HostFacts.model_validate(outcome.data)
    except ValidationError as exc:
        raise RemoteScriptError(result.host, result.step, f"unreadable facts: {exc}") from None
    return facts.model_copy(update={"cleaned": outcome.cleaned})


class KmsLogEvent(_Model):
    """One event of a KMS host's "Key Management Service" log (``kms-events`` step)."""

    id: int
    time: str | None = Field(default=None, max_length=64)
    values: list[Annotated[str, StringConstraints(max_length=1024)]] = Field(
        default_factory=list, max_length=16
    )


class KmsEventLog(_Model):
    """Events 12290 (client requests) and 12293 (DNS publishing failed) of the last ``days`` days."""

    days: int = 30
    max_events: int = 0
    log_missing: bool = False
    truncated: bool = False
    events: list[KmsLogEvent] = Field(default_factory=list)


#: what ``status`` reads of a KMS host's log: the last 30 days (the KMS count window [PLAN24]), bounded
KMS_EVENT_DAYS = 30
KMS_EVENT_LIMIT = 5000


def kms_events_ref(days: int = KMS_EVENT_DAYS, max_events: int = KMS_EVENT_LIMIT) -> ScriptRef:
    """The read-only ``kms-events`` step."""
    return ScriptRef("kms-events", params={"days": days, "max_events": max_events})


def parse_kms_events(result: ScriptResult, max_events: int = KMS_EVENT_LIMIT) -> KmsEventLog:
    """Parse the ``kms-events`` step's result; more events than asked for is a host error."""
    outcome = parse_outcome(result)
    raise_for_error(result, outcome)
    try:
        log = KmsEventLog.model_validate(outcome.data)
    except ValidationError as exc:
        raise RemoteScriptError(result.host, result.step, f"unreadable event log: {exc}") from None
    if len(log.events) > max_events:
        raise RemoteScriptError(
            result.host,
            result.step,
            f"the host sent {len(log.events)} events, more than the {max_events} asked for",
        )
    return log


class SrvRecordFacts(_Model):
    """One ``_vlmcs._tcp`` SRV answer as the client saw it."""

    target: str | None = Field(default=None, max_length=255)
    port: int = 0
    priority: int = 0
    weight: int = 0


class SrvLookupFacts(_Model):
    """The client's SRV lookup in its lookup domain or DNS domain."""

    name: str | None = Field(default=None, max_length=300)
    answered: bool = False
    error: str | None = Field(default=None, max_length=64)
    records: list[SrvRecordFacts] = Field(default_factory=list, max_length=20)


class ReachTarget(_Model):
    """The KMS host the client would use (or was asked about) and whether TCP reaches it."""

    name: str | None = Field(default=None, max_length=255)
    port: int = 1688
    source: str = Field(default="given", max_length=16)
    resolves: bool | None = None
    addresses: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=list, max_length=8
    )
    connects: bool | None = None
    error: str | None = Field(default=None, max_length=64)


class ReachFacts(_Model):
    """What the ``kms-reach`` step saw from the client."""

    domain: str | None = Field(default=None, max_length=255)
    timeout_ms: int = 0
    srv: SrvLookupFacts = Field(default_factory=SrvLookupFacts)
    target: ReachTarget = Field(default_factory=ReachTarget)


#: how long the client waits for the TCP connection to its KMS host
REACH_TIMEOUT_MS = 3000


def kms_reach_ref(
    kms_host: str = "",
    kms_port: int | None = None,
    lookup_domain: str = "",
    timeout_ms: int = REACH_TIMEOUT_MS,
) -> ScriptRef:
    """The read-only ``kms-reach`` step ('' = what the client is configured with)."""
    return ScriptRef(
        "kms-reach",
        params={
            "kms_host": kms_host,
            "kms_port": "" if kms_port is None else kms_port,
            "lookup_domain": lookup_domain,
            "timeout_ms": timeout_ms,
        },
    )


def parse_kms_reach(result: ScriptResult) -> ReachFacts:
    """Parse the ``kms-reach`` step's result."""
    outcome = parse_outcome(result)
    raise_for_error(result, outcome)
    try:
        return ReachFacts.model_validate(outcome.data)
    except ValidationError as exc:
        raise RemoteScriptError(result.host, result.step, f"unreadable reachability: {exc}") from None
