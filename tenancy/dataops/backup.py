"""Qdrant backups: take one, keep some, list them, restore one.

A backup is a folder ``<backup id>/`` under the tenant's prefix: one object per shard snapshot, then
``manifest.json`` (time, size, collections with their parameters, every object's SHA-256). The
manifest is written last, so a backup exists only once every byte of it is stored: an upload cut off
halfway leaves objects without a manifest, which listing ignores and the next retention pass deletes.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tenancy.dataops.object_store import BackupBucket
from tenancy.dataops.qdrant_api import QdrantCluster

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
# Objects of a backup that never got its manifest are left alone this long, so retention never
# deletes the upload of a backup still running beside it.
PARTIAL_GRACE = timedelta(hours=6)

Progress = Callable[[str], None]


class BackupError(RuntimeError):
    """A backup or restore step failed; the message says which and what to do."""


@dataclass(frozen=True)
class ShardObject:
    collection: str
    shard_id: int
    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class BackupRecord:
    id: str
    created: datetime
    size: int
    collections: tuple[str, ...]
    checksum: str
    shards: tuple[ShardObject, ...]
    parameters: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "id": self.id,
            "created": self.created.isoformat(),
            "size": self.size,
            "collections": list(self.collections),
            "checksum": self.checksum,
            "parameters": self.parameters,
            "shards": [
                {
                    "collection": s.collection,
                    "shardId": s.shard_id,
                    "key": s.key,
                    "size": s.size,
                    "sha256": s.sha256,
                }
                for s in self.shards
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackupRecord:
        if data.get("version") != MANIFEST_VERSION:
            raise BackupError(f"backup manifest version {data.get('version')!r} is not understood")
        return cls(
            id=str(data["id"]),
            created=datetime.fromisoformat(data["created"]),
            size=int(data["size"]),
            collections=tuple(data["collections"]),
            checksum=str(data["checksum"]),
            parameters=dict(data["parameters"]),
            shards=tuple(
                ShardObject(s["collection"], int(s["shardId"]), s["key"], int(s["size"]), s["sha256"])
                for s in data["shards"]
            ),
        )

    def summary(self) -> dict[str, Any]:
        """What the API and CLI show: no object keys."""
        return {
            "id": self.id,
            "created": self.created.isoformat(),
            "size": self.size,
            "collections": list(self.collections),
            "checksum": self.checksum,
        }


def new_backup_id(now: datetime) -> str:
    """Sorts by time; the suffix keeps two backups in one second apart."""
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _combined_checksum(shards: Iterable[ShardObject]) -> str:
    digest = hashlib.sha256()
    for shard in sorted(shards, key=lambda s: s.key):
        digest.update(f"{shard.key}\0{shard.size}\0{shard.sha256}\n".encode())
    return digest.hexdigest()


class _HashingReader:
    """Feeds an upload from a chunk iterator while counting and hashing what passes."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""
        self.size = 0
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self.size += len(chunk)
            self.digest.update(chunk)
            self._buffer += chunk
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def take_backup(
    qdrant: QdrantCluster,
    bucket: BackupBucket,
    *,
    now: datetime,
    progress: Progress = lambda _: None,
) -> BackupRecord:
    """Snapshot every shard of every collection on a peer holding an active replica, and store it."""
    backup_id = new_backup_id(now)
    collections = qdrant.collections()
    shards: list[ShardObject] = []
    parameters: dict[str, dict[str, Any]] = {}
    for collection in collections:
        parameters[collection] = qdrant.collection_params(collection)
        layout = qdrant.layout(collection)
        for shard_id in layout.shard_ids():
            holders = layout.holders(shard_id)
            if not holders:
                raise BackupError(
                    f"shard {shard_id} of collection {collection!r} has no active replica; "
                    "wait until the cluster has recovered, then back up again"
                )
            peer = holders[0]
            snapshot = qdrant.create_shard_snapshot(collection, shard_id, peer=peer)
            key = f"{backup_id}/{collection}/shard-{shard_id}.snapshot"
            with qdrant.download_shard_snapshot(collection, shard_id, snapshot["name"], peer=peer) as chunks:
                reader = _HashingReader(chunks)
                bucket.upload(key, reader)  # type: ignore[arg-type]
            qdrant.delete_shard_snapshot(collection, shard_id, snapshot["name"], peer=peer)
            sha256 = reader.digest.hexdigest()
            expected = snapshot.get("checksum")
            if expected and expected != sha256:
                raise BackupError(
                    f"shard {shard_id} of {collection!r}: the download's SHA-256 differs from Qdrant's "
                    "checksum; the backup was not recorded, take it again"
                )
            shards.append(ShardObject(collection, shard_id, key, reader.size, sha256))
            progress(f"stored {collection} shard {shard_id} ({reader.size} bytes)")
    record = BackupRecord(
        id=backup_id,
        created=now.astimezone(UTC),
        size=sum(s.size for s in shards),
        collections=tuple(collections),
        checksum=_combined_checksum(shards),
        shards=tuple(shards),
        parameters=parameters,
    )
    bucket.put_bytes(
        f"{backup_id}/{MANIFEST}",
        json.dumps(record.to_json(), sort_keys=True).encode(),
        content_type="application/json",
    )
    progress(f"backup {backup_id} recorded: {len(collections)} collections, {record.size} bytes")
    return record


