"""Volume sizes are fixed once a tenant's services exist; changing them is refused with what to pin."""

from __future__ import annotations

from typing import Any

from tenancy.spec.changes import fixed_volume_issues, refused_change_issues
from tenancy.spec.tenant import Tenant, parse_tenant, resolve


def tenant(**fields: Any) -> Tenant:
    doc = {"name": "acme", "owners": ["a@acme.example"], "plan": "small", **fields}
    return resolve(parse_tenant(doc, file="acme.yaml"), "prod")


def test_moving_to_a_larger_plan_would_grow_default_volumes_and_is_refused_with_the_pin() -> None:
    before = tenant(qdrant={"enabled": True})
    after = tenant(plan="medium", qdrant={"enabled": True})
    [size, snapshots] = fixed_volume_issues(before, after, file="acme.yaml")
    assert size.field == "qdrant.storage.size"
    assert "set qdrant.storage.size: 10Gi to keep the current volumes" in size.reason
    assert "plan changed from small to medium" in size.reason
    assert snapshots.field == "qdrant.snapshots.size"


def test_a_plan_change_with_pinned_sizes_is_accepted() -> None:
    pinned = {"enabled": True, "storage": {"size": "10Gi"}, "snapshots": {"size": "5Gi"}}
    assert fixed_volume_issues(tenant(qdrant=pinned), tenant(plan="medium", qdrant=pinned), file="a") == []


def test_toggling_snapshot_volumes_is_refused() -> None:
    before = tenant(qdrant={"enabled": True})
    after = tenant(qdrant={"enabled": True, "snapshots": {"enabled": False}})
    [issue] = fixed_volume_issues(before, after, file="acme.yaml")
    assert issue.field == "qdrant.snapshots.enabled"


def test_changing_what_volumes_do_not_hold_is_accepted() -> None:
    before = tenant(qdrant={"enabled": True})
    after = tenant(
        qdrant={"enabled": True, "resources": {"cpu": "1", "memory": "2Gi"}}, vcluster={"enabled": True}
    )
    assert fixed_volume_issues(before, after, file="acme.yaml") == []


def test_new_or_removed_services_have_no_volumes_to_keep() -> None:
    assert fixed_volume_issues(tenant(), tenant(qdrant={"enabled": True}), file="a") == []
    assert fixed_volume_issues(tenant(qdrant={"enabled": True}), tenant(), file="a") == []


def test_a_new_platform_default_class_under_default_volumes_is_refused_naming_the_class_to_pin() -> None:
    before = tenant(qdrant={"enabled": True}, vcluster={"enabled": True})
    [data, snapshots, control_plane] = refused_change_issues(
        before, before, file="acme.yaml", default_class_before="standard", default_class_after="fast-ssd"
    )
    assert data.field == "qdrant.storage.storageClass"
    assert "from standard (the platform default when they were created) to fast-ssd" in data.reason
    assert "set qdrant.storage.storageClass: standard to keep the current volumes" in data.reason
    assert snapshots.field == "qdrant.snapshots.storageClass"
    assert control_plane.field == "vcluster.storageClass"


def test_pinning_the_old_class_or_naming_the_default_explicitly_is_accepted() -> None:
    before = tenant(qdrant={"enabled": True}, vcluster={"enabled": True})
    pinned = tenant(
        qdrant={"enabled": True, "storage": {"storageClass": "standard"}},
        vcluster={"enabled": True, "storageClass": "standard"},
    )
    assert (
        refused_change_issues(
            before, pinned, file="a", default_class_before="standard", default_class_after="fast-ssd"
        )
        == []
    )
    # Writing down the class the volumes already have changes nothing.
    assert (
        refused_change_issues(
            before, pinned, file="a", default_class_before="standard", default_class_after="standard"
        )
        == []
    )


def test_an_explicit_class_change_is_refused_whatever_the_default() -> None:
    before = tenant(qdrant={"enabled": True, "storage": {"storageClass": "standard"}})
    after = tenant(qdrant={"enabled": True, "storage": {"storageClass": "fast-ssd"}})
    fields = {i.field for i in refused_change_issues(before, after, file="a")}
    assert fields == {"qdrant.storage.storageClass", "qdrant.snapshots.storageClass"}
    fields = {
        i.field
        for i in refused_change_issues(
            before, after, file="a", default_class_before="x", default_class_after="x"
        )
    }
    assert fields == {"qdrant.storage.storageClass", "qdrant.snapshots.storageClass"}


