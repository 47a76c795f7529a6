"""Connection options: environment, Ansible inventory vars, precedence, security refusals, secrecy."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kmsadmin.errors import ConfigError
from kmsadmin.transports import ConnectionOptions, build_options
from kmsadmin.transports.options import deadline_setting
from kmsadmin.values import Secret

PASSWORD = "Corr3ct-Horse-Battery!"
CREDS_ENV = {"KMSADMIN_USER": "CORP\\kmsops", "KMSADMIN_PASSWORD": PASSWORD}


def test_defaults_are_secure() -> None:
    o = build_options("srv01", env=CREDS_ENV)
    assert o.host == "srv01" and o.name == "srv01"
    assert (o.transport, o.auth, o.https, o.port) == ("psrp", "negotiate", True, 5986)
    assert o.cert_validation is True and o.ca_bundle is None
    assert o.message_encryption == "auto"
    assert o.no_proxy is True and o.proxy is None
    assert (o.connection_timeout, o.read_timeout, o.operation_timeout) == (30.0, 30.0, 20)
    assert o.deadline == 300.0
    assert o.endpoint == "https://srv01:5986/wsman"


def test_environment_variables(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n", encoding="ascii")
    env = {
        **CREDS_ENV,
        "KMSADMIN_TRANSPORT": "winrs",
        "KMSADMIN_AUTH": "NTLM",
        "KMSADMIN_CA_BUNDLE": str(ca),
        "KMSADMIN_SCHEME": "http",
        "KMSADMIN_OPERATION_TIMEOUT": "10",
        "KMSADMIN_READ_TIMEOUT": "15",
        "KMSADMIN_DEADLINE": "45",
        "KMSADMIN_RECONNECTION_RETRIES": "4",
    }
    o = build_options("srv01", env=env)
    assert (o.transport, o.auth, o.https, o.port) == ("winrs", "ntlm", False, 5985)
    assert o.ca_bundle == str(ca)
    assert (o.operation_timeout, o.read_timeout, o.deadline) == (10, 15.0, 45.0)
    assert o.reconnection_retries == 4
    assert o.user == "CORP\\kmsops"
    assert o.password == Secret(PASSWORD)


def test_password_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text(PASSWORD + "\n", encoding="utf-8")
    o = build_options("srv01", env={"KMSADMIN_USER": "a", "KMSADMIN_PASSWORD_FILE": str(secret_file)})
    assert o.password is not None and o.password.value == PASSWORD
    # a password in the same layer wins over the file
    o = build_options(
        "srv01",
        env={"KMSADMIN_USER": "a", "KMSADMIN_PASSWORD_FILE": str(secret_file), "KMSADMIN_PASSWORD": "x"},
    )
    assert o.password == Secret("x")
    with pytest.raises(ConfigError, match="password file"):
        build_options("srv01", env={"KMSADMIN_USER": "a", "KMSADMIN_PASSWORD_FILE": str(tmp_path / "none")})


def test_ansible_psrp_inventory_vars(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x", encoding="ascii")
    hostvars: dict[str, object] = {
        "ansible_host": "10.0.0.5",
        "ansible_port": 15986,
        "ansible_user": "Administrator",
        "ansible_password": "generic",
        "ansible_psrp_password": PASSWORD,  # the plugin-specific var wins over ansible_password
        "ansible_connection": "psrp",
        "ansible_psrp_protocol": "https",
        "ansible_psrp_auth": "ntlm",
        "ansible_psrp_cert_validation": "ignore",
        "ansible_psrp_ca_cert": str(ca),
        "ansible_psrp_message_encryption": "always",
        "ansible_psrp_connection_timeout": 5,
        "ansible_psrp_read_timeout": 40,
        "ansible_psrp_operation_timeout": 25,
        "ansible_psrp_proxy": "http://proxy:3128",
        "ansible_psrp_ignore_proxy": False,
        "ansible_psrp_configuration_name": "PowerShell.7",
    }
    o = build_options("dc01", hostvars=hostvars, env={})
    assert (o.name, o.host, o.port, o.https) == ("dc01", "10.0.0.5", 15986, True)
    assert o.user == "Administrator" and o.password == Secret(PASSWORD)
    assert (o.transport, o.auth, o.message_encryption) == ("psrp", "ntlm", "always")
    assert o.cert_validation is False and o.ca_bundle == str(ca)
    assert (o.connection_timeout, o.read_timeout, o.operation_timeout) == (5.0, 40.0, 25)
    assert o.proxy == "http://proxy:3128" and o.no_proxy is False
    assert o.configuration_name == "PowerShell.7"


def test_ansible_winrm_inventory_vars() -> None:
    hostvars: dict[str, object] = {
        "ansible_connection": "ansible.builtin.winrm",
        "ansible_user": ".\\Administrator",
        "ansible_winrm_password": PASSWORD,
        "ansible_winrm_transport": ["ntlm", "kerberos"],
        "ansible_winrm_scheme": "http",
        "ansible_winrm_server_cert_validation": "ignore",
        "ansible_winrm_message_encryption": "auto",
        "ansible_winrm_read_timeout_sec": 50,
        "ansible_winrm_operation_timeout_sec": 45,
    }
    o = build_options("pc01", hostvars=hostvars, env={})
    assert (o.transport, o.auth, o.https, o.port) == ("pywinrm", "ntlm", False, 5985)
    assert o.cert_validation is False
    assert (o.read_timeout, o.operation_timeout) == (50.0, 45)
    assert o.password == Secret(PASSWORD)


def test_winrm_connection_timeout_sets_both_timeouts() -> None:
    hostvars = {"ansible_connection": "winrm", "ansible_winrm_connection_timeout": 60}
    o = build_options("pc01", hostvars=hostvars, env=CREDS_ENV)
    assert (o.operation_timeout, o.read_timeout) == (60, 61.0)


def test_winrm_plaintext_and_ssl_transports() -> None:
    base = {"ansible_connection": "winrm", "ansible_port": 5986}
    o = build_options("pc01", hostvars={**base, "ansible_winrm_transport": "ssl"}, env=CREDS_ENV)
    assert (o.auth, o.https) == ("basic", True)
    with pytest.raises(ConfigError, match="Basic"):
        build_options(
            "pc01",
            hostvars={**base, "ansible_winrm_transport": "plaintext", "ansible_winrm_scheme": "http"},
            env=CREDS_ENV,
        )


def test_pywinrm_negotiate_becomes_ntlm() -> None:
    o = build_options("pc01", explicit={"transport": "pywinrm"}, env=CREDS_ENV)
    assert o.auth == "ntlm"


def test_port_5985_alone_means_http_as_in_ansible() -> None:
    o = build_options("srv01", hostvars={"ansible_port": 5985}, env=CREDS_ENV)
    assert (o.https, o.port) == (False, 5985)
    o = build_options(
        "srv01", hostvars={"ansible_port": 5985, "ansible_psrp_protocol": "https"}, env=CREDS_ENV
    )
    assert (o.https, o.port) == (True, 5985)


def test_precedence_explicit_over_inventory_over_env() -> None:
    env = {**CREDS_ENV, "KMSADMIN_AUTH": "kerberos", "KMSADMIN_TRANSPORT": "winrs", "KMSADMIN_DEADLINE": "10"}
    hostvars: dict[str, object] = {
        "ansible_psrp_auth": "ntlm",
        "ansible_user": "inv-user",
        "ansible_connection": "psrp",
    }
    # inventory beats env
    o = build_options("srv01", hostvars=hostvars, env=env)
    assert (o.auth, o.user, o.transport, o.deadline) == ("ntlm", "inv-user", "psrp", 10.0)
    # explicit beats inventory; None means "not given"
    o = build_options(
        "srv01",
        explicit={"auth": "negotiate", "user": "cli-user", "transport": "winrs", "deadline": None},
        hostvars=hostvars,
        env=env,
    )
    assert (o.auth, o.user, o.transport, o.deadline) == ("negotiate", "cli-user", "winrs", 10.0)
    # password: explicit Secret beats inventory beats env
    o = build_options(
        "srv01", explicit={"password": Secret("cli")}, hostvars={"ansible_password": "inv"}, env=env
    )
    assert o.password == Secret("cli")
    o = build_options("srv01", hostvars={"ansible_password": "inv"}, env=env)
    assert o.password == Secret("inv")


def test_kmsadmin_deadline_hostvar_between_explicit_and_env() -> None:
    env = {**CREDS_ENV, "KMSADMIN_DEADLINE": "10"}
    assert build_options("srv01", hostvars={"kmsadmin_deadline": 4}, env=env).deadline == 4.0
    assert build_options("srv01", hostvars={"kmsadmin_deadline": "4.5"}, env=env).deadline == 4.5
    both = build_options("srv01", explicit={"deadline": 2.0}, hostvars={"kmsadmin_deadline": 4}, env=env)
    assert both.deadline == 2.0
    with pytest.raises(
        ConfigError,
        match=r"srv01: deadline \(kmsadmin_deadline\) must be a finite number of seconds, more than 0",
    ):
        build_options("srv01", hostvars={"kmsadmin_deadline": 0}, env=env)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity", float("inf"), float("nan")])
@pytest.mark.parametrize(
    ("source", "named", "what"),
    [
        ("kmsadmin_deadline", "kmsadmin_deadline", "deadline"),
        ("KMSADMIN_DEADLINE", "KMSADMIN_DEADLINE", "deadline"),
        ("ansible_psrp_read_timeout", "ansible_psrp_read_timeout", "read timeout"),
        ("KMSADMIN_READ_TIMEOUT", "KMSADMIN_READ_TIMEOUT", "read timeout"),
        ("ansible_winrm_read_timeout_sec", "ansible_psrp_read_timeout", "read timeout"),
        ("ansible_psrp_connection_timeout", "ansible_psrp_connection_timeout", "connection timeout"),
        ("KMSADMIN_CONNECTION_TIMEOUT", "KMSADMIN_CONNECTION_TIMEOUT", "connection timeout"),
        ("ansible_psrp_reconnection_backoff", "ansible_psrp_reconnection_backoff", "reconnection backoff"),
    ],
)
def test_timeouts_from_host_vars_or_environment_refuse_what_is_not_finite(
    value: object, source: str, named: str, what: str
) -> None:
    """As --deadline does: inf and nan are refused, naming the host, the variable and the range."""
    hostvars: dict[str, object] = {}
    env = dict(CREDS_ENV)
    if source.isupper():
        env[source] = str(value)
    elif source.startswith("ansible_winrm"):
        # a winrm var read for a psrp host fills a gap only: the psrp var of the same setting wins
        hostvars = {source: 1, "ansible_psrp_read_timeout": value}
    else:
        hostvars = {source: value}
    allowed = "0 or more" if what == "reconnection backoff" else "more than 0"
    with pytest.raises(ConfigError) as caught:
        build_options("srv01", hostvars=hostvars, env=env)
    assert str(caught.value).startswith(
        f"srv01: {what} ({named}) must be a finite number of seconds, {allowed}, not "
    )


def test_deadline_setting_reads_the_host_var_then_the_environment() -> None:
    assert deadline_setting("srv01", {}, {}) is None
    assert deadline_setting("srv01", {}, {"KMSADMIN_DEADLINE": " 12.5 "}) == 12.5
    assert deadline_setting("srv01", {"kmsadmin_deadline": 4}, {"KMSADMIN_DEADLINE": "12"}) == 4.0
    with pytest.raises(ConfigError, match=r"^srv01: deadline \(KMSADMIN_DEADLINE\) must be a finite"):
        deadline_setting("srv01", {}, {"KMSADMIN_DEADLINE": "inf"})


def test_kmsadmin_transport_hostvar_selects_winrs() -> None:
    o = build_options(
        "srv01", hostvars={"kmsadmin_transport": "winrs", "ansible_connection": "psrp"}, env=CREDS_ENV
    )
    assert o.transport == "winrs"


def test_refuses_basic_over_http_unless_allowed() -> None:
    with pytest.raises(ConfigError) as info:
        build_options("pc07", explicit={"auth": "basic", "https": False}, env=CREDS_ENV)
    message = str(info.value)
    assert "pc07" in message and "allow_unencrypted_basic" in message and "HTTPS" in message
    o = build_options(
        "pc07", explicit={"auth": "basic", "https": False, "allow_unencrypted_basic": True}, env=CREDS_ENV
    )
    assert (o.auth, o.https, o.port) == ("basic", False, 5985)
    # Basic over HTTPS is fine
    assert build_options("pc07", explicit={"auth": "basic"}, env=CREDS_ENV).https


@pytest.mark.parametrize(
    ("explicit", "hostvars", "match"),
    [
        ({"transport": "ssh"}, {}, "transport must be one of"),
        ({"auth": "digest"}, {}, "auth must be one of"),
        ({"port": "http"}, {}, "whole number"),
        ({"deadline": 0}, {}, "more than 0"),
        ({"reconnection_backoff": "soon"}, {}, "number of seconds"),
        ({"deadline": "nan"}, {}, "more than 0"),
        ({"bogus": 1}, {}, "unknown connection option"),
        ({"read_timeout": 10, "operation_timeout": 20}, {}, "must exceed the operation timeout"),
        ({"ca_bundle": "/nonexistent/ca.pem"}, {}, "CA bundle"),
        ({"auth": "certificate"}, {}, "cert_pem"),
        ({"auth": "certificate", "https": False, "cert_pem": "a", "cert_key_pem": "b"}, {}, "needs HTTPS"),
        ({}, {"ansible_connection": "ssh"}, "not a WinRM connection"),
        (
            {},
            {"ansible_psrp_cert_validation": "ignore", "ansible_psrp_message_encryption": "sometimes"},
            "message encryption",
        ),
    ],
)
def test_invalid_values_are_config_errors(
    explicit: dict[str, object], hostvars: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        build_options("srv01", explicit=explicit, hostvars=hostvars, env=CREDS_ENV)


def test_user_without_password_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs a user and a password"):
        build_options("srv01", env={"KMSADMIN_USER": "a"})
    # Kerberos may use the controller's ticket cache
    assert build_options("srv01", explicit={"auth": "kerberos"}, env={}).password is None


def test_password_never_in_repr_str_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    o = build_options("srv01", env=CREDS_ENV)
    assert PASSWORD not in repr(o)
    assert PASSWORD not in str(o)
    assert PASSWORD not in repr(o.password) and PASSWORD not in str(o.password)
    assert PASSWORD not in o.endpoint
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("kmsadmin.test").info("options %s %r", o, o)
    assert PASSWORD not in caplog.text
    # and the errors built from options never contain it either
    with pytest.raises(ConfigError) as info:
        build_options("srv01", explicit={"auth": "basic", "https": False}, env=CREDS_ENV)
    assert PASSWORD not in str(info.value)


def test_options_are_frozen() -> None:
    o = build_options("srv01", env=CREDS_ENV)
    with pytest.raises(AttributeError):
        o.port = 1  # type: ignore[misc]
    assert isinstance(o, ConnectionOptions)


def test_ipv6_endpoint() -> None:
    o = build_options("v6", hostvars={"ansible_host": "fd00::5"}, env=CREDS_ENV)
    assert o.endpoint == "https://[fd00::5]:5986/wsman"
