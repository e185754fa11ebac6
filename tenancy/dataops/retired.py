"""Backups a deleted tenant left: set aside, kept for their retention period, then deleted.

A tenant's incarnation is the life of its file (``tenancy.automation.incarnation``); a name can come
back as a new tenant. When an incarnation is destroyed, the worker moves its complete backups out of
the live prefix (``tenants/<env>/<name>/qdrant/``) into ``tenants/<env>/<name>/retired/<folder>/``,
one folder per incarnation (the commit that created its file), beside a record ``incarnation.json``
written first: the incarnation's marker, when it was set aside, by which operation, its
``maxAgeDays`` and (``moved``) when a later pass began moving into the folder, from which the sweep
leaves it alone for the partial-upload grace. Each hand-over a platform-admin makes is an object of its
own, ``<folder>/handedTo/<incarnation>``, written once and deleted by a revocation, never a rewrite of
the record: a second move rewrites the record (read-modify-write) while another replica may hand the
folder over, and a hand-over kept in the record was lost when the two interleaved. One object per
grant needs no lock and no conditional write from the store (any S3-compatible one, every replica);
records from before it keep their ``handedTo`` list, still honoured.

Why a move and not a mark: the backup job of a later tenant of the same name gets credentials for
``…/qdrant/*`` only and prunes by count what it finds there. Outside that prefix the backups are out
of its reach, its retention never counts them, and only the platform's workers and API (whose
credentials cover the bucket) read them. Who may restore them is the API's rule (README, "Backups of
a deleted tenant"); this module only keeps them and says when each expires.

Each move copies a backup's objects (its manifest last) and then deletes the live copy (its manifest
first), so a crash leaves the backup complete in at least one place; moving again finishes the job.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from tenancy.dataops.backup import MANIFEST, PARTIAL_GRACE, BackupError, BackupRecord, Progress, list_backups
from tenancy.dataops.object_store import BackupBucket

RECORD = "incarnation.json"
RECORD_VERSION = 1
HANDOVERS = "handedTo"  # <folder>/handedTo/<incarnation marker>: one object per hand-over


class RetiredNotFound(BackupError):
    """No retired incarnation of that id, or none with a backup to hand over."""


@dataclass(frozen=True)
class RetiredIncarnation:
    """The record of one ended incarnation's backups (``<folder>/incarnation.json``)."""

    folder: str
    incarnation: str | None  # ``<env>:<creating commit>``; None when the destroy did not know it
    retired: datetime
    max_age_days: int
    operation: str | None = None
    handed_to: tuple[str, ...] = ()  # incarnations whose tenant roles may restore these backups
    # When the latest pass began moving into the folder, if a later one than ``retired``'s (a destroy
    # retried, or the same incarnation destroyed again): the sweep's grace counts from it.
    moved: datetime | None = None

    @property
    def last_move(self) -> datetime:
        return self.retired if self.moved is None else max(self.retired, self.moved)

    def expires(self, backup: BackupRecord) -> datetime:
        """A backup is kept as long as the tenant's retention said when it was deleted."""
        return backup.created + timedelta(days=self.max_age_days)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "folder": self.folder,
            "incarnation": self.incarnation,
            "retired": self.retired.isoformat(),
            "maxAgeDays": self.max_age_days,
            "operation": self.operation,
            "handedTo": list(self.handed_to),
            **({} if self.moved is None else {"moved": self.moved.isoformat()}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RetiredIncarnation:
        if data.get("version") != RECORD_VERSION:
            raise BackupError(f"retired incarnation record version {data.get('version')!r} is not understood")
        return cls(
            folder=str(data["folder"]),
            incarnation=data.get("incarnation"),
            retired=datetime.fromisoformat(data["retired"]),
            max_age_days=int(data["maxAgeDays"]),
            operation=data.get("operation"),
            handed_to=tuple(str(marker) for marker in data.get("handedTo") or ()),
            moved=datetime.fromisoformat(data["moved"]) if data.get("moved") else None,
        )


@dataclass(frozen=True)
class RetiredBackup:
    owner: RetiredIncarnation
    record: BackupRecord

    @property
    def expires(self) -> datetime:
        return self.owner.expires(self.record)

    def expired(self, now: datetime) -> bool:
        return now >= self.expires


# The folder names ``retired_folder`` gives (a creating commit, SHA-1 or SHA-256, or ``op-<id>``): what
# the service's hand-over routes and ``tenantctl backups --hand-over`` take as an incarnation.
RETIRED_FOLDER = r"[0-9a-f]{40}|[0-9a-f]{64}|op-[0-9A-Za-z-]{1,64}"


def retired_folder(incarnation: str | None, operation_id: str) -> str:
    """The folder of an incarnation: its creating commit, or the destroying operation's id when the
    incarnation is unknown (queued before operations named it, or with no committed file)."""
    commit = (incarnation or "").partition(":")[2]
    if commit and commit != "uncommitted" and all(c in "0123456789abcdef" for c in commit):
        return commit
    return f"op-{operation_id}"


def _folder(area: BackupBucket, folder: str) -> BackupBucket:
    return area.relocated(area.key(folder))


def _read_record(area: BackupBucket, folder: str, *, grants: bool = True) -> RetiredIncarnation | None:
    """The folder's record; with ``grants``, its ``handed_to`` also names every hand-over object."""
    keys = {obj.key for obj in area.objects(f"{folder}/{RECORD}")}
    if f"{folder}/{RECORD}" not in keys:
        return None
    owner = RetiredIncarnation.from_json(json.loads(area.read_bytes(f"{folder}/{RECORD}")))
    if not grants:
        return owner
    prefix = f"{folder}/{HANDOVERS}/"
    handed = sorted(obj.key[len(prefix) :] for obj in area.objects(prefix))
    return replace(owner, handed_to=tuple(dict.fromkeys((*owner.handed_to, *handed))))


def _write_record(area: BackupBucket, owner: RetiredIncarnation) -> None:
    area.put_bytes(
        f"{owner.folder}/{RECORD}",
        json.dumps(owner.to_json(), sort_keys=True).encode(),
        content_type="application/json",
    )


def retire_backups(
    live: BackupBucket,
    area: BackupBucket,
    owner: RetiredIncarnation,
    *,
    progress: Progress = lambda _: None,
    only: Collection[str] | None = None,
) -> list[str]:
    """Move every complete backup of ``live`` (or the ``only`` ids of them) into ``owner``'s folder of
    ``area``; the ids moved.

    The record is written before the first move (keeping hand-overs an earlier pass recorded), so a
    moved backup always has an owner and an expiry."""
    complete = sorted(
        (r for r in list_backups(live) if only is None or r.id in only), key=lambda r: r.created
    )
    if not complete:
        return []
    existing = _read_record(area, owner.folder, grants=False)  # hand-overs are objects of their own
    if existing is not None:  # a second pass: the incarnation ended when the first one said, and this
        # pass's start keeps a sweep off the folder while it copies (the first one's may be long past)
        handed_to = tuple(dict.fromkeys(existing.handed_to + owner.handed_to))
        owner = replace(
            owner, retired=existing.retired, moved=owner.moved or owner.retired, handed_to=handed_to
        )
    _write_record(area, owner)
    target = _folder(area, owner.folder)
    for record in complete:
        keys = sorted(obj.key for obj in live.objects(f"{record.id}/"))
        manifest = f"{record.id}/{MANIFEST}"
        for key in [k for k in keys if k != manifest] + [manifest]:
            target.copy_from(live, key)
        live.delete([manifest])  # the live copy stops being a backup before its objects go
        live.delete([k for k in keys if k != manifest])
        until = owner.expires(record).strftime("%Y-%m-%d %H:%MZ")
        progress(f"set aside backup {record.id} of incarnation {owner.folder} (kept until {until})")
    return [record.id for record in complete]


def retired_incarnations(area: BackupBucket) -> list[RetiredIncarnation]:
    """Every record under ``area``, oldest first."""
    folders = sorted(
        obj.key.split("/", 1)[0]
        for obj in area.objects()
        if obj.key.count("/") == 1 and obj.key.endswith("/" + RECORD)
    )
    owners = []
    for folder in folders:
        owner = _read_record(area, folder)
        if owner is not None:
            owners.append(owner)
    return sorted(owners, key=lambda o: o.retired)


def retired_backups(area: BackupBucket) -> list[RetiredBackup]:
    """Every complete retired backup under ``area`` (expired ones too), newest first."""
    found = [
        RetiredBackup(owner, record)
        for owner in retired_incarnations(area)
        for record in list_backups(_folder(area, owner.folder))
    ]
    return sorted(found, key=lambda b: b.record.created, reverse=True)


def retired_bucket(area: BackupBucket, folder: str) -> BackupBucket:
    """The folder of one retired incarnation, as a bucket a restore reads."""
    return _folder(area, folder)


def hand_over(area: BackupBucket, folder: str, incarnation: str) -> RetiredIncarnation:
    """Let the tenant roles of ``incarnation`` restore ``folder``'s backups (a platform-admin's call).

    ``RetiredNotFound`` (nothing written) when no deleted incarnation has that folder, when it holds no
    complete backup (e.g. a first move that has not copied one yet), or when it is ``incarnation``'s own."""
    owner = _read_record(area, folder)
    if owner is None:
        raise RetiredNotFound(f"no retired incarnation {folder!r}")
    if owner.incarnation == incarnation:
        raise RetiredNotFound(f"incarnation {folder!r} is the tenant's own, not a deleted one")
    if not list_backups(_folder(area, folder)):
        raise RetiredNotFound(f"retired incarnation {folder!r} holds no complete backup")
    if incarnation not in owner.handed_to:
        grant = f"{folder}/{HANDOVERS}/{incarnation}"
        area.put_bytes(grant, b"", content_type="text/plain")
        # A sweep may have deleted the folder (its last backup expired) between the checks above and
        # this write: its listing of what to delete did not hold the grant, which would be left with
        # no record, and honoured by a later move into the same folder (the incarnation set aside
        # again). The sweep deletes the backups before it lists the rest, so looking again after the
        # write sees them gone whenever the grant missed that listing: take it back then.
        if _read_record(area, folder, grants=False) is None or not list_backups(_folder(area, folder)):
            area.delete([grant])
            raise RetiredNotFound(
                f"retired incarnation {folder!r} was deleted (its backups' retention ended) while it was "
                "being handed over"
            )
        owner = replace(owner, handed_to=(*owner.handed_to, incarnation))
    return owner


def revoke_hand_over(area: BackupBucket, folder: str, incarnation: str) -> RetiredIncarnation:
    """Take back a hand-over of ``folder`` to ``incarnation`` (idempotent); ``RetiredNotFound`` if no
    deleted incarnation has that folder."""
    owner = _read_record(area, folder, grants=False)
    if owner is None:
        raise RetiredNotFound(f"no retired incarnation {folder!r}")
    area.delete([f"{folder}/{HANDOVERS}/{incarnation}"])
    if incarnation in owner.handed_to:  # a record from before hand-overs were objects of their own
        _write_record(area, replace(owner, handed_to=tuple(m for m in owner.handed_to if m != incarnation)))
    found = _read_record(area, folder)
    return owner if found is None else found


def purge_expired(area: BackupBucket, *, now: datetime, progress: Progress = lambda _: None) -> list[str]:
    """Delete the retired backups past their expiry (manifest first) and the records left with none,
    and hand-overs left with no record (``_delete_orphan_hand_overs``)."""
    deleted: list[str] = []
    _delete_orphan_hand_overs(area, progress)
    for owner in retired_incarnations(area):
        folder = _folder(area, owner.folder)
        kept = 0
        for record in list_backups(folder):
            if now < owner.expires(record):
                kept += 1
                continue
            keys = sorted(obj.key for obj in folder.objects(f"{record.id}/"))
            manifest = f"{record.id}/{MANIFEST}"
            folder.delete([manifest])
            folder.delete([k for k in keys if k != manifest])
            deleted.append(record.id)
            progress(f"deleted expired backup {record.id} of deleted incarnation {owner.folder}")
        if kept == 0 and now - owner.last_move >= PARTIAL_GRACE:  # younger: a move may still be copying
            leftovers = [obj.key for obj in folder.objects() if obj.key != RECORD]
            folder.delete(leftovers)
            folder.delete([RECORD])
    return deleted


def _delete_orphan_hand_overs(area: BackupBucket, progress: Progress) -> None:
    """Delete hand-over objects in a folder with no record: a hand-over that met a sweep deleting its
    folder before ``hand_over`` looked again after its write (or a version without that look) left
    one. It grants nothing now, but a later move into the same folder would honour it. A record is
    written before anything else goes into a folder and hand-overs need one, so a grant without a
    record is always such a leftover."""
    keys = [obj.key for obj in area.objects()]
    recorded = {key.split("/", 1)[0] for key in keys if key.count("/") == 1 and key.endswith("/" + RECORD)}
    orphans = [
        key
        for key in keys
        if key.split("/", 1)[0] not in recorded and key.split("/")[1:2] == [HANDOVERS] and key.count("/") == 2
    ]
    if orphans:
        area.delete(orphans)
        for key in orphans:
            progress(f"deleted hand-over {key} left without its incarnation's record")
