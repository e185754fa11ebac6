"""A tenant's Argo CD AppProject: what the tenant may deploy, from where, to where, and who may.

Argo CD syncs with cluster-wide rights, so the project is the boundary: it may deploy only from the
tenant's repositories, only into the tenant's namespace in this cluster, nothing cluster-scoped, and
none of the objects the platform owns in that namespace (the same ones the tenant's RBAC keeps
read-only, see builders.rbac), or a tenant could undo its own isolation through Argo CD.
"""

from __future__ import annotations

from typing import Any

import pulumi

from tenancy.builders.namespace import Manifest
from tenancy.spec.tenant import Tenant

IN_CLUSTER = "https://kubernetes.default.svc"
ADMIN_ROLE = "tenant-admin"
VIEWER_ROLE = "tenant-viewer"

# Kinds Argo CD must never create or change in a tenant namespace; "*" is a glob over kinds.
PLATFORM_OWNED_KINDS: list[dict[str, str]] = [
    {"group": "", "kind": "ResourceQuota"},
    {"group": "", "kind": "LimitRange"},
    {"group": "networking.k8s.io", "kind": "NetworkPolicy"},
    {"group": "rbac.authorization.k8s.io", "kind": "Role"},
    {"group": "rbac.authorization.k8s.io", "kind": "RoleBinding"},
    # Mesh security and routing: AuthorizationPolicy, PeerAuthentication, and Gateway/VirtualService/
    # ServiceEntry, which could bind the platform gateway or claim another service's host name.
    {"group": "security.istio.io", "kind": "*"},
    {"group": "networking.istio.io", "kind": "*"},
    {"group": "extensions.istio.io", "kind": "*"},
]


def _policies(tenant: Tenant, role: str, grants: list[tuple[str, str]]) -> list[str]:
    """Casbin lines for a project role; objects are ``<project>/*`` (every application of the project)."""
    subject = f"proj:{tenant.name}:{role}"
    return [f"p, {subject}, {resource}, {action}, {tenant.name}/*, allow" for resource, action in grants]


def app_project_manifest(tenant: Tenant, argocd_namespace: pulumi.Input[str]) -> Manifest:
    roles: list[dict[str, Any]] = [
        {
            "name": ADMIN_ROLE,
            "description": f"Create, sync and delete {tenant.name}'s applications",
            # Project-scoped repositories let the tenant add credentials for its private repositories;
            # Argo CD still deploys only from URLs in sourceRepos.
            "policies": _policies(
                tenant,
                ADMIN_ROLE,
                [("applications", "*"), ("logs", "get"), ("repositories", "*")],
            ),
            "groups": list(tenant.admin_groups),
        },
        {
            "name": VIEWER_ROLE,
            "description": f"See {tenant.name}'s applications and their logs",
            "policies": _policies(tenant, VIEWER_ROLE, [("applications", "get"), ("logs", "get")]),
            "groups": list(tenant.viewer_groups),
        },
    ]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": tenant.name, "namespace": argocd_namespace, "labels": dict(tenant.labels)},
        "spec": {
            "description": f"Applications of tenant {tenant.name}",
            # Empty means no repository is allowed: nothing can be deployed until the tenant lists one.
            "sourceRepos": list(tenant.repositories),
            "destinations": [{"server": IN_CLUSTER, "namespace": tenant.namespace}],
            "clusterResourceWhitelist": [],
            "namespaceResourceBlacklist": [dict(kind) for kind in PLATFORM_OWNED_KINDS],
            "roles": roles,
        },
    }
