"""Self-contained HTML report: inline CSS, SVG charts drawn here, and one small inline script.

The page loads nothing: a Content-Security-Policy allows only the page's own style block and script
(by SHA-256 hash), so even a mistake in escaping could not run injected script. Every text that comes
from a host (names, messages, editions) goes through :func:`html.escape`.

Every number shown that is also in the JSON report carries ``data-metric="<JSON Pointer>"`` (RFC 6901,
into the report document) and shows exactly the JSON's value, either as the element's text or, for
chart shapes, as its ``data-value`` attribute. Tests compare them one by one.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from kmsadmin import catalog
from kmsadmin.report.document import (
    DAYS_LEFT_BUCKETS,
    NOT_STARTED,
    STATUSES,
    failures,
    stopped_text,
    waiting_hosts,
)
from kmsadmin.report.files import utf8, write_atomic

_STATUS_COLOURS: dict[str, str] = {
    "licensed": "#2e7d32",
    "unlicensed": "#9e9e9e",
    "oobgrace": "#f9a825",
    "ootgrace": "#ef6c00",
    "nongenuinegrace": "#ad1457",
    "notification": "#c62828",
    "extendedgrace": "#1565c0",
    "unknown": "#607d8b",
}
_EXTRA_COLOURS = ("#6a1b9a", "#00838f", "#4e342e", "#827717", "#283593")

_CSS = """
:root { color-scheme: light; --ink: #1d2430; --muted: #5b6472; --line: #d9dee5; --bg: #f5f7fa;
  --ok: #2e7d32; --changed: #1565c0; --pending: #ef6c00; --waiting: #7b1fa2; --failed: #c62828;
  --not_started: #757575; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
  background: var(--bg); }
