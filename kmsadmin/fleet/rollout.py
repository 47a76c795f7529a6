"""Run a playbook over an inventory: plays in order, serial batches, a bounded pool, retries, journal.

What an admin of a few hundred to tens of thousands of machines expects (Ansible's model):

* plays run in order; each play's hosts (its ``hosts:`` pattern, narrowed by ``--limit``) run in
  ``serial`` batches, and a batch finishes before the next starts;
* at most ``forks`` hosts run at once (one thread and one session per host);
* a failed host does not stop the others; a host that failed is left out of later plays;
  ``max_fail_percentage`` (more failed hosts in a batch than this share) and ``any_errors_fatal``
  stop the rollout: no new host is started, later batches and plays are reported as not started;
* a ``waiting`` host (convert-client refused at ``activate`` with 0xC004F038: configured, but its
  KMS host has not counted enough clients yet, see :func:`kmsadmin.fleet.runner.is_waiting`) is not
  a failure: it counts toward neither policy and takes part in later plays; it still makes the
  exit code 1, since it is not activated yet;
* retries with jittered exponential backoff only where that is safe: the host could not be reached
  or timed out while connecting or reading facts (``ConnectionFailed``/``HostTimeout`` at step
  ``connect`` or ``facts``) and nothing was changed. A failure after a change is never retried;
* Ctrl-C (``KeyboardInterrupt``) or a set ``stop`` event stops scheduling: running hosts finish
  (each bounded by its deadline), the rest are reported as not started, and the result says so;
* every finished host is written to the journal (fsynced) at once; ``resume`` skips hosts the
  journal shows done for the same play and runs the rest, failed and waiting ones included;
* everything that can be checked without a connection (patterns, step arguments, secret references,
  connection options) is checked before the first host is contacted: a :class:`ConfigError`.

Progress is reported through ``on_event`` (see :data:`Event`); the CLI draws its progress bar from it.
This module never imports rich or typer.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any, Literal

from kmsadmin.catalog import ClientKey
from kmsadmin.errors import (
    EXIT_HOST_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PENDING,
    ConfigError,
    KmsAdminError,
)
from kmsadmin.fleet.inventory import Inventory
from kmsadmin.fleet.journal import Journal, resume_state
from kmsadmin.fleet.limit import limited_hosts
from kmsadmin.fleet.playbook import (
    ConvertClientParams,
    KmsHostGroup,
    Play,
    Playbook,
    ResolveContext,
    batch_sizes,
    build_args,
)
from kmsadmin.fleet.runner import HostReport, SessionFactory, run_host
from kmsadmin.operations import capacity
from kmsadmin.values import DEFAULT_FORKS, Secret

log = logging.getLogger("kmsadmin.fleet")

HostStatus = Literal["ok", "changed", "pending", "waiting", "failed"]
#: Every state a (play, host) pair can be in; the counts in each event use these keys.
STATES = ("queued", "running", "ok", "changed", "pending", "waiting", "failed", "skipped", "not_started")
#: Host results that leave the rollout's exit code at 1: not activated (yet).
UNFINISHED = frozenset({"waiting", "failed"})
#: Host vars safe to show in reports and the journal (never credentials or key material).
SAFE_VARS = (
    "kmsadmin_role",
    "kmsadmin_fqdn",
    "kmsadmin_site",
    "ansible_host",
    "ansible_port",
    "ansible_connection",
)
#: Failures worth another try: nothing reached the host's licensing state yet.
RETRYABLE_KINDS = frozenset({"ConnectionFailed", "HostTimeout"})
RETRYABLE_STEPS = frozenset({"connect", "facts"})
#: Per-host time budget (all steps and retries), in seconds.
DEFAULT_DEADLINE = 900.0
#: allocations between two young collections during a run (Python's default is 700)
YOUNG_COLLECTION_THRESHOLD = 50_000
MAX_BACKOFF = 60.0

SessionFactoryFor = Callable[[Mapping[str, Any]], SessionFactory]


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------ results
@dataclass(slots=True)
class HostResult:
    """One host's run of one play: every step's report, in order."""

    play: str
    host: str
    status: HostStatus
    reports: list[HostReport]
    attempts: int
    started: datetime
    finished: datetime
    check: bool = False
    vars: dict[str, Any] = field(default_factory=dict)
    groups: tuple[str, ...] = ()

    @property
    def changes(self) -> int:
        """Changes made on the host by all steps."""
        return sum(r.changes for r in self.reports)

    @property
    def error(self) -> dict[str, Any] | None:
        """The failing step's error, if any."""
        return next((r.error for r in self.reports if r.error), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the journal's ``host`` line without ``type``/``run_id``)."""
        return {
            "play": self.play,
            "host": self.host,
            "status": self.status,
            "check": self.check,
            "changes": self.changes,
            "attempts": self.attempts,
            "started": _iso(self.started),
            "finished": _iso(self.finished),
            "duration": round((self.finished - self.started).total_seconds(), 3),
            "vars": self.vars,
            "groups": list(self.groups),
            "error": self.error,
            "reports": [r.to_dict() for r in self.reports],
        }


@dataclass(frozen=True, slots=True)
class Skipped:
    """A host not run on purpose: done in an earlier run (resume) or failed in an earlier play."""

    play: str
    host: str
    reason: str


@dataclass(frozen=True, slots=True)
class NotStarted:
    """A host the rollout did not get to because it was stopped."""

    play: str
    host: str
    reason: str


@dataclass(slots=True)
class RolloutResult:
    """What a rollout did: per-host results, what was skipped or not started, and why it stopped."""

    run_id: str
    playbook: Path
    inventory: Path | None
    check: bool
    started: datetime
    finished: datetime | None = None
    hosts: list[HostResult] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    not_started: list[NotStarted] = field(default_factory=list)
    interrupted: bool = False
    #: why the rollout stopped early (max_fail_percentage, any_errors_fatal, interrupted), else None
    stopped: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    #: stopped at once (``abort``): hosts still running were left to their threads, not waited for
    aborted: bool = False
    #: why it stopped, for reports: ``reason`` (max_fail_percentage, any_errors_fatal, interrupted,
    #: internal_error), ``message``, and for a play's failure policy ``play``, ``batch``, ``failed``,
    #: ``batch_size``, ``failure_rate`` (%) and ``max_fail_percentage`` or ``host``
    stop_detail: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        """130 interrupted, 1 a host failed or is waiting, 3 ``--check`` found pending changes, else 0."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        if any(h.status in UNFINISHED for h in self.hosts) or (self.stopped and self.not_started):
            return EXIT_HOST_FAILED
        if self.check and any(h.status == "pending" for h in self.hosts):
            return EXIT_PENDING
        return EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        """JSON form for reports."""
        return {
            "run_id": self.run_id,
            "playbook": str(self.playbook),
            "inventory": None if self.inventory is None else str(self.inventory),
            "check": self.check,
            "started": _iso(self.started),
            "finished": None if self.finished is None else _iso(self.finished),
            "interrupted": self.interrupted,
            "stopped": self.stopped,
            "counts": dict(self.counts),
            "hosts": [h.to_dict() for h in self.hosts],
            "skipped": [{"play": s.play, "host": s.host, "reason": s.reason} for s in self.skipped],
            "not_started": [{"play": n.play, "host": n.host, "reason": n.reason} for n in self.not_started],
        }


# ------------------------------------------------------------------------------------------ events
@dataclass(frozen=True, slots=True)
class RolloutStarted:
    """Before the first play: every (play, host) pair counted as queued."""

    counts: Mapping[str, int]
    run_id: str
    plays: tuple[str, ...]
    total: int


@dataclass(frozen=True, slots=True)
class PlayStarted:
    """A play begins; ``batches`` are the serial batch sizes for the hosts it will run."""

    counts: Mapping[str, int]
    play: str
    hosts: tuple[str, ...]
    batches: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BatchStarted:
    """A serial batch begins (``batch`` counts from 1)."""

    counts: Mapping[str, int]
    play: str
    batch: int
    hosts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HostSkipped:
    """A host is not run: done in an earlier run, or failed in an earlier play."""

    counts: Mapping[str, int]
    play: str
    host: str
    reason: str


@dataclass(frozen=True, slots=True)
class HostStarted:
    """A host got a worker."""

    counts: Mapping[str, int]
    play: str
    host: str
    #: the host's budget in seconds for all its steps (see :func:`rollout`)
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class HostRetrying:
    """A safe-to-retry failure; the next attempt starts after ``delay`` seconds."""

    counts: Mapping[str, int]
    play: str
    host: str
    attempt: int
    delay: float
    reason: str


@dataclass(frozen=True, slots=True)
class HostFinished:
    """A host finished (and is already in the journal)."""

    counts: Mapping[str, int]
    play: str
    host: str
    status: HostStatus
    result: HostResult


@dataclass(frozen=True, slots=True)
class RolloutStopping:
    """No new hosts will start: interrupted, or a play's failure policy tripped."""

    counts: Mapping[str, int]
    reason: str
    interrupted: bool


@dataclass(frozen=True, slots=True)
class PlayFinished:
    """A play is over (possibly stopped early)."""

    counts: Mapping[str, int]
    play: str


@dataclass(frozen=True, slots=True)
class RolloutFinished:
    """The end: the same result :func:`rollout` returns."""

    counts: Mapping[str, int]
    result: RolloutResult


Event = (
    RolloutStarted
    | PlayStarted
    | BatchStarted
    | HostSkipped
    | HostStarted
    | HostRetrying
    | HostFinished
    | RolloutStopping
    | PlayFinished
    | RolloutFinished
)
EventCallback = Callable[[Event], None]


# ------------------------------------------------------------------------------------------ preparation
@dataclass(frozen=True, slots=True)
class _HostPlan:
    host: str
    calls: tuple[tuple[str, Any], ...]
    factory: SessionFactory
    vars: dict[str, Any]
    groups: tuple[str, ...]
    secrets: tuple[str, ...]
    #: seconds for all the host's steps and retries
    deadline: float = DEFAULT_DEADLINE


@dataclass(frozen=True, slots=True)
class _PlayPlan:
    play: Play
    hosts: tuple[_HostPlan, ...]


def safe_vars(host_vars: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of host vars that may appear in reports and the journal."""
    return {k: host_vars[k] for k in SAFE_VARS if k in host_vars}


def client_threshold(inventory: Inventory, clients: list[str]) -> int:
    """The count the KMS hosts of these clients must reach, from the editions the inventory names.

    Editions come from inventory vars (``kmsadmin_edition``, ``kmsadmin_os``, ...) as ``kmsadmin plan``
    reads them; an unidentified client counts as a Windows client OS (threshold 25).
    """
    keys: list[ClientKey | None] = []
    for client in clients:
        try:
            machine = capacity.machine_from_vars(
                client, inventory.vars_for(client), inventory.group_names(client)
            )
        except KmsAdminError:
            keys.append(None)
            continue
        keys.append(capacity.identify(machine)[0])
    return capacity.assignment_threshold(keys)


def kms_assignment(play: Play, inventory: Inventory, play_hosts: list[str]) -> dict[str, str]:
    """The KMS host each client of ``play`` is pinned to (:func:`kmsadmin.operations.capacity.assign_clients`).

    As many of the group's hosts as the clients can fill to their threshold, round robin in inventory
    order. Depends only on the inventory and the play, so ``--limit``, ``--resume``, ``kmsadmin plan``
    and an exported Ansible project all pin every client to the same KMS host.
    """
    refs = [
        p.kms_host
        for _, p in play.step_calls()
        if isinstance(p, ConvertClientParams) and isinstance(p.kms_host, KmsHostGroup)
    ]
    if not refs:
        return {}
    ref = refs[0]
    if any(r != ref for r in refs):
        raise ConfigError(f"play {play.name!r}: convert-client steps name different KMS host groups")
    if ref.group not in inventory.groups:
        raise ConfigError(f"play {play.name!r}: kms_host: group {ref.group!r} is not in the inventory")
    names: list[str] = []
    for server in inventory.groups[ref.group]:
        value = inventory.hosts[server].get(ref.var) if ref.var else None
        names.append(str(value) if value not in (None, "") else server)
    if not names:
        raise ConfigError(f"play {play.name!r}: kms_host: group {ref.group!r} has no hosts")
    clients = [h for h in play_hosts if h not in inventory.groups[ref.group]] or play_hosts
    return capacity.assign_clients(clients, names, client_threshold(inventory, clients))


def _secret_values(args: Any, host_vars: Mapping[str, Any]) -> list[str]:
    """Values that must never reach a report: the step's Secrets and password-like host vars."""
    values: list[str] = []
    if args is not None and dataclasses.is_dataclass(args):
        for item in dataclasses.fields(args):
            value = getattr(args, item.name)
            if isinstance(value, Secret):
                values.append(value.value)
    for key, value in host_vars.items():
        lowered = key.lower()
        if (
            isinstance(value, str)
            and not lowered.endswith("_file")
            and any(word in lowered for word in ("pass", "secret", "token", "key"))
        ):
            values.append(value)
    return [v for v in values if len(v) >= 4]


def _prepare(
    playbook: Playbook,
    inventory: Inventory,
    limit: str | None,
    session_factory_for: SessionFactoryFor,
    env: Mapping[str, str] | None,
    deadline: float | None = None,
) -> list[_PlayPlan]:
    from kmsadmin.transports.options import deadline_setting

    limited = limited_hosts(inventory, limit)
    inventory_dir = inventory.path.parent if inventory.path else Path.cwd()
    plans: list[_PlayPlan] = []
    for play in playbook.plays:
        play_hosts = inventory.select(play.hosts)
        assignment = kms_assignment(play, inventory, play_hosts)
        hosts: list[_HostPlan] = []
        for host in play_hosts:
            if limited is not None and host not in limited:
                continue
            host_vars = {**inventory.hosts[host], **play.vars, "inventory_hostname": host}
            ctx = ResolveContext(
                host=host,
                host_vars=host_vars,
                inventory_dir=inventory_dir,
                assigned_kms_host=assignment.get(host),
                env=env,
            )
            calls = tuple((op, build_args(op, params, ctx, play)) for op, params in play.step_calls())
            budget = deadline if deadline is not None else deadline_setting(host, host_vars, env)
            factory = session_factory_for(host_vars)
            secrets = tuple(v for _, args in calls for v in _secret_values(args, {}))
            secrets += tuple(_secret_values(None, host_vars))
            groups = inventory.group_names(host)
            hosts.append(
                _HostPlan(
                    host,
                    calls,
                    factory,
                    safe_vars(host_vars),
                    groups,
                    secrets,
                    DEFAULT_DEADLINE if budget is None else budget,
                )
            )
        plans.append(_PlayPlan(play, tuple(hosts)))
    return plans


# ------------------------------------------------------------------------------------------ engine
def is_retryable(report: HostReport) -> bool:
    """Whether a failed report may be retried without risk: unreachable before any change."""
    error = report.error or {}
    return (
        report.status == "failed"
        and report.changes == 0
        and not any(s.changed for s in report.steps)
        and error.get("step") in RETRYABLE_STEPS
        and error.get("kind") in RETRYABLE_KINDS
    )


def backoff(attempt: int, base: float, rng: random.Random) -> float:
    """Jittered exponential backoff: between half and all of ``base * 2**(attempt-1)``, capped."""
    ceiling = min(MAX_BACKOFF, base * 2.0 ** max(0, attempt - 1))
    return ceiling * rng.uniform(0.5, 1.0)


def secret_values(host_vars: Mapping[str, Any], args: Any = None) -> tuple[str, ...]:
    """The password-like host vars of one host (and the Secrets of a step's ``args``), for redaction."""
    return tuple(_secret_values(args, host_vars))


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text


def _aggregate(reports: list[HostReport]) -> HostStatus:
    statuses = {r.status for r in reports}
    for status in ("failed", "waiting", "pending", "changed"):
        if status in statuses:
            return status
    return "ok"


class _Run:
    """The state of one rollout, shared by the scheduling thread and the workers."""

    def __init__(
        self,
        result: RolloutResult,
        *,
        journal: Journal | None,
        on_event: EventCallback | None,
        stop: threading.Event,
        check: bool,
        retries: int,
        retry_delay: float,
        seed: int | None,
        abort: threading.Event | None = None,
    ) -> None:
        self.result = result
        self.journal = journal
        self.on_event = on_event
        self.stop = stop
        self.abort = abort or threading.Event()
        #: (play, host) pairs left running by an abort: their late results are dropped
        self.abandoned: set[tuple[str, str]] = set()
        #: (play, host) pairs whose result is being journaled: an abort leaves them be
        self.finishing: set[tuple[str, str]] = set()
        self.check = check
        self.retries = retries
        self.retry_delay = retry_delay
        # Jitter only spreads retries apart; it needs no cryptographic randomness.
        self.rng = random.Random(seed)  # noqa: S311
        self.lock = threading.RLock()
        self.counts: Counter[str] = Counter(dict.fromkeys(STATES, 0))

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {s: self.counts[s] for s in STATES} | {"total": sum(self.counts[s] for s in STATES)}

    def emit(self, kind: Callable[..., Event], **fields: Any) -> None:
        """Build and deliver one event with the current counts (one at a time, from any thread)."""
        if self.on_event is None:
            return
        with self.lock:
            event = kind(counts=self.snapshot(), **fields)
            try:
                self.on_event(event)
            except Exception as exc:  # a broken progress display must not break a rollout
                log.warning("progress callback failed: %s", type(exc).__name__)

    def move(self, old: str, new: str) -> None:
        with self.lock:
            self.counts[old] -= 1
            self.counts[new] += 1

    # ---------------------------------------------------------------------------------- one host
    def run_one(self, play: Play, hp: _HostPlan) -> HostResult:
        """Run every step of ``play`` on one host (on a worker thread), journal it, count it."""
        self.emit(HostStarted, play=play.name, host=hp.host, deadline=hp.deadline)
        started = _now()
        deadline_at = time.monotonic() + hp.deadline
        reports: list[HostReport] = []
        attempts = 0
        for operation, args in hp.calls:
            attempt = 0
            while True:
                attempt += 1
                attempts += 1
                report = self._attempt(operation, hp, args, deadline_at)
                if not is_retryable(report) or attempt > self.retries or self.stop.is_set():
                    break
                delay = backoff(attempt, self.retry_delay, self.rng)
                if time.monotonic() + delay >= deadline_at:
                    break
                reason = str((report.error or {}).get("message", ""))
                self.emit(
                    HostRetrying,
                    play=play.name,
                    host=hp.host,
                    attempt=attempt + 1,
                    delay=delay,
                    reason=reason,
                )
                log.info("host=%s step=%s retry=%d delay=%.1fs", hp.host, operation, attempt + 1, delay)
                if self.stop.wait(delay):
                    break
            reports.append(report)
            # The play's later steps assume this one succeeded; a waiting host stops here too.
            if report.status in UNFINISHED:
                break
        status = _aggregate(reports)
        result = HostResult(
            play.name,
            hp.host,
            status,
            reports,
            attempts,
            started,
            _now(),
            self.check,
            dict(hp.vars),
            hp.groups,
        )
        with self.lock:
            if (play.name, hp.host) in self.abandoned:
                return result  # the run was stopped at once and has been reported without this host
            self.finishing.add((play.name, hp.host))
        if self.journal is not None:
            self.journal.write({"type": "host", "run_id": self.result.run_id, **result.to_dict()})
        with self.lock:
            self.result.hosts.append(result)
            self.move("running", status)
        self.emit(HostFinished, play=play.name, host=hp.host, status=status, result=result)
        return result

    def _attempt(self, operation: str, hp: _HostPlan, args: Any, deadline_at: float) -> HostReport:
        remaining = deadline_at - time.monotonic()
        if remaining <= 0:
            from kmsadmin.transports.base import MORE_TIME

            report = HostReport(host=hp.host, operation=operation, status="failed")
            report.error = {
                "host": hp.host,
                "step": "connect",
                "message": "the host's deadline expired before this step",
                "hresult": None,
                "meaning": None,
                "remediation": f"allow more time with {MORE_TIME}",
                "kind": "HostTimeout",
            }
            return report
        return run_host_safely(
            operation, hp.host, args, hp.factory, hp.secrets, check=self.check, deadline=remaining
        )


def run_host_safely(
    operation: str,
    host: str,
    args: Any,
    factory: SessionFactory,
    secrets: tuple[str, ...],
    *,
    check: bool = False,
    deadline: float | None = None,
) -> HostReport:
    """:func:`run_host`, with anything it raises (a bug, an unmapped library error met in a host's
    answers) turned into that host's failure, secrets redacted: one host never ends the run."""
    try:
        return run_host(operation, host, args, factory, check=check, deadline=deadline)
    except Exception as exc:
        report = HostReport(host=host, operation=operation, status="failed")
        report.error = {
            "host": host,
            "step": operation,
            "message": _redact(str(exc), secrets)[:500],
            "hresult": None,
            "meaning": None,
            "remediation": None,
            "kind": type(exc).__name__,
        }
        return report


def rollout(
    playbook: Playbook,
    inventory: Inventory,
    *,
    session_factory_for: SessionFactoryFor,
    forks: int = DEFAULT_FORKS,
    limit: str | None = None,
    check: bool = False,
    journal: Journal | None = None,
    resume: bool = False,
    deadline: float | None = None,
    retries: int = 2,
    retry_delay: float = 2.0,
    on_event: EventCallback | None = None,
    stop: threading.Event | None = None,
    abort: threading.Event | None = None,
    env: Mapping[str, str] | None = None,
    seed: int | None = None,
) -> RolloutResult:
    """Run ``playbook`` on ``inventory``; see the module docstring for the rules.

    ``session_factory_for(host_vars)`` returns the session factory for one host (host vars are the
    inventory's merged vars with the play's ``vars`` on top, plus ``inventory_hostname``); it is
    called for every host before any host is contacted, so it should only build options
    (:func:`transport_session_factory_for` is the real one). ``deadline`` is each host's budget in seconds
    for all its steps and retries; when None, each host's is its ``kmsadmin_deadline`` var (the
    play's vars included), else ``KMSADMIN_DEADLINE`` (from ``env``, default ``os.environ``), else
    :data:`DEFAULT_DEADLINE`, all resolved (and checked) before any host is contacted. ``retries`` counts extra attempts of a safe-to-retry step;
    ``retry_delay`` is the first backoff. ``stop`` lets a caller (a signal handler, a test) stop the
    rollout like Ctrl-C; ``abort`` (a second Ctrl-C) ends it at once: hosts still running are reported
    as not finished and their threads are not waited for (the caller should exit the process). ``env`` replaces ``os.environ`` for ``{env: VAR}`` secret references.
    Raises :class:`ConfigError` for problems found before contacting any host.
    """
    if forks < 1:
        raise ConfigError(f"--forks must be at least 1, not {forks}")
    if retries < 0:
        raise ConfigError(f"retries must be 0 or more, not {retries}")
    if resume and journal is None:
        raise ConfigError("--resume needs a journal (--journal FILE)")
    plans = _prepare(playbook, inventory, limit, session_factory_for, env, deadline)

    done: set[tuple[str, str]] = set()
    resumes: str | None = None
    if resume and journal is not None:
        # damaged, cut or orphaned records are left out (warned about by the caller); an untrustworthy
        # journal is refused
        state, journal_warnings = resume_state(journal.path, playbook.path.resolve())
        for warning in journal_warnings:
            log.info("%s", warning)
        done = state.done()
        if state.runs:
            resumes = str(state.runs[-1].get("run_id"))

    run_id = uuid.uuid4().hex[:12]
    result = RolloutResult(
        run_id=run_id, playbook=playbook.path, inventory=inventory.path, check=check, started=_now()
    )
    stop_event = stop or threading.Event()
    run = _Run(
        result,
        journal=journal,
        on_event=on_event,
        stop=stop_event,
        check=check,
        retries=retries,
        retry_delay=retry_delay,
        seed=seed,
        abort=abort,
    )
    run.counts["queued"] = sum(len(p.hosts) for p in plans)
    if journal is not None:
        journal.start(
            {
                "run_id": run_id,
                "playbook": str(playbook.path.resolve()),
                "inventory": None if inventory.path is None else str(inventory.path.resolve()),
                "check": check,
                "limit": limit,
                "resumes": resumes,
                "started": _iso(result.started),
            }
        )
    run.emit(
        RolloutStarted, run_id=run_id, plays=tuple(p.play.name for p in plans), total=run.counts["queued"]
    )

    failed_hosts: set[str] = set()
    executor = ThreadPoolExecutor(max_workers=forks, thread_name_prefix="kmsadmin-host")
    try:
        with _collector_for_long_runs():
            for plan in plans:
                _run_play(run, executor, plan, done=done, failed_hosts=failed_hosts, forks=forks)
    finally:
        executor.shutdown(wait=not run.abort.is_set(), cancel_futures=run.abort.is_set())
        result.finished = _now()
        result.counts = run.snapshot()
        if journal is not None:
            try:
                journal.write(
                    {
                        "type": "end",
                        "run_id": run_id,
                        "finished": _iso(result.finished),
                        "interrupted": result.interrupted,
                        "stopped": result.stopped,
                        "counts": result.counts,
                    }
                )
            except OSError as exc:
                log.warning("journal end line not written: %s", exc.strerror or type(exc).__name__)
            finally:
                journal.close()
    run.emit(RolloutFinished, result=result)
    return result


@contextmanager
def _collector_for_long_runs() -> Iterator[None]:
    """Python's cyclic garbage collector during a run: what lives for the whole run (the inventory, the
    plans, the catalog) is moved out of its reach (``gc.freeze``) and young objects are collected less
    often. Without this, each full collection walks every host's variables again, a CPU cost per host
    that grows with the fleet; the run's own garbage (answers, parsed XML) is still collected.
    """
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], YOUNG_COLLECTION_THRESHOLD), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _stop(
    run: _Run, reason: str, *, interrupted: bool = False, detail: Mapping[str, Any] | None = None
) -> None:
    with run.lock:
        if interrupted:
            run.result.interrupted = True
        if run.result.stopped is not None:
            return
        run.result.stopped = reason
        kind = "interrupted" if interrupted else "internal_error"
        run.result.stop_detail = {"reason": kind, "message": reason, **(detail or {})}
    run.stop.set()
    run.emit(RolloutStopping, reason=reason, interrupted=interrupted)


