"""``tenantctl validate`` at 10, 1,000 and 10,000 generated tenant files (issue #11 goal: <= 0.2 ms per file).

Each size is a generated tenants directory: the files of ``tenants/`` cycled, each renamed. Two
figures per size: the whole command in a fresh process (wall time, start-up included: it dominates
at 10 files), and the per-file cost of the check itself in this process (median of a few runs).

Run: nice -n 10 .venv/bin/python benchmarks/bench_validate.py [--sizes 10,1000,10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_MS_PER_FILE = 0.2
TENANTCTL = ["-c", "import sys; from tenancy.cli import main; sys.argv[0] = 'tenantctl'; main()"]


def make_tenants(directory: Path, count: int) -> Path:
    examples = sorted((ROOT / "tenants").glob("*/*.yaml"))
    for index in range(count):
        example = examples[index % len(examples)]
        name = f"{example.stem}-{index:05d}"
        target = directory / example.parent.name / f"{name}.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(example.read_text().replace(f"name: {example.stem}\n", f"name: {name}\n", 1))
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from tenancy.spec.tree import load_tenants

    with tempfile.TemporaryDirectory(prefix="bench-validate-") as scratch:
        load_tenants(make_tenants(Path(scratch) / "tenants", 4))  # imports and caches warmed

    for count in (int(size) for size in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-validate-") as scratch:
            tenants = make_tenants(Path(scratch) / "tenants", count)
            start = time.perf_counter()
            command = subprocess.run(
                [sys.executable, *TENANTCTL, "validate", "--tenants", str(tenants)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            )
            whole = time.perf_counter() - start
            if command.returncode != 0:
                raise SystemExit(command.stderr[-2000:])
            runs, cpu = [], []
            for _ in range(args.runs):
                start, cpu_start = time.perf_counter(), time.process_time()
                assert len(load_tenants(tenants).files) == count
                runs.append(time.perf_counter() - start)
                cpu.append(time.process_time() - cpu_start)
            per_file = statistics.median(runs) / count * 1000
            cpu_per_file = statistics.median(cpu) / count * 1000
            print(
                f"validate, {count:>5} files: command {whole:6.2f} s ({whole / count * 1000:.3f} ms/file, "
                f"start-up included); check {per_file:.3f} ms/file "
                f"(goal <= {GOAL_MS_PER_FILE}: {per_file / GOAL_MS_PER_FILE:.2f}x the goal; "
                f"CPU {cpu_per_file:.3f} ms/file)",
                flush=True,
            )


if __name__ == "__main__":
    main()
