"""Tenant RBAC: Keycloak groups bound to namespace-scoped roles; nothing cluster-wide.

The roles are written out rather than bound to the built-in ``admin``/``view`` ClusterRoles: ``admin``
lets its holder edit NetworkPolicies and RoleBindings, which would let a tenant undo its own isolation.
"""

from __future__ import annotations

from typing import Any

from tenancy.builders.contract import (
    NAMESPACES,
    SELF_SERVICE_WORKER_ACCOUNT,
    SELF_SERVICE_WORKER_TENANT_ROLE,
)
from tenancy.builders.namespace import Manifest, metadata
from tenancy.spec.tenant import Tenant

READ = ["get", "list", "watch"]
# The Roles a tenant stack writes in its namespace (bound to the tenant's Keycloak groups): the only
# ones, with the vCluster chart's, the workers may bind there (tenancy.builders.selfservice).
TENANT_ADMIN_ROLE = "tenant-admin"
TENANT_VIEWER_ROLE = "tenant-viewer"
TENANT_ROLES = (TENANT_ADMIN_ROLE, TENANT_VIEWER_ROLE)
WRITE = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]

_WORKLOADS: list[tuple[str, list[str]]] = [
    ("", ["pods", "services", "endpoints", "configmaps", "persistentvolumeclaims", "serviceaccounts"]),
    ("apps", ["deployments", "statefulsets", "replicasets"]),
    ("batch", ["jobs", "cronjobs"]),
    ("autoscaling", ["horizontalpodautoscalers"]),
    ("policy", ["poddisruptionbudgets"]),
]
# Guard rails the platform owns: tenants may read them, never change them.
_PLATFORM_OWNED: list[tuple[str, list[str]]] = [
    ("", ["resourcequotas", "limitranges", "events"]),
    ("networking.k8s.io", ["networkpolicies"]),
    ("rbac.authorization.k8s.io", ["roles", "rolebindings"]),
    ("security.istio.io", ["authorizationpolicies", "peerauthentications"]),
]


def _rules(groups: list[tuple[str, list[str]]], verbs: list[str]) -> list[dict[str, Any]]:
    return [
        {"apiGroups": [group], "resources": list(resources), "verbs": list(verbs)}
        for group, resources in groups
    ]


def tenant_role_rules() -> dict[str, list[dict[str, Any]]]:
    """The rules of each tenant Role, the same for every tenant (what the workers may grant)."""
    admin_rules = [
        *_rules(_WORKLOADS, WRITE),
        {"apiGroups": [""], "resources": ["secrets"], "verbs": list(WRITE)},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods/portforward", "pods/exec"], "verbs": ["create"]},
        {
            "apiGroups": ["apps"],
            "resources": ["deployments/scale", "statefulsets/scale"],
            "verbs": ["update", "patch"],
        },
        *_rules(_PLATFORM_OWNED, READ),
    ]
    # Viewers see workloads and logs, never Secrets (API keys and kubeconfigs live there).
    viewer_rules = [
        *_rules(_WORKLOADS, READ),
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        *_rules(_PLATFORM_OWNED, READ),
    ]
    return {TENANT_ADMIN_ROLE: admin_rules, TENANT_VIEWER_ROLE: viewer_rules}


def role_manifests(tenant: Tenant) -> list[Manifest]:
    rules = tenant_role_rules()
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata(tenant, TENANT_ADMIN_ROLE),
            "rules": rules[TENANT_ADMIN_ROLE],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata(tenant, TENANT_VIEWER_ROLE),
            "rules": rules[TENANT_VIEWER_ROLE],
        },
    ]


def role_binding_manifests(tenant: Tenant, *, group_prefix: str) -> list[Manifest]:
    def binding(role: str, groups: tuple[str, ...]) -> Manifest:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata(tenant, role),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": f"{group_prefix}{group}"}
                for group in groups
            ],
        }

    return [
        binding(TENANT_ADMIN_ROLE, tenant.admin_groups),
        binding(TENANT_VIEWER_ROLE, tenant.viewer_groups),
    ]


WORKER_BINDING = SELF_SERVICE_WORKER_ACCOUNT
# The binding's Pulumi resource, ``<tenant component>-worker-binding``: the workers watch for its creation.
WORKER_BINDING_RESOURCE_SUFFIX = "-worker-binding"


def worker_role_binding_manifest(tenant: Tenant) -> Manifest:
    """The self-service workers' rights in this namespace: the platform's ClusterRole
    ``selfservice-worker-tenant`` bound here only. The workers hold no right to Secrets, workloads or
    policies anywhere else; the stack declares this first, right after the namespace, and everything
    in the namespace waits for it (and is deleted before it; it goes with the namespace)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(tenant, WORKER_BINDING),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": SELF_SERVICE_WORKER_TENANT_ROLE,
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": SELF_SERVICE_WORKER_ACCOUNT,
                "namespace": NAMESPACES.self_service,
            }
        ],
    }
