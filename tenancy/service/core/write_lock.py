"""Serializing changes to one tenant: the commit and the queued operation happen under one lock, so the
order of operations in the queue is the order of commits in git (the last commit is what runs last).

Embedded: the repository's own lock (threads of this process, and processes sharing the checkout).
Redis: additionally a lock per tenant in Redis, so replicas with their own checkouts take turns.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any, Protocol

from redis.exceptions import WatchError

from tenancy.automation.contract import StackRef
from tenancy.service.core.tenants_repo import RepositoryError, TenantRepository

LOCK_TIMEOUT_SECONDS = 120  # a crashed holder's lock expires; a commit and a submit take well under this
WAIT_SECONDS = 30


class TenantWriteLock(Protocol):
    def hold(self, stack: StackRef) -> contextlib.AbstractContextManager[None]: ...


class LocalWriteLock:
    def __init__(self, repository: TenantRepository) -> None:
        self._repository = repository

    def hold(self, stack: StackRef) -> contextlib.AbstractContextManager[None]:
        return self._repository.locked()


class RedisWriteLock:
    """A lock per tenant in Redis: SET NX with an expiry to take it, a checked delete to give it back
    (WATCH/MULTI rather than Lua, so it runs wherever plain Redis commands do)."""

    def __init__(self, repository: TenantRepository, redis: Any, *, prefix: str) -> None:
        self._repository = repository
        self._redis = redis
        self._prefix = prefix

    @contextlib.contextmanager
    def _held(self, stack: StackRef) -> Iterator[None]:
        key = f"{self._prefix}write-lock:{stack.name}"
        token = uuid.uuid4().hex
        deadline = time.monotonic() + WAIT_SECONDS
        while not self._redis.set(key, token, nx=True, ex=LOCK_TIMEOUT_SECONDS):
            if time.monotonic() > deadline:
                raise RepositoryError(f"another change to {stack.name} is still being written")
            time.sleep(0.02)
        try:
            with self._repository.locked():
                yield
        finally:
            self._release(key, token)

    def _release(self, key: str, token: str) -> None:
        with self._redis.pipeline() as pipe:
            try:
                pipe.watch(key)
                held = pipe.get(key)
                if held is not None and (held.decode() if isinstance(held, bytes) else held) == token:
                    pipe.multi()
                    pipe.delete(key)
                    pipe.execute()
            except WatchError:
                pass  # it expired and someone else took it: theirs now, leave it

    def hold(self, stack: StackRef) -> contextlib.AbstractContextManager[None]:
        return self._held(stack)
