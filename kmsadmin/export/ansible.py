"""Write an :class:`~kmsadmin.export.plan.ExportPlan` as an Ansible project that ansible-core alone runs.

Layout of the project directory::

    site.yml            the plays, in order: same name, hosts pattern, serial, max_fail_percentage,
                        any_errors_fatal; gather_facts: false
    inventory.yml       a copy of the inventory when its one YAML file alone gave every host and
                        variable; otherwise (JSON, INI, several sources such as a file and a host
                        list, Vault, group_vars/host_vars beside
                        the inventory or the playbook) each host with the vars kmsadmin merged for
                        it; a value read from Ansible Vault is written as a ``!vault`` value again
    ansible.cfg         inventory = inventory.yml, no host key checking, explicit gathering
    host_vars/HOST.yml  kmsadmin_export: for each play, the host's scripts in order (file names)
    scripts/*.ps1       the rendered scripts, content-addressed (hosts with equal scripts share a file)
    README.md           how to run it and where the host key comes from
    .kmsadmin-export    marks the directory as an export (a new export replaces it)

The summary (:func:`write_project`, ``kmsadmin export ansible --json``): ``directory``, ``plays``
(name, hosts), ``hosts``, ``scripts``, ``gathered``, ``notes`` and ``inventory``, how inventory.yml
was made: ``copied`` (one YAML file, as it is), else written with each host's merged vars, and the
value says why (the first that applies): ``merged from several sources`` (several ``-i``, a directory,
or a host list, alone or with a file: every host of every source is written), ``written with merged
vars`` (group_vars/host_vars beside the inventory or the playbook), ``converted from a dynamic
inventory script``, ``written with vault values encrypted again``, ``converted from INI``,
``converted from JSON``.

Every step is one ``ansible.builtin.raw`` task whose argument is the script file's text (the psrp
connection plugin runs it as one PowerShell pipeline), with ``register``, ``changed_when`` from the
JSON result's ``changed`` and ``failed_when`` on its ``error`` (or no JSON, or a non-zero rc). After
each operation a read-back task runs the ``facts`` script and fails as the rollout's verify does.

The host key. ``install-host-key`` is written with a placeholder in its parameters block
(:data:`~kmsadmin.export.plan.HOST_KEY_PLACEHOLDER`). Its task reads the key when it runs, from the
same references the playbook gives (a file named by a host var, resolved against the original
inventory's directory as the rollout does; a literal file; an environment variable), through
``lookup('ansible.builtin.file')`` / ``lookup('ansible.builtin.env')``, and swaps it into the
script text in memory. The task has ``no_log: true``, so neither its arguments nor its result are
printed or logged. The key is never in the project directory. Caveat (from ansible-core's psrp
connection plugin): at ``-vvv`` and above the plugin prints each command's text ("PSRP: EXEC"),
whatever ``no_log`` says, so the key would be shown; run this project below ``-vvv``.

Vault. When the inventory is written with its vars merged per host, every value whose text was read
from Ansible Vault (a ``!vault`` value, or a string of a vault-encrypted vars file) is written as an
inline ``!vault`` value, encrypted again (:func:`kmsadmin.fleet.vault.encrypt`) with the password and
vault id it was decrypted with; so is a plain value equal to such a text, and a templated value
(``'{{ vault_password }}'``) that contains one. Other values stay as they were. Ansible needs the same
``--vault-id`` / ``--vault-password-file`` to run the project.

Failures. The rollout never stops for a failed host unless a play has ``max_fail_percentage`` or
``any_errors_fatal``; Ansible stops the whole playbook when every host of a ``serial`` batch fails
(a new KMS host refuses the first clients with 0xC004F038, so the canary batch would stop it). Plays
without a failure policy therefore run their tasks in a block whose ``rescue`` records the failure;
the host sits out the later plays (``meta: end_host``) and a last play, ``kmsadmin: failed hosts``,
fails it, so the recap and the exit code (2) still show it. Plays with a failure policy keep
Ansible's own semantics, which match the rollout's. Unreachable hosts follow Ansible's rules.

Waiting hosts. The rollout reports a client whose ``activate`` was refused with 0xC004F038 (its KMS
host has not counted enough clients yet; Windows retries by itself) as ``waiting``, not failed: it
counts toward no failure policy and takes part in later plays. The export does the same: that
``activate`` task does not fail on 0xC004F038, a fact records the wait and the host ends the play
(``meta: end_host``, later plays still run for it); the last play fails it with the explanation,
so the recap and the exit code (2) still show it is not activated.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from kmsadmin import catalog
from kmsadmin.errors import ConfigError
from kmsadmin.export.plan import (
    HOST_KEY_PLACEHOLDER,
    ExportPlan,
    HostOperation,
    PlayCall,
    PlayExport,
    script_name,
)
from kmsadmin.fleet.inventory import Inventory
from kmsadmin.fleet.playbook import EnvRef, FileRef, SetupHostParams, VarRef
from kmsadmin.fleet.vault import VaultSecret, encrypt
from kmsadmin.operations.setup_host import KMS_HOST_SETTINGS

MARKER = ".kmsadmin-export"
FAILED_PLAY = "kmsadmin: failed hosts"
#: the single-quote characters PowerShell treats alike (kmsadmin.render.PS_SINGLE_QUOTES), as a regex
_QUOTES_CLASS = "['\u2018\u2019\u201a\u201b]"


# ------------------------------------------------------------------------------------------ expressions
def _result_ok(var: str) -> str:
    return f"({var}.stdout | default('') | trim).startswith('{{')"


def changed_when(var: str) -> str:
    """The step's JSON says ``changed``."""
    return f"{_result_ok(var)} and ((({var}.stdout | from_json).changed | default(false)) is true)"


