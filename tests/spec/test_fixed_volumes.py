"""Volume sizes are fixed once a tenant's services exist; changing them is refused with what to pin."""

from __future__ import annotations

from typing import Any

from tenancy.spec.changes import fixed_volume_issues
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
