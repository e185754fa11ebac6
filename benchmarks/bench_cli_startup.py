"""CLI start-up against `python -c pass` (issue #11 goal: at most 12x).

Run: python benchmarks/bench_cli_startup.py [--runs N]
Prints the median wall time of each command and its ratio to `python -c pass`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TENANTCTL = ["-c", "import sys; from tenancy.cli import main; sys.argv[0] = 'tenantctl'; main()"]


def _median_seconds(args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    baseline = _median_seconds(["-c", "pass"], runs)
    print(f"python -c pass: {baseline * 1000:.0f} ms")
    for label, extra in (
        ("tenantctl --help", ["--help"]),
        ("tenantctl validate", ["validate", "--tenants", "tenants"]),
    ):
        took = _median_seconds([*TENANTCTL, *extra], runs)
        print(f"{label}: {took * 1000:.0f} ms = {took / baseline:.1f}x python -c pass (goal <= 12x)")


if __name__ == "__main__":
    main()
