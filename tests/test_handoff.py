"""The slmgr hand-off scripts (``--dry-run --format slmgr``) run as printed, checked by a cmd interpreter.

The host key is never in the printed script, not even masked: the script reads it on the host when it
runs (KMSADMIN_HOST_KEY or a ``set /p`` prompt) and uses it only when it is a well-formed key ending in
the expected five characters.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kmsadmin.render import render
from tests.cmdshell import CmdError, run
from tests.test_templates import STEPS, values_for

KMSADMIN = Path(sys.executable).with_name("kmsadmin")
HOST_KEY = "BCDFG-HJKMP-QRTVW-XY234-6789B"
WINDOWS = {"SystemRoot": r"C:\Windows", "ProgramFiles": r"C:\Program Files"}
OSPP = r"C:\Program Files\Microsoft Office\Office16\ospp.vbs"


def handoff(*args: str, env: dict[str, str] | None = None) -> str:
    """The console script's stdout, bytes as printed (CRLF kept)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KMSADMIN_")}
    proc = subprocess.run(
        [KMSADMIN, *args, "--dry-run", "--format", "slmgr"],
        capture_output=True,
        timeout=60,
        check=False,
        env={**base, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode("utf-8")


def ipk_calls(calls: list[list[str]]) -> list[list[str]]:
    return [c[3:] for c in calls if c[:1] == ["cscript"] and "/ipk" in c]


SETUP = ("setup-host", "kms01.contoso.com", "--csvlk", "Windows Server 2022", "--no-dns-publishing")


@pytest.fixture(scope="module")
def setup_script() -> str:
    return handoff(*SETUP, env={"KMSADMIN_HOST_KEY": HOST_KEY})


def test_setup_host_slmgr_prints_no_key_and_no_placeholder(setup_script: str) -> None:
    assert HOST_KEY not in setup_script and HOST_KEY[:-5] not in setup_script
    assert "*****" not in setup_script and "<" not in setup_script.replace("<NUL", "")
    assert 'set KMSADMIN_KEY_TAIL="6789B"\r\n' in setup_script
    assert setup_script.startswith("@echo off\r\n") and setup_script.endswith("\r\n")


def test_setup_host_slmgr_runs_with_the_key_from_the_environment(setup_script: str) -> None:
    result = run(setup_script, env={**WINDOWS, "KMSADMIN_HOST_KEY": HOST_KEY})
    assert result.exit_code == 0, result.stderr
    assert ipk_calls(result.calls) == [["/ipk", HOST_KEY]]
    tools = [" ".join(c[3:4]) for c in result.calls if c[0] == "cscript"]
    assert tools == ["/ipk", "/ato", "/cdns"]
    assert result.stdout[-1] == "kmsadmin: 5 step(s) done"


def test_setup_host_slmgr_prompts_for_the_key(setup_script: str) -> None:
    result = run(setup_script, env=WINDOWS, stdin=[HOST_KEY.lower()])
    assert result.exit_code == 0, result.stderr
    assert "KMS host key ending in 6789B: " in result.stdout
    assert ipk_calls(result.calls) == [["/ipk", HOST_KEY.lower()]]
    assert "KMSADMIN_HOST_KEY" not in result.env  # read inside setlocal: gone when the script ends


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        (None, "no KMS host key"),
        ("BCDFG-HJKMP-QRTVW-XY234-6789C", 'does not end in "6789B"'),
        ("BCDFG-HJKMP-QRTVW-XY234-6789B & whoami", "not a product key"),
        ('BCDFG-HJKMP-QRTVW-XY234-"789B', "not a product key"),
        ("BCDFG-HJKMP-QRTVW-XY234-678%B", "not a product key"),
        ("BCDFG-HJKMP-QRTVW-XY234-6789", "not a product key"),
        ("BCDFGHHJKMP-QRTVW-XY234-6789B", "not a product key"),
    ],
)
def test_setup_host_slmgr_refuses_a_missing_or_bad_key(
    setup_script: str, typed: str | None, message: str
) -> None:
    result = run(setup_script, env=WINDOWS, stdin=[] if typed is None else [typed])
    assert result.exit_code == 87
    assert ipk_calls(result.calls) == []
    assert not [c for c in result.calls if "/ato" in c]  # stopped before activation
    assert any(message in line for line in result.stderr), result.stderr
    assert result.stderr[-1] == "kmsadmin: step 3 install-host-key failed, stopping"


