"""Idempotency-Key on writes: the same key with the same request replays the first answer instead of
writing (and queueing) twice; with a different request it is refused.

Only successful answers are kept: a failed request may be retried with the same key. Records expire
after ``ttl`` seconds. Keys are scoped to the caller, so two principals never share one. A key is
reserved while its first request runs only for ``lease`` seconds: if the process died mid-request,
the client's retry goes ahead once the lease is over instead of meeting "in use" for a day.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tenancy.service.core.errors import ServiceError
from tenancy.service.core.process_identity import process_ended, process_identity
from tenancy.sqlite_shared import connect_shared
from tenancy.writer_turns import WriterTurns


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: dict[str, Any]


class IdempotencyStore(Protocol):
    def begin(self, scope: str, key: str, fingerprint: str) -> StoredResponse | None:
        """None: go ahead (the key is now reserved). A StoredResponse: replay it. Raises ServiceError when
        the key belongs to another request or its first request is still running."""
        ...

    def finish(self, scope: str, key: str, response: StoredResponse) -> None: ...

    def abandon(self, scope: str, key: str) -> None: ...


def _conflict(state: str, stored_fingerprint: str, fingerprint: str, *, free_in: float = 0.0) -> None:
    """``free_in``: seconds until a running reservation's lease ends."""
    if stored_fingerprint != fingerprint:
        raise ServiceError(
            "idempotency_key_reused",
            "this Idempotency-Key was already used for a different request; use a new key per change",
        )
    if state == "running":
        seconds = max(1, math.ceil(free_in))
        raise ServiceError(
            "idempotency_key_in_use",
            "the first request with this Idempotency-Key has not answered yet: it is still running, or "
            "the process that ran it stopped where this one cannot see it (another host or container); "
            f"the key is free again in {seconds} s at the latest: retry after Retry-After (the repeat "
            "then answers what the first request did, or does it)",
            headers={"Retry-After": str(seconds)},
        )


def _taken_over(state: str, stored_fingerprint: str, fingerprint: str, owner: str | None) -> bool:
    """A repeat of a request whose process is seen to have ended (killed mid-request on this host):
    its reservation is void at once, instead of when its lease ends (``process_identity``)."""
    return state == "running" and stored_fingerprint == fingerprint and process_ended(owner)


DEFAULT_LEASE_SECONDS = 120.0  # longer than any one write (lock wait, git push retries), far below a day


class SqliteIdempotencyStore:
    def __init__(self, path: Path, *, ttl_seconds: int, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._ttl = ttl_seconds
        self._lease = lease_seconds
        self._db = connect_shared(path, timeout=5.0)  # WAL, without racing the other processes
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS idempotency (scope TEXT, key TEXT, fingerprint TEXT, state TEXT,"
            " status INTEGER, body TEXT, expires_at REAL, owner TEXT, PRIMARY KEY (scope, key))"
        )
        if not self._has_owner():  # a file from before reservations named their process
            try:
                self._db.execute("ALTER TABLE idempotency ADD COLUMN owner TEXT")
            except sqlite3.OperationalError:
                if not self._has_owner():  # not another process adding it meanwhile: locked, say
                    raise
        self._lock = threading.Lock()
        self._turns = WriterTurns(path)

    def _has_owner(self) -> bool:
        return "owner" in {row[1] for row in self._db.execute("PRAGMA table_info(idempotency)")}

    def begin(self, scope: str, key: str, fingerprint: str) -> StoredResponse | None:
        now = time.time()
        # One transaction, writers taking turns across processes too (several ``tenantctl serve``
        # processes share this file): two requests with one key never both find it free.
        with self._lock, self._turns.turn():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM idempotency WHERE expires_at < ?", (now,))
                row = self._db.execute(
                    "SELECT fingerprint, state, status, body, expires_at, owner FROM idempotency"
                    " WHERE scope = ? AND key = ?",
                    (scope, key),
                ).fetchone()
                if row is not None and _taken_over(row[1], row[0], fingerprint, row[5]):
                    self._db.execute("DELETE FROM idempotency WHERE scope = ? AND key = ?", (scope, key))
                    row = None
                if row is None:
                    # A running reservation expires with its lease (a crashed request frees its key
                    # soon, at once when its process is seen to have ended); ``finish`` extends the
                    # record to the full TTL.
                    self._db.execute(
                        "INSERT INTO idempotency (scope, key, fingerprint, state, expires_at, owner)"
                        " VALUES (?, ?, ?, 'running', ?, ?)",
                        (scope, key, fingerprint, now + self._lease, process_identity()),
                    )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            if row is None:
                return None
        _conflict(row[1], row[0], fingerprint, free_in=row[4] - now)
        return StoredResponse(status=row[2], body=json.loads(row[3]))

    def finish(self, scope: str, key: str, response: StoredResponse) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE idempotency SET state = 'done', status = ?, body = ?, expires_at = ?"
                " WHERE scope = ? AND key = ?",
                (response.status, json.dumps(response.body), time.time() + self._ttl, scope, key),
            )

    def abandon(self, scope: str, key: str) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM idempotency WHERE scope = ? AND key = ? AND state = 'running'", (scope, key)
            )

    def close(self) -> None:
        self._db.close()
        self._turns.close()


class RedisIdempotencyStore:
    def __init__(
        self, redis: Any, *, prefix: str, ttl_seconds: int, lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl = ttl_seconds
        self._lease_ms = max(int(lease_seconds * 1000), 1)

    def _key(self, scope: str, key: str) -> str:
        # The scope's length first: a scope holds a subject and a key may hold ':' too, so joined
        # plainly ("user:a:b" + "c", "user:a" + "b:c") two callers' keys could be one Redis key.
        return f"{self._prefix}idempotency:{len(scope)}:{scope}:{key}"

    def begin(self, scope: str, key: str, fingerprint: str) -> StoredResponse | None:
        record = json.dumps({"fingerprint": fingerprint, "state": "running", "owner": process_identity()})
        name = self._key(scope, key)
        if self._redis.set(name, record, nx=True, px=self._lease_ms):
            return None
        raw = self._redis.get(name)
        if raw is None:  # expired between the two calls
            return self.begin(scope, key, fingerprint)
        stored = json.loads(raw)
        if _taken_over(stored["state"], stored["fingerprint"], fingerprint, stored.get("owner")):
            from redis.exceptions import WatchError

            # Replaced only if it is still that record (another retry may have taken it first).
            with self._redis.pipeline() as pipe:
                try:
                    pipe.watch(name)
                    if pipe.get(name) == raw:
                        pipe.multi()
                        pipe.set(name, record, px=self._lease_ms)
                        pipe.execute()
                        return None
                except WatchError:
                    pass
            return self.begin(scope, key, fingerprint)
        _conflict(stored["state"], stored["fingerprint"], fingerprint, free_in=self._remaining(name))
        return StoredResponse(status=stored["status"], body=stored["body"])

    def _remaining(self, name: str) -> float:
        milliseconds = self._redis.pttl(name)
        return max(float(milliseconds), 0.0) / 1000

    def finish(self, scope: str, key: str, response: StoredResponse) -> None:
        raw = self._redis.get(self._key(scope, key))
        if raw is None:
            return  # the lease ran out first: a retry may already hold the key, so keep nothing
        fingerprint = json.loads(raw)["fingerprint"]
        record = {
            "fingerprint": fingerprint,
            "state": "done",
            "status": response.status,
            "body": response.body,
        }
        self._redis.set(self._key(scope, key), json.dumps(record), ex=self._ttl)

    def abandon(self, scope: str, key: str) -> None:
        self._redis.delete(self._key(scope, key))
