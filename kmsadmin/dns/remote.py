"""The Windows side of DNS for KMS: step references and running them on hosts over WinRM.

* ``dns-srv-record`` on a Windows DNS server (``Add-DnsServerResourceRecord -Srv``, DnsServer module);
* ``kms-host-settings`` with only ``dns_publishing`` on KMS hosts
  (``DisableKeyManagementServiceDnsPublishing``, the CIM method behind ``slmgr /cdns`` and ``/sdns``;
  kms-create-host recommends ``/cdns`` where DNS takes no dynamic updates "to prevent event logs
  from collecting failed DNS publishing events");
* ``kms-dns-publish-list`` on KMS hosts (``DnsDomainPublishList``, common-troubleshooting-procedures-kms-dns).

Every step is rendered by :func:`kmsadmin.render.render` and run by a transport session; each result
is parsed into one :class:`StepRun` (a host failure is recorded, never raised, so one dead host does
not stop the others). Logs name host, step and duration only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from kmsadmin import validate
from kmsadmin.dns.records import Action, SrvRecord, relative_name
from kmsadmin.errors import HostError, InvalidInput, KmsAdminError
from kmsadmin.values import DEFAULT_FORKS, RenderedScript, ScriptRef, ScriptResult

log = logging.getLogger("kmsadmin.dns")

#: the kms-host-settings parameters (templates/README.md); '' leaves a setting alone
HOST_SETTINGS = (
    "listening_port",
    "dns_publishing",
    "low_priority",
    "activation_interval",
    "renewal_interval",
)


def srv_record_ref(
    record: SrvRecord, action: Action, *, zone: str | None = None, kms_hosts_group: str | None = None
) -> ScriptRef:
    """The ``dns-srv-record`` step for ``record`` (the zone defaults to the record's domain)."""
    zone_name = validate.domain(zone).lower() if zone else record.domain
    group = (kms_hosts_group or "").strip()
    if group and action != "add":
        raise InvalidInput("--kms-hosts-group", group, "only used when adding a record")
    if any(ch in group for ch in "\r\n\t\"'`$;|&<>%!^()"):
        raise InvalidInput("--kms-hosts-group", group, "a group name such as 'CONTOSO\\KMS Hosts'")
    params: dict[str, str | int] = {
        "action": action,
        "zone_name": zone_name,
        "record_name": relative_name(record.owner, zone_name),
        "kms_host": record.target,
        "kms_port": record.port,
        "priority": record.priority,
        "weight": record.weight,
        "ttl": record.ttl,
        "kms_hosts_group": group,
    }
    return ScriptRef("dns-srv-record", params)


def publishing_ref(enabled: bool) -> ScriptRef:
    """``kms-host-settings`` changing DNS publishing only (the other settings left as they are)."""
    params: dict[str, str | bool] = dict.fromkeys(HOST_SETTINGS, "")
    params["dns_publishing"] = enabled
    return ScriptRef("kms-host-settings", params)


def publish_list_ref(domains: Sequence[str] = (), *, clear: bool = False) -> ScriptRef:
    """``kms-dns-publish-list``: set DnsDomainPublishList to ``domains`` (validated), or clear it."""
    names: list[str] = []
    for item in domains:
        name = validate.domain(item).lower()
        if name not in names:
            names.append(name)
    if clear and names:
        raise InvalidInput("--domains", ",".join(names), "give domains or --clear, not both")
    if not clear and not names:
        raise InvalidInput(
            "--domains", "", "give at least one DNS domain (e.g. contoso.com,branch.contoso.com)"
        )
    return ScriptRef("kms-dns-publish-list", {"domains": ",".join(names), "clear": clear})


def split_domains(text: str) -> list[str]:
    """``a.com, b.com`` -> ``["a.com", "b.com"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


class RunSession(Protocol):
    """What running a step needs from a transport session."""

    def run(self, script: RenderedScript, *, deadline: float | None = None) -> ScriptResult:
        """Run one rendered script."""
        ...

    def close(self) -> None:
        """Close the session."""
        ...


SessionFactory = Callable[[str, Mapping[str, Any]], RunSession]


def winrm_session(explicit: Mapping[str, object] | None = None) -> SessionFactory:
    """Sessions from inventory vars (``ansible_*``), CLI connection options and the environment."""

    def factory(name: str, hostvars: Mapping[str, Any]) -> RunSession:
        from kmsadmin.transports import open_session
        from kmsadmin.transports.options import build_options

        return open_session(build_options(name, explicit, hostvars))

    return factory


@dataclass(slots=True)
class StepRun:
    """One step on one host: the parsed result or the error (with HRESULT, meaning and fix)."""

    host: str
    step: str
    changed: bool = False
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        """The step succeeded."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "host": self.host,
            "step": self.step,
            "ok": self.ok,
            "changed": self.changed,
            "before": self.before,
            "after": self.after,
            "data": self.data,
            "error": self.error,
            "duration": round(self.duration, 3),
        }


def run_step(name: str, hostvars: Mapping[str, Any], ref: ScriptRef, sessions: SessionFactory) -> StepRun:
    """Render ``ref``, run it on host ``name``, parse its one JSON object; never raises for the host."""
    from kmsadmin.facts import parse_outcome, raise_for_error
    from kmsadmin.render import render

    started = time.monotonic()
    run = StepRun(name, ref.step)
    session: RunSession | None = None
    try:
        script = render(ref)
        session = sessions(name, hostvars)
        result = session.run(script)
        outcome = parse_outcome(result)
        run.changed = outcome.changed
        run.before, run.after, run.data = outcome.before, outcome.after, outcome.data
        raise_for_error(result, outcome)
    except HostError as exc:
        run.error = exc.to_dict()
    except KmsAdminError as exc:
        run.error = HostError(name, ref.step, str(exc)).to_dict()
    finally:
        run.duration = time.monotonic() - started
        log.info("host=%s step=%s duration=%.3fs", name, ref.step, run.duration)
        if session is not None:
            try:
                session.close()
            except Exception as exc:  # closing is best effort; the result is already known
                log.debug("host=%s close failed: %s", name, type(exc).__name__)
    return run


def run_on_hosts(
    hosts: Sequence[tuple[str, Mapping[str, Any]]],
    ref: ScriptRef,
    sessions: SessionFactory,
    *,
    forks: int = DEFAULT_FORKS,
) -> list[StepRun]:
    """Run one step on many hosts (one session each, ``forks`` at a time), results in host order."""
    if not hosts:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts)))) as pool:
        futures = [pool.submit(run_step, name, hostvars, ref, sessions) for name, hostvars in hosts]
        return [f.result() for f in futures]
