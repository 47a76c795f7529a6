"""CLI conventions: shared connection options, one --forks default, help text, version, completion."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click.testing
import pytest
import typer
from typer.testing import CliRunner

from kmsadmin.cli.app import app
from kmsadmin.values import DEFAULT_FORKS

runner = CliRunner()

CONNECTION_OPTIONS = {
    "--user",
    "--password-file",
    "--transport",
    "--auth",
    "--https",
    "--winrm-port",
    "--ca-bundle",
    "--no-cert-validation",
    "--deadline",
    "--allow-unencrypted-basic",
}
REMOTE_COMMANDS = ("setup-host", "convert-client", "status", "rollout", "doctor")


def walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command of the tree with its path (groups included)."""
    yield path, command
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from walk(sub, (*path, name))


def root() -> Any:
    return typer.main.get_command(app)


def options_of(command: Any) -> dict[str, Any]:
    return {p.opts[0]: p for p in command.params if p.param_type_name == "option"}


def test_every_remote_command_has_the_ten_connection_options_from_one_definition() -> None:
    """A command with any connection option has all ten, with the same names, help and defaults."""
    remote = {
        path: options_of(command)
        for path, command in walk(root())
        if path and CONNECTION_OPTIONS & options_of(command).keys()
    }
    assert {(name,) for name in REMOTE_COMMANDS} <= remote.keys()
    shared = {
        path: {
            k: (opts[k].help, opts[k].default, tuple(opts[k].opts)) for k in CONNECTION_OPTIONS if k in opts
        }
        for path, opts in remote.items()
    }
    reference = shared[("rollout",)]
    assert len(reference) == len(CONNECTION_OPTIONS)
    for path, options in shared.items():
        assert options == reference, path


INVENTORY_OPTIONS = ["--inventory", "--vault-password-file", "--vault-id"]
CLI_SOURCES = Path(__file__).resolve().parents[1] / "kmsadmin" / "cli"


def test_every_inventory_command_has_the_three_inventory_options_together_from_one_definition() -> None:
    """-i/--inventory, --vault-password-file and --vault-id: on every command that takes an inventory,
    side by side in this order, with the same names, help and defaults; declared once."""
    with_inventory = {
        path: command
        for path, command in walk(root())
        if path and set(INVENTORY_OPTIONS) & options_of(command).keys()
    }
    assert {
        ("setup-host",),
        ("convert-client",),
        ("status",),
        ("rollout",),
        ("doctor",),
        ("plan",),
        ("dns", "check"),
        ("dns", "record", "add"),
        ("dns", "record", "remove"),
        ("dns", "publishing"),
        ("dns", "publish-list"),
        ("export", "ansible"),
        ("adba", "activate"),
        ("adba", "list"),
        ("adba", "delete"),
    } <= with_inventory.keys()
    reference = None
    for path, command in with_inventory.items():
        options = [p for p in command.params if p.param_type_name == "option"]
        names = [p.opts[0] for p in options]
        start = names.index("--inventory")
        assert names[start : start + 3] == INVENTORY_OPTIONS, path
        triple = [
            (tuple(p.opts), p.help, p.default, p.metavar, p.multiple) for p in options[start : start + 3]
        ]
        reference = reference or triple
        assert triple == reference, path
    # one declaration: the commands use @inventory_options, never the options themselves
    for source in CLI_SOURCES.glob("*.py"):
        if source.name != "inventory.py":
            text = source.read_text(encoding="utf-8")
            assert "VaultPasswordFileOpt" not in text and '"--vault-password-file"' not in text, source


