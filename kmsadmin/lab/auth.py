"""HTTP authentication for the lab's WinRM listeners: Basic, Negotiate/NTLM and NTLM message encryption.

NTLM is accepted by pyspnego's acceptor (``spnego.server(protocol="negotiate")``), which reads account
hashes from the file named by the process-wide ``NTLM_USER_FILE`` environment variable. Every lab host of
every :class:`~kmsadmin.lab.server.LabServer` in the process therefore shares one file, owned by
:class:`NtlmUserStore`:

* each host contributes ``HOST\\user`` (a local account, as Windows qualifies it) and, unless another
  host already claimed it with a different password, the bare ``user`` that clients without a domain
  look up;
* the file holds NT/LM hashes in smbpasswd format, so passwords never reach the disk and may contain
  ``:``;
* after the acceptor proves the client knew the hash of the entry it named, :meth:`NtlmUserStore.allows`
  checks that entry belongs to *this* host (same user name, domain empty or the host name, same hash).

Message encryption follows [MS-WSMV] 2.2.9.1 (the ``multipart/encrypted`` MIME envelope with an
``application/HTTP-SPNEGO-session-encrypted`` part) using the acceptor's ``wrap_winrm``/``unwrap_winrm``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import os
import re
import struct
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import spnego
from spnego._context import GSSMech
from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1

ENCRYPTED_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
ENCRYPTED_CONTENT_TYPE = f'multipart/encrypted;protocol="{ENCRYPTED_PROTOCOL}";boundary="Encrypted Boundary"'
_BOUNDARY = b"--Encrypted Boundary"


class AuthFailed(Exception):
    """The client's credentials were refused (answered with HTTP 401).

    ``token``: the error token to send with the 401 (a Kerberos KRB-ERROR such as clock skew or an
    expired ticket, which Windows returns so the client can tell what went wrong), or None.
    """

    def __init__(self, reason: str, token: bytes | None = None) -> None:
        super().__init__(reason)
        self.token = token


def split_principal(name: str) -> tuple[str, str]:
    """Split ``DOMAIN\\user`` or ``user@domain`` into (domain, user); the domain may be empty."""
    if "\\" in name:
        domain, _, user = name.partition("\\")
        return domain, user
    if "@" in name:
        user, _, domain = name.partition("@")
        return domain, user
    return "", name


@functools.lru_cache(maxsize=256)
def _hashes(password: str) -> tuple[bytes, bytes]:
    # pyspnego's MD4/DES are pure Python (~1 ms a hash); lab hosts mostly share a password.
    return bytes(ntowfv1(password)), bytes(lmowfv1(password))


def nt_hash(password: str) -> bytes:
    return _hashes(password)[0]


@dataclass(frozen=True, slots=True)
class _Account:
    host: str
    username: str
    nt: bytes
    lm: bytes


class NtlmUserStore:
    """The one ``NTLM_USER_FILE`` of this process, shared by every lab host (reference counted)."""

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _instance: ClassVar[NtlmUserStore | None] = None
    _refs: ClassVar[int] = 0

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="kmsadmin-lab-ntlm-")
        self.path = Path(self._dir.name) / "ntlm_users"
        self._accounts: dict[tuple[int, str], _Account] = {}  # (owner id, host name) -> account
        self._entries: dict[tuple[str, str], bytes] = {}  # (DOMAIN, USER) upper-cased -> NT hash
        self._previous_env = os.environ.get("NTLM_USER_FILE")
        self._write()
        os.environ["NTLM_USER_FILE"] = str(self.path)

    @classmethod
    def acquire(cls) -> NtlmUserStore:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            cls._refs += 1
            return cls._instance

    @classmethod
    def release(cls, store: NtlmUserStore) -> None:
        with cls._lock:
            if cls._instance is not store:
                return
            cls._refs -= 1
            if cls._refs > 0:
                return
            cls._instance = None
            if os.environ.get("NTLM_USER_FILE") == str(store.path):
                if store._previous_env is None:
                    os.environ.pop("NTLM_USER_FILE", None)
                else:
                    os.environ["NTLM_USER_FILE"] = store._previous_env
            store._dir.cleanup()

    def register(self, owner: int, accounts: list[tuple[str, str, str]]) -> None:
        """Add (host, user name, password) accounts; the file is rewritten once per call."""
        made = []
        for host, username, password in accounts:
            if any(c in username for c in ":\\@\r\n"):
                raise ValueError("lab user names must not contain ':', '\\', '@' or line breaks")
            made.append(((owner, host.upper()), _Account(host, username, *_hashes(password))))
        with self._lock:
            self._accounts.update(made)
            self._rebuild()

    def unregister(self, owner: int, host: str) -> None:
        with self._lock:
            if self._accounts.pop((owner, host.upper()), None) is not None:
                self._rebuild()

    def unregister_all(self, owner: int) -> None:
        with self._lock:
            self._accounts = {key: acc for key, acc in self._accounts.items() if key[0] != owner}
            self._rebuild()

    def allows(self, host: str, username: str, password_hash: bytes, principal: str) -> bool:
        """Whether the NTLM-authenticated ``principal`` is this host's account."""
        domain, user = split_principal(principal)
        if user.upper() != username.upper():
            return False
        if domain and domain.upper() not in (host.upper(), "."):
            return False
        with self._lock:
            stored = self._entries.get((domain.upper() if domain != "." else "", user.upper()))
        return stored is not None and hmac.compare_digest(stored, password_hash)

    def _rebuild(self) -> None:
        entries: dict[tuple[str, str], tuple[_Account, str]] = {}
        # Insertion order decides who owns an ambiguous bare user name: the first registered host.
        for account in self._accounts.values():
            entries[(account.host.upper(), account.username.upper())] = (account, f"{account.host}\\")
            bare = ("", account.username.upper())
            if bare not in entries:
                entries[bare] = (account, "")
        self._entries = {key: acc.nt for key, (acc, _) in entries.items()}
        lines = [
            f"{prefix}{acc.username}:0:{acc.lm.hex().upper()}:{acc.nt.hex().upper()}:[U]:LCT-00000000"
            for acc, prefix in entries.values()
        ]
        self._write(lines)

    def _write(self, lines: list[str] | None = None) -> None:
        # Write then rename, so a handshake reading the file concurrently never sees half of it.
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in (lines or [])), encoding="utf-8")
        tmp.chmod(0o600)
        os.replace(tmp, self.path)


