"""Small builders of policy objects for rule tests: compliant by default, broken by one change each."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

from tenancy.policy.model import PolicyObject, Violation, manifest_object, release_object
from tenancy.policy.rules import check_stack
from tenancy.spec.tenant import LABEL_TENANT

TENANT = "acme"
TENANT_NAMESPACE = "tenant-acme"
TENANT_STACK = "prod.acme"
LABELS = {LABEL_TENANT: TENANT, "app": "web"}

RESTRICTED = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
SIZED = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}}


def container(name: str = "web", **changes: Any) -> dict[str, Any]:
    spec = {
        "name": name,
        "image": "ghcr.io/acme/web:1.2.3",
        "securityContext": copy.deepcopy(RESTRICTED),
        "resources": copy.deepcopy(SIZED),
    }
    spec.update(changes)
    return spec


def pod_spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [container()]}
    spec.update(changes)
    return spec


def workload(
    kind: str = "Deployment",
    *,
    name: str = "web",
    namespace: str | None = TENANT_NAMESPACE,
    spec: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    replicas: int | None = None,
    stack: str | None = TENANT_STACK,
) -> PolicyObject:
    """A Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob around ``spec``."""
    labels = dict(LABELS if labels is None else labels)
    pod = spec if spec is not None else pod_spec()
    template = {"metadata": {"labels": dict(labels)}, "spec": pod}
    api_version = {"Pod": "v1", "Job": "batch/v1", "CronJob": "batch/v1"}.get(kind, "apps/v1")
    body: dict[str, Any]
    if kind == "Pod":
        body = {"spec": pod}
    elif kind == "Job":
        body = {"spec": {"template": template}}
    elif kind == "CronJob":
        body = {"spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": template}}}}
    else:
        body = {"spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template}}
        if replicas is not None:
            body["spec"]["replicas"] = replicas
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if namespace:
        metadata["namespace"] = namespace
    return manifest(api_version, kind, metadata, body, stack=stack)


def manifest(
    api_version: str,
    kind: str,
    metadata: dict[str, Any],
    body: dict[str, Any] | None = None,
    *,
    stack: str | None,
) -> PolicyObject:
    document = {"apiVersion": api_version, "kind": kind, "metadata": metadata, **(body or {})}
    return manifest_object(document, stack=stack, origin=f"{kind}-{metadata.get('name')}.yaml")


def tenant_object(api_version: str, kind: str, name: str, body: dict[str, Any] | None = None) -> PolicyObject:
    metadata = {"name": name, "namespace": TENANT_NAMESPACE, "labels": {LABEL_TENANT: TENANT}}
    return manifest(api_version, kind, metadata, body, stack=TENANT_STACK)


def release(
    chart: str,
    values: dict[str, Any],
    *,
    version: str,
    name: str | None = None,
    namespace: str = TENANT_NAMESPACE,
    stack: str | None = TENANT_STACK,
    postrender: str | None = None,
) -> PolicyObject:
    document = {
        "name": name or chart,
        "namespace": namespace,
        "chart": chart,
        "version": version,
        "repo": "https://charts.example.com",
        **({"postrender": postrender} if postrender else {}),
        "values": values,
    }
    return release_object(document, stack=stack, origin=f"helm/{name or chart}.yaml")


def guard_rails(namespace: str = TENANT_NAMESPACE) -> list[PolicyObject]:
    """A tenant namespace with everything the guard-rail rule asks for."""
    labels = {LABEL_TENANT: TENANT}
    return [
        manifest("v1", "Namespace", {"name": namespace, "labels": labels}, stack=TENANT_STACK),
        tenant_object(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "default-deny",
            {"spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}},
        ),
        tenant_object("v1", "ResourceQuota", "quota", {"spec": {"hard": {"pods": "10"}}}),
        tenant_object("v1", "LimitRange", "limits", {"spec": {"limits": []}}),
    ]


def violations_of(rule: str, *objects: PolicyObject) -> list[Violation]:
    return [v for v in check_stack(list(objects)) if v.rule == rule]


def messages(rule: str, *objects: PolicyObject) -> list[str]:
    return [v.message for v in violations_of(rule, *objects)]


def changed(base: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    copied = copy.deepcopy(base)
    change(copied)
    return copied


def fields(found: Iterable[Violation]) -> list[str]:
    return [v.field for v in found]
