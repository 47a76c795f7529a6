"""Options shared by several commands, each defined once.

Every command that connects to hosts takes the same eleven connection options: decorate it with
:func:`connection_options` and give it a ``connection: Connection`` parameter instead of repeating
them (:func:`option_group` does it; :func:`kmsadmin.cli.inventory.inventory_options` gives the
inventory options the same way). ``--forks`` has one definition and one default (:data:`kmsadmin.values.DEFAULT_FORKS`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup


def _at_least_one(value: int) -> int:
    """``--forks`` is 1 or more (usage error, exit 2, otherwise: 0 would run nothing)."""
    if value < 1:
        raise typer.BadParameter(f"must be at least 1, not {value}")
    return value


ForksOpt = Annotated[
    int, typer.Option("--forks", "-f", help="hosts worked on at once", callback=_at_least_one)
]

UserOpt = Annotated[
    str | None, typer.Option("--user", "-u", help="WinRM user (DOMAIN\\user or .\\user); or KMSADMIN_USER")
]
PasswordFileOpt = Annotated[
    Path | None, typer.Option(help="file holding the WinRM password; or KMSADMIN_PASSWORD / a prompt")
]
TransportOpt = Annotated[str | None, typer.Option("--transport", help="psrp (default), winrs or pywinrm")]
AuthOpt = Annotated[
    str | None,
    typer.Option("--auth", help="negotiate (default), ntlm, kerberos, basic, credssp, certificate"),
]
HttpOpt = Annotated[
    bool | None,
    typer.Option("--https/--http", help="HTTPS (default, 5986) or HTTP with message encryption (5985)"),
]


def port_range(low: int = 1) -> Callable[[int | None], int | None]:
    """A check for a TCP port option: a number from ``low`` (1, or 0 where 0 means "any") to 65535.

    Out of range is a usage error (exit 2) naming the option and the range, raised while the command
    line is parsed: before anything is read, started or contacted.
    """

    def check(value: int | None) -> int | None:
        if value is not None and not low <= value <= 65535:
            raise typer.BadParameter(f"must be a port number {low}-65535, not {value}")
        return value

    return check


#: the check for a port a client connects to (1-65535)
port_number = port_range(1)

WinrmPortOpt = Annotated[
    int | None, typer.Option("--winrm-port", help="WinRM listener port", callback=port_number)
]
CaBundleOpt = Annotated[
    Path | None, typer.Option(help="CA bundle (PEM) to validate the hosts' HTTPS certificates")
]
NoVerifyOpt = Annotated[
    bool, typer.Option("--no-cert-validation", help="do not validate HTTPS certificates (not recommended)")
]


def _positive_seconds(value: float | None) -> float | None:
    """A deadline is a finite number of seconds above 0 (usage error, exit 2, otherwise)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a number of seconds above 0, not {value:g}")
    return value


DeadlineOpt = Annotated[
    float | None,
    typer.Option(
        help="seconds one host may take: for one step, in a rollout for all its steps (default: "
        "its kmsadmin_deadline var, else KMSADMIN_DEADLINE, else 300; 900 in a rollout)",
        callback=_positive_seconds,
    ),
]
InsecureBasicOpt = Annotated[
    bool, typer.Option("--allow-unencrypted-basic", help="allow Basic auth over plain HTTP")
]
InsecureMessagesOpt = Annotated[
    bool,
    typer.Option(
        "--allow-unencrypted",
        help="allow message_encryption 'never' over plain HTTP (scripts and keys readable on the path)",
    ),
]


@dataclasses.dataclass(frozen=True)
class Connection:
    """The connection options as given on the command line (None / False = not given)."""

    user: str | None = None
    password_file: Path | None = None
    transport: str | None = None
    auth: str | None = None
    https: bool | None = None
    winrm_port: int | None = None
    ca_bundle: Path | None = None
    no_cert_validation: bool = False
    deadline: float | None = None
    allow_unencrypted_basic: bool = False
    allow_unencrypted: bool = False

    def explicit(self, *, with_deadline: bool = True) -> dict[str, object]:
        """The transports' explicit layer (None = not given); prompts for a password if needed."""
        explicit: dict[str, object] = {
            "user": self.user,
            "transport": self.transport,
            "auth": self.auth,
            "https": self.https,
            "port": self.winrm_port,
            "ca_bundle": str(self.ca_bundle) if self.ca_bundle else None,
            "cert_validation": False if self.no_cert_validation else None,
            "deadline": self.deadline if with_deadline else None,
            "allow_unencrypted_basic": True if self.allow_unencrypted_basic else None,
            "allow_unencrypted": True if self.allow_unencrypted else None,
        }
        if self.password_file is not None:
            explicit["password_file"] = str(self.password_file)
        elif (
            self.user
            and not os.environ.get("KMSADMIN_PASSWORD")
            and not os.environ.get("KMSADMIN_PASSWORD_FILE")
            and sys.stdin.isatty()
        ):
            from kmsadmin.values import Secret

            explicit["password"] = Secret(typer.prompt(f"password for {self.user}", hide_input=True))
        return explicit


#: The connection options, in --help order: (parameter name, annotation, default).
_CONNECTION_PARAMS: tuple[tuple[str, Any, Any], ...] = (
    ("user", UserOpt, None),
    ("password_file", PasswordFileOpt, None),
    ("transport", TransportOpt, None),
    ("auth", AuthOpt, None),
    ("https", HttpOpt, None),
    ("winrm_port", WinrmPortOpt, None),
    ("ca_bundle", CaBundleOpt, None),
    ("no_cert_validation", NoVerifyOpt, False),
    ("deadline", DeadlineOpt, None),
    ("allow_unencrypted_basic", InsecureBasicOpt, False),
    ("allow_unencrypted", InsecureMessagesOpt, False),
)

F = TypeVar("F", bound=Callable[..., Any])

#: one option of a group: (parameter name, annotation, default)
OptionParam = tuple[str, Any, Any]


def option_group(
    parameter: str, build: Callable[..., Any], options: tuple[OptionParam, ...]
) -> Callable[[F], F]:
    """A decorator giving a command the ``options`` (in this order, where its ``parameter`` stands in
    its signature, so --help lists them there) and passing them to it as ``parameter=build(**values)``.

    The command declares only ``parameter`` (with a placeholder default); typer sees the options.
    """
    names = [name for name, _, _ in options]

    def decorate(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        if parameter not in signature.parameters:
            raise TypeError(f"{func.__name__} needs a '{parameter}' parameter")

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names if name in kwargs}
            return func(*args, **{parameter: build(**values)}, **kwargs)

        params: list[inspect.Parameter] = []
        for param in signature.parameters.values():
            if param.name != parameter:
                params.append(param)
                continue
            params += [
                inspect.Parameter(name, param.kind, annotation=annotation, default=default)
                for name, annotation, default in options
            ]
        wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper  # type: ignore[return-value]

    return decorate


def connection_options(func: F) -> F:
    """Give a command the eleven connection options; it receives them as ``connection: Connection``."""
    return option_group("connection", Connection, _CONNECTION_PARAMS)(func)


class HelpGroup(TyperGroup):
    """A command group whose command list shows each summary whole (its first sentence), wrapped,
    instead of click's cut at the terminal width ("... parallel,...")."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=sys.maxsize)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


__all__ = [
    "Connection",
    "ForksOpt",
    "HelpGroup",
    "connection_options",
    "option_group",
    "port_number",
    "port_range",
]
