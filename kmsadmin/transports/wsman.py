"""A lean WS-Management client: one keep-alive HTTP(S) connection per host, authenticated once.

The PSRP transport (:mod:`kmsadmin.transports.psrp`) pairs it with psrpcore, the sans-IO PSRP
library, so a fleet run pays for what the protocol needs and little more: envelopes are formatted
from one template, answers are parsed once, authentication (pyspnego: NTLM, Kerberos through
Negotiate, or Basic) happens once per connection, and the TLS context is built once per CA bundle.

Authentication sends the Negotiate token with the first request (no anonymous probe). Over HTTPS
the envelope rides on the last leg of the handshake; over HTTP the handshake runs on an empty body
and every later envelope travels encrypted (``multipart/encrypted``, [MS-WSMV] 2.2.9.1), as WinRM
requires while ``AllowUnencrypted`` is false. HTTPS handshakes carry channel binding tokens
(tls-server-end-point, RFC 5929) for hosts with ``CbtHardeningLevel`` Strict.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import logging
import re
import socket
import ssl
import struct
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from html import escape
from typing import Any

import spnego
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from defusedxml import DefusedXmlException
from spnego._ntlm_raw.crypto import ntowfv1
from spnego.channel_bindings import GssChannelBindings
from spnego.exceptions import SpnegoError

from kmsadmin.transports.base import (
    BUSY_STATUSES,
    OPERATION_TIMEOUT_FAULT,
    RECEIVE_RESET_RETRIES,
    Deadline,
    fromstring_untrusted,
    log,
    request_limits,
    retry_pause,
)
from kmsadmin.transports.options import ConnectionOptions

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "wsmanfault": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "wst": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
}
_RSP = "{" + NS["rsp"] + "}"
_BODY = "{" + NS["s"] + "}Body"
_UNREAD = ET.Element(_BODY)
_FAULT = "{" + NS["s"] + "}Fault"
_ENVELOPE_TAG = "{" + NS["s"] + "}Envelope"

CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
COMMAND = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command"
RECEIVE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive"
SEND = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send"
SIGNAL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal"
SIGNAL_TERMINATE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate"
COMMAND_DONE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"

#: WinRM's default MaxEnvelopeSizekb (150 kB) since Windows Server 2012.
MAX_ENVELOPE_SIZE = 153600

_ENVELOPE = (
    '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
    'xmlns:wsman="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
    'xmlns:wsmv="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd" '
    'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell">'
    "<s:Header>"
    '<wsa:Action s:mustUnderstand="true">{action}</wsa:Action>'
    '<wsmv:DataLocale s:mustUnderstand="false" xml:lang="en-US"/>'
    '<wsman:Locale s:mustUnderstand="false" xml:lang="en-US"/>'
    f'<wsman:MaxEnvelopeSize s:mustUnderstand="true">{MAX_ENVELOPE_SIZE}</wsman:MaxEnvelopeSize>'
    "<wsa:MessageID>uuid:{message_id}</wsa:MessageID>"
    "<wsman:OperationTimeout>PT{timeout}S</wsman:OperationTimeout>"
    '<wsa:ReplyTo><wsa:Address s:mustUnderstand="true">'
    "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:Address></wsa:ReplyTo>"
    '<wsman:ResourceURI s:mustUnderstand="true">{resource_uri}</wsman:ResourceURI>'
    '<wsmv:SessionId s:mustUnderstand="false">uuid:{session_id}</wsmv:SessionId>'
    "<wsa:To>{to}</wsa:To>"
    "{extra}"
    "</s:Header><s:Body>{body}</s:Body></s:Envelope>"
)

_SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"
_BOUNDARY = "Encrypted Boundary"
_ENCRYPTED_CONTENT_TYPE = (
    f'multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";boundary="{_BOUNDARY}"'
)
_TOKEN = re.compile(r"(?:Negotiate|Kerberos|NTLM)\s+([A-Za-z0-9+/=]+)", re.I)


# --- errors ------------------------------------------------------------------------------------------
class WsmanError(Exception):
    """Base of this client's errors; :func:`kmsadmin.transports.faults.translate` maps each one."""


class ConnectError(WsmanError):
    """No connection: DNS, refused, unreachable (the cause is chained)."""


class ConnectTimeoutError(ConnectError):
    """The TCP or TLS connect did not finish within the connect timeout."""


class TlsError(ConnectError):
    """The TLS handshake failed (the ``ssl.SSLError`` is chained)."""


class ConnectionLost(WsmanError):
    """The connection closed or reset while a request was in flight."""


class ReadTimeout(WsmanError):
    """No answer within the read timeout."""


