"""The durable operation queue: SQLite in WAL mode, shared by threads and processes on one host.

Every request (CLI or HTTP) becomes a row in ``operations``; workers claim rows in a write
transaction, so two claims can never pick operations of the same stack at once, whichever process
they run in. Progress events live in ``events`` keyed by (operation, seq).

Coalescing happens at submit time: a new ``up``/``preview``/``refresh`` replaces a queued (never a
running) operation of the same kind on the same stack. N queued changes to a tenant therefore become
one update that applies the latest spec. A ``destroy`` replaces nothing and nothing replaces across
it: an ``up`` queued before it (typically the one turning deletion protection off) runs first.

Liveness: a worker heartbeats the operations it runs. An operation whose heartbeat went stale was
left by a process that stopped (crash, OOM kill, reboot); ``requeue_interrupted`` puts it back in
the queue and flags its stack so the worker recovers the stack before running anything on it. A
process that stops on purpose hands its running operations back the same way (``requeue_claimed``).
Stale means several times SQLite's lock wait (``BUSY_TIMEOUT_SECONDS``), so a worker merely blocked
on the database is never taken for dead.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
from tenancy.group_commit import GroupCommit
from tenancy.sqlite_shared import connect_shared
from tenancy.writer_turns import WriterTurns

_log = logging.getLogger(__name__)

# Write transactions between two checkpoints of the WAL, run by a thread of their own (``_checkpoint``).
_CHECKPOINT_EVERY = 200
# How long a connection waits for another writer before failing. A worker blocked this long misses
# heartbeats, so stale detection must allow several times this (the worker's default is 120 s).
BUSY_TIMEOUT_SECONDS = 30.0
_REQUEUED_MESSAGE = (
    "the process running this operation stopped before it finished; requeued. "
    "The stack is checked and recovered before the operation runs again."
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS operations (
    position      INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    environment   TEXT NOT NULL,
    tenant        TEXT NOT NULL,
    kind          TEXT NOT NULL,
    status        TEXT NOT NULL,
    requested_by  TEXT NOT NULL,
    created_at    REAL NOT NULL,
    spec          TEXT,
    started_at    REAL,
    finished_at   REAL,
    summary       TEXT,
    superseded_by TEXT,
    claimed_by    TEXT,
    heartbeat_at  REAL,
    incarnation   TEXT,
    params        TEXT,
    engine_started INTEGER
);
CREATE INDEX IF NOT EXISTS operations_by_stack ON operations (environment, tenant, status, position);
CREATE INDEX IF NOT EXISTS operations_by_status ON operations (status, position);
CREATE INDEX IF NOT EXISTS operations_by_successor ON operations (superseded_by);
CREATE TABLE IF NOT EXISTS events (
    operation_id TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    time         REAL NOT NULL,
    kind         TEXT NOT NULL,
    resource     TEXT,
    op           TEXT,
    status       TEXT,
    message      TEXT,
    PRIMARY KEY (operation_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS interrupted_stacks (
    environment TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    since       REAL NOT NULL,
    PRIMARY KEY (environment, tenant)
) WITHOUT ROWID;
"""


_CLAIMABLE = """
SELECT o.* FROM operations AS o
WHERE o.status = 'queued'
  AND NOT EXISTS (
      SELECT 1 FROM operations AS r
      WHERE r.environment = o.environment AND r.tenant = o.tenant AND r.status = 'running')
  AND NOT EXISTS (
      SELECT 1 FROM operations AS e
      WHERE e.environment = o.environment AND e.tenant = o.tenant AND e.status = 'queued'
        AND e.position < o.position)
ORDER BY o.position
"""


@dataclass
class _Submission:
    """One ``submit`` waiting to be inserted (its row's values, prepared by the submitting thread)."""

    id: str
    stack: StackRef
    kind: OperationKind
    requested_by: str
    created_at: float
    spec: str | None
    incarnation: str | None
    params: str | None
    done: bool = False
    error: BaseException | None = None
    lead: bool = False  # handed the next transaction
    wakeup: threading.Event = field(default_factory=threading.Event)


def _queued_operation(submission: _Submission) -> Operation:
    """What a read of the row just inserted gives, without reading it (spec and params decoded
    afresh, so the caller's own dicts are not shared)."""
    return Operation(
        id=submission.id,
        stack=StackRef(submission.stack.environment, submission.stack.tenant),
        kind=submission.kind,
        status=OperationStatus.queued,
        requested_by=submission.requested_by,
        created_at=submission.created_at,
        spec=None if submission.spec is None else json.loads(submission.spec),
        incarnation=submission.incarnation,
        params=None if submission.params is None else json.loads(submission.params),
    )


