"""KMS client setup keys (GVLKs): typed rows, look-ups and key checks.

Rows come from ``data/windows_keys.toml`` (Microsoft's "KMS client activation and product keys"
page) and ``data/office_keys.toml`` (Microsoft's Office GVLK page); ``data/not_gvlk.toml`` lists
keys that circulate as "KMS keys" but are not GVLKs (retail, consumer, Microsoft 365).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from kmsadmin.catalog._data import load, source_date, source_text
from kmsadmin.catalog.errors import NotFoundInCatalog
from kmsadmin.errors import CatalogError, InvalidInput
from kmsadmin.validate import product_key
from kmsadmin.values import Secret

Family = Literal["windows", "office"]
Kind = Literal["client", "server", "office"]
FAMILIES: tuple[Family, ...] = ("windows", "office")
NOT_LISTED_NOTE = (
    "not a GVLK (not in Microsoft's KMS client setup key tables; MAK, retail or KMS host keys are not GVLKs)"
)


@dataclass(frozen=True, slots=True)
class ClientKey:
    """One row of Microsoft's GVLK tables: a product edition and its KMS client setup key.

    Identification fields say how a machine reports this edition: ``edition_ids`` (registry
    EditionID), ``skus`` (Win32_OperatingSystem.OperatingSystemSKU) and ``builds`` (inclusive
    BuildNumber ranges) for Windows; ``license_tokens`` (part of SoftwareLicensingProduct.Name)
    for Office. ``unverified`` names identification values not confirmed in a Microsoft doc.
    """

    name: str
    product: str
    edition: str
    gvlk: str
    family: Family
    kind: Kind
    label: str
    version: str
    source: str
    source_date: str
    edition_ids: tuple[str, ...] = ()
    skus: tuple[int, ...] = ()
    builds: tuple[tuple[int, int], ...] = ()
    license_tokens: tuple[str, ...] = ()
    unverified: tuple[str, ...] = ()
    note: str = ""

    @property
    def display(self) -> str:
        """Human name: product and edition, e.g. ``Windows Server 2022 Standard``."""
        return f"{self.product} {self.edition}".strip() if self.family == "windows" else self.product

    def matches_build(self, build: int) -> bool:
        """True if ``build`` lies in one of this edition's build ranges."""
        return any(low <= build <= high for low, high in self.builds)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``kmsadmin keys list --json``)."""
        return {
            "name": self.name,
            "product": self.product,
            "edition": self.edition,
            "gvlk": self.gvlk,
            "family": self.family,
            "kind": self.kind,
            "label": self.label,
            "version": self.version,
            "source": self.source,
            "source_date": self.source_date,
            "edition_ids": list(self.edition_ids),
            "skus": list(self.skus),
            "builds": [list(r) for r in self.builds],
            "license_tokens": list(self.license_tokens),
            "unverified": list(self.unverified),
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class NotGvlkKey:
    """A well-known key that is NOT a GVLK, with the reason (from the seed review)."""

    key: str
    product: str
    seed_label: str
    category: str
    why: str

    @property
    def verdict(self) -> str:
        """Short verdict such as ``retail/consumer key (Office Home & Student 2019)``."""
        kinds = {
            "retail": "retail/consumer key",
            "subscription": "Microsoft 365 subscription key",
            "unofficial-volume": "labelled volume license in the seed, not in Microsoft's GVLK table",
        }
        return f"{kinds.get(self.category, self.category)} ({self.product})"


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """Result of :func:`check_key`.

    ``key`` is the normalised key when it is a GVLK or a publicly listed non-GVLK; any other key
    may be a secret (MAK, retail or KMS host key) and is masked to its last five characters.
    """

    key: str
    is_gvlk: bool
    product: str | None
    edition: str | None
    family: str | None
    matches: tuple[ClientKey, ...]
    note: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``kmsadmin keys check --json``)."""
        return {
            "key": self.key,
            "is_gvlk": self.is_gvlk,
            "product": self.product,
            "edition": self.edition,
            "family": self.family,
            "matches": [m.name for m in self.matches],
            "note": self.note,
        }


