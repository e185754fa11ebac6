"""A tenant's incarnation: the life of its file, from the commit that created it to the one that
deletes it. A name can be reused (team A deletes ``search``; later team B creates it), and nothing of
an earlier incarnation may reach the new owner:

- an API key is bound to the incarnations its tenant had when the key was made (one marker per
  environment, ``<env>:<creating commit>``) and authenticates only while one of them still exists;
- an operation carries the marker of the incarnation it was queued for, and a tenant's roles see
  only the operations of its current incarnation (platform-admins see all).

Markers come from git, so every replica computes the same ones, and a tenant deleted and recreated
through pull requests is a new incarnation too. Ownership never rests on time: git dates commits in
whole seconds and clocks disagree, so a tenant deleted and re-created within one second would
otherwise inherit its predecessor's operations. Only operations queued by something that does not
know incarnations (``tenantctl`` on a queue the service shares) fall back to time, and then only
from the second after the creating commit's on.
"""

from __future__ import annotations

import time

from tenancy.automation.contract import Operation, StackRef
from tenancy.service.core.tenants_repo import TenantRepository
from tenancy.spec.tree import ENVIRONMENTS

# A creating commit dated further in the future than this came from a machine with a wrong clock
# (a pull request's commit keeps its author's clock): its time cannot mark where operations begin.
_FUTURE_TOLERANCE_SECONDS = 300.0
# A key that does not match may belong to a tenant another replica created a moment ago.
_RECHECK_AFTER_SECONDS = 1.0


def incarnation_of(repository: TenantRepository, stack: StackRef) -> str | None:
    """The marker of the stack's current (or, once its file is deleted, its last) incarnation, for
    the operations queued for it; None when its file never existed."""
    creation = repository.creation(stack.environment, stack.tenant)
    return f"{stack.environment}:{creation.sha}" if creation is not None else None


class TenantIncarnations:
    def __init__(self, repository: TenantRepository) -> None:
        self._repository = repository

    def markers(self, tenant: str) -> frozenset[str]:
        """The current incarnation of each environment's file of ``tenant`` (empty: no file)."""
        self._repository.refresh()
        found = set()
        for environment in ENVIRONMENTS:
            if not self._repository.exists(environment, tenant):  # the commit, not the working copy
                continue
            creation = self._repository.creation(environment, tenant)
            if creation is not None:
                found.add(f"{environment}:{creation.sha}")
        return frozenset(found)

    def admits(self, tenant: str, bound_to: frozenset[str]) -> bool:
        """Whether a key bound to ``bound_to`` still belongs to a live incarnation of ``tenant``."""
        if not bound_to:
            return False  # a key made before keys were bound to incarnations: refused, make a new one
        if bound_to & self.markers(tenant):
            return True
        self._repository.refresh(max_age=_RECHECK_AFTER_SECONDS)
        return bool(bound_to & self.markers(tenant))

    def of(self, stack: StackRef) -> str | None:
        return incarnation_of(self._repository, stack)

    def current(self, operations: list[Operation], stack: StackRef) -> list[Operation]:
        """``operations`` of ``stack`` that belong to its current (or last) incarnation."""
        creation = self._repository.creation(stack.environment, stack.tenant)
        if creation is None:
            return operations  # no file ever: no earlier incarnation to hide
        marker = f"{stack.environment}:{creation.sha}"
        # Unmarked operations: only from the whole second after the creating commit's (an operation of
        # that same second may precede it), and never when that commit's clock ran far ahead.
        trusted_time = creation.time <= time.time() + _FUTURE_TOLERANCE_SECONDS
        return [
            operation
            for operation in operations
            if operation.incarnation == marker
            or (operation.incarnation is None and trusted_time and operation.created_at >= creation.time + 1)
        ]
