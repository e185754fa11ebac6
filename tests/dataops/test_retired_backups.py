"""A destroyed tenant's backups: set aside per incarnation by the worker, kept for their retention,
restorable from there, refused once expired, then deleted. Queue -> worker -> dataops against the
Qdrant stand-in and moto's S3 server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

from tenancy.automation.contract import OperationKind, OperationStatus, StackRef
from tenancy.automation.data_operations import retired_area, tenant_backups, tenant_retired_backups
from tenancy.automation.fake_engine import FakeEngine
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.automation.worker import Worker
from tenancy.dataops.backup import BackupRecord
from tenancy.dataops.object_store import BackupBucket, ObjectStoreError
from tenancy.dataops.retired import (
    RetiredIncarnation,
    RetiredNotFound,
    hand_over,
    purge_expired,
    retire_backups,
    retired_backups,
    retired_incarnations,
    revoke_hand_over,
)
from tests.dataops.conftest import BUCKET, StandinData
from tests.dataops.qdrant_standin import ClusterState, qdrant_cluster

ACME, BETA = StackRef("dev", "acme"), StackRef("dev", "beta")
FIRST = "dev:" + "a" * 40  # the incarnation of acme whose file the destroy follows


def _spec(name: str, **snapshots: Any) -> dict[str, Any]:
    return {
        "name": name,
        "owners": [f"o@{name}.example"],
        "plan": "small",
        "deletionProtection": False,
        "qdrant": {"enabled": True, **({"snapshots": snapshots} if snapshots else {})},
    }


@pytest.fixture
def two_tenants(s3: Any) -> Iterator[tuple[ClusterState, ClusterState, StandinData]]:
    with qdrant_cluster(2) as (acme, acme_urls), qdrant_cluster(1) as (beta, beta_urls):
        acme.add_collection("docs", shards=2, replication_factor=2, points=20)
        data = StandinData({ACME: next(iter(acme_urls.values())), BETA: next(iter(beta_urls.values()))}, s3)
        yield acme, beta, data


def _deploy_and_destroy(tmp_path: Path, data: Any, **snapshots: Any) -> tuple[SqliteOperationQueue, Worker]:
    queue = SqliteOperationQueue(tmp_path / "ops.sqlite3")
    worker = Worker(queue, FakeEngine(), max_parallel=2, data=data)
    queue.submit(ACME, OperationKind.up, spec=_spec("acme", **snapshots), requested_by="a", incarnation=FIRST)
    queue.submit(ACME, OperationKind.backup, spec=None, requested_by="a", incarnation=FIRST)
    assert all(op.status is OperationStatus.succeeded for op in worker.run_until_idle())
    queue.submit(ACME, OperationKind.destroy, spec=None, requested_by="a", incarnation=FIRST)
    (destroyed,) = worker.run_until_idle()
    assert destroyed.status is OperationStatus.succeeded, destroyed.summary
    return queue, worker


def test_a_destroy_sets_the_backups_aside_for_their_retention_and_they_restore(
    tmp_path: Path, two_tenants: Any
) -> None:
    acme, beta, data = two_tenants
    queue, worker = _deploy_and_destroy(tmp_path, data, maxAgeDays=10)

    assert tenant_backups(data, ACME) == [], "the live prefix is empty: a later acme starts with none"
    retired = tenant_retired_backups(data, ACME)
    assert len(retired) == 2  # the one asked for and the automatic one before the destroy
    owner = retired[0].owner
    assert (owner.folder, owner.incarnation, owner.max_age_days) == ("a" * 40, FIRST, 10)
    assert all(b.expires == b.record.created + timedelta(days=10) for b in retired)
    keys = {o["Key"] for o in data.s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert all(k.startswith(f"tenants/dev/acme/retired/{'a' * 40}/") for k in keys), keys

    newest = retired[0].record
    queue.submit(
        BETA,
        OperationKind.restore,
        spec=None,
        requested_by="root",
        params={"backup": newest.id, "source": "acme", "retired": owner.folder},
    )
    (restored,) = worker.run_until_idle()
    assert restored.status is OperationStatus.succeeded, restored.summary
    assert beta.all_points("docs") == acme.all_points("docs")
    messages = [e.message or "" for e in queue.events(restored.id)]
    assert any(f"deleted incarnation {'a' * 40} of dev.acme" in m for m in messages), messages


def test_an_expired_backup_is_refused_then_purged(tmp_path: Path, two_tenants: Any) -> None:
    _, _, data = two_tenants
    queue, worker = _deploy_and_destroy(tmp_path, data)
    area = retired_area(data, ACME)
    (backup, *_) = tenant_retired_backups(data, ACME)
    record = backup.owner.to_json() | {"maxAgeDays": 0}  # as if its retention had passed
    area.put_bytes(f"{backup.owner.folder}/incarnation.json", json.dumps(record).encode(), content_type="x")

    queue.submit(
        BETA,
        OperationKind.restore,
        spec=None,
        requested_by="root",
        params={"backup": backup.record.id, "source": "acme", "retired": backup.owner.folder},
    )
    (refused,) = worker.run_until_idle()
    assert refused.status is OperationStatus.failed
    assert refused.summary is not None and refused.summary.code == "backup_expired"
    assert "expired" in (refused.summary.error or "") and "nothing was restored" in (
        refused.summary.error or ""
    )

    deleted = purge_expired(area, now=datetime.now(UTC) + timedelta(hours=7))  # past the moves' grace
    assert len(deleted) == 2
    assert data.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0, "record and objects all gone"


@dataclass
class _CopyFails:
    """An S3 client whose server-side copies fail (a store refusing, credentials without the prefix)."""

    client: Any

    def copy(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("AccessDenied")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@dataclass
class _StoreRefusingCopies(StandinData):
    def bucket(self, stack: StackRef) -> BackupBucket:
        return BackupBucket(
            _CopyFails(self.s3), bucket=BUCKET, prefix=f"tenants/{stack.environment}/{stack.tenant}/qdrant"
        )


def test_a_destroy_whose_backups_cannot_be_set_aside_destroys_nothing(
    tmp_path: Path, two_tenants: Any
) -> None:
    _, _, data = two_tenants
    failing = _StoreRefusingCopies(data.clusters, data.s3)
    queue = SqliteOperationQueue(tmp_path / "ops.sqlite3")
    engine = FakeEngine()
    worker = Worker(queue, engine, max_parallel=1, data=failing)
    queue.submit(ACME, OperationKind.up, spec=_spec("acme"), requested_by="a", incarnation=FIRST)
    worker.run_until_idle()
    queue.submit(ACME, OperationKind.destroy, spec=None, requested_by="a", incarnation=FIRST)
    (refused,) = worker.run_until_idle()
    assert refused.status is OperationStatus.failed
    assert refused.summary is not None and refused.summary.code == "backup_retire_failed"
    assert "destroy of dev.acme refused" in (refused.summary.error or "")
    assert not [c for c in engine.calls if c.kind is OperationKind.destroy], "nothing was destroyed"
    assert len(tenant_backups(data, ACME)) == 1, "the automatic backup stays where it was"


def test_a_move_cut_off_halfway_finishes_on_the_next_pass(two_tenants: Any, tmp_path: Path) -> None:
    _, _, data = two_tenants
    queue = SqliteOperationQueue(tmp_path / "ops.sqlite3")
    worker = Worker(queue, FakeEngine(), max_parallel=1, data=data)
    queue.submit(ACME, OperationKind.backup, spec=None, requested_by="a")
    worker.run_until_idle()
    live = data.bucket(ACME)
    area = retired_area(data, ACME)
    owner = RetiredIncarnation("b" * 40, "dev:" + "b" * 40, datetime.now(UTC), 14)

    class DeleteFails(_CopyFails):
        def copy(self, *args: Any, **kwargs: Any) -> None:
            self.client.copy(*args, **kwargs)

        def delete_objects(self, **kwargs: Any) -> None:
            raise RuntimeError("crash")

    with pytest.raises(ObjectStoreError):
        retire_backups(BackupBucket(DeleteFails(data.s3), bucket=BUCKET, prefix=live.prefix), area, owner)
    assert len(tenant_backups(data, ACME)) == 1 and len(retired_backups(area)) == 1, "complete in both places"
    assert len(retire_backups(live, area, owner)) == 1
    assert tenant_backups(data, ACME) == [] and len(retired_backups(area)) == 1


def test_the_sweep_deletes_only_what_is_past_its_retention_in_every_tenant(
    tmp_path: Path, two_tenants: Any
) -> None:
    from tenancy.service.core.backup_sweep import RetiredBackupSweeper

    _, _, data = two_tenants
    queue = SqliteOperationQueue(tmp_path / "ops.sqlite3")
    worker = Worker(queue, FakeEngine(), max_parallel=1, data=data)
    for stack in (ACME, BETA):
        queue.submit(stack, OperationKind.backup, spec=None, requested_by="a")
    worker.run_until_idle()
    now = datetime.now(UTC)
    for stack, days in ((ACME, 0), (BETA, 14)):  # acme's retention is over, beta's is not
        owner = RetiredIncarnation("d" * 40, f"dev:{'d' * 40}", now - timedelta(days=1), days)
        assert len(retire_backups(data.bucket(stack), retired_area(data, stack), owner)) == 1

    assert len(RetiredBackupSweeper(data, interval=3600).sweep()) == 1
    assert tenant_retired_backups(data, ACME) == [] and len(tenant_retired_backups(data, BETA)) == 1
    keys = {o["Key"] for o in data.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    assert not [k for k in keys if k.startswith("tenants/dev/acme/")], "acme's record went with its backups"


def test_a_folder_set_aside_moments_ago_is_not_swept_while_its_move_may_run(two_tenants: Any) -> None:
    _, _, data = two_tenants
    area = retired_area(data, ACME)
    young = RetiredIncarnation("e" * 40, None, datetime.now(UTC), 14)
    area.put_bytes(f"{'e' * 40}/incarnation.json", json.dumps(young.to_json()).encode(), content_type="x")
    area.put_bytes(f"{'e' * 40}/20261206T000000Z-abcdef/docs/shard-0.snapshot", b"copying", content_type="x")
    purge_expired(area, now=young.retired + timedelta(minutes=5))
    assert len(area.objects()) == 2, "a move may still be copying into it"
    purge_expired(area, now=young.retired + timedelta(hours=7))
    assert area.objects() == []


def test_a_sweep_during_a_second_move_into_a_folder_leaves_what_it_copies(
    two_tenants: Any, tmp_path: Path
) -> None:
    """A second pass into an incarnation's folder (a destroy retried, or the same incarnation destroyed
    again) keeps the record's first ``retired``: past the grace and with no complete backup there yet,
    a sweep running while the pass copied deleted the copied objects and the record, so the backup the
    pass then completed (its live copy deleted) was in no listing, no restore and no sweep."""
    _, _, data = two_tenants
    queue = SqliteOperationQueue(tmp_path / "ops.sqlite3")
    queue.submit(ACME, OperationKind.backup, spec=None, requested_by="a")
    Worker(queue, FakeEngine(), max_parallel=1, data=data).run_until_idle()
    now = datetime.now(UTC)
    area = retired_area(data, ACME)
    earlier = RetiredIncarnation("f" * 40, "dev:" + "f" * 40, now - timedelta(days=3), 1)
    area.put_bytes(f"{'f' * 40}/incarnation.json", json.dumps(earlier.to_json()).encode(), content_type="x")

    @dataclass
    class SweptWhileCopying(_CopyFails):
        copies: int = 0

        def copy(self, *args: Any, **kwargs: Any) -> None:
            self.client.copy(*args, **kwargs)
            self.copies += 1
            if self.copies == 1:  # another replica's sweep, between two copies of this pass
                purge_expired(area, now=now)

    copying = BackupBucket(SweptWhileCopying(data.s3), bucket=BUCKET, prefix=area.prefix)
    again = RetiredIncarnation("f" * 40, "dev:" + "f" * 40, now, 1)
    assert len(retire_backups(data.bucket(ACME), copying, again)) == 1
    assert tenant_backups(data, ACME) == []
    [kept] = retired_backups(area)
    assert kept.owner.retired == earlier.retired, "the incarnation ended when the first pass said"
    assert not purge_expired(area, now=now + timedelta(hours=1))
    assert len(retired_backups(area)) == 1


def test_turning_the_qdrant_off_backs_it_up_and_sets_its_backups_aside(
    tmp_path: Path, two_tenants: Any
) -> None:
    """No backup job is left to prune them: kept for their retention (the sweep deletes them after),
    and still the tenant's own (same incarnation) to list and restore."""
    _, _, data = two_tenants
    queue = SqliteOperationQueue(tmp_path / "ops.sqlite3")
    worker = Worker(queue, FakeEngine(), max_parallel=1, data=data)
    queue.submit(
        ACME, OperationKind.up, spec=_spec("acme", maxAgeDays=7), requested_by="a", incarnation=FIRST
    )
    worker.run_until_idle()
    off = {**_spec("acme"), "qdrant": {"enabled": False}}
    update = queue.submit(ACME, OperationKind.up, spec=off, requested_by="a", incarnation=FIRST)
    (done,) = worker.run_until_idle()
    assert done.status is OperationStatus.succeeded, done.summary
    messages = [e.message or "" for e in queue.events(update.id)]
    assert any("before the Qdrant is removed" in m for m in messages), messages
    assert tenant_backups(data, ACME) == []
    (kept,) = tenant_retired_backups(data, ACME)
    assert (kept.owner.incarnation, kept.owner.max_age_days) == (FIRST, 7)


