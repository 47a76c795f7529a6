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

import difflib
import fnmatch
import ipaddress
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kmsadmin.errors import EXIT_USAGE, ConfigError

if TYPE_CHECKING:
    from kmsadmin.fleet.inventory import Inventory

#: seconds a ``~regex`` term may take over all names (a catastrophic pattern such as ``(a+)+$`` is stopped)
REGEX_TIMEOUT = 5.0
MAX_PATTERN = 4096
# Regexes run in a child process that is killed after REGEX_TIMEOUT: Python's re engine backtracks
# and cannot be interrupted, and a host pattern comes from the command line or a playbook.
_REGEX_CHILD = (
    "import json, re, sys\n"
    "d = json.load(sys.stdin)\n"
    "r = re.compile(d['p'])\n"
    "json.dump([i for i, n in enumerate(d['n']) if r.match(n)], sys.stdout)\n"
)


class PatternError(ConfigError):
    """A host pattern that is invalid or matches nothing: bad input, exit 2."""

    exit_code = EXIT_USAGE


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


def _regex_names(names: list[str], term: str) -> list[str]:
    try:
        re.compile(term[1:])
    except (re.error, RecursionError, OverflowError) as exc:
        raise PatternError(f"invalid host pattern {term[:200]!r}: {exc}") from None
    if not names:
        return []
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _REGEX_CHILD],
            input=json.dumps({"p": term[1:], "n": names}).encode("utf-8", "surrogatepass"),
            capture_output=True,
            timeout=REGEX_TIMEOUT,
            check=True,
        )
        indexes = json.loads(done.stdout)
    except subprocess.TimeoutExpired:
        raise PatternError(
            f"host pattern {term[:200]!r} took more than {REGEX_TIMEOUT:.0f} s to match "
            f"{len(names)} names (a regex that backtracks, such as (a+)+$?): simplify it"
        ) from None
    except (subprocess.CalledProcessError, ValueError, OSError) as exc:
        raise PatternError(f"host pattern {term[:200]!r} could not be matched: {exc}") from None
    return [names[i] for i in indexes]


def _match_names(names: list[str], term: str) -> list[str]:
    if term.startswith("~"):
        return _regex_names(names, term)
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
            from kmsadmin.fleet.yamlsource import read_bounded

            text = read_bounded(path, what="host list").decode("utf-8", "replace")
            wanted = {line.strip() for line in text.splitlines() if line.strip()}
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
    if len(pattern) > MAX_PATTERN:
        raise PatternError(f"host pattern is longer than {MAX_PATTERN} characters")
    terms = split_pattern(pattern)
    if not terms:
        raise PatternError("empty host pattern")
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
        raise PatternError(
            f"--limit {limit!r} matches no host in the inventory{close_matches(inventory, limit)}"
        )
    return hosts


def close_matches(inventory: Inventory, pattern: str) -> str:
    """``; did you mean: kms01, kms02?`` for the plain terms of ``pattern`` that match nothing ('' if none)."""
    candidates = [*(g for g in inventory.groups if g != "ungrouped"), *inventory.hosts]
    found: dict[str, None] = {}
    for term in split_pattern(pattern):
        word = term.lstrip("&!")
        if word.startswith(("~", "@")) or any(c in _GLOB_CHARS for c in word):
            continue
        if not _term_hosts(inventory, word):
            for match in difflib.get_close_matches(word, candidates, n=3, cutoff=0.6):
                found.setdefault(match, None)
    return f"; did you mean: {', '.join(found)}?" if found else ""


def select_each(inventory: Inventory, patterns: Sequence[str]) -> list[str]:
    """Hosts of every pattern, in order; a pattern (or one of its plain terms) matching nothing is an error."""
    names: dict[str, None] = {}
    for pattern in patterns:
        selected = select(inventory, pattern)
        missing = [
            t
            for t in split_pattern(pattern)
            if not t.startswith(("&", "!")) and not _term_hosts(inventory, t)
        ]
        if not selected or missing:
            what = f"{', '.join(repr(m) for m in missing)} in " if missing and selected else ""
            sources = inventory.described() or "the inventory"
            raise PatternError(
                f"host pattern {what}{pattern!r} matches no host in {sources}{close_matches(inventory, pattern)}"
            )
        for name in selected:
            names.setdefault(name, None)
    return list(names)
