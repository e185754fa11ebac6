"""A version or size is not taken back over an update that may have applied part of itself, whatever
became of it afterwards: the stack's interrupted flag is cleared by the recovery at the start of the
update's next attempt, before that attempt reaches Pulumi, so the attempt's own outcome (a failure
before Pulumi, or a hand-back while it waits for a lock) must not hide the first one (outside review
diff6). The queue's record of a hand-back says so (``TenantChanges._may_have_applied``). And it can
still be taken back over an update that never reached Pulumi, however it was handed back or
recovered: a hand-back before Pulumi started (the backup before an upgrade, a lock wait) is recorded
apart from one mid-update, and the worker's recovery of a stack flagged by another operation is not
this update's (outside review diff7)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tenancy.automation.contract import OperationKind, StackRef
from tenancy.automation.errors import StackConfigMissing
from tenancy.service.core.incarnation import incarnation_of
from tests.service.conftest import AppFactory, Issuer, LiveServer, spec, wait_for

ACME = "/api/v1/environments/dev/tenants/acme"
STACK = StackRef("dev", "acme")
OLD, NEW = "v1.18.2", "v1.19.0"


def _acme_applied_at_old(tmp_path: Path, make_app: AppFactory, issuer: Issuer) -> tuple[Path, Any, Any]:
    """acme created at OLD and applied by a first service; its state directory and engine, and the
    next service on them (no workers: the test runs the queue's steps itself)."""
    state = tmp_path / "state"
    first, engine = make_app(state_dir=state)
    with LiveServer(first) as server, server.client(issuer.admin_of("acme")) as client:
        created = client.put(ACME, json=spec("acme", qdrant={"enabled": True, "version": OLD}))
        assert created.status_code == 202, created.text
        assert wait_for(client, created.json()["operation"]["id"])["status"] == "succeeded"
    second, _ = make_app(engine, state_dir=state, workers=0)
    return state, engine, second


def _upgrade_interrupted_mid_pulumi(server: LiveServer, issuer: Issuer, queue) -> str:
    with server.client(issuer.admin_of("acme")) as client:
        bumped = client.patch(ACME, json={"qdrant": {"version": NEW}})
        assert bumped.status_code == 202, bumped.text
    crashed = queue.claim_next(worker_id="crashed-process")
    assert crashed is not None and crashed.id == bumped.json()["operation"]["id"]
    queue.mark_engine_started(crashed.id)  # Pulumi works on the stack: part of v1.19.0 applied
    queue.requeue_interrupted()  # the restart
    assert queue.get(crashed.id).status.value == "queued" and queue.was_interrupted(STACK)
    return crashed.id


def test_a_rerun_that_recovers_then_fails_before_pulumi_keeps_the_downgrade_refused(
    tmp_path: Path, make_app: AppFactory, issuer: Issuer
) -> None:
    state, engine, second = _acme_applied_at_old(tmp_path, make_app, issuer)
    with LiveServer(second) as server:
        op = _upgrade_interrupted_mid_pulumi(server, issuer, second.state.backends.queue)
    # The restarted worker: recovery (refresh: no Vault token needed) clears the flag, then the up's
    # own config needs vault:token, which this pod lacks.
    engine.fail_next(STACK, StackConfigMissing("stack dev.acme needs the secret config vault:token"))
    third, _ = make_app(engine, state_dir=state)
    queue = third.state.backends.queue
    with LiveServer(third) as server, server.client(issuer.admin_of("acme")) as client:
        done = wait_for(client, op)
        assert done["status"] == "failed" and done["summary"]["code"] == "config_missing", done
        assert not queue.was_interrupted(STACK)  # recovery cleared it
        assert STACK in engine.recoveries
        back = client.patch(ACME, json={"qdrant": {"version": OLD}})
        assert back.status_code == 422, (back.status_code, back.text)


def test_a_rerun_handed_back_while_it_waits_for_a_lock_keeps_the_downgrade_refused(
    tmp_path: Path, make_app: AppFactory, issuer: Issuer
) -> None:
    _, _, second = _acme_applied_at_old(tmp_path, make_app, issuer)
    queue = second.state.backends.queue
    with LiveServer(second) as server, server.client(issuer.admin_of("acme")) as client:
        op = _upgrade_interrupted_mid_pulumi(server, issuer, queue)
        # The next attempt, as worker.py runs it (worker.py:478, :851-858, :562-564), then a stop:
        again = queue.claim_next(worker_id="w2")
        assert again is not None and again.id == op
        queue.mark_engine_started(op)  # worker.py:478
        queue.clear_interrupted(STACK)  # _recover_if_needed after engine.recover
        queue.mark_engine_started(op, started=False)  # _run_engine: StackLocked, waiting (:564)
        queue.requeue_claimed("w2", reason="worker stopping")  # shutdown while it waits
        assert queue.get(op).status.value == "queued"
        assert not queue.was_interrupted(STACK)
        back = client.patch(ACME, json={"qdrant": {"version": OLD}})
        assert back.status_code == 422, (back.status_code, back.text, queue.get(op).status)


def test_a_version_is_taken_back_over_an_update_handed_back_before_pulumi_started(
    tmp_path: Path, make_app: AppFactory, issuer: Issuer
) -> None:
    _, _, second = _acme_applied_at_old(tmp_path, make_app, issuer)
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
    state, engine, second = _acme_applied_at_old(tmp_path, make_app, issuer)
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
