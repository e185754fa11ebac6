"""Deleting the backups deleted tenants left once their retention is over (``tenancy.dataops.retired``).

A live tenant's backup job prunes its own backups; a deleted tenant has no job any more, so a worker
replica does it for every name: at start and then every ``backup_sweep_seconds``, in a daemon thread.
Deleting is idempotent, so replicas sweeping at once only repeat each other; a failed sweep is logged
and the next one retries. Until a sweep runs, an expired backup is already refused (410).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from tenancy.automation.data_operations import sweep_retired_backups
from tenancy.service.core.periodic import Periodic
from tenancy.spec.tree import ENVIRONMENTS

log = logging.getLogger("tenancy.service")


class RetiredBackupSweeper:
    def __init__(self, data: Any, *, interval: float, environments: Collection[str] = ENVIRONMENTS) -> None:
        self.data = data  # tenancy.automation.data_operations.TenantData
        self.environments = tuple(environments)  # the service's own: the bucket is its platform's
        self._periodic = Periodic(
            self.sweep,
            interval=interval,
            name="retired-backup-sweep",
            what="the sweep of deleted tenants' backups",
        )

    def start(self) -> None:
        self._periodic.start()

    def stop(self) -> None:
        self._periodic.stop()

    def sweep(self) -> list[str]:
        deleted = sweep_retired_backups(self.data, self.environments, now=datetime.now(UTC))
        if deleted:
            log.info("deleted %d backup(s) of deleted tenants past their retention", len(deleted))
        return deleted
