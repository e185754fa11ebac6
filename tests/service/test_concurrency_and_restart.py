"""Concurrent writes lose nothing and coalesce into one update; a restart loses no operation."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenancy.automation.contract import OperationStatus, StackRef
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.automation.storage import QUEUE_FILE
from tenancy.automation.worker import Worker
from tests.service.conftest import AppFactory, Issuer, LiveServer, spec, wait_for

ACME = "/api/v1/environments/dev/tenants/acme"
WRITERS = 12


def _file_at(repo: Path, sha: str) -> dict[str, Any]:
    text = subprocess.run(
        ["git", "show", f"{sha}:tenants/dev/acme.yaml"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    document: dict[str, Any] = yaml.safe_load(text)
    return document


def test_concurrent_writes_end_in_one_consistent_spec_and_one_coalesced_update(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    app, engine = make_app(workers=0)  # nothing runs while the writes land: they must coalesce
    server: LiveServer = serve(app)
    token = issuer.admin_of("acme")

    def write(index: int) -> dict[str, Any]:
        with server.client(token) as client:
            response = client.put(ACME, json=spec("acme", displayName=f"writer-{index}"))
            assert response.status_code == 202, response.text
            body: dict[str, Any] = response.json()
            return body

    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        answers = list(pool.map(write, range(WRITERS)))

    backends = server.app.state.backends
    repository = backends.repository
    history = repository.history("dev", "acme")
    assert len(history) == WRITERS  # every write is a commit: none lost, none merged away
    assert {c.sha for c in history} == {a["commit"] for a in answers}
    written = [_file_at(repository.root, c.sha)["displayName"] for c in history]
    assert sorted(written) == sorted(f"writer-{i}" for i in range(WRITERS))
    final = yaml.safe_load(repository.read_text("dev", "acme"))
    assert final == _file_at(repository.root, history[0].sha)  # the file is the last commit

    stack = StackRef("dev", "acme")
    operations = backends.queue.recent(stack=stack)
    queued = [op for op in operations if op.status is OperationStatus.queued]
    assert len(operations) == WRITERS
    assert len(queued) == 1 and queued[0].spec == final  # the one that runs applies what git holds last
    assert all(op.superseded_by for op in operations if op is not queued[0])

    Worker(backends.queue, engine, max_parallel=2).run_until_idle()
    calls = engine.calls_for(stack)
    assert len(calls) == 1 and calls[0].spec == final


def test_concurrent_patches_to_different_fields_all_land(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    app, _ = make_app(workers=0)
    server: LiveServer = serve(app)
    token = issuer.admin_of("acme")
    with server.client(token) as client:
        client.put(ACME, json=spec("acme"))

    def patch(index: int) -> int:
        with server.client(token) as client:
            return client.patch(ACME, json={"labels": {f"team-{index}": "yes"}}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(patch, range(8))) == {202}
    final = yaml.safe_load(server.app.state.backends.repository.read_text("dev", "acme"))
    assert final["labels"] == {f"team-{i}": "yes" for i in range(8)}


def test_a_restart_mid_queue_loses_no_operation(tmp_path: Path, make_app: AppFactory, issuer: Issuer) -> None:
    state = tmp_path / "shared-state"
    first, _ = make_app(state_dir=state, workers=0)
    with LiveServer(first) as server:
        submitted = {}
        for name in ("one", "two", "three", "four"):
            with server.client(issuer.admin_of(name)) as client:
                answer = client.put(f"/api/v1/environments/dev/tenants/{name}", json=spec(name)).json()
                submitted[name] = answer["operation"]["id"]
        # A worker of the old process had taken the oldest operation, and handed its stack to Pulumi,
        # when the process died.
        crashed = server.app.state.backends.queue.claim_next(worker_id="crashed-process")
        assert crashed is not None and crashed.stack.tenant == "one"
        server.app.state.backends.queue.mark_engine_started(crashed.id)
    time.sleep(0.6)  # its heartbeat goes stale

    second, engine = make_app(state_dir=state, workers=2, worker_stale_after_seconds=0.5)
    with LiveServer(second) as server, server.client(issuer.platform_admin()) as client:
        finished = {name: wait_for(client, operation) for name, operation in submitted.items()}
    assert {name: op["status"] for name, op in finished.items()} == dict.fromkeys(submitted, "succeeded")
    assert finished["one"]["summary"]["recovered"] is True
    assert any(e["kind"] == "recovery" for e in finished["one"]["events"])
    assert {c.stack.tenant for c in engine.calls} == set(submitted)


def test_a_service_stopped_while_an_operation_waits_for_another_update_hands_it_back_unflagged(
    tmp_path: Path, make_app: AppFactory, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deploy's sync holds dev.acme when the service's worker takes acme's update; the service is
    # stopped (a rolling restart) while the update waits: it is requeued, not failed, and its stack is
    # not flagged, so the next start waits again instead of cancelling the deploy's update.
    monkeypatch.setenv("TENANCY_LOCK_WAIT_SECONDS", "600")
    state = tmp_path / "state"
    app, engine = make_app(state_dir=state, workers=1)
    engine.break_stack(StackRef("dev", "acme"))
    queue = app.state.backends.queue
    with LiveServer(app) as server, server.client(issuer.admin_of("acme")) as client:
        operation_id = client.put("/api/v1/environments/dev/tenants/acme", json=spec("acme")).json()[
            "operation"
        ]["id"]
        deadline = time.monotonic() + 20
        while not any("waiting up to 600 s" in (event.message or "") for event in queue.events(operation_id)):
            assert time.monotonic() < deadline, "the update never started waiting"
            time.sleep(0.05)

    reopened = SqliteOperationQueue(state / QUEUE_FILE)
    operation = reopened.get(operation_id)
    assert operation is not None and operation.status is OperationStatus.queued
    assert not reopened.was_interrupted(StackRef("dev", "acme"))
    assert engine.calls_for(StackRef("dev", "acme")) == [] and engine.recoveries == []
