"""API keys for machines: scoped to one tenant and one role, with an expiry; shown once, stored as a hash.

A key reads ``tnk_<id>_<secret>``: the id finds the record, the SHA-256 of the whole key is compared in
constant time. A fast hash is enough because the secret is 256 random bits, not a password a person
chose: there is nothing to brute-force that a slow hash would protect.

A key is also bound to the tenant's incarnation when it was made (``core.incarnation``): deleting a
tenant revokes its keys, and a key never works for a later tenant of the same name.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tenancy.service.core.security import Principal, Role
from tenancy.sqlite_shared import connect_shared

KEY_PREFIX = "tnk_"
_KEY = re.compile(r"^tnk_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    tenant: str
    role: Role
    name: str
    created_by: str
    created_at: float
    expires_at: float
    revoked_at: float | None = None
    incarnation: frozenset[str] = frozenset()  # the tenant's incarnation markers when it was made

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and now < self.expires_at

    def principal(self, environments: frozenset[str] | None = None) -> Principal:
        """``environments``: where its tenant is still the incarnation the key was made for."""
        return Principal(
            subject=f"api-key:{self.id}",
            display_name=f"API key {self.name} ({self.id})",
            email=None,
            kind="api_key",
            tenant_roles={self.tenant: self.role},
            api_key_id=self.id,
            environments=environments,
        )


def looks_like_api_key(value: str) -> bool:
    return value.startswith(KEY_PREFIX)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str, str]:
    """A fresh key: (id, plaintext, digest)."""
    key_id = secrets.token_hex(8)
    plaintext = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    return key_id, plaintext, _digest(plaintext)


def _matches(presented: str, digest: str) -> bool:
    return hmac.compare_digest(_digest(presented), digest)


def _markers(text: str | None) -> frozenset[str]:
    if not text:
        return frozenset()
    value = json.loads(text)
    return (
        frozenset(item for item in value if isinstance(item, str)) if isinstance(value, list) else frozenset()
    )


class ApiKeyStore(Protocol):
    def create(
        self,
        *,
        tenant: str,
        role: Role,
        name: str,
        created_by: str,
        expires_at: float,
        incarnation: frozenset[str] = frozenset(),
    ) -> tuple[ApiKeyRecord, str]:
        """Store a new key; return its record and the plaintext (the only time it exists)."""
        ...

    def list(self, tenant: str) -> list[ApiKeyRecord]: ...

    def revoke(self, tenant: str, key_id: str) -> ApiKeyRecord | None: ...

    def revoke_all(self, tenant: str) -> int:
        """Revoke every active key of ``tenant`` (it was deleted); return how many."""
        ...

    def authenticate(self, presented: str) -> ApiKeyRecord | None:
        """The record of a valid, unrevoked, unexpired key; None for anything else."""
        ...


class SqliteApiKeyStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = connect_shared(path, timeout=5.0)  # WAL, without racing the other processes
        # In one transaction: processes starting together (``tenantctl serve --processes 2`` on a new
        # state directory) both found the column missing, and the second one's ALTER crashed it.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS api_keys (id TEXT PRIMARY KEY, tenant TEXT NOT NULL,"
                " role TEXT NOT NULL, name TEXT NOT NULL, digest TEXT NOT NULL, created_by TEXT NOT NULL,"
                " created_at REAL NOT NULL,"
                " expires_at REAL NOT NULL, revoked_at REAL, incarnation TEXT)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant)")
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(api_keys)")}
            if "incarnation" not in columns:  # a store made before keys were bound to incarnations
                self._db.execute("ALTER TABLE api_keys ADD COLUMN incarnation TEXT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self._lock = threading.Lock()

    _COLUMNS = "id, tenant, role, name, created_by, created_at, expires_at, revoked_at, incarnation"

    @staticmethod
    def _record(row: tuple[Any, ...]) -> ApiKeyRecord:
        return ApiKeyRecord(
            id=row[0],
            tenant=row[1],
            role=Role(row[2]),
            name=row[3],
            created_by=row[4],
            created_at=row[5],
            expires_at=row[6],
            revoked_at=row[7],
            incarnation=_markers(row[8]),
        )

    def create(
        self,
        *,
        tenant: str,
        role: Role,
        name: str,
        created_by: str,
        expires_at: float,
        incarnation: frozenset[str] = frozenset(),
    ) -> tuple[ApiKeyRecord, str]:
        key_id, plaintext, digest = new_key()
        record = ApiKeyRecord(
            key_id, tenant, role, name, created_by, time.time(), expires_at, incarnation=incarnation
        )
        with self._lock:
            self._db.execute(
                "INSERT INTO api_keys (id, tenant, role, name, digest, created_by, created_at, expires_at,"
                " incarnation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key_id,
                    tenant,
                    role.value,
                    name,
                    digest,
                    created_by,
                    record.created_at,
                    expires_at,
                    json.dumps(sorted(incarnation)),
                ),
            )
        return record, plaintext

    def list(self, tenant: str) -> list[ApiKeyRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {self._COLUMNS} FROM api_keys WHERE tenant = ? ORDER BY created_at", (tenant,)
            ).fetchall()
        return [self._record(row) for row in rows]

    def revoke(self, tenant: str, key_id: str) -> ApiKeyRecord | None:
        with self._lock:
            self._db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND tenant = ? AND revoked_at IS NULL",
                (time.time(), key_id, tenant),
            )
            row = self._db.execute(
                f"SELECT {self._COLUMNS} FROM api_keys WHERE id = ? AND tenant = ?", (key_id, tenant)
            ).fetchone()
        return self._record(row) if row else None

    def revoke_all(self, tenant: str) -> int:
        with self._lock:
            cursor = self._db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE tenant = ? AND revoked_at IS NULL",
                (time.time(), tenant),
            )
        return cursor.rowcount

    def authenticate(self, presented: str) -> ApiKeyRecord | None:
        match = _KEY.match(presented)
        if match is None:
            return None
        with self._lock:
            row = self._db.execute(
                f"SELECT {self._COLUMNS}, digest FROM api_keys WHERE id = ?", (match["id"],)
            ).fetchone()
        if row is None or not _matches(presented, row[-1]):
            return None
        record = self._record(row[:-1])
        return record if record.usable(time.time()) else None

    def close(self) -> None:
        self._db.close()


class RedisApiKeyStore:
    """The same records in Redis, so every replica accepts a key any replica created."""

    def __init__(self, redis: Any, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, key_id: str) -> str:
        return f"{self._prefix}api-key:{key_id}"

    def _index(self, tenant: str) -> str:
        return f"{self._prefix}api-keys:{tenant}"

    @staticmethod
    def _record(fields: dict[bytes, bytes]) -> ApiKeyRecord:
        text = {k.decode(): v.decode() for k, v in fields.items()}
        return ApiKeyRecord(
            id=text["id"],
            tenant=text["tenant"],
            role=Role(text["role"]),
            name=text["name"],
            created_by=text["created_by"],
            created_at=float(text["created_at"]),
            expires_at=float(text["expires_at"]),
            revoked_at=float(text["revoked_at"]) if text.get("revoked_at") else None,
            incarnation=_markers(text.get("incarnation")),
        )

    def create(
        self,
        *,
        tenant: str,
        role: Role,
        name: str,
        created_by: str,
        expires_at: float,
        incarnation: frozenset[str] = frozenset(),
    ) -> tuple[ApiKeyRecord, str]:
        key_id, plaintext, digest = new_key()
        record = ApiKeyRecord(
            key_id, tenant, role, name, created_by, time.time(), expires_at, incarnation=incarnation
        )
        fields = {
            "id": key_id,
            "tenant": tenant,
            "role": role.value,
            "name": name,
            "digest": digest,
            "created_by": created_by,
            "created_at": repr(record.created_at),
            "expires_at": repr(expires_at),
            "incarnation": json.dumps(sorted(incarnation)),
        }
        pipe = self._redis.pipeline()
        pipe.hset(self._key(key_id), mapping=fields)
        pipe.zadd(self._index(tenant), {key_id: record.created_at})
        pipe.execute()
        return record, plaintext

    def list(self, tenant: str) -> list[ApiKeyRecord]:
        ids = [i.decode() for i in self._redis.zrange(self._index(tenant), 0, -1)]
        pipe = self._redis.pipeline()
        for key_id in ids:
            pipe.hgetall(self._key(key_id))
        return [self._record(fields) for fields in pipe.execute() if fields]

    def revoke(self, tenant: str, key_id: str) -> ApiKeyRecord | None:
        fields = self._redis.hgetall(self._key(key_id))
        if not fields or fields.get(b"tenant", b"").decode() != tenant:
            return None
        if not fields.get(b"revoked_at"):
            self._redis.hset(self._key(key_id), "revoked_at", repr(time.time()))
            fields = self._redis.hgetall(self._key(key_id))
        return self._record(fields)

    def revoke_all(self, tenant: str) -> int:
        now = repr(time.time())
        revoked = 0
        for record in self.list(tenant):
            if record.revoked_at is None:
                self._redis.hset(self._key(record.id), "revoked_at", now)
                revoked += 1
        return revoked

    def authenticate(self, presented: str) -> ApiKeyRecord | None:
        match = _KEY.match(presented)
        if match is None:
            return None
        fields = self._redis.hgetall(self._key(match["id"]))
        if not fields or not _matches(presented, fields[b"digest"].decode()):
            return None
        record = self._record(fields)
        return record if record.usable(time.time()) else None
