"""``kmsadmin rollout``, fleet-wide reports, and ``kmsadmin demo``.

Progress is drawn from the rollout's events (:mod:`kmsadmin.cli.progress`: a bar with the hosts in
flight on a terminal, a line per host when piped). Ctrl-C sets the rollout's stop event (running hosts
finish their step, nothing new starts; it says at once how many run and by when they end); a second
Ctrl-C ends the run at once: the summary and the reports keep what finished.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from kmsadmin.cli.inventory import InventoryOptions
from kmsadmin.errors import EXIT_INTERRUPTED, KmsAdminError

if TYPE_CHECKING:
    from datetime import datetime

    from kmsadmin.fleet.inventory import Inventory
    from kmsadmin.fleet.runner import HostReport


def check_report_paths(reports: Mapping[str, Path | None]) -> None:
    """Refuse report paths that cannot be written before any host is contacted (usage error, exit 2):
    a directory, or a place under a file or a directory that cannot be written."""
    from kmsadmin.cli.output import fail

    for kind, path in reports.items():
        if path is None:
            continue
        option = "--junit" if kind == "junit" else f"--report-{kind}"
        if path.is_dir():
            fail(f"{option} {path} is a directory; give a file name", 2)
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            fail(f"{option} {path}: {parent} is not a directory", 2)
        if not os.access(parent, os.W_OK | os.X_OK):
            fail(f"{option} {path}: {parent} is not writable", 2)


def write_reports(report: Mapping[str, Any], paths: Mapping[str, Path | None]) -> list[Path]:
    """Write each requested report format (``paths``: ``json``, ``html``, ``csv``, ``junit`` to a path
    or None); return the paths written."""
    from kmsadmin import report as reports

    written: list[Path] = []
    for path, writer in (
        (paths.get("json"), reports.write_json),
        (paths.get("html"), reports.write_html),
        (paths.get("csv"), reports.write_csv),
        (paths.get("junit"), reports.write_junit),
    ):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer(report, path)
            written.append(path)
    return written


def print_summary(report: Mapping[str, Any]) -> None:
    """The terminal summary (rich on a terminal, plain text otherwise)."""
    from kmsadmin.report.terminal import render_summary, summary_text

    if sys.stdout.isatty():
        from rich.console import Console

        Console().print(render_summary(report))
    else:
        sys.stdout.write(summary_text(report) + "\n")


def run_rollout(
    playbook_path: Path,
    inventory_options: InventoryOptions,
    *,
    explicit: Mapping[str, object],
    forks: int,
    limit: str | None,
    check: bool,
    journal_path: Path | None,
    resume: bool,
    deadline: float | None,
    reports: Mapping[str, Path | None],
    progress: bool,
    quiet: bool = False,
) -> tuple[int, dict[str, Any]]:
    """Load, run, report. Returns (exit code, report document).

    ``deadline`` (``--deadline``) is every host's budget; None: each host's ``kmsadmin_deadline`` var,
    else ``KMSADMIN_DEADLINE``, else 900 s."""
    from kmsadmin.cli.progress import RolloutProgress, choose_mode
    from kmsadmin.fleet.journal import Journal, resume_state
    from kmsadmin.fleet.playbook import load_playbook
    from kmsadmin.fleet.rollout import rollout, transport_session_factory_for
    from kmsadmin.report import from_rollout

    check_report_paths(reports)
    playbook = load_playbook(playbook_path)
    # group_vars/ and host_vars/ beside the playbook apply too, as with ansible-playbook
    inventory = inventory_options.load(playbook_dir=playbook_path.resolve().parent)
    journal = Journal(journal_path) if journal_path else None
    if resume and journal_path is not None:
        # refused here if it cannot be trusted; what was left out of it is said before any host runs
        for warning in resume_state(journal_path, playbook_path.resolve())[1]:
            sys.stderr.write(f"kmsadmin: warning: {warning}\n")
    stop = threading.Event()
    abort = threading.Event()
    previous = signal.getsignal(signal.SIGINT)
    view = RolloutProgress(choose_mode(progress))

    def on_sigint(signum: int, frame: object) -> None:
        if not stop.is_set():
            stop.set()
            view.write(stopping_message(view.in_flight(), deadline, view.budgets()))
        elif not abort.is_set():
            abort.set()
            view.write(
                f"kmsadmin: stopping now: {len(view.in_flight())} host(s) still running are reported as "
                "not finished; writing the reports"
            )

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        with view:
            result = rollout(
                playbook,
                inventory,
                session_factory_for=transport_session_factory_for(explicit),
                forks=forks,
                limit=limit,
                check=check,
                journal=journal,
                resume=resume,
                deadline=deadline,
                on_event=view,
                stop=stop,
                abort=abort,
            )
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)
    document = dict(from_rollout(result))
    written = write_reports(document, reports)
    if not quiet:
        print_summary(document)
        for path in written:
            sys.stdout.write(f"report: {path}\n")
        if result.interrupted:
            done = len(result.hosts)
            sys.stdout.write(
                f"interrupted: {done} host result(s) recorded, {len(result.not_started)} not started"
                + (f"; resume with --journal {journal_path} --resume\n" if journal_path else "\n")
            )
    if result.aborted:
        # hosts left running keep their worker threads busy until their deadline: leave now
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    return result.exit_code, document


def stopping_message(
    in_flight: list[tuple[str, str, float]],
    deadline: float | None,
    budgets: Mapping[tuple[str, str], float] | None = None,
) -> str:
    """What the first Ctrl-C says at once: hosts still running, and by when they end at the latest
    (each host's own deadline from ``budgets``, ``deadline`` being ``--deadline`` when given)."""
    from kmsadmin.cli.progress import deadline_text
    from kmsadmin.fleet.rollout import DEFAULT_DEADLINE

    if not in_flight:
        return "kmsadmin: stopping: no new host starts; no host is running"
    names = ", ".join(host for _, host, _ in in_flight[:5]) + (", ..." if len(in_flight) > 5 else "")
    budgets = budgets or {}
    fallback = DEFAULT_DEADLINE if deadline is None else deadline
    end, last = max(
        (started + budgets.get((play, host), fallback), started) for play, host, started in in_flight
    )
    rule = (
        f"--deadline {deadline:g}s per host"
        if deadline is not None
        else f"each host's kmsadmin_deadline var, else KMSADMIN_DEADLINE, else {DEFAULT_DEADLINE:g}s"
    )
    return (
        f"kmsadmin: stopping: no new host starts; {len(in_flight)} host(s) still running ({names}) "
        f"end by {deadline_text(end - last, last)} at the latest (their deadline: {rule}); "
        "then the summary and reports follow. Ctrl-C again to stop at once."
    )


def fleet_status(
    inventory_path: Path | Inventory,
    pattern: str,
    *,
    explicit: Mapping[str, object],
    forks: int,
    reports: Mapping[str, Path | None],
    json_out: bool,
    health: Any = None,
) -> int:
    """``kmsadmin status -i INVENTORY``: read-only facts from every selected host, with reports.

    Each host's deadline is its connection options' (``explicit["deadline"]``, the ``--deadline``
    given, wins over its ``kmsadmin_deadline`` var and ``KMSADMIN_DEADLINE``; 300 s by default).

    ``health`` (:class:`kmsadmin.cli.activation.HealthOptions`): ``--only``, ``--fail-on``, ``--metrics``.
    """
    from datetime import UTC, datetime

    from kmsadmin.cli.output import emit_json
    from kmsadmin.cli.remote import print_status_tail, run_all
    from kmsadmin.fleet.inventory import Inventory as LoadedInventory
    from kmsadmin.fleet.inventory import load_inventory
    from kmsadmin.fleet.limit import select_each

    check_report_paths(reports)
    inventory = (
        inventory_path if isinstance(inventory_path, LoadedInventory) else load_inventory(inventory_path)
    )
    names = select_each(inventory, [pattern])
    hostvars = {n: inventory.vars_for(n) for n in names}
    started = datetime.now(UTC)
    # each host's options (its deadline too: --deadline, else its vars or the environment, else the
    # default) are built and checked before any host is contacted, as for status HOST...
    host_reports = run_all(
        "status", names, None, explicit=explicit, hostvars=hostvars, check=False, forks=forks
    )
    from kmsadmin.cli.activation import HealthOptions, assess, exit_code, print_activation, selected

    options = health if health is not None else HealthOptions()
    assessed = assess(host_reports, options, hostvars=hostvars)
    document = status_document(
        host_reports,
        assessed,
        hostvars=hostvars,
        started=started,
        inventory=inventory.described() or None,
    )
    written = write_reports(document, reports)
    if json_out:
        if options.only:
            chosen = {v.host for v in selected(assessed, options)}
            document = {**document, "hosts": [h for h in document["hosts"] if h["host"] in chosen]}
        emit_json(document)
    else:
        print_summary(document)
        print_activation(assessed, options)
        print_status_tail(host_reports, written)
    failed = 1 if any(r.status == "failed" for r in host_reports) else 0
    return failed or exit_code(assessed, options)


def status_document(
    host_reports: Sequence[HostReport],
    assessed: Any,
    *,
    hostvars: Mapping[str, Mapping[str, object]],
    started: datetime,
    inventory: str | None,
) -> dict[str, Any]:
    """The status report document (``kmsadmin status``, with or without -i): each host's report with
    its inventory role, and the fleet findings of ``assessed`` (:func:`kmsadmin.cli.activation.assess`)."""
    from datetime import UTC, datetime

    from kmsadmin.report import build_report

    entries = []
    for r in host_reports:
        entry = r.to_dict()
        entry["role"] = hostvars.get(r.host, {}).get("kmsadmin_role")
        entries.append(entry)
    document = dict(
        build_report("status", entries, started=started, finished=datetime.now(UTC), inventory=inventory)
    )
    document["findings"] = [f.to_dict() for f in assessed.findings]
    document["summary"]["findings"] = assessed.to_dict()["by_kind"]
    return document


def _counts_line(document: Mapping[str, Any]) -> str:
    summary = document["summary"]
    return ", ".join(
        f"{summary.get(k, 0)} {k}" for k in ("ok", "changed", "waiting", "failed", "not_started")
    )


def demo(out_dir: Path, clients: int, kms_hosts: int, keep_lab: bool) -> int:
    """Start a lab, roll out the site playbook, print the summary and the HTML report path, stop the lab.

    KMS clients that reach a host before it has counted enough clients stay in grace with 0xC004F038
    and retry by themselves every 2 hours [PLAN24]; the demo does that retry at once (a resumed run of
    the same playbook), then reads the whole fleet's status into the final reports.
    """
    from kmsadmin.fleet.playbook import shipped_playbook

    out_dir.mkdir(parents=True, exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix="lab-", dir=out_dir))
    inventory = out_dir / "inventory.yml"
    journal = out_dir / "journal.jsonl"
    up = [
        sys.executable,
        "-m",
        "kmsadmin",
        "lab",
        "up",
        "--hosts",
        str(clients),
        "--kms-hosts",
        str(kms_hosts),
        "--state-dir",
        str(state),
        "--inventory-out",
        str(inventory),
        "--detach",
    ]
    sys.stdout.write(f"starting a lab: {kms_hosts} KMS host(s), {clients} clients (state in {state})\n")
    proc = subprocess.run(up, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        return proc.returncode
    try:
        playbook = shipped_playbook("site.yml")
        sys.stdout.write(f"rolling out {playbook} against {inventory}\n")
        first_reports = {"json": out_dir / "rollout.json", "html": out_dir / "rollout.html"}
        code, document = run_rollout(
            playbook,
            InventoryOptions([inventory]),
            explicit={},
            forks=64,
            limit=None,
            check=False,
            journal_path=journal,
            resume=False,
            deadline=300.0,
            reports=first_reports,
            progress=True,
            quiet=True,
        )
        sys.stdout.write(f"first pass: {_counts_line(document)}\n")
        waiting = [h["host"] for h in document["hosts"] if h["status"] == "waiting"]
        if waiting:
            sys.stdout.write(
                f"{len(waiting)} client(s) reached a KMS host before it had counted enough clients "
                "(0xC004F038); Windows retries every 2 hours, the demo retries now\n"
            )
            code, document = run_rollout(
                playbook,
                InventoryOptions([inventory]),
                explicit={},
                forks=64,
                limit=None,
                check=False,
                journal_path=journal,
                resume=True,
                deadline=300.0,
                reports={},
                progress=True,
                quiet=True,
            )
            sys.stdout.write(f"retry: {_counts_line(document)}\n")
        reports = {
            "json": out_dir / "report.json",
            "html": out_dir / "report.html",
            "csv": out_dir / "report.csv",
            "junit": out_dir / "report.junit.xml",
        }
        sys.stdout.write("fleet status after the rollout:\n")
        status_code = fleet_status(
            inventory, "all", explicit={"deadline": 120.0}, forks=64, reports=reports, json_out=False
        )
        sys.stdout.write(f"\nHTML report: {reports['html'].resolve()}\n")
        return code or status_code
    finally:
        if keep_lab:
            sys.stdout.write(f"lab still running: kmsadmin lab down --state-dir {state}\n")
        else:
            subprocess.run(
                [sys.executable, "-m", "kmsadmin", "lab", "down", "--state-dir", str(state)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            sys.stdout.write("lab stopped\n")


def exit_interrupted() -> None:
    """Exit 130 after an abort."""
    raise typer.Exit(EXIT_INTERRUPTED)


__all__ = ["KmsAdminError", "demo", "fleet_status", "run_rollout", "status_document", "write_reports"]
