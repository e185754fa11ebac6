"""Sync planning: which tenants are created, updated, left alone, destroyed or skipped, and why."""

from __future__ import annotations

from typing import Any

from tenancy.automation.contract import OperationKind, OperationStatus, OperationSummary
from tenancy.automation.fake_engine import FakeEngine
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.automation.sync import SyncAction, plan_sync, submit_plan
from tenancy.automation.worker import Worker

from .conftest import stack, tenant_spec


def applied(queue: SqliteOperationQueue, engine: FakeEngine, spec: dict[str, Any]) -> None:
    """Record a successful up of ``spec`` in the history and in the engine's backend."""
    operation = queue.submit(stack(spec["name"]), OperationKind.up, spec=spec, requested_by="t")
    claimed = queue.claim_next(worker_id="w", only={operation.id})
    assert claimed is not None
    queue.finish(claimed.id, OperationStatus.succeeded, OperationSummary())
    engine.deploy(stack(spec["name"]), spec)


def actions(plan: Any) -> dict[str, tuple[SyncAction, str]]:
    return {item.stack.tenant: (item.action, item.reason) for item in plan.items}


def test_new_changed_and_unchanged_tenants(queue: SqliteOperationQueue, engine: FakeEngine) -> None:
    applied(queue, engine, tenant_spec("same"))
    applied(queue, engine, tenant_spec("edited", plan="small"))

    plan = plan_sync(
        "dev",
        {
            "same": tenant_spec("same"),
            "edited": tenant_spec("edited", plan="medium"),
            "fresh": tenant_spec("fresh"),
        },
        history=queue,
        engine=engine,
    )

    result = actions(plan)
    assert result["same"][0] is SyncAction.unchanged
    assert result["edited"][0] is SyncAction.update and "spec changed" in result["edited"][1]
    assert result["fresh"][0] is SyncAction.create
    assert [item.stack.tenant for item in plan.to_run] == ["edited", "fresh"]


def test_key_order_in_the_file_is_not_a_change(queue: SqliteOperationQueue, engine: FakeEngine) -> None:
    applied(queue, engine, {"name": "acme", "plan": "small", "owners": ["a@acme.example"]})

    plan = plan_sync(
        "dev",
        {"acme": {"owners": ["a@acme.example"], "plan": "small", "name": "acme"}},
        history=queue,
        engine=engine,
    )

    assert actions(plan)["acme"][0] is SyncAction.unchanged


def test_all_updates_every_tenant(queue: SqliteOperationQueue, engine: FakeEngine) -> None:
    applied(queue, engine, tenant_spec("acme"))

    plan = plan_sync("dev", {"acme": tenant_spec("acme")}, history=queue, engine=engine, everything=True)

    assert actions(plan)["acme"][0] is SyncAction.update


def test_a_fresh_history_asks_the_backend_what_was_applied(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    # A new CI runner: no local history, but the stacks exist in the shared backend.
    engine.deploy(stack("same"), tenant_spec("same"))
    engine.deploy(stack("edited"), tenant_spec("edited"))

    plan = plan_sync(
        "dev",
        {"same": tenant_spec("same"), "edited": tenant_spec("edited", plan="medium")},
        history=queue,
        engine=engine,
    )

    result = actions(plan)
    assert result["same"] == (SyncAction.unchanged, "up to date (backend)")
    assert result["edited"][0] is SyncAction.update


def test_a_removed_tenant_is_only_destroyed_with_prune(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    applied(queue, engine, tenant_spec("gone", deletionProtection=False))

    without = plan_sync("dev", {}, history=queue, engine=engine)
    with_prune = plan_sync("dev", {}, history=queue, engine=engine, prune=True)

    assert actions(without)["gone"][0] is SyncAction.skip
    assert "--prune" in actions(without)["gone"][1]
    assert actions(with_prune)["gone"][0] is SyncAction.destroy


def test_a_removed_tenant_with_deletion_protection_is_skipped_with_the_way_out(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    applied(queue, engine, tenant_spec("kept"))  # deletionProtection defaults to on

    plan = plan_sync("dev", {}, history=queue, engine=engine, prune=True)

    action, reason = actions(plan)["kept"]
    assert action is SyncAction.skip
    assert "deletion protection is on" in reason and "deletionProtection: false" in reason


def test_a_destroyed_tenant_whose_file_returns_is_created_again(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    applied(queue, engine, tenant_spec("back", deletionProtection=False))
    submit_plan(plan_sync("dev", {}, history=queue, engine=engine, prune=True), queue, requested_by="t")
    Worker(queue, engine, max_parallel=1).run_until_idle()

    plan = plan_sync("dev", {"back": tenant_spec("back")}, history=queue, engine=engine)

    assert actions(plan)["back"][0] is SyncAction.create


def test_other_environments_are_not_touched(queue: SqliteOperationQueue, engine: FakeEngine) -> None:
    engine.deploy(stack("acme", "prod"), tenant_spec("acme"))

    plan = plan_sync("dev", {}, history=queue, engine=engine, prune=True)

    assert plan.items == ()
