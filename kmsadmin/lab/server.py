"""The lab's WS-Management server: many simulated Windows hosts, each on its own loopback port.

Design:

* one accept loop (a ``selectors`` selector over every listening socket plus a wake-up pair), so an idle
  host costs a socket and a few objects, not a thread;
* one daemon thread per accepted connection, bounded by ``max_connections`` (further clients wait in
  the listen backlog); HTTP/1.1 keep-alive with ``TCP_NODELAY`` (without it Python's http.server
  stalls ~40 ms per request on delayed ACKs);
* authentication per connection as WinRM does it (see :mod:`kmsadmin.lab.auth`), TLS per listener with
  the lab certificate (:mod:`kmsadmin.lab.tls`);
* WinRS and PSRP shells per host (:mod:`kmsadmin.lab.winrs`, :mod:`kmsadmin.lab.psrp`) answering from a
  :class:`~kmsadmin.lab.api.ScriptEngine`;
* fault injection per host from :class:`~kmsadmin.lab.api.HostFaults`.

``stop()`` closes listeners and live connections and returns within a couple of seconds even when a
host is configured to hang; all threads are daemons.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import logging
import selectors
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, TypeVar

from kmsadmin.lab import wsman
from kmsadmin.lab.api import EndpointConfig, ScriptEngine
from kmsadmin.lab.auth import (
    CERTIFICATE_AUTH,
    ENCRYPTED_CONTENT_TYPE,
    AuthFailed,
    CredSspAcceptor,
    KerberosService,
    NegotiateAcceptor,
    NtlmUserStore,
    check_basic,
    is_spnego,
    nt_hash,
    reject_token,
    split_principal,
)
from kmsadmin.lab.hostctx import ConnectionAbort, EngineRunner, HostContext
from kmsadmin.lab.psrp import PsrpShell
from kmsadmin.lab.tls import ClientCa, LabCertificate, client_upn, generate, generate_client_ca
from kmsadmin.lab.winrs import WinrsShell

log = logging.getLogger("kmsadmin.lab.server")

_SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"
# HTTP.sys's own error page (it is HTML, not XML, so clients report a transport error, not a fault).
_HTTP_SYS_503 = (
    b'<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN""http://www.w3.org/TR/html4/strict.dtd">\r\n'
    b"<HTML><HEAD><TITLE>Service Unavailable</TITLE>\r\n"
    b'<META HTTP-EQUIV="Content-Type" Content="text/html; charset=us-ascii"></HEAD>\r\n'
    b"<BODY><h2>Service Unavailable</h2>\r\n<hr><p>HTTP Error 503. The service is unavailable.</p>\r\n"
    b"</BODY></HTML>\r\n"
)
_RESPONSE_NS = {
    wsman.ACTION_CREATE: ("s", "a", "x", "w", "rsp", "p"),
    wsman.ACTION_DELETE: ("s", "a", "w", "p"),
    wsman.ACTION_RECEIVE: ("s", "a", "w", "rsp", "p"),
}


@dataclass(frozen=True, slots=True)
class LabEndpoint:
    """Where one lab host listens."""

    name: str
    port: int
    url: str
    tls: bool


@dataclass(eq=False, slots=True)
class _Host:
    config: EndpointConfig
    listener: socket.socket
    endpoint: LabEndpoint
    ctx: HostContext
    password_hash: bytes
    shells: dict[str, WinrsShell | PsrpShell] = field(default_factory=dict)
    connections: set[socket.socket] = field(default_factory=set)
    http_503_left: int = 0
    requests: int = 0
    #: authentication and message protection seen: kerberos / ntlm handshakes, channel_bound (Kerberos
    #: over HTTPS with matching bindings), encrypted / plain request bodies, refused handshakes
    auth: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, key: str) -> None:
        with self.lock:
            self.auth[key] = self.auth.get(key, 0) + 1


class _Answered(Exception):
    """Control flow: the response is already sent."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 framing only; :meth:`LabServer._handle_post` does the work."""

    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"  # what WinRM's HTTP.sys listener announces
    sys_version = ""
    disable_nagle_algorithm = True
    # Buffered writes: a response's status line, headers and body leave in one send (one TLS record)
    # at the flush that ends every response, instead of one send for the headers and one for the body.
    wbufsize = 1 << 16

    def __init__(self, sock: socket.socket, client: Any, lab: LabServer, host: _Host) -> None:
        self.lab = lab
        self.host = host
        # Per-connection authentication: NTLM/Negotiate binds to the TCP connection.
        self.acceptor: NegotiateAcceptor | None = None
        self.credssp: CredSspAcceptor | None = None
        super().__init__(sock, client, None)  # type: ignore[arg-type]

    def do_POST(self) -> None:
        self.lab._handle_post(self)

    def handle_expect_100(self) -> bool:
        answered = super().handle_expect_100()
        self.wfile.flush()  # the client waits for this interim answer before it sends the body
        return answered

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines are logged by _handle_post with host and duration; nothing else is needed.
        return


