"""KMS host key (CSVLK) groups: which host OS can carry a group, which updates it needs there,
and which client editions it activates.

Data: ``data/csvlk.toml``, from Microsoft's "KMS activation planning" page ([PLAN24], tabs
"Windows Server 2025/2022/2019/2016/Windows 10" and "KMS host required updates"), the Office
"Configure a KMS host computer for Office" page ([OHOST]) and, for the retired "Windows Server
2012 R2 for Windows 10" group, the 2018 Server 2016 activation article (seed 000).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from kmsadmin.catalog._data import load, source_text
from kmsadmin.catalog.errors import NotFoundInCatalog
from kmsadmin.catalog.keys import ClientKey, find_client_key

#: [PLAN24] footnote 1, verbatim.
AZURE_EDITION_FOOTNOTE = (
    "Windows Server Datacenter Azure Edition is activated by Azure and can't be configured as a KMS host"
)
#: [PLAN24] on KMS hosts running a client OS.
CLIENT_HOST_RULE = (
    "a KMS host running on a Windows client operating system can only activate computers also "
    "running client operating systems"
)
#: [ITPRO] activate-using-key-management-service-vamt.md.
CLIENT_KEY_ON_SERVER_RULE = "A client KMS key can't be installed into the KMS in Windows Server."
#: Seed 000 (Server-2016-activation.md, 2018), translated.
SERVER_2008_R2_RULE = (
    "Windows Server 2008 R2 can't be updated to support activating clients that run Windows Server 2016 "
    "or later"
)


@dataclass(frozen=True, slots=True)
class RequiredUpdate:
    """An update a KMS host needs before it can carry a CSVLK group ([PLAN24] "KMS host required updates")."""

    kb: str
    title: str
    date: str
    source: str
    later: str = ""
    note: str = ""
    #: "build.revision" of this update ([RELINFO]); "" where only the KB can be matched
    min_build: str = ""
    #: the KB number the planning page prints, where it names another OS's update
    doc_kb: str = ""

    @property
    def label(self) -> str:
        """``KB5034770 (build 20348.2322 or later)`` – what the admin is shown."""
        return f"{self.kb} (build {self.min_build} or later)" if self.min_build else self.kb

    def installed(self, *, build: int | None, ubr: int | None, hotfixes: Iterable[str] | None) -> bool:
        """Whether a host has this update or a later cumulative update.

        The KB in Get-HotFix's list counts; so does, for rows with ``min_build``, the same OS build
        with an update build revision (UBR) at least the update's ([PLAN24] "or later cumulative
        update": later LCUs supersede it, so its KB may not be listed).
        """
        if hotfixes is not None and self.kb.upper() in {h.upper() for h in hotfixes}:
            return True
        if not self.min_build or build is None or ubr is None:
            return False
        base, _, revision = self.min_build.partition(".")
        return build == int(base) and ubr >= int(revision)

    def to_dict(self) -> dict[str, str]:
        """JSON form."""
        return {
            "kb": self.kb,
            "title": self.title,
            "date": self.date,
            "later": self.later,
            "min_build": self.min_build,
            "doc_kb": self.doc_kb,
            "source": self.source,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class ActivatesRule:
    """One "(product, editions)" selector of what a group activates (``*`` = all editions)."""

    product: str
    editions: tuple[str, ...]

    def covers(self, key: ClientKey) -> bool:
        """True if the client key's product and edition are selected."""
        return key.product == self.product and ("*" in self.editions or key.edition in self.editions)


@dataclass(frozen=True, slots=True)
class CsvlkGroup:
    """A KMS host key group (CSVLK "group" in [PLAN24], or an Office KMS host key version)."""

    id: str
    name: str
    family: str
    host_kind: str
    age: int
    source: str
    retired: bool = False
    target: str = ""
    hosts: tuple[str, ...] = ()
    azure_footnote_hosts: tuple[str, ...] = ()
    activates_text: tuple[str, ...] = ()
    activates: tuple[ActivatesRule, ...] = ()
    office_version: str = ""
    min_server: str = ""
    min_client: str = ""
    host_text: str = ""
    volume_license_pack: str = ""
    kms_host_activation_ids: tuple[str, ...] = ()
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "id": self.id,
            "name": self.name,
            "family": self.family,
            "host_kind": self.host_kind,
            "retired": self.retired,
            "hosts": list(self.hosts) if self.family == "windows" else [self.host_text],
            "activates": list(self.activates_text) if self.family == "windows" else [self.office_version],
            "volume_license_pack": self.volume_license_pack or None,
            "kms_host_activation_ids": list(self.kms_host_activation_ids),
            "source": self.source,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class HostVerdict:
    """Whether a host OS can carry a group, why, and which updates it needs first."""

    ok: bool
    reason: str
    required_updates: tuple[RequiredUpdate, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "ok": self.ok,
            "reason": self.reason,
            "required_updates": [u.to_dict() for u in self.required_updates],
        }


