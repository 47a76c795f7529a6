"""Benchmark: ``kmsadmin rollout`` against the same rollout under ansible-playbook, three ways.

    python benchmarks/rollout.py --hosts 200 --latency-ms 25 [--forks-ansible 50] [--forks-kmsadmin 50]
    python benchmarks/rollout.py --hosts 10000 --variants kmsadmin --baseline results-1000.json

Each variant gets its own equal, fresh lab (``kmsadmin lab up --detach``: N clients, one KMS host,
HTTPS + NTLM, the given latency added to every HTTP request), all started in the same run. On every
lab the KMS host is first set up the same way, with ``kmsadmin rollout playbooks/kms-hosts.yml`` (not
measured). Then the measured part, the clients playbook ``playbooks/clients.yml`` or its equivalent:

* ``kmsadmin``: ``kmsadmin rollout playbooks/clients.yml --forks K``;
* ``export``: ``kmsadmin export ansible playbooks/clients.yml --gather`` (timed separately, not part
  of the comparison), then ``ansible-playbook site.yml --forks F`` in the exported project: four
  ``raw`` tasks per host (install the GVLK, pin the KMS host, activate, read back);
* ``best``: a hand-written best-practice playbook (:data:`BEST_PRACTICE_PLAY`): the same ``serial``
  and ``max_fail_percentage`` as ``playbooks/clients.yml``, one ``raw`` task per host whose one
  PowerShell script does the whole conversion (the four step scripts of the export, run in order in
  one pipeline, stopping at the first failed step: :func:`kmsadmin.transports.base.batch_script`);
* ``floor``: what no Ansible rollout can go below (:data:`FLOOR_PLAY`): one ``raw`` task per host
  running one read-only script (the read-back ``facts`` script), no ``serial`` batches.

The ``best`` and ``floor`` projects are built from an export of their own lab (not measured).

For each measured command: wall time, hosts per second, client CPU (user + system of the process and
every descendant it waited for, from ``os.wait4``'s rusage, the same figure as a
``getrusage(RUSAGE_CHILDREN)`` delta) per host, peak RSS of the largest single process (``ru_maxrss``),
and the peak summed RSS of the whole process tree (sampled from /proc every 0.2 s, Linux only), how
many clients the lab reports activated afterwards, then the ratios Ansible / kmsadmin for each
Ansible variant. With ``--baseline`` (the ``--json`` of an earlier run), the per-host cost of
kmsadmin is compared with that run's. The labs run on the same machine and compete for its cores.
All labs are stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

from kmsadmin.transports.base import batch_script  # noqa: E402

VARIANTS = ("kmsadmin", "best", "floor", "export")
LABELS = {
    "kmsadmin": "kmsadmin rollout",
    "export": "ansible export, 4 tasks",
    "best": "ansible best practice",
    "floor": "ansible floor",
}
PLAY = "KMS clients"

BEST_PRACTICE_PLAY = """\
# Best-practice Ansible for playbooks/clients.yml: one task per host. Its one PowerShell script
# installs the edition's GVLK, pins the KMS host, activates and reads back, stopping at the first
# failed step. A client whose new KMS host has not counted enough machines yet (0xC004F038) is
# configured and activates by itself later: not a failure (as in kmsadmin and the export).
- name: KMS clients
  hosts: clients:!kms_hosts
  serial: [1, "10%", "25%"]
  max_fail_percentage: 10
  gather_facts: false
  tasks:
    - name: convert to a KMS client in one script
      ansible.builtin.raw: "{{ lookup('ansible.builtin.file', playbook_dir ~ '/' ~ kms_client_script) }}"
      register: convert
      vars:
        kc_results: "{{ convert.stdout_lines | default([]) | map('trim') | select('match', '[{]') | map('from_json') | list }}"
        kc_last: "{{ kc_results | last | default({}, true) }}"
        kc_hresult: "{{ (kc_last.error | default({}, true)).hresult | default('', true) | string | lower }}"
        kc_status: "{{ kc_last.data.products | default([], true) | selectattr('application_id', 'match', '(?i)55c92734-d682-4d71-983e-d6ec3f16059f$') | rejectattr('license_is_addon') | rejectattr('is_kms_host') | map(attribute='license_status') | first | default(none) }}"
      changed_when: kc_results | selectattr('changed', 'true') | list | length > 0
      failed_when: >-
        (convert.rc | default(1)) != 0 or kc_results | length == 0 or
        (kc_hresult != '' and kc_hresult != '0xc004f038') or
        (kc_hresult == '' and (kc_last.step | default('') != 'facts' or (kc_status | int) != 1))
