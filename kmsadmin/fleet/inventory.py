"""Ansible inventories, read as ansible-core reads them.

An admin who already runs Ansible against Windows keeps one inventory for both tools, so this module
reads every shape Ansible does (ansible-core 2.19, the default plugins):

* sources: one or several ``-i`` paths, else ``ANSIBLE_INVENTORY`` (comma-separated); a directory is
  every file in it (sorted, recursively; hidden files, ``group_vars``/``host_vars`` and Ansible's ignored
  extensions skipped); ``host1,host2,`` is a host list;
* an executable file starting with ``#!`` is a dynamic inventory script: run with ``--list`` (and
  ``--host NAME`` per host when its output has no ``_meta``), bounded in time and output size;
* YAML (``.yml``, ``.yaml``, ``.json`` or no extension): top-level groups (normally just ``all``), each
  with ``hosts`` (a mapping of host name to its vars), ``vars`` and ``children``; the JSON printed by
  ``ansible-inventory --list`` (``_meta.hostvars``) too;
* INI (:mod:`kmsadmin.fleet.ini`) for any other file, or a file without extension that is not YAML;
* host ranges (``pc[001:250].corp.example``, ``[a:f]``, strides) expand as in Ansible;
* ``group_vars/`` and ``host_vars/`` beside each source (in a directory source: inside it), and beside
  the playbook (``playbook_dir``): files named after the group/host (no extension, ``.yml``, ``.yaml``,
  ``.json``) or directories of such files;
* Ansible Vault (:mod:`kmsadmin.fleet.vault`): ``!vault`` values and vault-encrypted files;
* variable precedence as ansible-core's ``VariableManager`` (hash_behaviour=replace): inventory vars of
  every group of the host (``all`` first, then by depth, ``ansible_group_priority``, name), then
  ``group_vars/all`` of the inventory sources, of the playbook, then ``group_vars/<group>`` of the
  sources, of the playbook, then the host's inventory vars, ``host_vars/`` of the sources, of the
  playbook;
* ``{{ ... }}`` in values resolved per host (:class:`kmsadmin.render.VarResolver`, sandboxed).

kmsadmin's own vars (``kmsadmin_role``, ``kmsadmin_fqdn``...) and the connection vars (``ansible_host``,
``ansible_port``...) are checked at load time. Every problem is an :class:`InventoryError` (exit 2) naming
the file, the line or the host and variable, before any host is contacted. Sizes and counts are bounded
at every boundary (files, values, hosts, ranges, script output).
"""

from __future__ import annotations

import json
import os
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from kmsadmin import validate
from kmsadmin.errors import EXIT_USAGE, ConfigError, InvalidInput
from kmsadmin.fleet.vault import VaultSecret, VaultSecrets, decrypt_with, is_vaulted
from kmsadmin.fleet.yamlsource import (
    VAULT_TAG,
    Document,
    Vaulted,
    config_error,
    decode_text,
    parse_text,
    read_bounded,
)

GROUP_KEYS = frozenset({"hosts", "vars", "children"})
_GROUP_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_RANGE_RE = re.compile(r"\[([A-Za-z0-9]*):([A-Za-z0-9]*)(?::(\d+))?\]")

#: hosts in one inventory (all sources, ranges expanded)
MAX_HOSTS = 100_000
#: groups in one inventory
MAX_GROUPS = 20_000
#: files read for one inventory (sources and vars files)
MAX_FILES = 20_000
#: a dynamic inventory script's output, per call
MAX_SCRIPT_OUTPUT = 64 * 1024 * 1024
#: seconds a dynamic inventory script may run, per call
SCRIPT_TIMEOUT = 60.0
#: extensions Ansible skips in inventory directories (REJECT_EXTS + .orig, .cfg, .retry)
IGNORED_EXTENSIONS = (
    ".pyc",
    ".pyo",
    ".swp",
    ".bak",
    "~",
    ".rpm",
    ".md",
    ".txt",
    ".rst",
    ".orig",
    ".cfg",
    ".retry",
)
_IGNORED_NAMES = frozenset({"host_vars", "group_vars", "vars_plugins"})
#: extensions of YAML inventories and of vars files ('' = none)
YAML_EXTENSIONS = ("", ".yml", ".yaml", ".json")
#: connection vars whose value must be a host address / a TCP port
_ADDRESS_VARS = ("ansible_host",)
_PORT_VARS = ("ansible_port", "ansible_winrm_port", "ansible_psrp_port")


