"""Serializing changes to one tenant: the commit and the queued operation happen under one lock, so the
order of operations in the queue is the order of commits in git (the last commit is what runs last).

Embedded: the repository's lock for that tenant (threads of this process, and processes sharing the
checkout); changes to different tenants proceed in parallel and are committed together. A PUT or
PATCH takes a pipelined ``turn``: the next writer of the tenant in this process builds on its change
while it is flushed, and both are answered once flushed and queued in commit order (early lock
release; see ``TenantRepository.turn``); another process's writers wait as before.
Redis: additionally a lock per tenant in Redis, so replicas with their own checkouts take turns (each
``turn`` holds it to its end: nothing pipelined across replicas). Its
expiry only frees the lock of a holder that crashed: while the holder lives, a thread renews it, so a
write slower than the expiry (git retrying a push) never shares the tenant with another replica.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Protocol

from redis.exceptions import WatchError

from tenancy.automation.contract import StackRef
from tenancy.service.core.tenants_repo import PushTurn, TenantBusy, TenantRepository, WriteTurn

LOCK_TIMEOUT_SECONDS = 120.0  # how long a crashed holder keeps the tenant locked
WAIT_SECONDS = 30
_log = logging.getLogger("tenancy.service")


class TenantWriteLock(Protocol):
    def hold(self, stack: StackRef) -> contextlib.AbstractContextManager[WriteTurn]:
        """The tenant, held until the end (after every earlier write of it is flushed and queued)."""
        ...

    def turn(self, stack: StackRef) -> contextlib.AbstractContextManager[WriteTurn]:
        """A write's turn at the tenant, released early where that is safe (``WriteTurn.release``)."""
        ...


class LocalWriteLock:
    def __init__(self, repository: TenantRepository) -> None:
        self._repository = repository

    def hold(self, stack: StackRef) -> contextlib.AbstractContextManager[WriteTurn]:
        return self._repository.locked(stack.name)

    def turn(self, stack: StackRef) -> contextlib.AbstractContextManager[WriteTurn]:
        return self._repository.turn(stack.name, pipelined=True)


class RedisWriteLock:
    """A lock per tenant in Redis: SET NX with an expiry to take it, a checked delete to give it back
    (WATCH/MULTI rather than Lua, so it runs wherever plain Redis commands do)."""

    def __init__(
        self,
        repository: TenantRepository,
        redis: Any,
        *,
        prefix: str,
        ttl_seconds: float = LOCK_TIMEOUT_SECONDS,
        wait_seconds: float = WAIT_SECONDS,
    ) -> None:
        self._repository = repository
        self._redis = redis
        self._prefix = prefix
        self._ttl_ms = max(int(ttl_seconds * 1000), 1)
        self._wait_seconds = wait_seconds

    @contextlib.contextmanager
    def _held(self, stack: StackRef) -> Iterator[WriteTurn]:
        key = f"{self._prefix}write-lock:{stack.name}"
        token = uuid.uuid4().hex
        if not _take(
            self._redis, key, token, ttl_ms=self._ttl_ms, wait_seconds=self._wait_seconds, pause=0.02
        ):
            raise TenantBusy(
                f"another change to {stack.name} is still being written, by another replica or one "
                f"that stopped mid-write (its lock expires within {self._ttl_ms // 1000} s)"
            )
        released = threading.Event()
        renewer = threading.Thread(
            target=self._renew, args=(key, token, released), name="tenant-write-lock", daemon=True
        )
        renewer.start()
        try:
            with self._repository.locked(stack.name) as turn:
                yield turn
        finally:
            released.set()
            renewer.join()
            try:
                self._release(key, token)
            except Exception as error:
                # Redis went away mid-write: the write's own outcome or error must reach the caller,
                # not this one (outside replica review: a change committed but not queued answered 500
                # instead of saying so). The release is tried again in the background until Redis
                # answers: else the tenant stayed locked (tenant_busy) for the lock's whole expiry.
                _log.warning(
                    "releasing the write lock %s failed (%s); trying again until it expires in %d s",
                    key,
                    type(error).__name__,
                    self._ttl_ms // 1000,
                )
                _release_later(self._redis, key, token, within_seconds=self._ttl_ms / 1000)

    def _renew(self, key: str, token: str, released: threading.Event) -> None:
        """Extend the lock every third of its lifetime while it is still ours."""
        while not released.wait(self._ttl_ms / 3000):
            try:
                if not self._extend(key, token):
                    _log.warning("the write lock %s was lost while a write held it", key)
                    return
            except Exception as error:  # Redis unreachable: keep trying until the write ends
                _log.warning("renewing the write lock %s failed: %s", key, type(error).__name__)

    def _extend(self, key: str, token: str) -> bool:
        with self._redis.pipeline() as pipe:
            try:
                pipe.watch(key)
                held = pipe.get(key)
                if held is None or (held.decode() if isinstance(held, bytes) else held) != token:
                    return False
                pipe.multi()
                pipe.pexpire(key, self._ttl_ms)
                pipe.execute()
                return True
            except WatchError:
                return False

    def _release(self, key: str, token: str) -> None:
        _release_if_ours(self._redis, key, token)

    def hold(self, stack: StackRef) -> contextlib.AbstractContextManager[WriteTurn]:
        return self._held(stack)

    def turn(self, stack: StackRef) -> contextlib.AbstractContextManager[WriteTurn]:
        return self._held(stack)  # replicas have checkouts of their own: no early release


