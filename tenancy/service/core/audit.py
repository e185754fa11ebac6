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
"""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TextIO

from tenancy.group_commit import GroupCommit
from tenancy.service.core import durable

Outcome = Literal["accepted", "succeeded", "denied", "refused", "invalid", "failed"]
_DONE: frozenset[str] = frozenset({"accepted", "succeeded"})  # flushed before record() returns


@dataclass
class _Flush:
    """A record waiting for a flush of the file that holds its line (a group commit item)."""

    done: bool = False
    lead: bool = False
    wakeup: threading.Event = field(default_factory=threading.Event)
    error: OSError | None = None


class AuditLog:
    def __init__(self, target: str) -> None:
        """``target``: a file path (appended to), or '-' for standard output."""
        self.target = target
        self._lock = threading.Lock()
        self._handle: TextIO | None = None
        self._inode: tuple[int, int] | None = None
        self._flushes: GroupCommit[_Flush] = GroupCommit(self._flush_group)
        if target != "-":
            Path(target).parent.mkdir(parents=True, exist_ok=True)

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
    ) -> None:
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "actor": actor,
            "tenant": tenant,
            "environment": environment,
            "action": action,
            "outcome": outcome,
            "request_id": request_id,
            "operation_id": operation_id,
            "reason": reason,
            "log": "audit",
        }
        line = json.dumps({k: v for k, v in entry.items() if v is not None}, separators=(",", ":")) + "\n"
        with self._lock:
            if self.target == "-":
                sys.stdout.write(line)
                sys.stdout.flush()
                return
            handle = self._open()
            handle.write(line)
            handle.flush()  # in the kernel's hands per line, as closing the file after each did
        if outcome in _DONE:
            waiter = _Flush()
            self._flushes.join(waiter)  # the line is written: any flush that starts now covers it
            if waiter.error is not None:
                raise waiter.error

    def _flush_group(self, group: list[_Flush]) -> None:
        """One flush for every record of ``group`` (their lines were written before they joined)."""
        error: OSError | None = None
        descriptor: int | None = None
        try:
            with self._lock:  # dup may fail too (EMFILE): every waiter of the group must still be told
                descriptor = os.dup(self._handle.fileno()) if self._handle is not None else None
            if descriptor is not None:
                durable.fsync(descriptor)  # outside the lock: lines keep being written meanwhile
        except OSError as failed:
            error = failed
        finally:
            if descriptor is not None:
                os.close(descriptor)
        for waiter in group:
            waiter.error = error
            waiter.done = True
            waiter.wakeup.set()

    def _open(self) -> TextIO:
        """The file kept open between lines (opening it per line cost a tenth of a write's time), and
        opened again when it was moved or removed (log rotation), so lines always land at the path."""
        try:
            status = os.stat(self.target)
            current: tuple[int, int] | None = (status.st_dev, status.st_ino)
        except FileNotFoundError:
            current = None
        if self._handle is None or current is None or current != self._inode:
            if self._handle is not None:
                durable.fsync(self._handle.fileno())  # its last lines, before a flush of the new file
                self._handle.close()
            self._handle = open(self.target, "a", encoding="utf-8")  # noqa: SIM115 - kept open
            status = os.fstat(self._handle.fileno())
            self._inode = (status.st_dev, status.st_ino)
            if current is None:  # created: its name, before any line in it counts as flushed
                durable.sync_folders([Path(self.target).parent])
        return self._handle
