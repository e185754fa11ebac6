"""CLI start-up against `python -c pass` (issue #11 goal: at most 12x).

Run: nice -n 10 .venv/bin/python benchmarks/bench_cli_startup.py [--runs N] [--instructions]

The three commands run in turn, N rounds, so a change in the machine's load hits each alike. Prints
each command's median wall time and its ratio to `python -c pass` (the goal's measure), and beside
it the median CPU time of the process and that ratio: on a shared machine wall time also measures
the neighbours, CPU time mostly not. With --instructions, also the instructions each command
executes (one run each under valgrind's callgrind, about a minute of CPU): a ratio no load changes.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TENANTCTL = ["-c", "import sys; from tenancy.cli import main; sys.argv[0] = 'tenantctl'; main()"]
GOAL_RATIO = 12
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "tenantctl --help": [*TENANTCTL, "--help"],
    "tenantctl validate": [*TENANTCTL, "validate", "--tenants", "tenants"],
}


def _run(args: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one run of ``python args``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{args} failed: {done.stderr.decode()[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _instructions(args: list[str]) -> int:
    """Instructions executed by one run of ``python args``, counted by callgrind."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"no instruction count from valgrind: {done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--instructions", action="store_true", help="also count instructions (valgrind)")
    args = parser.parse_args()
    for command in COMMANDS.values():
        _run(command)  # warm the file cache
    walls: dict[str, list[float]] = {label: [] for label in COMMANDS}
    cpus: dict[str, list[float]] = {label: [] for label in COMMANDS}
    for _ in range(args.runs):
        for label, command in COMMANDS.items():
            wall, cpu = _run(command)
            walls[label].append(wall)
            cpus[label].append(cpu)
    wall_base = statistics.median(walls["python -c pass"])
    cpu_base = statistics.median(cpus["python -c pass"])
    print(f"python -c pass: {wall_base * 1000:.0f} ms wall, {cpu_base * 1000:.0f} ms CPU (load {_load()})")
    for label in list(COMMANDS)[1:]:
        wall, cpu = statistics.median(walls[label]), statistics.median(cpus[label])
        print(
            f"{label}: {wall * 1000:.0f} ms = {wall / wall_base:.1f}x python -c pass "
            f"(goal <= {GOAL_RATIO}x); CPU {cpu * 1000:.0f} ms = {cpu / cpu_base:.1f}x"
        )
    if args.instructions:
        if shutil.which("valgrind") is None:
            raise SystemExit("--instructions needs valgrind on PATH")
        counts = {label: _instructions(command) for label, command in COMMANDS.items()}
        base = counts["python -c pass"]
        print(
            "instructions: "
            + "; ".join(
                f"{label} {count / 1e6:.0f} M = {count / base:.2f}x" for label, count in counts.items()
            )
        )
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("(PYTHONDONTWRITEBYTECODE is set: this project's modules have no .pyc and compile every run)")


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
