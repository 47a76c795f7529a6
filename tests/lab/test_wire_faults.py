"""Fault injection per lab host, each observed by a real client: what kmsadmin's transports must survive."""

from __future__ import annotations

import time

import pytest
import requests
import winrm
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, PSInvocationState, RunspacePool
from pypsrp.shell import Process, WinRS

from kmsadmin.lab.api import EndpointConfig, HostFaults
from kmsadmin.lab.server import LabServer
from tests.lab.conftest import PASSWORD, USER, LabFactory
from tests.lab.test_wire import encoded, first_json, wsman_for

pytestmark = pytest.mark.lab


def test_operation_timeouts_then_the_answer(make_lab: LabFactory) -> None:
    lab = make_lab(
        EndpointConfig("slow", faults=HostFaults(operation_timeouts=2)),
        EndpointConfig("slowcmd", tls=True, faults=HostFaults(operation_timeouts=2)),
    )
    with wsman_for(lab, "slow", operation_timeout=1) as wsman, RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script("patient")
        ps.begin_invoke()
        started = time.monotonic()
        timed_out = 0
        while ps.state == PSInvocationState.RUNNING:
            try:
                responses = pool._receive(ps.id, timeout=1)
            except WSManFaultError as err:
                assert err.code == 2150858793  # w:TimedOut, as pypsrp's poll_invoke expects
                timed_out += 1
                continue
            for kind, message in responses:
                if kind == 0x00041004:  # PIPELINE_OUTPUT
                    ps.output.append(message.data.data)
        assert timed_out == 2
        assert time.monotonic() - started >= 1.8  # each fault waited for the OperationTimeout
        assert first_json(ps.output[0])["first"] == "patient"

    # pywinrm swallows the faults and keeps polling, as it does against Windows.
    session = winrm.Session(
        lab.url("slowcmd"),
        auth=(USER, PASSWORD),
        transport="ssl",
        ca_trust_path=str(lab.ca_path),
        operation_timeout_sec=1,
        read_timeout_sec=5,
    )
    assert first_json(session.run_ps("eventually").std_out.decode())["first"] == "eventually"


def test_wrong_credentials_fault(make_lab: LabFactory) -> None:
    lab = make_lab(
        EndpointConfig("locked", faults=HostFaults(wrong_credentials=True)),
        EndpointConfig("locked-tls", tls=True, faults=HostFaults(wrong_credentials=True)),
    )
    with wsman_for(lab, "locked") as wsman, pytest.raises(AuthenticationError):
        RunspacePool(wsman).open()
    with wsman_for(lab, "locked-tls", auth="basic") as wsman, pytest.raises(AuthenticationError):
        RunspacePool(wsman).open()


def test_access_denied_after_authentication(make_lab: LabFactory) -> None:
    lab = make_lab(EndpointConfig("uac", faults=HostFaults(access_denied=True)))
    with wsman_for(lab, "uac") as wsman, pytest.raises(WSManFaultError) as err:
        RunspacePool(wsman).open()
    assert err.value.code == 5
    assert err.value.reason == "Access is denied."
    session = winrm.Session(lab.url("uac"), auth=(USER, PASSWORD), transport="ntlm")
    with pytest.raises(winrm.exceptions.WSManFaultError) as werr:
        session.run_ps("x")
    assert (werr.value.code, werr.value.wsman_fault_code, werr.value.fault_subcode) == (
        500,
        5,
        "w:AccessDenied",
    )


def test_connection_reset_mid_receive(make_lab: LabFactory, engine: object) -> None:
    lab = make_lab(EndpointConfig("flaky", tls=True, faults=HostFaults(reset_mid_receive=True)))
    with wsman_for(lab, "flaky", auth="basic") as wsman, WinRS(wsman) as shell:
        proc = Process(shell, "powershell", ["-EncodedCommand", encoded("once")])
        proc.begin_invoke()
        with pytest.raises(requests.exceptions.ConnectionError):
            proc.poll_invoke()
        # Only the first Receive of a command is dropped: polling again gets the answer.
        proc.end_invoke()
        assert first_json(proc.stdout.decode())["first"] == "once"
    with wsman_for(lab, "flaky", auth="basic") as wsman, RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script("pipeline")
        with pytest.raises(requests.exceptions.ConnectionError):
            ps.invoke()


def test_http_503_counted_then_served(make_lab: LabFactory) -> None:
    lab = make_lab(
        EndpointConfig("busy", tls=True, faults=HostFaults(http_503=2)),
        EndpointConfig("down", tls=True, faults=HostFaults(http_503=-1)),
    )
    # urllib3 never retries a POST on 503 (POST is not in Retry's allowed methods), so pypsrp's
    # reconnection_retries does not help: the caller sees the 503 and must retry itself.
    attempts = 0
    while True:
        attempts += 1
        try:
            with (
                wsman_for(lab, "busy", auth="basic", reconnection_retries=3, reconnection_backoff=0) as wsman,
                RunspacePool(wsman) as pool,
            ):
                ps = PowerShell(pool)
                ps.add_script("finally")
                assert first_json(ps.invoke()[0])["first"] == "finally"
            break
        except WinRMTransportError as err:
            assert err.code == 503
            assert attempts <= 2
    assert attempts == 3
    with wsman_for(lab, "down", auth="basic") as wsman, pytest.raises(WinRMTransportError) as down:
        RunspacePool(wsman).open()
    assert down.value.code == 503


def test_hang_is_bounded_by_the_client_read_timeout(make_lab: LabFactory) -> None:
    lab = make_lab(EndpointConfig("stuck", faults=HostFaults(hang=True)))
    started = time.monotonic()
    with wsman_for(lab, "stuck", read_timeout=1) as wsman, pytest.raises(requests.exceptions.ReadTimeout):
        RunspacePool(wsman).open()
    assert time.monotonic() - started < 5


def test_stop_is_prompt_while_a_host_hangs(engine: object) -> None:
    server = LabServer(engine, [EndpointConfig("stuck", faults=HostFaults(hang=True))])  # type: ignore[arg-type]
    server.start()
    session = requests.Session()
    try:
        with pytest.raises(requests.exceptions.RequestException):
            session.post(server.url("stuck"), data=b"", timeout=(2, 0.5))
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 3
    finally:
        session.close()
        server.stop()


def test_latency_per_request(make_lab: LabFactory) -> None:
    lab = make_lab(EndpointConfig("far", tls=True, faults=HostFaults(latency_ms=150)))
    with wsman_for(lab, "far", auth="basic") as wsman, RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_script("far away")
        started = time.monotonic()
        ps.invoke()  # Command + Receive
        elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2.0
