"""Rollout playbooks: YAML lists of plays, validated with pydantic; ``playbooks/schema.json`` is generated.

A playbook is a list of plays, run in order. Each play targets an Ansible host pattern and runs its
steps on every host, in ``serial`` batches::

    - name: KMS clients
      hosts: clients:!kms_hosts
      serial: [1, "10%", "50%"]        # a canary, then bigger batches; the last size repeats
      max_fail_percentage: 10          # more failures than this in a batch stops the rollout
      steps:
        - convert-client:
            kms_host: {group: kms_hosts, var: kmsadmin_fqdn}   # spread clients over the KMS hosts

    - import_playbook: kms-hosts.yml   # another playbook's plays, inserted here

Steps are ``setup-host``, ``convert-client`` and ``status``, with the arguments of
:class:`~kmsadmin.operations.setup_host.SetupHostArgs` and
:class:`~kmsadmin.operations.convert_client.ConvertClientArgs` under the same names, checked with
:mod:`kmsadmin.validate`. Secrets are only ever referenced: ``host_key: {env: VAR}`` or
``{file: PATH}`` (PATH may be ``{var: NAME}``, a host var naming the file), or a list of such
references tried in order. A literal key in a playbook is refused: playbooks live in version control.
Only public GVLKs may be written as a client ``key``.

Regenerate the schema after changing a model: ``python -m kmsadmin.fleet.playbook > playbooks/schema.json``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    StringConstraints,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from kmsadmin import validate
from kmsadmin.errors import ConfigError, KmsAdminError
from kmsadmin.fleet.yamlsource import Document, config_error, load_document
from kmsadmin.operations.convert_client import ConvertClientArgs
from kmsadmin.operations.setup_host import DEFAULT_PROFILES, SetupHostArgs
from kmsadmin.values import Secret

SCHEMA_ID = "https://kmsadmin.invalid/playbook.schema.json"
STEP_NAMES = ("setup-host", "convert-client", "status")
_VAR_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"

VarName = Annotated[str, StringConstraints(pattern=_VAR_NAME)]
Percent = Annotated[str, StringConstraints(pattern=r"^(100|[1-9][0-9]?)%$")]
BatchSize = Annotated[int, Field(ge=1)] | Percent


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ------------------------------------------------------------------------------------- references
class VarRef(_Strict):
    """``{var: NAME}``: the value of a host var (inventory, then play vars)."""

    var: VarName


class EnvRef(_Strict):
    """``{env: VAR}``: read the secret from an environment variable of the kmsadmin process."""

    env: Annotated[str, StringConstraints(pattern=_ENV_NAME)]


class FileRef(_Strict):
    """``{file: PATH}`` or ``{file: {var: NAME}}``: read the secret from a file (first line).

    A literal relative PATH is relative to the playbook; a path from a host var is relative to the
    inventory file.
    """

    file: Annotated[str, StringConstraints(min_length=1)] | VarRef


SecretRef = EnvRef | FileRef


class KmsHostGroup(_Strict):
    """``{group: kms_hosts, var: kmsadmin_fqdn}``: spread the play's hosts over that group.

    Each client gets one host of the group, named by ``var`` (or the inventory name when the var is
    unset): round robin in inventory order over as many hosts as the clients can each bring to their
    activation threshold (:func:`kmsadmin.operations.capacity.assign_clients`). The assignment depends only on the inventory and the play's
    ``hosts:`` (not on ``--limit``), so a resumed or limited run pins each client to the same host.
    """

    group: Annotated[str, StringConstraints(min_length=1)]
    var: VarName | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None


def _refuse_literal_secret(value: object, what: str) -> object:
    if isinstance(value, str):
        raise ValueError(
            f"a literal {what} is refused in a playbook (playbooks are kept in version control); "
            "reference it instead: {env: VAR} or {file: PATH} or {file: {var: NAME}}"
        )
    if isinstance(value, list):
        for item in value:
            _refuse_literal_secret(item, what)
    return value


def _wrap(exc: KmsAdminError) -> ValueError:
    return ValueError(str(exc))


def _csvlk_group(value: str) -> str:
    from kmsadmin import catalog

    try:
        return str(catalog.csvlk_group(value).name)
    except KmsAdminError as exc:
        raise _wrap(exc) from None


# ------------------------------------------------------------------------------------- step arguments
class SetupHostParams(_Strict):
    """Arguments of ``setup-host`` (names as in SetupHostArgs)."""

    host_key: SecretRef | Annotated[list[SecretRef], Field(min_length=1)] | None = None
    csvlk: str | VarRef | Annotated[list[VarRef], Field(min_length=1)] | None = None
    activation: Literal["online", "phone"] = "online"
    confirmation_id: str | None = None
    firewall_profiles: list[str] | str = Field(default_factory=lambda: list(DEFAULT_PROFILES))
    include_tools: bool = True
    listening_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    dns_publishing: bool | None = None
    low_priority: bool | None = None
    activation_interval: int | None = None
    renewal_interval: int | None = None
    assume_updates: bool = False
    #: client subnets SPPSVC-In-TCP must accept (setup-host --allow-from)
    allow_from: list[str] | str = Field(default_factory=list)

    @field_validator("allow_from")
    @classmethod
    def _allow_from(cls, value: list[str] | str) -> list[str]:
        return list(validate.remote_addresses(value)) if value else []

    @field_validator("host_key", mode="before")
    @classmethod
    def _no_literal_key(cls, value: object) -> object:
        return _refuse_literal_secret(value, "host key")

    @field_validator("csvlk")
    @classmethod
    def _csvlk(cls, value: str | VarRef | list[VarRef] | None) -> str | VarRef | list[VarRef] | None:
        return _csvlk_group(value) if isinstance(value, str) else value

    @field_validator("confirmation_id")
    @classmethod
    def _cid(cls, value: str | None) -> str | None:
        return None if value is None else validate.confirmation_id(value)

    @field_validator("firewall_profiles")
    @classmethod
    def _profiles(cls, value: list[str] | str) -> list[str]:
        return list(validate.firewall_profiles(value))

    @field_validator("activation_interval", "renewal_interval")
    @classmethod
    def _interval(cls, value: int | None) -> int | None:
        return None if value is None else validate.interval(value)


class ConvertClientParams(_Strict):
    """Arguments of ``convert-client`` (names as in ConvertClientArgs).

    ``kms_host`` pins a KMS host (slmgr /skms): ``name[:port]`` or a :class:`KmsHostGroup`;
    ``lookup_domain`` sets the SRV lookup domain (slmgr /skms-domain); ``target: auto`` restores DNS
    auto-discovery (slmgr /ckms). Without any of them the KMS settings are kept.
    """

    key: str = "auto"
    edition: str | None = None
    target: Literal["host", "domain", "auto", "keep"] | None = None
    kms_host: str | KmsHostGroup | None = None
    kms_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    lookup_domain: str | None = None
    office: bool = False
    #: slmgr /act-type: which volume activation the clients may use (ad for ADBA only, kms, all)
    act_type: Literal["all", "ad", "kms", "token"] | None = None

    @field_validator("key")
    @classmethod
    def _public_key_only(cls, value: str) -> str:
        if value == "auto":
            return value
        from kmsadmin import catalog

        shown = "…" + value.strip()[-5:]
        try:
            checked = catalog.check_key(value)
        except KmsAdminError as exc:
            raise _wrap(exc) from None
        if not checked.is_gvlk:
            raise ValueError(
                f"key {shown} is not a public KMS client key (GVLK); other keys are secrets and are refused "
                "in a playbook: use key: auto"
            )
        return str(checked.key)

    @field_validator("edition")
    @classmethod
    def _edition(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from kmsadmin import catalog

        try:
            catalog.find_client_key(value)
        except KmsAdminError as exc:
            raise _wrap(exc) from None
        return value

    @field_validator("kms_host")
    @classmethod
    def _kms_host(cls, value: str | KmsHostGroup | None) -> str | KmsHostGroup | None:
        if isinstance(value, str):
            validate.host_port(value)
            return value.strip()
        return value

    @field_validator("lookup_domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        return None if value is None else validate.domain(value)

    @model_validator(mode="after")
    def _one_target(self) -> ConvertClientParams:
        given = [n for n, v in (("kms_host", self.kms_host), ("lookup_domain", self.lookup_domain)) if v]
        if self.target == "auto":
            given.append("target: auto")
        if len(given) > 1:
            raise ValueError(
                f"give only one of kms_host, lookup_domain, target: auto (got {', '.join(given)})"
            )
        implied = "host" if self.kms_host else "domain" if self.lookup_domain else None
        if self.target in ("host", "domain") and implied != self.target:
            needed = "kms_host" if self.target == "host" else "lookup_domain"
            raise ValueError(f"target: {self.target} needs {needed}")
        if self.kms_port is not None and isinstance(self.kms_host, str) and _has_port(self.kms_host):
            raise ValueError("give the port either in kms_host (name:port) or as kms_port, not both")
        return self


def _has_port(text: str) -> bool:
    """Whether ``name:port`` / ``[v6]:port`` carries a port (a bare IPv6 address does not)."""
    return "]:" in text if text.startswith("[") else text.count(":") == 1


class SetupHostStep(_Strict):
    """``- setup-host: {...}``"""

    setup_host: SetupHostParams = Field(alias="setup-host")


class ConvertClientStep(_Strict):
    """``- convert-client: {...}``"""

    convert_client: ConvertClientParams = Field(alias="convert-client")


class StatusStep(_Strict):
    """``- status:`` (read facts and report the license state; changes nothing)."""

    status: None = None


def _step_tag(value: object) -> str | None:
    if isinstance(value, str):
        return "name"
    if isinstance(value, Mapping) and len(value) == 1:
        key = next(iter(value))
        return key if key in STEP_NAMES else None
    if isinstance(value, SetupHostStep):
        return "setup-host"
    if isinstance(value, ConvertClientStep):
        return "convert-client"
    return "status" if isinstance(value, StatusStep) else None


Step = Annotated[
    Annotated[Literal["setup-host", "convert-client", "status"], Tag("name")]
    | Annotated[SetupHostStep, Tag("setup-host")]
    | Annotated[ConvertClientStep, Tag("convert-client")]
    | Annotated[StatusStep, Tag("status")],
    Discriminator(
        _step_tag,
        custom_error_type="step",
        custom_error_message="a step is one of setup-host, convert-client, status, written as '- NAME:' "
        "with its arguments below it",
        custom_error_context={"steps": ", ".join(STEP_NAMES)},
    ),
]


class Play(_Strict):
    """One play: a host pattern, batching and failure policy, and the steps to run on each host."""

    name: Annotated[str, StringConstraints(min_length=1)]
    hosts: Annotated[str, StringConstraints(min_length=1)]
    serial: BatchSize | Annotated[list[BatchSize], Field(min_length=1)] | None = None
    max_fail_percentage: Annotated[float, Field(ge=0, le=100)] | None = None
    any_errors_fatal: bool = False
    vars: dict[str, Any] = Field(default_factory=dict)
    steps: Annotated[list[Step], Field(min_length=1)]

    _source: Path = PrivateAttr(default=Path("."))

    @field_validator("serial", mode="before")
    @classmethod
    def _serial(cls, value: object) -> object:
        items = value if isinstance(value, list) else [value]
        good = bool(items) and all(
            (isinstance(v, int) and not isinstance(v, bool) and v >= 1)
            or (isinstance(v, str) and re.fullmatch(r"(100|[1-9][0-9]?)%", v) is not None)
            for v in items
        )
        if value is not None and not good:
            raise ValueError(
                'serial is a number of hosts (1 or more), a percentage from "1%" to "100%", '
                "or a non-empty list of those (the last one repeats)"
            )
        return value

    @field_validator("vars")
    @classmethod
    def _var_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.match(_VAR_NAME, name):
                raise ValueError(f"invalid variable name {name!r}")
        return value

    @property
    def source(self) -> Path:
        """The playbook file this play was written in (relative file references start there)."""
        return self._source

    def step_calls(self) -> list[tuple[str, SetupHostParams | ConvertClientParams | None]]:
        """Each step as (operation, its arguments)."""
        calls: list[tuple[str, SetupHostParams | ConvertClientParams | None]] = []
        for step in self.steps:
            if step == "setup-host":
                calls.append(("setup-host", SetupHostParams()))
            elif step == "convert-client":
                calls.append(("convert-client", ConvertClientParams()))
            elif isinstance(step, SetupHostStep):
                calls.append(("setup-host", step.setup_host))
            elif isinstance(step, ConvertClientStep):
                calls.append(("convert-client", step.convert_client))
            else:
                calls.append(("status", None))
        return calls


class ImportPlaybook(_Strict):
    """``- import_playbook: other.yml``: that playbook's plays, in place (path relative to this file)."""

    import_playbook: Annotated[str, StringConstraints(min_length=1)]


