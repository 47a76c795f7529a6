"""The run report document: one JSON-able dict built from per-host reports, the input of every writer.

The input is deliberately plain so that the report is a pure function of it:

* ``host_reports`` — a sequence of :meth:`kmsadmin.fleet.runner.HostReport.to_dict` dicts, each
  optionally carrying ``play`` (the play's name) and either ``role`` or ``vars`` (host variables, of
  which only ``kmsadmin_role`` is kept). Every other key is dropped, so host variables such as
  connection passwords never reach a report.
* run metadata passed as keywords: start and finish times, playbook and inventory names, check
  mode, whether the run was interrupted, and the names of hosts that were never started.

The document layout is described in ``docs/report-schema.md`` and ``docs/report.schema.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from kmsadmin import catalog
from kmsadmin.errors import KmsAdminError

REPORT_VERSION = 1

Kind = Literal["rollout", "status"]
Report = dict[str, Any]

STATUSES: tuple[str, ...] = ("ok", "changed", "pending", "waiting", "failed")
"""Per-host outcomes of a run, in the order every writer lists them. ``waiting``: configured, but
refused at ``activate`` with 0xC004F038 until the KMS host has counted enough clients."""

NOT_STARTED = "not_started"

HOST_KEYS: tuple[str, ...] = (
    "host",
    "operation",
    "status",
    "changes",
    "steps",
    "plan",
    "state",
    "error",
    "duration",
)
"""The keys of a HostReport dict that are copied into a report; anything else is dropped."""

ERROR_KEYS: tuple[str, ...] = ("host", "step", "message", "hresult", "meaning", "remediation")

UNKNOWN = "unknown"

# Days-of-validity histogram: (label, lowest day, highest day). KMS activations are valid for 180 days
# and clients renew every 7 days (Plan for volume activation), so a healthy fleet sits in "151-180".
# 0 days left means either nothing is left or a permanent (non-KMS) activation.
DAYS_LEFT_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0", 0, 0),
    ("1-30", 1, 30),
    ("31-90", 31, 90),
    ("91-150", 91, 150),
    ("151-180", 151, 180),
    ("181+", 181, None),
)

LICENSED = 1
"""SoftwareLicensingProduct.LicenseStatus value of an activated product."""


def _iso(value: datetime | str) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _plain(value: Any) -> Any:
    """A deep, JSON-only copy: the report never shares mutable state with its input."""
    return json.loads(json.dumps(value, default=str))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _host_entry(source: Mapping[str, Any]) -> dict[str, Any]:
    host = source.get("host")
    if not isinstance(host, str) or not host:
        raise ValueError("every host report needs a non-empty 'host' name")
    status = source.get("status")
    if status not in STATUSES:
        raise ValueError(f"host {host!r}: status must be one of {', '.join(STATUSES)}, not {status!r}")
    entry: dict[str, Any] = {
        "host": host,
        "operation": source.get("operation"),
        "status": status,
        "changes": int(source.get("changes") or 0),
        "steps": _plain(source.get("steps") or []),
        "plan": _plain(source.get("plan")),
        "state": _plain(source.get("state") or {}),
        "error": None,
        "duration": round(float(source.get("duration") or 0.0), 3),
    }
    error = source.get("error")
    if error:
        entry["error"] = _error_entry(error)
    play = source.get("play")
    entry["play"] = str(play) if play is not None else None
    role = source.get("role")
    if role is None:
        host_vars = source.get("vars")
        if isinstance(host_vars, Mapping):
            role = host_vars.get("kmsadmin_role")
    entry["role"] = str(role) if role is not None else None
    return entry


def _error_entry(error: Mapping[str, Any]) -> dict[str, Any]:
    """The error object; a known HRESULT without meaning or remediation gets them from the catalog."""
    entry = {key: _plain(error.get(key)) for key in ERROR_KEYS}
    code = entry["hresult"]
    if code is not None:
        try:
            info = catalog.hresult_info(code)
        except KmsAdminError:
            return entry
        entry["hresult"] = info.code
        if info.known:
            entry["meaning"] = entry["meaning"] or info.meaning
            entry["remediation"] = entry["remediation"] or info.remediation
    return entry


def _status_name(state: Mapping[str, Any]) -> str:
    name = state.get("license_status_name")
    if isinstance(name, str) and name:
        return name
    number = state.get("license_status")
    if isinstance(number, int):
        return str(catalog.license_status_name(number))
    return UNKNOWN


def is_client_os(state: Mapping[str, Any]) -> bool | None:
    """Whether a host runs a Windows client OS (True), a server OS (False), or we cannot tell (None).

    Windows Server captions always name "Server" (Win32_OperatingSystem.Caption); client captions
    (Windows 10/11, LTSC, IoT) never do.
    """
    caption = state.get("os") or state.get("edition")
    if not isinstance(caption, str) or not caption:
        return None
    return "server" not in caption.lower()


def required_count(hosts: Iterable[Mapping[str, Any]]) -> int:
    """The KMS current count needed before this run's clients activate.

    Windows client OSes activate at 25, servers and Office at 5 (catalog.ACTIVATION_RULES, from
    Microsoft's "Plan for volume activation"). The report does not know which client talks to which
    KMS host (auto-discovery picks one at random), so the stricter threshold applies to every KMS
    host as soon as one machine that is not itself a KMS host runs a Windows client OS.
    """
    rules = catalog.ACTIVATION_RULES
    for entry in hosts:
        state = entry.get("state") or {}
        if not state.get("is_kms_host") and is_client_os(state):
            return int(rules.client_threshold)
    return int(max(rules.server_threshold, rules.office_threshold))


def _days_bucket(days: int) -> str:
    for label, low, high in DAYS_LEFT_BUCKETS:
        if days >= low and (high is None or days <= high):
            return label
    return DAYS_LEFT_BUCKETS[0][0]


def _days(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return max(0, int(value))


def summarize(hosts: Sequence[Mapping[str, Any]], not_started: Sequence[str]) -> dict[str, Any]:
    """The ``summary`` object of a report (see docs/report-schema.md for every field)."""
    counts = dict.fromkeys(STATUSES, 0)
    by_edition: dict[str, dict[str, int]] = {}
    days_left = {label: 0 for label, _, _ in DAYS_LEFT_BUCKETS}
    activated = 0
    by_method: dict[str, int] = {}
    for entry in hosts:
        counts[entry["status"]] += 1
        state = entry["state"]
        if not state:
            continue
        if state.get("license_status") == LICENSED:
            activated += 1
        method = state.get("activation_method")
        if isinstance(method, str) and method:
            by_method[method] = by_method.get(method, 0) + 1
        edition = state.get("edition")
        edition_name = edition if isinstance(edition, str) and edition else UNKNOWN
        row = by_edition.setdefault(edition_name, {})
        status_name = _status_name(state)
        row[status_name] = row.get(status_name, 0) + 1
        days = _days(state.get("days_left"))
        if days is not None:
            days_left[_days_bucket(days)] += 1
    needed = required_count(hosts)
    kms_hosts = []
    for entry in hosts:
        state = entry["state"]
        if not state.get("is_kms_host"):
            continue
        current = state.get("current_count")
        # KeyManagementServiceCurrentCount is -1 on a KMS host that no client has asked yet: it has
        # counted 0 (read by the verify step right after set-up); None means it was not read.
        current_count = (
            max(0, current)
            if isinstance(current, int) and not isinstance(current, bool) and current >= -1
            else None
        )
        kms_hosts.append(
            {
                "host": entry["host"],
                "current_count": current_count,
                "required_count": needed,
                "threshold_met": None if current_count is None else current_count >= needed,
            }
        )
    return {
        "hosts": len(hosts) + len(not_started),
        **counts,
        NOT_STARTED: len(not_started),
        "activated": activated,
        "by_edition": {name: dict(sorted(row.items())) for name, row in sorted(by_edition.items())},
        "by_method": dict(sorted(by_method.items())),
        "kms_hosts": kms_hosts,
        "days_left": days_left,
    }


def build_report(
    kind: Kind,
    host_reports: Iterable[Mapping[str, Any]],
    *,
    started: datetime | str,
    finished: datetime | str,
    playbook: str | None = None,
    inventory: str | None = None,
    check: bool = False,
    interrupted: bool = False,
    not_started: Iterable[str] = (),
    skipped: Iterable[Mapping[str, Any]] = (),
    stopped: Mapping[str, Any] | None = None,
) -> Report:
    """Build the report document. Pure: same input, same output; the input is never modified.

    ``not_started`` names hosts the run never reached (duplicates are dropped); ``skipped`` lists
    ``{"play", "host", "reason"}`` for (play, host) pairs left out on purpose (done in an earlier run
    that is being resumed, or failed in an earlier play). Skipped pairs are not counted in ``hosts``.
    ``stopped`` says why a rollout stopped early (which play, why, at what failure rate).
    """
    if kind not in ("rollout", "status"):
        raise ValueError(f"report kind must be 'rollout' or 'status', not {kind!r}")
    begin, end = _iso(started), _iso(finished)
    hosts = [_host_entry(item) for item in host_reports]
    unreached = list(dict.fromkeys(str(name) for name in not_started))
    left_out = [
        {"play": _text(item.get("play")), "host": str(item["host"]), "reason": _text(item.get("reason"))}
        for item in skipped
    ]
    document: dict[str, Any] = {
        "kmsadmin_report": REPORT_VERSION,
        "kind": kind,
        "playbook": playbook,
        "inventory": inventory,
        "check": bool(check),
        "started": begin.isoformat(),
        "finished": end.isoformat(),
        "duration": round(max(0.0, (end - begin).total_seconds()), 3),
        "interrupted": bool(interrupted),
        "summary": {**summarize(hosts, unreached), "skipped": len(left_out)},
        "hosts": hosts,
        "not_started": unreached,
        "skipped": left_out,
    }
    if stopped is not None:
        document["stopped"] = {key: _plain(value) for key, value in stopped.items()}
    return document


def stopped_text(report: Mapping[str, Any]) -> str | None:
    """One line on why a rollout stopped early and what it left, for the terminal and the HTML page."""
    stopped = report.get("stopped")
    if not stopped:
        return None
    left = report["summary"].get("not_started", 0)
    return f"Stopped: {stopped.get('message')}; {left} host(s) not started"


def shown_meaning(error: Mapping[str, Any]) -> str | None:
    """The HRESULT's meaning, unless the message already says it (shown once, not twice)."""
    meaning, message = error.get("meaning"), error.get("message")
    if meaning and message and str(meaning).strip().rstrip(".") in str(message):
        return None
    return None if meaning is None else str(meaning)


def failures(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The failed hosts with their error, in report order (what the failure tables list)."""
    rows = []
    for entry in report["hosts"]:
        if entry["status"] != "failed":
            continue
        error = entry.get("error") or {}
        rows.append(
            {
                "host": entry["host"],
                "play": entry.get("play"),
                "step": error.get("step"),
                "hresult": error.get("hresult"),
                "meaning": shown_meaning(error),
                "message": error.get("message"),
                "remediation": error.get("remediation"),
            }
        )
    return rows


def waiting_hosts(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The waiting hosts, in report order: configured, activation refused until the KMS count is reached."""
    rows = []
    for entry in report["hosts"]:
        if entry["status"] != "waiting":
            continue
        error = entry.get("error") or {}
        rows.append(
            {
                "host": entry["host"],
                "play": entry.get("play"),
                "kms_machine": (entry.get("state") or {}).get("kms_machine"),
                "hresult": error.get("hresult"),
                "message": error.get("message"),
            }
        )
    return rows


def from_input(data: Mapping[str, Any]) -> Report:
    """Build a report from the JSON-able *report input* (docs/report-schema.md, "Report input").

    ``{"kind", "hosts": [HostReport dict + "play" + "role"|"vars"], "started", "finished",
    "playbook"?, "inventory"?, "check"?, "interrupted"?, "not_started"?, "skipped"?}``
    """
    return build_report(
        data.get("kind", "rollout"),
        data.get("hosts") or (),
        started=data["started"],
        finished=data["finished"],
        playbook=data.get("playbook"),
        inventory=data.get("inventory"),
        check=bool(data.get("check", False)),
        interrupted=bool(data.get("interrupted", False)),
        not_started=data.get("not_started") or (),
        skipped=data.get("skipped") or (),
    )
