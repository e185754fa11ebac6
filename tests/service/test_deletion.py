"""Deleting a tenant destroys its stack after what was queued before (the update turning deletion
protection off), and a destroy that fails leaves the tenant readable and the DELETE retryable."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tenancy.automation.contract import OperationKind, StackRef
from tests.service.conftest import AppFactory, Issuer, LiveServer, spec, wait_for

ACME = "/api/v1/environments/dev/tenants/acme"
STACK = StackRef("dev", "acme")


def _until_running(engine: Any) -> None:
    deadline = time.monotonic() + 5
    while engine.running(STACK) == 0:
        assert time.monotonic() < deadline, "the update never started"
        time.sleep(0.01)


def test_turning_protection_off_then_deleting_while_an_update_runs_destroys_the_stack(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    app, engine = make_app()
    server: LiveServer = serve(app)
    with server.client(issuer.admin_of("acme")) as client:
        wait_for(
            client, client.put(ACME, json=spec("acme", deletionProtection=True)).json()["operation"]["id"]
        )
        engine.pause()
        try:
            client.patch(ACME, json={"displayName": "busy"})  # an update is running...
            _until_running(engine)
            unprotect = client.patch(ACME, json={"deletionProtection": False}).json()["operation"]["id"]
            destroy = client.delete(ACME).json()["operation"]["id"]  # ...while these two queue behind it
        finally:
            engine.resume()
        destroyed = wait_for(client, destroy)
        unprotected = client.get(f"/api/v1/operations/{unprotect}").json()
    assert unprotected["status"] == "succeeded"  # not superseded by the destroy
    assert destroyed["status"] == "succeeded", destroyed["summary"]
    assert STACK not in engine.stacks()


def test_a_failed_destroy_leaves_the_tenant_readable_and_delete_retries_it(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    app, engine = make_app()
    server: LiveServer = serve(app)
    with server.client(issuer.admin_of("acme")) as client:
        wait_for(client, client.put(ACME, json=spec("acme", displayName="ACME")).json()["operation"]["id"])
        engine.fail_next(STACK, "namespace tenant-acme is stuck on a finalizer")
        failed = wait_for(client, client.delete(ACME).json()["operation"]["id"])
        assert failed["status"] == "failed"

        tenant = client.get(ACME)
        assert tenant.status_code == 200
        body = tenant.json()
        assert body["deleted"] is True and body["etag"] is None
        assert body["spec"]["displayName"] == "ACME"
        assert body["status"]["phase"] == "failed"
        assert "finalizer" in body["status"]["message"] and "DELETE" in body["status"]["message"]
        assert body["lastOperation"]["id"] == failed["id"]

        retried = client.delete(ACME)
        assert retried.status_code == 202
        assert retried.json()["operation"]["kind"] == "destroy" and retried.json()["commit"] is None
        assert wait_for(client, retried.json()["operation"]["id"])["status"] == "succeeded"
        gone = [client.get(ACME), client.delete(ACME)]
    assert [r.status_code for r in gone] == [404, 404]
    assert STACK not in engine.stacks()


def test_deleting_while_a_destroy_is_under_way_answers_with_that_destroy(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    app, engine = make_app()
    server: LiveServer = serve(app)
    with server.client(issuer.admin_of("acme")) as client:
        wait_for(client, client.put(ACME, json=spec("acme")).json()["operation"]["id"])
        engine.pause()
        try:
            first = client.delete(ACME).json()["operation"]["id"]
            deleting = client.get(ACME).json()["status"]
            again = client.delete(ACME)
        finally:
            engine.resume()
        wait_for(client, first)
    assert deleting.get("phase") == "deleting"
    assert again.status_code == 202 and again.json()["operation"]["id"] == first


def test_a_stack_last_applied_with_protection_on_is_unprotected_before_the_destroy(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    app, engine = make_app()
    server: LiveServer = serve(app)
    client: httpx.Client
    with server.client(issuer.admin_of("acme")) as client:
        wait_for(
            client, client.put(ACME, json=spec("acme", deletionProtection=True)).json()["operation"]["id"]
        )
        engine.fail_next(STACK, "the API server timed out")  # the update turning protection off fails
        unprotect = client.patch(ACME, json={"deletionProtection": False}).json()["operation"]["id"]
        assert wait_for(client, unprotect)["status"] == "failed"
        destroy = client.delete(ACME).json()["operation"]["id"]
        assert wait_for(client, destroy)["status"] == "succeeded"
        kinds = [op["kind"] for op in client.get(f"{ACME}/operations").json()["operations"]]
    assert kinds[:2] == ["destroy", "up"]  # an update with protection off ran first
    assert STACK not in engine.stacks()


def test_a_stack_last_applied_with_protection_on_is_unprotected_however_many_previews_came_since(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    """The scan for the last applied update looked at the stack's newest 50 operations only: after 60
    previews (a CI job previewing every push) the destroy was queued without the update turning
    protection off, and failed on the protected stack."""
    app, engine = make_app()
    server: LiveServer = serve(app)
    client: httpx.Client
    queue = app.state.backends.queue
    with server.client(issuer.admin_of("acme")) as client:
        wait_for(
            client, client.put(ACME, json=spec("acme", deletionProtection=True)).json()["operation"]["id"]
        )
        engine.fail_next(STACK, "the API server timed out")  # the update turning protection off fails
        unprotect = client.patch(ACME, json={"deletionProtection": False}).json()["operation"]["id"]
        assert wait_for(client, unprotect)["status"] == "failed"
        incarnation = queue.recent(stack=STACK, limit=1)[0].incarnation
        previews = [
            queue.submit(
                STACK, OperationKind.preview, spec=spec("acme"), requested_by="ci", incarnation=incarnation
            )
            for _ in range(60)
        ]
        wait_for(client, previews[-1].id)
        destroy = client.delete(ACME).json()["operation"]["id"]
        assert wait_for(client, destroy)["status"] == "succeeded"
        kinds = [op.kind for op in queue.recent(stack=STACK, limit=2)]
    assert kinds == [OperationKind.destroy, OperationKind.up]  # an update with protection off ran first
    assert STACK not in engine.stacks()
