"""A real MIT Kerberos KDC for the lab: realm ``LAB.TEST`` on loopback, one service principal and
keytab per lab host, user principals for the lab's accounts.

The lab runs Debian's ``krb5kdc`` (package ``krb5-kdc``) and ``kdb5_util``/``kadmin.local``
(``krb5-admin-server``) as child processes; nothing is installed system-wide and nothing listens
beyond 127.0.0.1. Everything lives under one directory:

* ``kdc.conf`` and the database (stash file included) for the KDC;
* ``krb5.conf`` for clients (``KRB5_CONFIG``): the realm's KDC on its loopback port, no DNS
  lookups, no reverse-DNS canonicalisation (the lab's host names are not in DNS);
* ``keytabs/<host>.keytab``: ``HTTP/<fqdn>`` and ``WSMAN/<fqdn>`` (the SPNs a Windows host running
  WinRM answers to) for the lab host's acceptor.

Ports are ephemeral: a free loopback port is picked, handed to the KDC, and the KDC is restarted
on another one in the rare case that port was taken in between.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REALM = "LAB.TEST"
DOMAIN = "lab.test"

#: Debian packages the lab's Kerberos needs (krb5kdc; kdb5_util and kadmin.local; kinit for users).
PACKAGES = ("krb5-kdc", "krb5-admin-server", "krb5-user")
#: the SPN services a WinRM host answers to: HTTP (the default of pywinrm, curl and browsers) and
#: WSMAN (registered by the WinRM service, pypsrp's default)
SERVICES = ("HTTP", "WSMAN")

_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class KdcUnavailable(RuntimeError):
    """The MIT Kerberos KDC programs are not installed (or the KDC did not start)."""


def _tool(name: str) -> str:
    found = shutil.which(name) or next(
        (str(Path(d) / name) for d in _SBIN if (Path(d) / name).is_file()), None
    )
    if found is None:
        raise KdcUnavailable(
            f"{name} not found: the lab's Kerberos realm needs MIT Kerberos "
            f"(apt install {' '.join(PACKAGES)})"
        )
    return found


def available() -> bool:
    """Whether ``krb5kdc``, ``kdb5_util`` and ``kadmin.local`` are installed."""
    try:
        for name in ("krb5kdc", "kdb5_util", "kadmin.local"):
            _tool(name)
    except KdcUnavailable:
        return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class HostPrincipal:
    """A lab host's Kerberos identity."""

    fqdn: str
    keytab: Path

    @property
    def spns(self) -> tuple[str, ...]:
        return tuple(f"{service}/{self.fqdn}@{REALM}" for service in SERVICES)


