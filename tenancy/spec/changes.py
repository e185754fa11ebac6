"""Changes a tenant spec may not make once its services exist.

Qdrant's and the vCluster's volumes live in StatefulSet volumeClaimTemplates, which Kubernetes never
lets an update change: a Helm upgrade that tries fails, and the tenant's stack stays broken until
someone migrates the volumes by hand. Such changes are refused before anything runs, with the value to
pin to keep the volumes as they are.
"""

from __future__ import annotations

from tenancy.spec.errors import SpecIssue
from tenancy.spec.tenant import Tenant


def fixed_volume_issues(before: Tenant, after: Tenant, *, file: str) -> list[SpecIssue]:
    """Why ``after`` cannot be applied over ``before`` (empty when it can)."""
    issues: list[SpecIssue] = []

    def keep(field: str, old: object, new: object) -> None:
        if old == new:
            return
        shown_old = "the platform default" if old is None else old
        shown_new = "the platform default" if new is None else new
        plan = (
            f" (the plan changed from {before.plan.value} to {after.plan.value}, and with it the default)"
            if before.plan != after.plan
            else ""
        )
        pin = f"set {field}: {old} to keep the current volumes" if old is not None else f"remove {field}"
        issues.append(
            SpecIssue(
                file,
                field,
                f"would change from {shown_old} to {shown_new}{plan}, but volumes are fixed once created "
                f"(StatefulSet volumeClaimTemplates cannot change); {pin}, or migrate the data to a new "
                "tenant",
            )
        )

    if before.qdrant is not None and after.qdrant is not None:
        old, new = before.qdrant, after.qdrant
        keep("qdrant.storage.size", old.storage_size, new.storage_size)
        keep("qdrant.storage.storageClass", old.storage_class, new.storage_class)
        keep("qdrant.snapshots.enabled", old.snapshots, new.snapshots)
        if old.snapshots and new.snapshots:
            keep("qdrant.snapshots.size", old.snapshot_size, new.snapshot_size)
            keep("qdrant.snapshots.storageClass", old.snapshot_storage_class, new.snapshot_storage_class)
    return issues