class InventoryError(ConfigError):
    """An inventory that cannot be used as given: bad input, exit 2, no host contacted."""

    exit_code = EXIT_USAGE


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
    #: where the group was first declared (for messages)
    origin: str = ""
    #: ``hosts`` as a set, for membership tests on fleet-sized groups
    host_set: set[str] = field(default_factory=set)


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
    #: every source read (files, directories, scripts), in order
    sources: tuple[Path, ...] = ()
    #: every host list given (``-i 'host1,host2,'``), in order; not in ``sources`` (no path)
    host_lists: tuple[str, ...] = ()
    #: ``ansible_*`` variables some host sets that kmsadmin does not use (warned about once per run)
    unsupported: tuple[str, ...] = ()
    #: every text read from Ansible Vault (a ``!vault`` value, a string of a vault-encrypted file) →
    #: the vault secret that decrypted it (an export writes such values vaulted again)
    vaulted: Mapping[str, VaultSecret] = field(default_factory=dict, repr=False, compare=False)
    #: host → its vars whose value was templated (``{{ ... }}``), when any text came from Vault
    templated: Mapping[str, frozenset[str]] = field(default_factory=dict, repr=False, compare=False)
    #: every ``group_vars/`` and ``host_vars/`` file read (beside a source or the playbook), in order
    vars_files: tuple[Path, ...] = ()

    def described(self) -> str:
        """Every source as given, for messages and reports: the paths, then each host list (a long one
        shortened); '' when there is none."""
        lists = [f"host list {h if len(h) <= 60 else h[:57] + '...'!r}" for h in self.host_lists]
        return ", ".join([*(str(p) for p in self.sources), *lists])

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


Fail = Callable[[str], ConfigError]