def test_removing_qdrant_nodes_is_allowed_since_the_worker_drains_them_first() -> None:
    before = tenant(plan="medium", qdrant={"enabled": True, "replicas": 3})
    after = tenant(plan="medium", qdrant={"enabled": True, "replicas": 2})
    assert refused_change_issues(before, after, file="acme.yaml") == []
    assert refused_change_issues(after, before, file="acme.yaml") == []


def test_a_scale_down_that_also_changes_the_volumes_is_refused() -> None:
    before = tenant(plan="medium", qdrant={"enabled": True, "replicas": 3, "storage": {"size": "10Gi"}})
    after = tenant(plan="medium", qdrant={"enabled": True, "replicas": 2, "storage": {"size": "20Gi"}})
    issues = {i.field: i.reason for i in refused_change_issues(before, after, file="acme.yaml")}
    assert "would shrink from 3 to 2 in the same change as the Qdrant volumes" in issues["qdrant.replicas"]
    assert "scale down first" in issues["qdrant.replicas"]


def test_a_plan_change_that_lowers_the_default_replicas_is_allowed_with_the_volumes_pinned() -> None:
    pinned = {"enabled": True, "storage": {"size": "10Gi"}, "snapshots": {"size": "5Gi"}}
    before = tenant(
        plan="large", qdrant={**pinned, "storage": {"size": "200Gi"}, "snapshots": {"size": "100Gi"}}
    )
    after = tenant(
        plan="medium", qdrant={**pinned, "storage": {"size": "200Gi"}, "snapshots": {"size": "100Gi"}}
    )
    assert refused_change_issues(before, after, file="acme.yaml") == []


def test_a_volume_grows_only_on_a_class_listed_as_expandable() -> None:
    before = tenant(
        plan="medium", qdrant={"enabled": True, "storage": {"size": "10Gi", "storageClass": "ssd"}}
    )
    after = tenant(
        plan="medium", qdrant={"enabled": True, "storage": {"size": "20Gi", "storageClass": "ssd"}}
    )
    assert refused_change_issues(before, after, file="a", expandable_classes={"ssd"}) == []
    [issue] = refused_change_issues(before, after, file="a", expandable_classes={"standard"})
    assert issue.field == "qdrant.storage.size"
    assert "StorageClass ssd is not listed as allowing volume expansion" in issue.reason
    assert "set qdrant.storage.size: 10Gi" in issue.reason
    [shrink] = refused_change_issues(after, before, file="a", expandable_classes={"ssd"})
    assert "a volume never shrinks" in shrink.reason


def test_a_volume_on_the_default_class_grows_only_when_the_default_is_known_expandable() -> None:
    before = tenant(plan="medium", qdrant={"enabled": True, "storage": {"size": "10Gi"}})
    after = tenant(plan="medium", qdrant={"enabled": True, "storage": {"size": "20Gi"}})
    [unknown] = refused_change_issues(before, after, file="a", expandable_classes={"standard"})
    assert "the platform's default StorageClass is not listed" in unknown.reason
    assert (
        refused_change_issues(
            before,
            after,
            file="a",
            default_class_before="standard",
            default_class_after="standard",
            expandable_classes={"standard"},
        )
        == []
    )


def test_a_version_that_goes_back_is_refused_and_one_that_goes_forward_is_not() -> None:
    """Found by an outside review: Qdrant v1.19.0 -> v1.18.2 and a vCluster's Kubernetes 1.34 -> 1.32
    passed every check, though neither version promises to read what the newer one wrote."""
    newer = tenant(
        qdrant={"enabled": True, "version": "v1.19.0"},
        vcluster={"enabled": True, "kubernetesVersion": "1.34"},
    )
    older = tenant(
        qdrant={"enabled": True, "version": "v1.18.2"},
        vcluster={"enabled": True, "kubernetesVersion": "1.32"},
    )
    qdrant, vcluster = refused_change_issues(newer, older, file="acme.yaml")
    assert qdrant.field == "qdrant.version" and "would go back from v1.19.0 to v1.18.2" in qdrant.reason
    assert "keep v1.19.0" in qdrant.reason
    assert vcluster.field == "vcluster.kubernetesVersion" and "keep 1.34" in vcluster.reason
    assert refused_change_issues(older, newer, file="acme.yaml") == []  # upgrades go on
    # Only a version that goes back: one that newly appears or goes away with its service is not one.
    assert refused_change_issues(tenant(), older, file="acme.yaml") == []
