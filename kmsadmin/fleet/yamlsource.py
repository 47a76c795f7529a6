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


def load_document(path: Path, *, what: str) -> Document:
    """Read and parse ``path`` (YAML, or JSON which YAML's safe loader also reads).

    Syntax errors, unknown tags (``!vault``) and unreadable files become :class:`ConfigError`.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path.name}: the {what} is not UTF-8 text") from None
    if path.suffix.lower() == ".json":
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise config_error(path, exc.lineno, f"invalid JSON: {exc.msg}") from None
        # JSON allows tabs as whitespace, YAML does not: they never matter outside strings.
        text = text.replace("\t", " ")
    # libyaml's loader (when PyYAML was built with it) is ~10x faster on fleet-sized inventories
    # and keeps the same node marks, so error messages still carry line numbers.
    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_class(text)
    values: dict[int, Any] = {}
    try:
        node = loader.get_single_node()
        value = None
        if node is not None:
            # Built once, deeply, keeping each node's value: readers look parts up by node.
            value = loader.construct_object(node, deep=True)
            values = {id(n): v for n, v in loader.constructed_objects.items()}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        problem = exc.problem or "unreadable YAML"
        if "!vault" in problem:
            problem = (
                "vault-encrypted values are not supported; export the inventory with "
                "`ansible-inventory --list` or pass secrets through environment variables"
            )
        raise config_error(path, line, problem) from None
    except yaml.YAMLError as exc:
        raise config_error(path, None, f"unreadable YAML: {exc}") from None
    finally:
        loader.dispose()
    return Document(path=path, value=value, node=node, values=values)


def construct(node: yaml.Node) -> Any:
    """The plain value of one node (used for variables read out of a composed tree)."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()
