"""``ansible_winrm_transport`` lists: resolved into an ordered auth list, each tried in order on a refusal."""

from __future__ import annotations

import pytest

from kmsadmin.errors import AccessDenied, AuthenticationFailed
from kmsadmin.transports import build_options, open_session
from kmsadmin.transports.fallback import AuthFallbackSession
from kmsadmin.transports.options import ConnectionOptions
from kmsadmin.values import RenderedScript, ScriptResult

VARS = {"ansible_host": "10.0.0.5", "ansible_user": "CORP\\admin", "ansible_password": "pw"}


def test_a_list_becomes_auth_and_ordered_fallbacks() -> None:
    options = build_options(
        "h1", {}, {**VARS, "ansible_winrm_transport": ["kerberos", "ntlm", "credssp"]}, env={}
    )
    assert options.auth == "kerberos"
    assert options.auth_fallbacks == ("ntlm", "credssp")
    text = build_options("h1", {}, {**VARS, "ansible_winrm_transport": "ntlm,kerberos"}, env={})
    assert (text.auth, text.auth_fallbacks) == ("ntlm", ("kerberos",))
    single = build_options("h1", {}, {**VARS, "ansible_winrm_transport": "ntlm"}, env={})
    assert single.auth_fallbacks == ()


def test_an_explicit_auth_or_a_psrp_auth_var_drops_the_list() -> None:
    hostvars = {**VARS, "ansible_winrm_transport": ["kerberos", "ntlm"]}
    assert build_options("h1", {"auth": "ntlm"}, hostvars, env={}).auth_fallbacks == ()
    psrp = build_options("h1", {}, {**hostvars, "ansible_psrp_auth": "negotiate"}, env={})
    assert (psrp.auth, psrp.auth_fallbacks) == ("negotiate", ())


def test_an_insecure_fallback_is_refused_up_front() -> None:
    hostvars = {**VARS, "ansible_port": 5985, "ansible_winrm_transport": ["ntlm", "plaintext"]}
    with pytest.raises(Exception, match="refusing Basic authentication over plain HTTP"):
        build_options("h1", {}, hostvars, env={})


class FakeSession:
    def __init__(
        self, options: ConnectionOptions, outcomes: dict[str, BaseException | None], log: list[str]
    ) -> None:
        self._options = options
        self.outcome = outcomes[options.auth]
        self.log = log

    @property
    def options(self) -> ConnectionOptions:
        return self._options

    def run(self, script: RenderedScript, *, deadline: float | None = None) -> ScriptResult:
        self.log.append(self._options.auth)
        if self.outcome is not None:
            raise self.outcome
        return ScriptResult(host="h1", step="facts", stdout="ok")

    def run_many(self, scripts: object, *, deadline: float | None = None) -> list[ScriptResult]:
        return [self.run(None, deadline=deadline)]  # type: ignore[arg-type]

    def close(self) -> None:
        self.log.append("close")


def _session(outcomes: dict[str, BaseException | None], log: list[str]) -> AuthFallbackSession:
    options = build_options(
        "h1", {}, {**VARS, "ansible_winrm_transport": ["kerberos", "ntlm", "credssp"]}, env={}
    )
    return AuthFallbackSession(options, lambda o: FakeSession(o, outcomes, log))  # type: ignore[arg-type,return-value]


def test_each_auth_is_tried_in_order_until_one_signs_in() -> None:
    log: list[str] = []
    refused = AuthenticationFailed("h1", "facts", "Kerberos: no ticket")
    session = _session({"kerberos": refused, "ntlm": None, "credssp": None}, log)
    session.run(None)  # type: ignore[arg-type]
    assert log == ["kerberos", "close", "ntlm"]
    assert session.options.auth == "ntlm"
    session.run(None)  # type: ignore[arg-type]
    assert log[-1] == "ntlm"


def test_the_last_refusal_is_raised_naming_every_method() -> None:
    log: list[str] = []
    outcomes: dict[str, BaseException | None] = {
        a: AuthenticationFailed("h1", "facts", f"{a} refused") for a in ("kerberos", "ntlm", "credssp")
    }
    with pytest.raises(AuthenticationFailed) as info:
        _session(outcomes, log).run(None)  # type: ignore[arg-type]
    assert [e for e in log if e != "close"] == ["kerberos", "ntlm", "credssp"]
    assert "kerberos: kerberos refused" in info.value.message and "ntlm: ntlm refused" in info.value.message


def test_other_failures_and_refusals_after_sign_in_are_not_retried() -> None:
    log: list[str] = []
    denied = AccessDenied("h1", "facts", "not an administrator")
    with pytest.raises(AccessDenied):
        _session({"kerberos": denied, "ntlm": None, "credssp": None}, log).run(None)  # type: ignore[arg-type]
    assert log == ["kerberos"]


def test_open_session_wraps_only_when_there_is_a_list() -> None:
    listed = build_options("h1", {}, {**VARS, "ansible_winrm_transport": ["kerberos", "ntlm"]}, env={})
    assert isinstance(open_session(listed), AuthFallbackSession)
    assert not isinstance(open_session(build_options("h1", {}, VARS, env={})), AuthFallbackSession)