def _entry_tag(value: object) -> str:
    if isinstance(value, ImportPlaybook) or (isinstance(value, Mapping) and "import_playbook" in value):
        return "import"
    return "play"


Entry = Annotated[
    Annotated[Play, Tag("play")] | Annotated[ImportPlaybook, Tag("import")],
    Discriminator(_entry_tag),
]


class PlaybookFile(BaseModel):
    """The top level of a playbook file: a list of plays and imports."""

    model_config = ConfigDict(frozen=True)

    entries: Annotated[list[Entry], Field(min_length=1)]


@dataclass(frozen=True, slots=True)
class Playbook:
    """A loaded playbook: its plays in order (imports expanded)."""

    path: Path
    plays: tuple[Play, ...]


# ------------------------------------------------------------------------------------- loading
def _describe(loc: Sequence[int | str], value: Any) -> str:
    """``play 'KMS clients': step 1 (convert-client): kms_host`` from a pydantic location."""
    parts: list[str] = []
    rest: list[int | str] = list(loc)
    head = rest[0] if rest else None
    if isinstance(head, int):
        rest = rest[1:]
        if rest and rest[0] in ("play", "import"):
            rest = rest[1:]
        entry = value[head] if isinstance(value, list) and head < len(value) else None
        name = entry.get("name") if isinstance(entry, Mapping) else None
        parts.append(f"play {name!r}" if isinstance(name, str) else f"play {head + 1}")
        step_index = rest[1] if len(rest) >= 2 and rest[0] == "steps" else None
        if isinstance(step_index, int):
            rest = rest[2:]
            tag = rest[0] if rest and rest[0] in (*STEP_NAMES, "name") else None
            rest = rest[1:] if tag else rest
            parts.append(f"step {step_index + 1}" + (f" ({tag})" if tag and tag != "name" else ""))
    noise = ("EnvRef", "FileRef", "VarRef", "KmsHostGroup", "str", "int")
    fields = [
        str(p)
        for p in rest
        if p not in STEP_NAMES
        and str(p) not in noise
        and not str(p).startswith(("function-", "list[", "constrained-"))
    ]
    if fields:
        parts.append(".".join(fields))
    return ": ".join(parts)


