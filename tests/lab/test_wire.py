"""The lab's WS-Man server against real, unmodified pypsrp and pywinrm clients over loopback HTTP(S).

Covers PSRP (RunspacePool/PowerShell, ``execute_ps``), WinRS (``execute_cmd``, ``WinRS``/``Process``
with the script on stdin, pywinrm ``run_ps``), the three ways to authenticate (Basic, NTLM with message
encryption over HTTP, NTLM over HTTPS), the cmd.exe limits, and per-host credential checks.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
import requests
import winrm
from pypsrp.client import Client
from pypsrp.exceptions import AuthenticationError, WSManFaultError
from pypsrp.powershell import PowerShell, PSInvocationState, RunspacePool
from pypsrp.shell import Process, SignalCode, WinRS
from pypsrp.wsman import WSMan

from kmsadmin.lab.api import EndpointConfig
from kmsadmin.lab.server import LabServer
from tests.lab.conftest import PASSWORD, USER, EchoEngine, LabFactory

pytestmark = pytest.mark.lab

BOOTSTRAP = (
    "$ErrorActionPreference='Stop';$ProgressPreference='SilentlyContinue'\n"
    "$s=[Text.Encoding]::UTF8.GetString([Convert]::FromBase64String([Console]::In.ReadToEnd()))\n"
    "& ([ScriptBlock]::Create($s))\n"
)


def wsman_for(lab: LabServer, name: str, **kwargs: object) -> WSMan:
    ep = lab.endpoint(name)
    options: dict[str, object] = {
        "port": ep.port,
        "username": USER,
        "password": PASSWORD,
        "ssl": ep.tls,
        "auth": "ntlm",
        "cert_validation": str(lab.ca_path),
        "connection_timeout": 5,
        "read_timeout": 10,
        "operation_timeout": 5,
        "no_proxy": True,
    }
    options.update(kwargs)
    return WSMan("127.0.0.1", **options)


def encoded(script: str) -> str:
    return base64.b64encode(script.encode("utf-16-le")).decode()


def first_json(text: str) -> dict[str, object]:
    return dict(json.loads(text.strip().splitlines()[0]))


# --- PSRP ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "auth"),
    [("web", "ntlm"), ("web", "negotiate"), ("sec", "negotiate"), ("sec", "basic")],
    ids=["ntlm-http-encrypted", "spnego-http-encrypted", "ntlm-https-ca", "basic-https-ca"],
)
def test_runspace_pool_runs_scripts(lab: LabServer, engine: EchoEngine, host: str, auth: str) -> None:
    with wsman_for(lab, host, auth=auth) as wsman, RunspacePool(wsman) as pool:
        for n in range(3):
            ps = PowerShell(pool)
            ps.add_script(f"# step {n}\n$x = {n}")
            output = ps.invoke()
            assert ps.state == PSInvocationState.COMPLETED
            assert not ps.had_errors
            assert [json.loads(o) for o in output] == [
                {"host": host, "via": "psrp", "first": f"# step {n}", "chars": 15}
            ]
    assert len(engine.calls) == 3
    assert lab.shell_count(host) == 0, "closing the pool deletes the shell"


def test_pool_reuses_one_authenticated_connection(lab: LabServer) -> None:
    with wsman_for(lab, "web") as wsman, RunspacePool(wsman) as pool:
        before = lab.request_count("web")
        for _ in range(3):
            ps = PowerShell(pool)
            ps.add_script("1")
            ps.invoke()
        # Command + Receive per pipeline, and no new NTLM handshake on the kept-alive connection.
        assert lab.request_count("web") - before == 6


def test_psrp_error_records_are_non_terminating(lab: LabServer) -> None:
    with wsman_for(lab, "sec") as wsman, RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script("#lab:error first problem\n#lab:error second problem")
        output = ps.invoke()
        assert len(output) == 1
        assert ps.state == PSInvocationState.COMPLETED
        assert ps.had_errors is False  # like Write-Error under the default ErrorActionPreference
        assert [str(e) for e in ps.streams.error] == ["first problem", "second problem"]


def test_psrp_engine_exception_fails_the_pipeline(lab: LabServer) -> None:
    with wsman_for(lab, "sec") as wsman, RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script("#lab:raise activation service missing")
        ps.invoke()
        assert ps.state == PSInvocationState.FAILED
        assert ps.had_errors
        assert "activation service missing" in str(ps.streams.error[0])


def test_psrp_unknown_command_is_command_not_found(lab: LabServer, engine: EchoEngine) -> None:
    with wsman_for(lab, "web") as wsman, RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-CimInstance").add_parameter("ClassName", "SoftwareLicensingProduct")
        ps.invoke()
        assert ps.had_errors
        error = ps.streams.error[0]
        assert str(error).startswith("The term 'Get-CimInstance' is not recognized as the name of a cmdlet")
        assert error.fq_error == "CommandNotFoundException"
        assert engine.calls == []


def test_psrp_stop_signals_a_running_pipeline(lab: LabServer, engine: EchoEngine) -> None:
    with wsman_for(lab, "web", operation_timeout=1) as wsman, RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script("#lab:sleep 20")
        ps.begin_invoke()
        ps.stop()
        assert ps.state == PSInvocationState.STOPPED
        engine.release.set()
        # The pool still works after a stopped pipeline.
        ps = PowerShell(pool)
        ps.add_script("after")
        assert first_json(ps.invoke()[0])["first"] == "after"


def test_psrp_large_script_and_output(lab: LabServer) -> None:
    script = "# big\n" + "\n".join(f"$v{i} = '{'x' * 90}'" for i in range(4000))  # ~400 KB, many fragments
    with wsman_for(lab, "web") as wsman, RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script(script + "\n#lab:lines 3000")
        output = ps.invoke()
        assert first_json(output[0])["chars"] == len(script) + len("\n#lab:lines 3000")
        assert output[-1] == "line 2999"


def test_client_execute_ps_and_cmd(lab: LabServer, engine: EchoEngine) -> None:
    ep = lab.endpoint("web")
    with Client(
        "127.0.0.1", port=ep.port, username=USER, password=PASSWORD, ssl=False, auth="ntlm", no_proxy=True
    ) as client:
        out, streams, had_errors = client.execute_ps("Get-Date\n#lab:lines 2")
        assert out.splitlines()[1:] == ["line 0", "line 1"]
        assert first_json(out) == {"host": "web", "via": "psrp", "first": "Get-Date", "chars": 21}
        assert not had_errors
        assert streams.error == []

        stdout, stderr, rc = client.execute_cmd(
            "powershell.exe -NoProfile -NonInteractive -EncodedCommand " + encoded("hi")
        )
        assert (first_json(stdout)["via"], stderr, rc) == ("winrs", "", 0)

        stdout, stderr, rc = client.execute_cmd("ipconfig /all")
        assert stdout == ""
        assert stderr.startswith("'ipconfig' is not recognized as an internal or external command,")
        assert rc == 1


# --- WinRS -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["-EncodedCommand", "-encodedcommand", "-enc", "-e", "-ec"])
def test_winrs_encoded_command_spellings(lab: LabServer, flag: str) -> None:
    with wsman_for(lab, "sec", auth="basic") as wsman, WinRS(wsman) as shell:
        proc = Process(
            shell, "powershell", ["-NoProfile", "-ExecutionPolicy", "Bypass", flag, encoded("spelled")]
        )
        proc.invoke()
        assert (first_json(proc.stdout.decode())["first"], proc.rc) == ("spelled", 0)


def test_winrs_script_over_stdin(lab: LabServer, engine: EchoEngine) -> None:
    script = "# kmsadmin-op: facts/v1\n" + "\n".join(f"$line{i} = 'für {i}'" for i in range(2000))
    payload = base64.b64encode(script.encode("utf-8"))
    with wsman_for(lab, "web") as wsman, WinRS(wsman, codepage=65001) as shell:
        proc = Process(
            shell, "powershell.exe", ["-NoProfile", "-NonInteractive", "-EncodedCommand", encoded(BOOTSTRAP)]
        )
        proc.begin_invoke()
        chunk = 20000
        for start in range(0, len(payload), chunk):
            proc.send(payload[start : start + chunk], end=start + chunk >= len(payload))
        proc.end_invoke()
        proc.signal(SignalCode.CTRL_C)
    result = first_json(proc.stdout.decode("utf-8"))
    assert result == {"host": "web", "via": "winrs", "first": "# kmsadmin-op: facts/v1", "chars": len(script)}
    assert proc.rc == 0
    assert engine.calls[-1][2] == len(script)


def test_pywinrm_protocol_plain_stdin(lab: LabServer) -> None:
    protocol = winrm.protocol.Protocol(lab.url("web"), transport="ntlm", username=USER, password=PASSWORD)
    shell_id = protocol.open_shell(codepage=65001)
    try:
        command_id = protocol.run_command(shell_id, "powershell", ["-NoProfile", "-Command", "-"])
        protocol.send_command_input(shell_id, command_id, "Get-Item 'ä'\r\n".encode(), end=True)
        stdout, stderr, rc = protocol.get_command_output(shell_id, command_id)
        protocol.cleanup_command(shell_id, command_id)
    finally:
        protocol.close_shell(shell_id)
    assert (first_json(stdout.decode("utf-8"))["first"], stderr, rc) == ("Get-Item 'ä'", b"", 0)


def test_winrs_codepages(lab: LabServer) -> None:
    for codepage, codec in ((437, "cp437"), (65001, "utf-8")):
        with wsman_for(lab, "web") as wsman, WinRS(wsman, codepage=codepage) as shell:
            proc = Process(shell, "powershell", ["-EncodedCommand", encoded("grüße")])
            proc.invoke()
        assert "grüße".encode(codec) in proc.stdout
    with wsman_for(lab, "web") as wsman, WinRS(wsman) as shell:  # no WINRS_CODEPAGE: the OEM page 437
        proc = Process(shell, "powershell", ["-EncodedCommand", encoded("日本")])
        proc.invoke()
    assert b'"first": "??"' in proc.stdout


def test_winrs_errors_are_clixml_on_stderr(lab: LabServer) -> None:
    with wsman_for(lab, "web") as wsman, WinRS(wsman) as shell:
        proc = Process(shell, "powershell", ["-EncodedCommand", encoded("#lab:error key not found")])
        proc.invoke()
    assert proc.rc == 1
    assert proc.stderr.startswith(b"#< CLIXML\r\n<Objs ")
    assert b'<S S="Error">' in proc.stderr  # the casing powershell.exe uses, which pypsrp matches on
    assert Client.sanitise_clixml(proc.stderr.decode()).strip() == "key not found"


def test_pywinrm_run_ps_ntlm_http_encrypted(lab: LabServer) -> None:
    session = winrm.Session(
        lab.url("web"), auth=(USER, PASSWORD), transport="ntlm", message_encryption="always"
    )
    response = session.run_ps("Get-Service\n#lab:error it broke")
    assert first_json(response.std_out.decode()) == {
        "host": "web",
        "via": "winrs",
        "first": "Get-Service",
        "chars": 31,
    }
    assert response.std_err == b"it broke"
    assert response.status_code == 1


def test_pywinrm_basic_https_and_command_line_limit(lab: LabServer) -> None:
    session = winrm.Session(
        lab.url("sec"), auth=(USER, PASSWORD), transport="ssl", ca_trust_path=str(lab.ca_path)
    )
    # "powershell -encodedcommand " + base64(UTF-16LE): 3050 characters make 8163, 3080 make 8243 > 8191.
    fits = session.run_ps("a" * 3050)
    assert (fits.status_code, first_json(fits.std_out.decode())["chars"]) == (0, 3050)
    too_long = session.run_ps("a" * 3080)
    assert (too_long.status_code, too_long.std_out, too_long.std_err) == (
        1,
        b"",
        b"The command line is too long.\r\n",
    )


def test_skip_cmd_shell_limit_is_a_fault(lab: LabServer) -> None:
    with wsman_for(lab, "sec", auth="basic") as wsman, WinRS(wsman) as shell:
        ok = Process(shell, "powershell.exe", ["-EncodedCommand", encoded("b" * 9000)], no_shell=True)
        ok.invoke()
        assert ok.rc == 0
        too_long = Process(shell, "powershell.exe", ["-EncodedCommand", encoded("b" * 13000)], no_shell=True)
        with pytest.raises(WSManFaultError) as err:
            too_long.invoke()
        assert err.value.code == 2147942606
        missing = Process(shell, "ipconfig.exe", [], no_shell=True)
        with pytest.raises(WSManFaultError) as err:
            missing.invoke()
        assert err.value.code == 2147942402


# --- authentication ---------------------------------------------------------------------------------------


def test_basic_over_http_needs_allow_unencrypted(lab: LabServer) -> None:
    with wsman_for(lab, "web", auth="basic", encryption="never") as wsman, pytest.raises(AuthenticationError):
        RunspacePool(wsman).open()
    with wsman_for(lab, "open", auth="basic", encryption="never") as wsman, RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script("plain")
        assert first_json(ps.invoke()[0])["host"] == "open"


def test_unencrypted_ntlm_body_over_http_refused(lab: LabServer) -> None:
    with wsman_for(lab, "web", encryption="never") as wsman, pytest.raises(AuthenticationError):
        RunspacePool(wsman).open()
    with wsman_for(lab, "open", encryption="never") as wsman, RunspacePool(wsman) as pool:
        assert pool.state == 2  # RunspacePoolState.OPENED


def test_wrong_password(lab: LabServer) -> None:
    for host, auth in (("web", "ntlm"), ("sec", "basic")):
        with wsman_for(lab, host, auth=auth, password="not-it") as wsman, pytest.raises(AuthenticationError):
            RunspacePool(wsman).open()
    session = winrm.Session(lab.url("web"), auth=(USER, "not-it"), transport="ntlm")
    with pytest.raises(winrm.exceptions.InvalidCredentialsError):
        session.run_ps("x")


def test_ntlm_credentials_are_checked_per_host(make_lab: LabFactory) -> None:
    lab = make_lab(
        EndpointConfig("alpha", password="Alpha-Pass1"), EndpointConfig("beta", password="Beta-Pass2")
    )
    text = lab.ntlm_user_file.read_text()
    assert "Alpha-Pass1" not in text and "Beta-Pass2" not in text  # hashes only

    def opens(host: str, username: str, password: str) -> bool:
        try:
            with wsman_for(lab, host, username=username, password=password) as wsman, RunspacePool(wsman):
                return True
        except AuthenticationError:
            return False

    assert opens("alpha", USER, "Alpha-Pass1")
    assert opens("beta", f"beta\\{USER}", "Beta-Pass2")  # HOST\user names beta's own account
    assert not opens("beta", USER, "Beta-Pass2")  # the bare name belongs to alpha, registered first
    assert not opens("beta", USER, "Alpha-Pass1")  # alpha's password does not open beta
    assert not opens("beta", f"alpha\\{USER}", "Alpha-Pass1")  # nor does alpha's account


# --- shells and lifecycle ---------------------------------------------------------------------------------


def test_unknown_shell_fault(lab: LabServer) -> None:
    with wsman_for(lab, "sec", auth="basic") as wsman:
        shell = WinRS(wsman)
        shell.open()
        shell.close()
        shell._selector_set.add_option("ShellId", "6E9A7E40-0000-4000-8000-000000000000")
        with pytest.raises(WSManFaultError) as err:
            shell.wsman.delete(shell.resource_uri, selector_set=shell._selector_set)
        assert err.value.code == 2150858843


def test_envelope_too_large(make_lab: LabFactory) -> None:
    lab = make_lab(EndpointConfig("small", tls=True), max_envelope_size_kb=16)
    with wsman_for(lab, "small", auth="basic") as wsman, RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script("x" * 60000)
        with pytest.raises(WSManFaultError) as err:
            ps.invoke()
        assert err.value.code == 2150859025


def test_hosts_added_and_removed_while_running(make_lab: LabFactory) -> None:
    lab = make_lab()
    ep = lab.add_host(EndpointConfig("late", tls=True))
    assert ep.url == f"https://127.0.0.1:{ep.port}/wsman"
    with wsman_for(lab, "late", auth="basic") as wsman, RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script("hello late")
        assert first_json(ps.invoke()[0])["host"] == "late"
    lab.remove_host("late")
    assert "late" not in lab.endpoints
    with pytest.raises(requests.ConnectionError):
        requests.post(f"https://127.0.0.1:{ep.port}/wsman", timeout=2, verify=str(lab.ca_path))


def test_fixed_port_and_stop_is_prompt(engine: EchoEngine) -> None:
    server = LabServer(engine, [EndpointConfig("fixed")])
    server.start()
    port = server.port("fixed")
    server.stop()
    again = LabServer(engine, [EndpointConfig("fixed", port=port)])
    with again:
        assert again.port("fixed") == port
        # an idle keep-alive connection must not hold stop() up
        session = requests.Session()
        session.post(again.url("fixed"), data=b"", timeout=2)
        started = time.monotonic()
    assert time.monotonic() - started < 3