class _Builder:
    """Collects groups and hosts from every source, then merges vars in Ansible's order."""

    def __init__(self, secrets: VaultSecrets) -> None:
        self.secrets = secrets
        self.groups: dict[str, _Group] = {"all": _Group("all"), "ungrouped": _Group("ungrouped")}
        self.host_order: list[str] = []
        self.host_vars: dict[str, dict[str, Any]] = {}
        self.host_origin: dict[str, str] = {}
        self.files_read = 0
        #: directories whose group_vars/ and host_vars/ apply (one per -i source), then the playbook's
        self.vars_dirs: list[Path] = []
        self.play_dir: Path | None = None
        self.priorities: dict[str, int] = {}
        #: texts read from Vault → the secret that decrypted them
        self.vaulted: dict[str, VaultSecret] = {}
        #: group_vars/ and host_vars/ files read
        self.vars_files: list[Path] = []

    def remember_vaulted(self, value: Any, secret: VaultSecret) -> None:
        """Note every (non-empty) string in ``value`` as read from Vault with ``secret``."""
        for text in _strings(value):
            if text:
                self.vaulted.setdefault(text, secret)

    def count_file(self, path: Path) -> None:
        self.files_read += 1
        if self.files_read > MAX_FILES:
            raise InventoryError(f"{path}: more than {MAX_FILES} inventory and vars files: refused")

    def group(self, name: str, fail: Fail, origin: str = "") -> _Group:
        if not _GROUP_NAME_RE.match(name):
            raise fail(f"invalid group name {name!r}: use letters, digits, '_' and '-'")
        if name not in self.groups:
            if len(self.groups) >= MAX_GROUPS:
                raise fail(f"more than {MAX_GROUPS} groups: refused")
            self.groups[name] = _Group(name, origin=origin)
        return self.groups[name]

    def add_host(self, group: _Group, host: str, hvars: Mapping[str, Any], origin: str, fail: Fail) -> None:
        if host not in self.host_vars:
            if len(self.host_order) >= MAX_HOSTS:
                raise fail(f"more than {MAX_HOSTS} hosts: refused")
            if not host or "\x00" in host or len(host) > 1024:
                raise fail(f"invalid host name {host[:80]!r}")
            self.host_order.append(host)
            self.host_vars[host] = {}
            self.host_origin[host] = origin
        self.host_vars[host].update(hvars)
        if host not in group.host_set:
            group.host_set.add(host)
            group.hosts.append(host)

    def link(self, parent: _Group, child: _Group, fail: Fail) -> None:
        if child.name == "all":
            raise fail(f"group '{parent.name}': 'all' cannot be a child group")
        if child.name not in parent.children:
            parent.children.append(child.name)
        if parent.name not in child.parents:
            child.parents.append(parent.name)

    # ------------------------------------------------------------------------------------------ merge
    def build(self, sources: tuple[Path, ...], host_lists: tuple[str, ...] = ()) -> Inventory:
        self._check_cycles()
        # like Ansible, ansible_group_priority set in the inventory orders groups and is no variable
        for group in self.groups.values():
            if "ansible_group_priority" in group.vars:
                self.priorities[group.name] = self._priority(group, group.vars.pop("ansible_group_priority"))
        for name, group in self.groups.items():
            if name != "all" and not group.parents:
                self.link(self.groups["all"], group, InventoryError)
        depth = self._depths()
        grouped = {h for g in self.groups.values() if g.name not in ("all", "ungrouped") for h in g.hosts}
        self.groups["ungrouped"].hosts = [h for h in self.host_order if h not in grouped]
        members = {name: self._members(name) for name in self.groups}
        members["all"] = tuple(self.host_order)
        host_groups: dict[str, list[_Group]] = {host: [] for host in self.host_order}
        for name, hosts in members.items():
            for host in hosts:
                host_groups[host].append(self.groups[name])
        files = _VarsFiles(self)
        merged: dict[str, dict[str, Any]] = {}
        for host in self.host_order:
            own = sorted(
                host_groups[host], key=lambda g: (depth[g.name], self.priorities.get(g.name, 1), g.name)
            )
            values: dict[str, Any] = {}
            for group in own:  # groups_inventory
                values.update(group.vars)
            for base in self.vars_dirs:  # all_plugins_inventory
                values.update(files.vars(base, "group_vars", "all"))
            if self.play_dir is not None:  # all_plugins_play
                values.update(files.vars(self.play_dir, "group_vars", "all"))
            others = [g.name for g in own if g.name != "all"]
            for base in self.vars_dirs:  # groups_plugins_inventory
                for name in others:
                    values.update(files.vars(base, "group_vars", name))
            if self.play_dir is not None:  # groups_plugins_play
                for name in others:
                    values.update(files.vars(self.play_dir, "group_vars", name))
            values.update(self.host_vars[host])
            for base in self.vars_dirs:
                values.update(files.vars(base, "host_vars", host))
            if self.play_dir is not None:
                values.update(files.vars(self.play_dir, "host_vars", host))
            merged[host] = values
        memberships = {
            host: tuple(g.name for g in groups if g.name not in ("all", "ungrouped"))
            for host, groups in host_groups.items()
        }
        templated: dict[str, frozenset[str]] = {}
        if self.vaulted:
            from kmsadmin.render import is_template

            for host, values in merged.items():
                names = frozenset(k for k, v in values.items() if _has_template(v, is_template))
                if names:
                    templated[host] = names
        merged = self._templated(merged, members, memberships)
        unsupported: set[str] = set()
        for host, values in merged.items():
            self._check_connection_vars(host, values)
            self._check_kmsadmin_vars(host, values)
            unsupported.update(k for k in values if isinstance(k, str) and _is_unsupported(k))
        return Inventory(
            path=sources[0] if sources else None,
            hosts=merged,
            groups=members,
            children={name: tuple(g.children) for name, g in self.groups.items()},
            memberships=memberships,
            sources=sources,
            host_lists=host_lists,
            unsupported=tuple(sorted(unsupported)),
            vaulted=self.vaulted,
            templated=templated,
            vars_files=tuple(self.vars_files),
        )

    def _templated(
        self,
        merged: dict[str, dict[str, Any]],
        members: Mapping[str, tuple[str, ...]],
        memberships: Mapping[str, tuple[str, ...]],
    ) -> dict[str, dict[str, Any]]:
        from kmsadmin.render import VarResolver, is_template

        if not any(_has_template(v, is_template) for values in merged.values() for v in values.values()):
            return merged
        resolver = VarResolver(merged, members, memberships)
        try:
            return {host: resolver.resolved(host) for host in merged}
        except ConfigError as exc:
            raise InventoryError(str(exc)) from None

    def _priority(self, group: _Group, value: Any) -> int:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise InventoryError(
                f"{group.origin or 'inventory'}: group '{group.name}': ansible_group_priority must be a number"
            ) from None

    def _check_cycles(self) -> None:
        state: dict[str, int] = {}
        for root in list(self.groups):
            if state.get(root):
                continue
            # iterative depth-first walk: a deep chain of children cannot exhaust the stack
            stack: list[tuple[str, int]] = [(root, 0)]
            trail: list[str] = []
            while stack:
                name, index = stack.pop()
                if index == 0:
                    if state.get(name) == 1:
                        cycle = " → ".join([*trail[trail.index(name) :], name])
                        origin = self.groups[name].origin
                        raise InventoryError(f"{origin + ': ' if origin else ''}group cycle: {cycle}")
                    if state.get(name) == 2:
                        continue
                    state[name] = 1
                    trail.append(name)
                children = self.groups[name].children
                if index < len(children):
                    stack.append((name, index + 1))
                    stack.append((children[index], 0))
                else:
                    state[name] = 2
                    trail.pop()

    def _depths(self) -> dict[str, int]:
        """Longest distance from ``all``, as Ansible orders group vars (groups in dependency order)."""
        depth: dict[str, int] = {"all": 0}
        order: list[str] = []
        seen: set[str] = set()
        for root in self.groups:
            stack: list[tuple[str, bool]] = [(root, False)]
            while stack:
                name, expanded = stack.pop()
                if expanded:
                    order.append(name)
                    continue
                if name in seen:
                    continue
                seen.add(name)
                stack.append((name, True))
                stack.extend((p, False) for p in self.groups[name].parents if p not in seen)
        for name in order:
            parents = self.groups[name].parents
            depth[name] = 0 if not parents else 1 + max(depth[p] for p in parents)
        return depth

    def _members(self, name: str) -> tuple[str, ...]:
        """Own hosts first, then each child's, depth first; no duplicates."""
        seen: dict[str, None] = {}
        stack = [name]
        visited: set[str] = set()
        while stack:
            current = stack.pop()
            if current in visited:
                continue
            visited.add(current)
            for host in self.groups[current].hosts:
                seen.setdefault(host, None)
            stack.extend(reversed(self.groups[current].children))
        return tuple(seen)

    def _where(self, host: str) -> str:
        origin = self.host_origin.get(host)
        return f"{origin}: " if origin else ""

    def _check_connection_vars(self, host: str, values: Mapping[str, Any]) -> None:
        for var in _ADDRESS_VARS:
            if var in values and values[var] is not None:
                value = values[var]
                if not isinstance(value, str):
                    raise InventoryError(
                        f"{self._where(host)}host '{host}': {var} must be a host name or address, "
                        f"not a {type(value).__name__}"
                    )
                if not value.strip() or len(value) > 253 or any(c.isspace() or ord(c) < 32 for c in value):
                    raise InventoryError(
                        f"{self._where(host)}host '{host}': {var} {value[:80]!r} is not a host name or address"
                    )
        for var in _PORT_VARS:
            if var in values and values[var] is not None:
                value = values[var]
                try:
                    if isinstance(value, bool) or not isinstance(value, int | str):
                        raise InvalidInput("port", repr(value)[:40], "must be a number from 1 to 65535")
                    validate.port(value)
                except InvalidInput as exc:
                    raise InventoryError(
                        f"{self._where(host)}host '{host}': {var}: {exc.why}, not {value!r}"[:300]
                    ) from None

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
            raise InventoryError(f"{self._where(host)}host '{host}': {name}: {message}") from None


