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
otherwise inherit its predecessor's operations. Every operation is queued with a marker, the
service's and ``tenantctl``'s alike (``tenancy.automation.incarnation``); records from before
operations carried one belong to no incarnation: only platform-admins see them.
"""

from __future__ import annotations

from collections.abc import Collection

from tenancy.automation.contract import Operation, StackRef
from tenancy.automation.incarnation import incarnation_marker
from tenancy.service.core.tenants_repo import TenantRepository
from tenancy.spec.tree import ENVIRONMENTS

# A key that does not match may belong to a tenant another replica created a moment ago.
_RECHECK_AFTER_SECONDS = 1.0


def incarnation_of(repository: TenantRepository, stack: StackRef) -> str:
    """The marker of the stack's current (or, once its file is deleted, its last) incarnation, for
    the operations queued for it; ``<env>:uncommitted`` when its file never existed."""
    creation = repository.creation(stack.environment, stack.tenant)
    return incarnation_marker(stack.environment, creation.sha if creation is not None else None)


class TenantIncarnations:
    def __init__(self, repository: TenantRepository, *, environments: Collection[str] = ENVIRONMENTS) -> None:
        self._repository = repository
        # The environments the service manages: a tenant of another one (its file is in the same
        # repository) is not a tenant here, so it gets no API key and its keys work for nothing here.
        self._environments = tuple(environments)

    def markers(self, tenant: str) -> frozenset[str]:
        """The current incarnation of each served environment's file of ``tenant`` (empty: no file)."""
        self._repository.refresh()
        found = set()
        for environment in self._environments:
            if not self._repository.exists(environment, tenant):  # the commit, not the working copy
                continue
            creation = self._repository.creation(environment, tenant)
            if creation is not None:
                found.add(f"{environment}:{creation.sha}")
        return frozenset(found)

    def live_environments(self, tenant: str, bound_to: frozenset[str]) -> frozenset[str]:
        """The environments where ``tenant`` is still an incarnation a key bound to ``bound_to`` was
        made for (empty: none, the key works nowhere). A tenant deleted in one environment and made
        again there is someone else's there, even while the other environment's file lives on."""
        if not bound_to:
            return frozenset()  # a key made before keys were bound to incarnations: refused, make a new one
        live = bound_to & self.markers(tenant)
        if not live:
            self._repository.refresh(max_age=_RECHECK_AFTER_SECONDS)
            live = bound_to & self.markers(tenant)
        return frozenset(marker.partition(":")[0] for marker in live)

    def of(self, stack: StackRef) -> str:
        return incarnation_of(self._repository, stack)

    def current(self, operations: list[Operation], stack: StackRef) -> list[Operation]:
        """``operations`` of ``stack`` that belong to its current (or last) incarnation."""
        creation = self._repository.creation(stack.environment, stack.tenant)
        if creation is None:
            return operations  # no file ever: no earlier incarnation to hide
        marker = incarnation_marker(stack.environment, creation.sha)
        return [operation for operation in operations if operation.incarnation == marker]