def _record(area: BackupBucket, owner: RetiredIncarnation) -> None:
    area.put_bytes(f"{owner.folder}/incarnation.json", json.dumps(owner.to_json()).encode(), content_type="x")


def test_a_hand_over_during_a_second_move_into_the_folder_is_kept(two_tenants: Any, tmp_path: Path) -> None:
    """A second move rewrites the folder's record; a hand-over another replica made between that move's
    read and its write was lost when hand-overs lived in the record."""
    _, _, data = two_tenants
    queue = SqliteOperationQueue(tmp_path / "ops.sqlite3")
    queue.submit(ACME, OperationKind.backup, spec=None, requested_by="a")
    Worker(queue, FakeEngine(), max_parallel=1, data=data).run_until_idle()
    now = datetime.now(UTC)
    area = retired_area(data, ACME)
    _record(area, RetiredIncarnation("f" * 40, FIRST, now - timedelta(days=1), 14))
    second = "dev:" + "b" * 40

    @dataclass
    class HandedOverMeanwhile(_CopyFails):
        handed: bool = False

        def copy(self, *args: Any, **kwargs: Any) -> None:
            self.client.copy(*args, **kwargs)

        def put_object(self, **kwargs: Any) -> Any:
            if kwargs["Key"].endswith("/incarnation.json") and not self.handed:
                self.handed = True  # another replica's platform-admin, after this move read the record
                with patch("tenancy.dataops.retired.list_backups", return_value=[object()]):
                    hand_over(area, "f" * 40, second)
            return self.client.put_object(**kwargs)

    moving = BackupBucket(HandedOverMeanwhile(data.s3), bucket=BUCKET, prefix=area.prefix)
    assert len(retire_backups(data.bucket(ACME), moving, RetiredIncarnation("f" * 40, FIRST, now, 14))) == 1
    [kept] = retired_backups(area)
    assert kept.owner.handed_to == (second,), "the hand-over survives the move's rewrite of the record"
    assert revoke_hand_over(area, "f" * 40, second).handed_to == ()
    assert retired_backups(area)[0].owner.handed_to == ()
    assert revoke_hand_over(area, "f" * 40, second).handed_to == (), "taking it back twice is fine"


