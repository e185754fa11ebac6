"""Changes a tenant spec may not make once its services exist.

Qdrant's and the vCluster's volumes live in StatefulSet volumeClaimTemplates, which Kubernetes never
lets an update change: a Helm upgrade that tries fails, and the tenant's stack stays broken until
someone migrates the volumes by hand. Such changes are refused before anything runs, with the value to
pin to keep the volumes as they are. That covers each volume's size and its StorageClass: a volume that
takes the platform's default class (``platform:storageClass``) was created with the default of that
time, so a new platform default changes it just as an edited tenant field would.

Removing Qdrant nodes is allowed: the worker drains the departing peers first
(``tenancy.automation.scaling``). What stays refused is in ``scale_down_issues``.
"""

from __future__ import annotations

from collections.abc import Collection

from tenancy.spec.errors import SpecIssue
from tenancy.spec.quantity import parse_quantity
from tenancy.spec.tenant import Tenant


def refused_change_issues(
    before: Tenant,
    after: Tenant,
    *,
    file: str,
    default_class_before: str | None = None,
    default_class_after: str | None = None,
    expandable_classes: Collection[str] = (),
) -> list[SpecIssue]:
    """Every reason ``after`` cannot be applied over ``before`` (empty when it can).

    ``default_class_before``/``after``: ``platform:storageClass`` when ``before`` was applied and now;
    None where unknown (a class then counts as changed whenever the spec's own field changes).
    ``expandable_classes``: ``platform:expandableStorageClasses``, the classes whose Qdrant volumes
    may grow (none when unknown: every size change is refused).
    """
    return (
        fixed_volume_issues(
            before,
            after,
            file=file,
            default_class_before=default_class_before,
            default_class_after=default_class_after,
            expandable_classes=expandable_classes,
        )
        + scale_down_issues(before, after, file=file)
        + key_generation_issues(before, after, file=file)
        + downgrade_issues(before, after, file=file)
    )


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.removeprefix("v").split("."))


def downgrade_issues(before: Tenant, after: Tenant, *, file: str) -> list[SpecIssue]:
    """Versions that would go back. Qdrant does not promise to read storage a newer version wrote, and
    Kubernetes never supports taking a control plane (a vCluster's, with its data store) back a minor
    version: either could leave the tenant's data unreadable. Going back means a new tenant (or a new
    vCluster), with the data restored from a backup."""
    versions: list[tuple[str, str, str, str]] = []  # field, old, new, why it cannot go back
    if before.qdrant is not None and after.qdrant is not None:
        old, new = before.qdrant.version, after.qdrant.version
        why = "Qdrant does not read storage a newer version wrote"
        versions.append(
            (
                "qdrant.version",
                old,
                new,
                f"{why}: keep {old} (to go back, restore a backup into a new tenant)",
            )
        )
    if before.vcluster is not None and after.vcluster is not None:
        old, new = before.vcluster.kubernetes_version, after.vcluster.kubernetes_version
        why = (
            "Kubernetes never supports taking a control plane back a version (its data store was written "
            f"by {old})"
        )
        versions.append(("vcluster.kubernetesVersion", old, new, f"{why}: keep {old}"))
    return [
        SpecIssue(file, field, f"would go back from {old} to {new}; {reason}")
        for field, old, new, reason in versions
        if _release(new) < _release(old)
    ]


def key_generation_issues(before: Tenant, after: Tenant, *, file: str) -> list[SpecIssue]:
    """A key generation that goes back or skips one: either would mint keys no client has, with no
    grace period for the keys in use (``qdrant.keyRotation`` is written by a rotation, one step at a
    time; a file or request that drops it would otherwise send the tenant back to generation 0)."""
    if before.qdrant is None or after.qdrant is None:
        return []
    old, new = before.qdrant.key_generation, after.qdrant.key_generation
    if new == old and after.qdrant.key_previous_accepted and not before.qdrant.key_previous_accepted:
        return [
            SpecIssue(
                file,
                "qdrant.keyRotation.revokedAt",
                f"generation {old - 1}'s keys are revoked and stay revoked; keep revokedAt as it is and "
                "rotate again for new keys",
            )
        ]
    if new == old or new == old + 1:
        return []
    return [
        SpecIssue(
            file,
            "qdrant.keyRotation",
            f"would move the Qdrant keys from generation {old} to {new}, replacing the keys in use without "
            f"a grace period; keep qdrant.keyRotation as it is (generation {old}) and rotate with "
            "tenantctl rotate-keys, one generation at a time",
        )
    ]