def failed_when(var: str) -> str:
    """A non-zero rc, no JSON object, or an ``error`` member in it."""
    return (
        f"({var}.rc | default(1)) != 0 or not {_result_ok(var)}"
        f" or (({var}.stdout | from_json).error | default(none)) is not none"
    )


def waiting_when(var: str) -> str:
    """The step's JSON ``error`` is SL_E_VL_NOT_ENOUGH_COUNT: the client waits for its KMS host's count."""
    error = f"(({var}.stdout | from_json).error | default({{}}, true))"
    code = catalog.NOT_ENOUGH_COUNT.lower()
    return f"{_result_ok(var)} and ({error}.hresult | default('', true) | string | lower) == '{code}'"


def _waiting_tasks(var: str, play_name: str) -> list[dict[str, Any]]:
    """After convert-client's ``activate``: record a wait for the KMS count and end the host's play."""
    waiting = waiting_when(var)
    return [
        {
            "name": "convert-client: waiting for the KMS host's count",
            "ansible.builtin.set_fact": {
                "kmsadmin_waiting_play": play_name,
                "kmsadmin_waiting_message": f"{{{{ ({var}.stdout | from_json).error.message | default('') }}}}",
            },
            "when": waiting,
        },
        {
            "name": "convert-client: a waiting host ends this play (it activates by itself later)",
            "ansible.builtin.meta": "end_host",
            "when": waiting,
        },
    ]


def _jinja_literal(value: Any) -> str:
    return "true" if value is True else "false" if value is False else json.dumps(value)


def verify_failed_when(var: str, operation: str, params: Any) -> str:
    """The rollout's verify: Windows licensed (convert-client), a KMS host with the asked settings."""
    base = failed_when(var)
    data = f"({var}.stdout | from_json).data"
    if operation == "convert-client":
        status = (
            f"({data}.products | default([], true)"
            f" | selectattr('application_id', 'match', '(?i){catalog.WINDOWS_APP_ID}$')"
            " | rejectattr('license_is_addon') | rejectattr('is_kms_host')"
            " | map(attribute='license_status') | first | default(none))"
        )
        return f"{base} or {status} != 1"
    if operation == "setup-host" and isinstance(params, SetupHostParams):
        checks = [f"not ({data}.service.is_kms_host is true)"]
        for name in KMS_HOST_SETTINGS:
            wanted = getattr(params, name)
            if wanted is not None:
                checks.append(f"{data}.service.{name} != {_jinja_literal(wanted)}")
        return f"{base} or " + " or ".join(checks)
    return base


