"""Benchmark: how long ``kmsadmin --help`` takes (start-up cost of the CLI), median of several runs.

    python benchmarks/help_time.py [--runs 9] [--command "export ansible --help"]

Each run is a fresh interpreter (``python -m kmsadmin ...``), so the figure includes Python's own
start-up; one warm-up run is not counted (it fills the OS page cache and writes .pyc files).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--command", default="--help", help="kmsadmin arguments to time")
    args = parser.parse_args(argv)
    cmd = [sys.executable, "-m", "kmsadmin", *shlex.split(args.command)]
    subprocess.run(cmd, capture_output=True, check=True)
    times: list[float] = []
    for _ in range(max(1, args.runs)):
        started = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    baseline: list[float] = []
    for _ in range(max(1, args.runs)):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], capture_output=True, check=True)
        baseline.append(time.perf_counter() - started)
    print(
        f"kmsadmin {args.command}: median {statistics.median(times) * 1000:.0f} ms, "
        f"min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms over {len(times)} runs "
        f"(bare `python -c pass`: median {statistics.median(baseline) * 1000:.0f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