class LabKdc:
    """The lab's KDC. ``start()`` creates the realm (or reuses the one in ``directory``), ``stop()``
    ends the KDC process; the directory stays for ``kmsadmin lab down`` to remove."""

    def __init__(
        self,
        directory: Path | str,
        *,
        realm: str = REALM,
        domain: str = DOMAIN,
        clockskew: int | None = None,
    ) -> None:
        self.directory = Path(directory)
        #: seconds of clock difference (and of life after expiry) every party tolerates; None: MIT's
        #: default, 300. Tests shorten it so an expired ticket does not need 5 minutes of waiting.
        self.clockskew = clockskew
        self.realm = realm
        self.domain = domain
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        # A fixed master password is fine: the database is throwaway lab state, 0700, on loopback.
        self._master = "lab-kdc-master"

    # --- paths and environment -----------------------------------------------------------------------
    @property
    def krb5_conf(self) -> Path:
        """The client configuration: point ``KRB5_CONFIG`` at it."""
        return self.directory / "krb5.conf"

    @property
    def kdc_conf(self) -> Path:
        return self.directory / "kdc.conf"

    @property
    def keytab_dir(self) -> Path:
        return self.directory / "keytabs"

    def env(self) -> dict[str, str]:
        """Environment for the Kerberos tools and clients of this realm."""
        return {
            **os.environ,
            "KRB5_CONFIG": str(self.krb5_conf),
            "KRB5_KDC_PROFILE": str(self.kdc_conf),
        }

    def fqdn(self, host: str) -> str:
        """The DNS name a lab host's SPNs carry."""
        return host.lower() if "." in host else f"{host.lower()}.{self.domain}"

    # --- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> LabKdc:
        """Create the realm if needed and start the KDC on a free loopback port."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.keytab_dir.mkdir(exist_ok=True, mode=0o700)
        for attempt in range(5):
            self.port = _free_port()
            self._write_configs()
            if not (self.directory / "principal").exists():
                self._run([_tool("kdb5_util"), "create", "-s", "-r", self.realm, "-P", self._master])
            self._proc = subprocess.Popen(
                [_tool("krb5kdc"), "-n", "-r", self.realm, "-P", str(self.directory / "krb5kdc.pid")],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            if self._wait_listening():
                return self
            self._terminate()
            if attempt == 4:
                break
        raise KdcUnavailable(f"krb5kdc did not start (see {self.directory / 'kdc.log'})")

    def stop(self) -> None:
        """End the KDC process (its database stays in the directory)."""
        self._terminate()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> LabKdc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def _wait_listening(self) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False  # exited: most likely the port was taken
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return True
            time.sleep(0.05)
        return False

    def _write_configs(self) -> None:
        d = self.directory
        self.kdc_conf.write_text(
            "[kdcdefaults]\n"
            f"    kdc_listen = 127.0.0.1:{self.port}\n"
            f"    kdc_tcp_listen = 127.0.0.1:{self.port}\n"
            "[realms]\n"
            f"    {self.realm} = {{\n"
            f"        database_name = {d / 'principal'}\n"
            f"        key_stash_file = {d / 'stash'}\n"
            f"        acl_file = {d / 'kadm5.acl'}\n"
            "        max_life = 10h 0m 0s\n"
            "        max_renewable_life = 1d 0h 0m 0s\n"
            "        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n"
            "    }\n"
            "[logging]\n"
            f"    kdc = FILE:{d / 'kdc.log'}\n",
            encoding="utf-8",
        )
        self.krb5_conf.write_text(
            "[libdefaults]\n"
            f"    default_realm = {self.realm}\n"
            "    dns_lookup_kdc = false\n"
            "    dns_lookup_realm = false\n"
            "    dns_canonicalize_hostname = false\n"
            "    rdns = false\n"
            "    forwardable = true\n"
            + (f"    clockskew = {self.clockskew}\n" if self.clockskew is not None else "")
            + "    udp_preference_limit = 1\n"
            f"    default_ccache_name = FILE:{d / 'ccache'}\n"
            "[realms]\n"
            f"    {self.realm} = {{\n"
            f"        kdc = 127.0.0.1:{self.port}\n"
            "    }\n"
            "[domain_realm]\n"
            f"    .{self.domain} = {self.realm}\n"
            f"    {self.domain} = {self.realm}\n",
            encoding="utf-8",
        )

    def _run(self, argv: list[str], stdin: str | None = None) -> str:
        proc = subprocess.run(
            argv,
            input=stdin,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise KdcUnavailable(f"{Path(argv[0]).name} failed: {(proc.stderr or proc.stdout).strip()[:500]}")
        return proc.stdout

    def _kadmin(self, queries: list[str]) -> None:
        # One kadmin.local process for a batch of queries: it opens the database once.
        self._run([_tool("kadmin.local"), "-r", self.realm], stdin="\n".join(queries) + "\nquit\n")

    # --- principals ----------------------------------------------------------------------------------
    def add_users(self, accounts: dict[str, str]) -> None:
        """User principals ``name@REALM`` with these passwords."""
        queries = []
        for name, password in accounts.items():
            if any(c in name + password for c in '"\r\n'):
                raise ValueError(
                    "lab Kerberos user names and passwords must not contain quotes or line breaks"
                )
            queries.append(f'addprinc -pw "{password}" {name}')
        self._kadmin(queries)

    def add_hosts(self, hosts: list[str] | dict[str, str]) -> dict[str, HostPrincipal]:
        """``HTTP/<fqdn>`` and ``WSMAN/<fqdn>`` for each host, each host with its own keytab.

        ``hosts``: names (the FQDN is the name in the realm's domain) or {name: FQDN}."""
        made: dict[str, HostPrincipal] = {}
        queries: list[str] = []
        names = hosts if isinstance(hosts, dict) else {host: self.fqdn(host) for host in hosts}
        for host, name in names.items():
            fqdn = name.lower()
            keytab = self.keytab_dir / f"{host.lower()}.keytab"
            keytab.unlink(missing_ok=True)
            principals = [f"{service}/{fqdn}" for service in SERVICES]
            queries += [f"addprinc -randkey {p}" for p in principals]
            queries.append(f"ktadd -k {keytab} {' '.join(principals)}")
            made[host] = HostPrincipal(fqdn, keytab)
        self._kadmin(queries)
        for principal in made.values():
            if not principal.keytab.is_file():
                raise KdcUnavailable(f"kadmin.local did not write {principal.keytab}")
            principal.keytab.chmod(0o600)
        return made

    def kinit(self, principal: str, password: str, ccache: Path, *, lifetime: str | None = None) -> None:
        """Get a ticket into ``ccache`` as a user would with ``kinit`` (tests and the lab's own checks)."""
        argv = [_tool("kinit"), "-c", f"FILE:{ccache}"]
        if lifetime:
            argv += ["-l", lifetime]
        argv.append(principal)
        self._run(argv, stdin=password + "\n")
