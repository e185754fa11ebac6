"""The tenant API under 50 concurrent clients, next to a bare FastAPI endpoint served the same way.

    .venv/bin/python benchmarks/bench_service.py                 # ~40 s: every scenario, goals as ratios
    .venv/bin/python benchmarks/bench_service.py --seconds 5 --clients 50 --json

Every server runs in its own process (uvicorn, one worker, loopback, access log off). The load comes
from another process: an asyncio client with one keep-alive HTTP/1.1 connection per simulated client,
each sending its next request as soon as the previous answer arrives (a closed loop). It speaks raw
HTTP over asyncio streams, so it costs a few microseconds per request and is never what limits the
figures; it reports its own CPU use next to the wall time to show that.

Scenarios (each: warm-up, then ``--seconds`` of measurement; throughput, p50, p99, errors):
  bare            GET /ping on a FastAPI app with one ``def`` endpoint (the reference)
  get tenant      GET /api/v1/environments/dev/tenants/<t>, client i on tenant i (JWT, rate limit, git)
  patch distinct  PATCH the same path, client i on tenant i: validate, commit, queue (engine double)
  patch one       PATCH one tenant from every client: the per-tenant lock serialises them

The service is the embedded default (SQLite queue, local git repository) with the engine double and
no worker threads (an API replica, ``--workers 0``): what is measured is the API, not the engine.

Goals (issue 11), printed as ratios in this one run:
  GET tenant throughput >= 0.5 x bare; PATCH distinct p99 <= 50 ms and >= 500 writes/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent


# --- servers (each a subprocess of this script) -------------------------------------------------------


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
        workers=0,
        rate_limit_requests=10_000_000,
        audit_log=str(state_dir / "audit.log"),
    )
    app = create_app(settings, engine=FakeEngine())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- the load client (its own process) ----------------------------------------------------------------


async def _client(
    host: str, port: int, requests: list[bytes], deadline: float, measure_from: float, out: dict[str, Any]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    latencies: list[float] = out["latencies"]
    index = 0
    try:
        while True:
            now = time.perf_counter()
            if now >= deadline:
                return
            writer.write(requests[index % len(requests)])
            index += 1
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            if not status_line:
                out["errors"] += 1
                return
            status = int(status_line.split()[1])
            end = time.perf_counter()
            if now >= measure_from:
                latencies.append(end - now)
                if status >= 400:
                    out["errors"] += 1
                    if out["first_error"] is None:
                        out["first_error"] = status
    finally:
        writer.close()


def _request(method: str, path: str, token: str | None, body: bytes | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def _load(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"latencies": [], "errors": 0, "first_error": None}
    start = time.perf_counter()
    measure_from = start + spec["warmup"]
    deadline = measure_from + spec["seconds"]
    per_client: list[list[bytes]] = []
    for index in range(spec["clients"]):
        per_client.append([_request(**request) for request in spec["requests"](index)])
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(
        *(
            _client("127.0.0.1", spec["port"], requests, deadline, measure_from, out)
            for requests in per_client
        )
    )
    used = resource.getrusage(resource.RUSAGE_SELF)
    seconds = time.perf_counter() - measure_from
    latencies = sorted(out["latencies"])

    def percentile(fraction: float) -> float:
        return latencies[min(len(latencies) - 1, int(fraction * len(latencies)))] * 1000 if latencies else 0.0

    cpu_seconds = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
    return {
        "requests": len(latencies),
        "throughput": len(latencies) / seconds if seconds else 0.0,
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "errors": out["errors"],
        "first_error": out["first_error"],
        "client_cpu_share": cpu_seconds / (time.perf_counter() - start),
    }


def run_client(spec_json: str) -> None:
    """Entry point of the load process: reads a scenario, prints its result as JSON."""
    spec = json.loads(spec_json)
    scenario = spec["scenario"]
    token, clients = spec.get("token"), spec["clients"]

    def requests(index: int) -> list[dict[str, Any]]:
        if scenario == "bare":
            return [{"method": "GET", "path": "/ping", "token": None, "body": None}]
        tenant = "bench-0" if scenario == "patch one" else f"bench-{index % clients}"
        path = f"/api/v1/environments/dev/tenants/{tenant}"
        if scenario == "get tenant":
            return [{"method": "GET", "path": path, "token": token, "body": None}]
        # Alternate two values, so every PATCH really changes the file (and makes a commit).
        return [
            {
                "method": "PATCH",
                "path": path,
                "token": token,
                "body": json.dumps({"displayName": f"{tenant} {round_}-{index}"}).encode(),
            }
            for round_ in ("a", "b")
        ]

    spec["requests"] = requests
    print(json.dumps(asyncio.run(_load(spec))))


# --- orchestration ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(args: list[str], port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
    process = subprocess.Popen([sys.executable, __file__, *args], env=env, cwd=PROJECT_DIR)
    deadline = time.monotonic() + 120
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


def measure(
    scenario: str, port: int, options: argparse.Namespace, token: str | None = None
) -> dict[str, Any]:
    spec = {
        "scenario": scenario,
        "port": port,
        "clients": options.clients,
        "seconds": options.seconds,
        "warmup": options.warmup,
        "token": token,
    }
    output = subprocess.run(
        [sys.executable, __file__, "--client", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_DIR,
        timeout=options.seconds + options.warmup + 120,
    ).stdout
    return {"scenario": scenario, **json.loads(output)}


def run(options: argparse.Namespace) -> list[dict[str, Any]]:
    import httpx

    from tenancy.service.core.config import ServiceSettings
    from tenancy.service.core.local_issuer import mint_token

    results = []
    port = free_port()
    bare = start(["--serve", "bare", "--port", str(port)], port)
    try:
        results.append(measure("bare", port, options))
    finally:
        stop(bare)

    with tempfile.TemporaryDirectory(prefix="bench-service-") as scratch:
        state_dir = Path(scratch) / "state"
        port = free_port()
        service = start(["--serve", "service", "--port", str(port), "--state-dir", str(state_dir)], port)
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
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=60
            ) as client:
                for index in range(options.clients):
                    name = f"bench-{index}"
                    document = {
                        "owners": [f"owner@{name}.example"],
                        "plan": "small",
                        "displayName": name,
                        "deletionProtection": False,
                        "qdrant": {"enabled": True},
                    }
                    client.put(f"/api/v1/environments/dev/tenants/{name}", json=document).raise_for_status()
            for scenario in ("get tenant", "patch distinct", "patch one"):
                results.append(measure(scenario, port, options, token))
        finally:
            stop(service)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (connections)")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured time per scenario")
    parser.add_argument("--warmup", type=float, default=1.5, help="unmeasured time before it")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--serve", choices=["bare", "service"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    options = parser.parse_args()

    if options.serve == "bare":
        serve_bare(options.port)
        return
    if options.serve == "service":
        serve_service(options.port, options.state_dir)
        return
    if options.client:
        run_client(options.client)
        return

    results = run(options)
    by_name = {result["scenario"]: result for result in results}
    bare, get, patch = by_name["bare"], by_name["get tenant"], by_name["patch distinct"]
    goals = {
        "GET tenant / bare throughput (goal >= 0.5)": get["throughput"] / bare["throughput"],
        "PATCH distinct p99 / 50 ms (goal <= 1.0)": patch["p99_ms"] / 50.0,
        "PATCH distinct writes/s / 500 (goal >= 1.0)": patch["throughput"] / 500.0,
    }
    if options.json:
        print(json.dumps({"results": results, "goals": goals}, indent=2))
        return
    load = os.getloadavg()[0]
    print(
        f"{options.clients} clients, {options.seconds:.0f} s each, loopback; {os.cpu_count()} CPUs shared by "
        f"server and load client; load average {load:.1f}"
    )
    header = (
        f"{'scenario':<16} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'client CPU':>10}"
    )
    print(header)
    print("-" * len(header))
    for row in results:
        print(
            f"{row['scenario']:<16} {row['requests']:>8} {row['throughput']:>8.0f} {row['p50_ms']:>8.1f} "
            f"{row['p99_ms']:>8.1f} {row['errors']:>6} {row['client_cpu_share']:>9.0%}"
        )
    print()
    for goal, ratio in goals.items():
        print(f"{goal:<46} {ratio:6.2f}")


if __name__ == "__main__":
    main()
