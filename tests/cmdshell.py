"""A small cmd.exe batch interpreter for checking kmsadmin's hand-off scripts without Windows.

It follows cmd's phases for the subset of batch the cmd templates use, in cmd's order, so a value
that would be parsed as a command on Windows is parsed as one here too:

1. ``%VAR%`` expansion of each line as it is read (a parenthesised block is read whole), with
   ``%VAR:~s,l%`` and ``%VAR:a=b%``, ``%%`` -> ``%``, undefined variables -> "";
2. carets, quotes, ``( )`` blocks, ``&`` ``&&`` ``||``, redirections (a pipe or any other ``<`` ``>``
   is refused: the templates use none);
3. ``for %%x in (...) do`` substitution;
4. ``!VAR!`` (delayed) expansion of the parsed pieces when ``setlocal EnableDelayedExpansion`` is on.

Commands: ``echo``, ``set`` (incl. ``/p`` from the given stdin lines), ``if`` (``not``, ``/i``,
``defined``, ``exist``, ``errorlevel``, ``==``, ``EQU``...), ``goto``, ``call :label``, ``exit /b``,
``setlocal``/``endlocal``, ``for``; anything else is an external program: recorded with its
argv and answered by ``programs`` (exit code 0 by default). Unknown syntax raises :class:`CmdError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

EXTERNAL = {
    "cscript",
    "net",
    "reg",
    "powershell.exe",
    "dnscmd",
    "sc",
    "netsh",
    "wevtutil",
    "nslookup",
    "w32tm",
}


class CmdError(Exception):
    """The script is not valid batch (for this subset) or did something the check forbids."""


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


class _Goto(Exception):
    def __init__(self, label: str) -> None:
        self.label = label


@dataclass
class Result:
    exit_code: int
    calls: list[list[str]] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


class Batch:
    def __init__(
        self,
        script: str,
        *,
        env: dict[str, str] | None = None,
        stdin: list[str] | None = None,
        existing: set[str] | None = None,
        programs: Callable[[list[str]], int] | None = None,
    ) -> None:
        if "\n" in script.replace("\r\n", ""):
            raise CmdError("a line ends in LF without CR (cmd mis-finds labels in LF-only files)")
        self.lines = script.split("\r\n")
        self.labels: dict[str, list[int]] = {}
        for number, line in enumerate(self.lines):
            stripped = line.strip()
            if stripped.startswith(":") and not stripped.startswith("::"):
                self.labels.setdefault(stripped[1:].split()[0].lower(), []).append(number)
        self.position = 0
        self.env = {k.upper(): v for k, v in (env or {}).items()}
        self.stack: list[tuple[dict[str, str], bool]] = []
        self.delayed = False
        self.stdin = list(stdin or [])
        self.existing = {p.lower() for p in (existing or set())}
        self.programs = programs or (lambda argv: 0)
        self.errorlevel = 0
        self.result = Result(0)

    # ------------------------------------------------------------------------------- expansion
    def _lookup(self, name: str) -> str | None:
        if name.upper() in self.env:
            return self.env[name.upper()]
        if name.upper() == "ERRORLEVEL":
            return str(self.errorlevel)
        return None

    def _modify(self, name: str) -> str:
        """``NAME``, ``NAME:~s[,l]`` or ``NAME:a=b``: the expanded text ("" if undefined)."""
        base, _, modifier = name.partition(":")
        value = self._lookup(base)
        if value is None:
            return ""
        if not modifier:
            return value
        if modifier.startswith("~"):
            parts = [int(x) for x in modifier[1:].split(",")]
            start = parts[0] if parts[0] >= 0 else max(0, len(value) + parts[0])
            if len(parts) == 1:
                return value[start:]
            length = parts[1]
            end = start + length if length >= 0 else len(value) + length
            return value[start:end]
        old, eq, new = modifier.partition("=")
        if not eq or not old:
            raise CmdError(f"bad variable modifier: {name}")
        return re.sub(re.escape(old), lambda _: new, value, flags=re.IGNORECASE)

    def percent(self, line: str) -> str:
        out: list[str] = []
        i = 0
        while i < len(line):
            char = line[i]
            if char != "%":
                out.append(char)
                i += 1
                continue
            if line[i + 1 : i + 2] == "%":
                out.append("%")
                i += 2
                continue
            if line[i + 1 : i + 2] == "~" or line[i + 1 : i + 2].isdigit() or line[i + 1 : i + 2] == "*":
                raise CmdError(f"batch argument reference in {line!r}")
            end = line.find("%", i + 1)
            if end == -1:
                i += 1
                continue
            out.append(self._modify(line[i + 1 : end]))
            i = end + 1
        return "".join(out)

    def delayed_expand(self, text: str) -> str:
        if not self.delayed or "!" not in text:
            return text
        text = re.sub(r"\^(.)", r"\1", text)
        out: list[str] = []
        i = 0
        while i < len(text):
            if text[i] != "!":
                out.append(text[i])
                i += 1
                continue
            end = text.find("!", i + 1)
            if end == -1:
                break
            out.append(self._modify(text[i + 1 : end]))
            i = end + 1
        return "".join(out)

    # --------------------------------------------------------------------------------- reading
    def read(self, index: int) -> tuple[str, int]:
        """Phase 1 for one statement: a line, or a whole ( ... ) block; returns (text, next index)."""
        text = self.percent(self.lines[index])
        index += 1
        while _depth(text) > 0:
            if index >= len(self.lines):
                raise CmdError("unclosed parenthesis")
            text += "\n" + self.percent(self.lines[index])
            index += 1
        return text, index

    # --------------------------------------------------------------------------------- running
    def run(self) -> Result:
        try:
            self._run_from(0)
            code = self.errorlevel
        except _Exit as done:
            code = done.code
        self.result.exit_code = code
        self.result.env = dict(self.env)
        return self.result

    def _run_from(self, index: int) -> None:
        while index < len(self.lines):
            stripped = self.lines[index].strip()
            if not stripped or stripped.startswith(":"):
                index += 1
                continue
            text, index = self.read(index)
            self.position = index
            try:
                self.execute(text)
            except _Goto as jump:
                if jump.label == "eof":
                    return
                index = self.find_label(jump.label) + 1

    def find_label(self, label: str) -> int:
        """cmd searches forward from the current line for a label, then from the top."""
        if label not in self.labels:
            raise CmdError(f"goto or call to a missing label :{label}")
        after = [n for n in self.labels[label] if n >= self.position]
        return (after or self.labels[label])[0]

    def execute(self, text: str) -> None:
        for op, command in _split_sequence(text):
            if op == "&&" and self.errorlevel != 0:
                continue
            if op == "||" and self.errorlevel == 0:
                continue
            self.simple(command)

    def simple(self, command: str) -> None:
        command = command.strip()
        if not command:
            return
        if command.startswith("@"):
            command = command[1:].lstrip()
        if command.startswith("("):
            end = _matching(command, 0)
            if command[end + 1 :].strip():
                raise CmdError(f"text after a block: {command!r}")
            self.execute(command[1:end])
            return
        name = re.split(r"[\s(]", command, maxsplit=1)[0].lower()
        rest = command[len(name) :].strip()
        if name == "if":
            self._if(rest)
        elif name == "for":
            self._for(rest)
        else:
            self._plain(name, rest)

    def _if(self, rest: str) -> None:
        tokens, rest = _if_tokens(rest)
        negate = False
        ignore_case = False
        while tokens and tokens[0].lower() in ("not", "/i"):
            if tokens.pop(0).lower() == "not":
                negate = True
            else:
                ignore_case = True
        kind = tokens[0].lower() if tokens else ""
        if kind == "defined":
            result = self._lookup(tokens[1]) not in (None, "")
        elif kind == "exist":
            result = self.delayed_expand(tokens[1]).strip('"').lower() in self.existing
        elif kind == "errorlevel":
            result = self.errorlevel >= int(tokens[1])
        elif len(tokens) == 3:
            left, op, right = (self.delayed_expand(t) for t in tokens)
            if ignore_case:
                left, right = left.lower(), right.lower()
            result = _compare(left, op.upper(), right)
        else:
            raise CmdError(f"cannot parse if condition: {tokens!r}")
        if negate:
            result = not result
        body, otherwise = _if_body(rest)
        if result:
            self.simple(body)
        elif otherwise is not None:
            self.simple(otherwise)

    def _for(self, rest: str) -> None:
        match = re.match(r"%([A-Za-z])\s+in\s+\((.*?)\)\s+do\s+(.*)$", rest, flags=re.S | re.I)
        if not match:
            raise CmdError(f"cannot parse for: {rest!r}")
        var, items, body = match.groups()
        for item in items.split():
            self.execute(body.replace(f"%{var}", item))

    def _plain(self, name: str, rest: str) -> None:
        rest, to_stderr = _redirections(rest)
        if name == "echo" or name.startswith("echo."):
            value = self.delayed_expand(rest)
            if value.lower() not in ("off", "on"):
                (self.result.stderr if to_stderr else self.result.stdout).append(value.rstrip())
        elif name == "setlocal":
            self.stack.append((dict(self.env), self.delayed))
            flags = rest.lower().split()
            if "enabledelayedexpansion" in flags:
                self.delayed = True
            if "disabledelayedexpansion" in flags:
                self.delayed = False
        elif name == "endlocal":
            if self.stack:
                self.env, self.delayed = self.stack.pop()
        elif name == "set":
            self._set(rest)
        elif name == "goto":
            raise _Goto(rest.split()[0].lstrip(":").lower())
        elif name == "call":
            target = rest.split()[0]
            if not target.startswith(":"):
                raise CmdError(f"call of a program: {rest!r}")
            start = self.find_label(target[1:].lower())
            saved = (list(self.stack), self.position)
            self.stack = []
            try:
                self._run_from(start + 1)
            except _Exit as done:
                self.errorlevel = done.code
            self.position = saved[1]
            # the callee's setlocal scopes end when it returns
            while self.stack:
                self.env, self.delayed = self.stack.pop()
            self.stack = saved[0]
        elif name == "exit":
            words = rest.split()
            if not words or words[0].lower() != "/b":
                raise CmdError("exit without /b closes the admin's console")
            raise _Exit(int(words[1]) if len(words) > 1 else self.errorlevel)
        elif name in EXTERNAL:
            argv = [name, *_argv(self.delayed_expand(rest))]
            self.result.calls.append(argv)
            self.errorlevel = self.programs(argv)
        else:
            raise CmdError(f"unknown command {name!r}")

    def _set_arithmetic(self, expression: str) -> None:
        """``set /a NAME=EXPR``: quotes ignored, integers, + - * / % and parentheses, bare names read."""
        name, eq, expr = self.delayed_expand(expression.replace('"', "")).partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()):
            raise CmdError(f"cannot parse set /a: {expression!r}")
        expr = re.sub(r"[A-Za-z_][A-Za-z0-9_]*", lambda m: self._lookup(m.group(0)) or "0", expr)
        if not re.fullmatch(r"[0-9+\-*/%() \t]*", expr):
            raise CmdError(f"set /a expression cmd would not compute: {expression!r}")
        value = int(eval(expr.replace("/", "//"), {"__builtins__": {}}))  # noqa: S307 - digits and operators only
        self.env[name.strip().upper()] = str(value)

    def _set(self, rest: str) -> None:
        if rest.lower().startswith("/a"):
            self._set_arithmetic(rest[2:].strip())
            return
        prompt = False
        if rest.lower().startswith("/p"):
            prompt, rest = True, rest[2:].strip()
        if rest.startswith('"'):
            last = rest.rfind('"')
            if last <= 0:
                raise CmdError(f"unbalanced quote in set: {rest!r}")
            if rest[last + 1 :].strip():
                raise CmdError(f"text after the closing quote of set: {rest!r}")
            rest = rest[1:last]
        rest = self.delayed_expand(rest)
        name, eq, value = rest.partition("=")
        if not eq or not name or " " in name:
            raise CmdError(f"cannot parse set: {rest!r}")
        if prompt:
            self.result.stdout.append(value)
            if not self.stdin:
                self.errorlevel = 1
                return
            value = self.stdin.pop(0)
        if value == "":
            self.env.pop(name.upper(), None)
        else:
            self.env[name.upper()] = value


# ------------------------------------------------------------------------------- parsing helpers
def _scan(text: str) -> list[tuple[int, str, bool]]:
    """(index, char, special) for each char: special = outside quotes and not caret-escaped."""
    out: list[tuple[int, str, bool]] = []
    quoted = False
    i = 0
    while i < len(text):
        char = text[i]
        if char == '"':
            quoted = not quoted
            out.append((i, char, False))
        elif char == "^" and not quoted and i + 1 < len(text):
            out.append((i + 1, text[i + 1], False))
            i += 1
        else:
            out.append((i, char, not quoted))
        i += 1
    return out


def _depth(text: str) -> int:
    """Open parentheses (outside quotes, not escaped) not closed yet."""
    depth = 0
    for _, char, special in _scan(text):
        if special and char == "(":
            depth += 1
        elif special and char == ")":
            depth -= 1
    return depth


def _matching(text: str, start: int) -> int:
    depth = 0
    for index, char, special in _scan(text):
        if index < start or not special:
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index
    raise CmdError(f"unclosed parenthesis: {text!r}")


def _split_sequence(text: str) -> list[tuple[str, str]]:
    """Split on & && || and newlines outside quotes and blocks; a single | is refused."""
    parts: list[tuple[str, str]] = []
    depth = 0
    op = "&"
    current: list[str] = []
    scanned = _scan(text)
    skip = 0
    for n, (_, char, special) in enumerate(scanned):
        if skip:
            skip -= 1
            continue
        if special and char == "(":
            depth += 1
        elif special and char == ")":
            depth -= 1
        after_redirect = n > 0 and scanned[n - 1][1] == ">" and scanned[n - 1][2]
        if special and depth == 0 and char in "&|\n" and not (char == "&" and after_redirect):
            nxt = scanned[n + 1][1] if n + 1 < len(scanned) else ""
            if char == "|" and nxt != "|":
                raise CmdError(f"pipe in {text!r}")
            parts.append((op, "".join(current)))
            current = []
            if char in "&|" and nxt == char:
                op = char * 2
                skip = 1
            else:
                op = "&"
            continue
        current.append(char)
    parts.append((op, "".join(current)))
    return [(o, c) for o, c in parts if c.strip()]


def _redirections(rest: str) -> tuple[str, bool]:
    """Remove the redirections the templates use (<NUL, 1>&2, >NUL, 2>NUL, 2>&1); refuse others."""
    to_stderr = False
    out: list[str] = []
    scanned = _scan(rest)
    i = 0
    while i < len(scanned):
        index, char, special = scanned[i]
        if (special and char in "<>") or (special and char in "12" and rest[index + 1 : index + 2] == ">"):
            match = re.match(r"(?i)([12]?>&[12]|[12]?>nul|<nul)", rest[index:])
            if not match:
                raise CmdError(f"redirection to a file or stray < > in {rest!r}")
            if match.group(1) in ("1>&2", ">&2"):
                to_stderr = True
            skip_to = index + len(match.group(1))
            while i < len(scanned) and scanned[i][0] < skip_to:
                i += 1
            continue
        out.append(char)
        i += 1
    return "".join(out).strip(), to_stderr


def _argv(text: str) -> list[str]:
    return [m.group(0).replace('"', "") for m in re.finditer(r'(?:"[^"]*"|[^\s"])+', text)]


def _if_tokens(rest: str) -> tuple[list[str], str]:
    """The condition's tokens and the remaining command text."""
    tokens: list[str] = []
    i = 0

    def token() -> str:
        nonlocal i
        while i < len(rest) and rest[i] in " \t":
            i += 1
        start = i
        quoted = False
        while i < len(rest):
            if rest[i] == '"':
                quoted = not quoted
            elif not quoted and (rest[i] in " \t" or rest.startswith("==", i)):
                break
            i += 1
        return rest[start:i]

    first = token()
    while first.lower() in ("not", "/i"):
        tokens.append(first)
        first = token()
    tokens.append(first)
    if first.lower() in ("defined", "exist", "errorlevel"):
        tokens.append(token())
        return tokens, rest[i:].strip()
    while i < len(rest) and rest[i] in " \t":
        i += 1
    if rest.startswith("==", i):
        i += 2
        tokens += ["==", token()]
    else:
        tokens += [token(), token()]
    return tokens, rest[i:].strip()


def _if_body(rest: str) -> tuple[str, str | None]:
    if not rest.startswith("("):
        return rest, None
    end = _matching(rest, 0)
    body, after = rest[: end + 1], rest[end + 1 :].strip()
    if after.lower().startswith("else"):
        return body, after[4:].strip()
    if after:
        raise CmdError(f"text after an if block: {after!r}")
    return body, None


def _compare(left: str, op: str, right: str) -> bool:
    if op == "==":
        return left == right
    try:
        a: int | str = int(left)
        b: int | str = int(right)
    except ValueError:
        a, b = left, right
    table = {
        "EQU": a == b,
        "NEQ": a != b,
        "LSS": a < b,  # type: ignore[operator]
        "LEQ": a <= b,  # type: ignore[operator]
        "GTR": a > b,  # type: ignore[operator]
        "GEQ": a >= b,  # type: ignore[operator]
    }
    if op not in table:
        raise CmdError(f"unknown comparison {op}")
    return table[op]


def run(script: str, **kwargs: object) -> Result:
    """Run a batch script (see :class:`Batch` for the keyword arguments)."""
    return Batch(script, **kwargs).run()  # type: ignore[arg-type]
