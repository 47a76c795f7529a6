"""Ansible inventories: the YAML form and the JSON printed by ``ansible-inventory --list``.

An admin who already runs Ansible against Windows keeps one inventory for both tools, so this module
reads it the way Ansible does:

* YAML: top-level groups (normally just ``all``), each with ``hosts`` (a mapping of host name to its
  vars), ``vars`` and ``children`` (more groups, to any depth). Host ranges such as
  ``pc[001:250].corp.example`` expand as in Ansible.
* JSON (``ansible-inventory -i ... --list [--export]``): ``_meta.hostvars`` plus groups with
  ``hosts`` (a list), ``children`` (a list) and ``vars``.
* Variable precedence as in Ansible (hash_behaviour=replace): ``all`` < parent group < child group
  < host. Groups of the same depth apply in ``ansible_group_priority`` order, then by name.
* The implicit groups ``all`` and ``ungrouped`` (hosts in no other group).

kmsadmin's own vars (``kmsadmin_role``, ``kmsadmin_fqdn``...) are checked at load time, so a typo'd
FQDN is a configuration error (exit 4) before any host is contacted.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from kmsadmin import validate
from kmsadmin.errors import ConfigError, InvalidInput
from kmsadmin.fleet.yamlsource import Document, config_error, load_document

GROUP_KEYS = frozenset({"hosts", "vars", "children"})
_GROUP_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_RANGE_RE = re.compile(r"\[([A-Za-z0-9]*):([A-Za-z0-9]*)(?::(\d+))?\]")


class KmsadminVars(BaseModel):
    """kmsadmin's inventory vars, checked where they are read (other ``kmsadmin_*`` vars pass)."""

    model_config = ConfigDict(extra="allow")

    kmsadmin_role: str | None = None
    kmsadmin_fqdn: str | None = None
    kmsadmin_lab_host_key_file: str | None = None

    @field_validator("kmsadmin_fqdn")
    @classmethod
    def _fqdn(cls, value: str | None) -> str | None:
        return None if value is None else validate.hostname(value, what="kmsadmin_fqdn")


@dataclass(slots=True)
class _Group:
    name: str
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Inventory:
    """A loaded inventory: hosts with their merged vars, groups with their (recursive) hosts."""

    path: Path | None
    #: host name → merged vars, in inventory order
    hosts: Mapping[str, Mapping[str, Any]]
    #: group name → host names (children resolved, no duplicates), including ``all`` and ``ungrouped``
    groups: Mapping[str, tuple[str, ...]]
    #: group name → direct child group names
    children: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: host name → the groups it belongs to (directly or through children), without all/ungrouped
    memberships: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def select(self, pattern: str) -> list[str]:
        """Hosts matching an Ansible host pattern (``--limit`` / ``hosts:``), in pattern order."""
        from kmsadmin.fleet.limit import select

        return select(self, pattern)

    def group_names(self, host: str) -> tuple[str, ...]:
        """The groups a host belongs to (directly or through children), ``all`` and ``ungrouped`` excluded."""
        if host in self.memberships:
            return self.memberships[host]
        implicit = ("all", "ungrouped")
        return tuple(g for g, members in self.groups.items() if g not in implicit and host in members)

    def vars_for(self, host: str) -> Mapping[str, Any]:
        """A host's merged vars."""
        return self.hosts[host]