class LabServer:
    """Serves lab hosts over real WinRM (WS-Man over HTTP/HTTPS) on 127.0.0.1.

    ``engine`` runs the scripts; ``hosts`` are the listeners to open at :meth:`start` (more can be added
    with :meth:`add_host` while running). ``state_dir`` receives the CA certificate (a temporary
    directory by default, removed at :meth:`stop`).
    """

    def __init__(
        self,
        engine: ScriptEngine,
        hosts: Iterable[EndpointConfig] = (),
        *,
        state_dir: Path | str | None = None,
        max_connections: int = 512,
        engine_workers: int = 32,
        idle_timeout: float = 120.0,
        max_envelope_size_kb: int = 500,
        max_operation_wait: float = 60.0,
        backlog: int = 128,
    ) -> None:
        self.engine = engine
        self._initial = list(hosts)
        self._state_dir_arg = Path(state_dir) if state_dir is not None else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        #: WinRM's MaxEnvelopeSizekb (default 500 on current Windows)
        self.max_envelope_size = max_envelope_size_kb * 1024
        self.max_operation_wait = max_operation_wait
        self.backlog = backlog
        self._runner = EngineRunner(engine_workers)
        self._hosts: dict[str, _Host] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._pending: list[tuple[str, _Host, threading.Event]] = []
        self._accept_thread: threading.Thread | None = None
        self._conn_threads: set[threading.Thread] = set()
        self._ntlm: NtlmUserStore | None = None
        self._cert: LabCertificate | None = None
        self._ssl: ssl.SSLContext | None = None
        self._channel_bindings: Any = None
        self._client_ca: ClientCa | None = None
        self._state_dir: Path | None = None
        self._started = False

    # --- lifecycle --------------------------------------------------------------------------------------

    def __enter__(self) -> LabServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> LabServer:
        if self._started:
            return self
        self._started = True
        if self._state_dir_arg is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="kmsadmin-lab-")
            self._state_dir = Path(self._tmp.name)
        else:
            self._state_dir = self._state_dir_arg
            self._state_dir.mkdir(parents=True, exist_ok=True)
        # Every listener is on 127.0.0.1 and clients address it so: the certificate names 127.0.0.1 and
        # localhost, not each host (10,000 names make a 130 kB certificate, more than OpenSSL accepts in a
        # handshake, and every handshake would carry and check it).
        self._cert = generate(self._state_dir, [])
        self._client_ca = generate_client_ca(self._state_dir)
        self._ssl = self._cert.server_context(self._client_ca.cert_path)
        self._channel_bindings = self._cert.channel_bindings()
        self._ntlm = NtlmUserStore.acquire()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            opened = [self._open_host(cfg) for cfg in self._initial]
            self._ntlm.register(
                id(self), [(h.config.name, h.config.username, h.config.password) for h in opened]
            )
            for host in opened:
                self._selector.register(host.listener, selectors.EVENT_READ, host)
        except BaseException:
            self.stop()
            raise
        self._accept_thread = threading.Thread(target=self._accept_loop, name="lab-accept", daemon=True)
        self._accept_thread.start()
        log.info("lab server started with %d hosts", len(self._hosts))
        return self

    def stop(self) -> None:
        if not self._started or self._stop.is_set():
            return
        self._stop.set()
        self._wake()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        with self._lock:
            hosts = list(self._hosts.values())
            self._hosts.clear()
        if self._ntlm is not None:
            self._ntlm.unregister_all(id(self))
        for host in hosts:
            self._close_host(host)
        with self._lock:
            threads = list(self._conn_threads)
        deadline = time.monotonic() + 2.0
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._runner.close()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        if self._selector is not None:
            self._selector.close()
        if self._ntlm is not None:
            NtlmUserStore.release(self._ntlm)
            self._ntlm = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        log.info("lab server stopped")

    # --- public information -------------------------------------------------------------------------

    @property
    def endpoints(self) -> dict[str, LabEndpoint]:
        with self._lock:
            return {name: host.endpoint for name, host in self._hosts.items()}

    def endpoint(self, name: str) -> LabEndpoint:
        with self._lock:
            return self._hosts[name].endpoint

    def url(self, name: str) -> str:
        return self.endpoint(name).url

    def port(self, name: str) -> int:
        return self.endpoint(name).port

    @property
    def ca_path(self) -> Path:
        """PEM of the lab CA; pass it as ``cert_validation`` (pypsrp) or ``ca_trust_path`` (pywinrm)."""
        if self._cert is None:
            raise RuntimeError("the lab server is not started")
        return self._cert.ca_path

    def issue_client_certificate(self, upn: str, directory: Path) -> tuple[Path, Path]:
        """A client certificate from the lab's client CA for ``upn``: (certificate PEM, key PEM)."""
        return _need(self._client_ca, "client CA").issue(upn, directory)

    @property
    def ntlm_user_file(self) -> Path:
        """The process-wide ``NTLM_USER_FILE`` that holds every lab host's account (hashes only)."""
        if self._ntlm is None:
            raise RuntimeError("the lab server is not started")
        return self._ntlm.path

    @property
    def state_dir(self) -> Path:
        if self._state_dir is None:
            raise RuntimeError("the lab server is not started")
        return self._state_dir

    def request_count(self, name: str) -> int:
        """HTTP requests the host has received (for round-trip assertions)."""
        with self._lock:
            host = self._hosts[name]
        with host.lock:
            return host.requests

    def auth_stats(self, name: str) -> dict[str, int]:
        """What the host saw: ``kerberos``/``ntlm`` handshakes, ``channel_bound``, ``encrypted``/``plain``
        request bodies and ``refused`` handshakes (for tests and ``kmsadmin lab status``)."""
        with self._lock:
            host = self._hosts[name]
        with host.lock:
            return dict(host.auth)

    def shell_count(self, name: str) -> int:
        with self._lock:
            host = self._hosts[name]
        with host.lock:
            return len(host.shells)

    # --- hosts ----------------------------------------------------------------------------------------

    def add_host(self, config: EndpointConfig) -> LabEndpoint:
        """Open a listener for one more host while the server runs."""
        if not self._started or self._stop.is_set():
            raise RuntimeError("the lab server is not running")
        host = self._open_host(config)
        _need(self._ntlm, "NTLM user store").register(
            id(self), [(config.name, config.username, config.password)]
        )
        self._submit("add", host)
        return host.endpoint

    def remove_host(self, name: str) -> None:
        """Close a host's listener, its connections and its shells."""
        with self._lock:
            host = self._hosts.pop(name)
        self._submit("remove", host)
        self._close_host(host)

    def _submit(self, op: str, host: _Host) -> None:
        done = threading.Event()
        with self._lock:
            self._pending.append((op, host, done))
        self._wake()
        done.wait(timeout=5)

    def _open_host(self, config: EndpointConfig) -> _Host:
        with self._lock:
            if config.name in self._hosts:
                raise ValueError(f"lab host {config.name!r} already exists")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", config.port))
            listener.listen(self.backlog)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        port = listener.getsockname()[1]
        scheme = "https" if config.tls else "http"
        url = f"{scheme}://127.0.0.1:{port}/wsman"
        ctx = HostContext(
            name=config.name,
            username=config.username,
            engine=self.engine,
            runner=self._runner,
            faults=config.faults,
            stop=self._stop,
            max_operation_wait=self.max_operation_wait,
            address=url,
        )
        host = _Host(
            config=config,
            listener=listener,
            endpoint=LabEndpoint(config.name, port, url, config.tls),
            ctx=ctx,
            password_hash=nt_hash(config.password),
            http_503_left=config.faults.http_503,
        )
        with self._lock:
            self._hosts[config.name] = host
        return host

    def _close_host(self, host: _Host) -> None:
        with contextlib.suppress(OSError):
            host.listener.close()
        with host.lock:
            conns = list(host.connections)
            shells = list(host.shells.values())
            host.shells.clear()
        for conn in conns:
            _shutdown(conn)
        for shell in shells:
            shell.close()
        if self._ntlm is not None:
            self._ntlm.unregister(id(self), host.config.name)

    # --- accept loop ----------------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

    def _apply_pending(self) -> None:
        selector = _need(self._selector, "selector")
        with self._lock:
            pending, self._pending = self._pending, []
        for op, host, done in pending:
            try:
                if op == "add":
                    selector.register(host.listener, selectors.EVENT_READ, host)
                else:
                    selector.unregister(host.listener)
            except (KeyError, ValueError, OSError):
                pass
            done.set()

    def _accept_loop(self) -> None:
        selector = _need(self._selector, "selector")
        wake_r = _need(self._wake_r, "wake-up socket")
        while not self._stop.is_set():
            self._apply_pending()
            # A free handler slot first: beyond max_connections clients wait in the listen backlog.
            if not self._slots.acquire(timeout=0.2):
                continue
            accepted = False
            try:
                for key, _ in selector.select(timeout=0.5):
                    if key.data is None:
                        try:
                            while wake_r.recv(4096):
                                pass
                        except OSError:
                            pass
                        continue
                    host: _Host = key.data
                    try:
                        conn, addr = host.listener.accept()
                    except OSError:
                        continue
                    accepted = True
                    self._spawn(conn, addr, host)
                    break
            except (OSError, ValueError):
                if self._stop.is_set():
                    break
            finally:
                if not accepted:
                    self._slots.release()
        self._apply_pending()

    def _spawn(self, conn: socket.socket, addr: Any, host: _Host) -> None:
        conn.setblocking(True)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        thread = threading.Thread(
            target=self._serve_connection,
            args=(conn, addr, host),
            name=f"lab-{host.config.name}",
            daemon=True,
        )
        with self._lock:
            self._conn_threads.add(thread)
        with host.lock:
            host.connections.add(conn)
        thread.start()

    def _serve_connection(self, conn: socket.socket, addr: Any, host: _Host) -> None:
        sock: socket.socket = conn
        try:
            if host.config.faults.hang:
                # Accept, read nothing, answer nothing: the client's read timeout must fire.
                self._stop.wait()
                return
            if host.config.tls:
                conn.settimeout(10)
                sock = _need(self._ssl, "TLS context").wrap_socket(
                    conn, server_side=True, do_handshake_on_connect=False
                )
                sock.do_handshake()
                with host.lock:
                    host.connections.discard(conn)
                    host.connections.add(sock)
            sock.settimeout(self.idle_timeout)
            _Handler(sock, addr, self, host)
        except ConnectionAbort:
            reset_connection(sock)
        except (OSError, ssl.SSLError, ValueError):
            # Client went away, TLS failed, or stop() shut the socket: nothing to answer.
            pass
        finally:
            with host.lock:
                host.connections.discard(sock)
                host.connections.discard(conn)
            _shutdown(sock)
            with self._lock:
                self._conn_threads.discard(threading.current_thread())
            self._slots.release()

    # --- one HTTP request ---------------------------------------------------------------------------

    def _handle_post(self, h: _Handler) -> None:
        started = time.monotonic()
        try:
            action, status = self._answer(h)
        except _Answered as answered:
            action, status = "", answered.status
        log.debug(
            "lab %s: %s -> %d in %.3fs",
            h.host.config.name,
            action.rsplit("/", 1)[-1] or "(auth)",
            status,
            time.monotonic() - started,
        )

    def _answer(self, h: _Handler) -> tuple[str, int]:
        """Answer one POST; responses other than the WS-Man answer are sent and raised as _Answered."""
        host = h.host
        faults = host.config.faults
        with host.lock:
            host.requests += 1
        body = self._read_body(h)
        if faults.latency_ms > 0 and self._stop.wait(faults.latency_ms / 1000):
            raise ConnectionAbort
        if self._take_503(host):
            self._reply(h, 503, _HTTP_SYS_503, content_type="text/html; charset=us-ascii")

        final_token = self._authenticate(h)
        extra: dict[str, str] = {}
        if final_token:
            # SPNEGO's accept-completed token; pypsrp steps it to finish its context.
            extra["WWW-Authenticate"] = "Negotiate " + base64.b64encode(final_token).decode()
        acceptor, plain = self._decode_body(h, body)
        if not plain:
            # The empty POST pypsrp/pywinrm send to set up message encryption.
            self._reply(h, 200, b"", extra=extra)

        status, xml, action = self._process(host, plain, h.client_address[0])
        payload = xml.encode("utf-8")
        if acceptor is not None:
            self._send(h, status, acceptor.wrap(payload), content_type=ENCRYPTED_CONTENT_TYPE, extra=extra)
        else:
            self._send(h, status, payload, extra=extra)
        return action, status

    def _read_body(self, h: _Handler) -> bytes:
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._reply(h, 411, b"", close=True)  # WinRM clients always send Content-Length
        try:
            length = int(h.headers.get("Content-Length") or 0)
        except ValueError:
            self._reply(h, 400, b"", close=True)
        return h.rfile.read(length) if length > 0 else b""

    def _decode_body(self, h: _Handler, body: bytes) -> tuple[NegotiateAcceptor | None, bytes]:
        """(the acceptor to encrypt the answer with, or None; the plain request envelope)."""
        cfg = h.host.config
        if not h.headers.get("Content-Type", "").lower().startswith("multipart/encrypted"):
            if body and not (cfg.tls or cfg.allow_unencrypted):
                # AllowUnencrypted=false: WinRM refuses a readable body over HTTP with a bare 401.
                self._reply(h, 401, b"")
            if body:
                h.host.count("plain")
            return None, body
        acceptor = h.acceptor
        if acceptor is None or not acceptor.complete:
            self._challenge(h)
            raise _Answered(401)
        h.host.count("encrypted")
        try:
            return acceptor, acceptor.unwrap(body)
        except Exception:  # any failure to decrypt means the body cannot be trusted
            self._reply(h, 400, b"", close=True)
        raise _Answered(400)  # unreachable: _reply raises

    def _take_503(self, host: _Host) -> bool:
        with host.lock:
            if host.http_503_left == 0:
                return False
            if host.http_503_left > 0:
                host.http_503_left -= 1
            return True

    def _authenticate(self, h: _Handler) -> bytes:
        """Run this request's auth step; returns the final Negotiate token (b"" for none) or raises."""
        cfg = h.host.config
        header = h.headers.get("Authorization", "").strip()
        if header.lower() == CERTIFICATE_AUTH:
            self._certificate(h)
            return b""
        scheme, _, token = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "credssp":
            self._credssp(h, token)
            return b""
        if scheme == "basic":
            h.acceptor = None
            # Windows does not even offer Basic over HTTP while AllowUnencrypted is false.
            allowed = cfg.tls or cfg.allow_unencrypted
            if not allowed or cfg.faults.wrong_credentials:
                self._refuse(h)
            if not check_basic(token, cfg.name, cfg.username, cfg.password):
                self._refuse(h)
            return b""
        if scheme in ("negotiate", "ntlm", "kerberos"):
            return self._negotiate(h, token)
        if (h.acceptor is None or not h.acceptor.complete) and (h.credssp is None or not h.credssp.complete):
            self._refuse(h)
        return b""  # the connection authenticated earlier

    def _negotiate(self, h: _Handler, token: str) -> bytes:
        cfg = h.host.config
        if h.acceptor is None or h.acceptor.complete:
            # A new handshake on this connection: each one gets a fresh context.
            h.acceptor = self._new_acceptor(h)
            if cfg.clock_skew and cfg.kerberos_keytab:
                self._check_clock(h, token)
        try:
            out = h.acceptor.step(base64.b64decode(token))
        except AuthFailed as failed:
            h.host.count("refused")
            if failed.token:
                # Windows answers a ticket it cannot accept with the Kerberos error in the 401.
                h.acceptor = None
                error = "Negotiate " + base64.b64encode(failed.token).decode()
                self._reply(h, 401, b"", extra={"WWW-Authenticate": error})
            self._refuse(h)
        except binascii.Error:
            h.host.count("refused")
            self._refuse(h)
        if not h.acceptor.complete:
            challenge = "Negotiate " + base64.b64encode(out or b"").decode()
            self._reply(h, 401, b"", extra={"WWW-Authenticate": challenge})
        mechanism = h.acceptor.mechanism
        if mechanism == "kerberos":
            domain, user = split_principal(h.acceptor.principal)
            allowed = user.upper() == cfg.username.upper() and domain.upper() == cfg.kerberos_realm.upper()
        else:
            store = self._ntlm
            allowed = (
                not cfg.refuse_ntlm
                and store is not None
                and store.allows(cfg.name, cfg.username, h.host.password_hash, h.acceptor.principal)
            )
        if cfg.faults.wrong_credentials or not allowed:
            h.host.count("refused")
            self._refuse(h)
        h.host.count(mechanism or "ntlm")
        if h.acceptor.channel_bound:
            h.host.count("channel_bound")
        if h.acceptor.delegated:
            h.host.count("delegated")
        return out or b""

    def _certificate(self, h: _Handler) -> None:
        """Certificate authentication: the TLS client certificate's UPN mapped to the host's user."""
        cfg = h.host.config
        der = None
        if cfg.tls and cfg.certificate_auth and isinstance(h.connection, ssl.SSLSocket):
            der = h.connection.getpeercert(binary_form=True)
        upn = client_upn(der) if der else None
        _, user = split_principal(upn or "")
        if upn is None or user.upper() != cfg.username.upper() or cfg.faults.wrong_credentials:
            h.host.count("refused")
            self._refuse(h)
        h.host.count("certificate")

    def _credssp(self, h: _Handler, token: str) -> None:
        """One CredSSP leg; answers 401 with the next token until the client delegated its password."""
        cfg = h.host.config
        if not (cfg.tls and cfg.credssp):
            self._refuse(h)
        if h.credssp is None or h.credssp.complete:
            h.credssp = CredSspAcceptor()
        try:
            out = h.credssp.step(base64.b64decode(token))
        except (AuthFailed, binascii.Error):
            h.host.count("refused")
            h.credssp = None
            self._refuse(h)
        if not h.credssp.complete:
            answer = "CredSSP " + base64.b64encode(out or b"").decode()
            self._reply(h, 401, b"", extra={"WWW-Authenticate": answer})
        delegated = h.credssp.delegated()
        domain = delegated[0] if delegated else ""
        allowed = (
            delegated is not None
            and delegated[1].upper() == cfg.username.upper()
            and domain.upper() in ("", ".", cfg.name.upper())
            and hmac.compare_digest(delegated[2].encode(), cfg.password.encode())
        )
        if not allowed or cfg.faults.wrong_credentials:
            h.host.count("refused")
            h.credssp = None
            self._refuse(h)
        h.host.count("credssp")

    def _check_clock(self, h: _Handler, token: str) -> None:
        """A host with a skewed clock: its acceptor's verdict on that clock (see :mod:`.skewclock`)."""
        from kmsadmin.lab import skewclock

        cfg = h.host.config
        try:
            raw = base64.b64decode(token)
        except binascii.Error:
            return
        if raw.startswith(b"NTLMSSP\0") or cfg.kerberos_keytab is None:
            return
        bindings = self._channel_bindings.application_data if cfg.tls and self._channel_bindings else None
        verdict = skewclock.check(raw, cfg.kerberos_keytab, cfg.clock_skew, bindings)
        if verdict.complete:
            return
        log.debug("lab %s: ticket refused on the host's clock: %s", cfg.name, verdict.error)
        h.host.count("refused")
        h.acceptor = None
        if verdict.token:
            wrapped = reject_token(verdict.token, spnego_wrapped=is_spnego(raw))
            error = "Negotiate " + base64.b64encode(wrapped).decode()
            self._reply(h, 401, b"", extra={"WWW-Authenticate": error})
        self._refuse(h)

    def _new_acceptor(self, h: _Handler) -> NegotiateAcceptor:
        cfg = h.host.config
        if cfg.kerberos_keytab is None:
            return NegotiateAcceptor(refuse_ntlm=cfg.refuse_ntlm)
        bindings = self._channel_bindings if cfg.tls else None
        return NegotiateAcceptor(
            kerberos=KerberosService(Path(cfg.kerberos_keytab), cfg.kerberos_realm),
            refuse_ntlm=cfg.refuse_ntlm,
            channel_bindings=bindings,
        )

    def _refuse(self, h: _Handler) -> NoReturn:
        h.acceptor = None
        self._challenge(h)
        raise _Answered(401)

    def _reply(self, h: _Handler, status: int, body: bytes, **kwargs: Any) -> NoReturn:
        """Send a response that ends this request's processing early."""
        self._send(h, status, body, **kwargs)
        raise _Answered(status)

    def _challenge(self, h: _Handler) -> None:
        cfg = h.host.config
        schemes = ["Negotiate"]
        if cfg.tls or cfg.allow_unencrypted:
            schemes.append('Basic realm="WSMAN"')
        if cfg.tls and cfg.credssp:
            schemes.append("CredSSP")
        self._send(h, 401, b"", www_authenticate=schemes)

    def _send(
        self,
        h: _Handler,
        status: int,
        body: bytes,
        *,
        content_type: str = _SOAP_CONTENT_TYPE,
        extra: dict[str, str] | None = None,
        www_authenticate: list[str] | None = None,
        close: bool = False,
    ) -> None:
        h.send_response(status)
        for value in www_authenticate or []:
            h.send_header("WWW-Authenticate", value)
        for name, value in (extra or {}).items():
            h.send_header(name, value)
        if body:
            h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        if close:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        h.wfile.write(body)
        h.wfile.flush()

    # --- WS-Man dispatch ------------------------------------------------------------------------------

    def _process(self, host: _Host, plain: bytes, client_ip: str) -> tuple[int, str, str]:
        """(HTTP status, response XML, action) for one decrypted request body."""
        try:
            req = wsman.parse_request(plain)
        except wsman.MalformedRequest:
            return 400, "", ""
        machine = host.config.name
        try:
            if len(plain) > self.max_envelope_size:
                raise wsman.envelope_too_large_fault()
            if host.config.faults.access_denied:
                raise wsman.access_denied_fault()
            body = self._dispatch(host, req, client_ip)
        except wsman.WsmanFault as fault:
            return 500, wsman.fault_envelope(fault, req.message_id, machine), req.action
        prefixes = _RESPONSE_NS.get(req.action, ("s", "a", "x", "w", "rsp", "p"))
        return (
            200,
            wsman.envelope(req.action + "Response", req.message_id, body, prefixes=prefixes),
            req.action,
        )

    def _dispatch(self, host: _Host, req: wsman.WsmanRequest, client_ip: str) -> str:
        if req.action == wsman.ACTION_CREATE:
            shell: WinrsShell | PsrpShell
            if req.resource_uri.lower() == wsman.RESOURCE_CMD:
                shell = WinrsShell(host.ctx, req, client_ip)
            elif req.resource_uri.lower().startswith(wsman.RESOURCE_PSRP_PREFIX):
                shell = PsrpShell(host.ctx, req, client_ip)
            else:
                raise wsman.invalid_resource_fault()
            with host.lock:
                host.shells[shell.id] = shell
            return wsman.create_response_body(
                address=host.endpoint.url,
                resource_uri=req.resource_uri,
                shell_id=shell.id,
                shell_fields=shell.create_fields(),
            )
        with host.lock:
            found = host.shells.get((req.shell_id or "").upper())
        if found is None:
            raise wsman.unknown_shell_fault()
        if req.action == wsman.ACTION_DELETE:
            with host.lock:
                host.shells.pop(found.id, None)
            found.close()
            return ""
        if req.action == wsman.ACTION_COMMAND:
            return found.command(req)
        if req.action == wsman.ACTION_RECEIVE:
            return found.receive(req)
        if req.action == wsman.ACTION_SEND:
            return found.send(req)
        if req.action == wsman.ACTION_SIGNAL:
            return found.signal(req)
        raise wsman.action_not_supported_fault(req.action)


_T = TypeVar("_T")


def _need(value: _T | None, what: str) -> _T:
    if value is None:
        raise RuntimeError(f"the lab server is not started ({what} missing)")
    return value


def _shutdown(sock: socket.socket) -> None:
    """Close a connection now; an abort (SO_LINGER 0) sends RST so the client sees a reset."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def reset_connection(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