def check_basic(header_value: str, host: str, username: str, password: str) -> bool:
    """Validate a ``Basic`` credential against one host's local account."""
    try:
        decoded = base64.b64decode(header_value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    user_part, sep, given = decoded.partition(":")
    if not sep:
        return False
    domain, user = split_principal(user_part)
    if domain and domain.upper() not in (host.upper(), "."):
        return False
    return user.upper() == username.upper() and hmac.compare_digest(given.encode(), password.encode())


#: DER prefix of a SPNEGO initial token (RFC 4178: [APPLICATION 0] then OID 1.3.6.1.5.5.2), and the
#: tag of a SPNEGO NegTokenResp ([1]); raw Kerberos and NTLM tokens start differently.
_SPNEGO_OID = b"\x06\x06\x2b\x06\x01\x05\x05\x02"


def _is_spnego(token: bytes) -> bool:
    return token[:1] == b"\xa1" or (token[:1] == b"\x60" and _SPNEGO_OID in token[:12])


def _error_token(exc: BaseException, *, spnego_wrapped: bool) -> bytes | None:
    """The Kerberos error token MIT's acceptor produced for ``exc`` (python-gssapi keeps it on the
    GSSError), wrapped in a SPNEGO reject when the client spoke SPNEGO; None when there is none."""
    seen: BaseException | None = exc
    token: bytes | None = None
    while seen is not None and token is None:
        token = getattr(seen, "token", None) or getattr(getattr(seen, "base_error", None), "token", None)
        seen = seen.__cause__ or seen.__context__
    if not token:
        return None
    return reject_token(bytes(token), spnego_wrapped=spnego_wrapped)


def reject_token(token: bytes, *, spnego_wrapped: bool) -> bytes:
    """A Kerberos error token as the client expects it: raw, or in a SPNEGO reject."""
    if not spnego_wrapped:
        return token
    from spnego._spnego import NegState, NegTokenResp

    return bytes(NegTokenResp(neg_state=NegState.reject, response_token=token).pack())


def _offers_only_ntlm(token: bytes) -> bool:
    """Whether ``token`` is a SPNEGO NegTokenInit that offers NTLM and no Kerberos mechanism."""
    from spnego._spnego import NegTokenInit, unpack_token

    try:
        parsed = unpack_token(token)
    except Exception:  # not SPNEGO (raw Kerberos/NTLM) or malformed: the acceptor decides
        return False
    if not isinstance(parsed, NegTokenInit):
        return False
    offered = list(parsed.mech_types or [])
    return GSSMech.ntlm.value in offered and not any(
        oid in offered for oid in (GSSMech.kerberos.value, GSSMech._ms_kerberos.value)
    )


def is_spnego(token: bytes) -> bool:
    """Whether ``token`` is SPNEGO (an initial token or a NegTokenResp) rather than raw Kerberos/NTLM."""
    return _is_spnego(token)


class KerberosRejected(Exception):
    """MIT's acceptor refused the ticket; ``token`` is the KRB-ERROR it produced for the client."""

    def __init__(self, reason: str, token: bytes | None) -> None:
        super().__init__(reason)
        self.token = token


def _kerberos_acceptor(creds: Any, channel_bindings: Any) -> Any:
    """pyspnego's GSSAPI acceptor, except that a refused ticket keeps MIT's error token.

    MIT answers some tickets it cannot accept (clock skew, an expired ticket, a key it does not
    have) with a KRB-ERROR token and "continue needed" rather than a failure; pyspnego's acceptor
    then fails on reading the flags of an unestablished context and the token is lost.
    """
    import gssapi
    from gssapi.raw import ChannelBindings
    from gssapi.raw.misc import GSSError
    from spnego._gss import GSSAPIProxy

    class LabKerberos(GSSAPIProxy):
        def step(self, in_token: bytes | None = None, *, channel_bindings: Any = None) -> bytes | None:
            if self._context is None:
                bindings = channel_bindings or self.channel_bindings
                kwargs: dict[str, Any] = {}
                if bindings is not None:
                    kwargs["channel_bindings"] = ChannelBindings(
                        initiator_address_type=bindings.initiator_addrtype,
                        initiator_address=bindings.initiator_address,
                        acceptor_address_type=bindings.acceptor_addrtype,
                        acceptor_address=bindings.acceptor_address,
                        application_data=bindings.application_data,
                    )
                self._context = gssapi.SecurityContext(creds=self._credential, usage="accept", **kwargs)
            out: bytes | None = None
            try:
                # python-gssapi returns an acceptor's error token from step() and raises the error on
                # the next use of the context
                out = self._context.step(in_token)
                complete = self._context.complete
            except GSSError as exc:
                raise KerberosRejected(str(exc), out or getattr(exc, "token", None)) from exc
            if not complete:
                # A Kerberos acceptor completes in one step; "continue" carries an error token.
                raise KerberosRejected("the ticket was not accepted", out)
            self._context_attr = int(self._context.actual_flags)
            return out

    context = LabKerberos(usage="accept", protocol="kerberos", _gssapi_credential=creds)
    context.channel_bindings = channel_bindings
    context._is_wrapped = True
    return context


#: GSS_C_CHANNEL_BOUND_FLAG (MIT krb5 >= 1.19, gssapi_ext.h): the initiator's channel bindings matched
#: the acceptor's.
GSS_C_CHANNEL_BOUND_FLAG = 0x800
NTLM_SIGNATURE = b"NTLMSSP\x00"


@dataclass(frozen=True, slots=True)
class KerberosService:
    """A lab host's Kerberos acceptor identity: its keytab (``HTTP/<fqdn>``, ``WSMAN/<fqdn>``) and realm."""

    keytab: Path
    realm: str


class NegotiateAcceptor:
    """One Negotiate security context (NTLM, and Kerberos when the host has a keytab), bound to one
    TCP connection.

    ``kerberos``: accept Kerberos with the host's own keytab, as a domain member does with its computer
    account's keys (python-gssapi over MIT krb5). ``refuse_ntlm``: the host refuses NTLM, as in a domain
    where "Network security: Restrict NTLM: Incoming NTLM traffic" is "Deny all". ``channel_bindings``:
    the TLS listener's tls-server-end-point bindings, checked against a Kerberos client's.
    """

    def __init__(
        self,
        *,
        kerberos: KerberosService | None = None,
        refuse_ntlm: bool = False,
        channel_bindings: Any = None,
    ) -> None:
        self.refuse_ntlm = refuse_ntlm
        self._ntlm_only: Any = None
        if kerberos is None and not refuse_ntlm:
            self._ctx: Any = spnego.server(protocol="negotiate")
            return
        contexts: dict[Any, Any] = {}
        if kerberos is not None:
            import gssapi

            creds = gssapi.Credentials(usage="accept", store={b"keytab": str(kerberos.keytab).encode()})
            kerb = _kerberos_acceptor(creds, channel_bindings)
            contexts[GSSMech.kerberos] = kerb
        if not refuse_ntlm:
            ntlm = spnego.server(protocol="ntlm")
            ntlm._is_wrapped = True
            contexts[GSSMech.ntlm] = ntlm
        self._ctx = spnego.server(protocol="negotiate", _negotiate_contexts=contexts)
        #: pyspnego answers from its first given context whatever the client offers: a client offering
        #: only NTLM (Negotiate after its Kerberos failed) gets an acceptor holding NTLM alone
        self._ntlm_only = (
            spnego.server(protocol="negotiate", _negotiate_contexts={GSSMech.ntlm: contexts[GSSMech.ntlm]})
            if len(contexts) > 1
            else None
        )

    @property
    def complete(self) -> bool:
        return bool(self._ctx.complete)

    @property
    def principal(self) -> str:
        return str(self._ctx.client_principal or "")

    @property
    def mechanism(self) -> str:
        """``kerberos`` or ``ntlm`` once negotiated."""
        try:
            return str(self._ctx.negotiated_protocol or "")
        except Exception:  # not known before the first token
            return ""

    @property
    def delegated(self) -> bool:
        """Whether a Kerberos client delegated (forwarded) its ticket to this host."""
        inner = getattr(getattr(self._ctx, "_context", None), "_context", None)
        return self.mechanism == "kerberos" and getattr(inner, "delegated_creds", None) is not None

    @property
    def channel_bound(self) -> bool:
        """Whether a Kerberos client's channel bindings matched this listener's certificate."""
        inner = getattr(self._ctx, "_context", None)
        flags = getattr(inner, "_context_attr", 0) or 0
        return self.mechanism == "kerberos" and bool(int(flags) & GSS_C_CHANNEL_BOUND_FLAG)

    def step(self, token: bytes) -> bytes | None:
        if self.refuse_ntlm and token.startswith(NTLM_SIGNATURE):
            raise AuthFailed("NTLM refused")
        if self._ntlm_only is not None:
            if _offers_only_ntlm(token):
                self._ctx = self._ntlm_only
            self._ntlm_only = None
        try:
            out: bytes | None = self._ctx.step(token)
        except Exception as exc:  # SpnegoError, GSSError, or a token no mechanism here accepts
            raise AuthFailed(type(exc).__name__, _error_token(exc, spnego_wrapped=_is_spnego(token))) from exc
        return out

    def unwrap(self, body: bytes) -> bytes:
        """Decrypt a ``multipart/encrypted`` request body."""
        parts = [p for p in re.split(re.escape(_BOUNDARY) + rb"(?:--)?\r\n", body) if p]
        out = bytearray()
        for i in range(0, len(parts) - 1, 2):
            meta, payload = parts[i], parts[i + 1]
            length_match = re.search(rb"Length=(\d+)", meta)
            if length_match is None:
                raise ValueError("encrypted part without OriginalContent length")
            payload = payload.removeprefix(b"\tContent-Type: application/octet-stream\r\n")
            (sig_len,) = struct.unpack("<I", payload[:4])
            header, data = payload[4 : 4 + sig_len], payload[4 + sig_len :]
            plain: bytes = self._ctx.unwrap_winrm(header, data)
            if len(plain) != int(length_match.group(1)):
                raise ValueError("decrypted length does not match OriginalContent")
            out += plain
        return bytes(out)

    def wrap(self, plain: bytes) -> bytes:
        """Encrypt a response body into the ``multipart/encrypted`` envelope."""
        wrapped = self._ctx.wrap_winrm(plain)
        length = len(plain) + int(wrapped.padding_length)
        return bytes(
            _BOUNDARY
            + b"\r\n"
            + f"\tContent-Type: {ENCRYPTED_PROTOCOL}\r\n".encode()
            + f"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={length}\r\n".encode()
            + _BOUNDARY
            + b"\r\n\tContent-Type: application/octet-stream\r\n"
            + struct.pack("<I", len(wrapped.header))
            + wrapped.header
            + wrapped.data
            + _BOUNDARY
            + b"--\r\n"
        )


#: The Authorization value of WS-Management certificate authentication ([MS-WSMV] 2.2.9.2; the TLS
#: handshake carries the certificate).
CERTIFICATE_AUTH = "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual"


class CredSspAcceptor:
    """One CredSSP exchange ([MS-CSSP]) on one TLS connection, by pyspnego's acceptor: TLS inside HTTP,
    NTLM or Kerberos inside that, then the client delegates its password (TSPasswordCreds)."""

    def __init__(self) -> None:
        self._ctx: Any = spnego.server(protocol="credssp")

    @property
    def complete(self) -> bool:
        return bool(self._ctx.complete)

    def step(self, token: bytes) -> bytes | None:
        try:
            out: bytes | None = self._ctx.step(token)
        except Exception as exc:  # SpnegoError, TLS errors, malformed TSRequest
            raise AuthFailed(type(exc).__name__) from exc
        return out

    def delegated(self) -> tuple[str, str, str] | None:
        """(domain, user, password) the client delegated, once complete."""
        creds = self._ctx.get_extra_info("client_credential")
        if creds is None or not hasattr(creds, "password"):
            return None
        return str(creds.domain_name or ""), str(creds.username or ""), str(creds.password or "")
