"""Usage errors found before any host is contacted: a deadline that is not a positive number of
seconds, and report paths that cannot be written (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kmsadmin.cli.app import app

runner = CliRunner()


def _inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inv.yml"
    # port 9 on loopback: contacting it would fail as a host error (exit 1), not a usage error
    path.write_text(
        "all:\n  hosts:\n    pc1:\n      ansible_host: 127.0.0.1\n      ansible_port: 9\n"
        "      ansible_user: u\n      ansible_password: p-12345\n"
    )
    return path


@pytest.mark.parametrize("value", ["-5", "nan", "inf", "0"])
def test_a_deadline_that_is_not_positive_seconds_is_a_usage_error(tmp_path: Path, value: str) -> None:
    inventory = _inventory(tmp_path)
    playbook = tmp_path / "p.yml"
    playbook.write_text("- name: s\n  hosts: all\n  steps: [status]\n")
    for args in (
        ["status", "-i", str(inventory), "--deadline", value],
        ["setup-host", "127.0.0.1", "--csvlk", "Windows Server 2022", "--deadline", value],
        ["rollout", str(playbook), "-i", str(inventory), "--deadline", value, "--no-progress"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "--deadline" in result.output and "above 0" in result.output


def test_report_paths_are_checked_before_any_host_runs(tmp_path: Path) -> None:
    inventory = _inventory(tmp_path)
    directory = tmp_path / "reports"
    directory.mkdir()
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    for option, path, says in (
        ("--report-html", directory, "is a directory"),
        ("--report-json", directory, "is a directory"),
        ("--report-csv", not_a_dir / "r.csv", "is not a directory"),
        ("--junit", not_a_dir / "deeper" / "r.xml", "is not a directory"),
    ):
        result = runner.invoke(app, ["status", "-i", str(inventory), option, str(path)])
        assert result.exit_code == 2, (option, result.output)
        assert option in result.output and says in result.output
        assert "pc1" not in result.output, "no host was contacted"
    # a missing directory is created when the report is written
    result = runner.invoke(
        app,
        [
            "status",
            "-i",
            str(inventory),
            "--deadline",
            "2",
            "--report-json",
            str(tmp_path / "new" / "r.json"),
        ],
    )
    assert result.exit_code == 1 and (tmp_path / "new" / "r.json").is_file()
