"""Quality gates that run as part of the test command: ruff, mypy --strict, import-linter layers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_ruff_lint() -> None:
    proc = _run(str(BIN / "ruff"), "check", "kmsadmin", "tests")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_ruff_format() -> None:
    proc = _run(str(BIN / "ruff"), "format", "--check", "kmsadmin", "tests")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_mypy_strict() -> None:
    proc = _run(str(BIN / "mypy"), "kmsadmin")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_import_layers() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [str(BIN / "lint-imports")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:sh|bash|console)?\n(.*?)```", readme, flags=re.S)
    return [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_ci_runs_the_readme_test_command() -> None:
    commands = _readme_commands()
    assert len(commands) >= 2
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands[1] in [line.strip() for line in ci], "the README's test command must be what .ci/run runs"


#: Build and environment output that must never be tracked (path components / name suffixes).
UNTRACKED_DIRS = {
    ".venv",
    "venv",
    "build",
    "dist",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
}
COMPILED_SUFFIXES = {
    ".pyc",
    ".pyo",
    ".pyd",
    ".so",
    ".dylib",
    ".dll",
    ".exe",
    ".o",
    ".a",
    ".lib",
    ".whl",
    ".egg",
}
#: ELF, Mach-O (32/64, both byte orders, universal) and Python bytecode headers.
COMPILED_MAGIC = (
    b"\x7fELF",
    b"\xfe\xed\xfa\xce",
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",
)
#: Absolute paths of a machine that built something: home directories, temporary build trees, this checkout.
BUILD_MACHINE_PATH = re.compile(
    rb"(?:^|[\s\"'=(:])/(?:home/[\w.-]+|Users/[\w.-]+|root|tmp/pip-[\w.-]*|private/var/folders)/"
    rb"|\b[A-Za-z]:\\Users\\"
)


def _tracked_files(root: Path) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=root, capture_output=True, timeout=60, check=True
    ).stdout
    return [name for name in out.decode("utf-8").split("\0") if name]


def tracked_file_problems(root: Path) -> list[str]:
    """Tracked files that are environment or build output, compiled, or carry a build machine's path."""
    problems = []
    # This machine's own directories, as whole absolute paths (not "server2019/root/cimv2", a WMI namespace).
    local_paths = [
        re.compile(rb"(?:^|[\s\"'=(:])" + re.escape(f"{p}/".encode()))
        for p in (root, sys.prefix, Path.home())
        if len(str(p)) > 1
    ]
    for name in _tracked_files(root):
        parts = Path(name).parts
        if UNTRACKED_DIRS & set(parts[:-1]) or any(p.endswith(".egg-info") for p in parts):
            problems.append(f"{name}: environment or build output")
            continue
        if Path(name).suffix.lower() in COMPILED_SUFFIXES:
            problems.append(f"{name}: compiled artefact")
            continue
        path = root / name
        if not path.is_file():
            continue  # deleted in the working tree: git status shows it
        data = path.read_bytes()
        if data.startswith(COMPILED_MAGIC) or (data[:2] == b"MZ" and b"PE\0\0" in data[:1024]):
            problems.append(f"{name}: compiled artefact")
        elif data.startswith(b"#!/") and not re.match(rb"#!(?:/usr)?/bin/(?:env |sh\b|bash\b)", data):
            problems.append(f"{name}: script with an absolute interpreter path: {data.splitlines()[0]!r}")
        elif BUILD_MACHINE_PATH.search(data) or any(p.search(data) for p in local_paths):
            problems.append(f"{name}: contains an absolute path of a build machine")
    return problems


def test_no_tracked_environment_build_output_or_machine_paths() -> None:
    assert tracked_file_problems(ROOT) == []


def test_tracked_file_check_finds_each_kind(tmp_path: Path) -> None:
    """The check above fails on each thing it looks for (a repository that has them all)."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=60)
    files = {
        ".venv/bin/activate": b"echo\n",
        "build/lib/x.py": b"",
        "dist/x.tar.gz": b"",
        "pkg.egg-info/PKG-INFO": b"",
        "pkg/__pycache__/m.cpython-311.pyc": b"",
        "native.so": b"\x7fELF",
        "tool": b"\x7fELF\x02\x01",
        "bin/kmsadmin": b"#!/srv/build/.venv/bin/python3\nimport sys\n",
        "notes.txt": b"built in " + b"/".join([b"", b"home", b"builder", b"src", b"kmsadmin"]),
        "setup.log": b"C:" + b"\\".join([b"", b"Users", b"builder", b"kmsadmin"]),
        "here.cfg": str(tmp_path / "x").encode(),
        "pip.log": b"/".join([b"", b"tmp", b"pip-build-1x", b"kmsadmin"]),
        "fine.sh": b"#!/usr/bin/env bash\necho ok\n",
        "fine.txt": b"see /usr/share/doc and /etc/hosts\n",
    }
    for name, data in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    subprocess.run(["git", "-C", str(tmp_path), "add", "-f", "."], check=True, timeout=60)
    flagged = {problem.split(":")[0] for problem in tracked_file_problems(tmp_path)}
    assert flagged == set(files) - {"fine.sh", "fine.txt"}


@pytest.mark.slow
def test_readme_commands_leave_a_clean_clone(tmp_path: Path) -> None:
    """A fresh clone, the README's two commands in it, then `git status --porcelain` is empty.

    The second command runs a quick part of the suite in the clone (the README's command verbatim,
    narrowed with PYTEST_ADDOPTS; running the whole suite inside itself would recurse).
    """
    clone = tmp_path / "kmsadmin"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    commands = _readme_commands()[:2]
    assert "kmsadmin demo" in commands[0] and "pytest" in commands[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != str(BIN))
    env["PYTEST_ADDOPTS"] = "-m 'not slow' tests/test_quality.py tests/test_cli.py"
    for command in commands:
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=clone,
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            check=False,
        )
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    # every file the demo writes is named in the README
    readme = (clone / "README.md").read_text(encoding="utf-8")
    written = sorted((clone / "kmsadmin-demo").iterdir())
    assert {"rollout.html", "report.html"} <= {entry.name for entry in written}
    for entry in written:
        name = "lab-*/" if entry.is_dir() and entry.name.startswith("lab-") else entry.name
        assert f"`{name}`" in readme, f"the demo writes {entry.name}; the README does not name it"
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert status.stdout == ""
