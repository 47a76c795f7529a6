"""A real BIND 9 ``named`` on loopback for the DNS tests (pytest helper and fixture).

Each server runs in its own temporary directory: ``named -g -c <tmp>/named.conf`` listening on
127.0.0.1 and a free port (UDP and TCP), authoritative for ``lab.test`` and ``branch.lab.test``
(both accept dynamic updates signed with the TSIG key ``kmsadmin-test``) and ``open.test`` (accepts
unsigned updates from 127.0.0.1). The journal lives in the temporary directory. The fixture waits
until the server answers an SOA query and stops it (SIGTERM, then SIGKILL) afterwards.

BIND is a hard requirement: when ``named`` is not installed the tests FAIL with the install command
(``apt-get install -y bind9 bind9-utils``, which ``.ci/run`` runs); they are never skipped.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

NAMED_CANDIDATES = ("/usr/sbin/named", "/usr/local/sbin/named")
KEY_NAME = "kmsadmin-test"
ZONES = ("lab.test", "branch.lab.test", "open.test")
START_TIMEOUT = 20.0


@dataclass(frozen=True)
class DnsServer:
    """A running named: where it listens and the TSIG key file that may update its zones."""

    host: str
    port: int
    key_file: Path
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` as the CLI takes it."""
        return f"{self.host}:{self.port}"

    def log(self) -> str:
        """named's own log so far (for assertion messages)."""
        path = self.directory / "named.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def named_binary() -> str:
    """The named executable, or a test failure that says how to install it."""
    found = shutil.which("named") or next((p for p in NAMED_CANDIDATES if os.access(p, os.X_OK)), None)
    if not found:
        pytest.fail(
            "BIND 9 'named' is not installed, and the DNS tests need a real DNS server: "
            "install it with `apt-get install -y bind9 bind9-utils` (.ci/run does this)",
            pytrace=False,
        )
    return found


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port for named")


def _zone_file(zone: str) -> str:
    return (
        "$TTL 300\n"
        f"@ IN SOA ns1.{zone}. hostmaster.{zone}. ( 1 3600 600 86400 300 )\n"
        f"@ IN NS ns1.{zone}.\n"
        "ns1 IN A 127.0.0.1\n"
    )


def _config(directory: Path, port: int, secret: str) -> str:
    zones = []
    for zone in ZONES:
        update = "{ 127.0.0.1; }" if zone == "open.test" else f'{{ key "{KEY_NAME}"; }}'
        zones.append(
            f'zone "{zone}" {{\n  type primary;\n  file "{directory}/{zone}.db";\n'
            f'  journal "{directory}/{zone}.db.jnl";\n  allow-update {update};\n}};\n'
        )
    return (
        f'key "{KEY_NAME}" {{\n  algorithm hmac-sha256;\n  secret "{secret}";\n}};\n'
        "options {\n"
        f'  directory "{directory}";\n'
        f'  pid-file "{directory}/named.pid";\n'
        f'  session-keyfile "{directory}/session.key";\n'
        f'  managed-keys-directory "{directory}";\n'
        f"  listen-on port {port} {{ 127.0.0.1; }};\n"
        "  listen-on-v6 { none; };\n"
        "  recursion no;\n"
        "  dnssec-validation no;\n"
        "  allow-query { any; };\n"
        "  notify no;\n"
        "};\n"
        "controls { };\n"
        "logging {\n"
        f'  channel main {{ file "{directory}/named.log"; severity info; print-time yes; }};\n'
        "  category default { main; };\n"
        "  category update { main; };\n"
        "};\n" + "".join(zones)
    )


def _answers(host: str, port: int) -> bool:
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode

    try:
        response = dns.query.udp(dns.message.make_query("lab.test.", "SOA"), host, timeout=0.5, port=port)
    except (OSError, dns.exception.DNSException):
        return False
    return response.rcode() == dns.rcode.NOERROR and bool(response.answer)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def start_named(directory: Path) -> DnsServer:
    """Start named in ``directory`` and wait until it answers (fails the test if it does not)."""
    binary = named_binary()
    directory.mkdir(parents=True, exist_ok=True)
    secret = base64.b64encode(os.urandom(32)).decode("ascii")
    key_file = directory / "update.key"
    key_file.write_text(
        f'key "{KEY_NAME}" {{\n\talgorithm hmac-sha256;\n\tsecret "{secret}";\n}};\n', encoding="utf-8"
    )
    key_file.chmod(0o600)
    for zone in ZONES:
        (directory / f"{zone}.db").write_text(_zone_file(zone), encoding="utf-8")
    output = ""
    for attempt in range(4):
        if attempt and "permission denied" in output.lower() and binary == named_binary():
            # Debian/Ubuntu's bind9 ships an AppArmor profile for /usr/sbin/named that only lets it
            # read /etc/bind, /var/cache/bind and the like. Profiles attach by executable path, so a
            # copy of the binary in the test directory runs unconfined and can read its own files.
            binary = str(directory / "named")
            shutil.copy2(named_binary(), binary)
        port = free_port()
        conf = directory / "named.conf"
        conf.write_text(_config(directory, port, secret), encoding="utf-8")
        checkconf = shutil.which("named-checkconf")
        if checkconf:
            proc = subprocess.run([checkconf, str(conf)], capture_output=True, text=True, check=False)
            assert proc.returncode == 0, proc.stdout + proc.stderr
        cmd = [binary, "-g", "-c", str(conf), "-n", "1"]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]
        with (directory / "named.stderr").open("wb") as sink:
            process = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=directory)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if _answers("127.0.0.1", port):
                return DnsServer("127.0.0.1", port, key_file, directory, process)
            time.sleep(0.05)
        _stop(process)
        output = (directory / "named.stderr").read_text(encoding="utf-8", errors="replace")
        retry_copy = "permission denied" in output.lower() and binary == named_binary()
        if "address in use" not in output.lower() and not retry_copy:
            break
    pytest.fail(f"named did not start on 127.0.0.1 (see {directory}):\n{output[-3000:]}", pytrace=False)


@pytest.fixture
def dns_server(tmp_path: Path) -> Iterator[DnsServer]:
    """A fresh BIND 9 server for one test."""
    server = start_named(tmp_path / "named")
    try:
        yield server
    finally:
        _stop(server.process)
