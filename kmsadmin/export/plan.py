"""Each host's scripts for a playbook, in ``kmsadmin rollout`` order, planned without a connection.

``kmsadmin rollout`` reads facts first and runs only the steps its planner finds necessary. An export
cannot read facts at run time, so it plans every step of the operation (the planners' ``facts=None``
mode, as ``--dry-run``) and relies on the scripts themselves being idempotent: each checks the state
before changing it and answers ``"changed": false`` when there is nothing to do. Running them all,
unconditionally and in plan order, reaches the same end state, and a second run changes nothing.

Host-specific values come from the inventory or from facts gathered at export time (``gather``):

* the GVLK of a client's edition: inventory var ``kmsadmin_edition`` (catalog name) or
  ``kmsadmin_os`` (as ``kmsadmin plan`` reads them), else the gathered edition;
* the KMS host a client is pinned to: the same threshold-aware spread over the play's group as the
  rollout;
* with gathered facts: the preflight (a blocked host gets its problems as a failing step, as the
  rollout would fail it), Server Core (no management tools), and Office products.

``activate`` after a changed KMS target re-activates (``force``), as the rollout's plan does; the
export renders both variants and the runner picks one by whether a target step changed.

The host key is never read here: ``install-host-key`` is rendered with :data:`HOST_KEY_PLACEHOLDER`
in its parameters block, and the secret references of the playbook step are kept so the runner can
read the key at run time.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmsadmin import catalog
from kmsadmin.errors import ConfigError, KmsAdminError
from kmsadmin.facts import FACTS, HostFacts
from kmsadmin.fleet.inventory import Inventory
from kmsadmin.fleet.limit import limited_hosts
from kmsadmin.fleet.playbook import (
    ConvertClientParams,
    EnvRef,
    FileRef,
    Play,
    Playbook,
    ResolveContext,
    SetupHostParams,
    build_args,
)
from kmsadmin.fleet.rollout import kms_assignment
from kmsadmin.operations import Plan, PlannedStep
from kmsadmin.operations.capacity import identify, machine_from_vars
from kmsadmin.operations.convert_client import ConvertClientArgs, plan_convert_client
from kmsadmin.operations.setup_host import SetupHostArgs, plan_setup_host
from kmsadmin.render import render
from kmsadmin.values import DEFAULT_FORKS, RenderedScript, ScriptRef, Secret

#: What stands in the rendered ``install-host-key`` script where the key goes; the runner replaces the
#: quoted literal ``'<placeholder>'`` with the key it reads at run time. Not a product-key shape, so a
#: script run without the replacement fails its own input check (stage Input) and installs nothing.
HOST_KEY_PLACEHOLDER = "kmsadmin-host-key-read-at-run-time"
#: Steps that change where a client looks for KMS; a change means the following activate re-activates.
TARGET_STEPS = frozenset({"set-kms-host", "clear-kms-host", "set-lookup-domain", "clear-lookup-domain"})

FactsGatherer = Callable[[Sequence[str]], Mapping[str, HostFacts | KmsAdminError]]


@dataclass(frozen=True, slots=True)
class ExportStep:
    """One script to run on a host, in order."""

    step: str
    script: RenderedScript
    reason: str = ""
    #: ``activate`` only: the forced variant, run when one of ``after_targets`` reported a change
    forced: RenderedScript | None = None
    #: indices (in the operation's steps) of the target steps that select ``forced``
    after_targets: tuple[int, ...] = ()
    #: the params block holds :data:`HOST_KEY_PLACEHOLDER` for the host key
    needs_host_key: bool = False

    @property
    def signature(self) -> str:
        """What must be equal for two hosts to share a task: the step and how it is wired."""
        flags = f"{'F' if self.forced else ''}{'K' if self.needs_host_key else ''}"
        return f"{self.step}[{flags}{','.join(map(str, self.after_targets))}]"


@dataclass(frozen=True, slots=True)
class HostOperation:
    """One play step (operation) on one host: its scripts, then the read-back."""

    operation: str
    steps: tuple[ExportStep, ...]
    #: the facts script that reads back the result (the rollout's verify)
    verify: RenderedScript
    #: a problem found at export time (gathered facts): the host fails here at run time, as it would
    #: in the rollout's preflight
    failure: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def signature(self) -> str:
        """The shape of this operation (hosts of one shape share one task list)."""
        if self.failure is not None:
            return f"{self.operation}:failed"
        return f"{self.operation}:" + "/".join(s.signature for s in self.steps)


@dataclass(frozen=True, slots=True)
class PlayCall:
    """One step of a play (an operation with its playbook arguments), the same for all its hosts."""

    operation: str
    params: SetupHostParams | ConvertClientParams | None
    #: setup-host: where the host key comes from at run time, tried in order
    host_key_refs: tuple[EnvRef | FileRef, ...] = ()


@dataclass(slots=True)
class PlayExport:
    """A play and, for each host it will run on, its operations in order."""

    play: Play
    calls: tuple[PlayCall, ...]
    hosts: list[str] = field(default_factory=list)
    operations: dict[str, list[HostOperation]] = field(default_factory=dict)


@dataclass(slots=True)
class ExportPlan:
    """Everything an exporter writes: plays in order, per-host scripts, where the inventory is."""

    playbook: Playbook
    inventory: Inventory
    plays: list[PlayExport]
    limit: str | None = None
    gathered: bool = False

    def scripts(self) -> dict[str, RenderedScript]:
        """Every distinct script, by its file name (``<step>-<12 hex of SHA-256>.ps1``)."""
        found: dict[str, RenderedScript] = {}
        for play in self.plays:
            for operations in play.operations.values():
                for op in operations:
                    for item in (*op.steps, None):
                        scripts = [op.verify] if item is None else [item.script, item.forced]
                        for script in scripts:
                            if script is not None:
                                found[script_name(script)] = script
        return found


def script_name(script: RenderedScript) -> str:
    """A content-addressed file name: hosts that run the same script share one file."""
    digest = hashlib.sha256(script.text.encode("utf-8")).hexdigest()[:12]
    return f"{script.step}-{digest}.{script.fmt}"


# ------------------------------------------------------------------------------------------ helpers
def _refs(params: SetupHostParams | ConvertClientParams | None) -> tuple[EnvRef | FileRef, ...]:
    if not isinstance(params, SetupHostParams) or params.host_key is None:
        return ()
    items = params.host_key if isinstance(params.host_key, list) else [params.host_key]
    return tuple(items)


def _edition_from_inventory(host: str, inventory: Inventory) -> str | None:
    entry, _ = identify(machine_from_vars(host, inventory.hosts[host], inventory.group_names(host)))
    return entry.name if entry is not None else None


def _edition_from_facts(facts: HostFacts) -> str | None:
    os = facts.os
    entry = catalog.identify_windows(
        caption=os.caption, edition_id=os.edition_id, build=os.build, sku=os.sku, product_type=os.product_type
    )
    return entry.name if entry is not None else None


def _problems(plan: Plan) -> str:
    return "; ".join(f"{p.message} (fix: {p.remediation})" for p in plan.problems)


def _steps(planned: Sequence[PlannedStep]) -> tuple[ExportStep, ...]:
    """Render a plan's steps; activate after target steps gets its non-forced twin."""
    out: list[ExportStep] = []
    targets: list[int] = []
    for index, item in enumerate(planned):
        ref = item.ref
        needs_key = "product_key" in ref.secrets
        if ref.step in TARGET_STEPS:
            targets.append(index)
        if ref.step == "activate" and ref.params.get("force") is True and targets:
            plain = ScriptRef(ref.step, {**ref.params, "force": False}, ref.secrets, ref.fmt)
            out.append(
                ExportStep(
                    ref.step, render(plain), item.reason, forced=render(ref), after_targets=tuple(targets)
                )
            )
        else:
            out.append(ExportStep(ref.step, render(ref), item.reason, needs_host_key=needs_key))
        if ref.step == "activate":
            targets = []
    return tuple(out)


