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
with several replicas), and the commit an approval makes names the request.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol


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

    def list(self, *, limit: int = 200, offset: int = 0) -> list[ChangeRequest]:
        """Newest first, from the ``offset``-th."""
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
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS change_requests (id TEXT PRIMARY KEY, created_at REAL NOT NULL,"
            " status TEXT NOT NULL, body TEXT NOT NULL)"
        )
        self._lock = threading.Lock()

    def add(self, request: ChangeRequest) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO change_requests (id, created_at, status, body) VALUES (?, ?, ?, ?)",
                (request.id, request.created_at, request.status.value, request.to_json()),
            )

    def get(self, request_id: str) -> ChangeRequest | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM change_requests WHERE id = ?", (request_id,)).fetchone()
        return ChangeRequest.from_json(row[0]) if row else None

    def list(self, *, limit: int = 200, offset: int = 0) -> list[ChangeRequest]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM change_requests ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
                (limit, offset),
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

    def add(self, request: ChangeRequest) -> None:
        pipe = self._redis.pipeline()
        pipe.set(self._prefix + request.id, request.to_json())
        pipe.zadd(self._index, {request.id: request.created_at})
        if request.status is RequestStatus.pending:
            pipe.sadd(self._pending, request.id)
        pipe.execute()

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

    def list(self, *, limit: int = 200, offset: int = 0) -> list[ChangeRequest]:
        ids = [_text(item) for item in self._redis.zrevrange(self._index, offset, offset + limit - 1)]
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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decided(
    request: ChangeRequest, status: RequestStatus, *, by: str | None, reason: str | None = None, **extra: Any
) -> ChangeRequest:
    return replace(
        request, status=status, decided_by=by, decided_at=time.time(), decision_reason=reason, **extra
    )