def _strings(value: Any) -> list[str]:
    """The strings of a value read from YAML (mapping values and list items, recursively; not keys)."""
    found: list[str] = []
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            found.append(current)
        elif isinstance(current, dict):
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return found


def _has_template(value: Any, is_template: Callable[[Any], bool]) -> bool:
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, list):
        return any(_has_template(v, is_template) for v in value)
    if isinstance(value, dict):
        return any(_has_template(v, is_template) for v in value.values())
    return False


def _is_unsupported(name: str) -> bool:
    from kmsadmin.transports.options import ANSIBLE_VARS

    return name.startswith("ansible_") and name not in ANSIBLE_VARS and name not in _INVENTORY_ONLY_VARS


#: ansible_* vars that shape the inventory itself (not connection settings)
_INVENTORY_ONLY_VARS = frozenset({"ansible_group_priority"})


# ------------------------------------------------------------------------------------------ vars files
class _VarsFiles:
    """``group_vars/`` and ``host_vars/`` files, each read once."""

    def __init__(self, builder: _Builder) -> None:
        self.builder = builder
        self.cache: dict[tuple[Path, str, str], dict[str, Any]] = {}
        self.listing: dict[Path, set[str] | None] = {}

    def _names(self, directory: Path) -> set[str] | None:
        if directory not in self.listing:
            try:
                self.listing[directory] = set(os.listdir(directory)) if directory.is_dir() else None
            except OSError:
                self.listing[directory] = None
        return self.listing[directory]

    def vars(self, base: Path, kind: str, entity: str) -> dict[str, Any]:
        key = (base, kind, entity)
        if key in self.cache:
            return self.cache[key]
        values: dict[str, Any] = {}
        directory = base / kind
        names = self._names(directory)
        if names and "/" not in entity and entity not in (".", ".."):
            for ext in YAML_EXTENSIONS:
                if entity + ext not in names:
                    continue
                found = directory / (entity + ext)
                files = _dir_vars_files(found) if found.is_dir() else [found]
                for path in files:
                    values.update(_read_vars_file(self.builder, path))
                    self.builder.vars_files.append(path)
                break
        self.cache[key] = values
        return values


