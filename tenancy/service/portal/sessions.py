"""Portal sessions: an opaque id in an HttpOnly cookie; the access token stays on the server.

The cookie is ``__Host-`` prefixed (Secure, Path=/, no Domain) and SameSite=Strict; every request
that is not a read also carries the session's CSRF token in ``X-CSRF-Token``. A session lives as long
as its access token: when the token expires the API answers 401 and the portal returns to sign-in.
Sessions are kept in a SQLite file of the state directory that every process of ``tenantctl serve``
shares (embedded default; readable by the service's user only, like the local issuer's key) or in
Redis (several replicas), keyed by a hash of the id, so reading the store does not yield usable
cookies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from fastapi import Request

from tenancy.service.core.errors import ServiceError
from tenancy.sqlite_shared import connect_shared
from tenancy.writer_turns import WriterTurns

SESSION_COOKIE = "__Host-tenancy-session"
LOGIN_COOKIE = "__Host-tenancy-login"
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class PortalSession:
    csrf: str
    token: str
    expires_at: float
    via: str  # "dev" (the local issuer) or "oidc" (Keycloak)


class KeyValueStore(Protocol):
    def put(self, key: str, value: dict[str, Any], ttl_seconds: float) -> None: ...

    def get(self, key: str) -> dict[str, Any] | None: ...

    def pop(self, key: str) -> dict[str, Any] | None: ...


class SqliteStore:
    """The store in a SQLite file shared by the processes of one state directory."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The file holds access tokens: the service's user only (SQLite gives its journal the same mode).
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        self._db = connect_shared(path)  # WAL, without racing the service's other processes
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS portal (key TEXT PRIMARY KEY, expires_at REAL NOT NULL, value TEXT)"
        )
        self._lock = threading.Lock()
        self._turns = WriterTurns(path)

    def put(self, key: str, value: dict[str, Any], ttl_seconds: float) -> None:
        now = time.time()
        with self._lock, self._turns.turn():
            self._db.execute("DELETE FROM portal WHERE expires_at <= ?", (now,))
            self._db.execute(
                "INSERT OR REPLACE INTO portal (key, expires_at, value) VALUES (?, ?, ?)",
                (key, now + ttl_seconds, json.dumps(value)),
            )

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM portal WHERE key = ? AND expires_at > ?", (key, time.time())
            ).fetchone()
        return json.loads(row[0]) if row else None

    def pop(self, key: str) -> dict[str, Any] | None:
        """The value, removed in the same statement: of two processes popping one key, one gets it."""
        with self._lock, self._turns.turn():
            row = self._db.execute(
                "DELETE FROM portal WHERE key = ? RETURNING value, expires_at", (key,)
            ).fetchone()
        return json.loads(row[0]) if row and row[1] > time.time() else None

    def close(self) -> None:
        self._db.close()
        self._turns.close()


class RedisStore:
    def __init__(self, redis: Any, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = f"{prefix}portal:"

    def put(self, key: str, value: dict[str, Any], ttl_seconds: float) -> None:
        self._redis.set(self._prefix + key, json.dumps(value), px=max(1, int(ttl_seconds * 1000)))

    def get(self, key: str) -> dict[str, Any] | None:
        text = self._redis.get(self._prefix + key)
        return json.loads(text) if text else None

    def pop(self, key: str) -> dict[str, Any] | None:
        pipe = self._redis.pipeline()
        pipe.get(self._prefix + key)
        pipe.delete(self._prefix + key)
        text, _ = pipe.execute()
        return json.loads(text) if text else None


def _key(kind: str, secret: str) -> str:
    return f"{kind}:{hashlib.sha256(secret.encode()).hexdigest()}"


class Sessions:
    def __init__(self, store: KeyValueStore) -> None:
        self.store = store

    def create(self, token: str, expires_at: float, *, via: str) -> tuple[str, PortalSession]:
        session_id = secrets.token_urlsafe(32)
        session = PortalSession(csrf=secrets.token_urlsafe(32), token=token, expires_at=expires_at, via=via)
        self.store.put(_key("session", session_id), asdict(session), max(1.0, expires_at - time.time()))
        return session_id, session

    def get(self, session_id: str | None) -> PortalSession | None:
        if not session_id:
            return None
        found = self.store.get(_key("session", session_id))
        return PortalSession(**found) if found else None

    def end(self, session_id: str | None) -> None:
        if session_id:
            self.store.pop(_key("session", session_id))

    def begin_login(self, state: str, pending: dict[str, Any]) -> None:
        self.store.put(_key("login", state), pending, 600)

    def finish_login(self, state: str) -> dict[str, Any] | None:
        return self.store.pop(_key("login", state))


def session_credential(request: Request) -> str | None:
    """The access token of the caller's portal session, or None without one. Writes must carry the
    session's CSRF token: a cookie alone never changes anything."""
    sessions: Sessions | None = getattr(request.app.state, "portal_sessions", None)
    if sessions is None:
        return None
    session = sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return None
    if request.method not in _SAFE_METHODS:
        presented = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(presented.encode(), session.csrf.encode()):
            raise ServiceError(
                "csrf_failed",
                f"a portal session's writes need its CSRF token in {CSRF_HEADER}; reload the page",
            )
    return session.token
