"""Where operations live: one factory turns queue settings into the queue that the CLI, the HTTP
service and its workers all use.

``embedded`` (the default) is the SQLite file under the automation layer's ``state_dir``: one host,
any number of processes on it. ``redis`` is the platform's Redis (through Sentinel, or a plain URL):
any number of API and worker replicas, and any ``tenantctl`` pointed at the same Redis and prefix.
Either way an operation per stack holds whoever asks, because everybody claims from the same queue.

The settings are read from the same ``TENANCY_SERVICE_*`` variables as the service's, so one set of
variables points the service, its workers and the CLI at one queue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tenancy.automation.contract import Operation, StackRef, WorkQueue

QUEUE_FILE = "operations.sqlite3"


class QueueSettings(BaseSettings):
    """Which queue to open (env: the service's ``TENANCY_SERVICE_BACKEND`` and ``..._REDIS_*``)."""

    model_config = SettingsConfigDict(env_prefix="TENANCY_SERVICE_", extra="ignore", frozen=True)

    backend: Literal["embedded", "redis"] = Field(
        default="embedded",
        description="embedded: SQLite in the state directory; redis: the platform's Redis (Sentinel).",
    )
    redis_sentinels: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Sentinel addresses host:port (comma-separated in the environment)."
    )
    redis_master: str = Field(default="mymaster", description="Sentinel master group name.")
    redis_url: str | None = Field(default=None, description="A plain redis:// URL instead of Sentinel.")
    redis_password: SecretStr | None = Field(default=None, description="Password of Redis and Sentinel.")
    redis_prefix: str = Field(default="tenancy:", description="Prefix of every key written to Redis.")

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _redis_is_reachable(self) -> QueueSettings:
        if self.backend == "redis" and not (self.redis_sentinels or self.redis_url):
            raise ValueError(
                "backend=redis needs TENANCY_SERVICE_REDIS_SENTINELS (host:port,...) "
                "or TENANCY_SERVICE_REDIS_URL"
            )
        return self

    def describe(self) -> str:
        """Where the queue is, for people (never the password)."""
        if self.backend == "embedded":
            return "the local SQLite queue"
        where = ",".join(self.redis_sentinels) if self.redis_sentinels else _without_password(self.redis_url)
        return f"the Redis queue at {where} (prefix {self.redis_prefix!r})"


class StoredQueue(WorkQueue, Protocol):
    """Everything the CLI, sync, the service and the worker ask of a queue; both backends provide it
    (tests/automation/test_queue_conformance.py runs every behaviour against each)."""

    def applied(self, environment: str) -> dict[str, Operation]: ...

    def stacks(self, environment: str | None = None) -> list[StackRef]: ...

    def active(self, stack: StackRef) -> list[Operation]: ...

    def requeue_claimed(self, worker_id: str, *, reason: str) -> list[Operation]: ...


@dataclass
class OpenQueue:
    """A queue and what to release when done with it (``with open_queue(...) as opened:``)."""

    queue: StoredQueue
    redis: Any | None = None  # the client, when the queue is in Redis: the service shares it
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in self.closers:
            close()
        self.closers.clear()

    def __enter__(self) -> OpenQueue:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_queue(settings: QueueSettings, *, state_dir: Path, redis: Any | None = None) -> OpenQueue:
    """The queue ``settings`` name: SQLite at ``<state_dir>/operations.sqlite3``, or Redis (``redis``:
    a client to use instead of connecting, e.g. one the caller shares with other stores)."""
    if settings.backend == "redis":
        from tenancy.automation.redis_queue import RedisOperationQueue

        client = redis if redis is not None else connect_redis(settings)
        return OpenQueue(RedisOperationQueue(client, prefix=settings.redis_prefix), redis=client)
    from tenancy.automation.queue import SqliteOperationQueue

    sqlite = SqliteOperationQueue(state_dir / QUEUE_FILE)
    return OpenQueue(sqlite, closers=[sqlite.close])


def connect_redis(settings: QueueSettings) -> Any:
    """A client for the platform's Redis: through Sentinel (failover-aware) or a plain URL."""
    import redis
    from redis.sentinel import Sentinel

    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    if settings.redis_sentinels:
        nodes = []
        for address in settings.redis_sentinels:
            host, _, port = address.rpartition(":")
            nodes.append((host or address, int(port) if port.isdigit() else 26379))
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            nodes,
            socket_timeout=2.0,
            sentinel_kwargs={"password": password, "socket_timeout": 2.0}
            if password
            else {"socket_timeout": 2.0},
        )
        return sentinel.master_for(  # type: ignore[no-untyped-call]
            settings.redis_master, password=password, socket_timeout=5.0
        )
    assert settings.redis_url is not None
    return redis.Redis.from_url(settings.redis_url, password=password, socket_timeout=5.0)


def _without_password(url: str | None) -> str:
    if not url:
        return ""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"