def _take(redis: Any, key: str, token: str, *, ttl_ms: int, wait_seconds: float, pause: float) -> bool:
    """Take ``key`` (SET NX with an expiry of ``ttl_ms``) for ``token``, trying every ``pause`` seconds
    for up to ``wait_seconds``; False when it stayed another holder's."""
    deadline = time.monotonic() + wait_seconds
    while not redis.set(key, token, nx=True, px=ttl_ms):
        if time.monotonic() > deadline:
            return False
        time.sleep(pause)
    return True


def _release_if_ours(redis: Any, key: str, token: str) -> None:
    """Delete ``key`` if it still holds ``token`` (WATCH/MULTI: never another holder's lock)."""
    with redis.pipeline() as pipe:
        try:
            pipe.watch(key)
            held = pipe.get(key)
            if held is not None and (held.decode() if isinstance(held, bytes) else held) == token:
                pipe.multi()
                pipe.delete(key)
                pipe.execute()
        except WatchError:
            pass  # it expired and someone else took it: theirs now, leave it


RELEASE_RETRY_SECONDS = 1.0


def _release_later(redis: Any, key: str, token: str, *, within_seconds: float) -> None:
    """``_release_if_ours`` in a daemon thread, every ``RELEASE_RETRY_SECONDS`` until Redis answers or
    the lock has expired anyway (``within_seconds``)."""

    def retry() -> None:
        deadline = time.monotonic() + within_seconds
        while time.monotonic() < deadline:
            time.sleep(RELEASE_RETRY_SECONDS)
            try:
                _release_if_ours(redis, key, token)
            except Exception:  # still away: the next try, or the expiry, frees it
                continue
            _log.info("released the lock %s once Redis answered again", key)
            return

    threading.Thread(target=retry, name="lock-release", daemon=True).start()


class RedisPushTurn:
    """Replicas sharing a git remote take turns publishing to it (``TenantRepository.push_turn``).

    Correctness is git's: a push that is not a fast-forward is refused and the group rebuilt on the
    remote's new branch. Without turns, replicas pushing at once kept refusing each other, and under
    sustained writes through three replicas a few writes in a hundred gave up after the attempts a group
    has (outside replica review). With a turn a group is refused at most once (its replica had not yet
    fetched what the one before pushed). Best effort: when Redis cannot be asked, or the turn is not
    free within ``wait_seconds``, the group goes on without one; a holder that dies frees it after
    ``ttl_seconds``."""

    def __init__(
        self, redis: Any, *, prefix: str, ttl_seconds: float = 30.0, wait_seconds: float = 10.0
    ) -> None:
        self._redis = redis
        self._key = f"{prefix}push-turn"
        self._tip_key = f"{prefix}pushed-tip"  # what the last replica to push left on the remote
        self._ttl_ms = max(int(ttl_seconds * 1000), 1)
        self._wait_seconds = wait_seconds

    @contextlib.contextmanager
    def __call__(self) -> Iterator[PushTurn]:
        token = uuid.uuid4().hex
        held = self._take(token)
        try:
            yield _Pushing(self._redis, self._tip_key, self._last_pushed() if held else None)
        finally:
            if held:
                try:
                    _release_if_ours(self._redis, self._key, token)
                except Exception as error:  # tried again until Redis answers, or it expires
                    _log.warning("releasing the push turn failed: %s", type(error).__name__)
                    _release_later(self._redis, self._key, token, within_seconds=self._ttl_ms / 1000)

    def _last_pushed(self) -> str | None:
        try:
            tip = self._redis.get(self._tip_key)
        except Exception:  # unknown: the push itself tells whether the remote moved
            return None
        return tip.decode() if isinstance(tip, bytes) else tip

    def _take(self, token: str) -> bool:
        try:
            taken = _take(
                self._redis,
                self._key,
                token,
                ttl_ms=self._ttl_ms,
                wait_seconds=self._wait_seconds,
                pause=0.005,
            )
        except Exception as error:
            _log.warning("the push turn cannot be taken (%s); pushing without it", type(error).__name__)
            return False
        if not taken:
            _log.warning("the push turn was not free within %.0f s; pushing without it", self._wait_seconds)
        return taken


class _Pushing:
    """``RedisPushTurn``'s turn: the tip the replica before left (read once the turn is held, so no
    push comes between), and the record of this replica's own push."""

    def __init__(self, redis: Any, key: str, last_pushed: str | None) -> None:
        self._redis = redis
        self._key = key
        self.last_pushed = last_pushed

    def pushed(self, tip: str) -> None:
        try:
            self._redis.set(self._key, tip)
        except Exception as error:  # the next replica's push finds out instead
            _log.warning("recording the pushed tip failed: %s", type(error).__name__)
