"""A version can still be taken back over an update that never reached Pulumi, however it was
handed back or recovered: a hand-back before Pulumi started (the backup before an upgrade, a lock
wait) is recorded apart from one mid-update, and the worker's recovery of a stack flagged by another
operation is not this update's (outside review diff7)."""

from __future__ import annotations

from pathlib import Path

from tenancy.automation.contract import OperationKind, StackRef
from tenancy.automation.errors import StackConfigMissing
from tenancy.service.core.incarnation import incarnation_of
from tests.service.conftest import AppFactory, Issuer, LiveServer, spec, wait_for

ACME = "/api/v1/environments/dev/tenants/acme"
STACK = StackRef("dev", "acme")
OLD, NEW = "v1.18.2", "v1.19.0"


def _create(server: LiveServer, issuer: Issuer) -> None:
    with server.client(issuer.admin_of("acme")) as client:
        created = client.put(ACME, json=spec("acme", qdrant={"enabled": True, "version": OLD}))
        assert created.status_code == 202, created.text
        assert wait_for(client, created.json()["operation"]["id"])["status"] == "succeeded"


def test_a_version_is_taken_back_over_an_update_handed_back_before_pulumi_started(
    tmp_path: Path, make_app: AppFactory, issuer: Issuer
) -> None:
    state = tmp_path / "state"
    first, engine = make_app(state_dir=state)
    with LiveServer(first) as server:
        _create(server, issuer)
    second, _ = make_app(engine, state_dir=state, workers=0)
    queue = second.state.backends.queue
    with LiveServer(second) as server, server.client(issuer.admin_of("acme")) as client:
        bumped = client.patch(ACME, json={"qdrant": {"version": NEW}})
        assert bumped.status_code == 202, bumped.text
        op = bumped.json()["operation"]["id"]
        claimed = queue.claim_next(worker_id="w")  # engine_started = 0: backup / foreign-lock wait
        assert claimed is not None and claimed.id == op
        queue.requeue_claimed("w", reason="the service stopped while this operation was running")
        assert not queue.was_interrupted(STACK)  # the queue itself knows Pulumi never started
        assert [e.kind for e in queue.events(op)] == ["recovery"]
        back = client.patch(ACME, json={"qdrant": {"version": OLD}})
        assert back.status_code == 202, (back.status_code, back.text)


def test_a_version_is_taken_back_over_an_update_that_only_recovered_another_operations_stack(
    tmp_path: Path, make_app: AppFactory, issuer: Issuer
) -> None:
    state = tmp_path / "state"
    first, engine = make_app(state_dir=state)
    with LiveServer(first) as server:
        _create(server, issuer)
    second, _ = make_app(engine, state_dir=state, workers=0)
    queue = second.state.backends.queue
    with LiveServer(second):
        # `tenantctl refresh` on this queue, Ctrl-C'd mid-refresh: failed 'interrupted', stack flagged.
        marker = incarnation_of(second.state.backends.repository, STACK)  # as the CLI's submit records
        refresh = queue.submit(
            STACK, OperationKind.refresh, spec=None, requested_by="user:ops", incarnation=marker
        )
        assert queue.claim_next(worker_id="cli").id == refresh.id
        queue.mark_engine_started(refresh.id)
        queue.abandon("cli", reason="interrupted (Ctrl-C)")
        assert queue.was_interrupted(STACK)
    engine.fail_next(STACK, StackConfigMissing("stack dev.acme needs the secret config vault:token"))
    third, _ = make_app(engine, state_dir=state)
    queue = third.state.backends.queue
    with LiveServer(third) as server, server.client(issuer.admin_of("acme")) as client:
        bumped = client.patch(ACME, json={"qdrant": {"version": NEW}})
        assert bumped.status_code == 202, bumped.text
        done = wait_for(client, bumped.json()["operation"]["id"])
        assert done["status"] == "failed" and done["summary"]["code"] == "config_missing", done
        kinds = [(e.kind, e.status) for e in queue.events(done["id"])]
        assert ("recovery", "started") in kinds, kinds  # the refresh's flag, recovered by this update
        back = client.patch(ACME, json={"qdrant": {"version": OLD}})
        assert back.status_code == 202, (back.status_code, back.text)
