"""The Ansible export against real ansible-playbook: same end state as ``kmsadmin rollout``, idempotent.

Two equal fresh labs (``kmsadmin lab up --detach``: 30 clients, one KMS host, over HTTPS with NTLM).
On one, ``kmsadmin rollout playbooks/site.yml`` and ``--resume`` (a new KMS host refuses the first
clients with 0xC004F038 until it has counted 25). On the other, ``kmsadmin export ansible --gather`` and
ansible-playbook (ansible-core's psrp connection, forks 20): the first run refuses the same kind of
clients, the second finishes them, a third changes nothing. Both labs then report the same licensing
state per host, and the lab's host key appears neither in ansible's output nor in the project.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "playbooks" / "site.yml"
BIN = Path(sys.executable).parent
CLIENTS = 30
RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


def kmsadmin(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KMSADMIN_HOST_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "kmsadmin", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmsadmin", "export", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def ansible_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_") and k != "KMSADMIN_HOST_KEY"}
    env.update(
        ANSIBLE_HOME=str(tmp / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"),
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_FORKS="20",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DEPRECATION_WARNINGS="False",
    )
    return env


def playbook_run(
    project: Path, env: dict[str, str], *extra: str
) -> tuple[int, str, dict[str, dict[str, int]]]:
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "inventory.yml", "site.yml", "--forks", "20", *extra],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = proc.stdout + proc.stderr
    recap = {
        m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
        for m in RECAP.finditer(proc.stdout)
    }
    return proc.returncode, output, recap


@pytest.fixture
def labs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two equal fresh labs, started together, stopped whatever happens."""
    dirs = [tmp_path / "lab-kmsadmin", tmp_path / "lab-ansible"]
    started: list[Path] = []
    try:
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kmsadmin",
                    "lab",
                    "up",
                    "--state-dir",
                    str(d),
                    "--hosts",
                    str(CLIENTS),
                    "--kms-hosts",
                    "1",
                    "--detach",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for d in dirs
        ]
        for directory, proc in zip(dirs, procs, strict=True):
            out, err = proc.communicate(timeout=180)
            started.append(directory)
            assert proc.returncode == 0, err
            assert Path(out.strip()).is_file(), out
        yield dirs[0] / "inventory.yml", dirs[1] / "inventory.yml"
    finally:
        for directory in started:
            kmsadmin("lab", "down", "--state-dir", str(directory), timeout=60)


def host_key(inventory: Path) -> str:
    """The lab's host key (each lab issues its own), read from the file its inventory names."""
    match = re.search(r"kmsadmin_lab_host_key_file: (\S+)", inventory.read_text())
    assert match is not None
    return Path(match[1]).read_text().strip()


def end_state(inventory: Path) -> dict[str, dict[str, Any]]:
    """Per host: license status, partial key, KMS host, KMS host count (the lab's own key as ``own``)."""
    proc = kmsadmin("status", "-i", str(inventory), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    state: dict[str, dict[str, Any]] = {}
    for host in report["hosts"]:
        s = host["state"]
        state[host["host"]] = {
            "license_status": s.get("license_status"),
            "partial_key": s.get("partial_key"),
            "kms_machine": s.get("kms_machine"),
            "is_kms_host": s.get("is_kms_host"),
            "current_count": s.get("current_count"),
        }
        if state[host["host"]]["partial_key"] == host_key(inventory)[-5:]:
            state[host["host"]]["partial_key"] = "own host key"
    return state


def test_exported_project_reaches_the_rollouts_end_state_and_a_second_run_changes_nothing(
    tmp_path: Path, labs: tuple[Path, Path]
) -> None:
    inv_kmsadmin, inv_ansible = labs
    key = host_key(inv_ansible)
    assert len(key) == 29

    # kmsadmin: the rollout, then --resume for the clients the new KMS host refused
    journal = tmp_path / "site.journal"
    first = kmsadmin(
        "rollout", str(PLAYBOOK), "-i", str(inv_kmsadmin), "--journal", str(journal), "--no-progress"
    )
    assert first.returncode in (0, 1), first.stderr
    resumed = kmsadmin(
        "rollout",
        str(PLAYBOOK),
        "-i",
        str(inv_kmsadmin),
        "--journal",
        str(journal),
        "--resume",
        "--no-progress",
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    # Ansible: export, then ansible-playbook until the refused clients are done, then once more
    project = tmp_path / "project"
    # --gather: the lab's LTSC clients name no release in kmsadmin_os; their facts tell the edition
    exported = export("ansible", str(PLAYBOOK), "-i", str(inv_ansible), "-o", str(project), "--gather")
    assert exported.returncode == 0, exported.stderr
    env = ansible_env(tmp_path)
    outputs: list[str] = []

    rc, out, recap = playbook_run(project, env)
    outputs.append(out)
    assert rc in (0, 2), out[-3000:]
    assert recap["kms01"]["failed"] == 0 and recap["kms01"]["changed"] > 0, out[-3000:]
    clients = [h for h in recap if h != "kms01"]
    assert len(clients) == CLIENTS
    refused = {h for h in clients if recap[h]["failed"]}
    assert all(recap[h]["unreachable"] == 0 for h in recap)
    if refused:  # a new KMS host refuses clients below its threshold; the play went on regardless
        assert rc == 2 and "0xC004F038" in out
        assert len(refused) < CLIENTS

    rc, out, recap = playbook_run(project, env)
    outputs.append(out)
    assert rc == 0, out[-3000:]
    assert {h for h, r in recap.items() if r["changed"]} == refused
    assert all(r["failed"] == 0 for r in recap.values())

    rc, out, recap = playbook_run(project, env, "-v")
    outputs.append(out)
    assert rc == 0, out[-3000:]
    assert len(recap) == CLIENTS + 1
    assert all(r["changed"] == 0 and r["failed"] == 0 for r in recap.values()), recap

    # the same end state per host: license status, partial key, KMS host, the KMS host's count
    by_kmsadmin = end_state(inv_kmsadmin)
    by_ansible = end_state(inv_ansible)
    assert by_kmsadmin == by_ansible
    assert all(s["license_status"] == 1 for s in by_ansible.values())
    assert by_ansible["kms01"]["partial_key"] == "own host key"
    assert by_ansible["kms01"]["is_kms_host"] and by_ansible["kms01"]["current_count"] >= 25
    assert {s["kms_machine"] for h, s in by_ansible.items() if h != "kms01"} == {"kms01.lab.test"}

    # the host key: never in ansible's output, never in the project directory
    assert all(key not in text for text in outputs)
    for path in project.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
