"""Required KMS host updates in the lab: a later cumulative update (build.UBR) counts, as [PLAN24]'s
"or later cumulative update" says, though the host does not list the KB the planning page names."""

from __future__ import annotations

from pathlib import Path

from kmsadmin.facts import HostFacts
from kmsadmin.lab import kms
from kmsadmin.operations.setup_host import SetupHostArgs, plan_setup_host
from kmsadmin.values import Secret
from tests.lab.test_engine import Lab, hresult


def test_server_2022_with_a_later_lcu_carries_the_2025_host_key(tmp_path: Path) -> None:
    lab = Lab(tmp_path / "lab", hosts=0, kms_hosts=1)
    facts = lab.facts("kms01")
    # the lab's Server 2022 image: the 2024-10 B cumulative update (KB5044281, 20348.2762 [RELINFO])
    assert (facts["os"]["build"], facts["os"]["ubr"]) == (20348, 2762)
    assert "KB5034770" not in facts["hotfixes"] and "KB5044281" in facts["hotfixes"]
    key = lab.key("windows-server-2025")
    args = SetupHostArgs(host_key=Secret(key), csvlk="windows-server-2025")
    assert not plan_setup_host("kms01", HostFacts.model_validate(facts), args).problems
    answer = lab.install("kms01", key)
    assert "error" not in answer, answer


def test_server_2022_before_the_required_build_is_refused(tmp_path: Path) -> None:
    lab = Lab(tmp_path / "lab", hosts=0, kms_hosts=1)
    host = lab.fleet.hosts["kms01"]
    host.os.ubr = 2227  # 2024-01 B (KB5034129), before KB5034770's 20348.2322
    host.hotfixes = ["KB5034129"]
    lab.fleet.save("kms01")
    assert kms.missing_updates("windows-server-2025", host) == ["KB5034770"]
    facts = HostFacts.model_validate(lab.facts("kms01"))
    args = SetupHostArgs(host_key=Secret(lab.key("windows-server-2025")), csvlk="windows-server-2025")
    (problem,) = plan_setup_host("kms01", facts, args).problems
    assert "KB5034770 (build 20348.2322 or later)" in problem.message
    refused = lab.install("kms01", lab.key("windows-server-2025"))
    assert hresult(refused) == "0xC004F050" and "KB5034770" in refused["error"]["message"]
