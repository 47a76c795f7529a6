"""The one Jinja2 environment that turns templates/ into scripts.

Rules (architecture doc, "Remote scripts"):

* ``StrictUndefined``: a missing parameter is an error, never an empty string.
* CRLF output, as Windows PowerShell and cmd.exe expect.
* Every ``{{ value }}`` must pass through a quoting filter: ``ps`` (a single-quoted PowerShell
  literal with every single-quote variant doubled) or ``cmd`` (a double-quoted cmd.exe argument
  that refuses metacharacters). A ``finalize`` hook refuses any output that did not come from a
  quoting filter, so a raw interpolation fails at render time, not on a customer's host.
* Secrets are rendered twice: the real value into ``text`` (what runs) and the masked value into
  ``display`` (what may be printed).
* Templates are loaded from the wheel's package data first, then from the source tree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from kmsadmin.errors import TemplateError
from kmsadmin.values import SECRET_VISIBLE_CHARS, ParamValue, RenderedScript, ScriptFormat, ScriptRef, Secret

#: The single-quote characters PowerShell treats alike inside single-quoted strings
#: (ASCII apostrophe, U+2018, U+2019, U+201A, U+201B). Each is escaped by doubling it.
PS_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
#: cmd.exe metacharacters that no valid kmsadmin value contains; refusing them is the only safe
#: quoting for cmd (there is no reliable escape for ``%`` and ``!`` in all contexts).
CMD_FORBIDDEN = set('"%!^&|<>()\r\n\t`\x00')

HEADER_RE = re.compile(r"^(?:#|::) kmsadmin-step: (?P<step>[a-z0-9-]+)/(?P<version>\d+)$")


class Quoted(str):
    """A string produced by a quoting filter; the only kind of value a template may output."""

    __slots__ = ()


def _as_text(value: Any) -> str:
    if isinstance(value, Secret):
        return value.value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, list | tuple):
        return ",".join(_as_text(v) for v in value)
    raise TemplateError(f"cannot quote a value of type {type(value).__name__}")


def ps_quote(value: Any) -> Quoted:
    """Quote any value as one single-quoted PowerShell string literal."""
    text = _as_text(value)
    for quote in PS_SINGLE_QUOTES:
        text = text.replace(quote, quote * 2)
    return Quoted("'" + text + "'")


def ps_unquote(literal: str) -> str:
    """Inverse of :func:`ps_quote` (used by the lab to read parameters back from a script)."""
    if len(literal) < 2 or literal[0] not in PS_SINGLE_QUOTES or literal[-1] not in PS_SINGLE_QUOTES:
        raise ValueError("not a single-quoted PowerShell literal")
    body = literal[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char in PS_SINGLE_QUOTES:
            if i + 1 < len(body) and body[i + 1] in PS_SINGLE_QUOTES:
                out.append(char)
                i += 2
                continue
            raise ValueError("unescaped quote inside a single-quoted literal")
        out.append(char)
        i += 1
    return "".join(out)


def cmd_quote(value: Any) -> Quoted:
    """Quote a value as one double-quoted cmd.exe argument; refuse anything cmd could expand."""
    text = _as_text(value)
    bad = sorted(set(text) & CMD_FORBIDDEN)
    if bad:
        raise TemplateError(f"value not allowed in a cmd script (contains {''.join(bad)!r})")
    return Quoted('"' + text + '"')


def secret_tail(value: Any) -> str:
    """The part of a secret that may be shown: its last five characters ("" for a placeholder).

    Same result for the secret (``text``) and its masked form (``display``), so a template may
    name a key by its tail without ever holding the key (the cmd hand-off reads it at run time).
    """
    text = value.value if isinstance(value, Secret) else _as_text(value)
    if not text or text.startswith("<"):
        return ""
    return text[-SECRET_VISIBLE_CHARS:]


def _finalize(value: Any) -> Any:
    if isinstance(value, Quoted):
        return value
    raise TemplateError("template interpolates a value without a quoting filter (use | ps or | cmd)")


def template_dirs() -> list[Path]:
    """Where templates are looked up: the installed wheel's data first, then the source tree."""
    here = Path(__file__).resolve().parent
    return [p for p in (here / "_templates", here.parent / "templates") if p.is_dir()]