def _ref_expressions(ref: EnvRef | FileRef, inventory_dir: Path, play_dir: Path) -> tuple[str, str, str]:
    """(condition, value, description) of one secret reference, as the rollout reads it."""
    if isinstance(ref, EnvRef):
        value = f"lookup('ansible.builtin.env', {json.dumps(ref.env)})"
        return f"({value} | length > 0)", value, f"environment variable {ref.env}"
    if isinstance(ref.file, VarRef):
        name = ref.file.var
        raw = f"({name} | string | expanduser)"
        path = f"({raw} if {raw}.startswith('/') else kmsadmin_export_inventory_dir ~ '/' ~ {raw})"
        condition = f"({name} | default('', true) | string | length > 0)"
        return condition, f"lookup('ansible.builtin.file', {path})", f"host var {name}"
    literal = Path(ref.file).expanduser()
    absolute = literal if literal.is_absolute() else (play_dir / literal).resolve()
    return "true", f"lookup('ansible.builtin.file', {json.dumps(str(absolute))})", f"file {ref.file}"


def host_key_expressions(call: PlayCall, inventory_dir: Path, play_dir: Path) -> tuple[str, str, str]:
    """(is any reference set, the key's quoted PowerShell literal, what was tried) for a task."""
    parts = [_ref_expressions(r, inventory_dir, play_dir) for r in call.host_key_refs]
    chain = "''"
    for condition, value, _ in reversed(parts):
        chain = f"({value} if {condition} else {chain})"
    first_line = f"(({chain} | string).splitlines() | map('trim') | select | list | first | default(''))"
    doubled = f'({first_line} | regex_replace("({_QUOTES_CLASS})", "\\\\1\\\\1"))'
    quoted = f'"\'" ~ {doubled} ~ "\'"'
    any_set = " or ".join(c for c, _, _ in parts) or "false"
    tried = ", ".join(d for _, _, d in parts)
    return any_set, quoted, tried


# ------------------------------------------------------------------------------------------ tasks
def _script(path_expr: str) -> str:
    return f"{{{{ lookup('ansible.builtin.file', playbook_dir ~ '/' ~ {path_expr}) }}}}"


def _step_tasks(
    op: HostOperation, call: PlayCall, prefix: str, export: ExportPlan, play: PlayExport
) -> list[dict[str, Any]]:
    """The tasks of one operation shape; ``kmsadmin_op`` is the host's entry (block var)."""
    tasks: list[dict[str, Any]] = []
    name = op.operation
    if op.failure is not None:
        return [{"name": f"{name}: preflight", "ansible.builtin.fail": {"msg": "{{ kmsadmin_op.failure }}"}}]
    inventory_dir = (export.inventory.path or Path("inventory.yml")).resolve().parent
    registered: list[str] = []
    for index, step in enumerate(op.steps):
        var = f"{prefix}_{index}"
        registered.append(var)
        path = f"kmsadmin_op.scripts[{index}]"
        task: dict[str, Any] = {"name": f"{name}: {step.step}"}
        if step.forced is not None:
            changed = " or ".join(f"({registered[i]} is changed)" for i in step.after_targets)
            path = f"(kmsadmin_op.forced[{index}] if ({changed}) else kmsadmin_op.scripts[{index}])"
        raw = _script(path)
        if step.needs_host_key:
            any_set, quoted, tried = host_key_expressions(call, inventory_dir, play.play.source.parent)
            tasks.append(
                {
                    "name": f"{name}: a host key reference is set",
                    "ansible.builtin.assert": {
                        "that": [any_set],
                        "fail_msg": f"no host key: none of {tried} is set",
                        "quiet": True,
                    },
                }
            )
            placeholder = json.dumps(f"'{HOST_KEY_PLACEHOLDER}'")
            raw = (
                f"{{{{ lookup('ansible.builtin.file', playbook_dir ~ '/' ~ {path})"
                f" | replace({placeholder}, kmsadmin_host_key_literal) }}}}"
            )
            # evaluated only when the task runs, in memory; no_log keeps args and result out of output
            task["no_log"] = True
            task["vars"] = {"kmsadmin_host_key_literal": f"{{{{ {quoted} }}}}"}
        task["ansible.builtin.raw"] = raw
        task["register"] = var
        task["changed_when"] = changed_when(var)
        task["failed_when"] = failed_when(var)
        waits = name == "convert-client" and step.step == "activate"
        if waits:
            task["failed_when"] = f"({failed_when(var)}) and not ({waiting_when(var)})"
        tasks.append(task)
        if waits:
            tasks.extend(_waiting_tasks(var, play.play.name))
    verify = f"{prefix}_verify"
    tasks.append(
        {
            "name": f"{name}: verify" if name != "status" else "status: facts",
            "ansible.builtin.raw": _script("kmsadmin_op.verify"),
            "register": verify,
            "changed_when": False,
            "failed_when": verify_failed_when(verify, name, call.params),
        }
    )
    return tasks


