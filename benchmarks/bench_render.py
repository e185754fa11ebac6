"""``tenantctl render --all`` at 10, 100 and 500 tenants, and what ``--validate`` adds (issue #11).

Goals: at most 100 ms per tenant, flat as tenants grow, peak memory flat; ``--validate`` at most
+30 ms per tenant. Each size runs in its own Python process (so its peak RSS is its own), rendering
a generated project: this repository's Pulumi files and N tenant files cycled from ``tenants/``.
The platform stacks (dev, prod) are rendered too, as ``--all`` does, in the same call: they count in
the total, not per tenant. A tenant's time is what a run with N tenants takes beyond the same run
with none (a run of its own first), divided by N: the command's real per-tenant cost, with the
platform stacks and the workers' start left out as they would be most of it at 10 tenants.

The stacks go through ``render_stacks``, the function ``render --all`` calls, with the command's
default ``--jobs`` (the CPUs available): what users get, workers included. ``--validate`` renders each
size a second time, in a process of its own, with the schema check as the command runs it (in the
workers), and reports the difference. Wall time is what the goal
names; CPU time (this process and its workers) is printed beside it because on a shared machine the
wall time mostly measures the other jobs. Peak RSS is given for this process and for the largest
worker.

That difference of two runs swings by tens of milliseconds per tenant between sittings (a tenant's
render CPU itself varies by a third), more than the check costs. So the ``--validate`` run also
times the check itself where it runs: ``schema_problems``, the one call ``--validate`` adds per
stack (``tenancy.render.batch._render_here``), is wrapped in the workers to add up its wall and CPU
time. Its wall time per tenant divided by the workers is what it adds to the command when the
workers are busy alike; both figures are printed, the goal's ratio from the direct one.

Run: nice -n 10 .venv/bin/python benchmarks/bench_render.py [--sizes 10,100,500] [--validate] [--jobs N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml")
RENDER_GOAL_MS = 100.0
VALIDATE_GOAL_MS = 30.0


def make_project(directory: Path, tenants: int) -> Path:
    """A project with ``tenants`` tenant files, each a renamed copy of one of ``tenants/``."""
    for name in PROJECT_FILES:
        shutil.copy(ROOT / name, directory / name)
    (directory / "tenants").mkdir()
    examples = sorted((ROOT / "tenants").glob("*/*.yaml"))
    for index in range(tenants):
        example = examples[index % len(examples)]
        name = f"{example.stem}-{index:05d}"
        target = directory / "tenants" / example.parent.name / f"{name}.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(example.read_text().replace(f"name: {example.stem}\n", f"name: {name}\n", 1))
    return directory


def _cpu_s() -> float:
    """CPU time of this process and of its finished children (the render workers), in seconds."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timing_check(log: Path) -> None:
    """In a ``--validate`` run: wrap the schema check the render workers call (they fork from this
    process, so they inherit it) to append its wall and thread-CPU seconds for each stack to ``log``
    (one short line per write, O_APPEND: the workers' lines do not mix)."""
    from tenancy.render import batch

    check = batch.schema_problems

    def timed(root: Path) -> list[Any]:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return check(root)
        finally:
            line = f"{time.perf_counter() - wall} {time.thread_time() - cpu}\n".encode()
            descriptor = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(descriptor, line)
            finally:
                os.close(descriptor)

    batch.schema_problems = timed  # type: ignore[assignment]


def _check_times(log: Path) -> tuple[float, float, int]:
    """Wall and CPU seconds the schema check took in all, and how many stacks it checked."""
    if not log.exists():
        return 0.0, 0.0, 0
    rows = [line.split() for line in log.read_text().splitlines() if line]
    return sum(float(wall) for wall, _ in rows), sum(float(cpu) for _, cpu in rows), len(rows)


def run_one_size(tenants: int, validate: bool, jobs: int) -> dict[str, float]:
    """In this process: ``render --all [--validate]`` on a generated project, as the command runs it.

    Every stack goes through one call of ``render_stacks``, the function the command calls (workers
    included), in the command's order: the platform stacks, then the tenants. What a tenant costs is
    then the difference from the same run with no tenant files (``main`` subtracts it), so the
    platform stacks and the start count in the total, not per tenant, and nothing is timed apart
    from what the command does.
    """
    from tenancy.render.batch import render_stacks
    from tenancy.render.write import example_stacks

    with tempfile.TemporaryDirectory(prefix="bench-render-") as scratch:
        project = make_project(Path(scratch), tenants)
        out = project / "render"
        check_log = Path(scratch) / "check-times"
        if validate:
            _timing_check(check_log)
        start, cpu_start = time.perf_counter(), _cpu_s()
        problems: list[object] = []
        for rendered in render_stacks(
            example_stacks(project), project_dir=project, out=out, jobs=jobs, validate=validate
        ):
            problems += rendered.problems
        end, cpu_end = time.perf_counter(), _cpu_s()
        if problems:
            raise SystemExit(f"schema problems: {problems[:3]}")
        check_wall, check_cpu, checked = _check_times(check_log)
        return {
            "check_wall_s": check_wall,
            "check_cpu_s": check_cpu,
            "checked_stacks": checked,
            "tenants": tenants,
            "total_s": end - start,
            "cpu_s": cpu_end - cpu_start,
            # ru_maxrss is in KiB on Linux; for children, the largest of the finished render workers.
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        }