def list_backups(bucket: BackupBucket) -> list[BackupRecord]:
    """Complete backups only (those with a manifest), newest first."""
    records = [
        BackupRecord.from_json(json.loads(bucket.read_bytes(obj.key)))
        for obj in bucket.objects()
        if obj.key.count("/") == 1 and obj.key.endswith("/" + MANIFEST)
    ]
    return sorted(records, key=lambda r: r.created, reverse=True)


@dataclass(frozen=True)
class Retention:
    keep_last: int
    max_age: timedelta

    def __post_init__(self) -> None:
        if self.keep_last < 1:
            raise ValueError("retention keeps at least one backup")


def apply_retention(
    bucket: BackupBucket, retention: Retention, *, now: datetime, progress: Progress = lambda _: None
) -> list[str]:
    """Delete backups beyond the count or older than the age (never the newest), and stale partial ones."""
    complete = list_backups(bucket)
    keep = {complete[0].id} if complete else set()
    for index, record in enumerate(complete):
        if index < retention.keep_last and now - record.created <= retention.max_age:
            keep.add(record.id)
    known = {record.id for record in complete}
    doomed: dict[str, list[str]] = {}
    for obj in bucket.objects():
        backup_id = obj.key.split("/", 1)[0]
        if backup_id in keep:
            continue
        if backup_id not in known and now - _id_time(backup_id, now) < PARTIAL_GRACE:
            continue  # possibly a backup still being written
        doomed.setdefault(backup_id, []).append(obj.key)
    for backup_id, keys in sorted(doomed.items()):
        # The manifest goes first: a backup half-deleted by a crash is then partial, never "complete".
        keys.sort(key=lambda k: not k.endswith("/" + MANIFEST))
        bucket.delete(keys[:1])
        bucket.delete(keys[1:])
        progress(f"deleted backup {backup_id}" + ("" if backup_id in known else " (incomplete)"))
    return sorted(doomed)


def _id_time(backup_id: str, fallback: datetime) -> datetime:
    try:
        return datetime.strptime(backup_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return fallback - PARTIAL_GRACE  # not ours: old enough to clean


def find_backup(bucket: BackupBucket, backup_id: str) -> BackupRecord:
    try:
        data = json.loads(bucket.read_bytes(f"{backup_id}/{MANIFEST}"))
    except Exception:
        raise BackupError(f"backup {backup_id!r} does not exist or is incomplete") from None
    return BackupRecord.from_json(data)


def restore_backup(
    qdrant: QdrantCluster,
    bucket: BackupBucket,
    backup_id: str,
    *,
    collections: Iterable[str] | None = None,
    progress: Progress = lambda _: None,
) -> list[str]:
    """Restore all collections of a backup, or the named ones, replacing what the target has.

    Every object is downloaded and its SHA-256 checked before anything in Qdrant changes, so a
    corrupt or missing object refuses the restore and leaves the tenant's collections as they were.
    """
    record = find_backup(bucket, backup_id)
    wanted = list(record.collections) if collections is None else sorted(set(collections))
    missing = [name for name in wanted if name not in record.collections]
    if missing:
        raise BackupError(
            f"backup {backup_id} has no collection {', '.join(map(repr, missing))}; "
            f"it holds {', '.join(record.collections) or 'none'}"
        )
    with tempfile.TemporaryDirectory(prefix="qdrant-restore-") as scratch:
        files: dict[tuple[str, int], Path] = {}
        for shard in record.shards:
            if shard.collection not in wanted:
                continue
            path = Path(scratch) / f"{len(files)}.snapshot"
            digest, size = hashlib.sha256(), 0
            with path.open("wb") as handle:
                for chunk in bucket.stream(shard.key):
                    digest.update(chunk)
                    size += len(chunk)
                    handle.write(chunk)
            if size != shard.size or digest.hexdigest() != shard.sha256:
                raise BackupError(
                    f"backup {backup_id}: {shard.collection} shard {shard.shard_id} does not match its "
                    "recorded checksum; nothing was restored; choose another backup"
                )
            files[(shard.collection, shard.shard_id)] = path
        progress(f"verified {len(files)} shard snapshots of backup {backup_id}")
        existing = set(qdrant.collections())
        for name in wanted:
            if name in existing:
                qdrant.delete_collection(name)
            qdrant.create_collection(name, record.parameters[name])
            layout = qdrant.layout(name)
            for shard in (s for s in record.shards if s.collection == name):
                holders = layout.holders(shard.shard_id, active_only=False)
                if not holders:
                    raise BackupError(
                        f"collection {name!r} was re-created without shard {shard.shard_id}; "
                        "restore it into a cluster that can hold its shard count"
                    )
                qdrant.upload_shard_snapshot(
                    name,
                    shard.shard_id,
                    files[(name, shard.shard_id)],
                    peer=holders[0],
                    checksum=shard.sha256,
                )
            progress(f"restored collection {name}")
    return wanted
