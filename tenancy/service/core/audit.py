"""The audit log: one JSON line per call that changes or reveals something, ready for Loki.

Fields: time, actor, tenant, environment, action, outcome, plus request id and operation id when there
is one. The writer takes only these named values (never request bodies or engine outputs), which
is how secrets stay out of it: a revealed key is recorded as "revealed", never as its value.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TextIO

Outcome = Literal["accepted", "succeeded", "denied", "refused", "invalid", "failed"]


class AuditLog:
    def __init__(self, target: str) -> None:
        """``target``: a file path (appended to), or '-' for standard output."""
        self.target = target
        self._lock = threading.Lock()
        self._handle: TextIO | None = None
        self._inode: tuple[int, int] | None = None
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
            else:
                handle = self._open()
                handle.write(line)
                handle.flush()  # in the kernel's hands per line, as closing the file after each did

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
                self._handle.close()
            self._handle = open(self.target, "a", encoding="utf-8")  # noqa: SIM115 - kept open
            status = os.fstat(self._handle.fileno())
            self._inode = (status.st_dev, status.st_ino)
        return self._handle
