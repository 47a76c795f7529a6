"""The transports against the lab's loopback WinRM server, with real pypsrp and pywinrm clients.

A tiny engine stands in for the simulated Windows hosts: it answers every script with one JSON line
that echoes the script's length and SHA-256, so a test can prove the script arrived intact.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from kmsadmin.errors import AccessDenied, AuthenticationFailed, ConnectionFailed, HostTimeout
from kmsadmin.lab.api import EndpointConfig, HostFaults, ScriptOutput, Via
from kmsadmin.lab.server import LabServer
from kmsadmin.transports import ConnectionOptions, SessionBase, build_options, is_retryable, open_session
from kmsadmin.transports.psrp import PsrpSession
from kmsadmin.transports.pypsrp_client import PypsrpSession
from kmsadmin.values import RenderedScript

pytestmark = pytest.mark.lab

USER = "labadmin"
PASSWORD = "Lab-Passw0rd!"


class EchoEngine:
    """Answers each script with its length and hash; ``Write-Error`` lines become error records."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Via]] = []
        self._lock = threading.Lock()

    def run_script(self, host: str, script: str, *, via: Via) -> ScriptOutput:
        with self._lock:
            self.calls.append((host, via))
        errors = tuple(
            line.split("Write-Error", 1)[1].strip().strip("'")
            for line in script.splitlines()
            if line.startswith("Write-Error")
        )
        result: dict[str, object] = {
            "host": host,
            "via": via,
            "length": len(script),
            "sha256": hashlib.sha256(script.encode("utf-8")).hexdigest(),
            "greeting": "grüße 日本",
        }
        if "kmsadmin-test-fail" in script:
            result["error"] = {"hresult": "0xC004F074", "message": "no KMS could be contacted"}
        return ScriptOutput(
            output=(json.dumps(result, ensure_ascii=False),), errors=errors, rc=1 if errors else 0
        )


HOSTS = [
    EndpointConfig("ntlm-http"),
    EndpointConfig("ntlm-https", tls=True),
    EndpointConfig("basic-http", allow_unencrypted=True),
    EndpointConfig("wrong-pw", faults=HostFaults(wrong_credentials=True)),
    EndpointConfig("denied", faults=HostFaults(access_denied=True)),
    EndpointConfig("optimeouts-psrp", faults=HostFaults(operation_timeouts=2)),
    EndpointConfig("optimeouts-winrs", faults=HostFaults(operation_timeouts=2)),
    EndpointConfig("optimeouts-pywinrm", faults=HostFaults(operation_timeouts=2)),
    EndpointConfig("hang", faults=HostFaults(hang=True)),
    EndpointConfig("busy-psrp", faults=HostFaults(http_503=1)),
    EndpointConfig("busy-pywinrm", faults=HostFaults(http_503=1)),
    EndpointConfig("always-busy", faults=HostFaults(http_503=-1)),
    EndpointConfig("reset", faults=HostFaults(reset_mid_receive=True)),
    EndpointConfig("reset-pywinrm", faults=HostFaults(reset_mid_receive=True)),
]


@pytest.fixture(scope="module")
def engine() -> EchoEngine:
    return EchoEngine()


@pytest.fixture(scope="module")
def lab(engine: EchoEngine) -> Iterator[LabServer]:
    with LabServer(engine, HOSTS) as server:
        yield server


def options_for(lab: LabServer, name: str, **explicit: object) -> ConnectionOptions:
    endpoint = lab.endpoint(name)
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": endpoint.port,
        "https": endpoint.tls,
        "user": USER,
        "password": PASSWORD,
        "auth": "ntlm",
        "ca_bundle": str(lab.ca_path),
        "reconnection_backoff": 0.1,
    }
    values.update(explicit)
    return build_options(name, explicit=values, env={})


def script(step: str, text: str) -> RenderedScript:
    return RenderedScript(step=step, version=1, fmt="ps1", text=text, display=text)


def answer(stdout: str) -> dict[str, object]:
    (line,) = [line for line in stdout.splitlines() if line.strip()]
    value = json.loads(line)
    assert isinstance(value, dict)
    return value


def run_three(session: SessionBase, lab: LabServer, name: str) -> list[int]:
    """Run three scripts on one session; return the HTTP requests each of the later two cost."""
    costs = []
    for i in range(3):
        before = lab.request_count(name)
        text = f"# kmsadmin-step: facts/v1\r\nWrite-Output 'run {i}'\r\n"
        result = session.run(script(f"step{i}", text), deadline=20)
        got = answer(result.stdout)
        assert got["length"] == len(text.replace("\r\n", "\n")) or got["length"] == len(text)
        assert got["greeting"] == "grüße 日本"
        assert result.errors == ()
        assert result.host == name and result.step == f"step{i}"
        costs.append(lab.request_count(name) - before)
    assert session.opened_count == 1, "the pool/shell must be opened once and reused"
    assert lab.shell_count(name) == 1
    return costs[1:]