def test_building_the_command_tree_imports_no_library_beyond_typer() -> None:
    """kmsadmin --help stays fast: the option definitions load nothing heavy (lazy imports)."""
    code = (
        "import sys, typer\n"
        "from kmsadmin.cli.app import app\n"
        "typer.main.get_command(app)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    ours = {m for m in loaded if m.startswith("kmsadmin.") and m != "kmsadmin.cli"}
    assert ours <= {"kmsadmin.errors", "kmsadmin.values"} | {m for m in ours if m.startswith("kmsadmin.cli.")}
    assert "kmsadmin.cli.inventory" in ours
    heavy = ("pypsrp", "psrpcore", "spnego", "jinja2", "yaml", "pydantic", "cryptography", "requests", "rich")
    assert [m for m in loaded if m.split(".")[0] in heavy] == []
    assert not {"kmsadmin.cli.rollout", "kmsadmin.cli.remote", "kmsadmin.fleet"} & ours


@pytest.mark.parametrize(
    ("command", "flag", "value", "message"),
    [
        ("doctor", "--transport", "bogus", "transport must be one of"),
        ("status", "--auth", "bogus", "auth must be one of"),
        ("convert-client", "--transport", "bogus", "transport must be one of"),
        ("setup-host", "--auth", "bogus", "auth must be one of"),
    ],
)
def test_connection_options_reach_the_transport_options(
    command: str, flag: str, value: str, message: str
) -> None:
    extra = ["--csvlk", "Windows Server 2022"] if command == "setup-host" else []
    result = runner.invoke(
        app,
        [command, "127.0.0.1", *extra, flag, value],
        env={"KMSADMIN_HOST_KEY": "BCDFG-HJKMP-QRTVW-XY234-6789B"},
    )
    assert result.exit_code == 4, result.output
    assert "127.0.0.1" in result.stderr and message in result.stderr


def port_options() -> list[tuple[tuple[str, ...], str, Any]]:
    """Every TCP port option of every command: (command path, option name, click option)."""
    return [
        (path, name, option)
        for path, command in walk(root())
        for name, option in options_of(command).items()
        if name == "--port" or name.endswith("-port")
    ]


def test_every_port_option_rejects_out_of_range_values_as_a_usage_error() -> None:
    """70000, 65536, 0 and -1 stop at parsing with exit 2, naming the option and the range 1-65535
    (0-65535 where the help says 0 means any free port); 1 and 65535 pass the check."""
    found = port_options()
    names = {name for _, name, _ in found}
    assert {"--winrm-port", "--kms-port", "--port", "--base-port"} <= names
    assert {(name,) for name in REMOTE_COMMANDS} <= {
        path for path, name, _ in found if name == "--winrm-port"
    }
    command = root()  # built once: one click run per value, not one typer build
    click_runner = click.testing.CliRunner()
    for path, name, option in found:
        low = 0 if "0 = any" in (option.help or "") else 1
        for value in ("70000", "65536", str(low - 1), "-1"):
            result = click_runner.invoke(command, [*path, name, value])
            assert result.exit_code == 2, (path, name, value, result.output)
            assert f"Invalid value for '{name}'" in result.stderr, (path, name, value)
            assert f"port number {low}-65535, not {value}" in result.stderr, (path, name, value)
        for value in (str(max(low, 1)), "65535"):
            # the command then stops for something else (a missing argument), never for the port
            result = click_runner.invoke(command, [*path, name, value])
            assert f"Invalid value for '{name}'" not in result.output, (path, name, value)


@pytest.mark.parametrize(
    "args",
    [
        ["status", "127.0.0.1", "--winrm-port", "70000", "--json"],
        ["doctor", "127.0.0.1", "--winrm-port", "0"],
        ["convert-client", "127.0.0.1", "--winrm-port", "-1"],
        ["setup-host", "127.0.0.1", "--csvlk", "Windows Server 2022", "--kms-port", "65536"],
    ],
)
def test_out_of_range_port_stops_before_any_host_is_contacted(args: list[str]) -> None:
    """Exit 2 with a usage error and no host report: the command never ran (it used to try the
    host and report it failed, exit 1 or 4)."""
    result = runner.invoke(app, args, env={"KMSADMIN_HOST_KEY": "BCDFG-HJKMP-QRTVW-XY234-6789B"})
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "Invalid value for" in result.stderr and "1-65535" in result.stderr
    assert "127.0.0.1" not in result.stderr


def test_one_forks_default_across_commands() -> None:
    forks = {
        path: options_of(command)["--forks"]
        for path, command in walk(root())
        if "--forks" in options_of(command)
    }
    assert {("rollout",), ("status",), ("plan",), ("dns", "publishing")} <= forks.keys()
    assert {path: opt.default for path, opt in forks.items()} == dict.fromkeys(forks, DEFAULT_FORKS)


def test_forks_below_1_is_a_usage_error_on_every_command() -> None:
    """--forks 0 would run nothing and -1 is no count: exit 2 naming the option, before anything runs."""
    command = root()
    click_runner = click.testing.CliRunner()
    paths = [path for path, sub in walk(command) if "--forks" in options_of(sub)]
    assert {("rollout",), ("status",), ("plan",), ("export", "ansible")} <= set(paths)
    for path in paths:
        for value in ("0", "-1"):
            result = click_runner.invoke(command, [*path, "--forks", value])
            assert result.exit_code == 2, (path, value, result.output)
            assert f"Invalid value for '--forks' / '-f': must be at least 1, not {value}" in result.stderr
        result = click_runner.invoke(command, [*path, "--forks", "1"])
        assert "Invalid value for '--forks'" not in result.output, path


def test_version() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"kmsadmin {version('kmsadmin')}\n"


def test_shell_completion_script_and_completions(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("kmsadmin")
    shown = subprocess.run(
        [exe, "--show-completion", "bash"], capture_output=True, text=True, timeout=60, check=False
    )
    assert shown.returncode == 0 and "_KMSADMIN_COMPLETE=complete_bash" in shown.stdout
    env = {
        **os.environ,
        "_KMSADMIN_COMPLETE": "complete_bash",
        "COMP_WORDS": "kmsadmin rollout --for",
        "COMP_CWORD": "2",
    }
    completed = subprocess.run([exe], capture_output=True, text=True, timeout=60, check=False, env=env)
    assert completed.stdout.split() == ["--forks"]


def test_command_summaries_are_whole_sentences() -> None:
    for path, command in walk(root()):
        if not hasattr(command, "commands"):
            continue
        # the console script, as a user sees it (plain click help, 80 columns)
        result = subprocess.run(
            [Path(sys.executable).with_name("kmsadmin"), *path, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "COLUMNS": "80"},
        )
        assert result.returncode == 0, result.stderr
        # (click's wrapping may break after a hyphen: "wrong-" / "port")
        listing = " ".join(result.stdout.split("Commands:", 1)[1].split()).replace("- ", "-")
        assert "..." not in listing, path
        for name, sub in command.commands.items():
            if sub.hidden:
                continue
            first = " ".join((sub.help or "").split("\n\n")[0].split())
            summary = first.split(". ")[0].rstrip(".")
            assert f"{name} {summary}" in listing, (path, name)


REST_MARKUP = re.compile(r"``|:(?:func|mod|class|meth|attr|data|ref):`|^\.\. ", re.MULTILINE)


def test_help_has_no_rest_markup_and_every_option_has_help() -> None:
    for path, command in walk(root()):
        result = runner.invoke(app, [*path, "--help"], terminal_width=200)
        assert result.exit_code == 0, path
        assert not REST_MARKUP.search(result.stdout), (path, REST_MARKUP.findall(result.stdout))
        for param in command.params:
            if param.param_type_name == "option" and not param.hidden:
                assert param.help, (path, param.opts)


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_command_paths() -> set[tuple[str, ...]]:
    """Command paths named in the first column of the README's command table (``a\\|b`` expanded)."""
    section = README.read_text(encoding="utf-8").split("## Commands", 1)[1].split("\n## ", 1)[0]
    paths: set[tuple[str, ...]] = set()
    for line in section.splitlines():
        if not line.startswith("| `kmsadmin "):
            continue
        first = re.split(r"(?<!\\)\|", line)[1]
        for span in re.findall(r"`(kmsadmin [^`]*)`", first):
            words: list[list[str]] = []
            for token in span.split()[1:]:
                choices = token.split("\\|")
                if not all(re.fullmatch(r"[a-z][a-z0-9-]*", c) for c in choices):
                    break  # an argument (HOST, -i ..., [--x]) ends the command words
                words.append(choices)
            expanded: list[tuple[str, ...]] = [()]
            for choices in words:
                expanded = [(*p, c) for p in expanded for c in choices]
            # with its prefixes: "dns publishing on|off" names the command "dns publishing"
            paths.update(path[:n] for path in expanded for n in range(1, len(path) + 1))
    return paths


def cli_command_paths() -> set[tuple[str, ...]]:
    """Every command a user can run (groups excluded), from the typer app itself."""
    return {path for path, command in walk(root()) if path and not hasattr(command, "commands")}


def test_readme_command_table_matches_the_cli() -> None:
    """Each command has a README row (a new command needs one), and no row names a command that is gone."""
    readme = readme_command_paths()
    cli = cli_command_paths()
    assert {("lab", "confirmation-id"), ("plan",), ("dns", "check"), ("export", "ansible")} <= cli
    assert sorted(cli - readme) == [], "commands missing from the README's command table"
    # prefixes are groups (dns, lab) and longer paths a command's values (publishing on|off)
    stale = {p for p in readme - cli if not any(p[: len(c)] == c or c[: len(p)] == p for c in cli)}
    assert sorted(stale) == [], "README rows for commands the CLI does not have"
