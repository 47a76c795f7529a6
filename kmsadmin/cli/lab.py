"""``kmsadmin lab``: start, stop and inspect a simulated Windows fleet that speaks real WinRM on loopback.

The typer sub-app :data:`lab_app` is mounted by the main CLI as ``kmsadmin lab``. Nothing of the lab
(server, engine, model) is imported while typer builds the command tree: each command imports what it
needs when it runs.

``lab up`` runs in the foreground until Ctrl-C / SIGTERM, or with ``--detach`` starts itself again as
a background process (``python -m kmsadmin.cli.lab up ... --foreground-child``, in a new session,
output to ``<state-dir>/lab.log``), waits until it serves, prints the inventory path and exits 0.
While serving, ``<state-dir>/runtime.json`` holds the pid, scheme and per-host ports; ``lab down``
sends SIGTERM to that pid and waits for it to exit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kmsadmin.cli.options import HelpGroup, port_range

if TYPE_CHECKING:
    from kmsadmin.lab.fleet import Fleet

lab_app = typer.Typer(
    help="A simulated Windows fleet (KMS hosts and clients) speaking real WinRM on 127.0.0.1.",
    no_args_is_help=True,
    cls=HelpGroup,
)

RUNTIME = "runtime.json"
LOG = "lab.log"
START_TIMEOUT = 90.0
#: more start-up time per host: creating, loading and listening for 10,000 hosts takes minutes on a busy machine
START_TIMEOUT_PER_HOST = 0.05
STOP_TIMEOUT = 20.0

StateDir = Annotated[Path, typer.Option("--state-dir", help="directory holding the lab's state")]


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"kmsadmin lab: {message}", err=True)
    return typer.Exit(code)


def _read_runtime(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / RUNTIME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive(pid: int) -> bool:
    """The process exists, is not a zombie, and is a kmsadmin lab (pids can be reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            status = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if status and status[0] == "Z":
                return False
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            return False
        return b"kmsadmin" in cmdline
    return True


def _running_pid(state_dir: Path) -> int | None:
    runtime = _read_runtime(state_dir)
    if runtime is None:
        return None
    pid = runtime.get("pid")
    return pid if isinstance(pid, int) and _alive(pid) else None


@lab_app.command("up")
def up(
    *,
    state_dir: StateDir,
    hosts: Annotated[int | None, typer.Option("--hosts", help="number of KMS clients (default 10)")] = None,
    kms_hosts: Annotated[
        int | None, typer.Option("--kms-hosts", help="number of KMS hosts (default 1)")
    ] = None,
    os_mix: Annotated[
        str | None,
        typer.Option(
            "--os-mix", help='clients\' OSes, e.g. "win11-enterprise=20,win10-pro=5,server2019-standard=5"'
        ),
    ] = None,
    latency_ms: Annotated[int, typer.Option("--latency-ms", help="added latency per HTTP request")] = 0,
    faults: Annotated[
        str | None,
        typer.Option(
            "--faults", help='per-host faults, e.g. "client003=wrong-password;client004=timeouts:2"'
        ),
    ] = None,
    inventory_out: Annotated[
        Path | None, typer.Option("--inventory-out", help="where to write the Ansible inventory")
    ] = None,
    detach: Annotated[bool, typer.Option("--detach", help="run in the background and return")] = False,
    tls: Annotated[bool, typer.Option("--tls/--no-tls", help="HTTPS listeners with the lab CA")] = True,
    base_port: Annotated[
        int,
        typer.Option("--base-port", help="first listener port (0 = any free ports)", callback=port_range(0)),
    ] = 0,
    reset: Annotated[
        bool, typer.Option("--reset", help="discard an existing lab in the state directory")
    ] = False,
    foreground_child: Annotated[bool, typer.Option("--foreground-child", hidden=True)] = False,
    dns_server: Annotated[
        str | None, typer.Option("--dns-server", help="DNS server KMS hosts publish to: IP[:PORT] (RFC 2136)")
    ] = None,
    dns_zone: Annotated[
        str | None, typer.Option("--dns-zone", help="zone they publish in (default: lab.test)")
    ] = None,
    tsig_key_file: Annotated[
        Path | None, typer.Option("--tsig-key-file", help="BIND key file that may update the zone")
    ] = None,
    mak_limit: Annotated[
        int | None, typer.Option("--mak-limit", help="activations each lab MAK allows (default 5)")
    ] = None,
    forest: Annotated[
        bool, typer.Option("--forest", help="the lab domain is an AD forest, every host a member (ADBA)")
    ] = False,
    kerberos: Annotated[
        bool,
        typer.Option(
            "--kerberos",
            help="a real MIT KDC for the lab's realm (LAB.TEST); hosts accept Kerberos with their own keytabs",
        ),
    ] = False,
    refuse_ntlm: Annotated[
        bool, typer.Option("--refuse-ntlm", help="hosts refuse NTLM, as in a domain that restricts it")
    ] = False,
) -> None:
    """Create (or load) the lab in STATE_DIR and serve it."""
    state_dir = state_dir.resolve()
    if base_port:
        _check_port_span(base_port, state_dir, hosts=hosts, kms_hosts=kms_hosts, reset=reset)
    inventory = (inventory_out or state_dir / "inventory.yml").resolve()
    running = _running_pid(state_dir)
    if running is not None:
        raise _fail(
            f"a lab is already running from {state_dir} (pid {running}); `kmsadmin lab down` first", 1
        )
    if detach and not foreground_child:
        _detach(state_dir, inventory, sys.argv, START_TIMEOUT + START_TIMEOUT_PER_HOST * (hosts or 0))
        return
    _serve(
        state_dir,
        inventory,
        hosts=hosts,
        kms_hosts=kms_hosts,
        os_mix=os_mix,
        faults=faults,
        latency_ms=latency_ms,
        tls=tls,
        base_port=base_port,
        reset=reset,
        quiet=foreground_child,
        dns=(dns_server, dns_zone, tsig_key_file),
        mak_limit=mak_limit,
        forest=forest,
        kerberos=kerberos,
        refuse_ntlm=refuse_ntlm,
    )


def _check_port_span(
    base_port: int, state_dir: Path, *, hosts: int | None, kms_hosts: int | None, reset: bool
) -> None:
    """``--base-port P`` gives host number i (from 0) the port P + i: all of them must be ports (up to
    65535). Refused (usage error, exit 2) before anything is created or started, naming the highest
    base port that fits. A lab already in STATE_DIR (not ``--reset``) keeps its own number of hosts."""
    count = (10 if hosts is None else hosts) + (1 if kms_hosts is None else kms_hosts)
    source = (
        f"--hosts {10 if hosts is None else hosts} and --kms-hosts {1 if kms_hosts is None else kms_hosts}"
    )
    if not reset:
        try:
            existing = json.loads((state_dir / "fleet.json").read_text(encoding="utf-8"))["hosts"]
        except (OSError, ValueError, TypeError, KeyError):
            existing = None  # no lab there yet (or an unreadable one: loading it says why)
        if isinstance(existing, dict) and existing:
            count, source = len(existing), f"the lab in {state_dir}"
    last = base_port + count - 1
    if last <= 65535:
        return
    highest = 65536 - count
    fits = (
        f"the highest --base-port for {count} hosts is {highest}"
        if highest >= 1
        else f"no --base-port fits {count} hosts"
    )
    raise _fail(
        f"--base-port {base_port} with {count} hosts ({source}) needs ports {base_port}-{last}, past 65535; "
        f"{fits} (or --base-port 0: any free ports)",
        2,
    )


def _child_args(argv: list[str]) -> list[str]:
    """The ``lab up`` arguments of this process, without --detach."""
    args = list(argv[1:])
    if "up" in args:
        args = args[args.index("up") + 1 :]
    return [a for a in args if a != "--detach"]


def _detach(state_dir: Path, inventory: Path, argv: list[str], timeout: float = START_TIMEOUT) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    cleaned: list[str] = []
    skip = False
    for arg in _child_args(argv):
        if skip:
            skip = False
            continue
        if arg in ("--state-dir", "--inventory-out"):
            skip = True
            continue
        if arg.startswith(("--state-dir=", "--inventory-out=")):
            continue
        cleaned.append(arg)
    command = [
        sys.executable,
        "-m",
        "kmsadmin.cli.lab",
        "up",
        *cleaned,
        "--state-dir",
        str(state_dir),
        "--inventory-out",
        str(inventory),
        "--foreground-child",
    ]
    (state_dir / RUNTIME).unlink(missing_ok=True)
    with (state_dir / LOG).open("ab") as log:
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            tail = (state_dir / LOG).read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            typer.echo("\n".join(tail), err=True)
            raise _fail(f"the lab exited during start-up (exit {code}); see {state_dir / LOG}", code or 1)
        runtime = _read_runtime(state_dir)
        if runtime is not None and runtime.get("pid") == child.pid and runtime.get("serving"):
            typer.echo(str(inventory))
            return
        time.sleep(0.1)
    child.terminate()
    try:
        child.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        child.kill()
    raise _fail(f"the lab did not start within {timeout:.0f} s; see {state_dir / LOG}", 1)


def _open_fleet(
    state_dir: Path,
    *,
    hosts: int | None,
    kms_hosts: int | None,
    os_mix: str | None,
    faults: str | None,
    reset: bool,
    mak_limit: int | None = None,
    forest: bool = False,
) -> Fleet:
    from kmsadmin.lab import kms
    from kmsadmin.lab.fleet import Fleet

    if mak_limit is not None and mak_limit < 0:
        raise _fail("--mak-limit must be 0 or more", 2)
    if reset:
        _reset(state_dir)
    if Fleet.exists(state_dir):
        fleet = Fleet.load(state_dir)
        spec = fleet.meta.spec
        asked = {"hosts": hosts, "kms_hosts": kms_hosts, "os_mix": os_mix}
        differing = [k for k, v in asked.items() if v is not None and str(v) != spec.get(k, "")]
        if faults is not None and faults != fleet.meta.faults:
            differing.append("faults")
        if differing:
            raise _fail(
                f"{state_dir} holds a lab created with other settings ({', '.join(differing)}); "
                "use --reset or another --state-dir",
                2,
            )
        return fleet
    return Fleet.create(
        state_dir,
        hosts=10 if hosts is None else hosts,
        kms_hosts=1 if kms_hosts is None else kms_hosts,
        os_mix=os_mix,
        faults=faults or "",
        mak_limit=kms.DEFAULT_MAK_LIMIT if mak_limit is None else mak_limit,
        forest=forest,
    )


def _reset(state_dir: Path) -> None:
    """Remove the files a lab keeps in its state directory (only those)."""
    for name in ("fleet.json", "host-keys.json", "mak-keys.json", "credentials.json", RUNTIME):
        (state_dir / name).unlink(missing_ok=True)
    for sub in ("hosts", "keys"):
        folder = state_dir / sub
        if folder.is_dir():
            for item in folder.iterdir():
                if item.is_file():
                    item.unlink()


def _serve(
    state_dir: Path,
    inventory: Path,
    *,
    hosts: int | None,
    kms_hosts: int | None,
    os_mix: str | None,
    faults: str | None,
    latency_ms: int,
    tls: bool,
    base_port: int,
    reset: bool,
    quiet: bool,
    dns: tuple[str | None, str | None, Path | None] = (None, None, None),
    mak_limit: int | None = None,
    forest: bool = False,
    kerberos: bool = False,
    refuse_ntlm: bool = False,
) -> None:
    from kmsadmin.errors import KmsAdminError
    from kmsadmin.lab.api import EndpointConfig, HostFaults
    from kmsadmin.lab.engine import LabEngine
    from kmsadmin.lab.inventory import write_inventory
    from kmsadmin.lab.model import write_json_atomic
    from kmsadmin.lab.server import LabServer

    try:
        fleet = _open_fleet(
            state_dir,
            hosts=hosts,
            kms_hosts=kms_hosts,
            os_mix=os_mix,
            faults=faults,
            reset=reset,
            mak_limit=mak_limit,
            forest=forest,
        )
        # lab DNS publishing and discovery on a real DNS server (kmsadmin.lab.dnspublish)
        from kmsadmin.lab import dnspublish

        fleet.dns = dnspublish.publisher_for_options(state_dir, dns[0], dns[1] or fleet.meta.domain, dns[2])
    except KmsAdminError as exc:
        raise _fail(str(exc), exc.exit_code) from None
    if refuse_ntlm and not kerberos:
        raise _fail("--refuse-ntlm needs --kerberos: with NTLM refused only Kerberos can sign in", 2)
    kdc, keytabs = _start_kdc(state_dir, fleet) if kerberos else (None, {})
    specs = fleet.fault_specs()
    configs: list[EndpointConfig] = []
    for index, name in enumerate(fleet.names()):
        spec = specs.get(name)
        host_faults = HostFaults(latency_ms=latency_ms)
        if spec is not None:
            host_faults = HostFaults(
                wrong_credentials=spec.wrong_password,
                access_denied=spec.access_denied,
                operation_timeouts=spec.timeouts,
                reset_mid_receive=spec.reset,
                http_503=spec.http_503,
                hang=spec.hang,
                latency_ms=spec.latency_ms if spec.latency_ms is not None else latency_ms,
            )
        configs.append(
            EndpointConfig(
                name=name,
                port=base_port + index if base_port else 0,
                username=fleet.username,
                password=fleet.password,
                tls=tls,
                faults=host_faults,
                kerberos_keytab=keytabs.get(name),
                kerberos_realm=kdc.realm if kdc is not None else "LAB.TEST",
                refuse_ntlm=refuse_ntlm,
            )
        )
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server = LabServer(LabEngine(fleet), configs, state_dir=state_dir / "tls")
    try:
        server.start()
    except OSError as exc:
        if kdc is not None:
            kdc.stop()
        raise _fail(f"cannot open the lab's listeners: {exc}", 1) from None
    try:
        ports = {name: server.port(name) for name in fleet.names()}
        ca_cert = server.ca_path if tls else None
        write_inventory(
            inventory, fleet, ports, tls=tls, ca_cert=ca_cert, kerberos_realm=kdc.realm if kdc else None
        )
        write_json_atomic(
            state_dir / RUNTIME,
            {
                "pid": os.getpid(),
                "serving": True,
                "scheme": "https" if tls else "http",
                "ports": ports,
                "inventory": str(inventory),
                "ca_cert": str(ca_cert) if ca_cert else None,
                "krb5_config": str(kdc.krb5_conf) if kdc else None,
                "kdc_port": kdc.port if kdc else None,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
        if not quiet:
            kms_count = len(fleet.names("kms_host"))
            typer.echo(
                f"lab serving {len(ports)} hosts ({kms_count} KMS hosts) on 127.0.0.1 "
                f"({'https' if tls else 'http'}); inventory: {inventory}"
            )
            if kdc is not None:
                typer.echo(
                    f"Kerberos realm {kdc.realm}: KDC on 127.0.0.1:{kdc.port}"
                    f"{', NTLM refused' if refuse_ntlm else ''}; export KRB5_CONFIG={kdc.krb5_conf}"
                )
            typer.echo("Ctrl-C to stop")
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        if kdc is not None:
            kdc.stop()
        runtime = _read_runtime(state_dir)
        if runtime is not None and runtime.get("pid") == os.getpid():
            (state_dir / RUNTIME).unlink(missing_ok=True)


def _start_kdc(state_dir: Path, fleet: Any) -> tuple[Any, dict[str, str]]:
    """The lab realm's KDC (its database kept in STATE_DIR/kerberos), the lab administrator's
    principal, and each host's keytab."""
    from kmsadmin.lab.kdc import KdcUnavailable, LabKdc

    try:
        import gssapi  # noqa: F401  (the hosts' acceptors)
    except ImportError:
        raise _fail(
            "lab up --kerberos needs python-gssapi: install kmsadmin[kerberos] (pip install 'kmsadmin[kerberos]')",
            4,
        ) from None
    domain = str(fleet.meta.domain)
    kdc = LabKdc(state_dir / "kerberos", realm=domain.upper(), domain=domain)
    try:
        kdc.start()
        # The acceptors in this process and the tools read the realm's configuration.
        os.environ["KRB5_CONFIG"] = str(kdc.krb5_conf)
        kdc.add_users({fleet.username: fleet.password})
        principals = kdc.add_hosts({name: fleet.hosts[name].fqdn for name in fleet.names()})
    except KdcUnavailable as exc:
        kdc.stop()
        raise _fail(str(exc), 4) from None
    return kdc, {name: str(principal.keytab) for name, principal in principals.items()}


@lab_app.command("down")
def down(state_dir: StateDir) -> None:
    """Stop a lab started with 'lab up --detach' (SIGTERM, then wait)."""
    state_dir = state_dir.resolve()
    pid = _running_pid(state_dir)
    if pid is None:
        (state_dir / RUNTIME).unlink(missing_ok=True)
        typer.echo(f"no lab running from {state_dir}")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not _alive(pid):
            typer.echo(f"lab stopped (pid {pid})")
            return
        time.sleep(0.1)
    raise _fail(f"the lab (pid {pid}) did not stop within {STOP_TIMEOUT:.0f} s after SIGTERM", 1)


@lab_app.command("status")
def status(
    state_dir: StateDir,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Is the lab running; per host: OS, edition, licence status, KMS count."""
    from kmsadmin.errors import KmsAdminError
    from kmsadmin.lab.fleet import Fleet

    state_dir = state_dir.resolve()
    pid = _running_pid(state_dir)
    runtime = _read_runtime(state_dir) if pid is not None else None
    ports: dict[str, Any] = dict(runtime.get("ports", {})) if runtime else {}
    report: dict[str, Any] = {
        "state_dir": str(state_dir),
        "running": pid is not None,
        "pid": pid,
        "scheme": runtime.get("scheme") if runtime else None,
        "inventory": runtime.get("inventory") if runtime else None,
        "hosts": [],
    }
    if Fleet.exists(state_dir):
        try:
            fleet = Fleet.load(state_dir)
        except KmsAdminError as exc:
            raise _fail(str(exc), exc.exit_code) from None
        names = {
            0: "Unlicensed",
            1: "Licensed",
            2: "OOBGrace",
            3: "OOTGrace",
            4: "NonGenuineGrace",
            5: "Notification",
            6: "ExtendedGrace",
        }
        for row in fleet.summary():
            row["license_status_name"] = names.get(row["license_status"], "?")
            row["port"] = ports.get(row["name"])
            report["hosts"].append(row)
        report["maks"] = fleet.maks.summary()
        report["forest"] = fleet.meta.forest
        report["activation_objects"] = [
            {"name": ao.name, "dn": ao.dn, "host_key_group": ao.host_key_group, "partial_key": ao.partial_key}
            for ao in fleet.meta.activation_objects
        ]
    if json_out:
        typer.echo(json.dumps(report, indent=2))
        return
    state = f"running (pid {pid}, {report['scheme']})" if pid is not None else "not running"
    typer.echo(f"lab in {state_dir}: {state}; {len(report['hosts'])} hosts")
    for row in report["hosts"]:
        count = "" if row["kms_count"] is None else f"  count={row['kms_count']}"
        port = f":{row['port']}" if row["port"] else ""
        line = f"  {row['name']:<10} {row['role']:<8} {row['os']:<45} {row['license_status_name']:<12}"
        typer.echo(line + count + port)
    for mak in report.get("maks", []):
        state = "blocked" if mak["blocked"] else f"{mak['remaining']} of {mak['limit']} activations left"
        typer.echo(f"  MAK {mak['name']} (ending {mak['partial_key']}): {state}")


@lab_app.command("confirmation-id")
def confirmation_id(
    iid: Annotated[str, typer.Argument(help="the 63-digit Installation ID (phone-iid)")],
) -> None:
    """The Confirmation ID the lab accepts for an Installation ID (lab rule, see kmsadmin.lab.kms)."""
    from kmsadmin.lab.kms import confirmation_id_for, format_confirmation_id

    digits = "".join(ch for ch in iid if ch.isdigit())
    if len(digits) != 63 or len(digits) != len(iid.replace("-", "").replace(" ", "")):
        raise _fail("an Installation ID is 63 digits", 2)
    typer.echo(format_confirmation_id(confirmation_id_for(digits)))


if __name__ == "__main__":
    lab_app()
