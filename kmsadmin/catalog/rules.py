"""Activation rules (thresholds, intervals, limits, DNS SRV format) and LicenseStatus values.

Every figure carries its Microsoft source in :attr:`ActivationRules.sources`:
[PLAN24] windowsserverdocs kms-activation-planning.md@0521d9bc (11/12/2024); [TSKMS]
activation-troubleshoot-kms-general.md@0340a1f1 (08/13/2025); [SLMGRDOC]
activation-slmgr-vbs-options.md@093f0bfa (09/24/2019); [SPPWMI] MicrosoftDocs/win32
desktop-src/SppWmi@66168cfa; [HOST25] kms-create-host.md@1c987a3a (04/03/2025); [DNS]
common-troubleshooting-procedures-kms-dns.md@04deed5a (07/22/2019); [ERR]
activation-error-codes.md@00ff668a (9/10/2019); [OHOST]/[OKMS] OfficeDocs-DeployOffice
volume-license-activation pages (09/18/2024).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kmsadmin.catalog.keys import ClientKey


_SOURCES = {
    "client_threshold": '[PLAN24] "Clients activate if the count is 25 or higher."',
    "server_threshold": (
        '[PLAN24] "Servers and volume editions of Microsoft Office products activate if the count is '
        'five or greater."'
    ),
    "office_threshold": (
        '[PLAN24] (as server_threshold); [OHOST] "The current count must be 5 or more before KMS '
        'clients are activated."'
    ),
    "count_window_days": '[PLAN24] "The KMS only counts unique connections from the past 30 days"',
    "max_recent_contacts": '[PLAN24] "... and only stores the 50 most recent contacts."',
    "max_count_server_only": "[TSKMS] in server-only environments the count tops out at 10",
    "office_max_count": ('[OHOST] "The maximum current count is double the activation threshold, or 10."'),
    "validity_days": '[PLAN24] "KMS activations are valid for 180 days"',
    "renewal_interval_minutes": (
        '[PLAN24] "attempt to renew their activation every seven days"; [SLMGRDOC] /sri default '
        '"10,080 minutes (7 days)"'
    ),
    "retry_interval_minutes": (
        '[TSKMS] "try to activate every two hours"; [SLMGRDOC] /sai default (two hours)'
    ),
    "interval_min_minutes": ('[SPPWMI] SetVLActivationInterval/SetVLRenewalInterval ">= 15 and <= 43200"'),
    "interval_max_minutes": ('[SPPWMI] SetVLActivationInterval/SetVLRenewalInterval ">= 15 and <= 43200"'),
    "hosts_per_csvlk": '[PLAN24] "up to five more KMS hosts ... for a total of six"',
    "reactivations_per_host": (
        '[PLAN24] "reactivate the same host up to nine times with the same key"; [ERR] 0xC004C008 '
        '"activated up to 10 times on up to six different computers"'
    ),
    "port": '[PLAN24] "By default, a KMS host is configured to use TCP on port 1688."',
    "srv_record": (
        "[HOST25] SRV: Service _vlmcs, Protocol _tcp, Priority 0, Weight 0, Port 1688, Hostname "
        '<FQDN of the KMS host>; [DNS] "KMS does not use the Priority or Weight values. However, '
        'the record must include them."'
    ),
    "dns_publish_interval_hours": (
        '[DNS] "a KMS host server dynamically registers a DNS SRV record one time every 24 hours"'
    ),
    "two_hosts_above_clients": (
        '[PLAN24] "If you have more than 50 clients, we recommend that you have at least two KMS hosts"'
    ),
    "office_out_of_tolerance_days": (
        '[OKMS] after 180 days without renewal Office is in "out-of-tolerance state for 30 days", '
        "then unlicensed notification"
    ),
}


def _sources() -> Mapping[str, str]:
    return MappingProxyType(_SOURCES)


@dataclass(frozen=True, slots=True)
class ActivationRules:
    """KMS activation rules with Microsoft sources (see :attr:`sources`)."""

    client_threshold: int = 25
    server_threshold: int = 5
    office_threshold: int = 5
    count_window_days: int = 30
    max_recent_contacts: int = 50
    max_count_server_only: int = 10
    office_max_count: int = 10
    validity_days: int = 180
    renewal_interval_minutes: int = 10080
    retry_interval_minutes: int = 120
    interval_min_minutes: int = 15
    interval_max_minutes: int = 43200
    hosts_per_csvlk: int = 6
    reactivations_per_host: int = 9
    port: int = 1688
    srv_service: str = "_vlmcs"
    srv_protocol: str = "_tcp"
    srv_priority: int = 0
    srv_weight: int = 0
    dns_publish_interval_hours: int = 24
    two_hosts_above_clients: int = 50
    office_out_of_tolerance_days: int = 30
    sources: Mapping[str, str] = field(default_factory=_sources)

    @property
    def srv_name(self) -> str:
        """``_vlmcs._tcp``: the owner name of KMS SRV records, relative to the DNS domain."""
        return f"{self.srv_service}.{self.srv_protocol}"

    def srv_record(self, domain: str, target: str, *, port: int | None = None) -> str:
        """A zone-file line: ``_vlmcs._tcp.contoso.com. IN SRV 0 0 1688 kms1.contoso.com.``."""
        owner = f"{self.srv_name}.{domain.rstrip('.')}."
        return (
            f"{owner} IN SRV {self.srv_priority} {self.srv_weight} {port or self.port} {target.rstrip('.')}."
        )

    def recommended_hosts(self, clients: int) -> int:
        """Minimum KMS hosts to run: 1, or 2 for more than 50 clients ([PLAN24])."""
        return 2 if clients > self.two_hosts_above_clients else 1


ACTIVATION_RULES = ActivationRules()

#: SL_E_VL_NOT_ENOUGH_COUNT [ERR]: the KMS host answered, but its count is below the client's
#: threshold. The client is configured correctly and retries by itself ([TSKMS] every two hours).
NOT_ENOUGH_COUNT = "0xC004F038"


def waiting_note() -> str:
    """One line telling an admin what a client refused with :data:`NOT_ENOUGH_COUNT` is waiting for."""
    rules = ACTIVATION_RULES
    return (
        "the KMS host has not counted enough clients yet "
        f"({rules.client_threshold} Windows clients, {rules.server_threshold} servers or Office, within "
        f"{rules.count_window_days} days); activation happens by itself once it has (Windows retries "
        f"every {rules.retry_interval_minutes // 60} hours), or re-run kmsadmin then"
    )


def threshold_for(client_key: ClientKey) -> int:
    """Activation threshold for a client: 25 for Windows client OSes, 5 for servers and Office."""
    if client_key.kind == "client":
        return ACTIVATION_RULES.client_threshold
    if client_key.kind == "office":
        return ACTIVATION_RULES.office_threshold
    return ACTIVATION_RULES.server_threshold


def validity_left_days(grace_minutes: int) -> int:
    """Whole days left from SoftwareLicensingProduct.GracePeriodRemaining (minutes), rounded up."""
    return math.ceil(max(grace_minutes, 0) / 1440)


@dataclass(frozen=True, slots=True)
class LicenseStatus:
    """A SoftwareLicensingProduct.LicenseStatus value ([SPPWMI]) and slmgr's wording for it."""

    value: int
    name: str
    slmgr: str


#: [SPPWMI] LicenseStatus 0..6; slmgr wording from slmgr.vbs ("License Status: ...").
LICENSE_STATUS: Mapping[int, LicenseStatus] = MappingProxyType(
    {
        0: LicenseStatus(0, "Unlicensed", "Unlicensed"),
        1: LicenseStatus(1, "Licensed", "Licensed"),
        2: LicenseStatus(2, "OOBGrace", "Initial grace period"),
        3: LicenseStatus(
            3, "OOTGrace", "Additional grace period (KMS license expired or hardware out of tolerance)"
        ),
        4: LicenseStatus(4, "NonGenuineGrace", "Non-genuine grace period."),
        5: LicenseStatus(5, "Notification", "Notification"),
        6: LicenseStatus(6, "ExtendedGrace", "Extended grace period"),
    }
)


def license_status_name(value: int) -> str:
    """``1`` -> ``Licensed``; unknown values -> ``Unknown (n)``."""
    status = LICENSE_STATUS.get(value)
    return status.name if status else f"Unknown ({value})"