def _errors(doc: Document, exc: ValidationError) -> ConfigError:
    lines: list[str] = []
    seen: set[str] = set()
    for error in exc.errors(include_input=False, include_url=False):
        loc = tuple(error["loc"])
        where = _describe(loc[1:] if loc[:1] == ("entries",) else loc, doc.value)
        message = str(error["msg"]).removeprefix("Value error, ")
        text = f"{where}: {message}" if where else message
        if text in seen:
            continue
        seen.add(text)
        line = doc.line(loc[1:] if loc[:1] == ("entries",) else loc)
        lines.append((f"line {line}: " if line is not None else "") + text)
    body = lines[0] if len(lines) == 1 else f"{len(lines)} problems:\n  " + "\n  ".join(lines)
    return ConfigError(f"{doc.path.name}: {body}")


def _load(path: Path, chain: tuple[Path, ...]) -> list[Play]:
    resolved = path.resolve()
    if resolved in chain:
        loop = " → ".join(p.name for p in (*chain, resolved))
        raise ConfigError(f"{path.name}: import_playbook loop: {loop}")
    doc = load_document(path, what="playbook")
    if doc.value is None:
        raise config_error(path, None, "the playbook is empty")
    if not isinstance(doc.value, list):
        raise doc.error((), "a playbook is a list of plays (each starting with '- name:')")
    try:
        parsed = PlaybookFile.model_validate({"entries": doc.value})
    except ValidationError as exc:
        raise _errors(doc, exc) from None
    plays: list[Play] = []
    for entry in parsed.entries:
        if isinstance(entry, ImportPlaybook):
            target = path.parent / entry.import_playbook
            plays.extend(_load(target, (*chain, resolved)))
        else:
            entry._source = path
            plays.append(entry)
    return plays