# --- transport x auth: several scripts on one session -------------------------------------------


def test_psrp_ntlm_http_with_message_encryption(lab: LabServer) -> None:
    options = options_for(lab, "ntlm-http")
    assert options.https is False and options.message_encryption == "auto"
    with open_session(options) as session:
        assert isinstance(session, SessionBase)
        later = run_three(session, lab, "ntlm-http")
    # Command + Receive + Signal(terminate): no new pool, no new authentication.
    assert all(cost <= 4 for cost in later), later
    assert lab.shell_count("ntlm-http") == 0, "close() deletes the pool on the host"


def test_psrp_ntlm_https_with_ca_validation(lab: LabServer) -> None:
    options = options_for(lab, "ntlm-https")
    assert options.https and options.cert_validation and options.ca_bundle
    with open_session(options) as session:
        assert isinstance(session, SessionBase)
        later = run_three(session, lab, "ntlm-https")
    assert all(cost <= 4 for cost in later), later


def test_psrp_negotiate_https(lab: LabServer) -> None:
    with open_session(options_for(lab, "ntlm-https", auth="negotiate")) as session:
        assert answer(session.run(script("facts", "Write-Output 1")).stdout)["via"] == "psrp"


def test_https_without_the_ca_is_rejected_with_a_fix(lab: LabServer) -> None:
    options = options_for(lab, "ntlm-https", ca_bundle=None)
    with open_session(options) as session, pytest.raises(ConnectionFailed) as info:
        session.run(script("facts", "Write-Output 1"), deadline=10)
    assert info.value.remediation is not None and "--ca-bundle" in info.value.remediation
    assert not is_retryable(info.value)


def test_psrp_round_trips_per_host(lab: LabServer) -> None:
    """Open = Create + Receive; a batch = Command + Receive (+ the Signal owed by the previous one)."""
    with open_session(options_for(lab, "ntlm-https")) as session:
        assert isinstance(session, PsrpSession)
        session.run(script("facts", "Write-Output 0"), deadline=20)
        assert session.wsman is not None
        assert session.wsman.requests == 4
        results = session.run_many([script(f"s{i}", f"Write-Output {i}") for i in range(3)], deadline=20)
        assert [r.step for r in results] == ["s0", "s1", "s2"]
        assert [answer(r.stdout)["length"] for r in results] == [len(f"Write-Output {i}") for i in range(3)]
        assert session.wsman.requests == 4 + 3
        wsman = session.wsman
    assert wsman.requests == 4 + 3 + 1, "close() deletes the shell, which ends the last pipeline too"
    assert lab.shell_count("ntlm-https") == 0


@pytest.mark.parametrize("transport", ["psrp", "winrs", "pywinrm"])
def test_a_batch_stops_after_the_first_failed_step(
    lab: LabServer, engine: EchoEngine, transport: str
) -> None:
    name = "ntlm-http" if transport != "pywinrm" else "basic-http"
    explicit: dict[str, object] = {"transport": transport}
    if transport == "pywinrm":
        explicit.update(auth="basic", allow_unencrypted_basic=True)
    batch = [
        script("first", "Write-Output 1"),
        script("second", "# kmsadmin-test-fail\r\nWrite-Output 2"),
        script("third", "Write-Output 3"),
    ]
    with open_session(options_for(lab, name, **explicit)) as session:
        before = len(engine.calls)
        results = session.run_many(batch, deadline=20)
        ran = len(engine.calls) - before
    assert [r.step for r in results] == ["first", "second"]
    assert "error" not in answer(results[0].stdout)
    assert answer(results[1].stdout)["error"] == {
        "hresult": "0xC004F074",
        "message": "no KMS could be contacted",
    }
    assert ran == 2, "the third script must not run after the second failed"


def test_pypsrp_session_still_runs_scripts(lab: LabServer) -> None:
    """The pypsrp-based session (CredSSP, certificate auth, proxies) speaks the same bootstrap."""
    options = options_for(lab, "ntlm-https")
    with PypsrpSession(options) as session:
        results = session.run_many(
            [script("a", "Write-Output 1"), script("b", "Write-Output 2")], deadline=20
        )
        assert [answer(r.stdout)["length"] for r in results] == [len("Write-Output 1"), len("Write-Output 2")]
        assert session.opened_count == 1
    assert isinstance(open_session(options_for(lab, "ntlm-https", auth="credssp")), PypsrpSession)