@dataclass(frozen=True, slots=True)
class CompatAnswer:
    """Answer of :func:`compat` (``kmsadmin compat``)."""

    host_os: str | None
    group: CsvlkGroup | None
    client: ClientKey | None
    host_ok: bool | None = None
    host_reason: str = ""
    required_updates: tuple[RequiredUpdate, ...] = ()
    activates: tuple[str, ...] = ()
    client_activated: bool | None = None
    client_reason: str = ""
    groups_for_host: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "host_os": self.host_os,
            "csvlk": self.group.name if self.group else None,
            "csvlk_id": self.group.id if self.group else None,
            "client": self.client.display if self.client else None,
            "host_ok": self.host_ok,
            "host_reason": self.host_reason,
            "required_updates": [u.to_dict() for u in self.required_updates],
            "activates": list(self.activates),
            "client_activated": self.client_activated,
            "client_reason": self.client_reason,
            "groups_for_host": list(self.groups_for_host),
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class _UpdateRow:
    host: str
    activates: tuple[str, ...]
    update: RequiredUpdate


@dataclass(frozen=True, slots=True)
class _HostOs:
    name: str
    kind: str
    azure: bool


@cache
def _data() -> tuple[tuple[CsvlkGroup, ...], tuple[_UpdateRow, ...], dict[str, tuple[str, ...]]]:
    raw = load("csvlk")
    sources = raw["sources"]
    groups = []
    for g in raw["group"]:
        groups.append(
            CsvlkGroup(
                id=g["id"],
                name=g["name"],
                family=g["family"],
                host_kind=g["host_kind"],
                age=int(g["age"]),
                source=source_text(sources, g["source"]),
                retired=bool(g.get("retired", False)),
                target=g.get("target", ""),
                hosts=tuple(g.get("hosts", ())),
                azure_footnote_hosts=tuple(g.get("azure_footnote_hosts", ())),
                activates_text=tuple(g.get("activates_text", ())),
                activates=tuple(
                    ActivatesRule(a["product"], tuple(a["editions"])) for a in g.get("activates", ())
                ),
                office_version=g.get("office_version", ""),
                min_server=g.get("min_server", ""),
                min_client=g.get("min_client", ""),
                host_text=g.get("host_text", ""),
                volume_license_pack=g.get("volume_license_pack", ""),
                kms_host_activation_ids=tuple(g.get("kms_host_activation_ids", ())),
                note=g.get("note", ""),
            )
        )
    updates = tuple(
        _UpdateRow(
            host=u["host"],
            activates=tuple(u["activates"]),
            update=RequiredUpdate(
                kb=u["kb"],
                title=u["title"],
                date=u["date"],
                source=source_text(sources, u["source"]),
                later=u.get("later", ""),
                note=u.get("note", ""),
                min_build=u.get("min_build", ""),
                doc_kb=u.get("doc_kb", ""),
            ),
        )
        for u in raw["update"]
    )
    order = {kind: tuple(names) for kind, names in raw["host_os"].items()}
    return tuple(sorted(groups, key=lambda g: (g.family, g.age))), updates, order


def csvlk_groups(family: str | None = None, *, include_retired: bool = True) -> tuple[CsvlkGroup, ...]:
    """All CSVLK groups, oldest first within each family."""
    groups = _data()[0]
    return tuple(
        g
        for g in groups
        if (family is None or g.family == family.lower()) and (include_retired or not g.retired)
    )


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def csvlk_group(query: str) -> CsvlkGroup:
    """Find a group from ``2025``, ``Windows Server 2025``, ``Volume License for Windows Server 2025``,
    ``Windows 10``, ``office 2021``, ``Office LTSC 2024``, a group id, or ``2012 R2 for Windows 10``.
    """
    q = _norm(query)
    q = re.sub(r"^(volume license for|csvlk|kms host key)\s+", "", q).strip()
    groups = csvlk_groups()
    for g in groups:
        if q in {_norm(g.id), _norm(g.name), _norm(g.target), _norm(g.office_version)} - {""}:
            if g.retired and q == _norm(g.target):
                continue
            return g
    if "office" in q:
        year = re.search(r"\b(2016|2019|2021|2024)\b", q)
        for g in groups:
            if year and g.family == "office" and g.age == int(year.group(1)):
                return g
    elif "2012" in q and "10" in q.split():
        return next(g for g in groups if g.id == "windows-server-2012-r2-for-windows-10")
    elif re.search(r"\bwindows 10\b|\bwin10\b", q):
        return next(g for g in groups if g.id == "windows-10")
    else:
        year = re.search(r"\b(2016|2019|2022|2025)\b", q)
        if year:
            return next(g for g in groups if g.id == f"windows-server-{year.group(1)}")
    raise NotFoundInCatalog("CSVLK group", query, _closest_groups(q, groups))


