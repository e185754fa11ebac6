"""``sync`` overhead with the engine double (zero delay): 10, 100 and 1,000 tenants.

What is measured is everything sync adds around the engine: planning (fingerprints against the
operation history and the backend), queueing every operation in SQLite, the worker claiming them
(4 at a time), recording each progress event and each outcome. The engine itself takes no time, so
the cost per tenant is the automation layer's own; it should stay flat as tenants grow.

Run with pytest-benchmark (not collected by the default test run):

    .venv/bin/pytest benchmarks/bench_sync.py --benchmark-enable \
        --benchmark-columns=min,mean,max,rounds --benchmark-sort=name

or as a script, printing the cost per tenant:

    .venv/bin/python benchmarks/bench_sync.py
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tenancy.automation.fake_engine import FakeEngine
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.automation.sync import plan_sync, submit_plan
from tenancy.automation.worker import Worker

SIZES = (10, 100, 1000)
PARALLEL = 4


def tenant_specs(count: int) -> dict[str, dict[str, Any]]:
    return {
        f"t{index:04d}": {"name": f"t{index:04d}", "owners": [f"team{index}@example.com"], "plan": "small"}
        for index in range(count)
    }


def sync_once(queue: SqliteOperationQueue, engine: FakeEngine, specs: dict[str, dict[str, Any]]) -> int:
    """One ``tenantctl sync`` minus the CLI: plan, queue, run. Returns the operations run."""
    plan = plan_sync("dev", specs, history=queue, engine=engine)
    operations = submit_plan(plan, queue, requested_by="benchmark")
    Worker(queue, engine, max_parallel=PARALLEL).run_until_idle(only={op.id for op in operations})
    return len(operations)


def fresh_state(directory: Path) -> tuple[SqliteOperationQueue, FakeEngine]:
    return SqliteOperationQueue(directory / f"{uuid.uuid4().hex}.sqlite3"), FakeEngine(delay=0.0, resources=3)


@pytest.mark.parametrize("tenants", SIZES)
def test_sync_creating_every_tenant(benchmark: Any, tmp_path: Path, tenants: int) -> None:
    specs = tenant_specs(tenants)

    def setup() -> tuple[tuple[SqliteOperationQueue, FakeEngine, dict[str, dict[str, Any]]], dict[str, Any]]:
        queue, engine = fresh_state(tmp_path)
        return (queue, engine, specs), {}

    ran = benchmark.pedantic(sync_once, setup=setup, rounds=3 if tenants >= 1000 else 5, iterations=1)

    assert ran == tenants
    benchmark.extra_info["ms_per_tenant"] = round(benchmark.stats.stats.mean / tenants * 1000, 3)


@pytest.mark.parametrize("tenants", SIZES)
def test_sync_with_nothing_changed(benchmark: Any, tmp_path: Path, tenants: int) -> None:
    specs = tenant_specs(tenants)
    queue, engine = fresh_state(tmp_path)
    sync_once(queue, engine, specs)

    ran = benchmark.pedantic(sync_once, args=(queue, engine, specs), rounds=5, iterations=1)

    assert ran == 0
    benchmark.extra_info["ms_per_tenant"] = round(benchmark.stats.stats.mean / tenants * 1000, 3)


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        print(f"sync overhead with the engine double (zero delay), {PARALLEL} in parallel")
        print(
            f"{'tenants':>8} {'create all (s)':>15} {'ms/tenant':>10} {'no change (s)':>14} {'ms/tenant':>10}"
        )
        for tenants in SIZES:
            specs = tenant_specs(tenants)
            queue, engine = fresh_state(directory)
            started = time.perf_counter()
            sync_once(queue, engine, specs)
            created = time.perf_counter() - started
            started = time.perf_counter()
            sync_once(queue, engine, specs)
            unchanged = time.perf_counter() - started
            print(
                f"{tenants:>8} {created:>15.3f} {created / tenants * 1000:>10.2f} "
                f"{unchanged:>14.3f} {unchanged / tenants * 1000:>10.2f}"
            )
            queue.close()


if __name__ == "__main__":
    main()