def per_tenant(row: dict[str, float], base: dict[str, float]) -> tuple[float, float]:
    """Wall and CPU milliseconds per tenant: the run's time beyond the run with no tenants."""
    count = row["tenants"]
    return (row["total_s"] - base["total_s"]) / count * 1000, (row["cpu_s"] - base["cpu_s"]) / count * 1000


def run_child(tenants: int, validate: bool, jobs: int) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--child",
        str(tenants),
        "--jobs",
        str(jobs),
        *(["--validate"] if validate else []),
    ]
    # Bounded: 500 tenants take well under a minute when render is flat; a regression shows as a timeout.
    child = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    if child.returncode != 0:
        raise SystemExit(f"{tenants} tenants failed:\n{child.stderr[-2000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10,100,500", help="comma-separated tenant counts")
    parser.add_argument("--validate", action="store_true", help="also time the --validate schema check")
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="render --all --jobs (default: the CPUs available, as the command)",
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from tenancy.render.batch import default_jobs

    jobs = default_jobs() if args.jobs is None else args.jobs
    if args.child is not None:
        print(json.dumps(run_one_size(args.child, args.validate, jobs)))
        return
    # The platform stacks alone (no tenant file), once plain and once checked: what every size's run
    # also does, subtracted from it.
    base = run_child(0, False, jobs)
    checked_base = run_child(0, True, jobs) if args.validate else base
    print(
        f"render --all, no tenants: {base['total_s']:.1f} s (the platform stacks; load {_load()})",
        flush=True,
    )
    rows = []
    for tenants in (int(size) for size in args.sizes.split(",")):
        row = run_child(tenants, False, jobs)
        row["render_ms_per_tenant"], row["render_cpu_ms_per_tenant"] = per_tenant(row, base)
        if args.validate:
            # In a process of its own, so each run pays the same imports and start-up.
            checked = run_child(tenants, True, jobs)
            wall, cpu = per_tenant(checked, checked_base)
            row["validate_diff_ms_per_tenant"] = wall - row["render_ms_per_tenant"]
            row["validate_diff_cpu_ms_per_tenant"] = cpu - row["render_cpu_ms_per_tenant"]
            # The check itself, in the workers: the tenants' share (the platform stacks' checks are
            # the base run's), spread over the workers that ran it side by side.
            stacks = checked["checked_stacks"] - checked_base["checked_stacks"]
            check_wall = checked["check_wall_s"] - checked_base["check_wall_s"]
            check_cpu = checked["check_cpu_s"] - checked_base["check_cpu_s"]
            row["validate_ms_per_tenant"] = check_wall / tenants * 1000 / min(jobs, max(stacks, 1))
            row["validate_cpu_ms_per_tenant"] = check_cpu / tenants * 1000
        rows.append(row)
        line = (
            f"render --all, {tenants:>4} tenants: {row['total_s']:6.1f} s in all, "
            f"{row['render_ms_per_tenant']:6.1f} ms/tenant beyond the platform's "
            f"(goal <= {RENDER_GOAL_MS:.0f}: {row['render_ms_per_tenant'] / RENDER_GOAL_MS:.2f}x the goal; "
            f"CPU {row['render_cpu_ms_per_tenant']:.1f} ms/tenant in all processes), "
            f"peak RSS {row['peak_rss_mib']:.0f} MiB"
            + (f", each of {jobs} workers at most {row['worker_peak_rss_mib']:.0f} MiB" if jobs > 1 else "")
        )
        if args.validate:
            line += (
                f"; --validate: the check itself +{row['validate_ms_per_tenant']:.1f} ms/tenant over "
                f"{jobs} workers (CPU {row['validate_cpu_ms_per_tenant']:.1f} ms/tenant) "
                f"(goal <= +{VALIDATE_GOAL_MS:.0f}: "
                f"{row['validate_ms_per_tenant'] / VALIDATE_GOAL_MS:.2f}x); the two runs' difference "
                f"{row['validate_diff_ms_per_tenant']:+.1f} ms/tenant "
                f"(CPU {row['validate_diff_cpu_ms_per_tenant']:+.1f})"
            )
        print(line, flush=True)
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(
            f"growth {first['tenants']} -> {last['tenants']} tenants: per-tenant time "
            f"x{last['render_ms_per_tenant'] / first['render_ms_per_tenant']:.2f}, "
            f"peak RSS x{last['peak_rss_mib'] / first['peak_rss_mib']:.2f}, workers' "
            f"x{last['worker_peak_rss_mib'] / max(first['worker_peak_rss_mib'], 1):.2f} (flat = 1.0); "
            f"load {_load()}"
        )


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
