"""The tenant namespace and what bounds it: Pod Security, mesh injection, quota and limits."""

from __future__ import annotations

from typing import Any

from tenancy.spec.tenant import LABEL_ENVIRONMENT, LABEL_TENANT, Tenant

Manifest = dict[str, Any]
MANAGED_BY = "app.kubernetes.io/managed-by"


def metadata(tenant: Tenant, name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": tenant.namespace, "labels": dict(tenant.labels), **extra}


def chart_labels(tenant: Tenant) -> dict[str, str]:
    """The tenant's labels for objects a Helm chart renders: Helm manages those and says so in its own
    ``managed-by`` label, which a second ``managed-by`` key would duplicate (or contradict)."""
    return {key: str(value) for key, value in tenant.labels.items() if key != MANAGED_BY}


def volume_claim_labels(tenant: Tenant) -> dict[str, str]:
    """Labels for the PersistentVolumeClaims of a StatefulSet's volumeClaimTemplates.

    The API server refuses any later change to volumeClaimTemplates, labels included, so these carry only
    what never changes for the life of a tenant stack: not the plan, not the tenant's own labels.
    """
    return {key: str(tenant.labels[key]) for key in (LABEL_TENANT, LABEL_ENVIRONMENT)}


# Pod Security's enforced level in every tenant namespace; the self-service workers' admission policy
# (tenancy.builders.selfservice.worker_admission_policy) refuses a namespace they write without it.
POD_SECURITY_ENFORCE = "pod-security.kubernetes.io/enforce"
POD_SECURITY_LEVEL = "restricted"


def namespace_manifest(tenant: Tenant) -> Manifest:
    labels = {
        **tenant.labels,
        # Pod Security "restricted" enforced, and warned/audited at the same level so kubectl shows why.
        POD_SECURITY_ENFORCE: POD_SECURITY_LEVEL,
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
        "istio-injection": "enabled",
    }
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": tenant.namespace, "labels": labels},
    }


def resource_quota_manifest(tenant: Tenant) -> Manifest:
    quota = tenant.limits.quota
    hard = {
        "requests.cpu": quota.requests_cpu,
        "requests.memory": quota.requests_memory,
        "limits.cpu": quota.limits_cpu,
        "limits.memory": quota.limits_memory,
        "requests.storage": quota.requests_storage,
        "persistentvolumeclaims": str(quota.persistent_volume_claims),
        "pods": str(quota.pods),
        "services": str(quota.services),
        # A vCluster keeps each synced pod's service-account tokens in a Secret of its own
        # (tenancy.builders.vcluster, useSecretsForSATokens): one more Secret per pod the quota allows, so
        # the tenant's own Secrets keep the plan's count.
        "secrets": str(quota.secrets + (quota.pods if tenant.vcluster is not None else 0)),
        "configmaps": str(quota.config_maps),
        # Tenants are reached through the platform gateway only.
        "services.loadbalancers": "0",
        "services.nodeports": "0",
    }
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": metadata(tenant, "tenant-quota"),
        "spec": {"hard": hard},
    }


def limit_range_manifest(tenant: Tenant) -> Manifest:
    limits = tenant.limits
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": metadata(tenant, "tenant-limits"),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": {
                        "cpu": limits.container_default.cpu,
                        "memory": limits.container_default.memory,
                    },
                    "defaultRequest": {
                        "cpu": limits.container_default_request.cpu,
                        "memory": limits.container_default_request.memory,
                    },
                    "max": {"cpu": limits.container_max.cpu, "memory": limits.container_max.memory},
                },
                {
                    "type": "PersistentVolumeClaim",
                    "max": {"storage": limits.quota.requests_storage},
                },
            ]
        },
    }