def _shapes(play: PlayExport, call_index: int) -> dict[str, HostOperation]:
    shapes: dict[str, HostOperation] = {}
    for host in play.hosts:
        op = play.operations[host][call_index]
        shapes.setdefault(op.signature, op)
    return shapes


def _play_tasks(export: ExportPlan, play_index: int, play: PlayExport) -> list[dict[str, Any]]:
    key = json.dumps(play.play.name)
    tasks: list[dict[str, Any]] = [
        {
            "name": "kmsadmin export: this host was exported",
            "ansible.builtin.assert": {
                "that": [f"kmsadmin_export is defined and {key} in kmsadmin_export"],
                "fail_msg": "this host has no scripts in the export for this play"
                + (f" (exported with --limit {export.limit!r}: use the same --limit)" if export.limit else "")
                + "; export again",
                "quiet": True,
            },
        }
    ]
    for call_index, call in enumerate(play.calls):
        shapes = _shapes(play, call_index)
        for shape_index, op in enumerate(shapes.values()):
            prefix = f"kmsadmin_r{play_index}_{call_index}_{shape_index}"
            block: dict[str, Any] = {
                "name": f"{call.operation} ({call_index + 1} of {len(play.calls)})",
                "vars": {"kmsadmin_op": f"{{{{ kmsadmin_export[{key}][{call_index}] }}}}"},
                "block": _step_tasks(op, call, prefix, export, play),
            }
            if len(shapes) > 1:
                block["when"] = f"kmsadmin_export[{key}][{call_index}].shape == {shape_index}"
            tasks.append(block)
    return tasks


def _uses_rescue(play: PlayExport) -> bool:
    return play.play.max_fail_percentage is None and not play.play.any_errors_fatal


def _may_wait(play: PlayExport) -> bool:
    return any(call.operation == "convert-client" for call in play.calls)


def build_site(export: ExportPlan) -> list[dict[str, Any]]:
    """The plays of ``site.yml``."""
    inventory_dir = (export.inventory.path or Path("inventory.yml")).resolve().parent
    plays: list[dict[str, Any]] = []
    rescuing = False
    for index, play in enumerate(export.plays):
        source = play.play
        entry: dict[str, Any] = {"name": source.name, "hosts": source.hosts}
        if source.serial is not None:
            entry["serial"] = source.serial
        if source.max_fail_percentage is not None:
            share = source.max_fail_percentage
            entry["max_fail_percentage"] = int(share) if share == int(share) else share
        if source.any_errors_fatal:
            entry["any_errors_fatal"] = True
        entry["gather_facts"] = False
        entry["vars"] = {**source.vars, "kmsadmin_export_inventory_dir": str(inventory_dir)}
        tasks = _play_tasks(export, index, play)
        pre: list[dict[str, Any]] = []
        if rescuing:
            pre.append(
                {
                    "name": "kmsadmin export: a host that failed in an earlier play sits this one out",
                    "ansible.builtin.meta": "end_host",
                    "when": "kmsadmin_failed_play is defined",
                }
            )
        if _uses_rescue(play):
            rescuing = True
            tasks = [
                {
                    "name": source.name,
                    "block": tasks,
                    "rescue": [
                        {
                            "name": "kmsadmin export: record the failure (the host sits out later plays)",
                            "ansible.builtin.set_fact": {
                                "kmsadmin_failed_play": source.name,
                                "kmsadmin_failed_task": "{{ ansible_failed_task.name }}",
                            },
                        }
                    ],
                }
            ]
        entry["tasks"] = pre + tasks
        plays.append(entry)
    last: list[dict[str, Any]] = []
    if rescuing:
        last.append(
            {
                "name": "kmsadmin export: report a host that failed",
                "ansible.builtin.fail": {
                    "msg": "failed in play '{{ kmsadmin_failed_play }}' at task '{{ kmsadmin_failed_task }}'"
                },
                "when": "kmsadmin_failed_play is defined",
            }
        )
    if any(_may_wait(play) for play in export.plays):
        last.append(
            {
                "name": "kmsadmin export: report a host waiting for its KMS host's count",
                "ansible.builtin.fail": {
                    "msg": "waiting in play '{{ kmsadmin_waiting_play }}': "
                    f"{catalog.NOT_ENOUGH_COUNT} {{{{ kmsadmin_waiting_message }}}}; {catalog.waiting_note()}"
                },
                "when": "kmsadmin_waiting_play is defined",
            }
        )
    if last:
        plays.append({"name": FAILED_PLAY, "hosts": "all", "gather_facts": False, "tasks": last})
    return plays


