"""Where a tenant's vCluster keeps its workloads' service-account tokens.

The syncer mints a token in the virtual cluster for every pod it syncs to the tenant namespace (a
10-year token bound to the virtual pod; loft-sh/vcluster v0.36.1, pods/translate/translator.go). By
default it writes that token into an annotation of the host pod, which anyone who may read pods there
reads too: the tenant-viewer Role may, so a viewer could act as any vCluster workload (and as the
vCluster's CoreDNS) against the vCluster's API at ``<tenant>.vc.<domain>``. Kept in Secrets instead,
only who may read the namespace's Secrets (tenant-admins) can.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tenancy.render.runtime import StackCapture
from tenancy.spec.plans import PLANS, Plan
from tests.tenant.test_vcluster_api import vcluster_values

Run = Callable[[str], StackCapture]
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
QUOTA = "kubernetes:core/v1:ResourceQuota"


def _allows(role: dict[str, Any], resource: str, verb: str) -> bool:
    return any(
        "" in rule.get("apiGroups", []) and resource in rule["resources"] and verb in rule["verbs"]
        for rule in role["rules"]
    )


def _inputs(capture: StackCapture, kind: str, name: str) -> dict[str, Any]:
    [found] = [r.inputs for r in capture.of_type(kind) if r.inputs["metadata"]["name"] == name]
    return found


def test_a_tenant_viewer_cannot_take_the_tokens_of_the_vclusters_workloads(run_stack: Run) -> None:
    capture = run_stack("prod.acme")
    viewer = _inputs(capture, ROLE, "tenant-viewer")
    # What a viewer may read in the namespace: the synced pods (annotations included), not Secrets.
    assert _allows(viewer, "pods", "get") and _allows(viewer, "pods", "list")
    assert not any(_allows(viewer, "secrets", verb) for verb in ("get", "list", "watch"))
    # So the syncer must keep the tokens in Secrets, not in the pods' annotations (its default).
    assert vcluster_values(capture)["sync"]["toHost"]["pods"]["useSecretsForSATokens"] is True


def test_the_token_secrets_leave_the_tenant_its_plans_count_of_secrets(run_stack: Run) -> None:
    """One Secret per synced pod: the quota grows by the plan's pods, where there is a vCluster."""
    with_vcluster, without = run_stack("prod.acme"), run_stack("prod.globex")
    medium, large = PLANS[Plan.medium].quota, PLANS[Plan.large].quota
    quota = _inputs(with_vcluster, QUOTA, "tenant-quota")["spec"]["hard"]
    assert quota["secrets"] == str(medium.secrets + medium.pods)
    assert quota["pods"] == str(medium.pods)
    assert _inputs(without, QUOTA, "tenant-quota")["spec"]["hard"]["secrets"] == str(large.secrets)
