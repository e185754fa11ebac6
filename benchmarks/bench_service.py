"""Throughput and latency of the tenant API under concurrent load, next to a bare FastAPI endpoint.

Each server runs in its own process (uvicorn, loopback only); the load comes from this process over
keep-alive connections with a fixed number of requests in flight. Reported per scenario: requests,
throughput, p50 and p99 latency, errors.

    .venv/bin/python benchmarks/bench_service.py                    # defaults below
    .venv/bin/python benchmarks/bench_service.py --reads 5000 --writes 500 --concurrency 32

Scenarios:
  bare     GET /ping on a FastAPI app with one endpoint (the floor: uvicorn + FastAPI + this client)
  read     GET /api/v1/environments/dev/tenants/<t>: JWT verification, rate limit, git file, queue
  write    PUT /api/v1/environments/dev/tenants/<t>: validation, git commit, queue submit (engine double)

Bounded: every phase stops at its request count or after --max-seconds, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

PROJECT_DIR = Path(__file__).resolve().parent.parent
TENANTS = [f"bench-{i}" for i in range(8)]


# --- servers (run as subprocesses of this script) ---------------------------------------------------


def serve_bare(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, bool]:
        return {"ok": True}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_service(port: int, state_dir: Path) -> None:
    import uvicorn

    from tenancy.automation.fake_engine import FakeEngine
    from tenancy.service.app import create_app
    from tenancy.service.core.config import ServiceSettings

    settings = ServiceSettings(
        state_dir=state_dir,
        project_dir=PROJECT_DIR,
        workers=2,
        rate_limit_requests=10_000_000,
        audit_log=str(state_dir / "audit.log"),
    )
    app = create_app(settings, engine=FakeEngine())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- load ---------------------------------------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    requests: int
    seconds: float
    latencies: list[float]
    errors: int

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000 if ordered else 0.0

    def row(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "requests": self.requests,
            "throughput_rps": round(self.throughput, 1),
            "p50_ms": round(self.percentile(0.50), 2),
            "p99_ms": round(self.percentile(0.99), 2),
            "mean_ms": round(statistics.fmean(self.latencies) * 1000, 2) if self.latencies else 0.0,
            "errors": self.errors,
        }


async def load(
    scenario: str,
    base_url: str,
    request: Any,
    *,
    total: int,
    concurrency: int,
    max_seconds: float,
    headers: dict[str, str] | None = None,
) -> Result:
    latencies: list[float] = []
    errors = 0
    issued = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=30.0) as client:
        # Warm-up: open the connections and the server's caches before timing.
        await asyncio.gather(*(request(client, -1 - i) for i in range(concurrency)))
        started = time.perf_counter()
        deadline = started + max_seconds

        async def user() -> None:
            nonlocal issued, errors
            while issued < total and time.perf_counter() < deadline:
                index = issued
                issued += 1
                begin = time.perf_counter()
                response = await request(client, index)
                latencies.append(time.perf_counter() - begin)
                if response.status_code >= 400:
                    errors += 1

        await asyncio.gather(*(user() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Result(scenario, len(latencies), elapsed, latencies, errors)


def tenant_document(name: str, index: int) -> dict[str, Any]:
    return {
        "owners": [f"owner@{name}.example"],
        "plan": "small",
        "displayName": f"{name} #{index}",
        "deletionProtection": False,
        "qdrant": {"enabled": True},
    }


# --- orchestration ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(args: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, __file__, *args], env=env, cwd=PROJECT_DIR)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"server {args} exited with {process.returncode}") from None
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server {args} did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def run(options: argparse.Namespace) -> list[Result]:
    from tenancy.service.core.config import ServiceSettings
    from tenancy.service.core.local_issuer import mint_token

    results = []
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
    concurrency, max_seconds = options.concurrency, options.max_seconds

    port = free_port()
    bare = start(["--serve", "bare", "--port", str(port)], port, env)
    try:

        async def ping(client: httpx.AsyncClient, index: int) -> httpx.Response:
            return await client.get("/ping")

        results.append(
            asyncio.run(
                load(
                    "bare FastAPI GET /ping",
                    f"http://127.0.0.1:{port}",
                    ping,
                    total=options.reads,
                    concurrency=concurrency,
                    max_seconds=max_seconds,
                )
            )
        )
    finally:
        stop(bare)

    with tempfile.TemporaryDirectory(prefix="bench-service-") as scratch:
        state_dir = Path(scratch) / "state"
        port = free_port()
        service = start(["--serve", "service", "--port", str(port), "--state-dir", str(state_dir)], port, env)
        try:
            settings = ServiceSettings(state_dir=state_dir)
            token = mint_token(
                settings.local_issuer_dir,
                issuer=settings.issuer,
                audience=settings.audience,
                subject="bench",
                groups=[],
                roles=["platform-admin"],
                lifetime_seconds=3600,
            )
            headers = {"Authorization": f"Bearer {token}"}
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
                for name in TENANTS:
                    response = client.put(
                        f"/api/v1/environments/dev/tenants/{name}", json=tenant_document(name, 0)
                    )
                    response.raise_for_status()

            async def read(client: httpx.AsyncClient, index: int) -> httpx.Response:
                name = TENANTS[index % len(TENANTS)]
                return await client.get(f"/api/v1/environments/dev/tenants/{name}")

            async def write(client: httpx.AsyncClient, index: int) -> httpx.Response:
                name = TENANTS[index % len(TENANTS)]
                document = tenant_document(name, index + 1_000_000 if index < 0 else index + 1)
                return await client.put(f"/api/v1/environments/dev/tenants/{name}", json=document)

            for scenario, request, total in (
                ("tenant API read (GET tenant)", read, options.reads),
                ("tenant API write (PUT tenant: validate, git commit, enqueue)", write, options.writes),
            ):
                results.append(
                    asyncio.run(
                        load(
                            scenario,
                            base,
                            request,
                            total=total,
                            concurrency=concurrency,
                            max_seconds=max_seconds,
                            headers=headers,
                        )
                    )
                )
        finally:
            stop(service)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--reads", type=int, default=3000, help="requests per read phase (bare and tenant read)"
    )
    parser.add_argument("--writes", type=int, default=300, help="requests in the write phase")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="cap per phase")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--serve", choices=["bare", "service"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()

    if options.serve == "bare":
        serve_bare(options.port)
        return
    if options.serve == "service":
        serve_service(options.port, options.state_dir)
        return

    rows = [result.row() for result in run(options)]
    if options.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"concurrency {options.concurrency}, loopback, {os.cpu_count()} CPUs (client and server share them)"
    )
    header = f"{'scenario':<62} {'requests':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['scenario']:<62} {row['requests']:>8} {row['throughput_rps']:>9} "
            f"{row['p50_ms']:>8} {row['p99_ms']:>8} {row['errors']:>6}"
        )


if __name__ == "__main__":
    main()
