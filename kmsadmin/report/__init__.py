"""Run reports: the report document and its writers (JSON, CSV, JUnit XML, self-contained HTML).

:func:`build_report` turns per-host reports into the document (``docs/report-schema.md``); every writer
is a pure function of that document. Terminal summaries live in :mod:`kmsadmin.report.terminal`,
which imports rich and is loaded only when a summary is printed.
"""

from __future__ import annotations

from kmsadmin.report.document import REPORT_VERSION, Report, build_report, failures, from_input, waiting_hosts
from kmsadmin.report.htmlpage import render_html, write_html
from kmsadmin.report.jsonout import write_json
from kmsadmin.report.rollout import from_rollout
from kmsadmin.report.tabular import write_csv, write_junit

__all__ = [
    "REPORT_VERSION",
    "Report",
    "build_report",
    "failures",
    "from_input",
    "from_rollout",
    "render_html",
    "waiting_hosts",
    "write_csv",
    "write_html",
    "write_json",
    "write_junit",
]
