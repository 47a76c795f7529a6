"""Identify the installed Windows edition or Office product from what a host reports.

Windows: EditionID (registry / ``DISM /Get-CurrentEdition``), Win32_OperatingSystem
OperatingSystemSKU, BuildNumber, ProductType and Caption. EditionID and SKU are language
independent; Caption is localised, so it is used only as a last resort and only through English
tokens. Office: SoftwareLicensingProduct Name and Description (e.g. ``Office 21,
Office21ProPlus2021VL_KMS_Client_AE edition`` / ``Office 21, VOLUME_KMSCLIENT channel``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from kmsadmin.catalog._data import load
from kmsadmin.catalog.keys import ClientKey, client_keys

#: Win32_OperatingSystem.ProductType values (WMI): 1 workstation, 2 domain controller, 3 server.
PRODUCT_TYPE_WORKSTATION = 1
PRODUCT_TYPE_DOMAIN_CONTROLLER = 2
PRODUCT_TYPE_SERVER = 3

#: OperatingSystemSKU values of evaluation editions: 79/80 Server Standard/Datacenter
#: (evaluation installation), 72 Enterprise Evaluation, 84 Enterprise N Evaluation, 129/130
#: Enterprise LTSB (N) Evaluation, 96/95 Storage Server Standard/Workgroup evaluation
#: (GetProductInfo, MicrosoftDocs/sdk-api nf-sysinfoapi-getproductinfo.md@bb8f6e2e).
EVALUATION_SKUS = frozenset({72, 79, 80, 84, 95, 96, 129, 130})

_OFFICE_NAME = re.compile(r"Office\s*\d{2}\s*,\s*Office\d{2}(?P<token>[A-Za-z0-9]+?VL_KMS_Client)(?:_AE)?\b")


def is_evaluation(edition_id: str | None) -> bool:
    """True for evaluation editions: their EditionID ends with ``Eval`` (e.g. ``ServerDatacenterEval``).

    Source: "Run ``DISM /online /Get-CurrentEdition`` and make sure the current edition name
    includes ``Eval``" (windowsserverdocs upgrade-conversion-options.md@025e1382). Evaluation
    editions have no GVLK; they must be converted to a retail edition first.
    """
    return bool(edition_id) and str(edition_id).strip().lower().endswith("eval")


def _is_server(product_type: int | None, caption: str | None) -> bool | None:
    if product_type in (PRODUCT_TYPE_DOMAIN_CONTROLLER, PRODUCT_TYPE_SERVER):
        return True
    if product_type == PRODUCT_TYPE_WORKSTATION:
        return False
    if caption:
        # "Server" is the same word in every UI language Microsoft ships Windows Server in.
        return bool(re.search(r"\bserver\b", caption, re.IGNORECASE))
    return None


def _narrow(rows: Iterable[ClientKey], build: int | None, server: bool | None) -> list[ClientKey]:
    out = list(rows)
    if build is not None:
        out = [r for r in out if r.matches_build(build)]
    if server is not None:
        out = [r for r in out if (r.kind == "server") == server]
    return out


def _by_caption(rows: list[ClientKey], caption: str) -> ClientKey | None:
    words = set(re.findall(r"[a-z0-9]+", caption.lower()))
    best: list[tuple[int, ClientKey]] = []
    for row in rows:
        needed = set(re.findall(r"[a-z0-9]+", f"{row.product} {row.edition}".lower()))
        if needed and needed <= words:
            best.append((len(needed), row))
    if not best:
        return None
    best.sort(key=lambda item: -item[0])
    if len(best) > 1 and best[0][0] == best[1][0]:
        return None
    return best[0][1]


@functools.lru_cache(maxsize=512)
def identify_windows(
    *,
    caption: str | None,
    edition_id: str | None,
    build: int | None,
    sku: int | None,
    product_type: int | None,
) -> ClientKey | None:
    """The catalog row (and so the GVLK) of the Windows edition a host runs, or ``None``.

    Order of evidence: EditionID + build, then OperatingSystemSKU + build, then (last resort, only
    when the host reported neither EditionID nor SKU) English words of Caption + build. An EditionID
    or SKU that is not in the catalog gives ``None``: a caption such as "Windows 11 Enterprise
    multi-session" (EditionID ``ServerRdsh``) or "Windows 11 IoT Enterprise" (``IoTEnterprise``)
    contains the words of another edition, and that edition's GVLK would change the edition
    (:func:`unidentified_reason` says why). ProductType separates server from client rows.
    Evaluation editions (EditionID ending in ``Eval`` or an evaluation SKU) give ``None``: they have
    no GVLK. The catalog is immutable, so answers are kept (a fleet asks the same few questions many
    times).
    """
    if is_evaluation(edition_id) or (sku is not None and sku in EVALUATION_SKUS):
        return None
    if sku == 0:
        sku = None  # PRODUCT_UNDEFINED: no SKU reported
    server = _is_server(product_type, caption)
    rows = client_keys("windows")
    evidence: list[list[ClientKey]] = []
    if edition_id:
        wanted = edition_id.strip().lower()
        evidence.append(
            _narrow((r for r in rows if wanted in {e.lower() for e in r.edition_ids}), build, server)
        )
    if sku is not None:
        evidence.append(_narrow((r for r in rows if sku in r.skus), build, server))
    for found in evidence:
        if len(found) == 1:
            return found[0]
        if found:
            # Several rows fit (should not happen with a build): only an English caption can decide.
            return _by_caption(found, caption) if caption else None
    if caption and not evidence:
        return _by_caption(_narrow(rows, build, server), caption)
    return None


def unidentified_reason(
    *,
    caption: str | None,
    edition_id: str | None,
    build: int | None,
    sku: int | None,
) -> str:
    """Why :func:`identify_windows` found no KMS client key for what the host reported."""
    if is_evaluation(edition_id) or (sku is not None and sku in EVALUATION_SKUS):
        return "an evaluation edition has no KMS client key; convert it to a retail edition first"
    reported = [f"EditionID {edition_id}"] if edition_id else []
    if sku:
        reported.append(f"SKU {sku}")
    if reported:
        return (
            f"{' / '.join(reported)} (build {build}) is not in Microsoft's KMS client setup key tables: "
            "no KMS client key; the caption is not used to guess one, because another edition's GVLK "
            "would change the edition"
        )
    if caption:
        return f"no EditionID or SKU reported and the caption {caption!r} names no catalog edition"
    return "the host reported no EditionID, SKU or caption"


def os_product(build: int, product_type: int | None) -> str:
    """The Windows version for a build, e.g. ``Windows Server 2022``, ``Windows 11``, ``Windows 10``.

    Server builds shared with a Semi-Annual Channel release (17763) name the LTSC release.
    Without a ProductType an ambiguous build (9600: Windows 8.1 or Server 2012 R2) names both.
    """
    products = load("windows_keys")["products"]
    server = _is_server(product_type, None)
    names: dict[str, str] = {}
    for name, info in products.items():
        kind = "server" if info["kind"] == "server" else "client"
        if kind in names or (server is not None and (kind == "server") != server):
            continue
        if any(low <= build <= high for low, high in info["builds"]):
            names[kind] = name
    if not names:
        if server is True:
            return f"Windows Server (build {build})"
        return f"Windows (build {build})"
    if len(names) == 2:
        return f"{names['client']} or {names['server']}"
    return next(iter(names.values()))


def identify_office(name: str, description: str) -> ClientKey | None:
    """The Office catalog row for a SoftwareLicensingProduct Name/Description, or ``None``.

    Only KMS client licenses qualify: the Description must contain ``VOLUME_KMSCLIENT``
    ([TSKMS]: "VOLUME_KMSCLIENT indicates that the system installed the KMS Client Setup Key, or
    GVLK"). The product comes from the license token in the Name, e.g.
    ``ProPlus2021VL_KMS_Client`` in ``Office 21, Office21ProPlus2021VL_KMS_Client_AE edition``.
    """
    if "VOLUME_KMSCLIENT" not in (description or "").upper():
        return None
    rows = client_keys("office")
    by_token = {t.lower(): r for r in rows for t in r.license_tokens}
    match = _OFFICE_NAME.search(name or "")
    if match:
        return by_token.get(match.group("token").lower())
    # Name without the "Office NN, OfficeNN" prefix: look for a whole token.
    for token, row in sorted(by_token.items(), key=lambda item: -len(item[0])):
        if re.search(rf"(?<![a-z]){re.escape(token)}(?:_ae)?\b", (name or "").lower()):
            return row
    return None
