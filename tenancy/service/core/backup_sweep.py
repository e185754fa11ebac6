"""Deleting the backups deleted tenants left once their retention is over (``tenancy.dataops.retired``).

A live tenant's backup job prunes its own backups; a deleted tenant has no job any more, so a worker
replica does it for every name: at start and then every ``backup_sweep_seconds``, in a daemon thread.
Deleting is idempotent, so replicas sweeping at once only repeat each other; a failed sweep is logged
and the next one retries. Until a sweep runs, an expired backup is already refused (410).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from tenancy.automation.data_operations import sweep_retired_backups
from tenancy.spec.tree import ENVIRONMENTS

log = logging.getLogger("tenancy.service")


class RetiredBackupSweeper:
    def __init__(self, data: Any, *, interval: float) -> None:
        self.data = data  # tenancy.automation.data_operations.TenantData
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> list[str]:
        deleted = sweep_retired_backups(self.data, tuple(ENVIRONMENTS), now=datetime.now(UTC))
        if deleted:
            log.info("deleted %d backup(s) of deleted tenants past their retention", len(deleted))
        return deleted

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="retired-backup-sweep", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sweep()
            except Exception as error:
                log.error("the sweep of deleted tenants' backups failed: %s", type(error).__name__)
            self._stop.wait(self.interval)
