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


RESERVE_AND_DIE = """
import os, sys
from pathlib import Path
from tenancy.service.core.idempotency import SqliteIdempotencyStore
store = SqliteIdempotencyStore(Path(sys.argv[1]), ttl_seconds=3600, lease_seconds=600)
assert store.begin("user:a", "create-acme", "fingerprint") is None
os._exit(9)  # killed mid-request: no finish, no abandon
"""


def test_a_key_reserved_by_a_process_seen_to_have_died_is_free_at_once(tmp_path: Path) -> None:
    # On the same host, a retry after a kill -9 goes ahead at once instead of meeting "in use" for the
    # whole lease (10 minutes here): the reservation names its process, which is seen to be gone.
    import os
    import subprocess
    import sys

    path = tmp_path / "idempotency.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    died = subprocess.run([sys.executable, "-c", RESERVE_AND_DIE, str(path)], env=env, check=False)
    assert died.returncode == 9
    store = SqliteIdempotencyStore(path, ttl_seconds=3600, lease_seconds=600)
    try:
        assert store.begin("user:a", "create-acme", "fingerprint") is None
        # Now reserved by this live process: the next repeat waits, told how long at most.
        with pytest.raises(ServiceError) as in_use:
            store.begin("user:a", "create-acme", "fingerprint")
        assert in_use.value.code == "idempotency_key_in_use"
        assert 590 <= int(in_use.value.headers["Retry-After"]) <= 600
    finally:
        store.close()


def test_a_live_or_unknown_owner_keeps_its_key_until_the_lease_ends(store: Any) -> None:
    # Reserved by this (live) process, then by a process this one cannot look up (another host):
    # neither is taken over, and the answer says when to retry.
    assert store.begin("user:a", "k1", "fingerprint") is None
    with pytest.raises(ServiceError) as in_use:
        store.begin("user:a", "k1", "fingerprint")
    assert in_use.value.headers["Retry-After"] == "1"  # the 0.2 s lease, rounded up
    assert "has not answered yet" in in_use.value.message


def test_a_dead_owners_key_is_free_at_once_in_redis_too() -> None:
    import json as json_module

    from tenancy.service.core import process_identity

    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    store = RedisIdempotencyStore(redis, prefix="t:", ttl_seconds=3600, lease_seconds=600)
    machine = process_identity.process_identity().rsplit(":", 2)[0]
    dead = f"{machine}:999999999:1"  # no such pid on this host
    record = {"fingerprint": "fingerprint", "state": "running", "owner": dead}
    redis.set(store._key("user:a", "k"), json_module.dumps(record), px=600_000)
    assert store.begin("user:a", "k", "fingerprint") is None
    other_host = {**record, "owner": "another-boot/pid:[1]:42:7"}
    redis.set(store._key("user:a", "k2"), json_module.dumps(other_host), px=600_000)
    with pytest.raises(ServiceError):
        store.begin("user:a", "k2", "fingerprint")


def test_a_live_process_whose_stat_cannot_be_read_is_not_taken_for_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # /proc mounted with hidepid (or ProtectProc=invisible, or another user's process): its stat is
    # unreadable, but it runs; only "no such process" or another start time says it ended.
    import subprocess

    from tenancy.service.core import process_identity

    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        identity = process_identity._identity_of(sleeper.pid)
        assert identity and not process_identity.process_ended(identity)
        monkeypatch.setattr(process_identity, "_start_time", lambda pid: None)  # as hidepid shows it
        assert not process_identity.process_ended(identity)
    finally:
        sleeper.kill()
        sleeper.wait()
    monkeypatch.undo()
    assert process_identity.process_ended(identity)  # gone: no such process


def test_a_store_from_before_reservations_named_their_process_is_upgraded_in_place(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "idempotency.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE idempotency (scope TEXT, key TEXT, fingerprint TEXT, state TEXT,"
        " status INTEGER, body TEXT, expires_at REAL, PRIMARY KEY (scope, key))"
    )
    old.execute("INSERT INTO idempotency VALUES ('user:a', 'k', 'f', 'done', 202, '{\"a\": 1}', 9e12)")
    old.commit()
    old.close()
    store = SqliteIdempotencyStore(path, ttl_seconds=3600, lease_seconds=LEASE)
    try:
        assert store.begin("user:a", "k", "f") == StoredResponse(202, {"a": 1})  # kept
        assert store.begin("user:a", "new", "f") is None  # and new reservations name their process
        with pytest.raises(ServiceError):
            store.begin("user:a", "new", "f")
    finally:
        store.close()