def _dir_vars_files(directory: Path) -> list[Path]:
    found: list[Path] = []
    for name in sorted(os.listdir(directory)):
        if name.startswith(".") or name.endswith("~"):
            continue
        path = directory / name
        ext = os.path.splitext(name)[1]
        if path.is_dir() and not ext:
            found.extend(_dir_vars_files(path))
        elif path.is_file() and ext in YAML_EXTENSIONS:
            found.append(path)
    return found


def _read_text(builder: _Builder, path: Path, what: str) -> tuple[str, VaultSecret | None]:
    """A file's text, decrypted when the whole file is vault-encrypted (with the secret that did it)."""
    builder.count_file(path)
    text = decode_text(read_bounded(path, what=what), path, what)
    if is_vaulted(text):
        return decrypt_with(text, builder.secrets, f"{path} (a vault-encrypted file)")
    return text, None


def _unvault(builder: _Builder, doc: Document) -> None:
    """Replace every ``!vault`` value of ``doc`` by its plain text, in place; errors name file, line, variable."""

    def plain(item: Vaulted, name: str) -> str:
        where = f"{doc.path.name} line {item.line}: variable '{name}'"
        text, secret = decrypt_with(item.text, builder.secrets, where)
        builder.remember_vaulted(text, secret)
        return text

    def walk(value: Any, name: str) -> Any:
        if isinstance(value, Vaulted):
            return plain(value, name)
        if isinstance(value, dict):
            for key, item in value.items():
                value[key] = walk(item, str(key) if name == "" or isinstance(item, Vaulted) else name)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                value[index] = walk(item, name)
        return value

    if doc.value is None:
        return
    if isinstance(doc.value, Vaulted):
        raise config_error(doc.path, doc.value.line, "the whole document is one !vault value")
    walk(doc.value, "")
    for node_id, value in list(doc.values.items()):
        if isinstance(value, Vaulted):
            doc.values[node_id] = plain(value, "?")


def _read_vars_file(builder: _Builder, path: Path) -> dict[str, Any]:
    text, secret = _read_text(builder, path, "vars file")
    doc = parse_text(text, path, vault=True)
    if VAULT_TAG in text:
        _unvault(builder, doc)
    if secret is not None:
        builder.remember_vaulted(doc.value, secret)
    if doc.value is None:
        return {}
    if not isinstance(doc.value, dict):
        raise doc.error((), "a vars file must be a mapping of variable names to values")
    for key in doc.value:
        if not isinstance(key, str) or not key.isidentifier():
            raise doc.error((str(key),), f"invalid variable name {key!r}")
    return dict(doc.value)


