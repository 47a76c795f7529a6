"""Where a KMS client sends activation: the ``set-kms-host`` variants agree on the port.

``slmgr /skms name`` without a port calls ``ClearKeyManagementServicePort`` ([SLMGRVBS]
``SetKmsMachineName``: ``If strKmsPort <> "" Then ... SetKeyManagementServicePort(nKmsPort) Else
objTarget.ClearKeyManagementServicePort()``), so the port goes back to the default 1688. The
PowerShell variant does the same. The cmd variant is checked by its rendered slmgr command line, read
the way slmgr.vbs reads it (the quotes around each value are removed, as the command-line parser does);
the PowerShell variant runs in the lab.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from kmsadmin.facts import HostFacts
from kmsadmin.fleet.runner import run_host
from kmsadmin.operations.convert_client import ConvertClientArgs, plan_convert_client
from kmsadmin.render import render
from kmsadmin.values import ScriptRef
from tests.lab.test_engine import Lab
from tests.test_rollout_lab import LabSessions

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
SLMGR_SKMS = re.compile(
    r'^cscript //NoLogo "%SystemRoot%\\System32\\slmgr\.vbs" /skms (?P<arg>\S+)(?: \S+)? <NUL$'
)

#: (form, kms_host, kms_port): with a port, without a port, a bare port (``/skms :port``)
FORMS = [
    ("host-and-port", "kms01.lab.test", 2500),
    ("host-only", "kms01.lab.test", ""),
    ("port-only", "", 2500),
]


def _golden(name: str, text: str) -> None:
    """Compare with tests/fixtures/golden/NAME; KMSADMIN_UPDATE_GOLDEN=1 rewrites the file."""
    path = GOLDEN / name
    if os.environ.get("KMSADMIN_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
    assert path.read_bytes().decode("utf-8") == text, f"{name} differs from its golden file"


def _params(kms_host: str, kms_port: int | str) -> dict[str, Any]:
    return {"kms_host": kms_host, "kms_port": kms_port, "activation_id": ""}


def _slmgr_skms(arg: str) -> int:
    """The port slmgr.vbs leaves after ``/skms ARG`` (its SetKmsMachineName, [SLMGRVBS]).

    ``name:port`` / ``:port`` set the port; a bare name clears it (KeyManagementServicePort reads 0,
    the client uses 1688). The IPv6 ``[addr]:port`` form is not used by kmsadmin.
    """
    if ":" in arg:
        return int(arg.rsplit(":", 1)[1])
    return 0


def _cmd_skms_argument(script: str) -> str:
    """The expanded ``/skms`` argument of the rendered cmd variant (its ``set`` lines substituted)."""
    values = dict(re.findall(r'^set (KMSADMIN_[A-Z_]+)="([^"]*)"\r$', script, flags=re.M))
    (line,) = [line for line in script.split("\r\n") if line.startswith("cscript") and "/skms " in line]
    match = SLMGR_SKMS.match(line)
    assert match, line
    return re.sub(r"%(KMSADMIN_[A-Z_]+)%", lambda m: values[m[1]], match["arg"])


@pytest.mark.parametrize(("form", "kms_host", "kms_port"), FORMS, ids=[f[0] for f in FORMS])
def test_set_kms_host_golden_scripts(form: str, kms_host: str, kms_port: int | str) -> None:
    ps1 = render(ScriptRef("set-kms-host", _params(kms_host, kms_port))).text
    cmd = render(ScriptRef("set-kms-host", _params(kms_host, kms_port), fmt="cmd")).text
    # the ps1 golden is the step's own part (the shared functions are checked elsewhere)
    body = ps1.split("# --- end of common functions ---", 1)[1]
    params = ps1.split("# kmsadmin-body", 1)[0]
    _golden(f"set-kms-host/{form}.ps1", params + "# kmsadmin-body ... common functions ..." + body)
    _golden(f"set-kms-host/{form}.cmd", cmd)


@pytest.mark.parametrize("port_before", [0, 1688, 2500, 3000])
@pytest.mark.parametrize(("form", "kms_host", "kms_port"), FORMS, ids=[f[0] for f in FORMS])
def test_cmd_and_ps1_set_kms_host_leave_the_same_port(
    tmp_path: Path, form: str, kms_host: str, kms_port: int | str, port_before: int
) -> None:
    lab = Lab(tmp_path / "lab", hosts=1, kms_hosts=0, os_mix="win11-enterprise=1")
    if port_before:
        lab.run("client001", "set-kms-host", kms_host="old.lab.test", kms_port=port_before, activation_id="")
    assert lab.facts("client001")["service"]["kms_port"] == port_before

    cmd = render(ScriptRef("set-kms-host", _params(kms_host, kms_port), fmt="cmd")).text
    cmd_port = _slmgr_skms(_cmd_skms_argument(cmd))
    answer = lab.run("client001", "set-kms-host", **_params(kms_host, kms_port))
    ps1_port = answer["after"]["kms_port"]

    expected = {"host-and-port": 2500, "host-only": 0, "port-only": 2500}[form]
    assert cmd_port == ps1_port == expected == lab.facts("client001")["service"]["kms_port"]
    assert answer["changed"] is (port_before != expected or form != "port-only")
    # a second run of the PowerShell variant changes nothing
    assert lab.run("client001", "set-kms-host", **_params(kms_host, kms_port))["changed"] is False


# --- a Windows product with its own KMS host -------------------------------------------------------


def _pin_product(lab: Lab, host: str, kms_host: str) -> str:
    """``slmgr /skms kms_host ActivationID``: the Windows product's own KMS host."""
    product_id = str(lab.windows(host)["id"])
    answer = lab.run(host, "set-kms-host", kms_host=kms_host, kms_port="", activation_id=product_id)
    assert answer["changed"] and answer["after"]["kms_machine"] == kms_host
    return product_id


