"""Backup and restore as operations: queue -> worker -> dataops against the Qdrant stand-in and moto."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tenancy.automation.contract import OperationKind, OperationStatus, StackRef
from tenancy.automation.data_operations import tenant_backups, tenant_retired_backups
from tenancy.automation.fake_engine import FakeEngine
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.automation.worker import Worker
from tests.dataops.conftest import StandinData
from tests.dataops.qdrant_standin import ClusterState, qdrant_cluster

ACME = StackRef("dev", "acme")
BETA = StackRef("dev", "beta")


def _spec(name: str, version: str | None = None) -> dict[str, Any]:
    qdrant: dict[str, Any] = {"enabled": True}
    if version:
        qdrant["version"] = version
    return {
        "name": name,
        "owners": [f"o@{name}.example"],
        "plan": "small",
        "deletionProtection": False,
        "qdrant": qdrant,
    }


@pytest.fixture
def two_tenants(s3: Any) -> Iterator[tuple[ClusterState, ClusterState, StandinData]]:
    with qdrant_cluster(2) as (acme, acme_urls), qdrant_cluster(1) as (beta, beta_urls):
        acme.add_collection("docs", shards=2, replication_factor=2, points=20)
        acme.add_collection("faq", shards=1, replication_factor=1, points=3)
        data = StandinData({ACME: next(iter(acme_urls.values())), BETA: next(iter(beta_urls.values()))}, s3)
        yield acme, beta, data


def _worker(
    tmp_path: Path, data: Any, engine: FakeEngine | None = None
) -> tuple[SqliteOperationQueue, Worker]:
    queue = SqliteOperationQueue(tmp_path / "ops.sqlite3")
    return queue, Worker(queue, engine or FakeEngine(), max_parallel=2, data=data)


def test_backup_then_restore_into_another_tenant(tmp_path: Path, two_tenants: Any) -> None:
    acme, beta, data = two_tenants
    queue, worker = _worker(tmp_path, data)
    backup = queue.submit(ACME, OperationKind.backup, spec=None, requested_by="alice")
    (done,) = worker.run_until_idle()
    assert done.status is OperationStatus.succeeded, done.summary
    assert done.summary is not None
    backup_id = done.summary.outputs["backup"]["id"]
    assert [b.id for b in tenant_backups(data, ACME)] == [backup_id]
    messages = [e.message or "" for e in queue.events(backup.id)]
    assert any("stored docs shard" in m for m in messages), messages

    restore = queue.submit(
        BETA,
        OperationKind.restore,
        spec=None,
        requested_by="alice",
        params={"backup": backup_id, "source": "acme", "collections": ["docs"]},
    )
    (restored,) = worker.run_until_idle()
    assert restored.id == restore.id and restored.status is OperationStatus.succeeded, restored.summary
    assert beta.all_points("docs") == acme.all_points("docs")
    assert "faq" not in beta.collections


def test_restore_of_a_missing_backup_fails_with_its_code(tmp_path: Path, two_tenants: Any) -> None:
    _, _, data = two_tenants
    queue, worker = _worker(tmp_path, data)
    queue.submit(BETA, OperationKind.restore, spec=None, requested_by="a", params={"backup": "nope"})
    (done,) = worker.run_until_idle()
    assert done.status is OperationStatus.failed
    assert done.summary is not None and done.summary.code == "restore_failed"
    assert "backup 'nope' does not exist" in (done.summary.error or "")


def test_destroy_waits_for_an_automatic_backup(tmp_path: Path, two_tenants: Any) -> None:
    _, _, data = two_tenants
    engine = FakeEngine()
    queue, worker = _worker(tmp_path, data, engine)
    queue.submit(ACME, OperationKind.up, spec=_spec("acme"), requested_by="a")
    worker.run_until_idle()
    destroy = queue.submit(ACME, OperationKind.destroy, spec=_spec("acme"), requested_by="a")
    (done,) = worker.run_until_idle()
    assert done.status is OperationStatus.succeeded, done.summary
    # Stored, then set aside with the tenant's other backups: a later tenant of the name starts empty.
    assert tenant_backups(data, ACME) == []
    assert len(tenant_retired_backups(data, ACME)) == 1
    messages = [e.message or "" for e in queue.events(destroy.id)]
    assert any("automatic backup" in m and "before the destroy" in m for m in messages), messages


def test_destroy_is_refused_when_its_backup_fails_unless_forced(tmp_path: Path, two_tenants: Any) -> None:
    acme, _, data = two_tenants
    engine = FakeEngine()
    queue, worker = _worker(tmp_path, data, engine)
    queue.submit(ACME, OperationKind.up, spec=_spec("acme"), requested_by="a")
    worker.run_until_idle()
    acme.corrupt_download = True  # every snapshot's checksum now disagrees: the backup fails

    queue.submit(ACME, OperationKind.destroy, spec=_spec("acme"), requested_by="a")
    (refused,) = worker.run_until_idle()
    assert refused.status is OperationStatus.failed
    assert refused.summary is not None and refused.summary.code == "backup_failed"
    assert "destroy of dev.acme refused" in (refused.summary.error or "")
    assert "platform-admin may force" in (refused.summary.error or "")
    assert not [c for c in engine.calls if c.kind is OperationKind.destroy], "nothing was destroyed"

    forced = queue.submit(
        ACME, OperationKind.destroy, spec=_spec("acme"), requested_by="root", params={"force": True}
    )
    (done,) = worker.run_until_idle()
    assert done.status is OperationStatus.succeeded, done.summary
    messages = [e.message or "" for e in queue.events(forced.id)]
    assert any("forced by root" in m for m in messages), messages


def test_a_qdrant_version_change_backs_up_first(tmp_path: Path, two_tenants: Any) -> None:
    from tenancy import versions

    if len(versions.QDRANT_VERSIONS) < 2:
        pytest.skip("only one Qdrant version is offered")
    old, new = list(versions.QDRANT_VERSIONS)[:2]
    _, _, data = two_tenants
    queue, worker = _worker(tmp_path, data)
    queue.submit(ACME, OperationKind.up, spec=_spec("acme", old), requested_by="a")
    worker.run_until_idle()
    assert tenant_backups(data, ACME) == []
    queue.submit(ACME, OperationKind.up, spec=_spec("acme", old), requested_by="a")
    worker.run_until_idle()
    assert tenant_backups(data, ACME) == [], "an update that keeps the version takes no backup"
    upgrade = queue.submit(ACME, OperationKind.up, spec=_spec("acme", new), requested_by="a")
    (done,) = worker.run_until_idle()
    assert done.status is OperationStatus.succeeded, done.summary
    assert len(tenant_backups(data, ACME)) == 1
    messages = [e.message or "" for e in queue.events(upgrade.id)]
    assert any(f"version change {old} -> {new}" in m for m in messages), messages


def test_a_worker_without_data_access_fails_data_operations_clearly(tmp_path: Path) -> None:
    queue, worker = _worker(tmp_path, None)
    queue.submit(ACME, OperationKind.backup, spec=None, requested_by="a")
    (done,) = worker.run_until_idle()
    assert done.status is OperationStatus.failed
    assert done.summary is not None and done.summary.code == "data_unavailable"


def test_queues_keep_an_operations_parameters(tmp_path: Path) -> None:
    queue = SqliteOperationQueue(tmp_path / "ops.sqlite3")
    submitted = queue.submit(
        ACME, OperationKind.restore, spec=None, requested_by="a", params={"backup": "b1", "force": False}
    )
    stored = queue.get(submitted.id)
    assert stored is not None and stored.params == {"backup": "b1", "force": False}