def test_a_hand_over_of_nothing_to_hand_over_is_refused_and_records_nothing(two_tenants: Any) -> None:
    _, _, data = two_tenants
    area = retired_area(data, ACME)
    second = "dev:" + "b" * 40
    with pytest.raises(RetiredNotFound, match="no retired incarnation"):
        hand_over(area, "c" * 40, second)
    _record(area, RetiredIncarnation("d" * 40, FIRST, datetime.now(UTC), 14))  # a move not copied yet
    with pytest.raises(RetiredNotFound, match="holds no complete backup"):
        hand_over(area, "d" * 40, second)
    manifest = BackupRecord("20261201T000000Z-abcdef", datetime.now(UTC), 0, (), "", (), {}).to_json()
    area.put_bytes(
        f"{'d' * 40}/20261201T000000Z-abcdef/manifest.json", json.dumps(manifest).encode(), content_type="x"
    )
    with pytest.raises(RetiredNotFound, match="the tenant's own"):
        hand_over(area, "d" * 40, FIRST)
    assert sorted(obj.key for obj in area.objects()) == [
        f"{'d' * 40}/20261201T000000Z-abcdef/manifest.json",
        f"{'d' * 40}/incarnation.json",
    ]
    with pytest.raises(RetiredNotFound):
        revoke_hand_over(area, "c" * 40, second)