header { background: #1f3a5f; color: #fff; padding: 18px 28px; }
header .stopped { margin: 6px 0 0; padding: 4px 10px; background: var(--failed); border-radius: 4px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header p { margin: 0; color: #d6e2f0; }
.flag { display: inline-block; margin-left: 8px; padding: 1px 8px; border-radius: 10px; font-size: 12px;
  background: #ffb74d; color: #3e2500; }
main { padding: 20px 28px 40px; max-width: 1400px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px;
  margin: 0 0 18px; }
h2 { margin: 0 0 12px; font-size: 17px; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(112px, 1fr)); gap: 10px;
  background: none; border: 0; padding: 0; }
.tile { background: #fff; border: 1px solid var(--line); border-left: 5px solid #1f3a5f; border-radius: 8px;
  padding: 10px 14px; }
.tile .n { display: block; font-size: 28px; font-weight: 650; }
.tile .l { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.tile.ok { border-left-color: var(--ok); } .tile.changed { border-left-color: var(--changed); }
.tile.pending { border-left-color: var(--pending); } .tile.failed { border-left-color: var(--failed); }
.tile.waiting { border-left-color: var(--waiting); }
.tile.not_started, .tile.skipped { border-left-color: var(--not_started); }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 18px;
  margin: 0 0 18px; }
.charts .wide { grid-column: 1 / -1; }
.edition-table { width: auto; min-width: 50%; }
.charts section { margin: 0; }
svg { display: block; width: 100%; max-width: 640px; height: auto; }
svg text { font: 12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; fill: var(--ink); }
svg .inbar { fill: #fff; font-weight: 600; }
.legend-svg { margin: 8px 0 12px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #eef2f7; font-weight: 600; position: sticky; top: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafbfc; }
th button { all: unset; cursor: pointer; }
th button::after { content: " \\2195"; color: #9aa3af; }
th[aria-sort="ascending"] button::after { content: " \\2191"; color: var(--ink); }
th[aria-sort="descending"] button::after { content: " \\2193"; color: var(--ink); }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; color: #fff; font-size: 12px; }
.badge.ok { background: var(--ok); } .badge.changed { background: var(--changed); }
.badge.pending { background: var(--pending); } .badge.failed { background: var(--failed); }
.badge.waiting { background: var(--waiting); }
.badge.not_started { background: var(--not_started); }
.controls { display: flex; flex-wrap: wrap; gap: 10px; align-items: center; margin: 0 0 10px; }
.controls input, .controls select { font: inherit; padding: 4px 8px; border: 1px solid var(--line);
  border-radius: 5px; }
.muted { color: var(--muted); }
.scroll { max-height: 640px; overflow: auto; }
code { font-family: ui-monospace, "Cascadia Mono", Consolas, monospace; font-size: 12.5px; }
"""

_SCRIPT = """
(function () {
  "use strict";
  var table = document.getElementById("host-table");
  var body = table.tBodies[0];
  var filter = document.getElementById("host-filter");
  var status = document.getElementById("status-filter");
  var shown = document.getElementById("shown-count");
  function apply() {
    var text = filter.value.trim().toLowerCase();
    var wanted = status.value;
    var count = 0;
    Array.prototype.forEach.call(body.rows, function (row) {
      var keep = (!wanted || row.getAttribute("data-status") === wanted) &&
        (!text || row.textContent.toLowerCase().indexOf(text) !== -1);
      row.hidden = !keep;
      if (keep) { count += 1; }
    });
    shown.textContent = String(count);
  }
  function key(row, index) {
    var cell = row.cells[index];
    var sort = cell.getAttribute("data-sort");
    return sort === null ? cell.textContent : sort;
  }
  function sortBy(header, index) {
    var numeric = header.classList.contains("num");
    var descending = header.getAttribute("aria-sort") === "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) {
      cell.removeAttribute("aria-sort");
    });
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, index);
      var y = key(b, index);
      var order;
      if (numeric) {
        order = (x === "" ? -Infinity : Number(x)) - (y === "" ? -Infinity : Number(y));
      } else {
        order = x.localeCompare(y, undefined, {numeric: true, sensitivity: "base"});
      }
      return descending ? -order : order;
    });
    var fragment = document.createDocumentFragment();
    rows.forEach(function (row) { fragment.appendChild(row); });
    body.appendChild(fragment);
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, index) {
    header.querySelector("button").addEventListener("click", function () { sortBy(header, index); });
  });
  filter.addEventListener("input", apply);
  status.addEventListener("change", apply);
  apply();
}());
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def pointer(*parts: str | int) -> str:
    """RFC 6901 JSON Pointer to a value in the report document."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


def _metric(path: str, value: Any, tag: str = "span", css: str = "") -> str:
    klass = f' class="{css}"' if css else ""
    return f'<{tag}{klass} data-metric="{_e(path)}">{_e(value)}</{tag}>'


def _hash(source: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii")


def _colour_key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalpha())


def status_colours(names: Iterable[str]) -> dict[str, str]:
    """A fill colour per license status name (well-known names get fixed colours)."""
    colours: dict[str, str] = {}
    extra = 0
    for name in names:
        fixed = _STATUS_COLOURS.get(_colour_key(name))
        if fixed is None:
            fixed = _EXTRA_COLOURS[extra % len(_EXTRA_COLOURS)]
            extra += 1
        colours[name] = fixed
    return colours


def _status_order(by_edition: Mapping[str, Mapping[str, int]]) -> list[str]:
    names = {name for row in by_edition.values() for name in row}
    rank = {key: index for index, key in enumerate(_STATUS_COLOURS)}
    return sorted(names, key=lambda name: (rank.get(_colour_key(name), len(rank)), name))


def _edition_chart(by_edition: Mapping[str, Mapping[str, int]]) -> str:
    if not by_edition:
        return '<p class="muted">No host reported its edition.</p>'
    order = _status_order(by_edition)
    colours = status_colours(order)
    label_w, bar_w, row_h, top = 230, 300, 26, 6
    widest = max(sum(row.values()) for row in by_edition.values()) or 1
    height = top * 2 + row_h * len(by_edition)
    parts = [
        f'<svg viewBox="0 0 {label_w + bar_w + 40} {height}" role="img" '
        f'aria-label="License status by edition">'
    ]
    for index, (edition, row) in enumerate(by_edition.items()):
        y = top + index * row_h
        label = edition if len(edition) <= 30 else edition[:29] + "\u2026"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 18}" text-anchor="end"><title>{_e(edition)}</title>'
            f"{_e(label)}</text>"
        )
        x = float(label_w)
        for name in order:
            count = row.get(name, 0)
            if not count:
                continue
            width = bar_w * count / widest
            parts.append(
                f'<rect x="{x:.2f}" y="{y + 4}" width="{width:.2f}" height="{row_h - 8}" '
                f'fill="{colours[name]}" '
                f'data-metric="{_e(pointer("summary", "by_edition", edition, name))}" data-value="{count}">'
                f"<title>{_e(edition)}: {_e(name)} {count}</title></rect>"
            )
            if width >= 24:
                parts.append(
                    f'<text class="inbar" x="{x + width / 2:.2f}" y="{y + 18}" text-anchor="middle">'
                    f"{count}</text>"
                )
            x += width
        parts.append(f'<text x="{x + 6:.2f}" y="{y + 18}" class="total">{sum(row.values())}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _legend_svg(names: Sequence[str], colours: Mapping[str, str]) -> str:
    # Legend swatches are drawn in SVG: inline style attributes are not allowed by the page's CSP.
    step = 135
    items = []
    for index, name in enumerate(names):
        x, y = (index % 4) * step, (index // 4) * 20
        items.append(
            f'<rect x="{x}" y="{y + 4}" width="11" height="11" rx="2" fill="{colours[name]}"/>'
            f'<text x="{x + 16}" y="{y + 14}">{_e(name)}</text>'
        )
    rows = (len(names) + 3) // 4
    return (
        f'<svg class="legend-svg" viewBox="0 0 {step * 4} {rows * 20 + 4}" aria-label="Legend">'
        + "".join(items)
        + "</svg>"
    )


def _edition_section(summary: Mapping[str, Any]) -> str:
    by_edition = summary["by_edition"]
    chart = _edition_chart(by_edition)
    order = _status_order(by_edition)
    legend = _legend_svg(order, status_colours(order)) if order else ""
    head = "".join(f'<th class="num">{_e(name)}</th>' for name in order)
    body = []
    for edition, row in by_edition.items():
        cells = "".join(
            f'<td class="num">{_metric(pointer("summary", "by_edition", edition, name), row[name])}</td>'
            if name in row
            else '<td class="num muted">0</td>'
            for name in order
        )
        body.append(f"<tr><td>{_e(edition)}</td>{cells}</tr>")
    table = (
        (
            f'<table class="edition-table"><thead><tr><th>Edition</th>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
        )
        if by_edition
        else ""
    )
    return f'<section class="wide"><h2>License status by edition</h2>{chart}{legend}{table}</section>'


def _kms_section(summary: Mapping[str, Any]) -> str:
    hosts = summary["kms_hosts"]
    if not hosts:
        return '<section><h2>KMS hosts</h2><p class="muted">No KMS host in this run.</p></section>'
    needed = max(int(entry["required_count"]) for entry in hosts)
    counts = [int(entry["current_count"]) for entry in hosts if entry["current_count"] is not None]
    scale = max([needed * 2, *counts, 1])
    label_w, bar_w, row_h, top = 170, 280, 34, 26
    height = top + row_h * len(hosts) + 10
    parts = [
        f'<svg viewBox="0 0 {label_w + bar_w + 110} {height}" role="img" '
        f'aria-label="KMS host current count against the required count">'
    ]
    for index, entry in enumerate(hosts):
        y = top + index * row_h
        current = entry["current_count"]
        met = entry["threshold_met"]
        colour = "#2e7d32" if met else "#c62828" if met is False else "#9e9e9e"
        width = bar_w * (current or 0) / scale
        base = pointer("summary", "kms_hosts", index)
        name = entry["host"] if len(entry["host"]) <= 26 else entry["host"][:25] + "\u2026"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end"><title>{_e(entry["host"])}</title>'
            f"{_e(name)}</text>"
        )
        parts.append(
            f'<rect x="{label_w}" y="{y + 4}" width="{bar_w}" height="{row_h - 12}" fill="#eef2f7"/>'
        )
        if current is not None:
            parts.append(
                f'<rect x="{label_w}" y="{y + 4}" width="{width:.2f}" height="{row_h - 12}" '
                f'fill="{colour}" data-metric="{_e(base + "/current_count")}" data-value="{current}">'
                f"<title>{_e(entry['host'])}: current count {current}</title></rect>"
            )
            value = (
                f'<tspan data-metric="{_e(base + "/current_count")}">{current}</tspan> / '
                f'<tspan data-metric="{_e(base + "/required_count")}">{entry["required_count"]}</tspan>'
            )
        else:
            value = (
                f'unknown / <tspan data-metric="{_e(base + "/required_count")}">'
                f"{entry['required_count']}</tspan>"
            )
        parts.append(f'<text x="{label_w + bar_w + 8}" y="{y + 17}">{value}</text>')
    line_x = label_w + bar_w * needed / scale
    parts.append(
        f'<line x1="{line_x:.2f}" y1="{top - 6}" x2="{line_x:.2f}" y2="{height - 4}" stroke="#1d2430" '
        f'stroke-width="2" stroke-dasharray="5 3"/>'
    )
    parts.append(
        f'<text x="{line_x:.2f}" y="{top - 10}" text-anchor="middle">required '
        f'<tspan data-metric="{_e(pointer("summary", "kms_hosts", 0, "required_count"))}">{needed}'
        f"</tspan></text>"
    )
    parts.append("</svg>")
    met_count = sum(1 for entry in hosts if entry["threshold_met"])
    note = (
        f'<p class="muted">{met_count} of {len(hosts)} KMS hosts have reached the activation threshold. '
        "Clients activate at 25 (Windows client OS) or 5 (servers and Office).</p>"
    )
    return f"<section><h2>KMS hosts: current count</h2>{''.join(parts)}{note}</section>"


def _days_section(summary: Mapping[str, Any]) -> str:
    buckets = summary["days_left"]
    chart_w, chart_h, left, bottom, top = 540, 180, 10, 30, 20
    slot = (chart_w - left) / len(DAYS_LEFT_BUCKETS)
    tallest = max([*buckets.values(), 1])
    parts = [
        f'<svg viewBox="0 0 {chart_w} {chart_h + bottom + top}" role="img" '
        f'aria-label="Histogram of days of activation validity left">'
    ]
    base_y = top + chart_h
    parts.append(f'<line x1="{left}" y1="{base_y}" x2="{chart_w}" y2="{base_y}" stroke="#9aa3af"/>')
    for index, (label, _, _) in enumerate(DAYS_LEFT_BUCKETS):
        count = buckets[label]
        height = (chart_h - 10) * count / tallest
        x = left + index * slot + 8
        colour = "#c62828" if label in ("0", "1-30") else "#ef6c00" if label == "31-90" else "#2e7d32"
        path = _e(pointer("summary", "days_left", label))
        parts.append(
            f'<rect x="{x:.2f}" y="{base_y - height:.2f}" width="{slot - 16:.2f}" height="{height:.2f}" '
            f'fill="{colour}" data-metric="{path}" data-value="{count}"><title>{_e(label)} days: '
            f"{count}</title></rect>"
        )
        parts.append(
            f'<text x="{x + (slot - 16) / 2:.2f}" y="{base_y - height - 5:.2f}" text-anchor="middle" '
            f'data-metric="{path}">{count}</text>'
        )
        parts.append(
            f'<text x="{x + (slot - 16) / 2:.2f}" y="{base_y + 18}" text-anchor="middle">{_e(label)}</text>'
        )
    parts.append("</svg>")
    return (
        "<section><h2>Days of activation validity left</h2>"
        + "".join(parts)
        + '<p class="muted">Hosts that reported their Windows license. KMS activations '
        "last 180 days and renew every 7; 0 means expired or a permanent (non-KMS) activation.</p></section>"
    )


def _failures_section(report: Mapping[str, Any]) -> str:
    rows = failures(report)
    title = f"<h2>Failures ({_metric(pointer('summary', 'failed'), report['summary']['failed'])})</h2>"
    if not rows:
        return f'<section>{title}<p class="muted">No host failed.</p></section>'
    body = "".join(
        f"<tr><td>{_e(row['host'])}</td><td>{_e(row['play'])}</td><td><code>{_e(row['step'])}</code></td>"
        f"<td><code>{_e(row['hresult'])}</code></td><td>{_e(row['meaning'])}</td><td>{_e(row['message'])}</td>"
        f"<td>{_e(row['remediation'])}</td></tr>"
        for row in rows
    )
    return (
        f'<section>{title}<div class="scroll"><table id="failure-table"><thead><tr><th>Host</th><th>Play</th>'
        "<th>Step</th><th>HRESULT</th><th>Meaning</th><th>Message</th><th>Remediation</th></tr></thead>"
        f"<tbody>{body}</tbody></table></div></section>"
    )


def _findings_section(report: Mapping[str, Any]) -> str:
    """Fleet findings of a status report (duplicate CMIDs, wrong KMS host, clock skew, ...)."""
    rows = report.get("findings")
    if rows is None:
        return ""
    title = f"<h2>Findings ({len(rows)})</h2>"
    if not rows:
        return f'<section>{title}<p class="muted">No finding.</p></section>'
    body = "".join(
        f"<tr><td><code>{_e(row.get('kind'))}</code></td><td>{_e(', '.join(row.get('hosts') or []))}</td>"
        f"<td>{_e(row.get('message'))}</td><td>{_e(row.get('fix'))}</td></tr>"
        for row in rows
    )
    return (
        f'<section>{title}<div class="scroll"><table id="finding-table"><thead><tr><th>Finding</th>'
        f"<th>Hosts</th><th>What</th><th>Fix</th></tr></thead><tbody>{body}</tbody></table></div></section>"
    )


def _waiting_section(report: Mapping[str, Any]) -> str:
    rows = waiting_hosts(report)
    if not rows:
        return ""
    count = _metric(pointer("summary", "waiting"), report["summary"]["waiting"])
    body = "".join(
        f"<tr><td>{_e(row['host'])}</td><td>{_e(row['play'])}</td><td>{_e(row['kms_machine'])}</td>"
        f"<td><code>{_e(row['hresult'])}</code></td><td>{_e(row['message'])}</td></tr>"
        for row in rows
    )
    return (
        f"<section><h2>Waiting for the KMS count ({count})</h2>"
        f'<p class="muted">Configured, not activated yet: {_e(catalog.waiting_note())}.</p>'
        '<div class="scroll"><table id="waiting-table"><thead><tr><th>Host</th><th>Play</th>'
        "<th>KMS machine</th><th>HRESULT</th><th>Message</th></tr></thead>"
        f"<tbody>{body}</tbody></table></div></section>"
    )


_HOST_COLUMNS: tuple[tuple[str, bool], ...] = (
    ("Host", False),
    ("Play", False),
    ("Role", False),
    ("Status", False),
    ("Changes", True),
    ("Edition", False),
    ("License status", False),
    ("Days left", True),
    ("KMS machine", False),
    ("Activation", False),
    ("Duration (s)", True),
    ("Failed step", False),
)


_NUM_CLASS = ' class="num"'


def _method(state: Mapping[str, Any]) -> str | None:
    """``ADBA (object name)``, ``KMS (host)``, ``MAK``: the host's activation method."""
    method = state.get("activation_method")
    by = state.get("activated_by")
    return f"{method} ({by})" if method and by else method


