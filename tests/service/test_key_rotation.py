"""Qdrant key rotation through the real HTTP service: the caller's commit, the queued update, the stable
refusals and the audit; then the service's own revocation once the grace period is over (idempotent,
recovering an update that was never queued), and what the real tenant program declares from each."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI

from tenancy.render.runtime import StackCapture
from tests.service.conftest import AppFactory, Issuer, LiveServer, create_tenant, spec, wait_for

TENANT = "/api/v1/environments/dev/tenants/acme"
ROTATE = f"{TENANT}/qdrant/keys/rotate"


def audit_lines(app: FastAPI) -> list[dict[str, Any]]:
    path = Path(app.state.backends.settings.audit_target)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def record_of(app: FastAPI) -> dict[str, Any]:
    document = app.state.backends.repository.read("dev", "acme")
    return dict(document["qdrant"]["keyRotation"])


def server_config(capture: StackCapture) -> dict[str, Any]:
    for resource in capture.kubernetes_objects():
        if resource.kind == "Secret" and resource.inputs["metadata"]["name"] == "qdrant-server-keys":
            return dict(yaml.safe_load(resource.inputs["stringData"]["local.yaml"])["service"])
    raise AssertionError("no qdrant-server-keys Secret")


def program_for(
    document: dict[str, Any], project: Path, run_stack: Callable[..., StackCapture]
) -> StackCapture:
    """The real tenant program under mocks, given the spec an operation carries to the worker."""
    (project / "tenants" / "dev" / "acme.yaml").write_text(yaml.safe_dump(document))
    return run_stack("dev.acme", project)


def test_a_tenant_admin_rotates_and_the_service_revokes_after_the_grace_period(
    make_app: AppFactory,
    serve: Callable[[FastAPI], LiveServer],
    issuer: Issuer,
    scratch_project: Path,
    run_stack: Callable[..., StackCapture],
) -> None:
    app, _ = make_app(key_grace_check_seconds=0)  # the sweep is driven below, with a clock
    server = serve(app)
    with server.client(issuer.admin_of("acme")) as client:
        wait_for(client, client.put(TENANT, json=spec("acme")).json()["operation"]["id"])
        assert client.get(ROTATE).json()["phase"] == "none"

        accepted = client.post(ROTATE, json={"grace": "2h"})
        assert accepted.status_code == 202, accepted.text
        body = accepted.json()
        assert body["changed"] and body["operation"]["kind"] == "up"
        head = app.state.backends.repository.history("dev", "acme")[0]
        assert head.sha == body["commit"] and head.author_email == "alice@example.com"
        record = record_of(app)
        assert record["generation"] == 1 and record["requestedBy"].startswith("user:")
        done = wait_for(client, body["operation"]["id"])
        assert done["status"] == "succeeded"

        status = client.get(ROTATE).json()
        assert status["phase"] == "grace" and status["oldKeysAccepted"] and status["appliedGeneration"] == 1
        assert status["graceUntil"] and status["revokedAt"] is None

        refused = client.post(ROTATE, json={})
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "rotation_in_progress"

    # What the worker applies: Qdrant accepts both generations.
    during = program_for(
        app.state.backends.queue.get(body["operation"]["id"]).spec, scratch_project, run_stack
    )
    assert "alt_api_key" in server_config(during)

    # The grace period is over: one sweep commits the revocation and queues the update, once.
    rotations = app.state.backends.rotations
    rotations.clock = lambda: datetime.now(UTC) + timedelta(hours=3)
    [revoking] = rotations.end_due_grace_periods()
    assert rotations.end_due_grace_periods() == []
    assert record_of(app)["revokedAt"]
    head = app.state.backends.repository.history("dev", "acme")[0]
    assert head.author_name == "Tenant API key rotation"
    assert revoking.requested_by == "tenant-api:key-rotation"
    after = program_for(revoking.spec, scratch_project, run_stack)
    assert "alt_api_key" not in server_config(after)

    with server.client(issuer.viewer_of("acme")) as viewer:
        wait_for(viewer, revoking.id)
        status = viewer.get(ROTATE).json()
        assert status["phase"] == "complete" and not status["oldKeysAccepted"]
        assert viewer.post(ROTATE, json={}).status_code == 403

    actions = [(line["action"], line["outcome"], line.get("reason")) for line in audit_lines(app)]
    assert ("qdrant.keys.rotate", "accepted", None) in actions
    assert ("qdrant.keys.rotate", "refused", "rotation_in_progress") in actions
    assert ("qdrant.keys.revoke", "accepted", None) in actions


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [({"grace": "30d"}, "invalid_request", "grace"), ({"grace": "soon"}, "invalid_request", None)],
)
def test_a_grace_out_of_bounds_is_refused_and_nothing_committed(
    make_app: AppFactory,
    serve: Callable[[FastAPI], LiveServer],
    issuer: Issuer,
    body: dict[str, Any],
    code: str,
    field: str | None,
) -> None:
    app, _ = make_app(key_grace_check_seconds=0, workers=0)
    create_tenant(app, "acme")
    before = app.state.backends.repository.read_text("dev", "acme")
    with serve(app).client(issuer.admin_of("acme")) as client:
        refused = client.post(ROTATE, json=body)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == code
    if field:
        assert refused.json()["error"]["details"][0]["field"] == field
    assert app.state.backends.repository.read_text("dev", "acme") == before


def test_a_tenant_without_qdrant_has_no_keys_to_rotate(
    make_app: AppFactory, serve: Callable[[FastAPI], LiveServer], issuer: Issuer
) -> None:
    app, _ = make_app(key_grace_check_seconds=0, workers=0)
    create_tenant(app, "acme", qdrant={"enabled": False})
    with serve(app).client(issuer.admin_of("acme")) as client:
        refused = client.post(ROTATE)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "qdrant_not_enabled"


def test_writes_keep_the_rotation_record_and_may_not_change_it(
    make_app: AppFactory, serve: Callable[[FastAPI], LiveServer], issuer: Issuer
) -> None:
    app, _ = make_app(key_grace_check_seconds=0, workers=0)
    create_tenant(app, "acme")
    with serve(app).client(issuer.admin_of("acme")) as client:
        assert client.post(ROTATE).status_code == 202
        record = record_of(app)
        # A PUT that leaves the record out keeps it; a PATCH that sends it as it is changes nothing.
        assert client.put(TENANT, json=spec("acme", displayName="Acme")).status_code == 202
        assert record_of(app) == record
        same = client.patch(TENANT, json={"qdrant": {"keyRotation": record}})
        assert same.status_code == 202
        forged = client.patch(
            TENANT, json={"qdrant": {"keyRotation": {**record, "revokedAt": "2026-01-01T00:00:00Z"}}}
        )
        assert forged.status_code == 422
        assert forged.json()["error"]["details"][0]["field"] == "qdrant.keyRotation"
        # Removing it is changing it (it was kept quietly, and an update queued: outside journey review).
        before = len(app.state.backends.queue.recent())
        removed = client.patch(TENANT, json={"qdrant": {"keyRotation": None}})
        assert removed.status_code == 422, removed.text
        assert removed.json()["error"]["details"][0]["field"] == "qdrant.keyRotation"
        assert len(app.state.backends.queue.recent()) == before
    assert record_of(app) == record


def test_a_revocation_committed_but_never_queued_is_queued_by_the_next_sweep(
    make_app: AppFactory, serve: Callable[[FastAPI], LiveServer], issuer: Issuer
) -> None:
    app, _ = make_app(key_grace_check_seconds=0)
    create_tenant(app, "acme")
    backends = app.state.backends
    with serve(app).client(issuer.admin_of("acme")) as client:
        rotated = client.post(ROTATE)
        assert rotated.status_code == 202
        # The new keys deployed: the previous ones may be revoked once the grace period is over.
        assert wait_for(client, rotated.json()["operation"]["id"])["status"] == "succeeded"
    rotations = backends.rotations
    rotations.clock = lambda: datetime.now(UTC) + timedelta(hours=2)
    submit = backends.queue.submit

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("queue down")

    backends.queue.submit = broken
    assert rotations.end_due_grace_periods() == []  # committed, not queued
    assert record_of(app)["revokedAt"]
    backends.queue.submit = submit
    [queued] = rotations.end_due_grace_periods()
    assert queued.spec["qdrant"]["keyRotation"]["revokedAt"] == record_of(app)["revokedAt"]
    assert rotations.end_due_grace_periods() == []
    outcomes = [(line["action"], line["outcome"]) for line in audit_lines(app)]
    assert ("qdrant.keys.revoke", "failed") in outcomes and ("qdrant.keys.revoke", "accepted") in outcomes


def test_the_service_ends_a_grace_period_that_ended_while_it_was_down(
    make_app: AppFactory, serve: Callable[[FastAPI], LiveServer], issuer: Issuer
) -> None:
    app, _ = make_app(key_grace_check_seconds=3600)  # only the sweep at start
    record = {
        "generation": 1,
        "startedAt": "2000-01-01T00:00:00Z",
        "graceUntil": "2000-01-01T01:00:00Z",
        "requestedBy": "user:alice",
    }
    create_tenant(app, "acme", qdrant={"enabled": True, "keyRotation": record})
    _deployed_long_ago(app)
    with serve(app).client(issuer.admin_of("acme")) as client:
        deadline = time.monotonic() + 10
        while "revokedAt" not in record_of(app):
            assert time.monotonic() < deadline, "the start-up sweep did not revoke"
            time.sleep(0.02)
        ups = client.get(f"{TENANT}/operations").json()["operations"]
        assert any(op["requestedBy"] == "tenant-api:key-rotation" for op in ups)


def _deployed_long_ago(app: FastAPI) -> None:
    """The file as it is, applied by an update that finished in 2000 (before the service went down)."""
    from tenancy.automation.contract import OperationKind, OperationStatus, OperationSummary, StackRef
    from tenancy.service.core.incarnation import incarnation_of

    backends = app.state.backends
    stack = StackRef("dev", "acme")
    queue, clock = backends.queue, backends.queue._clock
    backends.queue._clock = lambda: datetime(2000, 1, 1, 2, tzinfo=UTC).timestamp()
    try:
        document = backends.repository.read("dev", "acme")
        incarnation = incarnation_of(backends.repository, stack)
        queue.submit(stack, OperationKind.up, spec=document, requested_by="user:a", incarnation=incarnation)
        claimed = queue.claim_next()
        queue.finish(claimed.id, OperationStatus.succeeded, OperationSummary())
    finally:
        backends.queue._clock = clock


def test_a_rotation_whose_update_failed_never_revokes_the_keys_in_use(
    make_app: AppFactory, serve: Callable[[FastAPI], LiveServer], issuer: Issuer
) -> None:
    """Found by an outside journey review: the update deploying a rotation's new keys failed, yet the
    status said they were being deployed, and once the grace period was over the previous keys were
    revoked; a second rotation then took the slot of the keys clients held, so the next update that
    succeeded dropped them at once. Now the phase says ``stalled``, no revocation comes before the new
    keys are deployed (and the shortest grace period after that), and no rotation starts meanwhile."""
    from tenancy.automation.contract import StackRef
    from tests.service.conftest import TenantEngine

    engine = TenantEngine()
    app, _ = make_app(engine, key_grace_check_seconds=0)
    create_tenant(app, "acme")
    server = serve(app)
    rotations = app.state.backends.rotations
    with server.client(issuer.admin_of("acme")) as client:
        engine.fail_next(StackRef("dev", "acme"), "the cluster refused it")
        rotated = client.post(ROTATE, json={"grace": "15m"})
        assert wait_for(client, rotated.json()["operation"]["id"])["status"] == "failed"
        assert client.get(ROTATE).json()["phase"] == "stalled"
        rotations.clock = lambda: datetime.now(UTC) + timedelta(hours=1)  # the grace period is over
        assert rotations.end_due_grace_periods() == []
        assert "revokedAt" not in record_of(app)
        again = client.post(ROTATE, json={"grace": "15m"})
        assert again.status_code == 409 and again.json()["error"]["code"] == "rotation_in_progress"
        assert "not deployed yet" in again.json()["error"]["message"]
        # Queued again and deployed: revoked only the shortest grace period after that.
        redeployed = client.patch(TENANT, json={})
        assert wait_for(client, redeployed.json()["operation"]["id"])["status"] == "succeeded"
        assert client.get(ROTATE).json()["phase"] == "grace"
        rotations.clock = lambda: datetime.now(UTC) + timedelta(minutes=10)
        assert rotations.end_due_grace_periods() == []
        rotations.clock = lambda: datetime.now(UTC) + timedelta(minutes=16)
        [revoking] = rotations.end_due_grace_periods()
        assert record_of(app)["revokedAt"] and revoking.requested_by == "tenant-api:key-rotation"


@dataclass
class CliAgainstTheService:
    """``acme`` committed and served (the start reconcile's update of it done), and ``tenantctl``
    calling the service as acme's tenant-admin."""

    app: FastAPI
    engine: Any
    server: LiveServer

    @classmethod
    def start(cls, make_app: AppFactory, serve: Callable[[FastAPI], LiveServer]) -> CliAgainstTheService:
        from tenancy.automation.contract import StackRef

        app, engine = make_app(key_grace_check_seconds=0)
        create_tenant(app, "acme")
        server = serve(app)
        deadline = time.monotonic() + 10
        stack = StackRef("dev", "acme")
        while not (ops := app.state.backends.queue.recent(stack=stack)) or not all(
            op.status.finished for op in ops
        ):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        return cls(app, engine, server)

    def tenantctl(self, issuer: Issuer, *arguments: str) -> Any:
        from typer.testing import CliRunner

        from tenancy.cli import app as tenantctl

        remote = ["--url", self.server.url, "--token", issuer.admin_of("acme")]
        return CliRunner().invoke(tenantctl, [*arguments, *remote])


def test_tenantctl_rotate_keys_against_the_service(
    make_app: AppFactory, serve: Callable[[FastAPI], LiveServer], issuer: Issuer
) -> None:
    service = CliAgainstTheService.start(make_app, serve)
    app = service.app
    result = service.tenantctl(issuer, "rotate-keys", "acme", "--env", "dev", "--grace", "30m")
    # It follows the update deploying the new keys to its end, as backup and restore follow theirs.
    assert result.exit_code == 0, result.output
    assert "update succeeded" in result.stdout and "generation 1" in result.stdout
    assert "phase grace: both generations' keys work until" in result.stdout
    assert record_of(app)["generation"] == 1
    again = service.tenantctl(issuer, "rotate-keys", "acme", "--env", "dev")
    assert again.exit_code == 2 and "rotation_in_progress" in again.output
    status = service.tenantctl(issuer, "rotate-keys", "acme", "--env", "dev", "--status", "--json")
    assert status.exit_code == 0 and json.loads(status.stdout)["phase"] == "grace"
    assert record_of(app)["generation"] == 1


def test_tenantctl_rotate_keys_whose_update_fails_exits_3_and_says_the_old_keys_keep_working(
    make_app: AppFactory, serve: Callable[[FastAPI], LiveServer], issuer: Issuer
) -> None:
    from tenancy.automation.contract import StackRef

    service = CliAgainstTheService.start(make_app, serve)
    service.engine.fail_next(StackRef("dev", "acme"), "the update failed")

    result = service.tenantctl(issuer, "rotate-keys", "acme", "--env", "dev", "--grace", "30m")

    assert result.exit_code == 3, result.output  # a failed operation, as for backup and restore
    assert "update failed: the update failed" in result.stdout
    assert (
        "phase stalled: the update deploying the new keys failed: the keys in use keep working"
        in result.stdout
    )
    # Within the grace period it would have had, another rotation is refused for what is true: the
    # new keys were never deployed (not "the old keys work until graceUntil; rotate after it").
    again = service.tenantctl(issuer, "rotate-keys", "acme", "--env", "dev", "--json")
    assert again.exit_code == 2
    error = json.loads(again.stdout)["error"]
    assert error["code"] == "rotation_in_progress"
    assert "are not deployed yet" in error["message"] and "still work until" not in error["message"]


@pytest.mark.parametrize(
    "command",
    [
        ["rotate-keys", "acme", "--env", "dev", "--grace", "1m"],  # refused: out of range
        ["rotate-keys", "acme", "--env", "dev", "--status", "--token", "garbage"],  # not a token
        ["requests", "list", "--token", "garbage"],
        ["requests", "approve", "cr-000000000000"],  # no such request
    ],
)
def test_service_backed_commands_print_their_errors_as_json_with_json(
    command: list[str], make_app: AppFactory, serve: Callable[[FastAPI], LiveServer], issuer: Issuer
) -> None:
    from typer.testing import CliRunner

    from tenancy.cli import app as tenantctl

    app, _ = make_app(workers=0)
    create_tenant(app, "acme")
    server = serve(app)
    token = issuer.platform_admin()
    arguments = [*command, "--url", server.url, "--json"]
    if "--token" not in command:
        arguments += ["--token", token]

    result = CliRunner().invoke(tenantctl, arguments)

    assert result.exit_code == 2, result.output
    error = json.loads(result.stdout)["error"]
    assert set(error) == {"code", "message"} and error["code"] and error["message"]


def test_an_unreachable_service_is_service_unreachable_in_json() -> None:
    from typer.testing import CliRunner

    from tenancy.cli import app as tenantctl
    from tests.ports import listening_socket

    probe = listening_socket()
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    for command in (["rotate-keys", "acme", "--env", "dev", "--status"], ["requests", "list"]):
        result = CliRunner().invoke(
            tenantctl, [*command, "--url", f"http://127.0.0.1:{port}", "--token", "t", "--json"]
        )
        assert result.exit_code == 3, result.output
        assert json.loads(result.stdout)["error"]["code"] == "service_unreachable"


def test_tenantctl_rotate_keys_follows_the_update_that_superseded_its_own(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    import threading

    from tenancy.automation.contract import StackRef

    service = CliAgainstTheService.start(make_app, serve)
    engine, server, queue = service.engine, service.server, service.app.state.backends.queue
    stack = StackRef("dev", "acme")
    engine.pause()  # the worker holds the next run half-way: a later update queues behind it
    with server.client(issuer.admin_of("acme")) as client:
        assert client.patch(TENANT, json={"labels": {"a": "1"}}).status_code == 202
        deadline = time.monotonic() + 10
        while engine.running(stack) == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        result: dict[str, Any] = {}
        thread = threading.Thread(
            target=lambda: result.setdefault(
                "r", service.tenantctl(issuer, "rotate-keys", "acme", "--env", "dev", "--grace", "30m")
            )
        )
        thread.start()
        deadline = time.monotonic() + 10
        while not any(op.status.value == "queued" for op in queue.recent(stack=stack)):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # Someone else changes the tenant while the rotation's update waits: it is superseded.
        assert client.patch(TENANT, json={"labels": {"b": "2"}}).status_code == 202
    engine.resume()
    thread.join(30)
    out = result["r"]

    # The later update deployed the new keys: the command follows it and reports success.
    assert out.exit_code == 0, out.output
    assert "update succeeded" in out.stdout