@lru_cache(maxsize=1)
def environment() -> Any:
    """The one Jinja2 environment (created once, lazily: jinja2 is not imported at CLI start-up)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    dirs = template_dirs()
    if not dirs:
        raise TemplateError("no templates directory found (broken installation)")
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
        undefined=jinja2.StrictUndefined,
        newline_sequence="\r\n",
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        finalize=_finalize,
    )
    env.filters["ps"] = ps_quote
    env.filters["cmd"] = cmd_quote
    env.filters["tail"] = secret_tail
    return env


def template_name(step: str, fmt: ScriptFormat) -> str:
    """``ps1/<step>.ps1.j2`` or ``cmd/<step>.cmd.j2``."""
    return f"{fmt}/{step}.{fmt}.j2"


def available_steps(fmt: ScriptFormat = "ps1") -> list[str]:
    """Every step that has a template in the given format."""
    suffix = f".{fmt}.j2"
    names = {
        p.name[: -len(suffix)]
        for d in template_dirs()
        for p in (d / fmt).glob(f"*{suffix}")
        if not p.name.startswith("_")  # partials shared through {% include %}
    }
    return sorted(names)


def _render_once(step: str, fmt: ScriptFormat, context: Mapping[str, Any]) -> str:
    import jinja2

    try:
        template = environment().get_template(template_name(step, fmt))
        return str(template.render(**context))
    except jinja2.TemplateNotFound:
        raise TemplateError(f"no {fmt} template for step {step!r}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"template {template_name(step, fmt)}: {exc.message}") from None


def render(ref: ScriptRef) -> RenderedScript:
    """Render one step. Parameters are plain values; secrets are :class:`Secret` objects.

    Scripts without secrets are kept by step, format and parameters: a fleet renders the same few
    scripts for hundreds of hosts (the facts script for every one of them).
    """
    if not ref.secrets:
        key = tuple(sorted(ref.params.items()))
        try:
            hash(key)
        except TypeError:  # an unhashable parameter value: render it every time
            return _render(ref)
        return _render_plain(ref.step, ref.fmt, key)
    return _render(ref)


@lru_cache(maxsize=256)
def _render_plain(step: str, fmt: ScriptFormat, params: tuple[tuple[str, ParamValue], ...]) -> RenderedScript:
    return _render(ScriptRef(step, dict(params), fmt=fmt))


def _render(ref: ScriptRef) -> RenderedScript:
    plain: dict[str, ParamValue | Secret] = dict(ref.params)
    overlap = set(plain) & set(ref.secrets)
    if overlap:
        raise TemplateError(f"parameters given both plain and secret: {sorted(overlap)}")
    text = _render_once(ref.step, ref.fmt, {**plain, **ref.secrets})
    if ref.secrets:
        masked = {k: v.masked() for k, v in ref.secrets.items()}
        display = _render_once(ref.step, ref.fmt, {**plain, **masked})
    else:
        display = text
    match = HEADER_RE.match(text.split("\r\n", 1)[0])
    if not match or match["step"] != ref.step:
        raise TemplateError(f"template {template_name(ref.step, ref.fmt)} lacks its 'kmsadmin-step' header")
    for secret in ref.secrets.values():
        if secret.value and secret.value in display:
            raise TemplateError(
                f"template {template_name(ref.step, ref.fmt)} leaks a secret into its display"
            )
    return RenderedScript(
        step=ref.step, version=int(match["version"]), fmt=ref.fmt, text=text, display=display
    )


def _cmd_comment(text: str) -> list[str]:
    """``::`` comment lines (wrapped), ``%`` doubled: cmd expands variables in every line it reads."""
    import textwrap

    return [":: " + line for line in textwrap.wrap(" ".join(text.split()).replace("%", "%%"), 100)]


def cmd_handoff(host: str, notes: list[str], steps: list[tuple[str, str, str]]) -> str:
    """One cmd script that runs a host's hand-off steps in order, as printed (CRLF line endings).

    ``steps`` are (step, reason, rendered cmd display). Each step is a subroutine (``call :label``)
    ending with its own ``exit /b``; the script stops at the first step whose exit code is not 0.
    """
    lines = [
        "@echo off",
        "setlocal EnableExtensions DisableDelayedExpansion",
        *_cmd_comment(
            f"kmsadmin hand-off for {host}: {len(steps)} step(s) with slmgr.vbs / ospp.vbs. Save it as"
            " a .cmd file and run it on that host in an elevated Command Prompt. A KMS host key is"
            " read when it runs: set KMSADMIN_HOST_KEY first, or type it at the prompt."
        ),
        *(line for note in notes for line in _cmd_comment(f"note: {note}")),
    ]
    for number, (step, _, _) in enumerate(steps, 1):
        lines += [
            f"call :kmsadmin_step_{number}",
            f"if %ERRORLEVEL% NEQ 0 (echo kmsadmin: step {number} {step} failed, stopping 1>&2"
            " & exit /b %ERRORLEVEL%)",
        ]
    lines += [f"echo kmsadmin: {len(steps)} step(s) done", "exit /b 0"]
    for number, (step, reason, script) in enumerate(steps, 1):
        lines += [f":kmsadmin_step_{number}", *_cmd_comment(f"---- step {number}: {step} ({reason})")]
        lines += script.replace("\r\n", "\n").rstrip("\n").split("\n")
    return "\r\n".join(lines) + "\r\n"


def parse_header(script: str) -> tuple[str, int] | None:
    """Read ``(step, version)`` from a script's first line, or None if it is not a kmsadmin script."""
    first = script.lstrip("\ufeff").split("\n", 1)[0].rstrip("\r")
    match = HEADER_RE.match(first)
    return (match["step"], int(match["version"])) if match else None