def build_host_vars(export: ExportPlan) -> dict[str, dict[str, Any]]:
    """``host_vars/HOST.yml`` contents: per play, per operation, the host's script files."""
    result: dict[str, dict[str, Any]] = {}
    for play in export.plays:
        shape_ids = [{sig: i for i, sig in enumerate(_shapes(play, c))} for c in range(len(play.calls))]
        for host in play.hosts:
            entries: list[dict[str, Any]] = []
            for call_index, op in enumerate(play.operations[host]):
                entries.append(
                    {
                        "operation": op.operation,
                        "shape": shape_ids[call_index][op.signature],
                        "scripts": [f"scripts/{script_name(s.script)}" for s in op.steps],
                        "forced": [
                            f"scripts/{script_name(s.forced)}" if s.forced else None for s in op.steps
                        ],
                        "verify": f"scripts/{script_name(op.verify)}",
                        "failure": op.failure,
                    }
                )
            result.setdefault(host, {}).setdefault("kmsadmin_export", {})[play.play.name] = entries
    return result


# ------------------------------------------------------------------------------------------ writing
class _Vault(str):
    """Vault text to write as an inline ``!vault`` value."""

    __slots__ = ()


class _Dumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that also writes :class:`_Vault` values as ``!vault |`` blocks."""


_Dumper.add_representer(_Vault, lambda dumper, text: dumper.represent_scalar("!vault", str(text), style="|"))


def _dump(value: Any) -> str:
    return yaml.dump(
        value, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100_000, allow_unicode=True
    )


class _Revaulter:
    """Writes the texts read from Vault (or templated from one) of host vars as :class:`_Vault` values.

    Equal texts under one secret share one envelope (one PBKDF2 per distinct value, not per host: a
    group's vaulted password merged into 10,000 hosts is encrypted once).
    """

    def __init__(self, vaulted: Mapping[str, VaultSecret]) -> None:
        self.vaulted = vaulted
        self.done: dict[tuple[str, str, bytes], _Vault] = {}

    def secret_of(self, text: str, templated: bool) -> VaultSecret | None:
        """The secret to vault ``text`` with: a text read from Vault, or templated from one; else None."""
        if text in self.vaulted:
            return self.vaulted[text]
        if templated:
            for secret_text, secret in self.vaulted.items():
                if secret_text in text:
                    return secret
        return None

    def value(self, value: Any, templated: bool) -> Any:
        if isinstance(value, str):
            secret = self.secret_of(value, templated)
            if secret is None:
                return value
            key = (value, secret.label, secret.password)
            if key not in self.done:
                self.done[key] = _Vault(encrypt(value, secret))
            return self.done[key]
        if isinstance(value, dict):
            return {k: self.value(v, templated) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v, templated) for v in value]
        return value

    def host_vars(self, inv: Inventory, host: str) -> dict[str, Any]:
        values = dict(inv.hosts[host])
        if not self.vaulted:
            return values
        templated = inv.templated.get(host, frozenset())
        return {k: self.value(v, k in templated) for k, v in values.items()}


#: the ``inventory`` value of the summary (``--json``): how the project's inventory.yml was made
INVENTORY_COPIED = "copied"
INVENTORY_MERGED_VARS = "written with merged vars"
INVENTORY_SEVERAL_SOURCES = "merged from several sources"
INVENTORY_VAULT = "written with vault values encrypted again"
INVENTORY_JSON = "converted from JSON"
INVENTORY_INI = "converted from INI"
INVENTORY_SCRIPT = "converted from a dynamic inventory script"


def _is_script(path: Path) -> bool:
    """An executable file starting with ``#!`` (the inventory loader runs it with ``--list``)."""
    if not os.access(path, os.X_OK):
        return False
    with path.open("rb") as handle:
        return handle.read(2) == b"#!"


def _inventory_origin(export: ExportPlan) -> tuple[str | None, str]:
    """The original inventory text when it can be copied as it is, and the summary's ``inventory`` value.

    The text is copied only when it alone is the inventory: one YAML file, no vault, no
    group_vars/host_vars beside it, none beside the playbook either (the project is one directory:
    Ansible would not see those); otherwise each host is written with the vars kmsadmin merged for it,
    and the value says why (the first reason that applies, in this order).
    """
    inv = export.inventory
    path = inv.path
    # a host list has no path: with a file it is one more source (the file alone lacks its hosts)
    if path is None or len(inv.sources) + len(inv.host_lists) > 1 or not path.is_file():
        return None, INVENTORY_SEVERAL_SOURCES
    if inv.vars_files or any((path.parent / d).exists() for d in ("group_vars", "host_vars")):
        return None, INVENTORY_MERGED_VARS
    if _is_script(path):
        return None, INVENTORY_SCRIPT
    text = path.read_text(encoding="utf-8-sig")
    if inv.vaulted or "!vault" in text or "$ANSIBLE_VAULT" in text:
        return None, INVENTORY_VAULT
    suffix = path.suffix.lower()
    # as the loader reads it: YAML by extension, or a file without extension that is a YAML mapping; else INI
    if suffix not in (".yml", ".yaml", ".json") and (suffix or not _is_yaml_mapping(text)):
        return None, INVENTORY_INI
    if suffix == ".json" or text.lstrip().startswith(("{", "[")):
        return None, INVENTORY_JSON
    return text, INVENTORY_COPIED


def _is_yaml_mapping(text: str) -> bool:
    try:
        return isinstance(yaml.safe_load(text), Mapping)
    except yaml.YAMLError:
        return False


def _inventory_text(export: ExportPlan) -> tuple[str, str]:
    """The inventory to write and the summary's ``inventory`` value (how it was made)."""
    original, how = _inventory_origin(export)
    if original is not None:
        return original, how
    inv = export.inventory
    groups: dict[str, Any] = {}
    for group, members in inv.groups.items():
        if group in ("all", "ungrouped"):
            continue
        children = set(inv.children.get(group, ()))
        child_hosts = {h for c in children for h in inv.groups.get(c, ())}
        entry: dict[str, Any] = {}
        own = [h for h in members if h not in child_hosts]
        if own:
            entry["hosts"] = dict.fromkeys(own)
        if children:
            entry["children"] = dict.fromkeys(inv.children.get(group, ()))
        groups[group] = entry or None
    revault = _Revaulter(inv.vaulted)
    hosts = {h: revault.host_vars(inv, h) for h in inv.hosts}
    data = {"all": {"hosts": hosts, "children": groups}}
    return "# converted by kmsadmin export ansible from the inventory (vars merged per host)\n" + _dump(
        data
    ), how


def _readme(export: ExportPlan, source: str) -> str:
    plays = "\n".join(
        f"- **{p.play.name}** (`hosts: {p.play.hosts}`): {len(p.hosts)} host(s), "
        + ", ".join(c.operation for c in p.calls)
        for p in export.plays
    )
    refs = list(
        dict.fromkeys(
            _ref_expressions(r, Path("."), p.play.source.parent)[2]
            for p in export.plays
            for c in p.calls
            for r in c.host_key_refs
        )
    )
    key_text = (
        "The host key is read at run time from the first of: "
        + ", ".join(refs)
        + " (as the rollout reads it; "
        "a relative path in a host var is relative to the original inventory's directory). It is swapped "
        "into the `install-host-key` script in memory by a `no_log: true` task and is never written here. "
        "Do not run this project at `-vvv` or above: ansible-core's psrp connection plugin prints command "
        "text at that level whatever `no_log` says."
        if refs
        else "No step of this rollout needs a host key."
    )
    return f"""# Ansible export of a kmsadmin rollout

Exported by `kmsadmin export ansible` from `{source}`{" with --limit " + repr(export.limit) if export.limit else ""}{" (facts gathered at export time)" if export.gathered else ""}.
Do not edit: export again after changing the playbook or the inventory.

    ansible-playbook site.yml{" --limit " + repr(export.limit) if export.limit else ""}

Plays, in order:

{plays}

Every task is `ansible.builtin.raw` with one rendered kmsadmin script (`scripts/`, chosen per host by
`host_vars/`). Each script checks the host's state before changing it and prints one JSON object;
`changed_when` reads its `changed`, `failed_when` its `error`. A second run changes nothing.

{key_text}

A host that fails in a play without `max_fail_percentage` does not stop the others (as in kmsadmin):
it is recorded, sits out later plays, and fails in the last play, `{FAILED_PLAY}`.

A client whose activation the KMS host refuses with {catalog.NOT_ENOUGH_COUNT} (it has not counted enough
clients yet) is *waiting*, not failed (as in kmsadmin): it counts toward no `max_fail_percentage`, ends
its play, takes part in later plays, and fails in `{FAILED_PLAY}` with the explanation. Windows retries
the activation by itself every 2 hours; running the project again finishes it.
"""


def _prepare_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise ConfigError(f"{out} is not empty and not a kmsadmin export; choose an empty directory")
        for name in ("scripts", "host_vars"):
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


#: inventory host names that can be a file name under host_vars/ on every system Ansible runs on
_FILE_SAFE_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._:@-]{0,199}")


