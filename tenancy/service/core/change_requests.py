"""Change requests: what a tenant-admin may not do alone waits for a platform-admin instead of failing.

A tenant-admin's write that needs a platform-admin (a plan other than the self-service plans, a size
above the tenant's plan, a new tenant on a paid plan, a change of groups) is stored as a *pending
record*: requester, reason, the exact proposed document, the version of the tenant it was made
against (its etag), a field diff and the rendered preview. Nothing reaches git or the queue until a
platform-admin approves; approval then applies exactly that document through the ordinary change
path, with ``If-Match`` set to the version the request was made against, so a tenant that moved since
is refused rather than overwritten.

Why a pending record and not a git branch: the tenants repository is the record of what is *applied*
(CI, Argo CD and every replica read its main branch); a branch per request would need pushing,
cleaning and protecting on every remote, and git has no place for the reason, the preview, the
expiry or the decision. The record lives beside the API keys (SQLite in the embedded default, Redis
with several replicas), and the commit an approval makes names the request (`Change-Request: <id>`).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from tenancy.sqlite_shared import connect_shared


class RequestStatus(StrEnum):
    pending = "pending"
    applying = "applying"  # an approval is applying it right now (a second approval is refused)
    approved = "approved"
    rejected = "rejected"
    expired = "expired"


@dataclass(frozen=True)
class FieldChange:
    field: str
    before: Any
    after: Any


@dataclass(frozen=True)
class ChangeRequest:
    id: str
    environment: str
    tenant: str
    requested_by: str  # the requester's actor (user:<sub>)
    requester_name: str
    reason: str
    created_at: float
    expires_at: float
    base_etag: str | None  # the tenant's version the request was made against; None: a new tenant
    base_document: dict[str, Any] | None
    document: dict[str, Any]  # exactly what approval commits
    diff: list[FieldChange]
    needs: list[dict[str, str]]  # why a platform-admin must approve: field and reason
    preview: dict[str, Any] = field(default_factory=dict)  # rendered summary and resource changes
    status: RequestStatus = RequestStatus.pending
    decided_by: str | None = None
    decided_at: float | None = None
    decision_reason: str | None = None
    operation_id: str | None = None
    commit: str | None = None
    # The tenant incarnation it belongs to (``core.incarnation``): the one it was filed against, or,
    # once approved, the one its commit began; None in requests stored before it was recorded.
    incarnation: str | None = None

    def expired(self, now: float) -> bool:
        return self.status is RequestStatus.pending and now >= self.expires_at

    def to_json(self) -> str:
        data = asdict(self)
        data["status"] = self.status.value
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ChangeRequest:
        data = json.loads(text)
        data["status"] = RequestStatus(data["status"])
        data["diff"] = [FieldChange(**item) for item in data["diff"]]
        return cls(**data)


@dataclass(frozen=True)
class ListScope:
    """What a listing reads: the requests of these tenants (in any environment) and those
    ``requested_by`` filed. A tenant-admin's listing then reads its own tenants' requests through the
    stores' indexes, not every tenant's (up to the retention's worth of decided ones); the caller
    still checks each for what it may see. None where a listing reads everything (platform-admins)."""

    tenants: frozenset[str]
    requested_by: str | None = None


def new_request_id() -> str:
    return f"cr-{secrets.token_hex(6)}"


def field_diff(before: dict[str, Any] | None, after: dict[str, Any]) -> list[FieldChange]:
    """Every leaf that differs between two tenant documents, by dotted path (lists compare whole)."""
    flat_before = _flatten(before or {})
    flat_after = _flatten(after)
    return [
        FieldChange(path, flat_before.get(path), flat_after.get(path))
        for path in sorted(set(flat_before) | set(flat_after))
        if flat_before.get(path) != flat_after.get(path)
    ]


def _flatten(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


class ChangeRequestStore(Protocol):
    def add(self, request: ChangeRequest) -> None: ...

    def get(self, request_id: str) -> ChangeRequest | None: ...

    def list(
        self, *, limit: int = 200, offset: int = 0, scope: ListScope | None = None
    ) -> list[ChangeRequest]:
        """Newest first, from the ``offset``-th; with ``scope``, of those in it only."""
        ...

    def pending(self) -> Sequence[ChangeRequest]:  # (``list`` is the method's name here)
        """Every request still pending (expired or not), without reading the decided ones."""
        ...

    def purge(self, created_before: float) -> int:
        """Remove the requests made before ``created_before`` that are decided (approved, rejected or
        expired), never one pending or being applied; how many were removed."""
        ...

    def transition(
        self, request_id: str, expected: RequestStatus, updated: ChangeRequest
    ) -> ChangeRequest | None:
        """Store ``updated`` if the request's status is still ``expected``; None when it moved."""
        ...


class SqliteChangeRequestStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = connect_shared(path, timeout=5.0)  # WAL, without racing the other processes
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS change_requests (id TEXT PRIMARY KEY, created_at REAL NOT NULL,"
            " status TEXT NOT NULL, body TEXT NOT NULL, tenant TEXT, requested_by TEXT)"
        )
        self._index_by_tenant_and_requester()
        self._lock = threading.Lock()

    def _index_by_tenant_and_requester(self) -> None:
        """The columns a scoped listing reads by, and their indexes; a database made before they were
        kept gets them, filled from the stored requests, in one transaction (any process may be first;
        one that finds them all there takes no lock)."""
        if self._indexed_by_tenant_and_requester():
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(change_requests)")}
            for column in ("tenant", "requested_by"):
                if column not in columns:
                    self._db.execute(f"ALTER TABLE change_requests ADD COLUMN {column} TEXT")
            self._db.execute(
                "UPDATE change_requests SET tenant = json_extract(body, '$.tenant'),"
                " requested_by = json_extract(body, '$.requested_by') WHERE tenant IS NULL"
            )
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS change_requests_by_tenant ON change_requests (tenant, created_at)"
            )
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS change_requests_by_requester"
                " ON change_requests (requested_by, created_at)"
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _indexed_by_tenant_and_requester(self) -> bool:
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(change_requests)")}
        indexes = {row[1] for row in self._db.execute("PRAGMA index_list(change_requests)")}
        wanted = {"change_requests_by_tenant", "change_requests_by_requester"}
        return {"tenant", "requested_by"} <= columns and wanted <= indexes

    def add(self, request: ChangeRequest) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO change_requests (id, created_at, status, body, tenant, requested_by)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    request.id,
                    request.created_at,
                    request.status.value,
                    request.to_json(),
                    request.tenant,
                    request.requested_by,
                ),
            )

    def get(self, request_id: str) -> ChangeRequest | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM change_requests WHERE id = ?", (request_id,)).fetchone()
        return ChangeRequest.from_json(row[0]) if row else None

    def list(
        self, *, limit: int = 200, offset: int = 0, scope: ListScope | None = None
    ) -> list[ChangeRequest]:
        where = ""
        values: tuple[str | None, ...] = ()
        if scope is not None:  # the tenants as one JSON array: any number of them, one parameter
            where = " WHERE tenant IN (SELECT value FROM json_each(?)) OR requested_by = ?"
            values = (json.dumps(sorted(scope.tenants)), scope.requested_by)
        with self._lock:
            rows = self._db.execute(
                f"SELECT body FROM change_requests{where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
                (*values, limit, offset),
            ).fetchall()
        return [ChangeRequest.from_json(row[0]) for row in rows]

    def purge(self, created_before: float) -> int:
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM change_requests WHERE created_at < ? AND status NOT IN (?, ?)",
                (created_before, RequestStatus.pending.value, RequestStatus.applying.value),
            )
        return cursor.rowcount

    def pending(self) -> Sequence[ChangeRequest]:  # (``list`` is the method's name here)
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM change_requests WHERE status = ?", (RequestStatus.pending.value,)
            ).fetchall()
        return [ChangeRequest.from_json(row[0]) for row in rows]

    def transition(
        self, request_id: str, expected: RequestStatus, updated: ChangeRequest
    ) -> ChangeRequest | None:
        with self._lock:
            cursor = self._db.execute(
                "UPDATE change_requests SET status = ?, body = ? WHERE id = ? AND status = ?",
                (updated.status.value, updated.to_json(), request_id, expected.value),
            )
        return updated if cursor.rowcount == 1 else None

    def close(self) -> None:
        self._db.close()