# ------------------------------------------------------------------------- inventory variable templating
#: the Jinja filters inventory variables may use (Ansible's names and meanings); anything else is an error
VAR_FILTERS = ("default", "d", "lower", "upper", "replace", "int", "bool")
#: templated strings and sequences larger than this are refused (``{{ 'a' * 10**9 }}``)
MAX_TEMPLATE_RESULT = 1024 * 1024
#: how deeply variables may refer to each other (``a: "{{ b }}"``, ``b: "{{ c }}"``...)
MAX_VAR_DEPTH = 64
_TEMPLATE_MARKS = ("{{", "{%", "{#")
_SINGLE_EXPRESSION_RE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.DOTALL)


class VarTemplateError(TemplateError):
    """A templated inventory variable that cannot be resolved: names the host and the variable."""


def _ansible_bool(value: Any) -> bool:
    """Ansible's ``bool`` filter: yes/on/1/true (any case) and 1 are true, everything else false."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value == 1
    return str(value).strip().lower() in ("yes", "on", "1", "true", "y", "t")


@lru_cache(maxsize=1)
def vars_environment() -> Any:
    """A sandboxed Jinja environment with only :data:`VAR_FILTERS`, no globals, bounded ``*`` and ``**``."""
    from jinja2 import StrictUndefined
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import SandboxedEnvironment

    class _Bounded(SandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**"])

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**" and isinstance(right, int) and abs(right) > 64:
                raise SecurityError("exponent too large")
            if operator == "*":
                for seq, count in ((left, right), (right, left)):
                    if (
                        isinstance(seq, str | list | tuple)
                        and isinstance(count, int)
                        and len(seq) * count > MAX_TEMPLATE_RESULT
                    ):
                        raise SecurityError("result too large")
            return super().call_binop(context, operator, left, right)

    env = _Bounded(undefined=StrictUndefined, autoescape=False)
    builtin = env.filters
    env.filters = {
        "default": builtin["default"],
        "d": builtin["default"],
        "lower": builtin["lower"],
        "upper": builtin["upper"],
        "replace": builtin["replace"],
        "int": builtin["int"],
        "bool": _ansible_bool,
    }
    env.tests = {name: env.tests[name] for name in ("defined", "undefined", "none", "string", "number")}
    env.globals.clear()
    return env


def is_template(value: Any) -> bool:
    """Whether a string holds Jinja markup."""
    return isinstance(value, str) and any(mark in value for mark in _TEMPLATE_MARKS)


class _HostVars(Mapping[str, Any]):
    def __init__(self, resolver: VarResolver) -> None:
        self._resolver = resolver

    def __getitem__(self, host: str) -> Any:
        if host not in self._resolver.hosts:
            raise KeyError(host)
        return _Context(self._resolver, host)

    def __iter__(self) -> Any:
        return iter(self._resolver.hosts)

    def __len__(self) -> int:
        return len(self._resolver.hosts)


class VarResolver:
    """Resolves ``{{ ... }}`` in inventory variables per host, with ``hostvars``, ``groups``, ``group_names``.

    A string that is one ``{{ expression }}`` keeps the expression's type (``"{{ port }}"`` stays a
    number, as in ansible-core 2.19); other strings render to text. Undefined variables, unknown
    filters, loops between variables and anything the sandbox refuses raise :class:`VarTemplateError`.
    """

    def __init__(
        self,
        hosts: Mapping[str, Mapping[str, Any]],
        groups: Mapping[str, Any],
        group_names: Mapping[str, Any],
    ) -> None:
        self.hosts = hosts
        self._groups = groups
        self._group_names = group_names
        self._done: dict[tuple[str, str], Any] = {}
        self._active: list[tuple[str, str]] = []
        self._hostvars = _HostVars(self)
        self._magic: dict[str, dict[str, Any]] = {}
        self._all_groups: dict[str, list[str]] | None = None

    def raw_vars(self, host: str) -> Mapping[str, Any]:
        return self.hosts[host]

    def magic(self, host: str) -> Mapping[str, Any]:
        if host in self._magic:
            return self._magic[host]
        if self._all_groups is None:
            self._all_groups = {name: list(members) for name, members in self._groups.items()}
        self._magic[host] = {
            "inventory_hostname": host,
            "inventory_hostname_short": host.split(".", 1)[0],
            "group_names": list(self._group_names.get(host, ())),
            "groups": self._all_groups,
            "hostvars": self._hostvars,
        }
        return self._magic[host]

    def resolved(self, host: str) -> dict[str, Any]:
        """Every variable of ``host``, templated."""
        return {key: self.value(host, key) for key in self.hosts[host]}

    def value(self, host: str, key: str) -> Any:
        slot = (host, key)
        if slot in self._done:
            return self._done[slot]
        if slot in self._active:
            trail = " → ".join(k for _, k in self._active[self._active.index(slot) :])
            raise VarTemplateError(f"host '{host}': variable '{key}' refers to itself ({trail} → {key})")
        if len(self._active) >= MAX_VAR_DEPTH:
            raise VarTemplateError(
                f"host '{host}': variable '{key}': variables nest deeper than {MAX_VAR_DEPTH}"
            )
        self._active.append(slot)
        try:
            result = self._walk(host, key, self.hosts[host][key])
        finally:
            self._active.pop()
        self._done[slot] = result
        return result

    def _walk(self, host: str, key: str, value: Any) -> Any:
        if isinstance(value, str):
            return self._render(host, key, value) if is_template(value) else value
        if isinstance(value, list):
            return [self._walk(host, key, item) for item in value]
        if isinstance(value, dict):
            return {k: self._walk(host, key, v) for k, v in value.items()}
        return value

    def _render(self, host: str, key: str, text: str) -> Any:
        from jinja2 import TemplateError as JinjaError
        from jinja2 import Undefined
        from jinja2.exceptions import SecurityError

        names = _Context(self, host)
        try:
            template, single = _compiled(text)
            if single:
                context = template.new_context(names, shared=True)
                for _ in template.root_render_func(context):
                    pass
                result = context.vars["result"]
                if isinstance(result, Undefined):
                    result._fail_with_undefined_error()
            else:
                result = "".join(template.root_render_func(template.new_context(names, shared=True)))
        except VarTemplateError:
            raise
        except SecurityError as exc:
            raise VarTemplateError(f"host '{host}': variable '{key}': {text!r}: refused: {exc}") from None
        except JinjaError as exc:
            raise VarTemplateError(
                f"host '{host}': variable '{key}': {text!r}: {exc.message or exc}"
            ) from None
        except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError, RecursionError) as exc:
            raise VarTemplateError(f"host '{host}': variable '{key}': {text!r}: {exc}") from None
        if isinstance(result, str | list | tuple) and len(result) > MAX_TEMPLATE_RESULT:
            raise VarTemplateError(f"host '{host}': variable '{key}': the result is too large")
        return str(result) if isinstance(result, str) else result


@lru_cache(maxsize=4096)
def _compiled(text: str) -> tuple[Any, bool]:
    """(compiled template, whether it is one ``{{ expression }}`` whose value keeps its type)."""
    env = vars_environment()
    single = _SINGLE_EXPRESSION_RE.match(text)
    if single is not None:
        return env.compile_expression(single.group("expr").strip(), undefined_to_none=False)._template, True
    return env.from_string(text), False


class _Context(Mapping[str, Any]):
    """A template's name lookup: the host's variables (templated on use), then the magic variables."""

    def __init__(self, resolver: VarResolver, host: str) -> None:
        self._resolver = resolver
        self._host = host

    def __getitem__(self, key: str) -> Any:
        if key in self._resolver.raw_vars(self._host):
            return self._resolver.value(self._host, key)
        return self._resolver.magic(self._host)[key]

    def __contains__(self, key: object) -> bool:
        return key in self._resolver.raw_vars(self._host) or key in self._resolver.magic(self._host)

    def __iter__(self) -> Any:
        yield from self._resolver.raw_vars(self._host)
        yield from self._resolver.magic(self._host)

    def __len__(self) -> int:
        return len(self._resolver.raw_vars(self._host)) + len(self._resolver.magic(self._host))
