"""The restore drill: backups of a replicated Qdrant to S3 and back, against real HTTP stand-ins."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tenancy.dataops.backup import (
    BackupError,
    Retention,
    apply_retention,
    list_backups,
    restore_backup,
    take_backup,
)
from tenancy.dataops.object_store import BackupBucket, ObjectStoreError
from tenancy.dataops.qdrant_api import QdrantCluster, QdrantError
from tests.dataops.conftest import BUCKET
from tests.dataops.qdrant_standin import API_KEY, ClusterState, qdrant_cluster

NOW = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
Cluster = tuple[ClusterState, QdrantCluster]


def _populate(state: ClusterState) -> None:
    state.add_collection("docs", shards=3, replication_factor=2, points=30)
    state.add_collection("faq", shards=1, replication_factor=2, points=5)


def test_backup_records_every_shard_once_with_its_checksum(
    cluster: Cluster, bucket: BackupBucket, s3: Any
) -> None:
    state, qdrant = cluster
    _populate(state)
    record = take_backup(qdrant, bucket, now=NOW)

    assert record.collections == ("docs", "faq")
    assert sorted((s.collection, s.shard_id) for s in record.shards) == [
        ("docs", 0),
        ("docs", 1),
        ("docs", 2),
        ("faq", 0),
    ]
    assert record.size == sum(s.size for s in record.shards) > 0
    stored = s3.list_objects_v2(Bucket=BUCKET, Prefix="tenants/prod/acme/qdrant/")["Contents"]
    assert {o["Key"].rsplit("/", 1)[-1] for o in stored} >= {"manifest.json", "shard-0.snapshot"}
    assert [b.summary() for b in list_backups(bucket)] == [record.summary()]
    assert not state.snapshots, "the snapshots Qdrant made for the backup are deleted from its disk"


def test_restore_brings_back_lost_points_in_every_collection(cluster: Cluster, bucket: BackupBucket) -> None:
    state, qdrant = cluster
    _populate(state)
    before = {name: state.all_points(name) for name in ("docs", "faq")}
    record = take_backup(qdrant, bucket, now=NOW)
    state.collections["docs"].shards[1].points.clear()
    del state.collections["faq"]

    restored = restore_backup(qdrant, bucket, record.id)

    assert restored == ["docs", "faq"]
    assert {name: state.all_points(name) for name in ("docs", "faq")} == before


def test_restore_of_named_collections_leaves_the_others_alone(cluster: Cluster, bucket: BackupBucket) -> None:
    state, qdrant = cluster
    _populate(state)
    record = take_backup(qdrant, bucket, now=NOW)
    state.collections["docs"].shards[0].points.clear()
    state.collections["faq"].shards[0].points["new"] = {"vector": [0, 0, 0, 1]}

    restore_backup(qdrant, bucket, record.id, collections=["docs"])

    assert len(state.all_points("docs")) == 30
    assert "new" in state.all_points("faq")
    with pytest.raises(BackupError, match="has no collection 'nope'"):
        restore_backup(qdrant, bucket, record.id, collections=["nope"])


def test_restore_into_a_new_tenant_with_another_cluster_size(cluster: Cluster, bucket: BackupBucket) -> None:
    state, qdrant = cluster
    _populate(state)
    record = take_backup(qdrant, bucket, now=NOW)
    with qdrant_cluster(1) as (target_state, urls):
        target = QdrantCluster(url=next(iter(urls.values())), api_key=API_KEY, timeout=10, http_port=None)
        restore_backup(target, bucket, record.id)
        assert target_state.all_points("docs") == state.all_points("docs")
        assert target_state.collections["docs"].params["shard_number"] == 3


def test_a_corrupt_object_refuses_the_restore_before_anything_changes(
    cluster: Cluster, bucket: BackupBucket, s3: Any
) -> None:
    state, qdrant = cluster
    _populate(state)
    record = take_backup(qdrant, bucket, now=NOW)
    shard = next(s for s in record.shards if s.collection == "docs")
    s3.put_object(Bucket=BUCKET, Key=bucket.key(shard.key), Body=b"{}")
    state.collections["docs"].shards[2].points["kept"] = {"vector": [1, 1, 1, 1]}

    with pytest.raises(BackupError, match="does not match its recorded checksum; nothing was restored"):
        restore_backup(qdrant, bucket, record.id)
    assert "kept" in state.all_points("docs")


def test_a_download_that_differs_from_qdrants_checksum_records_no_backup(
    cluster: Cluster, bucket: BackupBucket
) -> None:
    state, qdrant = cluster
    _populate(state)
    state.corrupt_download = True
    with pytest.raises(BackupError, match="differs from Qdrant's checksum"):
        take_backup(qdrant, bucket, now=NOW)
    assert list_backups(bucket) == []


class _FailingAfter:
    """An S3 client that breaks after ``n`` uploads, as a network cut or a killed job does."""

    def __init__(self, client: Any, n: int) -> None:
        self._client, self._left = client, n

    def upload_fileobj(self, *args: Any, **kwargs: Any) -> None:
        if self._left == 0:
            raise ConnectionError("connection reset")
        self._left -= 1
        self._client.upload_fileobj(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_a_partial_upload_is_never_listed_and_is_cleaned_after_the_grace(
    cluster: Cluster, bucket: BackupBucket, s3: Any
) -> None:
    state, qdrant = cluster
    _populate(state)
    broken = BackupBucket(_FailingAfter(s3, 2), bucket=BUCKET, prefix=bucket.prefix)
    with pytest.raises(
        ObjectStoreError, match=r"upload of tenants/prod/acme/qdrant/.*failed: ConnectionError"
    ):
        take_backup(qdrant, broken, now=NOW)
    assert list_backups(bucket) == []
    assert len(bucket.objects()) == 2

    kept = Retention(keep_last=3, max_age=timedelta(days=7))
    assert apply_retention(bucket, kept, now=NOW + timedelta(hours=1)) == []
    assert len(bucket.objects()) == 2, "a backup that may still be uploading is left alone"
    assert len(apply_retention(bucket, kept, now=NOW + timedelta(hours=7))) == 1
    assert bucket.objects() == []


def test_retention_keeps_the_newest_by_count_and_by_age(cluster: Cluster, bucket: BackupBucket) -> None:
    state, qdrant = cluster
    state.add_collection("docs", shards=1, replication_factor=1, points=3)
    records = [take_backup(qdrant, bucket, now=NOW + timedelta(days=day)) for day in range(5)]
    today = NOW + timedelta(days=4)

    deleted = apply_retention(bucket, Retention(keep_last=3, max_age=timedelta(days=30)), now=today)
    assert deleted == [records[0].id, records[1].id]
    assert [b.id for b in list_backups(bucket)] == [r.id for r in reversed(records[2:])]

    apply_retention(bucket, Retention(keep_last=3, max_age=timedelta(days=1)), now=today)
    assert [b.id for b in list_backups(bucket)] == [records[4].id, records[3].id]

    apply_retention(bucket, Retention(keep_last=3, max_age=timedelta(hours=1)), now=today + timedelta(days=9))
    assert [b.id for b in list_backups(bucket)] == [records[4].id], "the newest backup is never deleted"


def test_the_manifest_records_time_size_collections_and_checksum(
    cluster: Cluster, bucket: BackupBucket
) -> None:
    state, qdrant = cluster
    _populate(state)
    record = take_backup(qdrant, bucket, now=NOW)
    manifest = json.loads(bucket.read_bytes(f"{record.id}/manifest.json"))
    assert manifest["created"] == NOW.isoformat()
    assert manifest["collections"] == ["docs", "faq"]
    assert manifest["size"] == record.size
    assert len(manifest["checksum"]) == 64
    assert manifest["parameters"]["docs"]["shard_number"] == 3


def test_a_wrong_api_key_names_the_call_and_qdrants_answer(cluster: Cluster, bucket: BackupBucket) -> None:
    _, qdrant = cluster
    wrong = QdrantCluster(url=qdrant.url, api_key="nope", timeout=5, http_port=None)
    with pytest.raises(QdrantError, match="GET /collections: Qdrant answered 401"):
        take_backup(wrong, bucket, now=NOW)


def test_keys_cannot_leave_the_tenant_prefix(s3: Any) -> None:
    bucket = BackupBucket(s3, bucket=BUCKET, prefix="tenants/prod/acme/qdrant")
    with pytest.raises(ValueError, match="would leave the prefix"):
        bucket.key("../../beta/qdrant/x")
