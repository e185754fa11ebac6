"""The operation queue in Redis (the platform's Sentinel), for several API and worker replicas.

Same behaviour as ``SqliteOperationQueue`` (``OperationQueue`` and ``WorkQueue``): coalescing at submit
time, one running operation per stack across every replica, heartbeats, requeueing what a stopped
replica left running. Every read-check-write runs as an optimistic transaction (WATCH/MULTI/EXEC,
retried when another client touched the same keys), so no Lua is needed.

Keys (``prefix`` defaults to ``tenancy:``):

- ``op:<id>``             hash, one operation
- ``op-seq``              counter: submission order across replicas
- ``ops`` / ``ops:<stack>``  sorted sets of every operation (by submission order), overall and per stack
- ``queued`` / ``queued:<stack>``  sorted sets of queued operations
- ``running``             hash, stack -> the operation running on it
- ``events:<id>``         list of progress events (seq = position in the list, so appends are atomic)
- ``interrupted``         set of stacks to recover before their next operation
- ``replaced:<id>``       set of operations superseded by (pointing at) operation <id>
- ``answer:<token>``      what one transaction answered (JSON list of ids), written by its own EXEC and
  kept ``_ANSWER_SECONDS``: a retry whose EXEC ran but whose reply was lost returns it instead of
  deciding again (``_transaction``)
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict
from typing import Any

from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from tenancy.automation.contract import (
    SUPERSEDES,
    Operation,
    OperationKind,
    OperationStatus,
    OperationSummary,
    ProgressEvent,
    StackRef,
    SubmitRequest,
    requeue_status,
)

_log = logging.getLogger(__name__)

# How long a transaction's answer stays readable by its own retries (far longer than they go on).
_ANSWER_SECONDS = 600

# A transaction other clients keep changing the keys of is given up after this many tries or this
# long, whichever comes first (``QueueContended``), rather than hold its callers without end.
WATCH_TRIES = 200
WATCH_SECONDS = 10.0

_REQUEUED_MESSAGE = (
    "the process running this operation stopped before it finished; requeued. "
    "The stack is checked and recovered before the operation runs again."
)


class QueueContended(RedisTimeoutError):
    """A queue transaction given up: other clients kept changing what it watched (``WATCH_TRIES``,
    ``WATCH_SECONDS``). Nothing of it was written. A timeout of the shared store to its callers, as
    SQLite's "database is locked" after its busy timeout is: a write's submit answers 503
    ``engine_unavailable``, another request 503 ``service_unavailable`` with Retry-After, and the
    worker's loop asks again."""


