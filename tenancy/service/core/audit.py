"""The audit log: one JSON line per call that changes or reveals something, ready for Loki.

Fields: time, actor, tenant, environment, action, outcome, plus request id and operation id when there
is one. The writer takes only these named values (never request bodies or engine outputs), which
is how secrets stay out of it: a revealed key is recorded as "revealed", never as its value.

Durability: a record of something done (``accepted``, ``succeeded``: a change acknowledged, a key
revealed) is flushed to the disk before ``record`` returns, so the caller is answered only once it
would survive a power loss, like the change it records. Records that arrive while one flush runs
share the next (group commit: one ``fsync`` per group, whatever its size). Records of what was not
done (denied, refused, invalid, failed) are written at once and reach the disk with the next flush
of the file, or the kernel's own writeback: no caller waits on a disk for a refusal. On standard
output ('-') the line is the container runtime's to keep.

Rotation (the file moved or removed, as logrotate does): the next line opens a new file at the path,
and nothing is flushed on that line's way. The old file stays open until the records written to it are
flushed by their group, which flushes each file its records' lines are in (and the folder, once, for
a file created since): a failed flush of the old file fails only the acknowledged records whose lines
are in it, never a refusal written meanwhile, nor a record in the new file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TextIO

from starlette.types import ASGIApp, Receive, Scope, Send

from tenancy.group_commit import GroupCommit
from tenancy.service.core import durable
from tenancy.service.core.errors import ServiceError, error_response

Outcome = Literal["accepted", "succeeded", "denied", "refused", "invalid", "failed"]
_log = logging.getLogger("tenancy.service")
_DONE: frozenset[str] = frozenset({"accepted", "succeeded"})  # flushed before record() returns


@dataclass(eq=False)
class _File:
    """One file the log wrote lines to: the one at the path, or one moved away since (rotated)."""

    handle: TextIO
    inode: tuple[int, int]
    named: bool  # its name is on the disk (the folder flushed since it was created)
    waiting: int = 0  # acknowledged records whose lines are in it and not flushed yet
    rotated: bool = False  # no longer at the path: closed once ``waiting`` is back to 0


@dataclass
class _Flush:
    """A record waiting for a flush of the file that holds its line (a group commit item)."""

    file: _File
    done: bool = False
    lead: bool = False
    wakeup: threading.Event = field(default_factory=threading.Event)
    error: OSError | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One audit line's named values (never a body or an output: see the module's docstring)."""

    actor: str
    action: str
    outcome: Outcome
    tenant: str | None
    environment: str | None = None
    request_id: str | None = None
    operation_id: str | None = None
    reason: str | None = None

    def line(self) -> str:
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "actor": self.actor,
            "tenant": self.tenant,
            "environment": self.environment,
            "action": self.action,
            "outcome": self.outcome,
            "request_id": self.request_id,
            "operation_id": self.operation_id,
            "reason": self.reason,
            "log": "audit",
        }
        return json.dumps({k: v for k, v in entry.items() if v is not None}, separators=(",", ":")) + "\n"


def unrecorded(record: AuditRecord, error: OSError, *, done: str, remedy: str) -> ServiceError:
    """The answer to a call that took effect (``done``) but whose audit record could not be written:
    503 ``audit_unavailable``, saying what was done and what to do (``remedy``); an Idempotency-Key
    keeps it, so a retry does not do it again."""
    why = error.strerror or type(error).__name__
    _log.error(
        "the audit record of %s (%s, request %s, operation %s) could not be written: %s",
        record.action,
        record.tenant,
        record.request_id or "-",
        record.operation_id or "-",
        why,
    )
    return ServiceError(
        "audit_unavailable",
        f"{done}, but its audit record could not be written ({why}); it stands: {remedy}, "
        "and tell the platform team",
        took_effect=True,
    )


