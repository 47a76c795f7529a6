"""The seam between the lab's WS-Man server (wire protocol) and its simulated hosts (script engine).

The server authenticates, speaks WinRS and PSRP, and hands every PowerShell script it is asked to run
to a :class:`ScriptEngine` together with the name of the lab host the request reached. The engine
returns what the script would have written: output lines (stdout / PSRP output objects as strings)
and error records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

Via = Literal["psrp", "winrs"]


@dataclass(frozen=True, slots=True)
class ScriptOutput:
    """What running one script produced."""

    output: tuple[str, ...] = ()
    #: PowerShell-style error records (message text), e.g. "The term 'Foo' is not recognized ..."
    errors: tuple[str, ...] = ()
    #: process exit code for WinRS (powershell.exe); PSRP has none
    rc: int = 0


class ScriptEngine(Protocol):
    """Runs kmsadmin's rendered scripts against a simulated host."""

    def run_script(self, host: str, script: str, *, via: Via) -> ScriptOutput:
        """Run ``script`` on lab host ``host`` (its inventory name)."""
        ...


@dataclass(slots=True)
class HostFaults:
    """Failure injection for one lab host (all off by default)."""

    #: refuse every credential (HTTP 401), as for a wrong password
    wrong_credentials: bool = False
    #: authenticate, then answer Access Denied (UAC remote restrictions on a local non-builtin admin)
    access_denied: bool = False
    #: answer this many Receives with the WS-Man OperationTimeout fault before the real answer
    operation_timeouts: int = 0
    #: drop the TCP connection in the middle of the first Receive of each command
    reset_mid_receive: bool = False
    #: answer every request with HTTP 503 this many times (then serve normally); -1 = always
    http_503: int = 0
    #: accept the connection and never answer
    hang: bool = False
    #: added latency per HTTP request, in milliseconds
    latency_ms: int = 0


@dataclass(slots=True)
class EndpointConfig:
    """One lab host's WinRM listener."""

    name: str
    port: int = 0  # 0 = pick a free port
    username: str = "labadmin"
    #: only for embedding the server directly (tests); `kmsadmin lab up` always passes the lab's
    #: generated password (credentials.json in the state directory)
    password: str = "Lab-Passw0rd!"  # noqa: S105
    #: HTTPS listener with the lab's certificate (else HTTP with NTLM message encryption)
    tls: bool = False
    #: WinRM AllowUnencrypted (lets Basic auth and plain bodies through over HTTP)
    allow_unencrypted: bool = False
    faults: HostFaults = field(default_factory=HostFaults)
    #: Kerberos: the host's keytab (``HTTP/<fqdn>`` and ``WSMAN/<fqdn>`` of the lab realm); None = NTLM only
    kerberos_keytab: str | None = None
    #: the realm whose ``username@REALM`` is this host's administrator
    kerberos_realm: str = "LAB.TEST"
    #: refuse NTLM, as a host in a domain that restricts incoming NTLM traffic does
    refuse_ntlm: bool = False
    #: seconds the host's clock is off (its Kerberos acceptor runs on that clock; needs faketime)
    clock_skew: int = 0
    #: WinRM Auth/Certificate: a client certificate from the lab's client CA whose UPN names this host's
    #: user signs in as that user (HTTPS only)
    certificate_auth: bool = False
    #: WinRM Auth/CredSSP: accept CredSSP (HTTPS only); the delegated password must be the user's
    credssp: bool = False