def slugify(text: str) -> str:
    """Catalog name of a row: ``Windows Server 2022 Standard`` -> ``windows-server-2022-standard``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _words(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def _windows_rows() -> list[ClientKey]:
    data = load("windows_keys")
    sources, products, profiles = data["sources"], data["products"], data["profiles"]
    rows = []
    for row in data["key"]:
        product = products[row["product"]]
        profile = profiles[row["profile"]]
        unverified = [f"EditionID {e}" for e in profile.get("unverified_edition_ids", [])]
        unverified += [f"OperatingSystemSKU {s}" for s in profile.get("unverified_skus", [])]
        builds = row.get("builds", product["builds"])
        rows.append(
            ClientKey(
                name=slugify(f"{row['product']} {row['edition']}"),
                product=row["product"],
                edition=row["edition"],
                gvlk=row["gvlk"],
                family="windows",
                kind=product["kind"],
                label=row["label"],
                version=row["product"],
                source=source_text(sources, row["source"]),
                source_date=source_date(sources, row["source"]),
                edition_ids=tuple(profile["edition_ids"]),
                skus=tuple(int(s) for s in profile["skus"]),
                builds=tuple((int(lo), int(hi)) for lo, hi in builds),
                unverified=tuple(unverified),
                note=row.get("note", ""),
            )
        )
    return rows


def _office_rows() -> list[ClientKey]:
    data = load("office_keys")
    src = data["source"]
    text = f"[OGVLK] {src['repo']}:{src['path']}@{src['commit'][:8]} ({src['date']})"
    rows = []
    for row in data["key"]:
        tokens = tuple(row["license_tokens"])
        rows.append(
            ClientKey(
                name=slugify(row["product"]),
                product=row["product"],
                edition=row["version"],
                gvlk=row["gvlk"],
                family="office",
                kind="office",
                label=row["product"],
                version=row["version"],
                source=text,
                source_date=src["date"],
                license_tokens=tokens,
                unverified=tuple(f"license token {t}" for t in tokens)
                if row.get("unverified_tokens")
                else (),
            )
        )
    return rows


@cache
def _all_keys() -> tuple[ClientKey, ...]:
    rows = tuple(_windows_rows() + _office_rows())
    seen_names: set[str] = set()
    seen_pairs: set[tuple[str, str]] = set()
    for row in rows:
        product_key(row.gvlk)
        if row.name in seen_names or (row.product, row.edition) in seen_pairs:
            raise CatalogError(f"duplicate catalog row {row.name!r}")
        seen_names.add(row.name)
        seen_pairs.add((row.product, row.edition))
    return rows


@cache
def not_gvlk_keys() -> tuple[NotGvlkKey, ...]:
    """Keys known not to be GVLKs (seed article's retail, consumer and Microsoft 365 keys)."""
    return tuple(
        NotGvlkKey(
            key=row["key"],
            product=row["product"],
            seed_label=row["seed_label"],
            category=row["category"],
            why=row["why"],
        )
        for row in load("not_gvlk")["key"]
    )


def client_keys(family: str | None = None) -> tuple[ClientKey, ...]:
    """All GVLK rows, or those of one family (``windows`` or ``office``)."""
    rows = _all_keys()
    if family is None:
        return rows
    wanted = family.strip().lower()
    if wanted not in FAMILIES:
        raise InvalidInput("family", family, "must be windows or office")
    return tuple(r for r in rows if r.family == wanted)


def find_client_key(name_or_query: str) -> ClientKey:
    """Find one row by slug (``windows-server-2022-standard``) or by product and edition.

    Matching ignores case and punctuation. A query whose words all occur in exactly one row's
    name also matches (``server 2022 standard``). Otherwise :class:`NotFoundInCatalog` lists near
    matches.
    """
    query = _words(name_or_query)
    if not query:
        raise InvalidInput("product", name_or_query, "give a product and edition or a catalog name")
    rows = _all_keys()
    for row in rows:
        if query in {_words(row.name), _words(f"{row.product} {row.edition}"), _words(row.label)}:
            return row
    wanted = set(query.split())
    subset = [r for r in rows if wanted <= set(_words(f"{r.product} {r.edition} {r.name}").split())]
    if len(subset) == 1:
        return subset[0]
    near = [r.name for r in subset[:8]]
    if not near:
        names = {_words(r.display): r.name for r in rows}
        near = [names[n] for n in difflib.get_close_matches(query, list(names), n=5, cutoff=0.5)]
    raise NotFoundInCatalog("client key", name_or_query, near)


def keys_for(gvlk: str) -> tuple[ClientKey, ...]:
    """All rows sharing a GVLK (Windows 11 and Windows 10 editions share keys)."""
    return tuple(r for r in _all_keys() if r.gvlk == gvlk)


def check_key(key: str) -> KeyCheck:
    """Tell whether ``key`` is a GVLK from Microsoft's tables.

    Malformed keys raise :class:`kmsadmin.errors.InvalidInput` (exit 2). A well-formed key that
    is not in the tables gives ``is_gvlk=False`` and a note saying why.
    """
    normal = product_key(key)
    matches = keys_for(normal)
    if matches:
        first = matches[0]
        note = "GVLK (KMS client setup key) from Microsoft's table"
        if len(matches) > 1:
            note += "; shared by " + ", ".join(m.display for m in matches)
        return KeyCheck(normal, True, first.product, first.edition, first.family, matches, note)
    known = next((k for k in not_gvlk_keys() if k.key == normal), None)
    if known is not None:
        return KeyCheck(normal, False, known.product, None, "office", (), f"not a GVLK: {known.verdict}")
    return KeyCheck(
        Secret(normal).masked(),
        False,
        None,
        None,
        None,
        (),
        NOT_LISTED_NOTE,
    )
