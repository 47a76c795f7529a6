"""A hostile WS-Man endpoint for the attack suite: one listener per named case, each answering the way a
broken, compromised or non-Windows host might (memory bombs, slowloris, XML bombs, garbage PSRP,
NTLM without integrity, TLS that never completes, a certificate for another name, redirects).

Cases answer the first request (Create) with the attack, or, for ``on="receive"``, answer Create like
WinRM and attack the Receive that follows. Every connection runs on its own daemon thread and every
endless answer stops when the server stops or the client goes away.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import os
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Send = Callable[[bytes], None]

ENVELOPE = (
    '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell">'
    "<s:Header/><s:Body>{}</s:Body></s:Envelope>"
)
CREATED = ENVELOPE.format(
    "<rsp:Shell><rsp:ShellId>11111111-2222-3333-4444-555555555555</rsp:ShellId></rsp:Shell>"
)


def receive_answer(stream: str) -> bytes:
    return ENVELOPE.format(
        f'<rsp:ReceiveResponse><rsp:Stream Name="stdout">{stream}</rsp:Stream></rsp:ReceiveResponse>'
    ).encode()


def ok(body: bytes | str, status: str = "200 OK", extra: str = "") -> bytes:
    data = body.encode() if isinstance(body, str) else body
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/soap+xml;charset=UTF-8\r\n{extra}"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode() + data


BOMB = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lollollollollollollollollollol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10)
    )
    + "]>"
    + '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>&lol9;</s:Body></s:Envelope>'
)


def garbage_psrp() -> str:
    """One complete PSRP fragment (start and end bits set) whose message is random bytes."""
    message = os.urandom(64)
    fragment = struct.pack(">QQBI", 1, 0, 3, len(message)) + message
    return base64.b64encode(fragment).decode()


def ntlm_challenge_without_integrity() -> bytes:
    """An NTLM CHALLENGE ([MS-NLMP] 2.2.1.2) offering neither signing nor sealing."""
    flags = (
        0x00000001 | 0x00000200 | 0x00080000 | 0x00800000 | 0x02000000
    )  # unicode, NTLM, ESS, target info, version
    info = (
        struct.pack("<HH", 2, 8)
        + "LAB".encode("utf-16-le")[:6]
        + b"\0\0"
        + struct.pack("<HH", 1, 8)
        + "EVIL".encode("utf-16-le")
        + struct.pack("<HHQ", 7, 8, 133000000000000000)
        + struct.pack("<HH", 0, 0)
    )
    offset = 56
    return (
        b"NTLMSSP\0"
        + struct.pack("<I", 2)
        + struct.pack("<HHI", 0, 0, offset)
        + struct.pack("<I", flags)
        + os.urandom(8)
        + b"\0" * 8
        + struct.pack("<HHI", len(info), len(info), offset)
        + bytes([10, 0])
        + struct.pack("<H", 20348)
        + b"\0\0\0\x0f"
        + info
    )


@dataclass(frozen=True)
class Case:
    """One attack: ``serve(send, stop)`` writes the hostile answer to the request it attacks."""

    name: str
    serve: Callable[[Send, threading.Event], None]
    #: the error kind the targeted host must end with
    expect: str
    on: str = "create"  # or "receive"
    scheme: str = "https"
    auth: str = "basic"
    #: what the case is about, for the test ids and failure messages
    what: str = ""


def _drip(send: Send, stop: threading.Event, head: bytes, unit: bytes, pause: float) -> None:
    send(head)
    while not stop.is_set():
        send(unit)
        time.sleep(pause)


def _flood(send: Send, stop: threading.Event, head: bytes, unit: bytes) -> None:
    send(head)
    while not stop.is_set():
        send(unit)


def _silent(send: Send, stop: threading.Event) -> None:
    stop.wait(60)


CASES: tuple[Case, ...] = (
    # the seven tracebacks
    Case("not_xml", lambda s, _: s(ok("this is not XML at all")), "ProtocolError"),
    Case(
        "truncated_xml_short_content_length",
        lambda s, _: s(ok(CREATED)[: -len(CREATED) // 2]),
        "ConnectionFailed",
        what="Content-Length says more than the host sends, then it closes",
    ),
    Case(
        "truncated_xml",
        lambda s, _: s(
            f"HTTP/1.1 200 OK\r\nContent-Length: {len(CREATED) // 2}\r\n\r\n".encode()
            + CREATED.encode()[: len(CREATED) // 2]
        ),
        "ProtocolError",
    ),
    Case(
        "xxe_undefined_entity",
        lambda s, _: s(ok(ENVELOPE.format("&xxe;"))),
        "ProtocolError",
    ),
    Case("entity_expansion_bomb", lambda s, _: s(ok(BOMB)), "ProtocolError"),
    Case(
        "invalid_base64_in_stream",
        lambda s, _: s(ok(receive_answer("!!!not*base64@@@"))),
        "ProtocolError",
        on="receive",
    ),
    Case(
        "garbage_psrp_fragments",
        lambda s, _: s(ok(receive_answer(garbage_psrp()))),
        "ProtocolError",
        on="receive",
    ),
    Case("ntlm_without_integrity", lambda s, _: None, "ProtocolError", scheme="http", auth="ntlm"),
    # memory bombs
    Case(
        "content_length_many_gb",
        lambda s, stop: _flood(
            s, stop, b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", b"A" * 65536
        ),
        "ProtocolError",
    ),
    Case(
        "chunk_size_many_gb",
        lambda s, stop: _flood(
            s, stop, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nF0000000\r\n", b"A" * 65536
        ),
        "ProtocolError",
    ),
    Case(
        "large_body_to_eof",
        lambda s, stop: _flood(s, stop, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"<a>" * 20000),
        "ProtocolError",
    ),
    Case(
        "endless_chunked_body",
        lambda s, stop: _flood(
            s,
            stop,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"400\r\n" + b"B" * 1024 + b"\r\n",
        ),
        "ProtocolError",
    ),
    # never-ending answers
    Case(
        "slowloris_headers",
        lambda s, stop: _drip(s, stop, b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a", 0.05),
        "HostTimeout",
    ),
    Case(
        "body_dripped_byte_by_byte",
        lambda s, stop: _drip(s, stop, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b"<", 0.05),
        "HostTimeout",
    ),
    Case(
        "endless_100_continue",
        lambda s, stop: _flood(s, stop, b"", b"HTTP/1.1 100 Continue\r\n\r\n"),
        "ProtocolError",
    ),
    Case(
        "endless_header_list",
        lambda s, stop: _flood(s, stop, b"HTTP/1.1 200 OK\r\n", b"X-Header: value\r\n"),
        "ProtocolError",
    ),
    # what already held, kept so it stays that way
    Case(
        "xxe_file_disclosure",
        lambda s, _: s(
            ok(
                '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
                + ENVELOPE.format("&xxe;")
            )
        ),
        "ProtocolError",
    ),
    Case(
        "external_dtd_fetch",
        lambda s, _: s(
            ok('<?xml version="1.0"?><!DOCTYPE r SYSTEM "http://127.0.0.1:9/evil.dtd">' + CREATED)
        ),
        "ProtocolError",
    ),
    Case("silent_server", _silent, "HostTimeout"),
    Case(
        "wrong_content_length",
        lambda s, _: s(b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\n" + CREATED.encode()),
        "ProtocolError",
    ),
    Case(
        "bad_chunk_size",
        lambda s, _: s(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n0\r\n\r\n"),
        "ProtocolError",
    ),
    Case(
        "negative_chunk_size",
        lambda s, _: s(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nxx\r\n0\r\n\r\n"),
        "ProtocolError",
    ),
    Case(
        "http_500_with_hostile_xml",
        lambda s, _: s(ok(BOMB, status="500 Internal Server Error")),
        "ConnectionFailed",
    ),
    # more than the table
    Case("tls_never_completes", _silent, "HostTimeout", what="TCP accepted, no ServerHello ever"),
    Case(
        "certificate_for_another_name",
        lambda s, _: s(ok(CREATED)),
        "ConnectionFailed",
        what="a certificate from the trusted CA, issued to other.example",
    ),
    Case(
        "redirect",
        lambda s, _: s(ok("", status="302 Found", extra="Location: http://127.0.0.1:9/wsman\r\n")),
        "ConnectionFailed",
    ),
)
BY_NAME = {case.name: case for case in CASES}


# --- certificates ----------------------------------------------------------------------------------------
class Authority:
    """A throw-away CA with a leaf for 127.0.0.1 and one for another name."""

    def __init__(self, directory: Path) -> None:
        now = datetime.datetime.now(datetime.UTC)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostile test CA")])
        self._name = name
        self._now = now
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_path = directory / "hostile-ca.pem"
        self.ca_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.good = self._leaf(directory / "good", x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        self.other = self._leaf(directory / "other", x509.DNSName("other.example"))

    def _leaf(self, base: Path, san: x509.GeneralName) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostile")]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - datetime.timedelta(hours=1))
            .not_valid_after(self._now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        cert_path, key_path = base.with_suffix(".crt"), base.with_suffix(".key")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        return context


# --- the server ------------------------------------------------------------------------------------------
_ACTION = re.compile(rb"<wsa:Action[^>]*>([^<]+)</wsa:Action>")


class HostileServer:
    """One listener per case on 127.0.0.1 (ephemeral ports)."""

    def __init__(self, authority: Authority, cases: tuple[Case, ...] = CASES) -> None:
        self.authority = authority
        self.stop = threading.Event()
        self.ports: dict[str, int] = {}
        self._listeners: list[socket.socket] = []
        self._cases = cases
        self.connections: dict[str, int] = dict.fromkeys(self.ports, 0)

    def start(self) -> HostileServer:
        for case in self._cases:
            listener = socket.create_server(("127.0.0.1", 0))
            listener.settimeout(0.2)
            self.ports[case.name] = listener.getsockname()[1]
            self.connections[case.name] = 0
            self._listeners.append(listener)
            threading.Thread(target=self._accept, args=(listener, case), daemon=True).start()
        return self

    def close(self) -> None:
        self.stop.set()
        for listener in self._listeners:
            listener.close()

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self, listener: socket.socket, case: Case) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections[case.name] += 1
            threading.Thread(target=self._serve, args=(conn, case), daemon=True).start()

    def _serve(self, raw: socket.socket, case: Case) -> None:
        conn: socket.socket = raw
        try:
            conn.settimeout(30)
            if case.name == "tls_never_completes":
                self.stop.wait(60)
                return
            if case.scheme == "https":
                context = (
                    self.authority.other
                    if case.name == "certificate_for_another_name"
                    else self.authority.good
                )
                conn = context.wrap_socket(raw, server_side=True)

            def send(data: bytes) -> None:
                conn.sendall(data)

            while not self.stop.is_set():
                request = _read_request(conn)
                if request is None:
                    return
                headers, body = request
                if case.name == "ntlm_without_integrity":
                    self._ntlm(send, headers)
                    continue
                action = _ACTION.search(body)
                verb = action.group(1).rsplit(b"/", 1)[-1].decode() if action else ""
                if case.on == "receive" and verb == "Create":
                    send(ok(CREATED))
                elif case.on == "receive" and verb in ("Signal", "Delete"):
                    send(ok(ENVELOPE.format("")))
                else:
                    case.serve(send, self.stop)
                    return
        except (OSError, ssl.SSLError):
            return
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    @staticmethod
    def _ntlm(send: Send, headers: bytes) -> None:
        found = re.search(rb"Authorization: Negotiate ([A-Za-z0-9+/=]+)", headers)
        token = base64.b64decode(found.group(1)) if found else b""
        if token[8:12] == struct.pack("<I", 1):  # NEGOTIATE: answer with a challenge lacking sign/seal
            challenge = base64.b64encode(ntlm_challenge_without_integrity()).decode()
            send(ok("", status="401 Unauthorized", extra=f"WWW-Authenticate: Negotiate {challenge}\r\n"))
        else:  # AUTHENTICATE (or anything else): accept it
            send(ok(""))


def _read_request(conn: socket.socket) -> tuple[bytes, bytes] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk or len(data) > 1 << 20:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    found = re.search(rb"(?i)content-length:\s*(\d+)", head)
    length = int(found.group(1)) if found else 0
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head, body


def inventory_hosts(server: HostileServer, user: str, password: str) -> dict[str, dict[str, object]]:
    """Inventory entries for every case: the host name is the case name."""
    out: dict[str, dict[str, object]] = {}
    for name, port in server.ports.items():
        case = BY_NAME[name]
        out[name.replace("_", "-")] = {
            "ansible_host": "127.0.0.1",
            "ansible_port": port,
            "ansible_user": user,
            "ansible_password": password,
            "ansible_connection": "psrp",
            "ansible_psrp_protocol": case.scheme,
            "ansible_psrp_auth": case.auth,
            "ansible_psrp_cert_validation": "validate",
            "ansible_psrp_ca_cert": str(server.authority.ca_path),
            "kmsadmin_role": "client",
        }
    return out
