"""Helm values for a tenant's vCluster (loft-sh/vcluster chart, version pinned in tenancy.versions).

The chart's values.schema.json forbids unknown keys at every level, so a typo here fails the install
rather than being ignored. The control plane runs as a non-root user: vCluster cannot move from
root to non-root after install, so this is set from the first release.
"""

from __future__ import annotations

from typing import Any

import pulumi

from tenancy import versions
from tenancy.spec.tenant import Tenant

RELEASE_NAME = "vcluster"
KUBECONFIG_SECRET = f"vc-{RELEASE_NAME}"  # written by the running vCluster, not by Helm
KUBECONFIG_KEY = "config"
CONTEXT_NAME = "vcluster"
CONTROL_PLANE_LABELS = {"app": "vcluster", "release": RELEASE_NAME}
NON_ROOT_ID = 12345

_RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def kubeconfig_server(tenant: Tenant) -> str:
    # The serving certificate covers "<release>.<namespace>", not the ".svc" forms.
    return f"https://{RELEASE_NAME}.{tenant.namespace}:443"


def render_vcluster_values(tenant: Tenant, *, storage_class: pulumi.Input[str]) -> dict[str, Any]:
    v = tenant.vcluster
    if v is None:
        raise ValueError(f"tenant {tenant.name} has no vCluster")
    size = {"cpu": v.cpu, "memory": v.memory}
    labels = {key: str(value) for key, value in tenant.labels.items()}
    return {
        "controlPlane": {
            "distro": {
                "k8s": {
                    "enabled": True,
                    "version": versions.VCLUSTER_KUBERNETES_VERSIONS[v.kubernetes_version],
                    "securityContext": dict(_RESTRICTED_CONTAINER),
                }
            },
            "statefulSet": {
                "resources": {
                    "requests": {**size, "ephemeral-storage": "1Gi"},
                    "limits": {**size, "ephemeral-storage": "10Gi"},
                },
                "persistence": {"volumeClaim": {"size": v.storage_size, "storageClass": storage_class}},
                "labels": labels,
                "pods": {"labels": labels},
                "security": {
                    "podSecurityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": NON_ROOT_ID,
                        "runAsGroup": NON_ROOT_ID,
                        "fsGroup": NON_ROOT_ID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    # Maps merge in Helm: the chart's runAsUser/runAsGroup 0 must be overridden, not omitted.
                    "containerSecurityContext": {
                        **_RESTRICTED_CONTAINER,
                        "runAsUser": NON_ROOT_ID,
                        "runAsGroup": NON_ROOT_ID,
                    },
                },
            },
            "coredns": {"security": {"podSecurityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}},
        },
        "exportKubeConfig": {"server": kubeconfig_server(tenant), "context": CONTEXT_NAME},
        # Quota, limits and network isolation belong to the platform and are declared in the namespace.
        "policies": {
            "podSecurityStandard": "restricted",
            "resourceQuota": {"enabled": False},
            "limitRange": {"enabled": False},
            "networkPolicy": {"enabled": False},
        },
        "rbac": {"clusterRole": {"enabled": False}},
        "telemetry": {"enabled": False},
    }