"""

FLOOR_PLAY = """\
# The floor: one task per host running one read-only script (the licensing facts), no serial batches.
- name: KMS clients
  hosts: clients:!kms_hosts
  gather_facts: false
  tasks:
    - name: read the licensing facts
      ansible.builtin.raw: "{{ lookup('ansible.builtin.file', playbook_dir ~ '/' ~ kms_floor_script) }}"
      register: facts
      changed_when: false
      failed_when: (facts.rc | default(1)) != 0 or not (facts.stdout | default('') | trim).startswith('{')
"""


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
    #: clients the lab reports activated after the run (-1: not checked)
    activated: int = -1

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


def lab_up(lab: Path, hosts: int, latency: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kmsadmin",
            "lab",
            "up",
            "--state-dir",
            str(lab),
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


def start_labs(work: Path, hosts: int, latency: int, variants: list[str]) -> dict[str, Path]:
    """One fresh lab per variant, started side by side, each with its KMS host set up (not measured)."""
    labs = {v: work / f"lab-{v}" for v in variants}
    procs = [lab_up(d, hosts, latency) for d in labs.values()]
    failed = []
    for proc in procs:
        _, err = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            failed.append(err.strip())
    if failed:
        raise LabError(f"lab up failed: {failed}", labs)

    def setup(lab: Path) -> None:  # the same KMS host set-up on every lab, not measured
        done = kmsadmin(
            "rollout", "playbooks/kms-hosts.yml", "-i", str(lab / "inventory.yml"), "--no-progress"
        )
        if done.returncode != 0:
            raise LabError(f"KMS host set-up failed: {done.stdout[-2000:]}{done.stderr[-2000:]}", labs)

    with ThreadPoolExecutor(len(labs)) as pool:
        list(pool.map(setup, labs.values()))
    return labs


class LabError(Exception):
    def __init__(self, message: str, labs: dict[str, Path]) -> None:
        super().__init__(message)
        self.labs = labs


def lab_outcome(lab: Path) -> dict[str, int]:
    """Clients the lab reports activated (Windows licensed) and not, after a measured run."""
    done = kmsadmin("lab", "status", "--state-dir", str(lab), "--json", timeout=600)
    rows = [h for h in json.loads(done.stdout)["hosts"] if h["role"] == "client"]
    activated = sum(1 for h in rows if h["license_status"] == 1)
    return {"clients": len(rows), "activated": activated}


def export_project(inventory: Path, out: Path, forks: int, log: Path, hosts: int) -> Measure:
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
            str(inventory),
            "-o",
            str(out),
            "--gather",
            "--forks",
            str(forks),
        ],
        hosts,
        cwd=REPO,
        log=log,
    )
    if exported.rc != 0:
        raise SystemExit(f"export failed: {log.read_text()[-2000:]}")
    return exported


def _host_ops(export: Path) -> dict[str, dict[str, object]]:
    """Each exported host's ``convert-client`` entry (host_vars/HOST.yml)."""
    ops: dict[str, dict[str, object]] = {}
    for path in sorted((export / "host_vars").glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        entries = (data.get("kmsadmin_export") or {}).get(PLAY) or []
        if len(entries) != 1 or entries[0].get("operation") != "convert-client":
            raise SystemExit(f"{path}: expected one convert-client operation in play {PLAY!r}")
        ops[path.stem] = entries[0]
    return ops


def _project_base(export: Path, out: Path, play: str) -> None:
    if out.exists():
        shutil.rmtree(out)
    (out / "scripts").mkdir(parents=True)
    (out / "host_vars").mkdir()
    shutil.copy2(export / "inventory.yml", out / "inventory.yml")
    shutil.copy2(export / "ansible.cfg", out / "ansible.cfg")
    (out / "site.yml").write_text(play, encoding="utf-8")


def best_practice_project(export: Path, out: Path) -> int:
    """The hand-written best-practice project: per host one script, the export's step scripts for it
    (the activate that follows a changed KMS host, as on a fresh lab) and its read-back, in one batch.
    Returns the number of distinct scripts."""
    _project_base(export, out, BEST_PRACTICE_PLAY)
    written: set[str] = set()
    for host, op in _host_ops(export).items():
        scripts = [str(forced or plain) for plain, forced in zip(op["scripts"], op["forced"], strict=True)]  # type: ignore[call-overload]
        steps = [*scripts, str(op["verify"])]
        text = batch_script([(export / s).read_text(encoding="utf-8") for s in steps])
        name = f"scripts/convert-client-{hashlib.sha256(text.encode()).hexdigest()[:12]}.ps1"
        if name not in written:
            (out / name).write_text(text, encoding="utf-8")
            written.add(name)
        (out / "host_vars" / f"{host}.yml").write_text(
            yaml.safe_dump({"kms_client_script": name}), encoding="utf-8"
        )
    return len(written)


def floor_project(export: Path, out: Path) -> None:
    """The floor project: per host its read-back (facts) script, one task, no serial."""
    _project_base(export, out, FLOOR_PLAY)
    for host, op in _host_ops(export).items():
        verify = str(op["verify"])
        if not (out / verify).exists():
            shutil.copy2(export / verify, out / verify)
        (out / "host_vars" / f"{host}.yml").write_text(
            yaml.safe_dump({"kms_floor_script": verify}), encoding="utf-8"
        )


def run_ansible(label: str, project: Path, forks: int, hosts: int, work: Path, name: str) -> Measure:
    return measure(
        label,
        [str(BIN / "ansible-playbook"), "-i", "inventory.yml", "site.yml", "--forks", str(forks)],
        hosts,
        cwd=project,
        env=ansible_env(work),
        log=work / f"{name}.log",
    )


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


def _row(m: Measure) -> str:
    return (
        f"{m.label:34} {m.rc:>3} {m.wall:8.1f} {m.hosts_per_s:8.2f} {m.cpu:8.1f} {m.cpu_ms_per_host:12.1f}"
        f" {m.maxrss_mb:10.0f} {m.tree_rss_mb:12.0f} {m.activated:>10}"
    )


def ratios(theirs: Measure, ours: Measure) -> dict[str, float]:
    return {
        "wall": theirs.wall / ours.wall,
        "cpu_per_host": theirs.cpu_ms_per_host / ours.cpu_ms_per_host if ours.cpu else 0.0,
        "max_rss": theirs.maxrss_mb / ours.maxrss_mb,
        "tree_rss": theirs.tree_rss_mb / ours.tree_rss_mb if ours.tree_rss_mb else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=200, help="KMS clients per lab")
    parser.add_argument("--latency-ms", type=int, default=25, help="latency added to every HTTP request")
    parser.add_argument("--forks-ansible", type=int, default=50)
    parser.add_argument("--forks-kmsadmin", type=int, default=50)
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"which to run, comma-separated, of {', '.join(VARIANTS)} (default: all)",
    )
    parser.add_argument(
        "--baseline", type=Path, help="the --json of an earlier run: compare kmsadmin's per-host cost with it"
    )
    parser.add_argument(
        "--work", type=Path, help="keep the labs, logs and projects here (default: a temp dir)"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        parser.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    variants = [v for v in VARIANTS if v in variants]

    work = args.work or Path(tempfile.mkdtemp(prefix="kmsadmin-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    labs: dict[str, Path] = {}
    rows: dict[str, Measure] = {}
    exported: Measure | None = None
    try:
        print(
            f"starting {len(variants)} lab(s) of {args.hosts} clients + 1 KMS host, "
            f"{args.latency_ms} ms latency ...",
            flush=True,
        )
        started = time.perf_counter()
        try:
            labs = start_labs(work, args.hosts, args.latency_ms, variants)
        except LabError as exc:
            labs = exc.labs
            raise SystemExit(str(exc)) from None
        print(f"labs ready in {time.perf_counter() - started:.0f} s", flush=True)
        inventories = {v: lab / "inventory.yml" for v, lab in labs.items()}

        # A regular `pip install` byte-compiles what it installs (ansible-core and every library here
        # have their .pyc files); an editable install of kmsadmin does not, and PYTHONDONTWRITEBYTECODE
        # may keep the first run from writing them, so kmsadmin would recompile itself on each start.
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "kmsadmin")], check=True)

        projects: dict[str, Path] = {}
        if "export" in variants:
            projects["export"] = work / "project-export"
            exported = export_project(
                inventories["export"],
                projects["export"],
                args.forks_kmsadmin,
                work / "export.log",
                args.hosts,
            )

        def build(v: str) -> None:  # from an export of the variant's own lab (not measured)
            source = work / f"project-{v}-export"
            export_project(inventories[v], source, args.forks_kmsadmin, work / f"export-{v}.log", args.hosts)
            projects[v] = work / f"project-{v}"
            if v == "best":
                best_practice_project(source, projects[v])
            else:
                floor_project(source, projects[v])

        others = [v for v in ("best", "floor") if v in variants]
        if others:
            with ThreadPoolExecutor(len(others)) as pool:
                list(pool.map(build, others))

        for v in variants:
            print(f"measuring {LABELS[v]} ...", flush=True)
            if v == "kmsadmin":
                m = measure(
                    f"{LABELS[v]} (forks {args.forks_kmsadmin})",
                    [
                        sys.executable,
                        "-m",
                        "kmsadmin",
                        "rollout",
                        "playbooks/clients.yml",
                        "-i",
                        str(inventories[v]),
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
            else:
                m = run_ansible(
                    f"{LABELS[v]} (forks {args.forks_ansible})",
                    projects[v],
                    args.forks_ansible,
                    args.hosts,
                    work,
                    f"ansible-{v}",
                )
            m.activated = lab_outcome(labs[v])["activated"]
            rows[v] = m
    finally:
        for lab in labs.values():
            kmsadmin("lab", "down", "--state-dir", str(lab), timeout=120)

    print()
    print(f"machine: {machine()}")
    print(f"load average before the run: {LOAD_BEFORE}, after: {os.getloadavg()}")
    print(
        f"hosts: {args.hosts} clients, latency {args.latency_ms} ms/request, playbook playbooks/clients.yml"
    )
    header = (
        f"{'':34} {'rc':>3} {'wall s':>8} {'hosts/s':>8} {'CPU s':>8} {'CPU ms/host':>12}"
        f" {'maxRSS MB':>10} {'tree RSS MB':>12} {'activated':>10}"
    )
    print(header)
    for m in rows.values():
        print(_row(m))
    ours = rows.get("kmsadmin")
    ratio: dict[str, dict[str, float]] = {}
    if ours is not None:
        for v, m in rows.items():
            if v == "kmsadmin":
                continue
            ratio[v] = ratios(m, ours)
            r = ratio[v]
            print(
                f"{'ratio ' + v + ' / kmsadmin':34} {'':>3} {r['wall']:8.2f} {1 / r['wall']:8.2f} {'':>8}"
                f" {r['cpu_per_host']:12.2f} {r['max_rss']:10.2f} {r['tree_rss']:12.2f}"
            )
    if exported is not None:
        print(f"(export with --gather, not compared: {exported.wall:.1f} s wall, {exported.cpu:.1f} s CPU)")
    scaling: dict[str, float] = {}
    if args.baseline is not None and ours is not None:
        base = next(
            r for r in json.loads(args.baseline.read_text())["results"] if r["label"].startswith("kmsadmin")
        )
        scaling = {
            "baseline_hosts": base["hosts"],
            "cpu_ms_per_host": ours.cpu_ms_per_host,
            "baseline_cpu_ms_per_host": base["cpu_ms_per_host"],
            "cpu_per_host_change_pct": (ours.cpu_ms_per_host / base["cpu_ms_per_host"] - 1) * 100,
            "wall_ms_per_host": ours.wall * 1000 / ours.hosts,
            "baseline_wall_ms_per_host": base["wall"] * 1000 / base["hosts"],
            "maxrss_mb": ours.maxrss_mb,
            "baseline_maxrss_mb": base["maxrss_mb"],
        }
        print(
            f"kmsadmin per host, {base['hosts']} -> {ours.hosts} hosts: CPU {base['cpu_ms_per_host']:.1f} -> "
            f"{ours.cpu_ms_per_host:.1f} ms ({scaling['cpu_per_host_change_pct']:+.1f} %), wall "
            f"{scaling['baseline_wall_ms_per_host']:.1f} -> {scaling['wall_ms_per_host']:.1f} ms, "
            f"peak RSS {base['maxrss_mb']:.0f} -> {ours.maxrss_mb:.0f} MB"
        )
    print(f"logs: {work}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "load_before": LOAD_BEFORE,
                    "load_after": os.getloadavg(),
                    "hosts": args.hosts,
                    "latency_ms": args.latency_ms,
                    "results": [
                        asdict(m)
                        | {"variant": v, "hosts_per_s": m.hosts_per_s, "cpu_ms_per_host": m.cpu_ms_per_host}
                        for v, m in rows.items()
                    ],
                    "export": asdict(exported) if exported is not None else None,
                    "ratio": ratio,
                    "scaling": scaling,
                },
                indent=2,
            )
        )
    if args.work is None and all(m.rc in (0, 1, 2) for m in rows.values()):
        shutil.rmtree(work, ignore_errors=True)
    return 0


LOAD_BEFORE = os.getloadavg()

if __name__ == "__main__":
    sys.exit(main())