def _operation(
    operation: str,
    host: str,
    args: Any,
    facts: HostFacts | None,
    inventory: Inventory,
    verify: RenderedScript,
) -> HostOperation:
    if operation == "status" or args is None:
        return HostOperation("status", (), verify)
    if isinstance(args, SetupHostArgs):
        args = dataclasses.replace(args, host_key=Secret(HOST_KEY_PLACEHOLDER))
        notes: tuple[str, ...] = ()
        if facts is not None:
            real = plan_setup_host(host, facts, args)
            if real.blocked:
                return HostOperation(operation, (), verify, failure=_problems(real), notes=real.notes)
            notes = real.notes
            if facts.os.is_core:
                args = dataclasses.replace(args, include_tools=False)
        full = plan_setup_host(host, None, args)
        if full.stop_after:
            raise ConfigError(
                f"host '{host}': phone activation stops for a Confirmation ID between runs; "
                "export a playbook with activation: online, or give confirmation_id"
            )
        return HostOperation(operation, _steps(full.steps), verify, notes=notes)
    if not isinstance(args, ConvertClientArgs):
        raise ConfigError(f"host '{host}': cannot export operation {operation!r}")
    office: list[PlannedStep] = []
    if facts is not None:
        real = plan_convert_client(host, facts, args)
        if real.blocked:
            return HostOperation(operation, (), verify, failure=_problems(real), notes=real.notes)
        office = [s for s in real.steps if s.ref.params.get("application_id") == catalog.OFFICE_APP_ID]
    elif args.office:
        raise ConfigError(
            f"host '{host}': Office products are found on the host; export with --gather to include them"
        )
    if args.key == "auto" and args.edition is None:
        edition = _edition_from_facts(facts) if facts is not None else None
        edition = edition or _edition_from_inventory(host, inventory)
        if edition is None:
            raise ConfigError(
                f"host '{host}': its edition is unknown; set inventory var kmsadmin_edition (see "
                "`kmsadmin keys list`) or kmsadmin_os, or export with --gather"
            )
        args = dataclasses.replace(args, edition=edition)
    full = plan_convert_client(host, None, dataclasses.replace(args, office=False))
    if full.blocked:
        return HostOperation(operation, (), verify, failure=_problems(full))
    return HostOperation(operation, _steps([*full.steps, *office]), verify, notes=full.notes)


