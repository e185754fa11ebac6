"""Requests per principal per window: in a table every ``tenantctl serve`` process of one state
directory shares by default, in Redis when replicas must share counts (in-process for tests).

A fixed window (count requests in the current ``window`` seconds) in all, so limits mean the same
thing in every backend; its burst at a window edge is at most twice the limit, which is acceptable
for protecting the service from one noisy client.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # seconds until the window resets


class RateLimiter(Protocol):
    def hit(self, key: str) -> RateDecision:
        """Count one request for ``key`` and say whether it is within the limit."""
        ...

    def peek(self, key: str) -> RateDecision:
        """Whether ``key`` is within the limit now, without counting anything."""
        ...


class InProcessRateLimiter:
    def __init__(self, *, limit: int, window_seconds: int) -> None:
        self.limit = limit
        self.window = window_seconds
        self._counts: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> RateDecision:
        now = time.time()
        current = int(now // self.window)
        with self._lock:
            window, count = self._counts.get(key, (current, 0))
            if window != current:
                count = 0
                if len(self._counts) > 10_000:  # forget principals of past windows
                    self._counts = {k: v for k, v in self._counts.items() if v[0] == current}
            count += 1
            self._counts[key] = (current, count)
        return _decision(count, self.limit, (current + 1) * self.window - now)

    def peek(self, key: str) -> RateDecision:
        now = time.time()
        current = int(now // self.window)
        with self._lock:
            window, count = self._counts.get(key, (current, 0))
        return _decision(count if window == current else 0, self.limit, (current + 1) * self.window - now)


class SharedRateLimiter:
    """The counts in a file that every process of the service maps into memory (``MAP_SHARED``), so
    N processes allow a principal ``limit`` requests a window in all, not N times ``limit``. A count
    is read and written under a Python lock (this process's threads) and a ``flock`` of the file
    (the processes; the kernel releases it if its holder dies), a few microseconds per request.

    The table has ``slots`` entries of (key hash, window, count); a key's entry is one of
    ``_PROBES`` slots from its hash. An entry of a past window is free. When all of a key's slots
    hold other keys' counts of the current window (more than about ``slots`` principals active in
    one window), the smallest count is forgotten: a principal that made few requests starts again
    from zero, and a busy one, the one the limit is for, keeps its count. A file of another layout
    or window length is cleared when the first process opens it: counts restart, as in a restart
    of one process before."""

    _MAGIC = b"TNRATE01"
    _HEADER = struct.Struct("<8sQQ")  # magic, slots, window seconds
    _SLOT = struct.Struct("<QQQ")  # key hash (never 0), window index, count
    _PROBES = 16

    def __init__(self, path: Path, *, limit: int, window_seconds: int, slots: int = 32_768) -> None:
        self.limit = limit
        self.window = window_seconds
        self.path = path
        self._slots = slots
        self._lock = threading.Lock()
        size = self._HEADER.size + slots * self._SLOT.size
        path.parent.mkdir(parents=True, exist_ok=True)
        self._descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._descriptor, fcntl.LOCK_EX)
            try:
                header = os.pread(self._descriptor, self._HEADER.size, 0)
                expected = self._HEADER.pack(self._MAGIC, slots, window_seconds)
                if header != expected or os.fstat(self._descriptor).st_size != size:
                    os.ftruncate(self._descriptor, 0)  # zeros: every slot free
                    os.ftruncate(self._descriptor, size)
                    os.pwrite(self._descriptor, expected, 0)
                self._table = mmap.mmap(self._descriptor, size)
            finally:
                fcntl.flock(self._descriptor, fcntl.LOCK_UN)
        except BaseException:
            os.close(self._descriptor)
            raise

    def close(self) -> None:
        with self._lock:
            self._table.close()
            os.close(self._descriptor)

    def hit(self, key: str) -> RateDecision:
        return self._count(key, add=1)

    def peek(self, key: str) -> RateDecision:
        return self._count(key, add=0)

    def _count(self, key: str, *, add: int) -> RateDecision:
        now = time.time()
        current = int(now // self.window)
        hashed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") or 1
        slot, table, header = self._SLOT, self._table, self._HEADER.size
        first = hashed % self._slots
        with self._lock:
            fcntl.flock(self._descriptor, fcntl.LOCK_EX)
            try:
                found = free = smallest = -1
                smallest_count = 0
                for probe in range(self._PROBES):
                    offset = header + ((first + probe) % self._slots) * slot.size
                    owner, window, count = slot.unpack_from(table, offset)
                    if owner == hashed:
                        found = offset
                        break
                    if owner == 0 or window != current:
                        if free < 0:
                            free = offset
                    elif smallest < 0 or count < smallest_count:
                        smallest, smallest_count = offset, count
                if found >= 0:
                    _, window, count = slot.unpack_from(table, found)
                    count = count if window == current else 0
                else:
                    found, count = (free if free >= 0 else smallest), 0
                if add:
                    count += add
                    slot.pack_into(table, found, hashed, current, count)
            finally:
                fcntl.flock(self._descriptor, fcntl.LOCK_UN)
        return _decision(count, self.limit, (current + 1) * self.window - now)


class RedisRateLimiter:
    def __init__(self, redis: Any, *, prefix: str, limit: int, window_seconds: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self.limit = limit
        self.window = window_seconds

    def hit(self, key: str) -> RateDecision:
        now = time.time()
        current = int(now // self.window)
        counter = f"{self._prefix}rate:{key}:{current}"
        pipe = self._redis.pipeline()
        pipe.incr(counter)
        pipe.expire(counter, self.window + 1)
        count = int(pipe.execute()[0])
        return _decision(count, self.limit, (current + 1) * self.window - now)

    def peek(self, key: str) -> RateDecision:
        now = time.time()
        current = int(now // self.window)
        count = int(self._redis.get(f"{self._prefix}rate:{key}:{current}") or 0)
        return _decision(count, self.limit, (current + 1) * self.window - now)


def _decision(count: int, limit: int, seconds_left: float) -> RateDecision:
    return RateDecision(
        allowed=count <= limit,
        limit=limit,
        remaining=max(limit - count, 0),
        retry_after=max(math.ceil(seconds_left), 1),
    )