def _noticed_stop(run: _Run) -> bool:
    """Whether the rollout is stopping; a stop event set by the caller counts as Ctrl-C."""
    if run.stop.is_set() and run.result.stopped is None:
        _stop(run, "interrupted", interrupted=True)
    return run.stop.is_set()


def _not_started(run: _Run, play: str, hosts: list[_HostPlan]) -> None:
    reason = run.result.stopped or "stopped"
    with run.lock:
        for hp in hosts:
            run.result.not_started.append(NotStarted(play, hp.host, reason))
            run.move("queued", "not_started")


def _abandon(run: _Run, play: str, hosts: list[str]) -> None:
    """Stop at once: hosts still running are reported as not finished, their results are dropped."""
    _stop(run, "interrupted", interrupted=True)
    reason = "still running when the run was stopped at once (second Ctrl-C): result unknown"
    with run.lock:
        run.result.aborted = True
        for host in hosts:
            if (play, host) in run.finishing:
                continue
            run.abandoned.add((play, host))
            run.result.not_started.append(NotStarted(play, host, reason))
            run.move("running", "not_started")


def _run_play(
    run: _Run,
    executor: ThreadPoolExecutor,
    plan: _PlayPlan,
    *,
    done: set[tuple[str, str]],
    failed_hosts: set[str],
    forks: int,
) -> None:
    play = plan.play
    todo: list[_HostPlan] = []
    for hp in plan.hosts:
        reason = (
            "done in an earlier run"
            if (play.name, hp.host) in done
            else "failed in an earlier play"
            if hp.host in failed_hosts
            else None
        )
        if reason is None:
            todo.append(hp)
            continue
        with run.lock:
            run.result.skipped.append(Skipped(play.name, hp.host, reason))
            run.move("queued", "skipped")
        run.emit(HostSkipped, play=play.name, host=hp.host, reason=reason)
    if _noticed_stop(run):
        _not_started(run, play.name, todo)
        return
    sizes = batch_sizes(play.serial, len(todo))
    run.emit(PlayStarted, play=play.name, hosts=tuple(h.host for h in todo), batches=tuple(sizes))
    offset = 0
    for number, size in enumerate(sizes, start=1):
        batch = todo[offset : offset + size]
        offset += size
        if _noticed_stop(run):
            _not_started(run, play.name, batch)
            continue
        run.emit(BatchStarted, play=play.name, batch=number, hosts=tuple(h.host for h in batch))
        results = _run_batch(run, executor, play, batch, forks)
        # Only real failures count: a waiting host is configured and activates by itself later.
        failed = [r for r in results if r.status == "failed"]
        failed_hosts.update(r.host for r in failed)
        if (
            failed
            and play.max_fail_percentage is not None
            and len(failed) * 100 / len(batch) > play.max_fail_percentage
        ):
            rate = round(len(failed) * 100 / len(batch), 1)
            _stop(
                run,
                f"play {play.name!r}: {len(failed)} of {len(batch)} hosts in batch {number} failed ({rate:g}%), "
                f"more than max_fail_percentage {play.max_fail_percentage:g}%",
                detail={
                    "reason": "max_fail_percentage",
                    "play": play.name,
                    "batch": number,
                    "failed": len(failed),
                    "batch_size": len(batch),
                    "failure_rate": rate,
                    "max_fail_percentage": play.max_fail_percentage,
                },
            )
    run.emit(PlayFinished, play=play.name)


