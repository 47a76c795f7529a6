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

from kmsadmin.render import render
from kmsadmin.values import ScriptRef
from tests.lab.test_engine import Lab

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