def _host_rows(report: Mapping[str, Any]) -> str:
    rows = []
    for entry in report["hosts"]:
        state = entry.get("state") or {}
        error = entry.get("error") or {}
        days = state.get("days_left")
        status = entry["status"]
        rows.append(
            f'<tr data-status="{_e(status)}"><td>{_e(entry["host"])}</td><td>{_e(entry.get("play"))}</td>'
            f'<td>{_e(entry.get("role"))}</td><td data-sort="{_e(status)}"><span class="badge {_e(status)}">'
            f'{_e(status)}</span></td><td class="num">{_e(entry.get("changes", 0))}</td>'
            f"<td>{_e(state.get('edition'))}</td><td>{_e(state.get('license_status_name'))}</td>"
            f'<td class="num">{_e(days)}</td><td>{_e(state.get("kms_machine"))}</td>'
            f"<td>{_e(_method(state))}</td>"
            f'<td class="num">{float(entry.get("duration") or 0):.3f}</td>'
            f"<td>{_e(error.get('step'))}</td></tr>"
        )
    for name in report["not_started"]:
        rows.append(
            f'<tr data-status="{NOT_STARTED}"><td>{_e(name)}</td><td></td><td></td>'
            f'<td data-sort="{NOT_STARTED}"><span class="badge {NOT_STARTED}">not started</span></td>'
            '<td class="num"></td><td></td><td></td><td class="num"></td><td></td><td></td><td class="num"></td>'
            "<td></td></tr>"
        )
    return "".join(rows)