def _run_batch(
    run: _Run, executor: ThreadPoolExecutor, play: Play, batch: list[_HostPlan], forks: int
) -> list[HostResult]:
    queue = deque(batch)
    in_flight: dict[Future[HostResult], str] = {}
    # finished hosts arrive here (one queue, not a waiter on every running host per wake-up)
    finished: SimpleQueue[Future[HostResult]] = SimpleQueue()
    results: list[HostResult] = []
    fatal: BaseException | None = None
    while queue or in_flight:
        try:
            while queue and len(in_flight) < forks and not _noticed_stop(run):
                hp = queue.popleft()
                run.move("queued", "running")
                future = executor.submit(run.run_one, play, hp)
                in_flight[future] = hp.host
                future.add_done_callback(finished.put)
            if _noticed_stop(run) and queue:
                _not_started(run, play.name, list(queue))
                queue.clear()
            if not in_flight:
                break
            if run.abort.is_set():
                _abandon(run, play.name, list(in_flight.values()))
                break
            try:
                ready = [finished.get(timeout=0.2)]
            except Empty:
                # a quiet moment: also picks up a host whose notice an interrupt cut short
                ready = [future for future in in_flight if future.done()]
            for future in ready:
                if in_flight.pop(future, None) is None:
                    continue  # taken already
                try:
                    outcome = future.result()
                except Exception as exc:  # journal write failed (disk full...): stop, then re-raise
                    fatal = fatal or exc
                    _stop(run, f"internal error: {type(exc).__name__}")
                    continue
                results.append(outcome)
                if outcome.status == "failed" and play.any_errors_fatal:
                    _stop(
                        run,
                        f"play {play.name!r}: host {outcome.host} failed and any_errors_fatal is set",
                        detail={"reason": "any_errors_fatal", "play": play.name, "host": outcome.host},
                    )
        except KeyboardInterrupt:
            _stop(run, "interrupted", interrupted=True)
    if fatal is not None:
        raise fatal
    return results


# ------------------------------------------------------------------------------------------ transports
def transport_session_factory_for(
    explicit: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None
) -> SessionFactoryFor:
    """The real wiring: WinRM sessions from inventory ``ansible_*`` vars, CLI values and environment.

    Connection options are built (and checked: a :class:`ConfigError` names the host and the fix)
    when :func:`rollout` prepares the run, before any host is contacted.
    """
    from kmsadmin.transports import build_options, open_session

    def for_host(host_vars: Mapping[str, Any]) -> SessionFactory:
        name = str(host_vars["inventory_hostname"])
        options = build_options(name, explicit=explicit, hostvars=host_vars, env=env)

        def factory(_: str) -> Any:
            return open_session(options)

        return factory

    return for_host