def test_winrs_stdin_with_a_long_script(lab: LabServer, engine: EchoEngine) -> None:
    line = "$kmsadminPadding = 'abcdefghijklmnopqrstuvwxyz0123456789 für 日本'\r\n"
    text = "# kmsadmin-step: facts/v1\r\n" + line * (32_000 // len(line) + 1) + "Write-Output 'done'\r\n"
    assert len(text) > 30_000
    with open_session(options_for(lab, "ntlm-http", transport="winrs")) as session:
        assert isinstance(session, SessionBase)
        result = session.run(script("long", text), deadline=20)
        got = answer(result.stdout)
        assert got["via"] == "winrs"
        assert got["sha256"] == hashlib.sha256(text.encode("utf-8")).hexdigest(), "script altered in transit"
        assert got["greeting"] == "grüße 日本", "UTF-8 output (code page 65001) decoded intact"
        assert result.rc == 0
        later = run_three(session, lab, "ntlm-http")
    # Command + Send + Receive + Signal per script on the open shell.
    assert all(cost <= 5 for cost in later), later


def test_winrs_errors_are_cleaned_and_returned(lab: LabServer) -> None:
    with open_session(options_for(lab, "ntlm-http", transport="winrs")) as session:
        result = session.run(script("facts", "Write-Error 'Zugriff verweigert'\r\nWrite-Output 1\r\n"))
    assert result.rc == 1
    assert any("Zugriff verweigert" in e for e in result.errors), result.errors
    assert all("CLIXML" not in e and "<Objs" not in e for e in result.errors)


def test_psrp_error_records_are_returned_not_raised(lab: LabServer) -> None:
    with open_session(options_for(lab, "ntlm-http")) as session:
        result = session.run(script("facts", "Write-Error 'no licensing service'\r\nWrite-Output 1\r\n"))
    assert result.rc is None
    assert any("no licensing service" in e for e in result.errors), result.errors
    assert answer(result.stdout)["via"] == "psrp"


def test_pywinrm_ntlm_http(lab: LabServer) -> None:
    options = options_for(lab, "ntlm-http", transport="pywinrm")
    with open_session(options) as session:
        assert isinstance(session, SessionBase)
        later = run_three(session, lab, "ntlm-http")
    # Command + Send + Receive + Signal; no re-authentication per command, unlike run_ps.
    assert all(cost <= 5 for cost in later), later


def test_pywinrm_https_long_script(lab: LabServer) -> None:
    text = "Write-Output 'x'\r\n" * 2500  # ~45,000 characters: far beyond run_ps's ~3,000
    with open_session(options_for(lab, "ntlm-https", transport="pywinrm")) as session:
        got = answer(session.run(script("long", text)).stdout)
    assert got["sha256"] == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_basic_over_http_when_explicitly_allowed(lab: LabServer) -> None:
    options = options_for(lab, "basic-http", auth="basic", allow_unencrypted_basic=True)
    for transport in ("psrp", "pywinrm"):
        with open_session(
            options_for(lab, "basic-http", auth="basic", allow_unencrypted_basic=True, transport=transport)
        ) as session:
            assert answer(session.run(script("facts", "Write-Output 1")).stdout)["host"] == "basic-http"
    assert options.message_encryption == "auto"


# --- faults -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["psrp", "winrs", "pywinrm"])
def test_wrong_credentials(lab: LabServer, transport: str) -> None:
    session = open_session(options_for(lab, "wrong-pw", transport=transport))
    with session, pytest.raises(AuthenticationFailed) as info:
        session.run(script("facts", "Write-Output 1"), deadline=10)
    err = info.value
    assert err.host == "wrong-pw" and err.step == "facts"
    assert PASSWORD not in str(err)
    assert not is_retryable(err)


@pytest.mark.parametrize("transport", ["psrp", "winrs", "pywinrm"])
def test_unreachable_port_fails_fast(transport: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = build_options(
        "gone",
        explicit={
            "host": "127.0.0.1",
            "port": port,
            "https": False,
            "user": USER,
            "password": PASSWORD,
            "auth": "ntlm",
            "transport": transport,
            "reconnection_retries": 0,
        },
        env={},
    )
    started = time.monotonic()
    with open_session(options) as session, pytest.raises(ConnectionFailed) as info:
        session.run(script("facts", "Write-Output 1"), deadline=10)
    assert time.monotonic() - started < 2
    assert info.value.remediation is not None and str(port) in info.value.remediation
    assert is_retryable(info.value)


@pytest.mark.parametrize("transport", ["psrp", "winrs", "pywinrm"])
def test_access_denied(lab: LabServer, transport: str) -> None:
    session = open_session(options_for(lab, "denied", transport=transport))
    with session, pytest.raises(AccessDenied) as info:
        session.run(script("facts", "Write-Output 1"), deadline=10)
    assert info.value.remediation is not None and "951016" in info.value.remediation


@pytest.mark.parametrize("transport", ["psrp", "winrs", "pywinrm"])
def test_operation_timeouts_then_answer(lab: LabServer, transport: str) -> None:
    name = f"optimeouts-{transport}"
    options = options_for(lab, name, transport=transport, operation_timeout=1, read_timeout=3)
    started = time.monotonic()
    with open_session(options) as session:
        result = session.run(script("facts", "Write-Output 1"), deadline=15)
    assert answer(result.stdout)["host"] == name
    assert 1.5 < time.monotonic() - started < 10  # two 1-second OperationTimeouts were sat through


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["psrp", "winrs", "pywinrm"])
def test_hung_host_is_bounded_by_the_deadline(lab: LabServer, transport: str) -> None:
    started = time.monotonic()
    session = open_session(options_for(lab, "hang", transport=transport))
    with session, pytest.raises(HostTimeout) as info:
        session.run(script("facts", "Write-Output 1"), deadline=3)
    elapsed = time.monotonic() - started
    assert 2.5 < elapsed < 8, elapsed
    assert re.fullmatch(
        r"no answer within 3s \(its deadline, reached at \d\d:\d\d:\d\d \w+\)", info.value.message
    )
    assert is_retryable(info.value)


@pytest.mark.parametrize("transport", ["psrp", "pywinrm"])
def test_hung_host_names_the_read_timeout_that_fired_not_the_time_left(
    lab: LabServer, transport: str
) -> None:
    """Issue 11: a read timeout firing long before the deadline used to report the time left."""
    session = open_session(options_for(lab, "hang", transport=transport, read_timeout=2, operation_timeout=1))
    started = time.monotonic()
    with session, pytest.raises(HostTimeout) as info:
        session.run(script("facts", "Write-Output 1"), deadline=30)
    assert time.monotonic() - started < 15
    assert re.fullmatch(
        r"no answer within 2\.?0?s \(the read timeout of one request; \d+s of the deadline were left\)",
        info.value.message,
    ), info.value.message
    assert "read timeout" in (info.value.remediation or "")


@pytest.mark.parametrize(("name", "transport"), [("busy-psrp", "psrp"), ("busy-pywinrm", "pywinrm")])
def test_one_busy_answer_is_retried(lab: LabServer, name: str, transport: str) -> None:
    with open_session(options_for(lab, name, transport=transport)) as session:
        assert answer(session.run(script("facts", "Write-Output 1"), deadline=10).stdout)["host"] == name


def test_always_busy_host_fails_after_retries(lab: LabServer) -> None:
    options = options_for(lab, "always-busy", reconnection_retries=2)
    with open_session(options) as session, pytest.raises(ConnectionFailed) as info:
        session.run(script("facts", "Write-Output 1"), deadline=10)
    assert "503" in info.value.message and is_retryable(info.value)


@pytest.mark.parametrize(
    ("name", "transport"), [("reset", "psrp"), ("reset", "winrs"), ("reset-pywinrm", "pywinrm")]
)
def test_connection_reset_during_receive_is_survived(lab: LabServer, name: str, transport: str) -> None:
    with open_session(options_for(lab, name, transport=transport)) as session:
        for i in range(2):
            result = session.run(script(f"s{i}", "Write-Output 1"), deadline=10)
            assert answer(result.stdout)["host"] == name


def test_session_recovers_after_a_failure(lab: LabServer) -> None:
    """A timed-out run drops the pool; the next run on the same session opens a fresh one."""
    options = options_for(lab, "optimeouts-psrp", operation_timeout=1, read_timeout=3)
    with open_session(options) as session:
        assert isinstance(session, SessionBase)
        with pytest.raises(HostTimeout):
            session.run(script("slow", "Write-Output 1"), deadline=0.5)
        assert answer(session.run(script("facts", "Write-Output 1"), deadline=15).stdout)
        assert session.opened_count == 2
