"""Unencrypted WinRM over plain HTTP is refused unless explicitly allowed, then warned about once per
run; a host refusing unencrypted messages (AllowUnencrypted false) is reported as that, not as wrong
credentials; insecure switches are warned about once per run."""

from __future__ import annotations

import pytest

from kmsadmin.errors import AuthenticationFailed, ConfigError
from kmsadmin.lab.api import EndpointConfig
from kmsadmin.transports import build_options, is_retryable, open_session
from kmsadmin.transports import options as options_module
from kmsadmin.transports.faults import EncryptionRefused
from kmsadmin.values import RenderedScript
from tests.lab.conftest import PASSWORD, USER, LabFactory

pytestmark = pytest.mark.lab

SCRIPT = RenderedScript(step="facts", version=1, fmt="ps1", text="echo", display="echo")


def _hostvars(port: int, **extra: object) -> dict[str, object]:
    return {
        "ansible_host": "127.0.0.1",
        "ansible_port": port,
        "ansible_user": USER,
        "ansible_password": PASSWORD,
        "ansible_psrp_protocol": "http",
        "ansible_psrp_auth": "ntlm",
        **extra,
    }


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(options_module, "_warned", set())


@pytest.mark.parametrize("var", ["ansible_psrp_message_encryption", "ansible_winrm_message_encryption"])
def test_never_over_http_is_refused_unless_allowed(var: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="refusing message_encryption 'never' over plain HTTP") as err:
        build_options("pc1", hostvars={**_hostvars(5985), var: "never"}, env={})
    assert "--allow-unencrypted" in str(err.value)
    # over HTTPS, 'never' is TLS-protected and accepted silently
    build_options("pc1", hostvars={**_hostvars(5986), "ansible_psrp_protocol": "https", var: "never"}, env={})
    assert capsys.readouterr().err == ""
    for name in ("pc1", "pc2", "pc3"):
        build_options(
            name,
            hostvars={**_hostvars(5985), var: "never", "kmsadmin_allow_unencrypted": True},
            env={},
        )
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [
        "kmsadmin: warning: message encryption is off over plain HTTP (--allow-unencrypted): every "
        "script, keys included, crosses the network readable (first host: pc1)"
    ]


def test_insecure_switches_warn_once_per_run(capsys: pytest.CaptureFixture[str]) -> None:
    env = {"KMSADMIN_USER": "u", "KMSADMIN_PASSWORD": "p-12345"}
    for name in ("a", "b"):
        build_options(name, explicit={"cert_validation": False}, env=env)
        build_options(name, explicit={"cert_validation": False, "auth": "basic"}, env=env)
        build_options(
            name, explicit={"auth": "basic", "https": False, "allow_unencrypted_basic": True}, env=env
        )
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3, err
    assert "certificate validation is off" in err[0] and "(first host: a)" in err[0]
    assert "Basic authentication over HTTPS without certificate validation" in err[1]
    assert "Basic authentication over plain HTTP" in err[2]
    build_options("c", env=env)  # the safe defaults: nothing to say
    assert capsys.readouterr().err == ""


def test_a_host_refusing_unencrypted_messages_is_not_a_credentials_error(make_lab: LabFactory) -> None:
    lab = make_lab(EndpointConfig("strict"), EndpointConfig("open", allow_unencrypted=True))
    strict = build_options(
        "strict",
        hostvars={
            **_hostvars(lab.port("strict")),
            "ansible_psrp_message_encryption": "never",
            "kmsadmin_allow_unencrypted": True,
        },
        env={},
    )
    with open_session(strict) as session, pytest.raises(EncryptionRefused) as caught:
        session.run(SCRIPT, deadline=10)
    error = caught.value
    assert not isinstance(error, AuthenticationFailed)
    assert "refused the unencrypted message" in error.message and error.host == "strict"
    assert error.remediation is not None and "message_encryption" in error.remediation
    assert not is_retryable(error)

    basic = build_options(
        "strict",
        hostvars={**_hostvars(lab.port("strict")), "ansible_psrp_auth": "basic"},
        explicit={"allow_unencrypted_basic": True},
        env={},
    )
    with open_session(basic) as session, pytest.raises(EncryptionRefused, match="does not offer Basic"):
        session.run(SCRIPT, deadline=10)

    # wrong credentials stay wrong credentials
    wrong = build_options(
        "strict", hostvars={**_hostvars(lab.port("strict")), "ansible_password": "not-it-123"}, env={}
    )
    with open_session(wrong) as session, pytest.raises(AuthenticationFailed):
        session.run(SCRIPT, deadline=10)

    # a host with AllowUnencrypted true takes the unencrypted messages (as allowed, and warned about)
    opened = build_options(
        "open",
        hostvars={
            **_hostvars(lab.port("open")),
            "ansible_psrp_message_encryption": "never",
            "kmsadmin_allow_unencrypted": True,
        },
        env={},
    )
    with open_session(opened) as session:
        assert '"first": "echo"' in session.run(SCRIPT, deadline=10).stdout
    stats = lab.auth_stats("open")
    assert stats.get("plain", 0) > 0 and stats.get("encrypted", 0) == 0, stats
