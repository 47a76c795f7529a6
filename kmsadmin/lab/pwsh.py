"""PowerShell grammar helpers (tree-sitter-pwsh) for template tests and the lab's script engine.

No PowerShell runs anywhere in kmsadmin's tests, so rendered scripts are checked syntactically:

* :func:`parse` builds a tree-sitter tree (the Language and Parser are created once, lazily, so that
  importing this module costs nothing until a script is parsed);
* :func:`syntax_errors` lists the ERROR and MISSING nodes with their line numbers;
* :func:`read_params` reads the values back out of a script's parameters block (templates/README.md,
  rule 3) and refuses the block unless every right-hand side is exactly one single-quoted literal.

The grammar knows only the ASCII apostrophe as a single-quote delimiter, while PowerShell also ends a
single-quoted string at ‘ ’ ‚ ‛. :func:`read_params` therefore un-quotes every literal with
:func:`kmsadmin.render.ps_unquote`, which refuses an undoubled Unicode quote inside the literal.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

from kmsadmin.render import ps_unquote

if TYPE_CHECKING:
    from tree_sitter import Node, Parser, Tree

PARAMS_MARKER = "# kmsadmin-params"
BODY_MARKER = "# kmsadmin-body"

_PARAM_NAME_RE = re.compile(r"^\$(?P<name>[A-Z][A-Za-z0-9]*)$")
_CAMEL_BOUNDARY_RE = re.compile(r"(?<!^)(?=[A-Z])")


@lru_cache(maxsize=1)
def _parser() -> Parser:
    import tree_sitter
    import tree_sitter_pwsh

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_pwsh.language()))


def parse(script: str) -> Tree:
    """Parse a PowerShell script (text as rendered, any line endings)."""
    return _parser().parse(script.encode("utf-8"))


def _walk(node: Node) -> list[Node]:
    out: list[Node] = []
    stack = [node]
    while stack:
        current = stack.pop()
        out.append(current)
        stack.extend(reversed(current.children))
    return out


def syntax_errors(script: str) -> list[str]:
    """Every ERROR / MISSING node as ``"line N: ..."`` (1-based lines); empty when the parse is clean."""
    return list(_syntax_errors(script))


#: A fleet runs the same few scripts on many hosts (the facts script is byte-identical everywhere), so
#: the lab parses each distinct script text once; a parse is several ms of the lab's CPU per script.
_SCRIPT_CACHE = 256


@lru_cache(maxsize=_SCRIPT_CACHE)
def _syntax_errors(script: str) -> tuple[str, ...]:
    tree = parse(script)
    if not tree.root_node.has_error:
        return ()
    found: list[str] = []
    for node in _walk(tree.root_node):
        line = node.start_point[0] + 1
        if node.is_missing:
            found.append(f"line {line}: missing {node.type}")
        elif node.is_error:
            snippet = _text(node).splitlines()[0][:60] if node.end_byte > node.start_byte else ""
            found.append(f"line {line}: syntax error near {snippet!r}")
    return tuple(found) or ("syntax error (no ERROR node located)",)


def _text(node: Node) -> str:
    raw = node.text
    return raw.decode("utf-8") if raw is not None else ""


def snake_case(pascal: str) -> str:
    """``ProductKey`` → ``product_key`` (the inverse of the templates' naming rule)."""
    return _CAMEL_BOUNDARY_RE.sub("_", pascal).lower()


def _only_named_child(node: Node | None, expected: str) -> Node:
    if node is None or node.named_child_count != 1:
        raise ValueError(f"expected exactly one {expected}")
    child = node.named_children[0]
    if child.type != expected:
        raise ValueError(f"expected {expected}, found {child.type}")
    return child


def _statements(root: Node) -> list[Node]:
    """Top-level nodes in document order, with ``statement_list`` containers flattened."""
    out: list[Node] = []
    for child in root.named_children:
        if child.type == "statement_list":
            out.extend(child.named_children)
        else:
            out.append(child)
    return out


def _literal_value(statement: Node) -> tuple[str, str]:
    """``(PascalName, value)`` of one ``$Name = '<literal>'`` statement, or ValueError."""
    assignment = _only_named_child(statement, "assignment_expression")
    left = assignment.named_children[0]
    operator = next((c for c in assignment.named_children if c.type == "assignment_operator"), None)
    value = assignment.child_by_field_name("value")
    if operator is None or _text(operator) != "=":
        raise ValueError("parameters must be plain '=' assignments")
    if left.type != "left_assignment_expression":
        raise ValueError("unexpected assignment target")
    variable = _only_named_child(_only_named_child(left, "unary_expression"), "variable")
    match = _PARAM_NAME_RE.match(_text(variable))
    if not match:
        raise ValueError(f"parameter variable {_text(variable)!r} is not a plain PascalCase name")
    if value is None or value.type != "assignment_value":
        raise ValueError(f"${match['name']}: right-hand side is not a single value")
    chain = _only_named_child(value, "pipeline_chain")
    literal = _only_named_child(_only_named_child(chain, "unary_expression"), "string_literal")
    chars = _only_named_child(literal, "verbatim_string_characters")
    if chars.start_byte != literal.start_byte or chars.end_byte != literal.end_byte:
        raise ValueError(f"${match['name']}: literal has extra text")
    return match["name"], ps_unquote(_text(chars))


def read_params(script: str) -> dict[str, str]:
    """The parameters block as ``{snake_name: value}``.

    Raises ValueError when the script does not parse, the markers are missing or repeated, or any
    statement between them is not ``$Name = '<one single-quoted literal>'``.
    """
    return dict(_read_params(script))


@lru_cache(maxsize=_SCRIPT_CACHE)
def _read_params(script: str) -> tuple[tuple[str, str], ...]:
    tree = parse(script)
    if tree.root_node.has_error:
        raise ValueError("script has syntax errors: " + "; ".join(syntax_errors(script)))
    statements = _statements(tree.root_node)
    markers: dict[str, list[int]] = {PARAMS_MARKER: [], BODY_MARKER: []}
    for index, node in enumerate(statements):
        if node.type == "comment" and _text(node).rstrip() in markers:
            markers[_text(node).rstrip()].append(index)
    if len(markers[PARAMS_MARKER]) != 1 or len(markers[BODY_MARKER]) != 1:
        raise ValueError("script needs exactly one '# kmsadmin-params' and one '# kmsadmin-body' line")
    start, end = markers[PARAMS_MARKER][0], markers[BODY_MARKER][0]
    if end < start:
        raise ValueError("'# kmsadmin-body' comes before '# kmsadmin-params'")
    params: dict[str, str] = {}
    for node in statements[start + 1 : end]:
        if node.type != "pipeline":
            raise ValueError(
                f"line {node.start_point[0] + 1}: only assignments belong in the parameters block"
            )
        name, value = _literal_value(node)
        key = snake_case(name)
        if key in params:
            raise ValueError(f"parameter ${name} assigned twice")
        params[key] = value
    return tuple(params.items())