class AuditLog:
    def __init__(self, target: str) -> None:
        """``target``: a file path (appended to), or '-' for standard output."""
        self.target = target
        self._lock = threading.Lock()
        self._file: _File | None = None
        self._flushes: GroupCommit[_Flush] = GroupCommit(self._flush_group)
        if target != "-":
            Path(target).parent.mkdir(parents=True, exist_ok=True)

    def writable(self) -> bool:
        """Whether a record can be written now: the file, or the folder it would be made in, is open
        to this process for writing (standard output always is). A full disk is found only by a write."""
        if self.target == "-":
            return True
        path = Path(self.target)
        return os.access(path, os.W_OK) if path.exists() else os.access(path.parent, os.W_OK | os.X_OK)

    def record(
        self,
        *,
        actor: str,
        action: str,
        outcome: Outcome,
        tenant: str | None,
        environment: str | None = None,
        request_id: str | None = None,
        operation_id: str | None = None,
        reason: str | None = None,
        done: str | None = None,
        remedy: str = "do not repeat it",
    ) -> None:
        """Write one record (flushed first when its outcome is one of what was done). ``done``: what the
        caller already did, for a record of an action that took effect: one that cannot be written then
        answers 503 ``audit_unavailable`` saying it was done and what to do (``remedy``), and an
        Idempotency-Key keeps that answer, so a retry does not do it again. Without it the ``OSError``
        goes up: an action not yet done (a reveal) is then not done at all."""
        record = AuditRecord(actor, action, outcome, tenant, environment, request_id, operation_id, reason)
        try:
            self._write(record.line(), outcome)
        except OSError as error:
            if done is None:
                raise
            raise unrecorded(record, error, done=done, remedy=remedy) from None

    def record_accepted(self, records: Sequence[AuditRecord]) -> None:
        """Write ``records`` (each an accepted change) and flush them once together, before returning:
        how the publisher of a group of commits records the group's writes in the group's own round.
        Raises the ``OSError`` of the write or the flush (every record's: none counts as flushed)."""
        if records:
            self._write("".join(record.line() for record in records), "accepted")

    def _write(self, line: str, outcome: Outcome) -> None:
        """``line``: one line, or several (written at once, to one file, and flushed together)."""
        with self._lock:
            if self.target == "-":
                sys.stdout.write(line)
                sys.stdout.flush()
                return
            file = self._open()
            try:
                file.handle.write(line)
                file.handle.flush()  # in the kernel's hands per line, as closing the file after each did
            except OSError:
                # Part of it may be in the file (a full disk mid-write: a group's lines are one write):
                # the next record opens the file again, which ends a line cut short first.
                self._drop(file)
                raise
            if outcome not in _DONE:
                return
            file.waiting += 1  # kept open until this line is flushed, even if rotated meanwhile
        waiter = _Flush(file)
        self._flushes.join(waiter)  # the line is written: any flush that starts now covers it
        if waiter.error is not None:
            raise waiter.error

    def _drop(self, file: _File) -> None:
        """Stop writing to ``file`` (closed once its waiting records are flushed, or now)."""
        file.rotated = True
        if self._file is file:
            self._file = None
        if file.waiting == 0:
            with contextlib.suppress(OSError):  # what it still buffers is what could not be written
                file.handle.close()

    def _flush_group(self, group: list[_Flush]) -> None:
        """One flush of each file holding a line of ``group`` (written before they joined): the file
        at the path, and one rotated away since; each record is told how its own file's flush went."""
        errors: dict[_File, OSError | None] = {}
        for file in dict.fromkeys(waiter.file for waiter in group):
            try:
                self._flush_file(file)
            except OSError as failed:
                errors[file] = failed
            else:
                errors[file] = None
        with self._lock:
            for waiter in group:
                waiter.file.waiting -= 1
            for file in errors:
                if file.rotated and file.waiting == 0:
                    file.handle.close()
        for waiter in group:
            waiter.error = errors[waiter.file]
            waiter.done = True
            waiter.wakeup.set()

    def _flush_file(self, file: _File) -> None:
        """Its name (once, after it was created), then its lines, outside the lock: lines keep being
        written meanwhile. The file stays open while records wait on it, so its descriptor is valid."""
        if not file.named:
            durable.sync_folders([Path(self.target).parent])
            file.named = True
        with self._lock:  # dup may fail (EMFILE): raised, so every waiter of the file is still told
            descriptor = os.dup(file.handle.fileno())
        try:
            durable.fsync(descriptor)
        finally:
            os.close(descriptor)

    def _open(self) -> _File:
        """The file kept open between lines (opening it per line cost a tenth of a write's time), and
        opened again when it was moved or removed (log rotation), so lines always land at the path.
        Nothing is flushed here: the flush of a rotated file is its waiting records' (``_flush_group``)."""
        try:
            status = os.stat(self.target)
            current: tuple[int, int] | None = (status.st_dev, status.st_ino)
        except FileNotFoundError:
            current = None
        file = self._file
        if file is None or current is None or current != file.inode:
            if file is not None:
                file.rotated, self._file = True, None
                if file.waiting == 0:  # else its last waiting record's group closes it
                    file.handle.close()
            handle = open(self.target, "a", encoding="utf-8")  # noqa: SIM115 - kept open
            _end_a_torn_line(handle)
            status = os.fstat(handle.fileno())
            # Created: its name must be flushed before any line in it counts as flushed.
            file = self._file = _File(handle, (status.st_dev, status.st_ino), named=current is not None)
        return file


def _end_a_torn_line(handle: TextIO) -> None:
    """A file whose last line was cut short (a crash or a full disk mid-write) gets a line break
    first: the next record starts a line of its own instead of being glued to the fragment, which no
    reader could parse. The fragment stays, as the evidence of what was cut."""
    size = os.fstat(handle.fileno()).st_size
    if not size:
        return
    with open(handle.name, "rb") as reader:  # the handle appends only; it cannot read
        reader.seek(size - 1)
        if reader.read(1) != b"\n":
            handle.write("\n")


_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class WritesNeedTheAuditLog:
    """ASGI: while the audit log cannot be written (``AuditLog.writable``), every API write (POST, PUT,
    PATCH, DELETE under ``prefix``) is answered 503 ``audit_unavailable`` before its route runs, so
    nothing is done that would go unrecorded: a route finding out only when it records what it did
    could answer nothing better than an error for something done. ``/readyz`` fails meanwhile."""

    def __init__(self, app: ASGIApp, *, audit: AuditLog, prefix: str) -> None:
        self.app = app
        self.audit = audit
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope.get("method") in _WRITES
            and str(scope.get("path", "")).startswith(self.prefix)
            and not self.audit.writable()
        ):
            refusal = ServiceError(
                "audit_unavailable",
                "the audit log cannot be written, so no change is accepted; nothing was done: retry once "
                "the platform team has fixed it",
            )
            await error_response(refusal)(scope, receive, send)
            return
        await self.app(scope, receive, send)