def _closest_groups(q: str, groups: Iterable[CsvlkGroup]) -> list[str]:
    """The group ids nearest to a query that matched none (a typo): the best, and any as near as it.

    When nothing is near, every group is listed.
    """
    import difflib

    scores: dict[str, float] = {}
    all_ids = []
    for g in groups:
        all_ids.append(g.id)
        for form in {_norm(g.id), _norm(g.name), _norm(g.target), _norm(g.office_version)} - {""}:
            score = difflib.SequenceMatcher(None, q, form).ratio()
            scores[g.id] = max(scores.get(g.id, 0.0), score)
    best = max(scores.values(), default=0.0)
    if best < 0.6:
        return all_ids
    return [gid for gid, score in sorted(scores.items(), key=lambda x: -x[1]) if score >= best - 0.02][:3]


def _parse_host(host_os: str, edition_id: str | None = None) -> _HostOs | None:
    q = re.sub(r"(\d{4})r2\b", r"\1 r2", _norm(host_os))
    azure = "azure" in q or (edition_id or "").lower().startswith("serverturbine")
    order = _data()[2]
    candidates: list[tuple[int, str, str]] = []
    for kind, names in order.items():
        for name in names:
            full = _norm(name)
            # Server releases may be named by year alone ("2019", "server 2012 r2"); client
            # releases only by their full name ("Windows 10"), so a stray number can't match.
            forms = [full]
            if kind == "server":
                forms += [full.removeprefix("windows "), full.removeprefix("windows server ")]
            for form in forms:
                if re.search(rf"(^|\s){re.escape(form)}($|\s)", q):
                    candidates.append((len(form), name, kind))
    if not candidates:
        return None
    candidates.sort(key=lambda c: -c[0])
    _, name, kind = candidates[0]
    return _HostOs(name=name, kind=kind, azure=azure)


def _at_least(name: str, minimum: str, kind: str) -> bool:
    order = _data()[2][kind]
    return name in order and minimum in order and order.index(name) >= order.index(minimum)


def required_updates(group: CsvlkGroup, host_name: str) -> tuple[RequiredUpdate, ...]:
    """The minimum update(s) ``host_name`` needs to carry ``group`` ([PLAN24]).

    When several rows apply (Server 2016 host, Server 2019 group: KB4478877 and KB5003638) the
    earliest is the minimum ("or later cumulative update").
    """
    if group.family != "windows" or not group.target or host_name == group.target:
        return ()
    rows = [u.update for u in _data()[1] if u.host == host_name and group.target in u.activates]
    if not rows:
        return ()
    return (min(rows, key=lambda u: u.date or "9999"),)


def _office_verdict(group: CsvlkGroup, host: _HostOs) -> HostVerdict:
    minimum = group.min_server if host.kind == "server" else group.min_client
    if _at_least(host.name, minimum, host.kind):
        return HostVerdict(
            True,
            f"{group.name}: {group.host_text} [OHOST]; install the Office Volume License Pack "
            f"({group.volume_license_pack}) and the Office KMS host key",
        )
    return HostVerdict(False, f"{group.name} needs: {group.host_text} [OHOST]")


def _windows_verdict(group: CsvlkGroup, host: _HostOs) -> HostVerdict:
    if group.host_kind == "server" and host.kind == "client":
        return HostVerdict(
            False,
            f"{host.name} is a client OS: {CLIENT_HOST_RULE} [PLAN24]; the {group.name} group can be "
            f"hosted on {', '.join(group.hosts)}",
        )
    if group.host_kind == "client" and host.kind == "server":
        return HostVerdict(False, f"{CLIENT_KEY_ON_SERVER_RULE} [ITPRO]; use a Windows Server CSVLK group")
    if host.name in group.hosts:
        updates = required_updates(group, host.name)
        reason = f"{host.name} can carry {group.name}"
        if group.retired:
            reason += "; this group is retired (not in current Microsoft docs)"
        if updates:
            reason += "; install first: " + ", ".join(
                f"{u.label} ({u.title}) {u.later}".strip() for u in updates
            )
        return HostVerdict(True, reason, updates)
    if host.name == "Windows Server 2008 R2" and group.age >= 2016:
        return HostVerdict(False, f"{SERVER_2008_R2_RULE} (seed 000)")
    return HostVerdict(
        False, f"{host.name} is not listed as a host for {group.name}; hosts: {', '.join(group.hosts)}"
    )


