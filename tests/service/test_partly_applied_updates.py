"""A version or size is not taken back over an update that may have applied part of itself, whatever
became of it afterwards: the stack's interrupted flag is cleared by the recovery at the start of the
update's next attempt, before that attempt reaches Pulumi, so the attempt's own outcome (a failure
before Pulumi, or a hand-back while it waits for a lock) must not hide the first one (outside review
diff6). The queue's record of a hand-back says so (``TenantChanges._may_have_applied``)."""

from __future__ import annotations

from pathlib import Path

from tenancy.automation.contract import StackRef
from tenancy.automation.errors import StackConfigMissing
from tests.service.conftest import AppFactory, Issuer, LiveServer, spec, wait_for

ACME = "/api/v1/environments/dev/tenants/acme"
STACK = StackRef("dev", "acme")
OLD, NEW = "v1.18.2", "v1.19.0"


def _create(server: LiveServer, issuer: Issuer) -> None:
    with server.client(issuer.admin_of("acme")) as client:
        created = client.put(ACME, json=spec("acme", qdrant={"enabled": True, "version": OLD}))
        assert created.status_code == 202, created.text
        assert wait_for(client, created.json()["operation"]["id"])["status"] == "succeeded"


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
    state = tmp_path / "state"
    first, engine = make_app(state_dir=state)
    with LiveServer(first) as server:
        _create(server, issuer)
    second, _ = make_app(engine, state_dir=state, workers=0)
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
    state = tmp_path / "state"
    first, engine = make_app(state_dir=state)
    with LiveServer(first) as server:
        _create(server, issuer)
    second, _ = make_app(engine, state_dir=state, workers=0)
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
