"""The Ansible variants of ``benchmarks/rollout.py`` do what they claim, against real ansible-playbook.

One fresh lab (30 clients, one KMS host, HTTPS with NTLM). The best-practice project (one ``raw`` task
per host running the whole conversion as one script) fails its canary while the KMS host is not set
up, so the play stops there; once the KMS host is set up it converts every client (the new KMS host
refuses the first ones with 0xC004F038: not a failure, a second run finishes them), which
``kmsadmin status`` confirms per host. The floor project (one read-only script per host) succeeds on
every client and changes nothing. Not a timed test.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.lab.labproc import lab_process
from tests.lab.test_export_ansible import RECAP, ansible_env, export, kmsadmin

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CLIENTS = 30


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "kmsadmin_bench_rollout", REPO / "benchmarks" / "rollout.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Path]:
    with lab_process(tmp_path, "--hosts", str(CLIENTS), "--kms-hosts", "1", timeout=600) as (_, inventory):
        yield inventory


def _play(project: Path, tmp: Path) -> tuple[int, str, dict[str, dict[str, int]]]:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "site.yml", "--forks", "20"],
        cwd=project,
        env=ansible_env(tmp),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    recap = {
        m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
        for m in RECAP.finditer(proc.stdout)
    }
    return proc.returncode, proc.stdout + proc.stderr, recap


def _clients(inventory: Path) -> dict[str, dict[str, object]]:
    proc = kmsadmin("status", "-i", str(inventory), "--json")
    assert proc.returncode == 0, proc.stderr
    return {h["host"]: h["state"] for h in json.loads(proc.stdout)["hosts"] if h["host"] != "kms01"}


def test_best_practice_and_floor_projects_on_a_lab(tmp_path: Path, lab: Path) -> None:
    bench = _bench()
    exported = export(
        "ansible",
        str(REPO / "playbooks" / "clients.yml"),
        "-i",
        str(lab),
        "-o",
        str(tmp_path / "export"),
        "--gather",
    )
    assert exported.returncode == 0, exported.stderr
    best, floor = tmp_path / "best", tmp_path / "floor"
    assert bench.best_practice_project(tmp_path / "export", best) >= 1
    bench.floor_project(tmp_path / "export", floor)
    hosts = sorted(p.stem for p in (best / "host_vars").glob("*.yml"))
    assert len(hosts) == CLIENTS

    # the floor reads every client and changes nothing
    rc, out, recap = _play(floor, tmp_path)
    assert rc == 0, out[-3000:]
    assert sorted(recap) == hosts
    assert all(r == {"ok": 1, "changed": 0, "unreachable": 0, "failed": 0} for r in recap.values()), recap
    assert all(s["license_status"] != 1 or s["kms_machine"] is None for s in _clients(lab).values())

    # no KMS host answers yet: the canary fails and max_fail_percentage stops the play
    rc, out, recap = _play(best, tmp_path)
    assert rc == 2, out[-3000:]
    assert [r["failed"] for r in recap.values() if r["failed"]] == [1] and len(recap) == 1, recap

    setup = kmsadmin("rollout", str(REPO / "playbooks" / "kms-hosts.yml"), "-i", str(lab), "--no-progress")
    assert setup.returncode == 0, setup.stdout[-3000:]
    rc, out, recap = _play(best, tmp_path)
    assert rc == 0, out[-3000:]
    assert sorted(recap) == hosts and all(r["failed"] == 0 for r in recap.values())
    waiting = {h for h, s in _clients(lab).items() if s["license_status"] != 1}
    assert 0 < len(waiting) < CLIENTS  # the new KMS host refused the first clients (0xC004F038)
    rc, out, recap = _play(best, tmp_path)
    assert rc == 0, out[-3000:]
    states = _clients(lab)
    assert all(s["license_status"] == 1 for s in states.values()), states
    assert {s["kms_machine"] for s in states.values()} == {"kms01.lab.test"}