def _expired_folder(area: BackupBucket, folder: str, now: datetime) -> str:
    """A deleted incarnation's folder whose one backup is past its retention; the backup's id."""
    _record(area, RetiredIncarnation(folder, FIRST, now - timedelta(days=30), 1))
    backup = BackupRecord("20261101T000000Z-abcdef", now - timedelta(days=20), 0, (), "", (), {})
    area.put_bytes(
        f"{folder}/{backup.id}/manifest.json", json.dumps(backup.to_json()).encode(), content_type="x"
    )
    return backup.id


def test_a_hand_over_racing_the_sweep_that_deletes_its_folder_leaves_no_grant_behind(
    two_tenants: Any,
) -> None:
    """The sweep lists a folder's objects and deletes them, record last; a hand-over whose write came
    after that listing left its grant with no record: granting nothing, but honoured by a later move
    into the same folder. Interleaving injected: another replica's whole sweep runs between the
    hand-over's checks and its write."""
    _, _, data = two_tenants
    area = retired_area(data, ACME)
    now = datetime.now(UTC)
    folder, second = "f" * 40, "dev:" + "b" * 40
    expired = _expired_folder(area, folder, now)
    swept: list[str] = []

    @dataclass
    class SweptBeforeTheWrite(_CopyFails):
        def put_object(self, **kwargs: Any) -> Any:
            if "/handedTo/" in kwargs["Key"]:
                swept.extend(purge_expired(area, now=now))
            return self.client.put_object(**kwargs)

    handing = BackupBucket(SweptBeforeTheWrite(data.s3), bucket=BUCKET, prefix=area.prefix)
    with pytest.raises(RetiredNotFound, match="while it was being handed over"):
        hand_over(handing, folder, second)
    assert swept == [expired]
    assert area.objects() == [], "no hand-over left without its record"


def test_the_sweep_deletes_hand_overs_left_without_a_record_and_keeps_the_others(two_tenants: Any) -> None:
    _, _, data = two_tenants
    area = retired_area(data, ACME)
    now = datetime.now(UTC)
    second = "dev:" + "b" * 40
    area.put_bytes(f"{'f' * 40}/handedTo/{second}", b"", content_type="text/plain")  # left by a race
    _record(area, RetiredIncarnation("d" * 40, FIRST, now, 14))
    area.put_bytes(f"{'d' * 40}/handedTo/{second}", b"", content_type="text/plain")
    progress: list[str] = []
    assert purge_expired(area, now=now, progress=progress.append) == []
    assert sorted(obj.key for obj in area.objects()) == [
        f"{'d' * 40}/handedTo/{second}",
        f"{'d' * 40}/incarnation.json",
    ]
    assert progress == [
        f"deleted hand-over {'f' * 40}/handedTo/{second} left without its incarnation's record"
    ]
    # The same incarnation set aside again later starts with no hand-over.
    _record(area, RetiredIncarnation("f" * 40, FIRST, now, 14))
    assert [o.handed_to for o in retired_incarnations(area) if o.folder == "f" * 40] == [()]
