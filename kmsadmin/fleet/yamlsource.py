"""YAML (and JSON) documents that remember where each value came from.

Inventories and playbooks are written by hand, so an error must name the file and the line. PyYAML's
safe loader composes a node tree that carries a start mark per node; this module keeps that tree next
to the plain Python value, and turns a location (a path of keys and indexes, as pydantic reports it)
back into a line number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kmsadmin.errors import ConfigError

Loc = Sequence[int | str]


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed file: its value, its node tree (None for an empty file) and its path."""

    path: Path
    value: Any
    node: yaml.Node | None
    #: the value built for each node of the tree (by identity), so parts need not be built again
    values: dict[int, Any] = field(default_factory=dict, repr=False, compare=False)

    def value_of(self, node: yaml.Node) -> Any:
        """The plain value of one node of this document's tree."""
        if id(node) in self.values:
            return self.values[id(node)]
        return construct(node)

    def line(self, loc: Loc = ()) -> int | None:
        """1-based line of the value at ``loc`` (the deepest part of it that exists)."""
        node = find_node(self.node, loc)
        return None if node is None else node.start_mark.line + 1

    def error(self, loc: Loc, message: str) -> ConfigError:
        """A :class:`ConfigError` naming file, line and problem."""
        return config_error(self.path, self.line(loc), message)

    def error_at(self, node: yaml.Node | None, message: str) -> ConfigError:
        """A :class:`ConfigError` at a node's line."""
        return config_error(self.path, None if node is None else node.start_mark.line + 1, message)


def config_error(path: Path, line: int | None, message: str) -> ConfigError:
    """``inventory.yml line 12: group 'clients': hosts must be a mapping``."""
    where = f"{path.name} line {line}" if line is not None else path.name
    return ConfigError(f"{where}: {message}")


def find_node(node: yaml.Node | None, loc: Loc) -> yaml.Node | None:
    """Walk ``loc`` down the node tree; parts that do not exist (e.g. pydantic union tags) are skipped."""
    current = node
    for part in loc:
        if isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    current = value
                    break
        elif (
            isinstance(current, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(current.value)
        ):
            current = current.value[part]
    return current


#: inventory, vars and playbook files larger than this are refused (``/dev/zero`` included)
MAX_FILE_BYTES = 16 * 1024 * 1024
#: values in one document, aliases counted each time they are used (a YAML alias bomb expands
#: to billions); far above any real inventory (100 000 hosts with a few vars each)
MAX_NODES = 2_000_000
VAULT_TAG = "!vault"


def read_bounded(path: Path, *, what: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """A file's bytes, refusing more than ``limit`` (a device or a runaway file never fills memory)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ConfigError(f"{path.name}: the {what} is larger than {limit // (1024 * 1024)} MiB")
    return data


def decode_text(data: bytes, path: Path, what: str) -> str:
    """UTF-8 text (a BOM is dropped); NUL bytes are refused."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path.name}: the {what} is not UTF-8 text") from None
    if "\x00" in text:
        raise ConfigError(f"{path.name}: the {what} contains NUL characters")
    return text


def count_nodes(node: yaml.Node, limit: int = MAX_NODES) -> int:
    """Values in a composed tree with every alias counted where it is used; stops past ``limit``."""
    total = 0
    stack = [node]
    while stack:
        current = stack.pop()
        total += 1
        if total > limit:
            return total
        if isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
        elif isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                stack.append(key)
                stack.append(value)
    return total


@dataclass(frozen=True, slots=True)
class Vaulted:
    """A ``!vault`` value as read, before decryption (never usable as a value)."""

    text: str
    line: int


def _vault_constructor(loader: yaml.BaseLoader, node: yaml.Node) -> Vaulted:
    if not isinstance(node, yaml.ScalarNode):
        raise yaml.constructor.ConstructorError(None, None, "!vault must tag a string", node.start_mark)
    return Vaulted(str(node.value), node.start_mark.line + 1)


def _loader_class(vault: bool) -> Any:
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    if not vault:
        return base

    class VaultLoader(base):  # type: ignore[misc,valid-type]
        pass

    VaultLoader.add_constructor(VAULT_TAG, _vault_constructor)
    return VaultLoader


def parse_text(text: str, path: Path, *, vault: bool = False) -> Document:
    """Parse YAML (or JSON) text read from ``path``; ``vault``: ``!vault`` values become :class:`Vaulted`."""
    if path.suffix.lower() == ".json":
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise config_error(path, exc.lineno, f"invalid JSON: {exc.msg}") from None
        except RecursionError:
            raise config_error(path, None, "invalid JSON: nested too deeply") from None
        # JSON allows tabs as whitespace, YAML does not: they never matter outside strings.
        text = text.replace("\t", " ")
    # libyaml's loader (when PyYAML was built with it) is ~10x faster on fleet-sized inventories
    # and keeps the same node marks, so error messages still carry line numbers.
    loader = _loader_class(vault)(text)
    values: dict[int, Any] = {}
    try:
        node = loader.get_single_node()
        value = None
        if node is not None:
            if count_nodes(node) > MAX_NODES:
                raise config_error(path, None, f"more than {MAX_NODES} values (a YAML alias bomb?): refused")
            # Built once, deeply, keeping each node's value: readers look parts up by node.
            value = loader.construct_object(node, deep=True)
            values = {id(n): v for n, v in loader.constructed_objects.items()}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        problem = exc.problem or "unreadable YAML"
        if VAULT_TAG in problem:
            problem = (
                "vault-encrypted values are not supported here; pass secrets through environment "
                "variables or the inventory (with --vault-password-file)"
            )
        raise config_error(path, line, problem) from None
    except yaml.YAMLError as exc:
        raise config_error(path, None, f"unreadable YAML: {exc}") from None
    except RecursionError:
        raise config_error(path, None, "the YAML is nested too deeply") from None
    finally:
        loader.dispose()
    return Document(path=path, value=value, node=node, values=values)


def load_document(path: Path, *, what: str) -> Document:
    """Read and parse ``path`` (YAML, or JSON which YAML's safe loader also reads).

    Syntax errors, unknown tags (``!vault``), oversized and unreadable files become :class:`ConfigError`.
    """
    return parse_text(decode_text(read_bounded(path, what=what), path, what), path)


def construct(node: yaml.Node) -> Any:
    """The plain value of one node (used for variables read out of a composed tree)."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()
