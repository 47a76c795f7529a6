"""The catalog layer: Microsoft's KMS facts as package data with typed look-ups.

GVLKs (KMS client setup keys) and edition identification, keys that are not GVLKs, KMS host key
(CSVLK) groups with host OS rules and required updates, activation rules, LicenseStatus values and
activation HRESULTs. Every data row carries its Microsoft source. Importing this package reads no
data: files under ``data/`` are parsed on first use and cached.
"""

from __future__ import annotations

from kmsadmin.catalog.csvlk import (
    CompatAnswer,
    CsvlkGroup,
    HostVerdict,
    RequiredUpdate,
    compat,
    csvlk_group,
    csvlk_groups,
    group_activates,
    groups_for_host,
    host_can_carry,
    minimal_group_for,
    required_updates,
)
from kmsadmin.catalog.errors import NotFoundInCatalog
from kmsadmin.catalog.hresults import HResultInfo, hresult_codes, hresult_info, normalize_hresult
from kmsadmin.catalog.identify import (
    identify_office,
    identify_windows,
    is_evaluation,
    os_product,
    unidentified_reason,
)
from kmsadmin.catalog.keys import (
    ClientKey,
    KeyCheck,
    NotGvlkKey,
    check_key,
    client_keys,
    find_client_key,
    keys_for,
    not_gvlk_keys,
)
from kmsadmin.catalog.rules import (
    ACTIVATION_RULES,
    LICENSE_STATUS,
    NOT_ENOUGH_COUNT,
    ActivationRules,
    LicenseStatus,
    license_status_name,
    threshold_for,
    waiting_note,
)

#: SoftwareLicensingProduct.ApplicationID of Windows (slmgr.vbs ``WindowsAppId``).
WINDOWS_APP_ID = "55c92734-d682-4d71-983e-d6ec3f16059f"
#: SoftwareLicensingProduct.ApplicationID of Office 2013 and later (Microsoft CSS OLicenseCleanup.vbs).
OFFICE_APP_ID = "0ff1ce15-a989-479d-af46-f275c6370663"

__all__ = [
    "ACTIVATION_RULES",
    "LICENSE_STATUS",
    "NOT_ENOUGH_COUNT",
    "OFFICE_APP_ID",
    "WINDOWS_APP_ID",
    "ActivationRules",
    "ClientKey",
    "CompatAnswer",
    "CsvlkGroup",
    "HResultInfo",
    "HostVerdict",
    "KeyCheck",
    "LicenseStatus",
    "NotFoundInCatalog",
    "NotGvlkKey",
    "RequiredUpdate",
    "check_key",
    "client_keys",
    "compat",
    "csvlk_group",
    "csvlk_groups",
    "find_client_key",
    "group_activates",
    "groups_for_host",
    "host_can_carry",
    "hresult_codes",
    "hresult_info",
    "identify_office",
    "identify_windows",
    "is_evaluation",
    "keys_for",
    "license_status_name",
    "minimal_group_for",
    "normalize_hresult",
    "not_gvlk_keys",
    "os_product",
    "required_updates",
    "threshold_for",
    "unidentified_reason",
    "waiting_note",
]
