"""Requests per principal per window: in-process by default, in Redis when replicas must share counts.

A fixed window (count requests in the current ``window`` seconds) in both, so limits mean the same
thing in either backend; its burst at a window edge is at most twice the limit, which is acceptable
for protecting the service from one noisy client.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
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
