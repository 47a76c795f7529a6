"""Static and render-time guards against raw interpolation, and the PowerShell grammar helper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jinja2 import nodes

from kmsadmin.errors import TemplateError
from kmsadmin.lab import pwsh
from kmsadmin.render import environment, ps_quote

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
ALL_TEMPLATES = sorted(TEMPLATES.glob("ps1/*.ps1.j2")) + sorted(TEMPLATES.glob("cmd/*.cmd.j2"))


def raw_interpolations(source: str, quoting_filter: str) -> list[str]:
    """Every ``{{ ... }}`` expression in a template that is not ``<expr> | quoting_filter``."""
    bad: list[str] = []
    for output in environment().parse(source).find_all(nodes.Output):
        for expr in output.nodes:
            if isinstance(expr, nodes.TemplateData):
                continue
            if not (isinstance(expr, nodes.Filter) and expr.name == quoting_filter):
                bad.append(f"line {expr.lineno}: {type(expr).__name__}")
    return bad


def interpolations(source: str) -> int:
    tree = environment().parse(source)
    return sum(
        1 for o in tree.find_all(nodes.Output) for e in o.nodes if not isinstance(e, nodes.TemplateData)
    )


def test_template_list_is_complete() -> None:
    assert len(ALL_TEMPLATES) >= 28
    assert any(p.name.startswith("_") for p in ALL_TEMPLATES)


@pytest.mark.parametrize("path", ALL_TEMPLATES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_interpolation_is_quoted(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    quoting_filter = "ps" if path.parent.name == "ps1" else "cmd"
    assert raw_interpolations(source, quoting_filter) == []
    if path.name.startswith("_"):
        # partials are shared code only: they interpolate nothing of their own
        assert interpolations(source) == 0
    else:
        # values enter only in the parameters block, one per line
        marker = "# kmsadmin-params" if quoting_filter == "ps" else ":: kmsadmin-params"
        end = "# kmsadmin-body" if quoting_filter == "ps" else ":: kmsadmin-body"
        head, rest = source.split(marker + "\n", 1)
        block, body = rest.split(end + "\n", 1)
        assert "{{" not in head and "{{" not in body
        assert all(line.count("{{") == 1 for line in block.splitlines())


@pytest.mark.parametrize(
    ("source", "quoting_filter"),
    [
        ("{{ x }}", "ps"),
        ("{{ x | lower }}", "ps"),
        ("{{ x | cmd }}", "ps"),
        ("{{ x | ps }}", "cmd"),
        ("{{ x | ps | lower }}", "ps"),
        ("a {% if y %}{{ x }}{% endif %} b", "ps"),
        ("{{ x ~ 'a' }}", "cmd"),
    ],
)
def test_static_check_catches_raw_interpolation(source: str, quoting_filter: str) -> None:
    assert raw_interpolations(source, quoting_filter) != []


def test_static_check_accepts_quoted_interpolation() -> None:
    assert raw_interpolations("$A = {{ x | ps }}\n{% if y == 'z' %}text{% endif %}", "ps") == []


@pytest.mark.parametrize("source", ["{{ x }}", "{{ x | lower }}", "{{ x ~ '' }}", "{{ 'literal' }}"])
def test_finalize_refuses_raw_interpolation_at_render_time(source: str) -> None:
    with pytest.raises(TemplateError):
        environment().from_string(source).render(x="value")


def test_finalize_lets_quoted_values_through() -> None:
    assert environment().from_string("A={{ x | ps }}\nB={{ x | cmd }}").render(x="v") == "A='v'\r\nB=\"v\""


# --- kmsadmin.lab.pwsh ------------------------------------------------------------------------------

PARAMS = "# kmsadmin-step: x/1\r\n# kmsadmin-params\r\n{block}\r\n# kmsadmin-body\r\nWrite-Output 1\r\n"


def test_read_params_round_trips_quoted_values() -> None:
    values = {"ProductKey": "a'b\u2018c", "ApplicationId": "", "KmsHost": "x\r\ny"}
    block = "\r\n".join(f"${k} = {ps_quote(v)}" for k, v in values.items())
    assert pwsh.read_params(PARAMS.format(block=block)) == {
        "product_key": "a'b\u2018c",
        "application_id": "",
        "kms_host": "x\r\ny",
    }


@pytest.mark.parametrize(
    "block",
    [
        '$A = "expandable"',
        "$A = 'a' + 'b'",
        "$A = 5",
        "$A = ('a')",
        "$A = [string]'a'",
        "$A = 'a'.Trim()",
        "$A += 'a'",
        "$A = $B = 'a'",
        "$A = 'a'; Stop-Computer",
        "$A = 'a' # note",
        "Stop-Computer",
        "$A = @'\r\na\r\n'@",
        "$A = 'a\u2018b'",
        "$a = 'lower-case name'",
        "$A = 'a'\r\n$A = 'b'",
        "$A = 'unterminated",
    ],
)
def test_read_params_refuses_anything_but_one_literal(block: str) -> None:
    with pytest.raises(ValueError):
        pwsh.read_params(PARAMS.format(block=block))


@pytest.mark.parametrize(
    "script",
    [
        "# kmsadmin-params\r\n$A = 'a'\r\n",
        "# kmsadmin-body\r\n# kmsadmin-params\r\n",
        "# kmsadmin-params\r\n# kmsadmin-params\r\n# kmsadmin-body\r\n",
    ],
)
def test_read_params_needs_both_markers_in_order(script: str) -> None:
    with pytest.raises(ValueError):
        pwsh.read_params(script)


def test_syntax_errors_reports_lines() -> None:
    assert pwsh.syntax_errors("$a = 1\r\nif ($a) {\r\n") != []
    assert any(e.startswith("line 2") for e in pwsh.syntax_errors("$a = 1\r\n$b = (\r\n"))
    assert pwsh.syntax_errors("try {\r\n    $a = 1\r\n}\r\ncatch {\r\n    $_\r\n}\r\n") == []


def test_parse_is_cached_and_lazy() -> None:
    first: Any = pwsh._parser()
    assert pwsh._parser() is first
    assert pwsh.parse("$a = 'x'").root_node.type == "program"


@pytest.mark.parametrize(
    ("pascal", "snake"), [("ProductKey", "product_key"), ("Force", "force"), ("KmsHost", "kms_host")]
)
def test_snake_case(pascal: str, snake: str) -> None:
    assert pwsh.snake_case(pascal) == snake