def scale_down_issues(before: Tenant, after: Tenant, *, file: str) -> list[SpecIssue]:
    """What a decrease of ``qdrant.replicas`` may not do, though the worker drains the nodes it removes.

    A drain runs before the update that shrinks the StatefulSet; it cannot also follow a volume
    change in the same update (the volumes of the nodes that stay are the ones it moves shards to),
    and it refuses, once it can read them, to go below a collection's replication factor.
    """
    if before.qdrant is None or after.qdrant is None or after.qdrant.replicas >= before.qdrant.replicas:
        return []
    old, new = before.qdrant.replicas, after.qdrant.replicas
    volumes_changed = (
        old_volume != new_volume
        for old_volume, new_volume in (
            (before.qdrant.storage_size, after.qdrant.storage_size),
            (before.qdrant.snapshots, after.qdrant.snapshots),
            (before.qdrant.snapshot_size, after.qdrant.snapshot_size),
        )
    )
    if any(volumes_changed):
        return [
            SpecIssue(
                file,
                "qdrant.replicas",
                f"would shrink from {old} to {new} in the same change as the Qdrant volumes; scale down "
                "first (keep the volume fields as they are), then change the volumes in a second change",
            )
        ]
    return []


def fixed_volume_issues(
    before: Tenant,
    after: Tenant,
    *,
    file: str,
    default_class_before: str | None = None,
    default_class_after: str | None = None,
    expandable_classes: Collection[str] = (),
) -> list[SpecIssue]:
    """Why ``after`` cannot be applied over ``before`` without changing an existing volume.

    A Qdrant volume may grow where its StorageClass is in ``expandable_classes`` (the worker resizes
    the claims and re-creates the StatefulSet object around its pods); it never shrinks.
    """
    issues: list[SpecIssue] = []

    def refuse(field: str, change: str, pin: str) -> None:
        issues.append(
            SpecIssue(
                file,
                field,
                f"{change}, but volumes are fixed once created (StatefulSet volumeClaimTemplates cannot "
                f"change); {pin}, or migrate the data to a new tenant",
            )
        )

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
        refuse(field, f"would change from {shown_old} to {shown_new}{plan}", pin)

    def keep_class(field: str, old: str | None, new: str | None) -> None:
        """Compare the classes the volumes get, the platform default filled in where it is known."""
        if default_class_before is None or default_class_after is None:
            keep(field, old, new)
            return
        old_class, new_class = old or default_class_before, new or default_class_after
        if old_class == new_class:
            return

        def shown(explicit: str | None, effective: str, when: str) -> str:
            return effective if explicit else f"{effective} (the platform default {when})"

        refuse(
            field,
            f"would change the volumes' StorageClass from "
            f"{shown(old, old_class, 'when they were created')} to {shown(new, new_class, 'now')}",
            f"set {field}: {old_class} to keep the current volumes",
        )

    def keep_or_grow(field: str, old: str, new: str, explicit_class: str | None) -> None:
        """A size may grow on an expandable class; any other change is refused."""
        if parse_quantity(new) <= parse_quantity(old):
            if parse_quantity(new) < parse_quantity(old):
                issues.append(
                    SpecIssue(
                        file,
                        field,
                        f"would shrink from {old} to {new}, and a volume never shrinks; set {field}: {old}, "
                        "or migrate the data to a new tenant",
                    )
                )
            return
        volume_class = explicit_class or default_class_after
        if volume_class is not None and volume_class in expandable_classes:
            return
        shown = f"StorageClass {volume_class}" if volume_class else "the platform's default StorageClass"
        plan = (
            f" (the plan changed from {before.plan.value} to {after.plan.value}, and with it the default)"
            if before.plan != after.plan
            else ""
        )
        issues.append(
            SpecIssue(
                file,
                field,
                f"would grow from {old} to {new}{plan}, but {shown} is not listed as allowing volume "
                "expansion (platform:expandableStorageClasses names the classes with allowVolumeExpansion: "
                f"true); set {field}: {old} to keep the current volumes, or ask the platform team to list "
                "the class if it allows expansion",
            )
        )

    if before.qdrant is not None and after.qdrant is not None:
        old, new = before.qdrant, after.qdrant
        keep_or_grow("qdrant.storage.size", old.storage_size, new.storage_size, new.storage_class)
        keep_class("qdrant.storage.storageClass", old.storage_class, new.storage_class)
        keep("qdrant.snapshots.enabled", old.snapshots, new.snapshots)
        if old.snapshots and new.snapshots:
            keep_or_grow(
                "qdrant.snapshots.size", old.snapshot_size, new.snapshot_size, new.snapshot_storage_class
            )
            keep_class(
                "qdrant.snapshots.storageClass", old.snapshot_storage_class, new.snapshot_storage_class
            )
    if before.vcluster is not None and after.vcluster is not None:
        keep_class("vcluster.storageClass", before.vcluster.storage_class, after.vcluster.storage_class)
    return issues
