"""Ansible's INI inventory format, read as ansible-core 2.19's ``ini`` plugin reads it.

::

    # comments start with '#' or ';'
    jump01                                  # before any section: ungrouped
    [kms_hosts]
    kms01 ansible_host=10.0.0.5 ansible_port=5986
    kms02:5985 ansible_password='P@ss w0rd'  # host:port sets ansible_port
    pc[001:050].corp.example                 # ranges
    [clients:children]
    kms_hosts
    [clients:vars]
    ansible_winrm_transport=['kerberos', 'ntlm']

Host lines are split like a shell line (quotes group words, ``#`` starts a comment). Every value, on
host lines and in ``:vars`` sections, is a Python literal when it parses as one (``5986`` is a
number, ``['a', 'b']`` a list, ``'x y'`` a string) and text otherwise. A ``:children`` or ``:vars``
section naming a group that is never declared is an error, as in Ansible.
"""

from __future__ import annotations

import ast
import re
import shlex
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kmsadmin.fleet.yamlsource import config_error

if TYPE_CHECKING:
    from kmsadmin.fleet.inventory import _Builder

_SECTION_RE = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:[#;].*)?$")
_GROUP_RE = re.compile(r"^([^:\]\s]+)\s*(?:[#;].*)?$")
_MAX_LINE = 64 * 1024


def parse_value(text: str) -> Any:
    """An INI value: a Python literal when it is one (tuples and sets as lists), else the text."""
    if len(text) > _MAX_LINE:
        return text
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    return _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if value is ...:
        return "..."
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def split_port(pattern: str) -> tuple[str, int | None]:
    """``host:5986`` / ``[v6]:5986`` / ``pc[01:10]:5986`` → (host pattern, port); IPv6 without brackets keeps its colons."""
    bracketed = re.match(r"^\[([^\]]+)\](?::(\d+))?$", pattern)
    if (
        bracketed
        and ":" in bracketed.group(1)
        and not re.match(r"^[A-Za-z0-9]*:[A-Za-z0-9]*(?::\d+)?$", bracketed.group(1))
    ):
        return bracketed.group(1), int(bracketed.group(2)) if bracketed.group(2) else None
    depth = 0
    colons: list[int] = []
    for index, char in enumerate(pattern):
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        elif char == ":" and depth == 0:
            colons.append(index)
    if len(colons) == 1:
        head, tail = pattern[: colons[0]], pattern[colons[0] + 1 :]
        if tail.isdigit() and len(tail) <= 5:
            return head, int(tail)
    return pattern, None


def read_ini(b: _Builder, path: Path, text: str) -> None:
    """Add the groups, hosts and vars of INI ``text`` (read from ``path``) to ``b``."""
    from kmsadmin.fleet.inventory import MAX_HOSTS, expand_host_range

    pending: dict[str, tuple[int, str, list[str]]] = {}  # group → (line, state, parents)
    group_name = "ungrouped"
    state = "hosts"
    declared: set[str] = set()
    lineno = 0

    def fail_at(line: int) -> Any:
        return lambda message: config_error(path, line, message)

    def origin(line: int) -> str:
        return f"{path.name} line {line}"

    def add_pending_children(name: str) -> None:
        _, _, parents = pending.pop(name)
        for parent in parents:
            b.link(b.groups[parent], b.groups[name], fail_at(lineno))
            if parent in pending and pending[parent][1] == "children":
                add_pending_children(parent)

    for lineno, raw_line in enumerate(text.splitlines(), start=1):
        if len(raw_line) > _MAX_LINE:
            raise config_error(path, lineno, f"the line is longer than {_MAX_LINE} characters")
        line = raw_line.strip()
        if not line or line[0] in "#;":
            continue
        section = _SECTION_RE.match(line)
        if section:
            group_name, state = section.group(1), section.group(2) or "hosts"
            if state not in ("hosts", "children", "vars"):
                raise config_error(path, lineno, f"section [{group_name}:{state}] has unknown type: {state}")
            if group_name not in b.groups or group_name not in declared:
                if group_name not in b.groups and state == "vars" and group_name not in pending:
                    pending[group_name] = (lineno, state, [])
                b.group(group_name, fail_at(lineno), origin(lineno))
                declared.add(group_name)
            if group_name in pending and state != "vars":
                if pending[group_name][1] == "children":
                    add_pending_children(group_name)
                elif pending[group_name][1] == "vars":
                    del pending[group_name]
            continue
        if line.startswith("[") and line.endswith("]"):
            raise config_error(
                path,
                lineno,
                f"invalid section entry {line!r}: no spaces or other invalid characters in a section",
            )
        if state == "hosts":
            _host_line(b, path, lineno, line, group_name, MAX_HOSTS, expand_host_range)
        elif state == "vars":
            key, sep, value = line.partition("=")
            if not sep:
                raise config_error(path, lineno, f"[{group_name}:vars]: expected key=value, got {line!r}")
            name = key.strip()
            if not name.isidentifier():
                raise config_error(path, lineno, f"[{group_name}:vars]: invalid variable name {name!r}")
            b.groups[group_name].vars[name] = parse_value(value.strip())
        else:
            match = _GROUP_RE.match(line)
            if match is None:
                raise config_error(
                    path, lineno, f"[{group_name}:children]: expected a group name, got {line!r}"
                )
            child = match.group(1)
            if child not in b.groups:
                if child not in pending:
                    pending[child] = (lineno, "children", [group_name])
                else:
                    pending[child][2].append(group_name)
            else:
                b.link(b.groups[group_name], b.group(child, fail_at(lineno)), fail_at(lineno))
    for name, (where, kind, parents) in pending.items():
        if kind == "vars":
            raise config_error(
                path, where, f"section [{name}:vars] is for group {name!r}, which is never declared"
            )
        raise config_error(path, where, f"section [{parents[-1]}:children] includes undefined group {name!r}")


def _host_line(
    b: _Builder, path: Path, lineno: int, line: str, group_name: str, max_hosts: int, expand: Any
) -> None:
    try:
        # shlex is slow; a line without quotes, escapes or comments splits the same on whitespace
        tokens = line.split() if not any(c in line for c in "'\"\\#") else shlex.split(line, comments=True)
    except ValueError as exc:
        raise config_error(path, lineno, f"cannot parse the host line: {exc}") from None
    if not tokens:
        return
    pattern, port = split_port(tokens[0])
    if tokens[0].strip().endswith(":") and port is None:
        raise config_error(path, lineno, f"invalid host pattern {tokens[0]!r}: it ends in ':'")
    if pattern.strip() == "---":
        raise config_error(path, lineno, "invalid host pattern '---' (is this a YAML file?)")
    variables: dict[str, Any] = {}
    if port is not None:
        variables["ansible_port"] = port
    for token in tokens[1:]:
        key, sep, value = token.partition("=")
        if not sep:
            raise config_error(path, lineno, f"expected key=value host variable assignment, got {token!r}")
        if not key.isidentifier():
            raise config_error(path, lineno, f"invalid variable name {key!r}")
        variables[key] = parse_value(value)
    try:
        names = expand(pattern, limit=max_hosts - len(b.host_order))
    except ValueError as exc:
        raise config_error(path, lineno, str(exc)) from None
    group = b.groups[group_name]

    def fail(message: str) -> Any:
        return config_error(path, lineno, message)

    for host in names:
        b.add_host(group, host, variables, f"{path.name} line {lineno}", fail)
