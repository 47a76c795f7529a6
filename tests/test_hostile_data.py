"""One host's data can't break the outputs: strings a host reports (computer name, edition, KMS host,
product names, error messages) with any Unicode — lone surrogates, escape sequences, rich markup,
formula prefixes — go through the facts boundary once and then every output stays valid: terminal
(no escape or control sequences, no markup), JSON, CSV, JUnit, HTML, journal. Report files are
replaced whole, so a failed write never destroys an old report.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from kmsadmin.errors import HostError, RemoteScriptError
from kmsadmin.facts import parse_facts
from kmsadmin.fleet.journal import Journal, read_journal
from kmsadmin.fleet.runner import HostReport, summarize_state
from kmsadmin.report import build_report, render_html, write_csv, write_html, write_json, write_junit
from kmsadmin.report.terminal import render_summary, summary_text
from kmsadmin.values import MAX_HOST_TEXT, ScriptResult, clean_text

FACTS = json.loads((Path(__file__).parent / "fixtures" / "facts" / "win11-enterprise.json").read_text())
UNSAFE = {chr(c) for c in (*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0))} | {
    "\u200e",
    "\u200f",
    *(chr(c) for c in range(0x202A, 0x202F)),
    *(chr(c) for c in range(0x2066, 0x206A)),
}
#: any code point, lone surrogates and controls included
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=60)
#: what attackers put in names: escapes, OSC hyperlinks, rich markup, formulas, bidi overrides
NASTY = st.sampled_from(
    [
        "\x1b]0;pwned\x07",
        "\x1b]8;;http://evil/\x1b\\click\x1b]8;;\x1b\\",
        "\x1b[2J\x1b[H",
        "\x1b[31mred",
        "\x9b31m",
        "[/]",
        "[bold red]x[/bold red]",
        "[link=http://evil]y[/link]",
        '=HYPERLINK("http://x")',
        "+1+1",
        "\u202egnp.exe",
        "\ud800",
        "\udfff\ud83d",
        "</script><script>alert(1)</script>",
        "]]>",
        "\x00",
    ]
)
HOSTILE = st.lists(st.one_of(ANY_TEXT, NASTY), min_size=1, max_size=4).map("".join)


def _safe(text: str) -> bool:
    return not (set(text) & UNSAFE) and not any("\ud800" <= c <= "\udfff" for c in text)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _facts_output(name: str, edition: str, product: str, kms: str) -> str:
    data = json.loads(json.dumps(FACTS))
    data["computer_name"] = name
    data["os"]["caption"] = edition
    data["os"]["edition_id"] = edition
    data["products"][0]["name"] = product
    data["products"][0]["description"] = product
    data["service"]["kms_machine"] = kms
    # the host's JSON may carry any escaped code point, lone surrogates included
    return json.dumps({"kmsadmin": 1, "step": "facts", "changed": False, "data": data})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=HOSTILE, edition=HOSTILE, product=HOSTILE, kms=HOSTILE)
def test_facts_parser_cleans_every_string_once(name: str, edition: str, product: str, kms: str) -> None:
    result = ScriptResult(host="pc1", step="facts", stdout=_facts_output(name, edition, product, kms))
    facts = parse_facts(result)
    state = summarize_state(facts)
    for text in _strings(facts.model_dump()) + _strings(state):
        assert _safe(text), repr(text)
        text.encode("utf-8")  # always encodable
    dirty = sum(clean_text(v) != v for v in (name, edition, product, kms))
    assert (state.get("host_text_cleaned", 0) > 0) == (dirty > 0)


@settings(max_examples=100, deadline=None)
@given(garbage=st.text(st.characters(exclude_categories=()), max_size=300))
def test_facts_parser_fails_only_as_a_host_error(garbage: str) -> None:
    for stdout in (garbage, "{" + garbage, json.dumps({"step": "facts", "data": garbage})):
        try:
            parse_facts(ScriptResult(host="pc1", step="facts", stdout=stdout))
        except RemoteScriptError as exc:
            assert exc.host == "pc1"
            assert _safe(str(exc))


def test_over_long_values_are_cut_and_flagged() -> None:
    result = ScriptResult(host="pc1", step="facts", stdout=_facts_output("N" * 100_000, "E", "P", "k"))
    state = summarize_state(parse_facts(result))
    assert len(state["computer_name"]) == MAX_HOST_TEXT and state["computer_name"].endswith("…[cut]")
    assert state["host_text_cleaned"] == 1


def _report(texts: list[str]) -> dict[str, Any]:
    hosts = []
    for i, text in enumerate(texts):
        error = HostError(f"pc{i}", "activate", text, hresult="0xC004F074", meaning=text, remediation=text)
        report = HostReport(host=f"pc{i}", operation="convert-client", status="failed")
        report.error = {**error.to_dict(), "kind": "HostError"}
        result = ScriptResult(host=f"pc{i}", step="facts", stdout=_facts_output(text, text, text, text))
        report.state = summarize_state(parse_facts(result))
        hosts.append({**report.to_dict(), "role": "client"})
    hosts.append(
        {"host": "ok1", "operation": "status", "status": "ok", "changes": 0, "steps": [], "state": {}}
    )
    return dict(
        build_report("rollout", hosts, started="2024-01-01T00:00:00Z", finished="2024-01-01T00:00:01Z")
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(HOSTILE, min_size=1, max_size=3))
def test_every_report_writer_stays_valid(texts: list[str], tmp_path: Path) -> None:
    report = _report(texts)
    document = json.loads(write_json(report, tmp_path / "r.json").read_bytes().decode("utf-8"))
    assert document["summary"]["failed"] == len(texts)
    rows = list(
        csv.DictReader(io.StringIO(write_csv(report, tmp_path / "r.csv").read_bytes().decode("utf-8")))
    )
    assert len(rows) == len(texts) + 1
    for row in rows:
        for cell in row.values():
            assert not cell or cell[0] not in "=+-@\t\r" or cell.startswith("'"), cell
    ET.fromstring(write_junit(report, tmp_path / "r.xml").read_bytes())  # noqa: S314 - our own output
    page = write_html(report, tmp_path / "r.html").read_bytes().decode("utf-8")
    assert "Content-Security-Policy" in page
    for text in texts:
        assert "<script>alert" not in page
        assert "\x1b" not in page, text
    # terminal: rich renders hosts' text literally; no escape or control sequence reaches the screen
    buffer = io.StringIO()
    Console(file=buffer, force_terminal=False, color_system=None, width=200).print(render_summary(report))
    plain = summary_text(report)
    for out in (buffer.getvalue(), plain):
        assert _safe(out.replace("\n", "").replace("\t", "")), repr(out)


def test_rich_markup_in_a_host_string_is_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kmsadmin.cli.remote import _print_one

    report = HostReport(host="pc[/]1", operation="convert-client", status="failed")
    result = ScriptResult(
        host="pc1", step="facts", stdout=_facts_output("[/]", "[bold]E[/]", "[/x]", "[link=a]k")
    )
    report.state = summarize_state(parse_facts(result))
    report.error = {**HostError("pc[/]1", "activate", "bad [/] thing", remediation="[red]fix[/]").to_dict()}
    _print_one(report, check=False)
    out = capsys.readouterr()
    assert "pc[/]1" in out.out and "bad [/] thing" in out.err and "[red]fix[/]" in out.err


def test_a_failed_write_keeps_the_old_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = _report(["x"])
    path = write_html(report, tmp_path / "r.html")
    before = path.read_bytes()
    from kmsadmin.report import htmlpage

    def broken(_: object) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(htmlpage, "render_html", broken)
    with pytest.raises(RuntimeError):
        htmlpage.write_html(report, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"], "no temporary file left behind"
    assert render_html(report)  # the real renderer is untouched


def test_journal_keeps_any_string_and_never_raises(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with Journal(path) as journal:
        journal.start({"run_id": "r1"})
        journal.write(
            {
                "type": "host",
                "run_id": "r1",
                "play": "p",
                "host": "pc1",
                "status": "ok",
                "note": "a\ud800b\x1b",
            }
        )
    raw = path.read_bytes()
    raw.decode("utf-8")  # valid UTF-8 on disk
    state = read_journal(path)
    assert state.torn == 0 and state.entries[0]["note"] == "a\ud800b\x1b"


# --- the inventory reader with arbitrary YAML ---------------------------------------------------------
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(st.characters(exclude_categories=()), max_size=20),
)
_KEYS = st.one_of(
    st.sampled_from(
        [
            "all",
            "hosts",
            "children",
            "vars",
            "ansible_host",
            "ansible_port",
            "ansible_user",
            "ansible_password",
            "ansible_connection",
            "ansible_psrp_auth",
            "ansible_psrp_protocol",
            "ansible_psrp_message_encryption",
            "kmsadmin_role",
            "h1",
            "g1",
        ]
    ),
    st.text(max_size=10),
)
_TREES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=_TREES, raw=st.text(st.characters(exclude_categories=()), max_size=200))
def test_the_inventory_reader_fails_only_with_its_own_errors(document: Any, raw: str, tmp_path: Path) -> None:
    import yaml

    from kmsadmin.errors import KmsAdminError
    from kmsadmin.fleet.inventory import load_inventory
    from kmsadmin.transports import build_options

    path = tmp_path / "inv.yml"
    for text in (yaml.safe_dump(document, allow_unicode=True), raw):
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            inventory = load_inventory(path)
        except KmsAdminError:
            continue
        # what loads is usable: host names are strings and their vars a mapping
        assert all(isinstance(h, str) and isinstance(inventory.vars_for(h), dict) for h in inventory.hosts)
        for host in list(inventory.hosts)[:5]:
            with contextlib.suppress(KmsAdminError):
                build_options(host, hostvars=inventory.vars_for(host), env={})