# ------------------------------------------------------------------------------------------ entry point
def plan_export(
    playbook: Playbook,
    inventory: Inventory,
    *,
    limit: str | None = None,
    gather: FactsGatherer | None = None,
) -> ExportPlan:
    """Every host's scripts for every play, as the rollout would run them (see the module docstring).

    ``gather(hosts)`` returns facts (or the error met) per host; without it nothing is contacted.
    Raises :class:`ConfigError` for what the rollout would refuse before contacting a host, and for
    what an export cannot know (a client edition with neither inventory vars nor ``gather``).
    """
    limited = limited_hosts(inventory, limit)
    inventory_dir = inventory.path.parent if inventory.path else Path.cwd()
    selected: list[tuple[Play, list[str], dict[str, str]]] = []
    for play in playbook.plays:
        play_hosts = inventory.select(play.hosts)
        assignment = kms_assignment(play, inventory, play_hosts)
        hosts = [h for h in play_hosts if limited is None or h in limited]
        selected.append((play, hosts, assignment))

    facts: dict[str, HostFacts] = {}
    if gather is not None:
        wanted = list(dict.fromkeys(h for _, hosts, _ in selected for h in hosts))
        failed: list[str] = []
        for host, value in gather(wanted).items():
            if isinstance(value, HostFacts):
                facts[host] = value
            else:
                failed.append(f"{host}: {value}")
        if failed:
            shown = "; ".join(failed[:5]) + (f"; and {len(failed) - 5} more" if len(failed) > 5 else "")
            raise ConfigError(f"--gather could not read facts from {len(failed)} host(s): {shown}")

    verify = render(FACTS)
    plays: list[PlayExport] = []
    for play, hosts, assignment in selected:
        calls = tuple(PlayCall(op, params, _refs(params)) for op, params in play.step_calls())
        export = PlayExport(play, calls, hosts=list(hosts))
        for host in hosts:
            host_vars = {**inventory.hosts[host], **play.vars, "inventory_hostname": host}
            ctx = ResolveContext(
                host=host,
                host_vars=host_vars,
                inventory_dir=inventory_dir,
                assigned_kms_host=assignment.get(host),
                env={},
            )
            operations: list[HostOperation] = []
            for call in calls:
                params = call.params
                if isinstance(params, SetupHostParams):
                    # the key is read when the project runs, never here
                    params = params.model_copy(update={"host_key": None})
                args = build_args(call.operation, params, ctx, play)
                operations.append(_operation(call.operation, host, args, facts.get(host), inventory, verify))
            export.operations[host] = operations
        plays.append(export)
    return ExportPlan(playbook, inventory, plays, limit=limit, gathered=gather is not None)


def gatherer_for(inventory: Inventory, forks: int = DEFAULT_FORKS) -> FactsGatherer:
    """Gather facts over WinRM with the rollout's connection options (inventory ``ansible_*`` vars)."""
    from kmsadmin.fleet.rollout import transport_session_factory_for
    from kmsadmin.fleet.runner import gather_facts

    factory_for = transport_session_factory_for()

    def one(host: str) -> HostFacts | KmsAdminError:
        try:
            factory = factory_for({**inventory.hosts[host], "inventory_hostname": host})
            session = factory(host)
        except KmsAdminError as exc:
            return exc
        try:
            return gather_facts(session, host)
        except KmsAdminError as exc:
            return exc
        finally:
            session.close()

    def gather(hosts: Sequence[str]) -> dict[str, HostFacts | KmsAdminError]:
        with ThreadPoolExecutor(max_workers=max(1, forks), thread_name_prefix="kmsadmin-gather") as pool:
            return dict(zip(hosts, pool.map(one, hosts), strict=True))

    return gather


__all__ = [
    "HOST_KEY_PLACEHOLDER",
    "ExportPlan",
    "ExportStep",
    "HostOperation",
    "PlayCall",
    "PlayExport",
    "gatherer_for",
    "plan_export",
    "script_name",
]
