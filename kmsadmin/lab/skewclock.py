"""A lab host whose clock is off: its Kerberos acceptor runs under a shifted clock.

MIT krb5 checks a ticket's authenticator against the acceptor's own clock (and refuses it with
KRB_AP_ERR_SKEW beyond ``clockskew``, 5 minutes by default). The lab serves every host from one
process and one clock, so a host with ``clock_skew`` hands the first token of each Kerberos handshake
to a short-lived helper process run under libfaketime (Debian package ``faketime``), which accepts it
with the host's keytab exactly as the host would and reports MIT's verdict and error token. A ticket
the helper accepts is then accepted again in the lab process (the helper keeps no replay cache), where
the connection's context lives.

Run as ``python -m kmsadmin.lab.skewclock KEYTAB [BINDINGS_HEX]`` with the token (base64) on stdin; it
prints one JSON object: ``{"complete": bool, "token": base64 or null, "error": str or null}``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

#: The helper must answer well within a client's read timeout.
HELPER_TIMEOUT = 15.0


class ClockUnavailable(RuntimeError):
    """libfaketime is not installed, so a host with a skewed clock cannot be simulated."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the host's acceptor, on its own clock, made of a token."""

    complete: bool
    token: bytes | None
    error: str | None


def check(token: bytes, keytab: str, skew_seconds: int, bindings: bytes | None = None) -> Verdict:
    """Accept ``token`` with ``keytab`` on a clock ``skew_seconds`` off this one."""
    faketime = shutil.which("faketime")
    if faketime is None:
        raise ClockUnavailable("a lab host with a skewed clock needs libfaketime (apt install faketime)")
    argv = [faketime, "-f", f"{skew_seconds:+d}s", sys.executable, "-m", "kmsadmin.lab.skewclock", keytab]
    if bindings:
        argv.append(bindings.hex())
    env = {**os.environ, "KRB5RCACHETYPE": "none"}
    proc = subprocess.run(
        argv,
        input=base64.b64encode(token).decode("ascii"),
        capture_output=True,
        text=True,
        timeout=HELPER_TIMEOUT,
        env=env,
        check=False,
    )
    try:
        answer: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return Verdict(False, None, f"the clock helper failed: {proc.stderr.strip()[-300:]}")
    raw = answer.get("token")
    return Verdict(
        bool(answer.get("complete")),
        base64.b64decode(raw) if raw else None,
        answer.get("error"),
    )


def _accept(token: bytes, keytab: str, bindings: bytes | None) -> Verdict:
    import gssapi
    from gssapi.raw import ChannelBindings
    from gssapi.raw.misc import GSSError

    creds = gssapi.Credentials(usage="accept", store={b"keytab": keytab.encode()})
    kwargs: dict[str, Any] = {}
    if bindings:
        kwargs["channel_bindings"] = ChannelBindings(application_data=bindings)
    context = gssapi.SecurityContext(creds=creds, usage="accept", **kwargs)
    out: bytes | None = None
    try:
        # python-gssapi returns an acceptor's error token from step() and raises the error on the
        # next use of the context
        out = context.step(token)
        complete = context.complete
    except GSSError as exc:
        return Verdict(False, out or getattr(exc, "token", None), str(exc))
    if not complete:
        return Verdict(False, out, "the ticket was not accepted")
    return Verdict(True, out, None)


def _unwrap_spnego(token: bytes) -> bytes:
    """The Kerberos token inside a SPNEGO NegTokenInit (the helper speaks raw Kerberos)."""
    from spnego._spnego import NegTokenInit, unpack_token

    parsed = unpack_token(token)
    if isinstance(parsed, NegTokenInit) and parsed.mech_token:
        return bytes(parsed.mech_token)
    return token


def main(argv: list[str]) -> int:
    keytab = argv[0]
    bindings = bytes.fromhex(argv[1]) if len(argv) > 1 else None
    token = _unwrap_spnego(base64.b64decode(sys.stdin.read().strip()))
    verdict = _accept(token, keytab, bindings)
    print(
        json.dumps(
            {
                "complete": verdict.complete,
                "token": base64.b64encode(verdict.token).decode("ascii") if verdict.token else None,
                "error": verdict.error,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