def _hosts_section(report: Mapping[str, Any]) -> str:
    head = "".join(
        f'<th{_NUM_CLASS if numeric else ""}><button type="button">{_e(name)}</button></th>'
        for name, numeric in _HOST_COLUMNS
    )
    options = "".join(
        f'<option value="{status}">{status.replace("_", " ")}</option>' for status in (*STATUSES, NOT_STARTED)
    )
    total = _metric(pointer("summary", "hosts"), report["summary"]["hosts"])
    return (
        '<section><h2>Hosts</h2><div class="controls">'
        '<label>Filter <input id="host-filter" type="search" placeholder="host, edition, step…"></label>'
        f'<label>Status <select id="status-filter"><option value="">all</option>{options}</select></label>'
        f'<span class="muted">showing <span id="shown-count">{report["summary"]["hosts"]}</span> of {total}'
        "</span></div>"
        f'<div class="scroll"><table id="host-table"><thead><tr>{head}</tr></thead>'
        f"<tbody>{_host_rows(report)}</tbody></table></div></section>"
    )


def _skipped_section(report: Mapping[str, Any]) -> str:
    if not report["skipped"]:
        return ""
    rows = "".join(
        f"<tr><td>{_e(item['host'])}</td><td>{_e(item['play'])}</td><td>{_e(item['reason'])}</td></tr>"
        for item in report["skipped"]
    )
    count = _metric(pointer("summary", "skipped"), report["summary"]["skipped"])
    return (
        f'<section><h2>Skipped ({count})</h2><div class="scroll"><table id="skipped-table"><thead><tr>'
        f"<th>Host</th><th>Play</th><th>Reason</th></tr></thead><tbody>{rows}</tbody></table></div></section>"
    )


