"""The CLI and the service share one queue: with both on the Redis backend (the same variables), a
`tenantctl sync` and an API write to the same tenant coalesce into one update and never run at once."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import yaml
from typer.testing import CliRunner, Result

import tenancy.automation.storage as storage
import tenancy.cli.operations as operations
from tenancy.automation.contract import OperationKind, OperationStatus, StackRef
from tenancy.cli import app as tenantctl
from tenancy.service.app import create_app
from tests.service.conftest import PROJECT_DIR, Issuer, LiveServer, TenantEngine, settings_for, wait_for

ACME = StackRef("dev", "acme")
QUEUE_ENV = {
    "TENANCY_SERVICE_BACKEND": "redis",
    "TENANCY_SERVICE_REDIS_URL": "redis://redis-ha.redis.svc:6379/0",
    "TENANCY_SERVICE_REDIS_PREFIX": "tenancy:",
}


def _until(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_a_cli_sync_and_an_api_write_coalesce_and_never_run_at_once(
    tmp_path: Path, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = fakeredis.FakeServer()  # the platform's Redis, as every client sees it
    engine = TenantEngine()  # the cluster both sides update: it counts runs per stack at once
    project = tmp_path / "project"
    project.mkdir()
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml"):
        shutil.copy(PROJECT_DIR / name, project / name)
    shutil.copytree(PROJECT_DIR / "tenants", project / "tenants")
    acme = yaml.safe_load((project / "tenants" / "dev" / "acme.yaml").read_text())

    settings = settings_for(
        tmp_path / "service",
        issuer,
        backend="redis",
        redis_url=QUEUE_ENV["TENANCY_SERVICE_REDIS_URL"],
        workers=1,
    )
    service = create_app(settings, engine=engine, redis=fakeredis.FakeRedis(server=server))
    # The CLI opens the queue through the same factory and variables; only the connection is faked.
    for name, value in QUEUE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(storage, "connect_redis", lambda _settings: fakeredis.FakeRedis(server=server))
    monkeypatch.setattr(operations, "make_engine", lambda _settings: engine)

    with LiveServer(service) as live, live.client(issuer.admin_of("acme")) as client:
        engine.pause()  # hold the service's first update half-way
        url = "/api/v1/environments/dev/tenants/acme"
        first = client.put(url, json=acme)
        assert first.status_code == 202, first.text
        _until(lambda: engine.running(ACME) == 1, "the service to start acme's first update")
        second = client.put(url, json={**acme, "displayName": "ACME (from the API)"})
        assert second.status_code == 202, second.text
        queued_by_api = second.json()["operation"]["id"]

        result: dict[str, Result] = {}
        cli = threading.Thread(
            target=lambda: result.setdefault(
                "sync",
                CliRunner().invoke(tenantctl, ["sync", "--env", "dev", "--json", "--project", str(project)]),
            )
        )
        cli.start()
        # The CLI's update of acme replaces the API's queued one: one update applies the latest.
        _until(lambda: _status(client, queued_by_api) == "superseded", "the CLI's update to coalesce")
        engine.resume()
        cli.join(30)

        assert "sync" in result, "tenantctl sync did not finish"
        outcome = result["sync"]
        assert outcome.exit_code == 0, outcome.output
        document = yaml.safe_load(outcome.stdout)
        by_tenant = {op["tenant"]: op for op in document["operations"]}
        assert by_tenant["acme"]["status"] == "succeeded"
        assert _operation(client, queued_by_api)["supersededBy"] == by_tenant["acme"]["id"]
        assert wait_for(client, first.json()["operation"]["id"])["status"] == "succeeded"

    acme_runs = [call.operation_id for call in engine.calls_for(ACME)]
    assert acme_runs == [first.json()["operation"]["id"], by_tenant["acme"]["id"]]  # 3 requests, 2 runs
    assert engine.max_overlap_per_stack[ACME] == 1  # never at once, whichever side ran it


def _operation(client: Any, operation_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/api/v1/operations/{operation_id}").json()
    return body


def _status(client: Any, operation_id: str) -> str:
    return str(_operation(client, operation_id)["status"])


def test_the_cli_says_when_the_shared_queue_cannot_be_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENANCY_SERVICE_BACKEND", "redis")
    monkeypatch.setenv("TENANCY_SERVICE_REDIS_URL", "redis://:hunter2@127.0.0.1:1/0")  # nothing listens
    monkeypatch.setattr(operations, "make_engine", lambda _settings: TenantEngine())

    result = CliRunner().invoke(tenantctl, ["stacks", "--project", str(tmp_path)])

    assert result.exit_code == 3
    assert "cannot reach the Redis queue at redis://127.0.0.1:1/0" in result.output
    assert "hunter2" not in result.output


def test_the_cli_refuses_a_redis_queue_without_an_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENANCY_SERVICE_BACKEND", "redis")

    result = CliRunner().invoke(tenantctl, ["stacks", "--project", str(tmp_path)])

    assert result.exit_code == 2
    assert "TENANCY_SERVICE_REDIS_SENTINELS" in result.output


def test_the_cli_shows_the_progress_of_its_operation_that_a_service_worker_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tenancy.automation.redis_queue import RedisOperationQueue
    from tenancy.automation.worker import Worker

    queue = RedisOperationQueue(fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    service_engine = TenantEngine(delay=0.5)
    operation = queue.submit(ACME, OperationKind.up, spec={"name": "acme"}, requested_by="cli:ci")
    service_worker = Worker(queue, service_engine, max_parallel=1, worker_id="service", poll_interval=0.01)
    service_worker.start()
    try:
        _until(lambda: queue.get(operation.id).status is OperationStatus.running, "the service to claim it")  # type: ignore[union-attr]
        monkeypatch.setattr(operations.sys.stderr, "isatty", lambda: False)
        [outcome] = operations._run(queue, TenantEngine(), [operation], max_parallel=1, as_json=False)
    finally:
        service_worker.stop(timeout=10)

    assert outcome.status is OperationStatus.succeeded
    progress = capsys.readouterr().err
    assert progress.count(f"[dev.acme] up started (operation {operation.id[:8]})") == 1
    assert "[dev.acme] up dev.acme succeeded" in progress
    assert len(service_engine.calls_for(ACME)) == 1  # run once, by the service; the CLI only followed