class RedisChangeRequestStore:
    """The same records in the platform's Redis, so every replica sees and decides the same requests."""

    def __init__(self, redis: Any, *, prefix: str) -> None:
        self._redis = redis
        self._index = f"{prefix}change-requests"
        self._prefix = f"{prefix}change-request:"
        # The ids of pending requests (requests filed before it was kept are not in it).
        self._pending = f"{prefix}change-requests:pending"
        # Each tenant's and each requester's request ids by time (what a scoped listing reads), and
        # how far the main index is known to be in them (``_index_missed_requests``).
        self._by = f"{prefix}change-requests:by-"
        self._indexed_mark = f"{prefix}change-requests:indexed"  # the newest time indexed

    def _by_tenant(self, tenant: str) -> str:
        return f"{self._by}tenant:{tenant}"

    def _by_requester(self, actor: str) -> str:
        return f"{self._by}requester:{actor}"

    def add(self, request: ChangeRequest) -> None:
        pipe = self._redis.pipeline()
        pipe.set(self._prefix + request.id, request.to_json())
        pipe.zadd(self._index, {request.id: request.created_at})
        pipe.zadd(self._by_tenant(request.tenant), {request.id: request.created_at})
        pipe.zadd(self._by_requester(request.requested_by), {request.id: request.created_at})
        if request.status is RequestStatus.pending:
            pipe.sadd(self._pending, request.id)
        pipe.execute()

    def _index_missed_requests(self) -> None:
        """Put into the per-tenant and per-requester indexes every request the main index has that they
        may lack: those stored before the indexes were kept, and those a replica of an earlier version
        files during a rolling upgrade (it writes the main index only). A watermark (the newest time
        indexed) bounds the scan to what came since, less ``_CLOCK_SKEW_SECONDS`` for replicas' clocks
        and filings in flight. Adding twice changes nothing, so replicas doing it at once are harmless."""
        mark = self._redis.get(self._indexed_mark)
        since = float(_text(mark)) - _CLOCK_SKEW_SECONDS if mark else "-inf"
        newest = None
        for item, score in self._redis.zrangebyscore(self._index, since, "+inf", withscores=True):
            request = self.get(_text(item))
            if request is not None:
                pipe = self._redis.pipeline()
                pipe.zadd(self._by_tenant(request.tenant), {request.id: request.created_at})
                pipe.zadd(self._by_requester(request.requested_by), {request.id: request.created_at})
                pipe.execute()
            newest = score if newest is None else max(newest, score)
        if newest is not None:
            self._redis.set(self._indexed_mark, repr(float(newest)))

    def purge(self, created_before: float) -> int:
        removed = 0
        for item in self._redis.zrangebyscore(self._index, "-inf", f"({created_before}"):
            request_id = _text(item)
            request = self.get(request_id)
            if request is not None and request.status in (RequestStatus.pending, RequestStatus.applying):
                continue
            pipe = self._redis.pipeline()
            pipe.delete(self._prefix + request_id)
            pipe.zrem(self._index, request_id)
            pipe.srem(self._pending, request_id)
            if request is not None:
                pipe.zrem(self._by_tenant(request.tenant), request_id)
                pipe.zrem(self._by_requester(request.requested_by), request_id)
            pipe.execute()
            removed += 1
        return removed

    def pending(self) -> Sequence[ChangeRequest]:  # (``list`` is the method's name here)
        ids = sorted(_text(item) for item in self._redis.smembers(self._pending))
        found = [self.get(request_id) for request_id in ids]
        return [
            request for request in found if request is not None and request.status is RequestStatus.pending
        ]

    def get(self, request_id: str) -> ChangeRequest | None:
        text = self._redis.get(self._prefix + request_id)
        return ChangeRequest.from_json(_text(text)) if text else None

    def list(
        self, *, limit: int = 200, offset: int = 0, scope: ListScope | None = None
    ) -> list[ChangeRequest]:
        if scope is None:
            ids = [_text(item) for item in self._redis.zrevrange(self._index, offset, offset + limit - 1)]
        else:  # the scope's indexes merged, newest first: each holds one tenant's or one requester's
            self._index_missed_requests()
            keys = [self._by_tenant(tenant) for tenant in sorted(scope.tenants)]
            if scope.requested_by is not None:
                keys.append(self._by_requester(scope.requested_by))
            pipe = self._redis.pipeline()
            for key in keys:
                pipe.zrange(key, 0, -1, withscores=True)
            scored = {_text(item): score for entries in pipe.execute() for item, score in entries}
            ordered = sorted(scored, key=lambda request_id: (-scored[request_id], request_id))
            ids = ordered[offset : offset + limit]
        found = [self.get(request_id) for request_id in ids]
        return [request for request in found if request is not None]

    def transition(
        self, request_id: str, expected: RequestStatus, updated: ChangeRequest
    ) -> ChangeRequest | None:
        import redis as redis_errors

        key = self._prefix + request_id
        with self._redis.pipeline() as pipe:
            try:
                pipe.watch(key)  # compare-and-set: another replica deciding first makes this fail
                text = pipe.get(key)
                if not text or ChangeRequest.from_json(_text(text)).status is not expected:
                    pipe.unwatch()
                    return None
                pipe.multi()
                pipe.set(key, updated.to_json())
                if updated.status is RequestStatus.pending:
                    pipe.sadd(self._pending, request_id)
                else:
                    pipe.srem(self._pending, request_id)
                pipe.execute()
            except redis_errors.WatchError:
                return None
        return updated


_CLOCK_SKEW_SECONDS = 300.0  # how far back each scoped listing looks again for requests to index


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decided(
    request: ChangeRequest, status: RequestStatus, *, by: str | None, reason: str | None = None, **extra: Any
) -> ChangeRequest:
    return replace(
        request, status=status, decided_by=by, decided_at=time.time(), decision_reason=reason, **extra
    )