class AuthRefused(WsmanError):
    """The host refused the credentials (HTTP 401 after the handshake), or the client could not build
    its token (the GSSAPI/SPNEGO error is chained).

    ``mechanism`` is what the handshake was using (``kerberos``, ``ntlm``); ``first_leg`` is True when
    the host refused the very first token, before any challenge (how a host that refuses NTLM answers
    an NTLM negotiate message); ``host_refused`` is False when the client failed before the host said no.
    ``kerberos_reason`` is why Negotiate dropped Kerberos (pyspnego/GSSAPI's words, uncleaned), or "".
    """

    def __init__(
        self,
        message: str,
        *,
        mechanism: str = "",
        first_leg: bool = False,
        host_refused: bool = True,
        kerberos_reason: str = "",
    ) -> None:
        super().__init__(message)
        self.mechanism = mechanism
        self.first_leg = first_leg
        self.host_refused = host_refused
        self.kerberos_reason = kerberos_reason


class UnencryptedRefused(WsmanError):
    """Over plain HTTP the host refused an unencrypted message or did not offer Basic: its WinRM
    service has AllowUnencrypted false (the credentials were not the problem)."""


class AuthUnavailable(WsmanError):
    """The authentication method needs a library that is not installed (the ImportError is chained)."""


class ProtocolViolation(WsmanError):
    """The answer broke HTTP, a size cap, XML, base64, PSRP or NTLM: not a working WinRM listener."""


#: what a host that skipped or half-did the authentication handshake broke, for message encryption
NO_ENCRYPTION_CONTEXT = (
    "the host answered without completing the authentication handshake, so there are no keys to "
    "encrypt messages with; it did not negotiate message integrity and confidentiality"
)


class HTTPStatusError(WsmanError):
    """An HTTP status that is neither success nor a WS-Man fault."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class WsmanFault(WsmanError):
    """A SOAP fault; ``code`` is the WSManFault code (a Win32 error or WS-Man code) when present."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(reason or f"WS-Man fault {code}")
        self.code = code
        self.reason = reason