def load_playbook(path: str | Path) -> Playbook:
    """Load and validate a playbook; every problem is a :class:`ConfigError` with file and line."""
    file = Path(path)
    plays = _load(file, ())
    names: dict[str, None] = {}
    for play in plays:
        if play.name in names:
            raise ConfigError(
                f"{file.name}: two plays are named {play.name!r}; play names identify results "
                "in the journal and must be unique"
            )
        names[play.name] = None
    return Playbook(path=file, plays=tuple(plays))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a playbook file (what ``playbooks/schema.json`` holds)."""
    schema = PlaybookFile.model_json_schema(by_alias=True)
    entries = schema["properties"]["entries"]
    result: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "kmsadmin rollout playbook",
        "description": "A kmsadmin rollout playbook: plays and import_playbook entries, run in order.",
        **{k: v for k, v in entries.items() if k != "title"},
        "$defs": schema.get("$defs", {}),
    }
    return result


def schema_text() -> str:
    """The schema as committed: sorted keys, two-space indent, trailing newline."""
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------------------------- resolution
@dataclass(frozen=True, slots=True)
class ResolveContext:
    """What turning a step into operation arguments needs besides the step itself."""

    host: str
    host_vars: Mapping[str, Any]
    #: where relative paths from host vars start (the inventory's folder)
    inventory_dir: Path
    #: the KMS host this client was assigned by a ``{group: ...}`` reference, if any
    assigned_kms_host: str | None = None
    env: Mapping[str, str] | None = None


def _read_secret(ref: EnvRef | FileRef, ctx: ResolveContext, play: Play) -> str | None:
    env = os.environ if ctx.env is None else ctx.env
    if isinstance(ref, EnvRef):
        return env.get(ref.env) or None
    if isinstance(ref.file, VarRef):
        raw = ctx.host_vars.get(ref.file.var)
        if raw in (None, ""):
            return None
        path = Path(str(raw)).expanduser()
        path = path if path.is_absolute() else ctx.inventory_dir / path
    else:
        path = Path(ref.file).expanduser()
        path = path if path.is_absolute() else play.source.parent / path
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise ConfigError(
            f"host '{ctx.host}': cannot read the host key file {path}: {exc.strerror or exc}"
        ) from None
    return next((line.strip() for line in lines if line.strip()), None)


def _describe_ref(ref: EnvRef | FileRef) -> str:
    if isinstance(ref, EnvRef):
        return f"environment variable {ref.env}"
    return f"host var {ref.file.var}" if isinstance(ref.file, VarRef) else f"file {ref.file}"


def resolve_secret(refs: SecretRef | list[SecretRef], ctx: ResolveContext, play: Play) -> Secret:
    """The first reference that yields a value, checked as a product key."""
    options = refs if isinstance(refs, list) else [refs]
    for ref in options:
        raw = _read_secret(ref, ctx, play)
        if raw is not None:
            try:
                return Secret(validate.product_key(raw))
            except KmsAdminError as exc:
                where = f"play {play.name!r}: host '{ctx.host}'"
                raise ConfigError(f"{where}: host key from {_describe_ref(ref)}: {exc}") from None
    tried = ", ".join(_describe_ref(r) for r in options)
    raise ConfigError(f"play {play.name!r}: host '{ctx.host}': no host key: none of {tried} is set")


def _resolve_csvlk(value: str | VarRef | list[VarRef] | None, ctx: ResolveContext, play: Play) -> str | None:
    """A host key group named in the playbook, or by the first set host var (none set: no pre-check)."""
    if value is None or isinstance(value, str):
        return value
    for ref in value if isinstance(value, list) else [value]:
        raw = ctx.host_vars.get(ref.var)
        if raw in (None, ""):
            continue
        try:
            return _csvlk_group(str(raw))
        except ValueError as exc:
            where = f"play {play.name!r}: host '{ctx.host}'"
            raise ConfigError(f"{where}: csvlk from host var {ref.var}: {exc}") from None
    return None


def build_args(
    operation: str, params: SetupHostParams | ConvertClientParams | None, ctx: ResolveContext, play: Play
) -> SetupHostArgs | ConvertClientArgs | None:
    """Turn a step's validated arguments into the operation's arguments for one host."""
    if operation == "setup-host":
        if not isinstance(params, SetupHostParams):
            raise TypeError("setup-host takes SetupHostParams")
        return SetupHostArgs(
            host_key=None if params.host_key is None else resolve_secret(params.host_key, ctx, play),
            csvlk=_resolve_csvlk(params.csvlk, ctx, play),
            activation=params.activation,
            confirmation_id=params.confirmation_id,
            firewall_profiles=tuple(validate.firewall_profiles(params.firewall_profiles)),
            include_tools=params.include_tools,
            listening_port=params.listening_port,
            dns_publishing=params.dns_publishing,
            low_priority=params.low_priority,
            activation_interval=params.activation_interval,
            renewal_interval=params.renewal_interval,
            assume_updates=params.assume_updates,
            allow_from=tuple(params.allow_from),
        )
    if operation == "convert-client":
        if not isinstance(params, ConvertClientParams):
            raise TypeError("convert-client takes ConvertClientParams")
        kms_name: str | None = None
        kms_port = params.kms_port or 1688
        if isinstance(params.kms_host, KmsHostGroup):
            if ctx.assigned_kms_host is None:
                raise ConfigError(
                    f"play {play.name!r}: host '{ctx.host}': no KMS host assigned from group "
                    f"{params.kms_host.group!r}"
                )
            kms_name = ctx.assigned_kms_host
            kms_port = params.kms_host.port or kms_port
        elif params.kms_host is not None:
            kms_name, port = validate.host_port(params.kms_host, default_port=kms_port)
            kms_port = port
        target = params.target or ("host" if kms_name else "domain" if params.lookup_domain else "keep")
        return ConvertClientArgs(
            key=params.key,
            edition=params.edition,
            target=target,
            kms_host=kms_name,
            kms_port=kms_port,
            lookup_domain=params.lookup_domain,
            office=params.office,
            act_type=None
            if params.act_type is None
            else ("all", "ad", "kms", "token").index(params.act_type),
        )
    return None


def batch_sizes(serial: int | str | list[int | str] | None, total: int) -> list[int]:
    """Batch sizes for ``total`` hosts, as Ansible's ``serial``: "N%" is floor(N% of total), at least 1;
    the last size repeats until every host has a batch."""
    if total <= 0:
        return []
    if serial is None:
        return [total]
    items = serial if isinstance(serial, list) else [serial]
    sizes: list[int] = []
    remaining = total
    index = 0
    while remaining > 0:
        item = items[min(index, len(items) - 1)]
        size = max(1, int(int(item[:-1]) / 100 * total)) if isinstance(item, str) else int(item)
        size = min(size, remaining)
        sizes.append(size)
        remaining -= size
        index += 1
    return sizes


if __name__ == "__main__":
    sys.stdout.write(schema_text())


def shipped_playbook(name: str) -> Path:
    """A playbook shipped with kmsadmin (``site.yml``, ``clients.yml``, ``kms-hosts.yml``).

    Looked up in the installed wheel's data first, then in the source tree, like the templates.
    """
    here = Path(__file__).resolve().parents[1]
    for folder in (here / "_playbooks", here.parent / "playbooks"):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no shipped playbook named {name!r} (broken installation?)")
