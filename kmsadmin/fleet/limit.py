"""Ansible host patterns, as used by a play's ``hosts:`` and by ``--limit``.

Supported forms (Ansible's "Patterns: targeting hosts and groups"):

* ``all`` or ``*``; a host or group name; globs (``web*``, ``pc-0?``, ``lab[12]*``);
* ``~regex`` (matched from the start of the name, as Ansible's ``re.match``);
* ``a:b`` or ``a,b`` union, ``a:&b`` intersection, ``a:!b`` exclusion. Like Ansible, plain terms
  apply first, then intersections, then exclusions, whatever order they were written in; a pattern
  of only ``&``/``!`` terms starts from ``all``;
* subscripts on a group: ``clients[0]``, ``clients[-1]``, ``clients[0:9]`` (both ends included);
* ``@file``: host names, one per line (``--limit @failed.txt``).

A term names groups first; hosts are matched when no group matched or the term is a glob or regex.
The result lists hosts in the order the terms name them (within a group, inventory order), as
Ansible's default ``order: inventory`` does, and never repeats a host.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from pathlib import Path
from typing import TYPE_CHECKING

from kmsadmin.errors import ConfigError

if TYPE_CHECKING:
    from kmsadmin.fleet.inventory import Inventory

_SUBSCRIPT_RE = re.compile(r"^(.+)\[(?:(-?\d+)|(\d*):(\d*))\]$")
_GLOB_CHARS = frozenset("*?[")


def split_pattern(pattern: str) -> list[str]:
    """Split on ``,``; without a comma, on ``:`` outside brackets (an IPv6 address stays whole)."""
    text = pattern.strip()
    if "," in text:
        return [t.strip() for t in text.split(",") if t.strip()]
    try:
        ipaddress.IPv6Address(text.lstrip("&!"))
    except ValueError:
        pass
    else:
        return [text]
    terms: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        if char == ":" and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [t.strip() for t in terms if t.strip()]


def _match_names(names: list[str], term: str) -> list[str]:
    if term.startswith("~"):
        try:
            regex = re.compile(term[1:])
        except re.error as exc:
            raise ConfigError(f"invalid host pattern {term!r}: {exc}") from None
        return [n for n in names if regex.match(n)]
    if any(c in _GLOB_CHARS for c in term):
        return [n for n in names if fnmatch.fnmatchcase(n, term)]
    return [n for n in names if n == term]


def _subscript(hosts: list[str], match: re.Match[str]) -> list[str]:
    single, start, end = match.group(2), match.group(3), match.group(4)
    if single is not None:
        index = int(single)
        return [hosts[index]] if -len(hosts) <= index < len(hosts) else []
    first = int(start) if start else 0
    last = int(end) if end else len(hosts) - 1
    return hosts[first : last + 1]


def _term_hosts(inventory: Inventory, term: str) -> list[str]:
    if term in ("all", "*"):
        return list(inventory.hosts)
    if term.startswith("@"):
        path = Path(term[1:])
        try:
            wanted = {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
        except OSError as exc:
            raise ConfigError(f"cannot read host list {path}: {exc.strerror or exc}") from None
        return [h for h in inventory.hosts if h in wanted]
    sub = _SUBSCRIPT_RE.match(term)
    if sub is not None and not term.startswith("~"):
        base = _term_hosts(inventory, sub.group(1))
        if base:
            return _subscript(base, sub)
    group_names = _match_names(list(inventory.groups), term)
    found: dict[str, None] = {}
    for group in group_names:
        for host in inventory.groups[group]:
            found.setdefault(host, None)
    is_wild = term.startswith("~") or any(c in _GLOB_CHARS for c in term)
    if not group_names or is_wild:
        for host in _match_names(list(inventory.hosts), term):
            found.setdefault(host, None)
    return list(found)


def select(inventory: Inventory, pattern: str) -> list[str]:
    """Hosts of ``inventory`` matching ``pattern``, in the order the pattern names them."""
    terms = split_pattern(pattern)
    if not terms:
        raise ConfigError("empty host pattern")
    plain = [t for t in terms if not t.startswith(("&", "!"))]
    intersect = [t[1:] for t in terms if t.startswith("&")]
    exclude = [t[1:] for t in terms if t.startswith("!")]
    if not plain:
        plain = ["all"]
    chosen: dict[str, None] = {}
    for term in plain:
        for host in _term_hosts(inventory, term):
            chosen.setdefault(host, None)
    keep = set(chosen)
    for term in intersect:
        keep &= set(_term_hosts(inventory, term))
    for term in exclude:
        keep -= set(_term_hosts(inventory, term))
    return [h for h in chosen if h in keep]


def limited_hosts(inventory: Inventory, limit: str | None) -> set[str] | None:
    """The hosts ``--limit`` allows (None: no limit); a limit that matches nothing is an error."""
    if not limit:
        return None
    hosts = set(select(inventory, limit))
    if not hosts:
        raise ConfigError(f"--limit {limit!r} matches no host in the inventory")
    return hosts