class RedisOperationQueue:
    def __init__(
        self, redis: Any, *, prefix: str = "tenancy:", clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._clock = clock

    # --- keys --------------------------------------------------------------------------------------

    def _op(self, operation_id: str) -> str:
        return f"{self._prefix}op:{operation_id}"

    def _replaced(self, operation_id: str) -> str:
        return f"{self._prefix}replaced:{operation_id}"

    def _events(self, operation_id: str) -> str:
        return f"{self._prefix}events:{operation_id}"

    def _all(self, stack: StackRef | None = None) -> str:
        return f"{self._prefix}ops" if stack is None else f"{self._prefix}ops:{stack.name}"

    def _queued(self, stack: StackRef | None = None) -> str:
        return f"{self._prefix}queued" if stack is None else f"{self._prefix}queued:{stack.name}"

    @property
    def _running(self) -> str:
        return f"{self._prefix}running"

    @property
    def _interrupted(self) -> str:
        return f"{self._prefix}interrupted"

    @property
    def _stacks(self) -> str:
        return f"{self._prefix}stacks"

    # --- transactions ------------------------------------------------------------------------------

    def _transaction(self, watched: list[str], body: Callable[[Any], list[str]]) -> list[str]:
        """Run ``body(pipe)`` with ``watched`` keys watched; retry when another client changed them.
        ``body`` reads with the pipe (immediate mode), then calls ``pipe.multi()`` and queues writes;
        it answers the ids it acted on.

        Its answer is written by the same EXEC (``answer:<token>``), and every retry looks for it
        first: when Redis ran the EXEC but its reply was lost (a timeout, a reset, a failover right
        after it; redis-py then reports a WatchError), the retry answers what that EXEC did instead of
        deciding again on a state that already holds it (a submit superseding itself, a claim leaving
        what it claimed running with no worker; outside review of group submits). The check runs after
        WATCH, so an EXEC of this call still arriving late aborts the retry's own EXEC.

        Retries stop after ``WATCH_TRIES`` or ``WATCH_SECONDS``: ``QueueContended`` (they went on
        without end before, holding a group's writers while other clients kept winning)."""
        answer = f"{self._prefix}answer:{uuid.uuid4().hex}"
        started = time.monotonic()
        attempt = 0
        while True:
            with self._redis.pipeline() as pipe:
                try:
                    pipe.watch(*watched)
                    if attempt:
                        stored = pipe.get(answer)
                        if stored is not None:
                            pipe.unwatch()
                            return _ids(stored)
                    result = body(pipe)
                    if pipe.explicit_transaction:
                        pipe.set(answer, json.dumps(result), ex=_ANSWER_SECONDS)
                        pipe.execute()
                    return result
                except WatchError:
                    attempt += 1
            elapsed = time.monotonic() - started
            if attempt >= WATCH_TRIES or elapsed >= WATCH_SECONDS:
                stored = self._redis.get(answer)  # the last try's EXEC may have run, its reply lost
                if stored is not None:
                    return _ids(stored)
                raise QueueContended(
                    f"gave up on a queue transaction after {attempt} tries in {elapsed:.1f} s: other "
                    f"clients kept changing what it watched ({', '.join(watched)}); nothing of it was "
                    "written, try again"
                )
            # Another client won: try again after a short random pause, so clients that keep colliding
            # (a group watching several stacks, claimers) do not do so in step.
            time.sleep(random.uniform(0, min(0.001 * 2**attempt, 0.05)))

    def _fields(self, operation_id: str, reader: Any = None) -> dict[str, str]:
        raw = (reader or self._redis).hgetall(self._op(operation_id))
        return {_text(k): _text(v) for k, v in raw.items()}

    # --- OperationQueue ----------------------------------------------------------------------------

    def submit_in_order(self, requests: Sequence[SubmitRequest]) -> list[Operation]:
        """One transaction for them all (one ``INCRBY`` for their places, one WATCH/MULTI), so a group
        of commits' operations costs five round trips whatever its size (INCRBY, WATCH, two batches of
        reads, MULTI/EXEC), and is queued all or none."""
        return self._submit_all(requests)

    def submit(
        self,
        stack: StackRef,
        kind: OperationKind,
        *,
        spec: dict[str, Any] | None,
        requested_by: str,
        incarnation: str | None = None,
        params: dict[str, Any] | None = None,
        queued: Callable[[], None] | None = None,
    ) -> Operation:
        [operation] = self._submit_all([SubmitRequest(stack, kind, spec, requested_by, incarnation, params)])
        if queued is not None:
            queued()  # its place was fixed by op-seq; it is stored now too
        return operation

    def _submit_all(self, requests: Sequence[SubmitRequest]) -> list[Operation]:
        """Insert ``requests`` in their order, each coalescing the queued operations of its stack that
        it supersedes (the earlier ones of the same call included), in one transaction. Their
        operations as a read right after each one's own insert would give (queued)."""
        if not requests:
            return []
        last = int(self._redis.incrby(f"{self._prefix}op-seq", len(requests)))
        now = self._clock()
        records = []
        for position, request in enumerate(requests, start=last - len(requests) + 1):
            record = {
                "id": uuid.uuid4().hex,
                "environment": request.stack.environment,
                "tenant": request.stack.tenant,
                "kind": OperationKind(request.kind).value,
                "status": OperationStatus.queued.value,
                "requested_by": request.requested_by,
                "created_at": repr(now),
                "position": str(position),
            }
            if request.spec is not None:
                record["spec"] = json.dumps(request.spec)
            if request.incarnation is not None:
                record["incarnation"] = request.incarnation
            if request.params is not None:
                record["params"] = json.dumps(request.params)
            records.append(record)
        stacks = list(dict.fromkeys(request.stack for request in requests))

        def body(pipe: Any) -> list[str]:
            # A try whose EXEC ran but whose reply was lost is answered by ``_transaction`` (planning it
            # again had each operation supersede itself; outside review of group submits).
            # Each stack's queued operations, oldest first (by place), with their kinds and places, as
            # Redis has them; the call's own join them as they are planned. Read in two batches (the
            # queued sets, then every queued operation's kind and replaced set), not one round trip per
            # key: the window for other clients to abort the EXEC stays short whatever the group's
            # size (outside review of group submits: 53 round trips for 10 ups). They go on another
            # connection, after WATCH: a write to a watched key meanwhile still aborts the EXEC.
            with self._redis.pipeline(transaction=False) as reads:
                for stack in stacks:
                    reads.zrange(self._queued(stack), 0, -1, withscores=True)
                ranked: list[list[tuple[Any, float]]] = reads.execute()
                queued_ids = [_text(i) for per_stack in ranked for i, _ in per_stack]
                for i in queued_ids:
                    reads.hget(self._op(i), "kind")  # immutable
                    reads.smembers(self._replaced(i))
                facts: list[Any] = reads.execute() if queued_ids else []
            kind_of = {i: _text(kind or b"") for i, kind in zip(queued_ids, facts[0::2], strict=True)}
            replaced_of = {
                i: [_text(r) for r in members] for i, members in zip(queued_ids, facts[1::2], strict=True)
            }
            here: dict[StackRef, list[tuple[str, str, float]]] = {
                stack: [(_text(i), kind_of[_text(i)], float(place)) for i, place in per_stack]
                for stack, per_stack in zip(stacks, ranked, strict=True)
            }
            replacing: dict[str, list[str]] = {}  # the call's own operations: what each replaced
            writes: list[tuple[Any, ...]] = []
            for request, record in zip(requests, records, strict=True):
                stack, operation_id, position = request.stack, record["id"], int(record["position"])
                # Only what was placed before it: a submit placed later that was stored first (places
                # are taken before the transaction) stays, and runs after it (outside review).
                queued_here = [entry for entry in here[stack] if entry[2] < position]
                # Never across a queued destroy: what was asked before it runs before it.
                destroys = [n for n, (_, k, _) in enumerate(queued_here) if k == OperationKind.destroy.value]
                after = queued_here[destroys[-1] + 1 :] if destroys else queued_here
                kinds = {k.value for k in SUPERSEDES[OperationKind(request.kind)]}
                superseded = [older for older, older_kind, _ in after if older_kind in kinds]
                # Whatever a replaced operation had replaced now points at the newest: one hop to the
                # operation that will apply the caller's change.
                pointing = {
                    older: replacing[older] if older in replacing else replaced_of[older]
                    for older in superseded
                }
                writes.append(("insert", stack, operation_id, position, record))
                for older in superseded:
                    writes.append(("supersede", stack, older, operation_id, pointing[older]))
                replacing[operation_id] = [
                    replaced for older in superseded for replaced in (older, *pointing[older])
                ]
                here[stack] = [entry for entry in here[stack] if entry[0] not in superseded]
                here[stack].append((operation_id, record["kind"], float(position)))
                here[stack].sort(key=lambda entry: entry[2])
            pipe.multi()
            for write in writes:
                if write[0] == "insert":
                    _, stack, operation_id, position, record = write
                    pipe.hset(self._op(operation_id), mapping=record)
                    pipe.zadd(self._all(), {operation_id: position})
                    pipe.zadd(self._all(stack), {operation_id: position})
                    pipe.zadd(self._queued(), {operation_id: position})
                    pipe.zadd(self._queued(stack), {operation_id: position})
                    pipe.sadd(self._stacks, stack.name)
                    continue
                _, stack, older, operation_id, pointing_at = write
                pipe.hset(
                    self._op(older),
                    mapping={
                        "status": OperationStatus.superseded.value,
                        "superseded_by": operation_id,
                        "finished_at": repr(now),
                    },
                )
                pipe.zrem(self._queued(), older)
                pipe.zrem(self._queued(stack), older)
                for earlier in pointing_at:
                    pipe.hset(self._op(earlier), "superseded_by", operation_id)
                pipe.sadd(self._replaced(operation_id), older, *pointing_at)
                pipe.delete(self._replaced(older))
            return [record["id"] for record in records]

        self._transaction([self._queued(stack) for stack in stacks], body)
        return [_operation(record) for record in records]

    def get(self, operation_id: str) -> Operation | None:
        fields = self._fields(operation_id)
        return _operation(fields) if fields else None

    def recent(self, *, stack: StackRef | None = None, limit: int = 50) -> list[Operation]:
        ids = [_text(i) for i in self._redis.zrevrange(self._all(stack), 0, limit - 1)]
        return self._many(ids)

    def events(self, operation_id: str, *, after_seq: int = 0) -> list[ProgressEvent]:
        raw = self._redis.lrange(self._events(operation_id), after_seq, -1)
        return [
            _event(operation_id, after_seq + index + 1, json.loads(item)) for index, item in enumerate(raw)
        ]

    def last(self, stack: StackRef) -> Operation | None:
        recent = self.recent(stack=stack, limit=1)
        return recent[0] if recent else None

    # --- WorkQueue ---------------------------------------------------------------------------------

    def claim_next(
        self,
        running_stacks: Collection[StackRef] = (),
        *,
        worker_id: str = "",
        only: Collection[str] | None = None,
    ) -> Operation | None:
        excluded = {s.name for s in running_stacks}
        wanted: set[str] | None = None
        if only is not None:
            wanted = set()
            for operation in self._many(list(only)):
                if operation.status is OperationStatus.queued:
                    wanted.add(operation.stack.name)
            if not wanted:
                return None

        def body(pipe: Any) -> list[str]:
            # Which stacks have something queued, oldest first, from the overall queued set, which is
            # not watched: every submit writes it, and a claim that watched it lost to every submit of
            # any stack (starved by a burst of them). What decides is watched: ``running``, and the
            # queued set of the stack it claims on, whose oldest operation it takes.
            queued = [_text(i) for i in pipe.zrange(self._queued(), 0, -1)]
            busy = {_text(k) for k in pipe.hkeys(self._running)}
            stacks = self._stacks_of(queued)
            seen: set[str] = set()
            for candidate in queued:
                name = stacks.get(candidate)
                if name is None or name in seen:
                    continue  # only the oldest queued operation of a stack may run next
                seen.add(name)
                if name in busy or name in excluded or (wanted is not None and name not in wanted):
                    continue
                environment, _, tenant = name.partition(".")
                stack = StackRef(environment, tenant)
                pipe.watch(self._queued(stack))
                head = pipe.zrange(self._queued(stack), 0, 0)
                if not head:
                    continue  # claimed or superseded since
                operation_id = _text(head[0])
                now = repr(self._clock())
                pipe.multi()
                pipe.hset(
                    self._op(operation_id),
                    mapping={
                        "status": OperationStatus.running.value,
                        "started_at": now,
                        "claimed_by": worker_id,
                        "heartbeat_at": now,
                        "engine_started": "0",
                    },
                )
                pipe.zrem(self._queued(), operation_id)
                pipe.zrem(self._queued(stack), operation_id)
                pipe.hset(self._running, name, operation_id)
                return [operation_id]
            return []

        # A claim whose reply was lost answers the operation it claimed (``_transaction``): a retry
        # deciding again left it running with no worker until a stale-heartbeat requeue, and claimed
        # another stack's operation meanwhile (outside review of group submits).
        claimed = self._transaction([self._running], body)
        return self._require(claimed[0]) if claimed else None

    def add_event(
        self,
        operation_id: str,
        *,
        kind: str,
        resource: str | None = None,
        op: str | None = None,
        status: str | None = None,
        message: str | None = None,
    ) -> ProgressEvent:
        now = self._clock()
        payload = {
            "time": now,
            "kind": kind,
            "resource": resource,
            "op": op,
            "status": status,
            "message": message,
        }
        seq = int(self._redis.rpush(self._events(operation_id), json.dumps(payload)))
        return _event(operation_id, seq, payload)

    def finish(
        self,
        operation_id: str,
        status: OperationStatus,
        summary: OperationSummary,
        *,
        worker_id: str | None = None,
    ) -> Operation:
        status = OperationStatus(status)
        if not status.finished or status is OperationStatus.superseded:
            raise ValueError(f"an operation finishes as succeeded or failed, not {status.value}")

        def body(pipe: Any) -> list[str]:
            fields = self._fields(operation_id, pipe)
            if not fields:
                raise KeyError(f"no operation {operation_id!r}")
            owned = worker_id is None or fields.get("claimed_by") == worker_id
            if fields.get("status") != OperationStatus.running.value or not owned:
                # (A finish whose reply was lost does not come here: ``_transaction`` answers it.)
                _log.warning("operation %s was no longer running here; outcome not recorded", operation_id)
                return []
            name = f"{fields['environment']}.{fields['tenant']}"
            running_here = _text(pipe.hget(self._running, name) or b"") == operation_id
            pipe.multi()
            pipe.hset(
                self._op(operation_id),
                mapping={
                    "status": status.value,
                    "finished_at": repr(self._clock()),
                    "summary": json.dumps(asdict(summary)),
                },
            )
            pipe.hdel(self._op(operation_id), "heartbeat_at")
            if running_here:
                pipe.hdel(self._running, name)
            return [operation_id]

        self._transaction([self._op(operation_id), self._running], body)
        return self._require(operation_id)

    def heartbeat(self, operation_ids: Collection[str]) -> None:
        now = repr(self._clock())
        for operation in self._many(list(operation_ids)):
            if operation.status is OperationStatus.running:
                self._redis.hset(self._op(operation.id), "heartbeat_at", now)

    def requeue_interrupted(self, *, stale_after: float | None = None) -> list[Operation]:
        def stale(fields: dict[str, str], now: float) -> bool:
            beat = float(fields["heartbeat_at"]) if fields.get("heartbeat_at") else None
            return stale_after is None or beat is None or beat < now - stale_after

        return self._requeue(stale, _REQUEUED_MESSAGE)

    def requeue_claimed(self, worker_id: str, *, reason: str) -> list[Operation]:
        """Hand back what ``worker_id`` is running (its process is stopping mid-update): requeued and
        the stacks Pulumi was working on flagged, so the next worker recovers each stack and runs the
        operation again."""
        message = f"{reason}; requeued. The stack is checked and recovered before the operation runs again."
        return self._requeue(lambda fields, _now: fields.get("claimed_by") == worker_id, message)

    def _requeue(self, wanted: Callable[[dict[str, str], float], bool], message: str) -> list[Operation]:
        def body(pipe: Any) -> list[str]:
            now = self._clock()
            running = {_text(k): _text(v) for k, v in pipe.hgetall(self._running).items()}
            picked: list[tuple[str, str, dict[str, str]]] = []
            for name, operation_id in running.items():
                fields = self._fields(operation_id, pipe)
                if fields.get("status") != OperationStatus.running.value:
                    picked.append((name, operation_id, {}))  # a dangling marker: just drop it
                elif wanted(fields, now):
                    picked.append((name, operation_id, fields))
            if not picked:
                return []
            pipe.multi()
            requeued = []
            for name, operation_id, fields in picked:
                pipe.hdel(self._running, name)
                if not fields:
                    continue
                environment, _, tenant = name.partition(".")
                stack = StackRef(environment, tenant)
                position = float(fields["position"])
                pipe.hset(self._op(operation_id), "status", OperationStatus.queued.value)
                pipe.hdel(
                    self._op(operation_id), "started_at", "claimed_by", "heartbeat_at", "engine_started"
                )
                pipe.zadd(self._queued(), {operation_id: position})
                pipe.zadd(self._queued(stack), {operation_id: position})
                started = _pulumi_may_have_started(fields)
                if started:
                    pipe.sadd(self._interrupted, name)
                event = {
                    "time": now,
                    "kind": "recovery",
                    "status": requeue_status(started),
                    "message": message,
                }
                pipe.rpush(self._events(operation_id), json.dumps(event))
                requeued.append(operation_id)
            return requeued

        return self._many(self._transaction([self._running], body))

    def abandon(self, worker_id: str, *, reason: str) -> list[Operation]:
        """Fail the operations ``worker_id`` is running and flag the stacks Pulumi was working on."""

        def body(pipe: Any) -> list[str]:
            now = self._clock()
            running = {_text(k): _text(v) for k, v in pipe.hgetall(self._running).items()}
            mine = []
            for name, operation_id in running.items():
                fields = self._fields(operation_id, pipe)
                if (
                    fields.get("status") == OperationStatus.running.value
                    and fields.get("claimed_by") == worker_id
                ):
                    mine.append((name, operation_id, fields))
            if not mine:
                return []
            pipe.multi()
            for name, operation_id, fields in mine:
                started = float(fields["started_at"]) if fields.get("started_at") else now
                summary = OperationSummary(duration_seconds=now - started, error=reason, code="interrupted")
                pipe.hset(
                    self._op(operation_id),
                    mapping={
                        "status": OperationStatus.failed.value,
                        "finished_at": repr(now),
                        "summary": json.dumps(asdict(summary)),
                    },
                )
                pipe.hdel(self._op(operation_id), "heartbeat_at")
                pipe.hdel(self._running, name)
                if _pulumi_may_have_started(fields):
                    pipe.sadd(self._interrupted, name)
            return [operation_id for _, operation_id, _ in mine]

        return self._many(self._transaction([self._running], body))

    def mark_engine_started(self, operation_id: str, *, started: bool = True) -> None:
        """Pulumi is about to work on the operation's stack: from here, a stop or death flags it
        (``started=False``: it is not, as Pulumi refused to start on another update's lock)."""
        self._redis.hset(self._op(operation_id), "engine_started", "1" if started else "0")

    def was_interrupted(self, stack: StackRef) -> bool:
        return bool(self._redis.sismember(self._interrupted, stack.name))

    def mark_interrupted(self, stack: StackRef) -> None:
        self._redis.sadd(self._interrupted, stack.name)

    def clear_interrupted(self, stack: StackRef) -> None:
        self._redis.srem(self._interrupted, stack.name)

    # --- what sync and the CLI ask -----------------------------------------------------------------

    def stacks(self, environment: str | None = None) -> list[StackRef]:
        names = sorted(_text(n) for n in self._redis.smembers(self._stacks))
        refs = [StackRef(*name.split(".", 1)) for name in names]
        return [ref for ref in refs if environment is None or ref.environment == environment]

    def applied(self, environment: str) -> dict[str, Operation]:
        """Per tenant of ``environment``: its last successful ``up`` or ``destroy``."""
        found: dict[str, Operation] = {}
        for stack in self.stacks(environment):
            ids = [_text(i) for i in self._redis.zrevrange(self._all(stack), 0, -1)]
            for operation in self._many(ids):
                if operation.status is OperationStatus.succeeded and operation.kind in (
                    OperationKind.up,
                    OperationKind.destroy,
                ):
                    found[stack.tenant] = operation
                    break
        return found

    def active(self, stack: StackRef) -> list[Operation]:
        ids = [_text(i) for i in self._redis.zrange(self._all(stack), 0, -1)]
        return [
            op for op in self._many(ids) if op.status in (OperationStatus.queued, OperationStatus.running)
        ]

    # --- internals ---------------------------------------------------------------------------------

    def _require(self, operation_id: str) -> Operation:
        operation = self.get(operation_id)
        if operation is None:
            raise KeyError(f"no operation {operation_id!r}")
        return operation

    def _many(self, ids: list[str]) -> list[Operation]:
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for operation_id in ids:
            pipe.hgetall(self._op(operation_id))
        found = []
        for raw in pipe.execute():
            if raw:
                found.append(_operation({_text(k): _text(v) for k, v in raw.items()}))
        return found

    def _stacks_of(self, ids: list[str]) -> dict[str, str]:
        """Operation id -> stack name (immutable fields, so reading them outside the transaction is safe)."""
        if not ids:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for operation_id in ids:
            pipe.hmget(self._op(operation_id), "environment", "tenant")
        names = {}
        for operation_id, (environment, tenant) in zip(ids, pipe.execute(), strict=True):
            if environment is not None and tenant is not None:
                names[operation_id] = f"{_text(environment)}.{_text(tenant)}"
        return names


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ids(stored: Any) -> list[str]:
    """A transaction's stored answer (``answer:<token>``)."""
    return [str(i) for i in json.loads(_text(stored))]


def _float(fields: dict[str, str], key: str) -> float | None:
    value = fields.get(key)
    return float(value) if value else None


def _operation(fields: dict[str, str]) -> Operation:
    summary = None
    if fields.get("summary"):
        summary = OperationSummary(**json.loads(fields["summary"]))
    return Operation(
        id=fields["id"],
        stack=StackRef(fields["environment"], fields["tenant"]),
        kind=OperationKind(fields["kind"]),
        status=OperationStatus(fields["status"]),
        requested_by=fields["requested_by"],
        created_at=float(fields["created_at"]),
        spec=json.loads(fields["spec"]) if fields.get("spec") else None,
        started_at=_float(fields, "started_at"),
        finished_at=_float(fields, "finished_at"),
        summary=summary,
        superseded_by=fields.get("superseded_by") or None,
        incarnation=fields.get("incarnation") or None,
        params=json.loads(fields["params"]) if fields.get("params") else None,
    )


def _event(operation_id: str, seq: int, payload: dict[str, Any]) -> ProgressEvent:
    return ProgressEvent(
        operation_id=operation_id,
        seq=seq,
        time=float(payload["time"]),
        kind=str(payload["kind"]),
        resource=payload.get("resource"),
        op=payload.get("op"),
        status=payload.get("status"),
        message=payload.get("message"),
    )


def _pulumi_may_have_started(fields: dict[str, str]) -> bool:
    """As the SQLite queue's, by the claim's record ("0": Pulumi never started on it; missing: claimed
    before claims recorded it)."""
    return fields.get("engine_started") != "0"