class SqliteOperationQueue:
    """``OperationQueue`` and ``WorkQueue`` over one SQLite file (see the module docstring)."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        # Writers take turns here rather than in SQLite, threads and processes alike (several
        # ``tenantctl serve`` processes, the CLI, workers): a connection that finds the database
        # locked polls with growing sleeps (up to 100 ms each), so 40 request threads queueing on
        # BEGIN IMMEDIATE waited far longer than the transactions took.
        self._writers = WriterTurns(self.path)
        # Submits waiting for the transaction that inserts them (``_submit_together``).
        self._group: GroupCommit[_Submission] = GroupCommit(self._insert_all)
        # The WAL is checkpointed off the writers' path: SQLite's automatic checkpoint ran inside the
        # commit that crossed 1,000 pages, holding the writer lock (and, for a submit, its callers)
        # while it copied them into the database and flushed both files.
        self._commits = 0
        self._checkpoint_due = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self._closing = False
        self.checkpoints = 0  # run by the checkpointer so far
        with self._write() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            columns = {row["name"] for row in db.execute("PRAGMA table_info(operations)")}
            if "incarnation" not in columns:  # a database from before operations named their incarnation
                db.execute("ALTER TABLE operations ADD COLUMN incarnation TEXT")
            if "params" not in columns:  # a database from before data operations took parameters
                db.execute("ALTER TABLE operations ADD COLUMN params TEXT")
            if "engine_started" not in columns:  # from before claims recorded whether Pulumi started
                db.execute("ALTER TABLE operations ADD COLUMN engine_started INTEGER")

    # --- connections ---------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        """One connection per thread: sqlite3 connections must not cross threads."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            # WAL (readers never block the writer, nor it them), set without racing the other processes
            # that open the queue at the same moment (tenantctl serve --processes N, the workers).
            db = connect_shared(self.path, timeout=BUSY_TIMEOUT_SECONDS)
            db.row_factory = sqlite3.Row
            # Wait for another writer instead of failing.
            db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
            # In WAL mode NORMAL survives a crash of the process; a power loss can take the last
            # transactions. Enough for the workers' bookkeeping (a lost claim, event or outcome leaves
            # an operation queued or running, and a running one with no heartbeat is requeued), not
            # for a submit the caller is told about: ``_insert_all`` flushes those (``durable``).
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it (``_checkpoint``)
            self._local.db = db
            with self._connections_lock:
                self._connections.append(db)
        return db

    @contextmanager
    def _write(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the database lock up front, so read-then-write is atomic.
        ``durable``: flushed to the disk when it commits (``synchronous=FULL`` for this transaction;
        the flush of the WAL covers the transactions before it too)."""
        db = self._db()
        with self._writers.turn():
            if durable:
                db.execute("PRAGMA synchronous=FULL")
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
                self._commits += 1
                if self._commits % _CHECKPOINT_EVERY == 0:
                    self._wake_checkpointer()
            finally:
                if durable:
                    db.execute("PRAGMA synchronous=NORMAL")

    def _wake_checkpointer(self) -> None:
        if self._checkpointer is None:
            self._checkpointer = threading.Thread(
                target=self._checkpoint, name="queue-checkpoint", daemon=True
            )
            self._checkpointer.start()
        self._checkpoint_due.set()

    def _checkpoint(self) -> None:
        """Copy the WAL into the database whenever ``_CHECKPOINT_EVERY`` more transactions committed
        (PASSIVE: never waits for writers or readers, nor they for it; what readers still use is left
        for the next one). A process that stops leaves the WAL to the next connection, and the last
        connection to close checkpoints it."""
        while True:
            self._checkpoint_due.wait()
            self._checkpoint_due.clear()
            if self._closing:
                return
            try:
                self._db().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                self.checkpoints += 1
            except sqlite3.Error as error:  # the next one tries again; the WAL only grows meanwhile
                _log.warning("checkpointing the queue's WAL failed: %s", error)

    def __enter__(self) -> SqliteOperationQueue:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        checkpointer = self._checkpointer
        if checkpointer is not None:
            self._closing = True
            self._checkpoint_due.set()
            checkpointer.join(timeout=BUSY_TIMEOUT_SECONDS)
            self._checkpointer, self._closing = None, False
        with self._connections_lock:
            for db in self._connections:
                with suppress(sqlite3.ProgrammingError):  # closed from its own thread already
                    db.close()
            self._connections.clear()
        self._local = threading.local()
        self._writers.close()

    # --- OperationQueue ------------------------------------------------------------------------

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
        """``queued``: called once the operation's place in the queue's order is fixed (every submit
        that calls later is inserted after it), before its transaction commits; the service uses it to
        queue a tenant's pipelined changes in commit order while they share a transaction."""
        submission = self._submission(
            SubmitRequest(stack, OperationKind(kind), spec, requested_by, incarnation, params)
        )
        self._submit_together(submission, queued)
        return _queued_operation(submission)

    def submit_in_order(self, requests: Sequence[SubmitRequest]) -> list[Operation]:
        """One transaction, flushed as a submit's is, inserting ``requests`` in their order (the
        writers' lock taken first, so every submit that returned before is before them)."""
        submissions = [self._submission(request) for request in requests]
        if submissions:
            with self._write(durable=True) as db:
                for submission in submissions:
                    self._insert(db, submission)
        return [_queued_operation(submission) for submission in submissions]

    def _submission(self, request: SubmitRequest) -> _Submission:
        """The row ``request`` is inserted as: its id, the time it was queued and its JSON."""
        return _Submission(
            uuid.uuid4().hex,
            request.stack,
            OperationKind(request.kind),
            request.requested_by,
            float(self._clock()),
            None if request.spec is None else json.dumps(request.spec),
            request.incarnation,
            None if request.params is None else json.dumps(request.params),
        )

    def _submit_together(self, submission: _Submission, queued: Callable[[], None] | None = None) -> None:
        """Group commit for submits: the first to find no leader inserts everything waiting, its own
        submission included, in one transaction (one flush of the WAL instead of one per submit),
        then hands the lead to the oldest submission that arrived meanwhile; the others sleep until
        theirs is in. Rows are inserted in the order submits arrived: a caller that holds a stack's
        lock across its commit and its submit (the service) sees its stack's operations queued in
        commit order, whatever else shares the transaction."""
        self._group.add(submission)
        try:
            if queued is not None:
                queued()
        finally:
            self._group.wait(submission)  # always: the lead may have been handed to it meanwhile
        if submission.error is not None:
            raise submission.error

    def _insert_all(self, batch: list[_Submission]) -> None:
        try:
            with self._write(durable=True) as db:
                for submission in batch:
                    self._insert(db, submission)
        except BaseException as error:
            for submission in batch:
                submission.error = error  # nothing of the transaction was kept
            if not isinstance(error, Exception):
                raise
        finally:
            for submission in batch:
                submission.done = True
                submission.wakeup.set()

    @staticmethod
    def _insert(db: sqlite3.Connection, submission: _Submission) -> None:
        operation_id, stack, kind = submission.id, submission.stack, submission.kind
        now, requested_by = submission.created_at, submission.requested_by
        spec_json, incarnation, params_json = submission.spec, submission.incarnation, submission.params
        db.execute(
            "INSERT INTO operations"
            " (id, environment, tenant, kind, status, requested_by, created_at, spec, incarnation,"
            " params)"
            " VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
            (
                operation_id,
                stack.environment,
                stack.tenant,
                kind.value,
                requested_by,
                now,
                spec_json,
                incarnation,
                params_json,
            ),
        )
        replaced = SUPERSEDES[kind]
        if replaced:
            # The queued operations of the same kinds on the stack, never across a queued destroy
            # (what was asked before it runs before it).
            replaceable = (
                "environment = ? AND tenant = ? AND status = 'queued' AND id != ?"
                f" AND kind IN ({','.join('?' * len(replaced))})"
                " AND position > COALESCE((SELECT MAX(d.position) FROM operations AS d"
                " WHERE d.environment = ? AND d.tenant = ? AND d.status = 'queued'"
                " AND d.kind = 'destroy'), 0)"
            )
            chosen = (
                stack.environment,
                stack.tenant,
                operation_id,
                *replaced,
                stack.environment,
                stack.tenant,
            )
            # Whatever a replaced operation had replaced now points at the newest: one hop to the
            # operation that will apply the caller's change. Then the replaced ones themselves.
            db.execute(
                "UPDATE operations SET superseded_by = ? WHERE superseded_by IN"
                f" (SELECT id FROM operations WHERE {replaceable})",
                (operation_id, *chosen),
            )
            db.execute(
                "UPDATE operations SET status = 'superseded', superseded_by = ?, finished_at = ?"
                f" WHERE {replaceable}",
                (operation_id, now, *chosen),
            )

    def get(self, operation_id: str) -> Operation | None:
        row = self._db().execute("SELECT * FROM operations WHERE id = ?", (operation_id,)).fetchone()
        return None if row is None else _operation(row)

    def recent(self, *, stack: StackRef | None = None, limit: int = 50) -> list[Operation]:
        if stack is None:
            rows = self._db().execute("SELECT * FROM operations ORDER BY position DESC LIMIT ?", (limit,))
        else:
            rows = self._db().execute(
                "SELECT * FROM operations WHERE environment = ? AND tenant = ?"
                " ORDER BY position DESC LIMIT ?",
                (stack.environment, stack.tenant, limit),
            )
        return [_operation(row) for row in rows]

    def events(self, operation_id: str, *, after_seq: int = 0) -> list[ProgressEvent]:
        rows = self._db().execute(
            "SELECT * FROM events WHERE operation_id = ? AND seq > ? ORDER BY seq",
            (operation_id, after_seq),
        )
        return [_event(row) for row in rows]

    def last(self, stack: StackRef) -> Operation | None:
        recent = self.recent(stack=stack, limit=1)
        return recent[0] if recent else None

    # --- WorkQueue ------------------------------------------------------------------------------

    def claim_next(
        self,
        running_stacks: Collection[StackRef] = (),
        *,
        worker_id: str = "",
        only: Collection[str] | None = None,
    ) -> Operation | None:
        """Claim the oldest queued operation at the head of its stack's line whose stack has nothing
        running. With ``only``, claim just those operations, or ones queued ahead of them on the same
        stack (those were asked for first and must run first)."""
        excluded = {(s.environment, s.tenant) for s in running_stacks}
        wanted = None if only is None else set(only)
        now = self._clock()
        with self._write() as db:
            for row in db.execute(_CLAIMABLE):
                key = (row["environment"], row["tenant"])
                if key in excluded:
                    continue
                if wanted is not None and row["id"] not in wanted and not self._has_queued(db, key, wanted):
                    continue
                db.execute(
                    "UPDATE operations SET status = 'running', started_at = ?, claimed_by = ?,"
                    " heartbeat_at = ?, engine_started = 0 WHERE id = ?",
                    (now, worker_id, now, row["id"]),
                )
                claimed = db.execute("SELECT * FROM operations WHERE id = ?", (row["id"],)).fetchone()
                return _operation(claimed)
        return None

    @staticmethod
    def _has_queued(db: sqlite3.Connection, key: tuple[str, str], ids: set[str]) -> bool:
        """Whether one of ``ids`` waits in the stack's line (behind the operation at its head)."""
        rows = db.execute(
            "SELECT id FROM operations WHERE environment = ? AND tenant = ? AND status = 'queued'", key
        )
        return any(row["id"] in ids for row in rows)

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
        with self._write() as db:
            (seq,) = db.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE operation_id = ?", (operation_id,)
            ).fetchone()
            db.execute(
                "INSERT INTO events (operation_id, seq, time, kind, resource, op, status, message)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (operation_id, seq, now, kind, resource, op, status, message),
            )
        return ProgressEvent(
            operation_id=operation_id,
            seq=seq,
            time=now,
            kind=kind,
            resource=resource,
            op=op,
            status=status,
            message=message,
        )

    def finish(
        self,
        operation_id: str,
        status: OperationStatus,
        summary: OperationSummary,
        *,
        worker_id: str | None = None,
    ) -> Operation:
        """Record the outcome of a running operation. With ``worker_id``, only if that worker still
        owns it (it may have been requeued after a false stale-heartbeat; the new owner wins)."""
        status = OperationStatus(status)
        if not status.finished or status is OperationStatus.superseded:
            raise ValueError(f"an operation finishes as succeeded or failed, not {status.value}")
        now = self._clock()
        with self._write() as db:
            query = (
                "UPDATE operations SET status = ?, finished_at = ?, summary = ?, heartbeat_at = NULL"
                " WHERE id = ? AND status = 'running'"
            )
            params: list[Any] = [status.value, now, json.dumps(asdict(summary)), operation_id]
            if worker_id is not None:
                query += " AND claimed_by = ?"
                params.append(worker_id)
            if db.execute(query, params).rowcount == 0:
                _log.warning("operation %s was no longer running here; outcome not recorded", operation_id)
            row = db.execute("SELECT * FROM operations WHERE id = ?", (operation_id,)).fetchone()
        if row is None:
            raise KeyError(f"no operation {operation_id!r}")
        return _operation(row)

    def heartbeat(self, operation_ids: Collection[str]) -> None:
        if not operation_ids:
            return
        ids = list(operation_ids)
        with self._write() as db:
            db.execute(
                f"UPDATE operations SET heartbeat_at = ? WHERE status = 'running'"
                f" AND id IN ({','.join('?' * len(ids))})",
                (self._clock(), *ids),
            )

    def requeue_interrupted(self, *, stale_after: float | None = None) -> list[Operation]:
        """Requeue running operations whose worker stopped heartbeating ``stale_after`` seconds ago
        (all running operations when None: only safe when no other worker can be alive)."""
        now = self._clock()
        with self._write() as db:
            if stale_after is None:
                rows = db.execute("SELECT * FROM operations WHERE status = 'running'").fetchall()
            else:
                rows = db.execute(
                    "SELECT * FROM operations WHERE status = 'running'"
                    " AND (heartbeat_at IS NULL OR heartbeat_at < ?)",
                    (now - stale_after,),
                ).fetchall()
            return self._requeue(db, rows, now, _REQUEUED_MESSAGE)

    def requeue_claimed(self, worker_id: str, *, reason: str) -> list[Operation]:
        """Hand back what ``worker_id`` is running (its process is stopping mid-update): requeued and
        the stacks Pulumi was working on flagged, so the next worker recovers each stack and runs the
        operation again (one still waiting for another update's lock must not have that update's
        stack recovered)."""
        now = self._clock()
        with self._write() as db:
            rows = db.execute(
                "SELECT * FROM operations WHERE status = 'running' AND claimed_by = ?", (worker_id,)
            ).fetchall()
            message = (
                f"{reason}; requeued. The stack is checked and recovered before the operation runs again."
            )
            return self._requeue(db, rows, now, message)

    def _requeue(
        self, db: sqlite3.Connection, rows: list[sqlite3.Row], now: float, message: str
    ) -> list[Operation]:
        for row in rows:
            db.execute(
                "UPDATE operations SET status = 'queued', started_at = NULL, claimed_by = NULL,"
                " heartbeat_at = NULL, engine_started = NULL WHERE id = ?",
                (row["id"],),
            )
            started = _pulumi_may_have_started(row)
            if started:
                self._flag_interrupted(db, row["environment"], row["tenant"], now)
            self._insert_event(
                db, row["id"], now, kind="recovery", status=requeue_status(started), message=message
            )
        requeued = [db.execute("SELECT * FROM operations WHERE id = ?", (r["id"],)).fetchone() for r in rows]
        return [_operation(row) for row in requeued]

    def abandon(self, worker_id: str, *, reason: str) -> list[Operation]:
        """Fail the operations ``worker_id`` is running (it is being stopped mid-update, e.g. Ctrl-C)
        and flag the stacks Pulumi was working on for recovery. Not requeued: the update may still be
        winding down."""
        now = self._clock()
        with self._write() as db:
            rows = db.execute(
                "SELECT * FROM operations WHERE status = 'running' AND claimed_by = ?", (worker_id,)
            ).fetchall()
            for row in rows:
                started = row["started_at"] or now
                summary = OperationSummary(duration_seconds=now - started, error=reason, code="interrupted")
                db.execute(
                    "UPDATE operations SET status = 'failed', finished_at = ?, summary = ?,"
                    " heartbeat_at = NULL WHERE id = ?",
                    (now, json.dumps(asdict(summary)), row["id"]),
                )
                if _pulumi_may_have_started(row):
                    self._flag_interrupted(db, row["environment"], row["tenant"], now)
            abandoned = [
                db.execute("SELECT * FROM operations WHERE id = ?", (r["id"],)).fetchone() for r in rows
            ]
        return [_operation(row) for row in abandoned]

    def mark_engine_started(self, operation_id: str, *, started: bool = True) -> None:
        """Pulumi is about to work on the operation's stack (recovery or the run): from here, a process
        that stops or dies leaves its stack flagged for recovery. ``started=False``: it is not (Pulumi
        refused to start on another update's lock, and the operation waits)."""
        with self._write() as db:
            db.execute("UPDATE operations SET engine_started = ? WHERE id = ?", (int(started), operation_id))

    def was_interrupted(self, stack: StackRef) -> bool:
        row = (
            self._db()
            .execute(
                "SELECT 1 FROM interrupted_stacks WHERE environment = ? AND tenant = ?",
                (stack.environment, stack.tenant),
            )
            .fetchone()
        )
        return row is not None

    def mark_interrupted(self, stack: StackRef) -> None:
        with self._write() as db:
            self._flag_interrupted(db, stack.environment, stack.tenant, self._clock())

    def clear_interrupted(self, stack: StackRef) -> None:
        with self._write() as db:
            db.execute(
                "DELETE FROM interrupted_stacks WHERE environment = ? AND tenant = ?",
                (stack.environment, stack.tenant),
            )

    # --- what sync and the CLI ask ---------------------------------------------------------------

    def applied(self, environment: str) -> dict[str, Operation]:
        """Per tenant of ``environment``: its last successful ``up`` or ``destroy`` (what is deployed)."""
        rows = self._db().execute(
            """
            SELECT o.* FROM operations AS o
            WHERE o.environment = ? AND o.status = 'succeeded' AND o.kind IN ('up', 'destroy')
              AND o.position = (
                  SELECT MAX(p.position) FROM operations AS p
                  WHERE p.environment = o.environment AND p.tenant = o.tenant
                    AND p.status = 'succeeded' AND p.kind IN ('up', 'destroy'))
            """,
            (environment,),
        )
        return {row["tenant"]: _operation(row) for row in rows}

    def stacks(self, environment: str | None = None) -> list[StackRef]:
        """Every stack the queue has seen an operation for."""
        if environment is None:
            rows = self._db().execute("SELECT DISTINCT environment, tenant FROM operations")
        else:
            rows = self._db().execute(
                "SELECT DISTINCT environment, tenant FROM operations WHERE environment = ?", (environment,)
            )
        return sorted((StackRef(row["environment"], row["tenant"]) for row in rows), key=lambda s: s.name)

    def active(self, stack: StackRef) -> list[Operation]:
        """Queued and running operations of a stack, oldest first."""
        rows = self._db().execute(
            "SELECT * FROM operations WHERE environment = ? AND tenant = ?"
            " AND status IN ('queued', 'running') ORDER BY position",
            (stack.environment, stack.tenant),
        )
        return [_operation(row) for row in rows]

    # --- internals ------------------------------------------------------------------------------

    @staticmethod
    def _flag_interrupted(db: sqlite3.Connection, environment: str, tenant: str, now: float) -> None:
        db.execute(
            "INSERT OR IGNORE INTO interrupted_stacks (environment, tenant, since) VALUES (?, ?, ?)",
            (environment, tenant, now),
        )

    @staticmethod
    def _insert_event(
        db: sqlite3.Connection, operation_id: str, now: float, *, kind: str, status: str, message: str
    ) -> None:
        (seq,) = db.execute(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE operation_id = ?", (operation_id,)
        ).fetchone()
        db.execute(
            "INSERT INTO events (operation_id, seq, time, kind, status, message) VALUES (?, ?, ?, ?, ?, ?)",
            (operation_id, seq, now, kind, status, message),
        )