# --- TLS ---------------------------------------------------------------------------------------------
_contexts: dict[tuple[str | None, bool], ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def tls_context(ca_bundle: str | None, validate: bool) -> ssl.SSLContext:
    """One client context per (CA bundle, validation): loading CAs costs more than a handshake."""
    key = (ca_bundle, validate)
    with _contexts_lock:
        context = _contexts.get(key)
        if context is None:
            context = ssl.create_default_context(cafile=ca_bundle)
            if not validate:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            _contexts[key] = context
        return context


@functools.lru_cache(maxsize=64)
def channel_bindings(der: bytes | None) -> GssChannelBindings | None:
    """tls-server-end-point bindings (RFC 5929 §4.1): the certificate's hash, MD5/SHA-1 raised to SHA-256.

    Kept per certificate: hosts behind one certificate (a wildcard, a cluster) share the answer.
    """
    if not der:
        return None
    try:
        algorithm = x509.load_der_x509_certificate(der).signature_hash_algorithm
    except Exception:  # an unparsable or unusual certificate: no bindings, as other clients do
        return None
    if algorithm is None or algorithm.name in ("md5", "sha1"):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(der)
    return GssChannelBindings(application_data=b"tls-server-end-point:" + digest.finalize())


# --- envelopes ---------------------------------------------------------------------------------------
def option_set(options: dict[str, str], must_comply: bool = False) -> str:
    """A ``wsman:OptionSet`` header."""
    comply = ' MustComply="true"' if must_comply else ""
    items = "".join(
        f'<wsman:Option Name="{escape(name)}"{comply}>{escape(value)}</wsman:Option>'
        for name, value in options.items()
    )
    return f'<wsman:OptionSet s:mustUnderstand="true">{items}</wsman:OptionSet>'


def shell_selector(shell_id: str) -> str:
    """The ``ShellId`` selector every request on an open shell carries."""
    return f'<wsman:SelectorSet><wsman:Selector Name="ShellId">{escape(shell_id)}</wsman:Selector></wsman:SelectorSet>'


def fault_of(root: ET.Element) -> WsmanFault | None:
    """The SOAP fault in an answer, if it is one."""
    body = root.find(_BODY)
    fault = body.find(_FAULT) if body is not None else None
    if fault is None:
        return None
    reason = fault.findtext("s:Reason/s:Text", default="", namespaces=NS)
    code: int | None = None
    detail = fault.find("s:Detail/wsmanfault:WSManFault", NS)
    if detail is not None:
        try:
            code = int(detail.attrib.get("Code", ""))
        except ValueError:
            code = None
        message = detail.find("wsmanfault:Message", NS)
        if message is not None:
            reason = "".join(message.itertext()).strip() or reason
    return WsmanFault(code, reason.strip())


# --- HTTP/1.1 ----------------------------------------------------------------------------------------
#: Caps on what one answer may hold. Every byte comes from a host that may be broken or hostile; a
#: Receive answer is at most MaxEnvelopeSize (150 kB) plus the encryption framing, a fault or an error
#: page a few kB, so these leave room for any real WinRM and stop memory and time bombs.
MAX_LINE = 8192
MAX_HEADERS = 100
MAX_HEADER_BYTES = 64 * 1024
MAX_INTERIM_ANSWERS = 8
MAX_BODY = 4 * 1024 * 1024
_DIGITS = re.compile(rb"[0-9]{1,12}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,8}")


class _Reader:
    """Buffered reads from a socket that stop at a monotonic deadline: a host dripping one byte at a
    time (slowloris) meets the deadline, not a fresh socket timeout per byte."""

    __slots__ = ("_buf", "_sock", "end")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()
        #: the monotonic time the current answer must be complete by
        self.end = float("inf")

    def _fill(self) -> bool:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("the answer did not complete in time")
        self._sock.settimeout(left if left != float("inf") else None)
        data = self._sock.recv(65536)
        if not data:
            return False
        self._buf += data
        return True

    def readline(self, limit: int = MAX_LINE) -> bytes:
        """One line with its end; b"" at EOF. A line longer than ``limit`` is a protocol violation."""
        start = 0
        while True:
            found = self._buf.find(b"\n", start)
            if found >= 0:
                if found >= limit:
                    raise ProtocolViolation(f"an HTTP line longer than {limit} bytes")
                line = bytes(self._buf[: found + 1])
                del self._buf[: found + 1]
                return line
            if len(self._buf) >= limit:
                raise ProtocolViolation(f"an HTTP line longer than {limit} bytes")
            start = len(self._buf)
            if not self._fill():
                line = bytes(self._buf)
                self._buf.clear()
                return line

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes (fewer only at EOF)."""
        while len(self._buf) < size:
            if not self._fill():
                break
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def read_to_eof(self, limit: int) -> bytes:
        """Everything until the host closes; more than ``limit`` bytes is a protocol violation."""
        while self._fill():
            if len(self._buf) > limit:
                raise ProtocolViolation(f"an answer larger than {limit // 1024} kB")
        data = bytes(self._buf)
        self._buf.clear()
        return data


class _Connection:
    """One keep-alive HTTP/1.1 connection: WinRM's exchange is one POST and one answer at a time, so
    the framing is a request line, headers and a Content-Length body each way (chunked answers are
    read too). ``http.client`` parses headers through the ``email`` package, which was a tenth of the
    client's CPU per host in a fleet run.

    Every answer is bounded: header lines, header count and size, interim (1xx) answers, body and
    chunk sizes (:data:`MAX_BODY`), and the time the whole exchange may take."""

    def __init__(self, sock: socket.socket, host_header: str) -> None:
        self.sock = sock
        self._reader = _Reader(sock)
        self._host = host_header

    def close(self) -> None:
        self.sock.close()

    def exchange(
        self, path: str, body: bytes, headers: dict[str, str], *, timeout: float | None = None
    ) -> tuple[int, dict[str, str], bytes, bool]:
        """Send one POST; returns (status, lower-cased headers, body, whether the host closes).

        ``timeout``: seconds the whole exchange may take (None: the socket's timeout), checked between
        reads, so no answer outlives it however slowly it arrives. Raises ``TimeoutError`` when it
        passes and :class:`ProtocolViolation` for an answer that breaks HTTP or the caps.
        """
        if timeout is None:
            timeout = self.sock.gettimeout()
        end = time.monotonic() + timeout if timeout is not None else float("inf")
        self._reader.end = end
        lines = [f"POST {path} HTTP/1.1", f"Host: {self._host}", f"Content-Length: {len(body)}"]
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError("no time left to send the request")
        self.sock.settimeout(left if timeout is not None else None)
        # sendall's timeout bounds the whole send (a host that never reads cannot hold it)
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        interim = 0
        while True:
            status_line = self._reader.readline()
            if not status_line:
                raise ConnectionLost("the host closed the connection without answering")
            version, _, rest = status_line.decode("latin-1").partition(" ")
            if not version.startswith("HTTP/1.") or not _DIGITS.fullmatch(rest[:3].encode("latin-1")):
                raise ProtocolViolation(f"not an HTTP answer: {status_line[:80]!r}")
            status = int(rest[:3])
            answer = self._headers()
            if not 100 <= status < 200:
                break
            interim += 1
            if interim > MAX_INTERIM_ANSWERS:
                raise ProtocolViolation(f"more than {MAX_INTERIM_ANSWERS} interim (1xx) answers")
        connection = answer.get("connection", "").lower()
        closes = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
        if "chunked" in answer.get("transfer-encoding", "").lower():
            data = self._read_chunked()
        elif "content-length" in answer:
            raw = answer["content-length"].encode("latin-1")
            if not _DIGITS.fullmatch(raw):
                raise ProtocolViolation(f"a Content-Length that is not a size: {raw[:40]!r}")
            length = int(raw)
            if length > MAX_BODY:
                raise ProtocolViolation(
                    f"a Content-Length of {length} bytes, over the {MAX_BODY // 1024} kB an answer may have"
                )
            data = self._reader.read(length)
            if len(data) != length:
                raise ConnectionLost("the connection closed in the middle of an answer")
        elif status in (204, 304):
            data = b""
        else:
            data, closes = self._reader.read_to_eof(MAX_BODY), True
        return status, answer, data, closes

    def _headers(self) -> dict[str, str]:
        """The header block after a status line (or the trailers of a chunked body), bounded."""
        answer: dict[str, str] = {}
        count = size = 0
        while True:
            line = self._reader.readline()
            if line in (b"\r\n", b"\n", b""):
                return answer
            count += 1
            size += len(line)
            if count > MAX_HEADERS or size > MAX_HEADER_BYTES:
                raise ProtocolViolation(
                    f"more than {MAX_HEADERS} headers or {MAX_HEADER_BYTES // 1024} kB of headers"
                )
            name, _, value = line.decode("latin-1").partition(":")
            key = name.strip().lower()
            value = value.strip()
            # repeated headers (WWW-Authenticate) are joined as RFC 9110 allows
            answer[key] = f"{answer[key]}, {value}" if key in answer else value

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = self._reader.readline(1024)
            if not size_line:
                raise ConnectionLost("the connection closed in the middle of an answer")
            raw = size_line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(raw):
                raise ProtocolViolation(f"a chunk size that is not a size: {raw[:40]!r}")
            size = int(raw, 16)
            if size == 0:
                self._headers()  # trailers, bounded like headers
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise ProtocolViolation(f"a chunked answer larger than {MAX_BODY // 1024} kB")
            chunk = self._reader.read(size)
            if len(chunk) != size:
                raise ConnectionLost("the connection closed in the middle of an answer")
            parts.append(chunk)
            self._reader.readline(1024)


# --- the client --------------------------------------------------------------------------------------
class WsmanClient:
    """WS-Man requests to one host over one connection; not thread-safe (one per host and worker).

    Every request fits inside :attr:`budget` when it is set: connect and read timeouts shrink to the
    time left and the WS-Man OperationTimeout stays a second under it. Busy answers (HTTP 503/425/429)
    are retried with backoff; a Receive whose connection dropped is asked again on a new one.
    """

    def __init__(self, options: ConnectionOptions) -> None:
        self._options = options
        self._to = escape(options.endpoint)
        self._path = "/" + options.path.lstrip("/")
        self._session_id = str(uuid.uuid4()).upper()
        self._conn: _Connection | None = None
        self._cbt: GssChannelBindings | None = None
        self._context: Any = None  # spnego context of the current connection
        self._authenticated = False
        negotiate = options.auth in ("negotiate", "ntlm", "kerberos")
        mode = options.message_encryption
        #: wrap every envelope with the auth context's keys
        self._wrap = negotiate and (mode == "always" or (mode == "auto" and not options.https))
        self._basic: str | None = None
        if options.auth == "basic":
            secret = options.password.value if options.password is not None else ""
            raw = f"{options.user or ''}:{secret}".encode()
            self._basic = "Basic " + base64.b64encode(raw).decode("ascii")
        #: the deadline the current requests must meet; None: only the configured timeouts
        self.budget: Deadline | None = None
        #: WS-Man requests sent (not counting authentication legs), for tests and logs
        self.requests = 0
        #: the mechanism the last handshake negotiated (``kerberos``, ``ntlm``; "" before one)
        self.mechanism = ""
        #: whether envelopes travel wrapped (encrypted) with the auth context's keys
        self.encrypted = self._wrap
        #: whether the last handshake carried TLS channel bindings
        self.channel_binding = False

    # -- connection -----------------------------------------------------------------------------------
    def _connect(self, connect_timeout: float, read_timeout: float) -> _Connection:
        """TCP connect (retried like a busy answer), then the TLS handshake under the read timeout: a
        host that accepts TCP but never answers is hung, not unreachable."""
        opts = self._options
        attempt = 0
        while True:
            try:
                sock = socket.create_connection((opts.host, opts.port), timeout=connect_timeout)
                break
            except TimeoutError as exc:
                error: ConnectError = ConnectTimeoutError(f"no answer within {connect_timeout:g}s")
                cause: OSError = exc
            except OSError as exc:
                error, cause = ConnectError(exc.strerror or str(exc)), exc
            pause = retry_pause(opts, attempt, self.budget, then=connect_timeout)
            if pause is None:
                raise error from cause
            attempt += 1
            time.sleep(pause)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(read_timeout)
        if opts.https:
            context = tls_context(opts.ca_bundle, opts.cert_validation)
            try:
                sock = context.wrap_socket(sock, server_hostname=opts.host)
            except TimeoutError as exc:
                sock.close()
                raise ReadTimeout(f"no TLS answer within {read_timeout:g}s") from exc
            except ssl.SSLError as exc:
                sock.close()
                raise TlsError(str(exc)) from exc
            except OSError as exc:
                sock.close()
                raise ConnectionLost(f"during the TLS handshake: {exc.strerror or exc}") from exc
            self._cbt = channel_bindings(sock.getpeercert(binary_form=True))
        host = f"[{opts.host}]" if ":" in opts.host else opts.host
        conn = _Connection(sock, f"{host}:{opts.port}")
        self._authenticated = self._basic is not None or opts.auth not in ("negotiate", "ntlm", "kerberos")
        self._context = None
        return conn

    def close(self) -> None:
        """Close the connection (the host's shells stay until deleted or idle-timed out)."""
        conn, self._conn = self._conn, None
        self._authenticated = False
        self._context = None
        if conn is not None:
            conn.close()

    def _round_trip(
        self, body: bytes, content_type: str, authorization: str | None, read_timeout: float
    ) -> tuple[int, dict[str, str], bytes]:
        conn = self._conn
        if conn is None:
            raise ConnectionLost("the connection is closed")
        headers = {"Content-Type": content_type, "Connection": "Keep-Alive", "User-Agent": "kmsadmin"}
        if authorization:
            headers["Authorization"] = authorization
        try:
            status, answer, data, closes = conn.exchange(self._path, body, headers, timeout=read_timeout)
        except TimeoutError as exc:
            self.close()
            raise ReadTimeout(f"no answer within {read_timeout:g}s") from exc
        except ssl.SSLError as exc:
            self.close()
            raise ConnectionLost(f"TLS error: {exc}") from exc
        except (ConnectionLost, ProtocolViolation):
            self.close()
            raise
        except (OSError, ValueError) as exc:
            self.close()
            raise ConnectionLost(str(exc) or type(exc).__name__) from exc
        if closes:
            # The host closes after this answer; the next request needs a new, re-authenticated one.
            self.close()
        return status, answer, data

    def _handshake(self, envelope: bytes, read_timeout: float) -> tuple[int, dict[str, str], bytes] | None:
        """Authenticate the connection; returns the answer when the envelope rode on the last leg.

        Under Negotiate, a refusal carries why Kerberos was dropped (``AuthRefused.kerberos_reason``).
        """
        if self._options.auth != "negotiate":
            return self._handshake_legs(envelope, read_timeout)
        with kerberos_drops() as dropped:
            try:
                return self._handshake_legs(envelope, read_timeout)
            except AuthRefused as exc:
                if dropped and not exc.kerberos_reason:
                    exc.kerberos_reason = dropped[-1]
                raise

    def _handshake_legs(
        self, envelope: bytes, read_timeout: float
    ) -> tuple[int, dict[str, str], bytes] | None:
        opts = self._options
        protocol = opts.auth
        context_req = spnego.ContextReq.default
        if opts.kerberos_delegation:
            context_req |= spnego.ContextReq.delegate
        try:
            context = spnego.client(
                spnego_credentials(opts, protocol),
                hostname=opts.spn_host,
                service=opts.kerberos_service,
                protocol=protocol,
                channel_bindings=self._cbt,
                context_req=context_req,
                options=spnego.NegotiateOptions.wrapping_winrm
                if self._wrap
                else spnego.NegotiateOptions.none,
            )
            token = context.step()
        except ImportError as exc:
            raise AuthUnavailable(str(exc)) from exc
        except SpnegoError as exc:
            raise AuthRefused(
                f"cannot start {protocol} authentication: {exc}",
                # NTLM builds its first token from nothing that can fail; Kerberos asks the KDC first
                mechanism="ntlm" if protocol == "ntlm" else "kerberos",
                host_refused=False,
            ) from exc
        legs = 0
        while True:
            legs += 1
            # NTLM's second client token is its last: the envelope can travel with it (HTTPS only;
            # over HTTP it must wait for the keys).
            last = context.complete or (legs >= 2 and _negotiated(context) == "ntlm")
            # Over plain HTTP an unencrypted envelope travels on its own, so a host refusing it is
            # told apart from one refusing the credentials.
            carry = not self._wrap and last and opts.https
            status, response, data = self._round_trip(
                envelope if carry else b"",
                _SOAP_CONTENT_TYPE,
                "Negotiate " + base64.b64encode(token or b"").decode("ascii"),
                read_timeout,
            )
            in_token = _auth_token(response.get("www-authenticate", ""))
            mechanism = _negotiated(context) or protocol
            if status == 401:
                if in_token is None or context.complete or self._conn is None:
                    raise AuthRefused(
                        "the host refused the credentials", mechanism=mechanism, first_leg=legs == 1
                    )
                # A Kerberos host answers a ticket it cannot accept with a KRB-ERROR token (clock skew,
                # wrong principal): stepping it raises that error, chained to the AuthRefused.
                token = _step(context, in_token, "authentication failed", mechanism)
                continue
            if status != 200:
                # e.g. 503 before the host looked at the token: nothing is authenticated yet
                body = data.decode("utf-8", "replace")
                raise HTTPStatusError(status, body[:2000])
            if in_token and not context.complete:
                _step(context, in_token, "the host's final authentication token was rejected")
            self._context = context
            self._authenticated = True
            self.mechanism = _negotiated(context) or protocol
            self.channel_binding = self._cbt is not None
            return (status, response, data) if carry else None

    # -- requests -------------------------------------------------------------------------------------
    def _post(self, envelope: bytes, read_timeout: float, connect_timeout: float) -> bytes:
        if self._conn is None:
            self._conn = self._connect(connect_timeout, read_timeout)
        answer = None
        if not self._authenticated:
            answer = self._handshake(envelope, read_timeout)
        if answer is None:
            if self._conn is None:
                raise ConnectionLost("the host closed the connection after authentication")
            if self._wrap:
                body, content_type = self._encrypt(envelope), _ENCRYPTED_CONTENT_TYPE
            else:
                body, content_type = envelope, _SOAP_CONTENT_TYPE
            answer = self._round_trip(body, content_type, self._basic, read_timeout)
        status, response, data = answer
        if response.get("content-type", "").lower().startswith("multipart/encrypted"):
            data = self._decrypt(data)
        if status == 200:
            return data
        if status == 401:
            self.close()
            if not self._options.https:
                offered = response.get("www-authenticate", "").lower()
                if self._basic is not None and "basic" not in offered:
                    raise UnencryptedRefused(
                        "the host does not offer Basic authentication over plain HTTP "
                        "(AllowUnencrypted is false there, or Basic is disabled)"
                    )
                if self._basic is None and not self._wrap:
                    raise UnencryptedRefused(
                        "the host authenticated the account, then refused the unencrypted message "
                        "(AllowUnencrypted is false there)"
                    )
            raise AuthRefused("the host refused the credentials")
        text = data.decode("utf-8", "replace")
        if text.lstrip().startswith("<"):
            try:
                found = fault_of(parse_xml(data))
            except ProtocolViolation:
                found = None  # not a SOAP fault: the HTTP status is what counts
            if found is not None:
                raise found
        raise HTTPStatusError(status, text[:2000])

    def _encrypt(self, envelope: bytes) -> bytes:
        try:
            header, wrapped, padding = self._context.wrap_winrm(envelope)
        except Exception as exc:  # e.g. an NTLM host that negotiated no signing or sealing
            raise ProtocolViolation(
                f"cannot encrypt for this host ({type(exc).__name__}: {_short(exc)}); it did not "
                "negotiate message integrity and confidentiality"
            ) from exc
        return b"".join(
            (
                f"--{_BOUNDARY}\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n"
                f"\tOriginalContent: type={_SOAP_CONTENT_TYPE};Length={len(envelope) + padding}\r\n"
                f"--{_BOUNDARY}\r\n\tContent-Type: application/octet-stream\r\n".encode("ascii"),
                struct.pack("<i", len(header)),
                header,
                wrapped,
                f"--{_BOUNDARY}--\r\n".encode("ascii"),
            )
        )

    def _decrypt(self, body: bytes) -> bytes:
        if self._context is None:
            raise ProtocolViolation("an encrypted answer arrived on a connection without keys")
        try:
            return self._unwrap(body)
        except WsmanError:
            raise
        except Exception as exc:  # framing, lengths, signature: the answer cannot be trusted
            raise ProtocolViolation(
                f"cannot decrypt the answer ({type(exc).__name__}: {_short(exc)})"
            ) from exc

    def _unwrap(self, body: bytes) -> bytes:
        parts = re.split(rb"--\s*" + re.escape(_BOUNDARY.encode()) + rb"(?:--)?\r\n", body)
        plain = bytearray()
        for i in range(1, len(parts) - 1, 2):
            header, payload = parts[i], parts[i + 1]
            length = int(header.split(b"Length=")[1].strip())
            payload = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
            size = struct.unpack("<i", payload[:4])[0]
            data = self._context.unwrap_winrm(payload[4 : 4 + size], payload[4 + size :])
            if len(data) != length:
                raise ProtocolViolation(f"decrypted {len(data)} bytes, the host announced {length}")
            plain += data
        return bytes(plain)

    def request(
        self,
        action: str,
        resource_uri: str,
        body: str,
        *,
        headers: str = "",
        receive: bool = False,
        answer: bool = True,
    ) -> ET.Element:
        """Send one WS-Man request and return the answer's ``s:Body``.

        ``answer=False``: the caller does not read the body (Command, Send, Signal, Delete), so a
        successful answer is not parsed (faults come with HTTP 500 and are parsed in any case).

        ``receive``: the request is a Receive, so an OperationTimeout fault ("no output yet") is asked
        again until the budget ends, and a dropped connection is asked again on a new one.
        """
        busy = resets = 0
        opts = self._options
        while True:
            connect, read, operation = request_limits(opts, self.budget)
            envelope = _ENVELOPE.format(
                action=action,
                message_id=str(uuid.uuid4()).upper(),
                timeout=operation,
                resource_uri=escape(resource_uri),
                session_id=self._session_id,
                to=self._to,
                extra=headers,
                body=body,
            ).encode("utf-8")
            self.requests += 1
            try:
                data = self._post(envelope, read, connect)
            except ConnectionLost:
                if not receive or resets >= RECEIVE_RESET_RETRIES:
                    raise
                resets += 1
                log.debug("connection lost during Receive, asking again (%d)", resets)
                continue
            except WsmanFault as fault:
                if receive and fault.code == OPERATION_TIMEOUT_FAULT:
                    continue
                raise
            except HTTPStatusError as err:
                pause = retry_pause(opts, busy, self.budget) if err.status in BUSY_STATUSES else None
                if pause is None:
                    raise
                busy += 1
                log.debug("busy answer (HTTP %s), retry %d in %.2fs", err.status, busy, pause)
                time.sleep(pause)
                continue
            if not answer:
                return _UNREAD
            root = parse_xml(data)
            if root.tag != _ENVELOPE_TAG:
                raise ProtocolViolation(f"the answer is XML but not a SOAP envelope ({root.tag[:80]})")
            found = root.find(_BODY)
            if found is not None and found.find(_FAULT) is not None:
                raise fault_of(root) or WsmanFault(None, "SOAP fault")
            return found if found is not None else ET.Element("Body")


def parse_xml(data: bytes | str) -> ET.Element:
    """Parse XML from a host with DTDs, entity declarations and external references refused
    (:func:`~kmsadmin.transports.base.fromstring_untrusted`); anything unparsable is a
    :class:`ProtocolViolation`."""
    try:
        root: ET.Element = fromstring_untrusted(data)
    except DefusedXmlException as exc:
        raise ProtocolViolation(
            f"XML with a DTD or entity declarations ({type(exc).__name__}), which WS-Man never sends"
        ) from exc
    except (ET.ParseError, ValueError) as exc:
        raise ProtocolViolation(f"the answer is not well-formed XML ({_short(exc)})") from exc
    return root


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:200]


def _auth_token(header: str) -> bytes | None:
    """The Negotiate/NTLM/Kerberos token of a WWW-Authenticate header, decoded, or None."""
    found = _TOKEN.search(header)
    if found is None:
        return None
    try:
        return base64.b64decode(found.group(1), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolViolation("an authentication token that is not base64") from exc


#: the logger pyspnego's Negotiate names a dropped mechanism's error on (at DEBUG level only)
SPNEGO_NEGOTIATE_LOG = "spnego._negotiate"
_drops = threading.local()
_drops_lock = threading.Lock()


class _KerberosDrops(logging.Filter):
    """Keeps why pyspnego's Negotiate dropped Kerberos, for the thread whose handshake collects it.

    Negotiate builds its mechanism list by trying Kerberos, then NTLM; a Kerberos failure (no ticket,
    an unknown SPN, no KDC, clock skew) is only logged at DEBUG ("Failed to create context for SPNEGO
    protocol kerberos: ...") before NTLM goes on alone. The logger is set to DEBUG so that record
    exists; this filter lets through only what the logger let through before (its own level if one was
    set, else its parents'), so nothing more is logged than without it.
    """

    def __init__(self, own_level: int) -> None:
        super().__init__()
        self.own_level = own_level

    def filter(self, record: logging.LogRecord) -> bool:
        bucket = getattr(_drops, "reasons", None)
        args = record.args
        if (
            bucket is not None
            and isinstance(args, tuple)
            and len(args) == 2
            and args[0] == "kerberos"
            and str(record.msg).startswith("Failed to create")
        ):
            bucket.append(str(args[1])[:4000])
        threshold = (
            self.own_level or logging.getLogger(SPNEGO_NEGOTIATE_LOG.rpartition(".")[0]).getEffectiveLevel()
        )
        return record.levelno >= threshold


@contextlib.contextmanager
def kerberos_drops() -> Iterator[list[str]]:
    """Collect, in this thread, why Negotiate dropped Kerberos while the block runs (newest last)."""
    logger = logging.getLogger(SPNEGO_NEGOTIATE_LOG)
    with _drops_lock:
        if not any(isinstance(f, _KerberosDrops) for f in logger.filters):
            logger.addFilter(_KerberosDrops(logger.level))
            logger.setLevel(logging.DEBUG)
    bucket: list[str] = []
    previous = getattr(_drops, "reasons", None)
    _drops.reasons = bucket
    try:
        yield bucket
    finally:
        _drops.reasons = previous


def _step(context: Any, token: bytes, refused: str, mechanism: str = "") -> bytes | None:
    """One authentication step with the host's token: a token the protocol rejects is refused
    authentication; one that cannot even be decoded is a protocol violation."""
    try:
        out: bytes | None = context.step(token)
    except SpnegoError as exc:
        raise AuthRefused(f"{refused}: {exc}", mechanism=_negotiated(context) or mechanism) from exc
    except Exception as exc:  # a malformed token (struct/index/value errors inside the decoder)
        raise ProtocolViolation(
            f"an authentication token that cannot be decoded ({type(exc).__name__}: {_short(exc)})"
        ) from exc
    return out


@functools.lru_cache(maxsize=64)
def _nt_hash(password: str) -> str:
    """NTOWFv1 ([MS-NLMP] 3.3.1) of ``password``, hex; with the same password on every host of a fleet,
    hashing it once saves pyspnego computing it, and the DES-based LM hash nobody uses, per connection."""
    return ntowfv1(password).hex()


def kerberos_principal(user: str) -> str:
    """``DOMAIN\\user`` (the NTLM form) as the ``user@DOMAIN`` Kerberos asks the KDC for."""
    if "\\" in user:
        domain, _, name = user.partition("\\")
        return f"{name}@{domain.upper()}" if domain not in ("", ".") else name
    return user


def spnego_credentials(opts: ConnectionOptions, protocol: str) -> list[Any] | None:
    """pyspnego credentials for ``protocol``.

    NTLM gets the NT hash (LM hash left empty: NTLMv2 does not use it). Kerberos, alone or under
    Negotiate, gets in this order: a keytab, a named ticket cache, the password (kmsadmin gets the
    ticket itself), or nothing (the default cache: ``KRB5CCNAME`` after ``kinit``).
    """
    user = opts.user
    password = opts.password.value if opts.password is not None else None
    creds: list[Any] = []
    if protocol in ("ntlm", "negotiate") and user is not None and password is not None:
        creds.append(spnego.NTLMHash(username=user, nt_hash=_nt_hash(password)))
    if protocol in ("kerberos", "negotiate"):
        principal = kerberos_principal(user) if user else None
        if opts.kerberos_keytab:
            creds.append(spnego.KerberosKeytab(keytab=opts.kerberos_keytab, principal=principal))
        elif opts.kerberos_ccache:
            creds.append(spnego.KerberosCCache(ccache=opts.kerberos_ccache))
        elif principal is not None and password is not None:
            creds.append(spnego.Password(username=principal, password=password))
        elif principal is not None:
            creds.append(spnego.CredentialCache(username=principal))
    return creds or None


def _negotiated(context: Any) -> str:
    try:
        return str(context.negotiated_protocol or "")
    except Exception:  # not known before the first answer
        return ""


def streams_of(body: ET.Element) -> tuple[list[bytes], bool]:
    """(decoded ``rsp:Stream`` payloads, whether the command reported Done) of a ReceiveResponse.

    Raises :class:`ProtocolViolation` for an answer without a ReceiveResponse or with a stream that
    is not base64.
    """
    response = body.find(_RSP + "ReceiveResponse")
    if response is None:
        raise ProtocolViolation("a Receive answer without a ReceiveResponse")
    try:
        data = [base64.b64decode(s.text, validate=True) for s in response.iter(_RSP + "Stream") if s.text]
    except (binascii.Error, ValueError) as exc:
        raise ProtocolViolation(f"a Receive stream that is not base64 ({exc})") from exc
    state = response.find(_RSP + "CommandState")
    return data, state is not None and state.attrib.get("State") == COMMAND_DONE