def host_can_carry(group: CsvlkGroup, host_os: str, *, edition_id: str | None = None) -> HostVerdict:
    """Can a host running ``host_os`` carry ``group``'s KMS host key, and what must it install first?

    ``edition_id`` (e.g. ``ServerTurbine``) flags Datacenter: Azure Edition when the OS name does
    not say so. Azure Edition hosts are refused for every group ([PLAN24] footnote 1).
    """
    host = _parse_host(host_os, edition_id)
    if host is None:
        return HostVerdict(False, f"unknown host OS {host_os!r}")
    if host.azure:
        return HostVerdict(False, f"{host.name} Datacenter: Azure Edition: {AZURE_EDITION_FOOTNOTE} [PLAN24]")
    return _office_verdict(group, host) if group.family == "office" else _windows_verdict(group, host)


def group_activates(group: CsvlkGroup, client_key: ClientKey) -> bool:
    """True if Microsoft's table lists ``client_key``'s edition as activated by ``group``."""
    if group.family != client_key.family:
        return False
    if group.family == "office":
        return client_key.version == group.office_version
    return any(rule.covers(client_key) for rule in group.activates)


def minimal_group_for(
    client_keys: Iterable[ClientKey], *, include_client_groups: bool = False
) -> CsvlkGroup | None:
    """The oldest current group that activates every one of ``client_keys`` (``None`` if none does).

    Windows Server groups only, unless ``include_client_groups``: the "Windows 10" group can only
    be hosted on a client OS. Retired groups are never proposed. E.g. Windows 11 Enterprise LTSC
    2024 needs the Windows Server 2025 group; Windows 11 needs 2022 or later.
    """
    keys = list(client_keys)
    if not keys:
        return None
    families = {k.family for k in keys}
    if len(families) != 1:
        return None
    for group in csvlk_groups(families.pop(), include_retired=False):
        if group.host_kind == "client" and not include_client_groups:
            continue
        if all(group_activates(group, k) for k in keys):
            return group
    return None


def groups_for_host(host_os: str, *, edition_id: str | None = None) -> tuple[CsvlkGroup, ...]:
    """Current groups a host OS can carry (after any required updates)."""
    return tuple(
        g for g in csvlk_groups(include_retired=False) if host_can_carry(g, host_os, edition_id=edition_id).ok
    )


def compat(*, host_os: str | None, csvlk: str | None, client: str | None) -> CompatAnswer:
    """Answer ``kmsadmin compat``: can this host carry this group, with which updates, and does it
    activate this client edition. Missing parts are inferred where possible (no group given: the
    minimal group for the client; only a host given: the groups it can carry).
    """
    notes: list[str] = []
    client_key = find_client_key(client) if client else None
    group = csvlk_group(csvlk) if csvlk else None
    if group is None and client_key is not None:
        host = _parse_host(host_os) if host_os else None
        group = minimal_group_for(
            [client_key], include_client_groups=host is not None and host.kind == "client"
        )
        if group is not None:
            notes.append(f"{group.name} is the oldest current group that activates {client_key.display}")
        else:
            notes.append(f"no current KMS host key group in Microsoft's tables lists {client_key.display}")
    answer: dict[str, Any] = {"host_os": host_os, "group": group, "client": client_key}
    if group is not None:
        answer["activates"] = group.activates_text if group.family == "windows" else (group.office_version,)
        if group.note:
            notes.append(group.note)
    if host_os is not None and group is not None:
        verdict = host_can_carry(group, host_os)
        answer.update(
            host_ok=verdict.ok, host_reason=verdict.reason, required_updates=verdict.required_updates
        )
    elif host_os is not None:
        answer["groups_for_host"] = tuple(g.name for g in groups_for_host(host_os))
    if client_key is not None and group is not None:
        listed = group_activates(group, client_key)
        answer["client_activated"] = listed
        answer["client_reason"] = (
            f"{group.name} activates {client_key.display} [PLAN24]"
            if listed and group.family == "windows"
            else f"{group.name} activates {client_key.display}"
            if listed
            else f"{client_key.display} is not listed among the editions {group.name} activates"
        )
    answer["notes"] = tuple(notes)
    return CompatAnswer(**answer)
