"""The admission policies that keep the backup ServiceAccount to the platform's CronJob, as the platform
stack declares them, their CEL rules evaluated with cel-python the way the API server would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tenancy.builders import backup as build
from tenancy.render.runtime import StackCapture
from tests.conftest import captured_stack

Run = Callable[[str], StackCapture]
TENANT_USER = {"username": "oidc:alice@acme.example", "groups": ["oidc:/tenants/acme/admins"]}
WORKER = {"username": "system:serviceaccount:tenancy-system:selfservice-worker", "groups": []}
JOB_CONTROLLER = {"username": build.JOB_CONTROLLER, "groups": []}
CRONJOB_CONTROLLER = {"username": build.CRONJOB_CONTROLLER, "groups": []}


@pytest.fixture(scope="module")
def policies() -> dict[str, dict[str, Any]]:
    capture = captured_stack("prod")
    declared = {
        r.inputs["metadata"]["name"]: r.inputs
        for r in capture.kubernetes_objects()
        if r.kind == "ValidatingAdmissionPolicy"
    }
    bindings = {
        r.inputs["metadata"]["name"]: r.inputs
        for r in capture.kubernetes_objects()
        if r.kind == "ValidatingAdmissionPolicyBinding"
    }
    for name in (build.RUNS_ONLY_FROM_CRONJOB, build.OWNED_BY_PLATFORM):
        assert bindings[name]["spec"] == {"policyName": name, "validationActions": ["Deny"]}
        assert declared[name]["spec"]["failurePolicy"] == "Fail"
    return declared


def _cel(expression: str, request: dict[str, Any], obj: Any, old: Any, *, platform: bool) -> bool:
    import celpy
    from celpy import celtypes

    # The API server's authorizer, answering "may this user create namespaces?".
    def group(authorizer: Any, name: Any) -> Any:
        return authorizer

    def resource(authorizer: Any, name: Any) -> Any:
        return celtypes.MapType({**authorizer, celtypes.StringType("resource"): name})

    def check(authorizer: Any, verb: Any) -> Any:
        return celtypes.MapType({**authorizer, celtypes.StringType("verb"): verb})

    def allowed(decision: Any) -> Any:
        asked = (decision[celtypes.StringType("resource")], decision[celtypes.StringType("verb")])
        return celtypes.BoolType(
            bool(decision[celtypes.StringType("platform")]) and asked == ("namespaces", "create")
        )

    environment = celpy.Environment()
    program = environment.program(
        environment.compile(expression),
        functions={"group": group, "resource": resource, "check": check, "allowed": allowed},
    )
    activation = {
        "request": celpy.json_to_cel(request),
        "object": celpy.json_to_cel(obj),
        "oldObject": celpy.json_to_cel(old),
        "authorizer": celpy.json_to_cel({"platform": platform}),
    }
    return bool(program.evaluate(activation))


def admitted(
    policy: dict[str, Any],
    *,
    user: dict[str, Any],
    resource: str,
    operation: str,
    obj: Any = None,
    old: Any = None,
    name: str = "",
    namespace: str = "tenant-acme",
    sub_resource: str = "",
    platform: bool = False,
) -> bool:
    spec = policy["spec"]
    full = f"{resource}/{sub_resource}" if sub_resource else resource
    assert any(
        full in rule["resources"] and operation in rule["operations"]
        for rule in spec["matchConstraints"]["resourceRules"]
    ), f"{operation} {full} is not matched"
    request = {
        "namespace": namespace,
        "name": name or (obj or {}).get("metadata", {}).get("name", ""),
        "operation": operation,
        "subResource": sub_resource,
        "resource": {"resource": resource},
        "userInfo": user,
    }
    for condition in spec["matchConditions"]:
        if not _cel(condition["expression"], request, obj, old, platform=platform):
            return True  # not this policy's business
    return all(_cel(v["expression"], request, obj, old, platform=platform) for v in spec["validations"])


def pod(
    *, account: str = "default", labels: dict[str, str] | None = None, owner: tuple[str, str] | None = None
):
    metadata: dict[str, Any] = {"name": "p", "labels": labels or {"app": "x"}}
    if owner:
        metadata["ownerReferences"] = [
            {"apiVersion": "batch/v1", "kind": owner[0], "name": owner[1], "controller": True}
        ]
    return {"metadata": metadata, "spec": {"serviceAccountName": account, "containers": [{"name": "c"}]}}


def job(*, account: str = "default", owner: tuple[str, str] | None = None) -> dict[str, Any]:
    template = pod(account=account)
    metadata: dict[str, Any] = {"name": "qdrant-backup-29420000"}
    if owner:
        metadata["ownerReferences"] = [
            {"apiVersion": "batch/v1", "kind": owner[0], "name": owner[1], "controller": True}
        ]
    return {"metadata": metadata, "spec": {"template": template}}


def cronjob(name: str, *, account: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"jobTemplate": {"spec": {"template": pod(account=account)}}}}


BACKUP = build.SERVICE_ACCOUNT
FROM_CRONJOB = ("Job", "qdrant-backup-29420000")


@pytest.mark.parametrize(
    ("user", "obj", "allowed"),
    [
        (JOB_CONTROLLER, pod(account=BACKUP, owner=FROM_CRONJOB), True),
        ({"username": build.CONTROLLER_MANAGER}, pod(account=BACKUP, owner=FROM_CRONJOB), True),
        (TENANT_USER, pod(account=BACKUP, owner=FROM_CRONJOB), False),  # owner references are writable
        (TENANT_USER, pod(account=BACKUP), False),
        (JOB_CONTROLLER, pod(account=BACKUP, owner=("Job", "nightly")), False),
        (TENANT_USER, pod(labels={"app.kubernetes.io/name": "qdrant-backup"}), False),  # its egress
        (TENANT_USER, pod(), True),
        (JOB_CONTROLLER, pod(owner=("Job", "nightly")), True),
    ],
)
def test_pods_under_the_backup_account_come_only_from_its_jobs(
    policies: dict[str, Any], user: dict[str, Any], obj: dict[str, Any], allowed: bool
) -> None:
    policy = policies[build.RUNS_ONLY_FROM_CRONJOB]
    assert admitted(policy, user=user, resource="pods", operation="CREATE", obj=obj) is allowed


def test_the_deprecated_service_account_field_is_checked_too(policies: dict[str, Any]) -> None:
    obj = pod()
    obj["spec"] = {"serviceAccount": BACKUP, "containers": []}
    policy = policies[build.RUNS_ONLY_FROM_CRONJOB]
    assert not admitted(policy, user=TENANT_USER, resource="pods", operation="CREATE", obj=obj)


def test_outside_tenant_namespaces_the_policy_stays_out(policies: dict[str, Any]) -> None:
    policy = policies[build.RUNS_ONLY_FROM_CRONJOB]
    obj = pod(account=BACKUP)
    assert admitted(policy, user=TENANT_USER, resource="pods", operation="CREATE", obj=obj, namespace="ops")


@pytest.mark.parametrize(
    ("user", "obj", "allowed"),
    [
        (CRONJOB_CONTROLLER, job(account=BACKUP, owner=("CronJob", "qdrant-backup")), True),
        (CRONJOB_CONTROLLER, job(account=BACKUP, owner=("CronJob", "mine")), False),
        (TENANT_USER, job(account=BACKUP, owner=("CronJob", "qdrant-backup")), False),
        (TENANT_USER, job(), True),
    ],
)
def test_jobs_under_the_backup_account_come_only_from_the_platforms_cronjob(
    policies: dict[str, Any], user: dict[str, Any], obj: dict[str, Any], allowed: bool
) -> None:
    policy = policies[build.RUNS_ONLY_FROM_CRONJOB]
    assert admitted(policy, user=user, resource="jobs", operation="CREATE", obj=obj) is allowed


def test_no_pod_is_relabelled_into_the_backup_job(policies: dict[str, Any]) -> None:
    policy = policies[build.RUNS_ONLY_FROM_CRONJOB]
    marked = pod(labels={"app.kubernetes.io/name": "qdrant-backup"})
    assert not admitted(policy, user=TENANT_USER, resource="pods", operation="UPDATE", obj=marked, old=pod())
    kept = pod(account=BACKUP, owner=FROM_CRONJOB)
    assert admitted(policy, user=JOB_CONTROLLER, resource="pods", operation="UPDATE", obj=kept, old=kept)


@pytest.mark.parametrize("sub_resource", ["exec", "attach", "portforward"])
def test_no_one_execs_into_the_backup_pods(policies: dict[str, Any], sub_resource: str) -> None:
    policy = policies[build.RUNS_ONLY_FROM_CRONJOB]
    for name, allowed in (("qdrant-backup-29420000-x7k2p", False), ("web-0", True)):
        decision = admitted(
            policy,
            user=TENANT_USER,
            resource="pods",
            sub_resource=sub_resource,
            operation="CONNECT",
            obj={"kind": "PodExecOptions"},
            name=name,
        )
        assert decision is allowed


def test_no_ephemeral_container_joins_a_backup_pod(policies: dict[str, Any]) -> None:
    policy = policies[build.RUNS_ONLY_FROM_CRONJOB]
    obj = pod(account=BACKUP, owner=FROM_CRONJOB)
    assert not admitted(
        policy,
        user=TENANT_USER,
        resource="pods",
        sub_resource="ephemeralcontainers",
        operation="UPDATE",
        obj=obj,
        old=obj,
        name="qdrant-backup-29420000-x7k2p",
    )


@pytest.mark.parametrize(
    ("resource", "operation", "obj", "name", "platform", "allowed"),
    [
        ("cronjobs", "UPDATE", cronjob("qdrant-backup", account=BACKUP), "", False, False),
        ("cronjobs", "UPDATE", cronjob("qdrant-backup", account=BACKUP), "", True, True),
        ("cronjobs", "DELETE", None, "qdrant-backup", False, False),
        ("cronjobs", "CREATE", cronjob("mine", account=BACKUP), "", False, False),
        ("cronjobs", "CREATE", cronjob("mine", account="default"), "", False, True),
        ("serviceaccounts", "DELETE", None, "qdrant-backup", False, False),
        ("serviceaccounts", "CREATE", {"metadata": {"name": "qdrant-backup"}}, "", True, True),
        ("serviceaccounts", "CREATE", {"metadata": {"name": "ci"}}, "", False, True),
        (
            "secrets",
            "CREATE",
            {
                "metadata": {"name": "t", "annotations": {"kubernetes.io/service-account.name": BACKUP}},
                "type": "kubernetes.io/service-account-token",
            },
            "",
            False,
            False,
        ),
        ("secrets", "CREATE", {"metadata": {"name": "app"}, "type": "Opaque"}, "", False, True),
    ],
)
def test_only_a_platform_identity_changes_the_cronjob_and_its_account(
    policies: dict[str, Any],
    resource: str,
    operation: str,
    obj: Any,
    name: str,
    platform: bool,
    allowed: bool,
) -> None:
    policy = policies[build.OWNED_BY_PLATFORM]
    user = WORKER if platform else TENANT_USER
    decision = admitted(
        policy, user=user, resource=resource, operation=operation, obj=obj, name=name, platform=platform
    )
    assert decision is allowed


def test_argo_cd_applying_a_tenants_application_is_not_a_platform_identity(policies: dict[str, Any]) -> None:
    """Found by a traffic review: Argo CD's application controller may create namespaces (the chart's
    ClusterRole grants it everything), so a tenant's Application could rewrite the backup CronJob and
    run its own code with the backup's Vault login. Whatever Argo CD may do, it acts for tenants."""
    policy = policies[build.OWNED_BY_PLATFORM]
    controller = {"username": "system:serviceaccount:argocd:argocd-application-controller", "groups": []}
    rewritten = cronjob("qdrant-backup", account=BACKUP)
    decision = admitted(
        policy,
        user=controller,
        resource="cronjobs",
        operation="UPDATE",
        obj=rewritten,
        name="",
        platform=True,
    )
    assert decision is False
    assert admitted(
        policy, user=WORKER, resource="cronjobs", operation="UPDATE", obj=rewritten, name="", platform=True
    )