# ------------------------------------------------------------------------------------------ YAML form
def _scalar_name(doc: Document, node: yaml.Node, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or node.value == "":
        raise doc.error_at(node, f"{what} must be a name")
    return str(node.value)


def _fail_at(doc: Document, node: yaml.Node | None) -> Fail:
    return lambda message: doc.error_at(node, message)


def _origin(doc: Document, node: yaml.Node | None) -> str:
    return f"{doc.path.name} line {node.start_mark.line + 1}" if node is not None else doc.path.name


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


def range_size(pattern: str) -> int:
    """How many names a host pattern expands to (without expanding it)."""
    total = 1
    rest = pattern
    while (match := _RANGE_RE.search(rest)) is not None:
        start, end, stride_text = match.group(1), match.group(2), match.group(3)
        stride = max(1, int(stride_text)) if stride_text and len(stride_text) < 12 else 1
        if start.isdigit() and end.isdigit() and len(start) < 20 and len(end) < 20:
            count = max(0, (int(end) - int(start)) // stride + 1)
        else:
            count = 52
        total *= max(count, 1)
        rest = rest[match.end() :]
    return total


def expand_host_range(pattern: str, *, limit: int = MAX_HOSTS) -> list[str]:
    """Expand Ansible host ranges: ``pc[01:03]`` → pc01, pc02, pc03; ``[a:c]``; ``[0:10:5]`` (stride).

    A pattern that would expand to more than ``limit`` names is refused before any is built.
    """
    if range_size(pattern) > limit:
        raise ValueError(f"host range {pattern[:80]!r} expands to more than {limit} hosts: refused")
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
    return [expanded for item in items for expanded in expand_host_range(head + item + tail, limit=limit)]


def _read_yaml_group(
    b: _Builder, doc: Document, name: str, name_node: yaml.Node | None, node: yaml.Node
) -> _Group:
    group = b.group(name, _fail_at(doc, name_node), _origin(doc, name_node))
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
            _read_yaml_hosts(b, doc, group, value_node)
        else:
            _read_yaml_children(b, doc, group, value_node)
    return group


def _read_yaml_hosts(b: _Builder, doc: Document, group: _Group, node: yaml.Node) -> None:
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return
    if not isinstance(node, yaml.MappingNode):
        raise doc.error_at(node, f"group '{group.name}': hosts must be a mapping")
    for key_node, value_node in node.value:
        pattern = _scalar_name(doc, key_node, f"group '{group.name}': a host")
        try:
            names = expand_host_range(pattern, limit=MAX_HOSTS - len(b.host_order))
        except ValueError as exc:
            raise doc.error_at(key_node, f"group '{group.name}': {exc}") from None
        hvars = _vars_from(doc, value_node, f"host '{pattern}'")
        for host in names:
            b.add_host(group, host, hvars, _origin(doc, key_node), _fail_at(doc, key_node))


def _read_yaml_children(b: _Builder, doc: Document, group: _Group, node: yaml.Node) -> None:
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return
    if not isinstance(node, yaml.MappingNode):
        raise doc.error_at(node, f"group '{group.name}': children must be a mapping of groups")
    for key_node, value_node in node.value:
        child_name = _scalar_name(doc, key_node, f"group '{group.name}': a child group")
        child = _read_yaml_group(b, doc, child_name, key_node, value_node)
        b.link(group, child, _fail_at(doc, key_node))


# ------------------------------------------------------------------------------------------ JSON form
def _is_list_form(value: Mapping[str, Any]) -> bool:
    if "_meta" in value:
        return True
    return any(isinstance(v, Mapping) and isinstance(v.get("hosts"), list) for v in value.values())


def _read_list_group(b: _Builder, doc: Document, name: str, raw: Any) -> None:
    fail = _fail_at(doc, None)
    group = b.group(name, lambda m: doc.error((name,), m), doc.path.name)
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
        line = doc.line((name, "hosts", index))
        origin = f"{doc.path.name} line {line}" if line else doc.path.name
        b.add_host(group, host, {}, origin, fail)
    for child_name in children:
        b.link(group, b.group(child_name, lambda m: doc.error((name, "children"), m), doc.path.name), fail)


def _read_list_form(
    b: _Builder, doc: Document, host_vars: Callable[[str], Mapping[str, Any]] | None = None
) -> None:
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
            _read_list_group(b, doc, str(name), raw)
    fail = _fail_at(doc, None)
    for host, hvars in hostvars.items():
        if host not in b.host_vars:
            b.add_host(b.groups["ungrouped"], host, {}, doc.path.name, fail)
        b.host_vars[host].update(hvars)
        line = doc.line(("_meta", "hostvars", host))
        b.host_origin[host] = f"{doc.path.name} line {line}" if line else doc.path.name
    if host_vars is not None and "_meta" not in value:
        asked: set[str] = set()
        for raw in value.values():
            members = raw if isinstance(raw, list) else (raw or {}).get("hosts", [])
            for host in members:
                if host not in asked:
                    asked.add(host)
                    b.host_vars[host].update(host_vars(host))


# ------------------------------------------------------------------------------------------ sources
def _read_yaml_source(b: _Builder, doc: Document, vaulted: bool) -> None:
    if vaulted:
        _unvault(b, doc)
    if doc.node is None or doc.value is None:
        return
    if not isinstance(doc.node, yaml.MappingNode) or not isinstance(doc.value, Mapping):
        raise doc.error((), "an inventory must be a mapping of groups (e.g. 'all:')")
    if "plugin" in doc.value:
        raise doc.error(
            ("plugin",),
            f"inventory plugin {str(doc.value['plugin'])[:80]!r} is not run by kmsadmin: run "
            f"`ansible-inventory -i {doc.path.name} --list --output inv.json` and pass inv.json "
            "(its vaulted values then need --vault-password-file)",
        )
    if _is_list_form(doc.value):
        _read_list_form(b, doc)
        return
    for key_node, value_node in doc.node.value:
        name = _scalar_name(doc, key_node, "a top-level group")
        _read_yaml_group(b, doc, name, key_node, value_node)


def _run_script(path: Path, args: list[str]) -> bytes:
    from kmsadmin.fleet.programs import ProgramFailed, run_program

    command = " ".join([path.name, *args])
    try:
        done = run_program([str(path), *args], timeout=SCRIPT_TIMEOUT, max_output=MAX_SCRIPT_OUTPUT)
    except ProgramFailed as exc:
        raise InventoryError(f"inventory script {path}: `{command}` {exc.reason}") from None
    if done.returncode != 0:
        raise InventoryError(
            f"inventory script {path}: `{command}` exited {done.returncode}"
            + (f"; it said: {done.stderr[-2000:]}" if done.stderr else " without a message on stderr")
        )
    return done.stdout


def _script_json(path: Path, args: list[str]) -> Any:
    output = _run_script(path, args)
    command = " ".join([path.name, *args])
    try:
        return json.loads(output.decode("utf-8"))
    except UnicodeDecodeError:
        raise InventoryError(f"inventory script {path}: `{command}` printed text that is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise InventoryError(
            f"inventory script {path}: `{command}` did not print JSON (line {exc.lineno}: {exc.msg})"
        ) from None
    except RecursionError:
        raise InventoryError(f"inventory script {path}: `{command}` printed JSON nested too deeply") from None


def _read_script(b: _Builder, path: Path) -> None:
    b.count_file(path)
    data = _script_json(path, ["--list"])
    if not isinstance(data, dict):
        raise InventoryError(f"inventory script {path}: `--list` must print a JSON object of groups")
    text = json.dumps(data)
    doc = parse_text(text, path.with_name(path.name + " --list.json"))

    def host_vars(host: str) -> Mapping[str, Any]:
        found = _script_json(path, ["--host", host])
        if not isinstance(found, dict):
            raise InventoryError(f"inventory script {path}: `--host {host}` must print a JSON object of vars")
        return found

    doc = Document(path=path, value=data, node=doc.node, values=doc.values)
    if "_meta" not in data:
        _read_list_form(b, doc, host_vars)
    else:
        _read_list_form(b, doc)


def _is_script(path: Path) -> bool:
    if not os.access(path, os.X_OK):
        return False
    try:
        with path.open("rb") as handle:
            return handle.read(2) == b"#!"
    except OSError:
        return False


def _builder_values(b: _Builder) -> list[Any]:
    """Every var value collected so far (host and group vars)."""
    return [
        *(v for hv in b.host_vars.values() for v in hv.values()),
        *(v for g in b.groups.values() for v in g.vars.values()),
    ]


def _ignored(name: str) -> bool:
    return name.startswith(".") or name in _IGNORED_NAMES or name.endswith(IGNORED_EXTENSIONS)


def _read_file(b: _Builder, path: Path) -> None:
    from kmsadmin.fleet.ini import read_ini

    if path.is_file() and _is_script(path):
        _read_script(b, path)
        return
    text, secret = _read_text(b, path, "inventory")
    ext = path.suffix.lower()
    doc: Document | None = None
    if ext in YAML_EXTENSIONS and ext != "":
        doc = parse_text(text, path, vault=True)
    elif ext == "":
        try:
            doc = parse_text(text, path, vault=True)
        except ConfigError:
            doc = None
        if doc is not None and not isinstance(doc.value, Mapping):
            if doc.value is None and not text.strip("\n\r\t #-"):
                return
            doc = None
    if doc is not None:
        _read_yaml_source(b, doc, VAULT_TAG in text)
        if secret is not None:
            b.remember_vaulted(doc.value, secret)
        return
    if secret is not None:
        # a vault-encrypted INI file: its values, read on their own first, are texts from Vault
        alone = _Builder(b.secrets)
        read_ini(alone, path, text)
        b.remember_vaulted(_builder_values(alone), secret)
    read_ini(b, path, text)


def _read_source(b: _Builder, source: str, top: bool) -> Path | None:
    path = Path(source).expanduser()
    host_list = top and "," in source
    try:
        there = path.exists()
    except OSError as exc:  # a name longer than the file system allows (a long host list), no access...
        if not host_list:
            raise InventoryError(f"cannot read inventory {path}: {exc.strerror or exc}") from None
        there = False
    if not there:
        if host_list:
            fail: Fail = lambda m: InventoryError(f"host list {source[:80]!r}: {m}")  # noqa: E731
            for name in (s.strip() for s in source.split(",")):
                if name:
                    b.add_host(b.groups["ungrouped"], name, {}, "host list", fail)
            return None
        raise InventoryError(f"cannot read inventory {path}: no such file or directory")
    if path.is_dir():
        try:
            entries = sorted(os.listdir(path))
        except OSError as exc:
            raise InventoryError(f"cannot read inventory directory {path}: {exc.strerror or exc}") from None
        for name in entries:
            if not _ignored(name):
                _read_source(b, str(path / name), top=False)
        if top:
            b.vars_dirs.append(path)
        return path
    _read_file(b, path)
    if top:
        b.vars_dirs.append(path.parent)
    return path


def inventory_sources(
    paths: Sequence[str | Path] | str | Path | None, env: Mapping[str, str] | None = None
) -> list[str]:
    """The ``-i`` values, else ``ANSIBLE_INVENTORY`` (comma-separated paths), else an error."""
    if isinstance(paths, str | Path):
        return [str(paths)]
    if paths:
        return [str(p) for p in paths]
    environ = os.environ if env is None else env
    configured = [p.strip() for p in environ.get("ANSIBLE_INVENTORY", "").split(",") if p.strip()]
    if not configured:
        raise InventoryError("no inventory: give -i INVENTORY or set ANSIBLE_INVENTORY")
    return configured


# ------------------------------------------------------------------------------------------ entry point
def load_inventory(
    paths: Sequence[str | Path] | str | Path | None = None,
    *,
    vault: VaultSecrets | None = None,
    playbook_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Inventory:
    """Load one or more inventory sources (files, directories, scripts) into one inventory.

    Every error is an :class:`InventoryError` (exit 2) naming the file and line, or the host and variable.
    """
    b = _Builder(vault or VaultSecrets())
    read: list[Path] = []
    host_lists: list[str] = []
    try:
        for source in inventory_sources(paths, env):
            found = _read_source(b, source, top=True)
            if found is not None:
                read.append(found)
            else:
                host_lists.append(source)
        if playbook_dir is not None and playbook_dir.resolve() not in [d.resolve() for d in b.vars_dirs]:
            b.play_dir = playbook_dir
        inventory = b.build(tuple(read), tuple(host_lists))
    except InventoryError:
        raise
    except (ConfigError, InvalidInput) as exc:
        raise InventoryError(str(exc)) from None
    if not inventory.hosts:
        where = ", ".join(str(p) for p in read) or "the inventory"
        if len(read) == 1 and read[0].is_file():
            raise InventoryError(f"{read[0].name}: the inventory is empty (no hosts)")
        raise InventoryError(f"{where}: the inventory has no hosts")
    return inventory
