"""The attack suite, client level: kmsadmin's PSRP session against every case of the hostile WS-Man
endpoint (tests/hostile.py). Each case ends as one typed per-host error naming the host, within the
step's deadline, with memory bounded; never a traceback.

The same cases run through ``kmsadmin status`` and ``kmsadmin rollout`` next to healthy lab hosts in
tests/lab/test_hostile_fleet.py.
"""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmsadmin.errors import ConnectionFailed, HostError, HostTimeout, ProtocolError
from kmsadmin.transports import build_options, open_session
from kmsadmin.transports.faults import CertificateRejected
from kmsadmin.values import RenderedScript
from tests.hostile import BY_NAME, CASES, Authority, HostileServer, inventory_hosts

DEADLINE = 3.0
KINDS: dict[str, type[HostError]] = {
    "ProtocolError": ProtocolError,
    "HostTimeout": HostTimeout,
    "ConnectionFailed": ConnectionFailed,
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    authority = Authority(tmp_path_factory.mktemp("hostile"))
    with HostileServer(authority) as server:
        yield server


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("name", [case.name for case in CASES])
def test_each_attack_is_one_typed_host_error_within_the_deadline(hostile: HostileServer, name: str) -> None:
    case = BY_NAME[name]
    host = name.replace("_", "-")
    hostvars = inventory_hosts(hostile, "admin", "Passw0rd-hostile")[host]
    options = build_options(host, hostvars=hostvars, env={})
    script = RenderedScript(step="facts", version=1, fmt="ps1", text="'x'", display="'x'")
    rss_before = _peak_rss_mb()
    started = time.monotonic()
    with open_session(options) as session, pytest.raises(HostError) as caught:
        session.run(script, deadline=DEADLINE)
    elapsed = time.monotonic() - started
    error = caught.value
    assert isinstance(error, KINDS[case.expect]), (name, type(error).__name__, str(error))
    assert error.host == host and error.step == "facts"
    assert error.remediation, name
    assert host in str(error)
    # the whole run, cleanup included, ends within the deadline plus the cleanup grace
    assert elapsed <= DEADLINE + 2, (name, elapsed)
    # a body, chunk or header bomb never grows the process by more than a few times the body cap
    assert _peak_rss_mb() - rss_before < 64, name
    if name == "certificate_for_another_name":
        assert isinstance(error, CertificateRejected)
    if name in ("http_500_with_hostile_xml", "redirect"):
        assert "HTTP 500" in error.message or "HTTP 302" in error.message
    assert threading.active_count() < 200


def test_the_external_dtd_is_never_fetched(tmp_path: Path) -> None:
    """The external DTD case points at a port nothing listens on; make it a listener and watch it."""
    import socket

    probe = socket.create_server(("127.0.0.1", 0))
    probe.settimeout(0.5)
    port = probe.getsockname()[1]
    from tests import hostile as module

    answer = module.ok(
        f'<?xml version="1.0"?><!DOCTYPE r SYSTEM "http://127.0.0.1:{port}/x.dtd">' + module.CREATED
    )
    case = module.Case("external_dtd_fetch", lambda s, _: s(answer), "ProtocolError")
    with HostileServer(Authority(tmp_path), (case,)) as server:
        host = "external-dtd-fetch"
        options = build_options(host, hostvars=inventory_hosts(server, "admin", "pw-12345")[host], env={})
        with open_session(options) as session, pytest.raises(ProtocolError):
            session.run(
                RenderedScript(step="facts", version=1, fmt="ps1", text="1", display="1"), deadline=DEADLINE
            )
    with pytest.raises(TimeoutError):
        probe.accept()
    probe.close()


def test_library_decode_errors_are_protocol_errors() -> None:
    """pypsrp/pywinrm parse answers with ElementTree, base64 and struct: their errors name the host."""
    import binascii
    import struct
    import xml.etree.ElementTree as ET

    from kmsadmin.transports.faults import translate

    options = build_options("srv01", explicit={"user": "admin", "password": "x"}, env={})
    for exc in (
        ET.ParseError("syntax error"),
        binascii.Error("Incorrect padding"),
        struct.error("unpack"),
        StopIteration(),
    ):
        error = translate(exc, options, "facts", 10)
        assert isinstance(error, ProtocolError), exc
        assert error.host == "srv01" and error.remediation


def test_an_unexpected_exception_fails_that_host_only_with_secrets_redacted() -> None:
    from kmsadmin.fleet.rollout import run_host_safely

    def factory(host: str) -> object:
        raise RuntimeError("a decoder met something new near Secret-Pw-9")

    report = run_host_safely("status", "odd", None, factory, ("Secret-Pw-9",), deadline=1)  # type: ignore[arg-type]
    assert report.status == "failed"
    assert report.error is not None and report.error["kind"] == "RuntimeError"
    assert report.error["host"] == "odd" and "a decoder met something new" in report.error["message"]
    assert "Secret-Pw-9" not in report.error["message"] and "[redacted]" in report.error["message"]


#: the cases the pypsrp and pywinrm paths (``--transport winrs|pywinrm``, CredSSP, certificates,
#: proxies) bound through their requests session (kmsadmin.transports.httpcaps); stalls inside
#: http.client that no per-read socket timeout catches end when the deadline cuts the connection
LIBRARY_CASES = {
    "slowloris_headers": HostTimeout,
    "endless_100_continue": HostTimeout,
    "endless_header_list": ProtocolError,
    "ntlm_without_integrity": ProtocolError,
    "content_length_many_gb": ProtocolError,
    "chunk_size_many_gb": ProtocolError,
    "large_body_to_eof": ProtocolError,
    "endless_chunked_body": ProtocolError,
    "body_dripped_byte_by_byte": HostTimeout,
    "bad_chunk_size": ProtocolError,
    "negative_chunk_size": ProtocolError,
    "truncated_xml_short_content_length": ProtocolError,
    "wrong_content_length": ProtocolError,
    "not_xml": ProtocolError,
    "entity_expansion_bomb": ProtocolError,
    "redirect": ProtocolError,
    "silent_server": HostTimeout,
}


@pytest.mark.parametrize("transport", ["winrs", "pywinrm"])
@pytest.mark.parametrize("name", sorted(LIBRARY_CASES))
def test_the_library_transports_bound_answers_too(hostile: HostileServer, transport: str, name: str) -> None:
    host = name.replace("_", "-")
    hostvars = inventory_hosts(hostile, "admin", "Passw0rd-hostile")[host]
    options = build_options(host, explicit={"transport": transport}, hostvars=hostvars, env={})
    script = RenderedScript(step="facts", version=1, fmt="ps1", text="'x'", display="'x'")
    rss_before = _peak_rss_mb()
    started = time.monotonic()
    with open_session(options) as session, pytest.raises(HostError) as caught:
        session.run(script, deadline=DEADLINE)
    assert isinstance(caught.value, LIBRARY_CASES[name]), (
        name,
        type(caught.value).__name__,
        str(caught.value),
    )
    assert caught.value.host == host
    if LIBRARY_CASES[name] is HostTimeout:
        assert f"no answer within {DEADLINE:.2g}s (its deadline" in caught.value.message, caught.value.message
    assert time.monotonic() - started <= DEADLINE + 2, name
    assert _peak_rss_mb() - rss_before < 64, name


#: the answers that stall inside http.client, where no per-read socket timeout fires
STALLS = ("slowloris_headers", "endless_100_continue", "body_dripped_byte_by_byte", "silent_server")


@pytest.mark.parametrize("name", STALLS)
def test_the_pypsrp_client_path_is_cut_at_the_deadline(hostile: HostileServer, name: str) -> None:
    """Certificate authentication runs PSRP over pypsrp's client (as CredSSP and proxies do): a stall
    inside http.client ends as the host's timeout naming its deadline, not past it."""
    from kmsadmin.transports.pypsrp_client import PypsrpSession

    host = name.replace("_", "-")
    hostvars = inventory_hosts(hostile, "admin", "Passw0rd-hostile")[host]
    leaf = hostile.authority.ca_path.parent / "good"
    hostvars |= {
        "ansible_psrp_auth": "certificate",
        "ansible_psrp_certificate_pem": str(leaf.with_suffix(".crt")),
        "ansible_psrp_certificate_key_pem": str(leaf.with_suffix(".key")),
    }
    options = build_options(host, hostvars=hostvars, env={})
    script = RenderedScript(step="facts", version=1, fmt="ps1", text="'x'", display="'x'")
    started = time.monotonic()
    with open_session(options) as session, pytest.raises(HostTimeout) as caught:
        assert isinstance(session, PypsrpSession)
        session.run(script, deadline=DEADLINE)
    elapsed = time.monotonic() - started
    assert caught.value.host == host and caught.value.step == "facts"
    assert f"no answer within {DEADLINE:.2g}s (its deadline" in caught.value.message, caught.value.message
    assert elapsed <= DEADLINE + 2, (name, elapsed)


def test_a_hostile_proxy_is_cut_at_the_deadline(tmp_path: Path) -> None:
    """A proxy that drips its answer to CONNECT stalls inside http.client's tunnel set-up; the
    connections urllib3's proxy manager opens are cut at the deadline like direct ones."""
    from tests import hostile as module

    slowloris = BY_NAME["slowloris_headers"]
    proxy = module.Case("slow_proxy", slowloris.serve, "HostTimeout", scheme="http")
    authority = Authority(tmp_path)
    with HostileServer(authority, (slowloris,)) as server, HostileServer(authority, (proxy,)) as proxies:
        host = "slowloris-headers"
        hostvars = inventory_hosts(server, "admin", "Passw0rd-hostile")[host]
        hostvars["ansible_psrp_proxy"] = f"http://127.0.0.1:{proxies.ports['slow_proxy']}"
        options = build_options(host, hostvars=hostvars, env={})
        started = time.monotonic()
        with open_session(options) as session, pytest.raises(HostTimeout) as caught:
            session.run(
                RenderedScript(step="facts", version=1, fmt="ps1", text="1", display="1"), deadline=DEADLINE
            )
        elapsed = time.monotonic() - started
        assert proxies.connections["slow_proxy"] >= 1 and server.connections["slowloris_headers"] == 0
    assert caught.value.host == host
    assert f"no answer within {DEADLINE:.2g}s (its deadline" in caught.value.message, caught.value.message
    assert elapsed <= DEADLINE + 2, elapsed
