"""Benchmark: ``kmsadmin rollout`` against the same rollout exported to Ansible and run by ansible-playbook.

    python benchmarks/rollout.py --hosts 200 --latency-ms 25 [--forks-ansible 50] [--forks-kmsadmin 50]

Starts two equal, fresh labs (``kmsadmin lab up --detach``: N clients, one KMS host, HTTPS + NTLM,
the given latency added to every HTTP request). On both, the KMS host is first set up the same way,
with ``kmsadmin rollout playbooks/kms-hosts.yml`` (not measured). Then the measured part, the
clients playbook ``playbooks/clients.yml``:

* lab A: ``kmsadmin rollout playbooks/clients.yml --forks K``;
* lab B: ``kmsadmin export ansible playbooks/clients.yml --gather`` (timed separately, not part of the
  comparison), then ``ansible-playbook site.yml --forks F`` in the exported project.

For each measured command: wall time, hosts per second, client CPU (user + system of the process and
every descendant it waited for, from ``os.wait4``'s rusage, the same figure as a
``getrusage(RUSAGE_CHILDREN)`` delta) per host, peak RSS of the largest single process (``ru_maxrss``),
and the peak summed RSS of the whole process tree (sampled from /proc every 0.2 s, Linux only),
then the ratios Ansible / kmsadmin. The labs run on the same machine and compete for its cores.
Both labs are stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass
class Measure:
    """One measured command."""

    label: str
    rc: int
    wall: float
    cpu: float
    maxrss_mb: float
    tree_rss_mb: float
    hosts: int

    @property
    def hosts_per_s(self) -> float:
        return self.hosts / self.wall if self.wall else 0.0

    @property
    def cpu_ms_per_host(self) -> float:
        return self.cpu * 1000 / self.hosts if self.hosts else 0.0


def _tree_rss(root: int) -> int:
    """Summed RSS (bytes) of ``root`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            ppid = int(fields[1])
            rss[int(entry)] = int(fields[21]) * page
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measure(
    label: str,
    cmd: list[str],
    hosts: int,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> Measure:
    """Run ``cmd`` and measure it (its own rusage via wait4, its tree's RSS by sampling)."""
    out = log.open("wb") if log else subprocess.DEVNULL
    try:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.2):
                peak = max(peak, _tree_rss(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    return Measure(
        label=label,
        rc=proc.returncode,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        maxrss_mb=usage.ru_maxrss / 1024,
        tree_rss_mb=peak / 2**20,
        hosts=hosts,
    )


def kmsadmin(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmsadmin", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


def ansible_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_HOME=str(work / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(work / "ansible-tmp"),
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DEPRECATION_WARNINGS="False",
    )
    return env


def start_labs(work: Path, hosts: int, latency: int) -> list[Path]:
    dirs = [work / "lab-kmsadmin", work / "lab-ansible"]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kmsadmin",
                "lab",
                "up",
                "--state-dir",
                str(d),
                "--hosts",
                str(hosts),
                "--kms-hosts",
                "1",
                "--latency-ms",
                str(latency),
                # always fresh: a lab left in --work by an earlier run would make every host a no-op
                "--reset",
                "--detach",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for d in dirs
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"lab up failed: {err.strip()}")
    return dirs


def machine() -> dict[str, str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    return {
        "cpus": str(os.cpu_count()),
        "model": model,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=200, help="KMS clients per lab")
    parser.add_argument("--latency-ms", type=int, default=25, help="latency added to every HTTP request")
    parser.add_argument("--forks-ansible", type=int, default=50)
    parser.add_argument("--forks-kmsadmin", type=int, default=50)
    parser.add_argument(
        "--work", type=Path, help="keep the labs, logs and project here (default: a temp dir)"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="kmsadmin-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    labs: list[Path] = []
    try:
        print(
            f"starting two labs of {args.hosts} clients + 1 KMS host, {args.latency_ms} ms latency ...",
            flush=True,
        )
        labs = start_labs(work, args.hosts, args.latency_ms)
        inventories = [d / "inventory.yml" for d in labs]
        for inv in inventories:  # the same KMS host set-up on both labs, not measured
            setup = kmsadmin("rollout", "playbooks/kms-hosts.yml", "-i", str(inv), "--no-progress")
            if setup.returncode != 0:
                raise SystemExit(f"KMS host set-up failed: {setup.stdout[-2000:]}{setup.stderr[-2000:]}")

        # A regular `pip install` byte-compiles what it installs (ansible-core and every library here
        # have their .pyc files); an editable install of kmsadmin does not, and PYTHONDONTWRITEBYTECODE
        # may keep the first run from writing them, so kmsadmin would recompile itself on each start.
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "kmsadmin")], check=True)

        project = work / "project"
        exported = measure(
            "kmsadmin export ansible --gather",
            [
                sys.executable,
                "-m",
                "kmsadmin",
                "export",
                "ansible",
                "playbooks/clients.yml",
                "-i",
                str(inventories[1]),
                "-o",
                str(project),
                "--gather",
                "--forks",
                str(args.forks_kmsadmin),
            ],
            args.hosts,
            cwd=REPO,
            log=work / "export.log",
        )
        if exported.rc != 0:
            raise SystemExit(f"export failed: {(work / 'export.log').read_text()[-2000:]}")

        print("measuring kmsadmin rollout ...", flush=True)
        ours = measure(
            f"kmsadmin rollout (forks {args.forks_kmsadmin})",
            [
                sys.executable,
                "-m",
                "kmsadmin",
                "rollout",
                "playbooks/clients.yml",
                "-i",
                str(inventories[0]),
                "--forks",
                str(args.forks_kmsadmin),
                "--no-progress",
                "--report-json",
                str(work / "kmsadmin.json"),
            ],
            args.hosts,
            cwd=REPO,
            log=work / "kmsadmin.log",
        )
        print("measuring ansible-playbook ...", flush=True)
        theirs = measure(
            f"ansible-playbook (forks {args.forks_ansible})",
            [
                str(BIN / "ansible-playbook"),
                "-i",
                "inventory.yml",
                "site.yml",
                "--forks",
                str(args.forks_ansible),
            ],
            args.hosts,
            cwd=project,
            env=ansible_env(work),
            log=work / "ansible.log",
        )
    finally:
        for lab in labs:
            kmsadmin("lab", "down", "--state-dir", str(lab), timeout=120)

    rows = [ours, theirs]
    print()
    print(f"machine: {machine()}")
    print(
        f"hosts: {args.hosts} clients, latency {args.latency_ms} ms/request, playbook playbooks/clients.yml"
    )
    header = f"{'':34} {'rc':>3} {'wall s':>8} {'hosts/s':>8} {'CPU s':>8} {'CPU ms/host':>12} {'maxRSS MB':>10} {'tree RSS MB':>12}"
    print(header)
    for m in rows:
        print(
            f"{m.label:34} {m.rc:>3} {m.wall:8.1f} {m.hosts_per_s:8.2f} {m.cpu:8.1f} {m.cpu_ms_per_host:12.1f}"
            f" {m.maxrss_mb:10.0f} {m.tree_rss_mb:12.0f}"
        )
    ratio = {
        "wall": theirs.wall / ours.wall,
        "cpu_per_host": theirs.cpu_ms_per_host / ours.cpu_ms_per_host,
        "max_rss": theirs.maxrss_mb / ours.maxrss_mb,
        "tree_rss": theirs.tree_rss_mb / ours.tree_rss_mb if ours.tree_rss_mb else 0.0,
    }
    print(
        f"{'ratio ansible / kmsadmin':34} {'':>3} {ratio['wall']:8.2f} {1 / ratio['wall']:8.2f} {'':>8}"
        f" {ratio['cpu_per_host']:12.2f} {ratio['max_rss']:10.2f} {ratio['tree_rss']:12.2f}"
    )
    print(f"(export with --gather, not compared: {exported.wall:.1f} s wall, {exported.cpu:.1f} s CPU)")
    print(f"logs: {work}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "hosts": args.hosts,
                    "latency_ms": args.latency_ms,
                    "results": [
                        asdict(m) | {"hosts_per_s": m.hosts_per_s, "cpu_ms_per_host": m.cpu_ms_per_host}
                        for m in rows
                    ],
                    "export": asdict(exported),
                    "ratio": ratio,
                },
                indent=2,
            )
        )
    if args.work is None and all(m.rc in (0, 1, 2) for m in rows):
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
