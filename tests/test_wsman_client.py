"""The WS-Man client's HTTP framing, fault parsing and channel bindings, below the lab.

A socket pair stands in for the host so each answer can be shaped exactly (chunked bodies, interim
100 answers, Connection: close) — shapes the lab, which always sends Content-Length, never produces.
"""

from __future__ import annotations

import datetime
import hashlib
import socket
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kmsadmin.errors import AccessDenied, ConnectionFailed
from kmsadmin.transports import build_options
from kmsadmin.transports.faults import is_retryable, translate
from kmsadmin.transports.wsman import (
    ConnectionLost,
    HTTPStatusError,
    WsmanFault,
    _Connection,
    channel_bindings,
    fault_of,
    streams_of,
)


@pytest.fixture
def pair() -> Iterator[tuple[_Connection, socket.socket]]:
    client, server = socket.socketpair()
    client.settimeout(5)
    server.settimeout(5)
    try:
        yield _Connection(client, "host:5986"), server
    finally:
        client.close()
        server.close()


def _answer(server: socket.socket, raw: bytes, *, then_close: bool = False) -> threading.Thread:
    """Read one request from ``server`` (headers and Content-Length body), then send ``raw``."""

    def serve() -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += server.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        while len(body) < length:
            body += server.recv(65536)
        server.sendall(raw)
        if then_close:
            server.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=serve)
    thread.start()
    return thread


def test_request_line_headers_and_body(pair: tuple[_Connection, socket.socket]) -> None:
    conn, server = pair
    received: list[bytes] = []

    def serve() -> None:
        data = b""
        while not data.endswith(b"<x/>"):
            data += server.recv(65536)
        received.append(data)
        server.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    thread = threading.Thread(target=serve)
    thread.start()
    status, headers, body, closes = conn.exchange("/wsman", b"<x/>", {"Content-Type": "application/soap+xml"})
    thread.join()
    head = received[0].split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"POST /wsman HTTP/1.1"
    assert b"Host: host:5986" in head and b"Content-Length: 4" in head
    assert (status, body, closes) == (200, b"ok", False)
    assert headers["content-length"] == "2"


def test_chunked_answer_with_trailer(pair: tuple[_Connection, socket.socket]) -> None:
    conn, server = pair
    thread = _answer(
        server,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n",
    )
    status, _, body, closes = conn.exchange("/wsman", b"", {})
    thread.join()
    assert (status, body, closes) == (200, b"hello, world", False)


def test_interim_answers_are_skipped_and_close_is_reported(pair: tuple[_Connection, socket.socket]) -> None:
    conn, server = pair
    thread = _answer(
        server,
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbusy",
    )
    status, _, body, closes = conn.exchange("/wsman", b"", {})
    thread.join()
    assert (status, body, closes) == (503, b"busy", True)


def test_repeated_headers_are_joined(pair: tuple[_Connection, socket.socket]) -> None:
    conn, server = pair
    thread = _answer(
        server,
        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Negotiate\r\n"
        b'WWW-Authenticate: Basic realm="WSMAN"\r\nContent-Length: 0\r\n\r\n',
    )
    status, headers, _, _ = conn.exchange("/wsman", b"", {})
    thread.join()
    assert status == 401
    assert headers["www-authenticate"] == 'Negotiate, Basic realm="WSMAN"'


def test_a_truncated_answer_is_a_lost_connection(pair: tuple[_Connection, socket.socket]) -> None:
    conn, server = pair
    thread = _answer(server, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", then_close=True)
    with pytest.raises(ConnectionLost):
        conn.exchange("/wsman", b"", {})
    thread.join()


FAULT = """<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"
  xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"><s:Body><s:Fault>
  <s:Code><s:Value>s:Sender</s:Value></s:Code>
  <s:Reason><s:Text xml:lang="en-US">The SOAP XML in the message does not match the schema.</s:Text></s:Reason>
  <s:Detail><f:WSManFault Code="5" Machine="srv01"><f:Message>Access is denied. </f:Message></f:WSManFault></s:Detail>
</s:Fault></s:Body></s:Envelope>"""


def test_fault_code_and_message_come_from_the_wsman_detail() -> None:
    fault = fault_of(ET.fromstring(FAULT))  # noqa: S314 - a literal
    assert fault is not None
    assert fault.code == 5 and fault.reason == "Access is denied."
    options = build_options("srv01", explicit={"user": "admin", "password": "x"}, env={})
    error = translate(fault, options, "facts", 10)
    assert isinstance(error, AccessDenied) and error.hresult == "0x80070005"


def test_http_status_errors_translate_and_busy_ones_are_retryable() -> None:
    options = build_options("srv01", explicit={"user": "admin", "password": "x"}, env={})
    busy = translate(HTTPStatusError(503, "busy"), options, "facts", 10)
    assert isinstance(busy, ConnectionFailed) and "503" in busy.message
    assert is_retryable(HTTPStatusError(503, "")) and not is_retryable(HTTPStatusError(500, ""))
    assert isinstance(translate(WsmanFault(None, "boom"), options, "facts", 10), ConnectionFailed)


def test_receive_streams_and_done_state() -> None:
    body = ET.fromstring(  # noqa: S314 - a literal
        '<s:Body xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><rsp:ReceiveResponse>'
        '<rsp:Stream Name="stdout" CommandId="A">aGVsbG8=</rsp:Stream><rsp:Stream Name="stdout" CommandId="A"/>'
        '<rsp:CommandState CommandId="A" '
        'State="http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"/>'
        "</rsp:ReceiveResponse></s:Body>"
    )
    assert streams_of(body) == ([b"hello"], True)


def _certificate(algorithm: hashes.HashAlgorithm) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "srv01")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, algorithm)
    )
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    ("signed_with", "digest"),
    [(hashes.SHA256(), hashlib.sha256), (hashes.SHA384(), hashlib.sha384), (hashes.SHA512(), hashlib.sha512)],
)
def test_channel_bindings_follow_rfc5929(signed_with: hashes.HashAlgorithm, digest: object) -> None:
    der = _certificate(signed_with)
    bindings = channel_bindings(der)
    assert bindings is not None
    assert bindings.application_data == b"tls-server-end-point:" + digest(der).digest()  # type: ignore[operator]
    assert channel_bindings(None) is None
