"""``tenantctl validate`` at 10, 1,000 and 10,000 generated tenant files (issue #11 goal: <= 0.2 ms per file).

Each size is a generated tenants directory: the files of ``tenants/`` cycled, each renamed. Figures per
size:

- command: the whole command in a fresh process, as CI runs it (start-up included: it dominates at
  10 files), ``--runs`` times: the median wall time, the goal's figure (<= 0.2 ms per file, with
  its margin), the spread, and the CPU of the command and its workers (the figure that load does not
  move much: wall time on a busy machine mostly measures the neighbours);
- check: ``load_tenants``, the command's own code path, in this process (median of a few runs): from
  500 files on it forks workers (one per CPU this process may use, ``TENANCY_VALIDATE_WORKERS``), so
  its wall time is the goal's figure; its CPU time is given for this process and for the workers
  (on a quiet machine the wall time is about the larger of the two, as they run side by side);
- one process: the same check with ``TENANCY_VALIDATE_WORKERS=1``, to show what the workers add.

The goal's ratio is the whole command's median wall time per file over 0.2 ms (the check's is given
too). Wall times need a quiet machine: with other jobs on the 2 cores the workers wait for a core,
which the CPU figures show.

Run: nice -n 10 .venv/bin/python benchmarks/bench_validate.py [--sizes 10,1000,10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import resource
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


def _cpu() -> tuple[float, float]:
    """CPU seconds of this process, and of its finished children (the check's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def measure(tenants: Path, count: int, runs: int) -> tuple[float, float, float]:
    """Median wall, CPU of this process and CPU of the workers, in milliseconds per file of
    load_tenants over ``runs`` runs."""
    from tenancy.spec.tree import load_tenants

    walls, own, workers = [], [], []
    for _ in range(runs):
        start, cpu_start = time.perf_counter(), _cpu()
        assert len(load_tenants(tenants).files) == count
        walls.append(time.perf_counter() - start)
        cpu_end = _cpu()
        own.append(cpu_end[0] - cpu_start[0])
        workers.append(cpu_end[1] - cpu_start[1])
    wall, here, forked = (statistics.median(values) / count * 1000 for values in (walls, own, workers))
    return wall, here, forked


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from tenancy.spec.tree import WORKERS_VARIABLE, load_tenants

    with tempfile.TemporaryDirectory(prefix="bench-validate-") as scratch:
        load_tenants(make_tenants(Path(scratch) / "tenants", 4))  # imports and caches warmed

    print(f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs", flush=True)
    configured = os.environ.get(WORKERS_VARIABLE)
    for count in (int(size) for size in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-validate-") as scratch:
            tenants = make_tenants(Path(scratch) / "tenants", count)
            commands, commands_cpu = [], []
            for _ in range(args.runs):
                start, cpu_start = time.perf_counter(), _cpu()[1]
                command = subprocess.run(
                    [sys.executable, *TENANTCTL, "validate", "--tenants", str(tenants)],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                commands.append(time.perf_counter() - start)
                commands_cpu.append(_cpu()[1] - cpu_start)
                if command.returncode != 0:
                    raise SystemExit(command.stderr[-2000:])
            whole, whole_cpu = statistics.median(commands), statistics.median(commands_cpu)
            per_file, own_cpu, workers_cpu = measure(tenants, count, args.runs)
            os.environ[WORKERS_VARIABLE] = "1"
            try:
                serial, _, _ = measure(tenants, count, args.runs)
            finally:
                if configured is None:
                    del os.environ[WORKERS_VARIABLE]
                else:
                    os.environ[WORKERS_VARIABLE] = configured
            command_ms = whole / count * 1000
            print(
                f"validate, {count:>5} files: command {whole:6.2f} s median of {args.runs} "
                f"({min(commands):.2f}-{max(commands):.2f}), {command_ms:.3f} ms/file start-up included "
                f"(goal <= {GOAL_MS_PER_FILE}: {command_ms / GOAL_MS_PER_FILE:.2f}x the goal), "
                f"CPU {whole_cpu:.2f} s with its workers; check {per_file:.3f} ms/file "
                f"({per_file / GOAL_MS_PER_FILE:.2f}x the goal; "
                f"CPU {own_cpu:.3f} ms/file here + {workers_cpu:.3f} in workers); "
                f"one process {serial:.3f} ms/file",
                flush=True,
            )
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