def _check_host_file_names(hosts: Iterable[str]) -> None:
    """Refuse host names that would write outside host_vars/ or are not one plain file name there."""
    bad = sorted(h for h in hosts if not _FILE_SAFE_HOST.fullmatch(h))
    if bad:
        shown = ", ".join(repr(h) for h in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ConfigError(
            f"inventory host name(s) {shown} cannot be a file name under host_vars/ (letters, digits and "
            "._:@- only, not starting with '.' or '-', at most 200 characters); rename the host in the "
            "inventory and keep its address in ansible_host"
        )


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, created that way (never readable for a moment)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_project(export: ExportPlan, out: Path, *, source: str | None = None) -> dict[str, Any]:
    """Write the project into ``out`` (empty, missing, or an earlier export); return a summary."""
    host_vars = build_host_vars(export)
    _check_host_file_names(host_vars)
    _prepare_dir(out)
    scripts = export.scripts()
    (out / "scripts").mkdir()
    for name, script in scripts.items():
        (out / "scripts" / name).write_text(script.text, encoding="utf-8", newline="")
    (out / "host_vars").mkdir()
    header = "# generated by kmsadmin export ansible: this host's scripts per play (no secrets)\n"
    host_dir = (out / "host_vars").resolve()
    for host, values in host_vars.items():
        target = host_dir / f"{host}.yml"
        if target.parent != host_dir:  # defence in depth: checked above already
            raise ConfigError(f"host name {host!r} would be written outside {host_dir}")
        target.write_text(header + _dump(values), encoding="utf-8")
    origin = source or str(export.playbook.path)
    site = build_site(export)
    (out / "site.yml").write_text(
        f"# generated by kmsadmin export ansible from {origin}; run: ansible-playbook site.yml\n"
        + _dump(site),
        encoding="utf-8",
    )
    text, how = _inventory_text(export)
    # it may hold passwords: created 0600, never readable by others even for a moment
    _write_private(out / "inventory.yml", text)
    (out / "ansible.cfg").write_text(
        "[defaults]\ninventory = inventory.yml\ngathering = explicit\nhost_key_checking = False\n"
        "retry_files_enabled = False\n",
        encoding="utf-8",
    )
    (out / "README.md").write_text(_readme(export, origin), encoding="utf-8")
    (out / MARKER).write_text("kmsadmin export ansible\n", encoding="utf-8")
    return {
        "directory": str(out),
        "plays": [{"name": p.play.name, "hosts": len(p.hosts)} for p in export.plays],
        "hosts": len(host_vars),
        "scripts": len(scripts),
        "inventory": how,
        "gathered": export.gathered,
        "notes": sorted(
            {n for p in export.plays for ops in p.operations.values() for op in ops for n in op.notes}
        ),
    }