def test_convert_client_moves_a_per_product_kms_host(tmp_path: Path) -> None:
    lab = Lab(tmp_path / "lab", hosts=5, kms_hosts=2, os_mix="server2022-standard=5")
    lab.setup_kms("kms01")
    lab.setup_kms("kms02")
    clients = [f"client00{n}" for n in range(1, 6)]
    products = {client: _pin_product(lab, client, "kms01.lab.test") for client in clients}
    sessions = LabSessions(lab.engine)
    args = ConvertClientArgs(target="host", kms_host="kms02.lab.test", kms_port=1688)

    def convert(client: str) -> Any:
        return run_host("convert-client", client, args, sessions.factory_for({}))

    first = [convert(client) for client in clients]
    for client, report in zip(clients, first, strict=True):
        (set_step,) = [s for s in report.plan["steps"] if s["step"] == "set-kms-host"]
        # the product's own setting wins, so that is the one changed (not the machine-wide one)
        assert set_step["params"]["activation_id"] == products[client], set_step
    # a new KMS host counts 5 servers before it activates them (0xC004F038 for the first four)
    assert [r.status for r in first] == ["waiting"] * 4 + ["changed"]
    kms02 = lab.facts("kms02")["service"]
    assert kms02["current_count"] == 5 and kms02["requests"]["total"] == 5
    assert lab.facts("kms01")["service"]["requests"]["total"] == 0  # nothing went to the old host

    again = [convert(client) for client in clients]
    assert {r.status for r in again} == {"changed", "ok"} and all(r.error is None for r in again)
    final = [convert(client) for client in clients]
    assert [r.status for r in final] == ["ok"] * 5 and sum(r.changes for r in final) == 0
    for report in final:
        # the report shows the host the product really uses, and where that is set
        assert (report.state["kms_machine"], report.state["kms_port"], report.state["kms_level"]) == (
            "kms02.lab.test",
            1688,
            "product",
        )
        status = run_host("status", report.host, None, sessions.factory_for({}))
        assert status.state["kms_machine"] == "kms02.lab.test"
        assert status.state["activation"]["kms_host"]["uses"] == "kms02.lab.test:1688"
    for client in clients:
        facts = lab.facts(client)
        assert facts["service"]["kms_machine"] is None  # the machine-wide setting was never the one used
        windows = lab.windows(client)
        assert (windows["kms_machine"], windows["license_status"]) == ("kms02.lab.test", 1)
        assert windows["discovered_kms"] in (None, "kms02.lab.test")


def test_per_product_kms_host_port_wins_with_its_own_default(tmp_path: Path) -> None:
    lab = Lab(tmp_path / "lab", hosts=1, kms_hosts=0, os_mix="win11-enterprise=1")
    lab.point("client001", "kms-old.lab.test", 2500)
    product_id = _pin_product(lab, "client001", "kms-new.lab.test")
    facts = HostFacts.model_validate(lab.facts("client001"))
    target = facts.kms_target()
    # the product's own host, with its own port (0: the default 1688), not the machine-wide 2500
    assert (target.machine, target.effective_port, target.level, target.activation_id) == (
        "kms-new.lab.test",
        1688,
        "product",
        product_id,
    )
    plan = plan_convert_client(
        "client001", facts, ConvertClientArgs(target="host", kms_host="kms-new.lab.test")
    )
    assert [s.step for s in plan.steps] == ["activate"]  # not activated yet; the target is right
    # auto-discovery clears both levels, the product's first
    auto = plan_convert_client("client001", facts, ConvertClientArgs(target="auto"))
    cleared = [(s.step, s.ref.params["activation_id"]) for s in auto.steps if s.step == "clear-kms-host"]
    assert cleared == [("clear-kms-host", product_id), ("clear-kms-host", "")]
    domain = plan_convert_client(
        "client001", facts, ConvertClientArgs(target="domain", lookup_domain="lab.test")
    )
    assert [(s.step, s.ref.params["activation_id"]) for s in domain.steps if s.step != "activate"] == [
        ("clear-kms-host", product_id),
        ("clear-kms-host", ""),
        ("set-lookup-domain", ""),
    ]