def _tiles(report: Mapping[str, Any]) -> str:
    summary = report["summary"]
    tiles = [("hosts", "hosts", "")]
    tiles += [(status, status.replace("_", " "), status) for status in (*STATUSES, NOT_STARTED, "skipped")]
    tiles.append(("activated", "activated", "ok"))
    html_tiles = "".join(
        f'<div class="tile {css}">{_metric(pointer("summary", key), summary[key], css="n")}'
        f'<span class="l">{_e(label)}</span></div>'
        for key, label, css in tiles
    )
    html_tiles += (
        f'<div class="tile">{_metric(pointer("duration"), report["duration"], css="n")}'
        '<span class="l">seconds</span></div>'
    )
    return f'<section class="tiles">{html_tiles}</section>'


def local_time(iso: str) -> str:
    """An ISO 8601 instant as this machine's local time with its zone, e.g. ``Sun 6 Dec 2026 20:40:01 CET``."""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    return f"{moment:%a} {moment.day} {moment:%b %Y %H:%M:%S %Z}".strip()


def _time(iso: str) -> str:
    try:
        shown = local_time(iso)
    except ValueError:
        shown = iso
    return f'<time datetime="{_e(iso)}">{_e(shown)}</time>'


def human_duration(seconds: float) -> str:
    """``4.2 s``, ``37 s``, ``1 min 37 s``, ``2 h 5 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _stopped_line(report: Mapping[str, Any]) -> str:
    text = stopped_text(report)
    return f'<p class="stopped" id="stopped">{_e(text)}</p>' if text else ""


def render_html(report: Mapping[str, Any]) -> str:
    """The whole report page as one string."""
    kind = report["kind"]
    title = f"kmsadmin {kind} report" + (f": {report['playbook']}" if report.get("playbook") else "")
    flags = ""
    if report["check"]:
        flags += '<span class="flag">check mode: nothing changed</span>'
    if report["interrupted"]:
        flags += '<span class="flag">interrupted</span>'
    subtitle = " · ".join(
        part
        for part in (
            f"inventory {_e(report['inventory'])}" if report.get("inventory") else "",
            f"started {_time(report['started'])}",
            f"finished {_time(report['finished'])}",
            f"took {_e(human_duration(report['duration']))}",
        )
        if part
    )
    csp = (
        f"default-src 'none'; style-src '{_hash(_CSS)}'; script-src '{_hash(_SCRIPT)}'; img-src data:; "
        "base-uri 'none'; form-action 'none'"
    )
    summary = report["summary"]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}{flags}</h1><p>{subtitle}</p>{_stopped_line(report)}</header><main>"
        f"{_tiles(report)}"
        f'<div class="charts">{_edition_section(summary)}{_kms_section(summary)}'
        f"{_days_section(summary)}</div>"
        f"{_failures_section(report)}{_findings_section(report)}{_waiting_section(report)}"
        f"{_hosts_section(report)}"
        f"{_skipped_section(report)}"
        f"</main><script>{_SCRIPT}</script></body></html>\n"
    )


def write_html(report: Mapping[str, Any], path: str | Path) -> Path:
    """Write the self-contained HTML report."""
    return write_atomic(path, utf8(render_html(report)))