class _Builder:
    """Collects groups and hosts from either form, then merges vars in Ansible's order."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.groups: dict[str, _Group] = {"all": _Group("all"), "ungrouped": _Group("ungrouped")}
        self.host_order: list[str] = []
        self.host_vars: dict[str, dict[str, Any]] = {}
        self.host_lines: dict[str, int | None] = {}

    def group(self, name: str, node: yaml.Node | None) -> _Group:
        if not _GROUP_NAME_RE.match(name):
            raise self.doc.error_at(node, f"invalid group name {name!r}: use letters, digits, '_' and '-'")
        if name not in self.groups:
            self.groups[name] = _Group(name)
        return self.groups[name]

    def add_host(self, group: _Group, host: str, hvars: Mapping[str, Any], node: yaml.Node | None) -> None:
        if host not in self.host_vars:
            self.host_order.append(host)
            self.host_vars[host] = {}
            self.host_lines[host] = None if node is None else node.start_mark.line + 1
        self.host_vars[host].update(hvars)
        if host not in group.hosts:
            group.hosts.append(host)

    def link(self, parent: _Group, child: _Group, node: yaml.Node | None) -> None:
        if child.name == "all":
            raise self.doc.error_at(node, f"group '{parent.name}': 'all' cannot be a child group")
        if child.name not in parent.children:
            parent.children.append(child.name)
        if parent.name not in child.parents:
            child.parents.append(parent.name)

    # ------------------------------------------------------------------------------------------ merge
    def build(self) -> Inventory:
        self._check_cycles()
        for name, group in self.groups.items():
            if name != "all" and not group.parents:
                self.link(self.groups["all"], group, None)
        depth = self._depths()
        grouped = {h for g in self.groups.values() if g.name not in ("all", "ungrouped") for h in g.hosts}
        for host in self.host_order:
            if host not in grouped and host not in self.groups["ungrouped"].hosts:
                self.groups["ungrouped"].hosts.append(host)
        members = {name: self._members(name) for name in self.groups}
        members["all"] = tuple(self.host_order)
        host_groups: dict[str, list[_Group]] = {host: [] for host in self.host_order}
        for name, hosts in members.items():
            for host in hosts:
                host_groups[host].append(self.groups[name])
        merged: dict[str, dict[str, Any]] = {}
        for host in self.host_order:
            own = sorted(host_groups[host], key=lambda g: (depth[g.name], self._priority(g), g.name))
            values: dict[str, Any] = {}
            for group in own:
                values.update(group.vars)
            values.update(self.host_vars[host])
            self._check_kmsadmin_vars(host, values)
            merged[host] = values
        return Inventory(
            path=self.doc.path,
            hosts=merged,
            groups=members,
            children={name: tuple(g.children) for name, g in self.groups.items()},
            memberships={
                host: tuple(g.name for g in groups if g.name not in ("all", "ungrouped"))
                for host, groups in host_groups.items()
            },
        )

    def _priority(self, group: _Group) -> int:
        value = group.vars.get("ansible_group_priority", 1)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise config_error(
                self.doc.path, None, f"group '{group.name}': ansible_group_priority must be a number"
            ) from None

    def _check_cycles(self) -> None:
        state: dict[str, int] = {}

        def visit(name: str, trail: list[str]) -> None:
            if state.get(name) == 1:
                cycle = " → ".join([*trail[trail.index(name) :], name])
                raise config_error(self.doc.path, None, f"group cycle: {cycle}")
            if state.get(name) == 2:
                return
            state[name] = 1
            for child in self.groups[name].children:
                visit(child, [*trail, name])
            state[name] = 2

        for name in list(self.groups):
            visit(name, [])

    def _depths(self) -> dict[str, int]:
        """Longest distance from ``all``, as Ansible orders group vars."""
        depth: dict[str, int] = {}

        def resolve(name: str) -> int:
            if name not in depth:
                parents = self.groups[name].parents
                depth[name] = 0 if not parents else 1 + max(resolve(p) for p in parents)
            return depth[name]

        for name in self.groups:
            resolve(name)
        return depth

    def _members(self, name: str) -> tuple[str, ...]:
        """Own hosts first, then each child's, depth first; no duplicates."""
        seen: dict[str, None] = {}
        stack = [name]
        visited: set[str] = set()
        while stack:
            current = stack.pop(0)
            if current in visited:
                continue
            visited.add(current)
            for host in self.groups[current].hosts:
                seen.setdefault(host, None)
            stack[0:0] = self.groups[current].children
        return tuple(seen)

    def _check_kmsadmin_vars(self, host: str, values: Mapping[str, Any]) -> None:
        ours = {k: v for k, v in values.items() if isinstance(k, str) and k.startswith("kmsadmin_")}
        if not ours:
            return
        try:
            KmsadminVars.model_validate(ours)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = ".".join(str(p) for p in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            line = self.host_lines.get(host)
            raise config_error(self.doc.path, line, f"host '{host}': {name}: {message}") from None


# ------------------------------------------------------------------------------------------ YAML form
def _scalar_name(doc: Document, node: yaml.Node, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or node.value == "":
        raise doc.error_at(node, f"{what} must be a name")
    return str(node.value)


def _vars_from(doc: Document, node: yaml.Node, where: str) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise doc.error_at(node, f"{where}: vars must be a mapping")
    values = doc.value_of(node)
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or not str(key_node.value).isidentifier():
            raise doc.error_at(key_node, f"{where}: invalid variable name {key_node.value!r}")
    return dict(values)


def expand_host_range(pattern: str) -> list[str]:
    """Expand Ansible host ranges: ``pc[01:03]`` → pc01, pc02, pc03; ``[a:c]``; ``[0:10:5]`` (stride)."""
    match = _RANGE_RE.search(pattern)
    if match is None:
        return [pattern]
    start, end, stride_text = match.group(1), match.group(2), match.group(3)
    stride = int(stride_text) if stride_text else 1
    head, tail = pattern[: match.start()], pattern[match.end() :]
    if stride < 1:
        raise ValueError(f"host range {match.group(0)!r}: the stride must be at least 1")
    items: list[str]
    if start.isdigit() and end.isdigit():
        width = len(start) if start.startswith("0") and len(start) > 1 else 0
        first, last = int(start), int(end)
        if last < first:
            raise ValueError(f"host range {match.group(0)!r}: the end is before the start")
        items = [str(n).zfill(width) for n in range(first, last + 1, stride)]
    elif len(start) == 1 and len(end) == 1 and start.isalpha() and end.isalpha():
        letters = string.ascii_letters
        first, last = letters.index(start), letters.index(end)
        if last < first:
            raise ValueError(f"host range {match.group(0)!r}: the end is before the start")
        items = [letters[i] for i in range(first, last + 1, stride)]
    else:
        raise ValueError(f"host range {match.group(0)!r}: use [01:50] or [a:f]")
    return [expanded for item in items for expanded in expand_host_range(head + item + tail)]


def _read_yaml_group(b: _Builder, name: str, name_node: yaml.Node | None, node: yaml.Node) -> _Group:
    doc = b.doc
    group = b.group(name, name_node)
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return group
    if not isinstance(node, yaml.MappingNode):
        raise doc.error_at(node, f"group '{name}' must be a mapping with hosts, vars or children")
    for key_node, value_node in node.value:
        key = _scalar_name(doc, key_node, f"group '{name}': a key")
        if key not in GROUP_KEYS:
            raise doc.error_at(
                key_node, f"group '{name}': unknown key '{key}' (expected hosts, vars, children)"
            )
        if key == "vars":
            group.vars.update(_vars_from(doc, value_node, f"group '{name}'"))
        elif key == "hosts":
            _read_yaml_hosts(b, group, value_node)
        else:
            _read_yaml_children(b, group, value_node)
    return group


def _read_yaml_hosts(b: _Builder, group: _Group, node: yaml.Node) -> None:
    doc = b.doc
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return
    if not isinstance(node, yaml.MappingNode):
        raise doc.error_at(node, f"group '{group.name}': hosts must be a mapping")
    for key_node, value_node in node.value:
        pattern = _scalar_name(doc, key_node, f"group '{group.name}': a host")
        try:
            names = expand_host_range(pattern)
        except ValueError as exc:
            raise doc.error_at(key_node, f"group '{group.name}': {exc}") from None
        hvars = _vars_from(doc, value_node, f"host '{pattern}'")
        for host in names:
            b.add_host(group, host, hvars, key_node)


def _read_yaml_children(b: _Builder, group: _Group, node: yaml.Node) -> None:
    doc = b.doc
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return
    if not isinstance(node, yaml.MappingNode):
        raise doc.error_at(node, f"group '{group.name}': children must be a mapping of groups")
    for key_node, value_node in node.value:
        child_name = _scalar_name(doc, key_node, f"group '{group.name}': a child group")
        child = _read_yaml_group(b, child_name, key_node, value_node)
        b.link(group, child, key_node)


# ------------------------------------------------------------------------------------------ JSON form
def _is_list_form(value: Mapping[str, Any]) -> bool:
    if "_meta" in value:
        return True
    return any(isinstance(v, Mapping) and isinstance(v.get("hosts"), list) for v in value.values())


def _read_list_group(b: _Builder, name: str, raw: Any) -> None:
    doc = b.doc
    group = b.group(name, None)
    if raw is None:
        return
    spec = {"hosts": raw} if isinstance(raw, list) else raw  # the oldest script form: just a host list
    if not isinstance(spec, Mapping):
        raise doc.error((name,), f"group '{name}' must be a mapping with hosts, vars or children")
    unknown = sorted(set(spec) - GROUP_KEYS)
    if unknown:
        raise doc.error((name, unknown[0]), f"group '{name}': unknown key '{unknown[0]}'")
    hosts = spec.get("hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise doc.error((name, "hosts"), f"group '{name}': hosts must be a list of host names")
    children = spec.get("children", [])
    if not isinstance(children, list) or not all(isinstance(c, str) for c in children):
        raise doc.error((name, "children"), f"group '{name}': children must be a list of group names")
    gvars = spec.get("vars", {})
    if not isinstance(gvars, Mapping):
        raise doc.error((name, "vars"), f"group '{name}': vars must be a mapping")
    group.vars.update(gvars)
    for index, host in enumerate(hosts):
        b.add_host(group, host, {}, None)
        b.host_lines[host] = doc.line((name, "hosts", index))
    for child_name in children:
        b.link(group, b.group(child_name, None), None)


def _read_list_form(b: _Builder) -> None:
    doc = b.doc
    value: Mapping[str, Any] = doc.value
    meta = value.get("_meta", {})
    if not isinstance(meta, Mapping) or not isinstance(meta.get("hostvars", {}), Mapping):
        raise doc.error(("_meta",), "_meta.hostvars must be a mapping of host name to vars")
    hostvars: Mapping[str, Any] = meta.get("hostvars", {})
    for host, hvars in hostvars.items():
        if not isinstance(hvars, Mapping):
            raise doc.error(("_meta", "hostvars", host), f"host '{host}': vars must be a mapping")
    for name, raw in value.items():
        if name != "_meta":
            _read_list_group(b, str(name), raw)
    for host, hvars in hostvars.items():
        if host not in b.host_vars:
            b.add_host(b.groups["ungrouped"], host, {}, None)
        b.host_vars[host].update(hvars)
        b.host_lines[host] = doc.line(("_meta", "hostvars", host))


# ------------------------------------------------------------------------------------------ entry point
def load_inventory(path: str | Path) -> Inventory:
    """Load an Ansible YAML inventory or ``ansible-inventory --list`` JSON; errors name file and line."""
    file = Path(path)
    doc = load_document(file, what="inventory")
    b = _Builder(doc)
    if doc.node is None or doc.value is None:
        raise config_error(file, None, "the inventory is empty")
    if not isinstance(doc.node, yaml.MappingNode) or not isinstance(doc.value, Mapping):
        raise doc.error((), "an inventory must be a mapping of groups (e.g. 'all:')")
    try:
        if _is_list_form(doc.value):
            _read_list_form(b)
        else:
            for key_node, value_node in doc.node.value:
                name = _scalar_name(doc, key_node, "a top-level group")
                _read_yaml_group(b, name, key_node, value_node)
        inventory = b.build()
    except InvalidInput as exc:
        raise ConfigError(f"{file.name}: {exc}") from None
    if not inventory.hosts:
        raise config_error(file, None, "the inventory has no hosts")
    return inventory
