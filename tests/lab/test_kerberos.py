"""Kerberos against a real MIT KDC: the lab's hosts accept tickets with their own keytabs (python-gssapi),
refuse NTLM where told to, and every way signing in can fail reaches the caller as its own typed error."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmsadmin.errors import AuthenticationFailed
from kmsadmin.lab.api import EndpointConfig
from kmsadmin.lab.server import LabServer
from kmsadmin.transports import build_options, open_session
from kmsadmin.transports.faults import AuthLibraryMissing, KerberosFailed, NtlmRefused
from kmsadmin.values import RenderedScript
from tests.lab.conftest import EchoEngine, LabFactory
from tests.lab.kerberos import CLOCKSKEW, PASSWORD, USER, Realm, start_realm

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def realm() -> Iterator[Realm]:
    yield from start_realm()


@pytest.fixture
def klab(make_lab: LabFactory, realm: Realm) -> LabServer:
    """``http01`` (HTTP, message encryption) and ``tls01`` (HTTPS): Kerberos hosts that refuse NTLM."""
    return make_lab(
        EndpointConfig("http01", kerberos_keytab=realm.keytab("http01"), refuse_ntlm=True),
        EndpointConfig("tls01", tls=True, kerberos_keytab=realm.keytab("tls01"), refuse_ntlm=True),
    )


def script(step: str = "facts") -> RenderedScript:
    text = f"# kmsadmin-op: {step}/v1\n"
    return RenderedScript(step=step, version=1, fmt="ps1", text=text, display=text)


def options(lab: LabServer, realm: Realm, name: str, **explicit: object) -> object:
    endpoint = lab.endpoint(name)
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": endpoint.port,
        "https": endpoint.tls,
        "auth": "kerberos",
        "ca_bundle": str(lab.ca_path),
        # ansible_host is an address: the SPN names the host as the domain knows it
        "kerberos_hostname": realm.fqdn(name),
        "deadline": 20,
    }
    values.update(explicit)
    return build_options(name, explicit=values, env={})


def run(lab: LabServer, realm: Realm, name: str, **explicit: object) -> tuple[dict[str, object], object]:
    with open_session(options(lab, realm, name, **explicit)) as session:  # type: ignore[arg-type]
        result = session.run(script())
        (line,) = [x for x in result.stdout.splitlines() if x.strip()]
        return json.loads(line), session


@pytest.mark.parametrize("transport", ["psrp", "winrs"])
def test_kerberos_over_http_encrypts_every_body(
    klab: LabServer, realm: Realm, tmp_path: Path, transport: str
) -> None:
    ccache = realm.ticket(tmp_path)
    answer, session = run(klab, realm, "http01", transport=transport, kerberos_ccache=ccache)
    assert answer["host"] == "http01"
    stats = klab.auth_stats("http01")
    assert stats.get("kerberos", 0) >= 1 and "ntlm" not in stats
    assert stats["encrypted"] >= 3 and "plain" not in stats, stats
    if transport == "psrp":
        assert session.mechanism == "kerberos" and session.encrypted  # type: ignore[attr-defined]


def test_kerberos_over_https_sends_channel_binding(klab: LabServer, realm: Realm, tmp_path: Path) -> None:
    answer, session = run(klab, realm, "tls01", kerberos_ccache=realm.ticket(tmp_path))
    assert answer["host"] == "tls01" and session.channel_binding  # type: ignore[attr-defined]
    stats = klab.auth_stats("tls01")
    assert stats["kerberos"] == 1 and stats["channel_bound"] == 1
    assert "encrypted" not in stats  # TLS protects the bodies


def test_user_and_password_gets_its_own_ticket_and_negotiate_picks_kerberos(
    klab: LabServer, realm: Realm
) -> None:
    for auth in ("kerberos", "negotiate"):
        answer, session = run(klab, realm, "http01", auth=auth, user=USER, password=PASSWORD)
        assert answer["host"] == "http01"
        assert session.mechanism == "kerberos"  # type: ignore[attr-defined]
    assert "ntlm" not in klab.auth_stats("http01")


def test_keytab_credentials(klab: LabServer, realm: Realm, tmp_path: Path) -> None:
    keytab = tmp_path / "user.keytab"
    realm.kdc._kadmin([f"ktadd -k {keytab} -norandkey {USER}"])
    answer, _ = run(klab, realm, "tls01", user=f"{USER}@LAB.TEST", kerberos_keytab=str(keytab))
    assert answer["host"] == "tls01"


def test_host_name_from_inventory_when_ansible_host_is_an_address(realm: Realm) -> None:
    built = build_options("srv01.lab.test", explicit={"host": "10.0.0.5", "auth": "kerberos"}, env={})
    assert built.spn == "HTTP/srv01.lab.test"
    built = build_options(
        "srv01",
        hostvars={
            "ansible_host": "10.0.0.5",
            "ansible_psrp_negotiate_hostname_override": "srv01.corp.test",
            "ansible_psrp_negotiate_service": "WSMAN",
            "ansible_psrp_negotiate_delegate": "yes",
        },
        env={},
    )
    assert built.spn == "WSMAN/srv01.corp.test" and built.kerberos_delegation
    built = build_options(
        "srv01",
        hostvars={
            "ansible_connection": "winrm",
            "ansible_host": "srv01.corp.test",
            "ansible_winrm_transport": "kerberos",
            "ansible_winrm_kerberos_hostname_override": "alias.corp.test",
        },
        env={},
    )
    assert built.spn == "HTTP/alias.corp.test" and built.auth == "kerberos"


def expect(
    error: type[AuthenticationFailed], lab: LabServer, realm: Realm, name: str, **explicit: object
) -> AuthenticationFailed:
    with pytest.raises(error) as caught:
        run(lab, realm, name, **explicit)
    err = caught.value
    assert err.host == name and err.step == "facts" and err.remediation
    assert PASSWORD not in str(err)
    return err


def test_wrong_spn(klab: LabServer, realm: Realm, tmp_path: Path) -> None:
    err = expect(
        KerberosFailed,
        klab,
        realm,
        "http01",
        kerberos_ccache=realm.ticket(tmp_path),
        kerberos_hostname="nosuch.lab.test",
    )
    assert err.meaning == "KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN" and err.hresult == "0x80090303"
    assert "HTTP/nosuch.lab.test" in err.message
    assert err.remediation is not None and "hostname_override" in err.remediation


def test_ticket_for_another_host(klab: LabServer, realm: Realm, tmp_path: Path) -> None:
    realm.keytab("other01")
    err = expect(
        KerberosFailed,
        klab,
        realm,
        "http01",
        kerberos_ccache=realm.ticket(tmp_path),
        kerberos_hostname=realm.fqdn("other01"),
    )
    assert "HTTP/other01.lab.test" in err.message and err.remediation and "setspn -Q" in err.remediation


def test_no_ticket(klab: LabServer, realm: Realm, tmp_path: Path) -> None:
    err = expect(KerberosFailed, klab, realm, "http01", kerberos_ccache=f"FILE:{tmp_path / 'empty'}")
    assert err.hresult == "0x8009030E" and err.remediation and "kinit" in err.remediation


def test_expired_ticket(klab: LabServer, realm: Realm, tmp_path: Path) -> None:
    ccache = realm.ticket(tmp_path, lifetime="1s")
    time.sleep(1 + CLOCKSKEW + 0.5)
    err = expect(KerberosFailed, klab, realm, "http01", kerberos_ccache=ccache)
    assert err.meaning == "KRB5KRB_AP_ERR_TKT_EXPIRED", err
    assert "expired" in err.message


def test_wrong_password(klab: LabServer, realm: Realm) -> None:
    err = expect(KerberosFailed, klab, realm, "tls01", user=USER, password="not-the-password")
    assert err.meaning == "KRB5KDC_ERR_PREAUTH_FAILED" and err.hresult == "0x8009030C"
    assert "not-the-password" not in str(err)


def test_ntlm_against_a_host_that_refuses_it(klab: LabServer, realm: Realm) -> None:
    for name in ("http01", "tls01"):
        err = expect(NtlmRefused, klab, realm, name, auth="ntlm", user=USER, password=PASSWORD)
        assert "refuses NTLM" in err.message and err.remediation and "Kerberos" in err.remediation
        assert (err.hresult, err.meaning) == ("0xC0000418", "STATUS_NTLM_BLOCKED")
        assert f"{name}: " in str(err) and "HRESULT 0xC0000418 (STATUS_NTLM_BLOCKED)" in str(err)
    assert klab.auth_stats("http01")["refused"] >= 1


def test_no_kdc_reachable(klab: LabServer, realm: Realm, tmp_path: Path) -> None:
    conf = tmp_path / "krb5.conf"
    # the realm's KDC moved to a port where nothing listens
    text = realm.kdc.krb5_conf.read_text().replace(f"127.0.0.1:{realm.kdc.port}", "127.0.0.1:9")
    conf.write_text(text)
    previous = os.environ["KRB5_CONFIG"]
    os.environ["KRB5_CONFIG"] = str(conf)
    try:
        err = expect(KerberosFailed, klab, realm, "http01", user=USER, password=PASSWORD)
    finally:
        os.environ["KRB5_CONFIG"] = previous
    assert err.meaning == "KRB5_KDC_UNREACH" and err.hresult == "0x80090311"
    assert err.remediation and "88" in err.remediation


def test_ntlm_still_works_where_it_is_not_refused(
    make_lab: LabFactory, realm: Realm, engine: EchoEngine
) -> None:
    lab = make_lab(EndpointConfig("mixed01", kerberos_keytab=realm.keytab("mixed01")))
    answer, session = run(lab, realm, "mixed01", auth="ntlm", user=USER, password=PASSWORD)
    assert answer["host"] == "mixed01" and session.mechanism == "ntlm"  # type: ignore[attr-defined]
    assert lab.auth_stats("mixed01")["ntlm"] == 1


def test_pywinrm_kerberos_without_pykerberos_is_a_typed_error(klab: LabServer, realm: Realm) -> None:
    err = expect(AuthLibraryMissing, klab, realm, "http01", transport="pywinrm")
    assert err.remediation and "psrp" in err.remediation


@pytest.mark.parametrize("tls", [False, True])
def test_host_clock_ten_minutes_off(make_lab: LabFactory, realm: Realm, tmp_path: Path, tls: bool) -> None:
    lab = make_lab(
        EndpointConfig("skewed01", tls=tls, kerberos_keytab=realm.keytab("skewed01"), clock_skew=600),
        # a second behind: the helper's own start-up time only brings it closer
        EndpointConfig("ontime01", tls=tls, kerberos_keytab=realm.keytab("ontime01"), clock_skew=-1),
    )
    ccache = realm.ticket(tmp_path)
    err = expect(KerberosFailed, lab, realm, "skewed01", kerberos_ccache=ccache)
    assert err.meaning == "KRB5KRB_AP_ERR_SKEW" and err.hresult == "0x80090324"
    assert err.remediation is not None and "w32tm /resync" in err.remediation
    # within the tolerance: the helper accepts, the host's own acceptor carries on
    answer, session = run(lab, realm, "ontime01", kerberos_ccache=ccache)
    assert answer["host"] == "ontime01" and session.mechanism == "kerberos"  # type: ignore[attr-defined]


def test_doctor_names_the_mechanism_and_how_messages_are_protected(
    make_lab: LabFactory, klab: LabServer, realm: Realm, tmp_path: Path
) -> None:
    from kmsadmin.fleet.doctor import sign_in_checks

    ccache = realm.ticket(tmp_path)
    expected = {
        "http01": "Kerberos message encryption over HTTP",
        "tls01": "TLS with channel binding (tls-server-end-point)",
    }
    for name, detail in expected.items():
        _, session = run(klab, realm, name, kerberos_ccache=ccache)
        checks = {c.name: c for c in sign_in_checks(session.options, session)}  # type: ignore[attr-defined]
        assert "negotiated Kerberos" in checks["auth"].detail
        assert checks["encryption"].ok and checks["encryption"].detail == detail
    # Negotiate that ended on NTLM: doctor warns and says how to get Kerberos
    lab = make_lab(EndpointConfig("ntlmonly", kerberos_keytab=None))
    _, session = run(lab, realm, "ntlmonly", auth="negotiate", user=USER, password=PASSWORD)
    checks = {c.name: c for c in sign_in_checks(session.options, session)}  # type: ignore[attr-defined]
    assert "negotiated NTLM" in checks["auth"].detail
    assert checks["encryption"].detail == "NTLM message encryption over HTTP"
    assert checks["kerberos"].warning and "HTTP/ntlmonly.lab.test" in checks["kerberos"].fix


def test_delegation_is_asked_for_only_when_configured(klab: LabServer, realm: Realm, tmp_path: Path) -> None:
    ccache = realm.ticket(tmp_path)
    run(klab, realm, "tls01", kerberos_ccache=ccache)
    assert "delegated" not in klab.auth_stats("tls01")
    run(klab, realm, "tls01", kerberos_ccache=ccache, kerberos_delegation=True)
    assert klab.auth_stats("tls01")["delegated"] == 1


def test_a_wrong_ntlm_password_is_not_reported_as_ntlm_refused(make_lab: LabFactory, realm: Realm) -> None:
    lab = make_lab(EndpointConfig("ntlmok01"))
    for auth in ("ntlm", "negotiate"):
        with pytest.raises(AuthenticationFailed) as caught:
            run(lab, realm, "ntlmok01", auth=auth, user=USER, password="not-the-password")
        assert not isinstance(caught.value, NtlmRefused | KerberosFailed), caught.value
        assert caught.value.remediation and "user/password" in caught.value.remediation


def test_service_override(klab: LabServer, realm: Realm, tmp_path: Path) -> None:
    ccache = realm.ticket(tmp_path)
    # WinRM registers WSMAN/<fqdn> besides the HTTP/<fqdn> kmsadmin asks for by default
    answer, _ = run(klab, realm, "http01", kerberos_ccache=ccache, kerberos_service="WSMAN")
    assert answer["host"] == "http01"
    err = expect(KerberosFailed, klab, realm, "http01", kerberos_ccache=ccache, kerberos_service="CIFS")
    assert "CIFS/http01.lab.test" in err.message
