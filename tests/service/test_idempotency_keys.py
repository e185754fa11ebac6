"""An Idempotency-Key reserved by a request that never answered (its process died) is free again
after a short lease, in either store, while a finished request's answer is kept for the full TTL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from tenancy.service.core.errors import ServiceError
from tenancy.service.core.idempotency import (
    RedisIdempotencyStore,
    SqliteIdempotencyStore,
    StoredResponse,
)

LEASE = 0.2


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        sqlite = SqliteIdempotencyStore(
            tmp_path / "idempotency.sqlite3", ttl_seconds=3600, lease_seconds=LEASE
        )
        yield sqlite
        sqlite.close()
    else:
        redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        yield RedisIdempotencyStore(redis, prefix="t:", ttl_seconds=3600, lease_seconds=LEASE)


def test_a_key_left_reserved_by_a_crashed_request_is_free_after_its_lease(store: Any) -> None:
    assert store.begin("user:a", "create-acme", "fingerprint") is None  # then the process dies
    with pytest.raises(ServiceError) as in_use:
        store.begin("user:a", "create-acme", "fingerprint")
    assert in_use.value.code == "idempotency_key_in_use"

    time.sleep(LEASE + 0.1)

    assert store.begin("user:a", "create-acme", "fingerprint") is None  # the client's retry goes ahead


def test_a_finished_answer_outlives_the_lease(store: Any) -> None:
    assert store.begin("user:a", "create-acme", "fingerprint") is None
    store.finish("user:a", "create-acme", StoredResponse(status=202, body={"changed": True}))

    time.sleep(LEASE + 0.1)

    assert store.begin("user:a", "create-acme", "fingerprint") == StoredResponse(202, {"changed": True})


def test_scopes_and_keys_that_join_to_the_same_text_stay_apart(store: Any) -> None:
    # A subject may hold ':' and so may a key: ("user:a:b", "c") and ("user:a", "b:c") are two
    # callers' keys, though both read "user:a:b:c" when joined with ':'.
    assert store.begin("user:a:b", "c", "fingerprint-of-a-b") is None
    store.finish("user:a:b", "c", StoredResponse(status=202, body={"caller": "user:a:b"}))

    assert store.begin("user:a", "b:c", "fingerprint-of-a") is None  # not "reused", not a replay
    store.finish("user:a", "b:c", StoredResponse(status=202, body={"caller": "user:a"}))

    assert store.begin("user:a:b", "c", "fingerprint-of-a-b") == StoredResponse(202, {"caller": "user:a:b"})
    assert store.begin("user:a", "b:c", "fingerprint-of-a") == StoredResponse(202, {"caller": "user:a"})