def test_setup_host_slmgr_without_a_key_runs_and_prompts() -> None:
    """Issue 11: without a key the hand-off used to fail with exit 4 ('<>' in a cmd value)."""
    script = handoff(*SETUP)
    assert 'set KMSADMIN_KEY_TAIL=""\r\n' in script
    result = run(script, env=WINDOWS, stdin=[HOST_KEY])
    assert result.exit_code == 0, result.stderr
    assert "KMS host key: " in result.stdout
    assert ipk_calls(result.calls) == [["/ipk", HOST_KEY]]


def test_setup_host_slmgr_with_host_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "kms.key"
    key_file.write_text(HOST_KEY + "\n", encoding="utf-8")
    script = handoff(*SETUP, "--host-key-file", str(key_file))
    assert HOST_KEY not in script and "*****" not in script
    result = run(script, env={**WINDOWS, "KMSADMIN_HOST_KEY": HOST_KEY})
    assert result.exit_code == 0 and ipk_calls(result.calls) == [["/ipk", HOST_KEY]]


def test_a_failing_step_stops_the_handoff(setup_script: str) -> None:
    result = run(
        setup_script,
        env={**WINDOWS, "KMSADMIN_HOST_KEY": HOST_KEY},
        programs=lambda argv: -1073418160 if "/ato" in argv else 0,  # 0xC004F050 as cscript's exit code
    )
    assert result.exit_code == -1073418160
    assert not [c for c in result.calls if "/cdns" in c]
    assert result.stderr == ["kmsadmin: step 4 activate failed, stopping"]


def test_convert_client_slmgr_runs_as_printed() -> None:
    script = handoff(
        "convert-client", "pc0042", "--edition", "windows-11-enterprise", "--kms-host", "kms01.contoso.com"
    )
    result = run(script, env=WINDOWS)
    assert result.exit_code == 0, result.stderr
    args = [c[3:] for c in result.calls if c[0] == "cscript"]
    assert [
        "/ipk",
        "NPPR9-FWDCX-D2C8J-H872K-2YT43",
    ] in args  # the public GVLK (Microsoft's KMS client key table)
    assert ["/skms", "kms01.contoso.com:1688"] in args and ["/ato"] in args


@pytest.mark.parametrize("step", sorted(STEPS))
def test_every_cmd_template_runs_in_the_interpreter(step: str) -> None:
    from kmsadmin.values import ScriptRef

    script = render(ScriptRef(step=step, params=values_for(step), fmt="cmd")).text
    key = values_for(step).get("product_key")
    result = run(script, env={**WINDOWS, "KMSADMIN_HOST_KEY": str(key or HOST_KEY)}, existing={OSPP})
    assert result.exit_code == 0, result.stderr
    assert result.calls, "the step runs a tool"
    assert result.stdout[-1].startswith('{"kmsadmin":1,"step":"' + step + '","rc":0}')


def test_the_interpreter_catches_injection_and_bad_syntax() -> None:
    """The check can fail: an unquoted value that expands to a command runs it, as in cmd."""
    injected = "set V=%X%\r\necho done\r\n"
    with pytest.raises(CmdError, match="whoami"):
        run(injected.replace("set V=%X%", "%X%"), env={"X": "echo a & whoami"})
    quoted = 'set "V=%X%"\r\n'
    assert run(quoted, env={"X": "a & whoami"}).env["V"] == "a & whoami"
    with pytest.raises(CmdError, match="LF"):
        run("@echo off\necho x\n")
    with pytest.raises(CmdError, match="missing label"):
        run("goto nowhere\r\n")
    with pytest.raises(CmdError, match="redirection"):
        run("echo <KMS host key>\r\n")
