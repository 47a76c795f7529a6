"""Certificate authentication and CredSSP end to end: pypsrp's client against lab hosts that map a
client certificate to their user (WinRM Auth/Certificate) or accept CredSSP (pyspnego's acceptor)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kmsadmin.errors import AuthenticationFailed
from kmsadmin.lab.api import EndpointConfig
from kmsadmin.lab.server import LabServer
from kmsadmin.lab.tls import generate_client_ca
from kmsadmin.transports import build_options, open_session
from kmsadmin.transports.faults import ClientCertificateRejected, ProxyFailed
from kmsadmin.values import RenderedScript
from tests.lab.conftest import PASSWORD, USER, LabFactory

pytestmark = pytest.mark.lab


@pytest.fixture
def lab(make_lab: LabFactory) -> LabServer:
    return make_lab(
        EndpointConfig("certhost", tls=True, certificate_auth=True),
        EndpointConfig("nocert", tls=True),
        EndpointConfig("cssp", tls=True, credssp=True),
    )


def run(lab: LabServer, name: str, **explicit: object) -> tuple[dict[str, object], object]:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": lab.port(name),
        "https": True,
        "ca_bundle": str(lab.ca_path),
        "deadline": 20,
    }
    values.update(explicit)
    text = "# kmsadmin-op: facts/v1\n"
    with open_session(build_options(name, explicit=values, env={})) as session:
        result = session.run(RenderedScript(step="facts", version=1, fmt="ps1", text=text, display=text))
    (line,) = [x for x in result.stdout.splitlines() if x.strip()]
    return json.loads(line), session


def test_certificate_mapped_to_the_user_signs_in(lab: LabServer, tmp_path: Path) -> None:
    cert, key = lab.issue_client_certificate(f"{USER}@lab.test", tmp_path)
    answer, _ = run(lab, "certhost", auth="certificate", cert_pem=str(cert), cert_key_pem=str(key))
    assert answer["host"] == "certhost"
    assert lab.auth_stats("certhost")["certificate"] >= 1


def test_wrong_certificates_are_refused_as_certificate_problems(lab: LabServer, tmp_path: Path) -> None:
    other = lab.issue_client_certificate("someone-else@lab.test", tmp_path / "other")
    stranger = generate_client_ca(tmp_path / "stranger-ca").issue(f"{USER}@lab.test", tmp_path / "stranger")
    cases = [
        ("certhost", other),
        ("nocert", lab.issue_client_certificate(f"{USER}@lab.test", tmp_path)),
        ("certhost", stranger),
    ]
    for name, (cert, key) in cases:
        with pytest.raises(ClientCertificateRejected) as caught:
            run(lab, name, auth="certificate", cert_pem=str(cert), cert_key_pem=str(key))
        err = caught.value
        assert err.host == name and err.remediation and "ClientCertificate" in err.remediation
        assert "user/password" not in err.remediation


def test_credssp_delegates_the_password(lab: LabServer) -> None:
    answer, _ = run(lab, "cssp", auth="credssp", user=USER, password=PASSWORD)
    assert answer["host"] == "cssp"
    assert lab.auth_stats("cssp")["credssp"] == 1
    with pytest.raises(AuthenticationFailed) as caught:
        run(lab, "cssp", auth="credssp", user=USER, password="not-the-password")
    assert "not-the-password" not in str(caught.value)
    # a host that does not offer CredSSP: refused, with the fix
    with pytest.raises(AuthenticationFailed):
        run(lab, "nocert", auth="credssp", user=USER, password=PASSWORD)


def test_a_failing_proxy_is_blamed_on_the_proxy(lab: LabServer) -> None:
    import socket

    with socket.socket() as sock:  # a port where no proxy listens
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    for proxy, text in (
        (f"http://127.0.0.1:{closed}", "proxy"),
        ("socks5://127.0.0.1:1080", "kmsadmin[socks]"),
    ):
        with pytest.raises(ProxyFailed) as caught:
            run(
                lab,
                "certhost",
                auth="negotiate",
                user=USER,
                password=PASSWORD,
                proxy=proxy,
                reconnection_retries=0,
            )
        err = caught.value
        assert proxy in err.message and err.remediation and text in err.remediation