def _operation(row: sqlite3.Row) -> Operation:
    summary = None
    if row["summary"]:
        summary = OperationSummary(**json.loads(row["summary"]))
    return Operation(
        id=row["id"],
        stack=StackRef(row["environment"], row["tenant"]),
        kind=OperationKind(row["kind"]),
        status=OperationStatus(row["status"]),
        requested_by=row["requested_by"],
        created_at=row["created_at"],
        spec=None if row["spec"] is None else json.loads(row["spec"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        summary=summary,
        superseded_by=row["superseded_by"],
        incarnation=row["incarnation"],
        params=None if row["params"] is None else json.loads(row["params"]),
    )


def _event(row: sqlite3.Row) -> ProgressEvent:
    return ProgressEvent(
        operation_id=row["operation_id"],
        seq=row["seq"],
        time=row["time"],
        kind=row["kind"],
        resource=row["resource"],
        op=row["op"],
        status=row["status"],
        message=row["message"],
    )


def _pulumi_may_have_started(row: sqlite3.Row) -> bool:
    """Whether a running operation handed back or failed may have left its stack locked, by the claim's
    record (0: Pulumi never started on it, such as an operation still waiting for another update's
    lock; NULL: claimed before claims recorded it)."""
    return bool(row["engine_started"] != 0)
