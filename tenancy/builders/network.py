"""Tenant NetworkPolicies: deny everything, then allow only what a tenant's services need.

Every tenant namespace denies ingress by default, so no pod of another tenant can reach it even
where the other tenant's egress would allow it: isolation holds on both ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi

from tenancy.builders.contract import (
    INGRESS_GATEWAY_LABELS,
    NAMESPACES,
    SELF_SERVICE_WORKER_LABELS,
    PlatformRefs,
)
from tenancy.builders.namespace import Manifest, metadata
from tenancy.builders.platform_namespace import API_SERVER_PORTS, Reach, dns_egress_rule, reach_egress_rule
from tenancy.builders.vcluster import API_PORT as VCLUSTER_API_PORT
from tenancy.builders.vcluster import CONTROL_PLANE_LABELS as VCLUSTER_POD_LABELS
from tenancy.spec.errors import SpecError, SpecIssue
from tenancy.spec.platform import DnsConfig
from tenancy.spec.tenant import Tenant

QDRANT_HTTP_PORT = 6333
QDRANT_GRPC_PORT = 6334
# What the Qdrant chart puts on its pods (qdrant.selectorLabels in the pinned chart's _helpers.tpl).
QDRANT_POD_LABELS = {"app.kubernetes.io/name": "qdrant"}
ISTIO_XDS_PORT = 15012
ISTIO_METRICS_PORT = 15020  # the sidecar's merged Prometheus endpoint
# The scheduled backup job (tenancy.builders.backup) is named, and its pods labelled, app.kubernetes.io/name
# qdrant-backup. Its pods are left out of allow-same-namespace: they reach Qdrant's HTTP port and the object
# store (its own policy) and nothing else in the namespace. Admission refuses that label on any other pod.
BACKUP_JOB_NAME = "qdrant-backup"
NAME_LABEL = "app.kubernetes.io/name"


def _namespace_selector(name: pulumi.Input[str]) -> dict[str, Any]:
    return {"matchLabels": {"kubernetes.io/metadata.name": name}}


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def _policy(tenant: Tenant, name: str, spec: dict[str, Any]) -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(tenant, name),
        "spec": spec,
    }


def _from_ingress_gateway(platform: PlatformRefs) -> dict[str, Any]:
    return {
        "namespaceSelector": _namespace_selector(platform.ingress_namespace),
        "podSelector": {"matchLabels": dict(INGRESS_GATEWAY_LABELS)},
    }


def network_policy_manifests(
    tenant: Tenant,
    platform: PlatformRefs,
    *,
    kubernetes_api_cidrs: Sequence[str],
    vault: Reach | None = None,
    dns: DnsConfig | None = None,
) -> list[Manifest]:
    """``kubernetes_api_cidrs``: the platform config's ``kubernetesApiCidrs``, the only addresses a
    vCluster may open connections to outside the cluster's pods. ``vault``: where the tenant's pods may
    reach Vault to read their keys (tenancy.builders.vault.vault_reach); None without Vault. ``dns``:
    the platform config's ``dns``, the cluster DNS pods (kube-dns in kube-system when None)."""
    policies = [
        _policy(tenant, "default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        _policy(
            tenant,
            "allow-dns",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [dns_egress_rule(dns or DnsConfig())],
            },
        ),
        _policy(
            tenant,
            "allow-same-namespace",
            {
                "podSelector": {
                    "matchExpressions": [
                        {"key": NAME_LABEL, "operator": "NotIn", "values": [BACKUP_JOB_NAME]}
                    ]
                },
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": {}}]}],
                "egress": [{"to": [{"podSelector": {}}]}],
            },
        ),
        # Sidecars fetch config and certificates from istiod; without this the mesh cannot start.
        _policy(
            tenant,
            "allow-mesh-control-plane",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": _namespace_selector(platform.mesh_namespace),
                                "podSelector": {"matchLabels": {"app": "istiod"}},
                            }
                        ],
                        "ports": _tcp(ISTIO_XDS_PORT),
                    }
                ],
            },
        ),
    ]
    if tenant.qdrant is not None:
        policies.append(
            _policy(
                tenant,
                "allow-ingress-gateway-to-qdrant",
                {
                    "podSelector": {"matchLabels": dict(QDRANT_POD_LABELS)},
                    "policyTypes": ["Ingress"],
                    "ingress": [
                        {
                            "from": [_from_ingress_gateway(platform)],
                            "ports": _tcp(QDRANT_HTTP_PORT, QDRANT_GRPC_PORT),
                        }
                    ],
                },
            )
        )
        # The platform's self-service workers drain, rebalance, back up and restore this Qdrant through
        # its REST API, on each peer: the HTTP port only, from the worker pods only.
        policies.append(
            _policy(
                tenant,
                "allow-selfservice-workers-to-qdrant",
                {
                    "podSelector": {"matchLabels": dict(QDRANT_POD_LABELS)},
                    "policyTypes": ["Ingress"],
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": _namespace_selector(NAMESPACES.self_service),
                                    "podSelector": {"matchLabels": dict(SELF_SERVICE_WORKER_LABELS)},
                                }
                            ],
                            "ports": _tcp(QDRANT_HTTP_PORT),
                        }
                    ],
                },
            )
        )
    # Every meshed pod's metrics, Qdrant's included, are merged into the sidecar's endpoint: the only
    # port a scraper needs (mesh-wide STRICT mTLS would refuse a plaintext scrape of Qdrant's own port).
    policies.append(
        _policy(
            tenant,
            "allow-metrics-scraping",
            {
                "podSelector": {},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [{"namespaceSelector": _namespace_selector(platform.monitoring_namespace)}],
                        "ports": _tcp(ISTIO_METRICS_PORT),
                    }
                ],
            },
        )
    )
    if vault is not None:
        policies.append(_vault_policy(tenant, vault))
    if tenant.vcluster is not None:
        policies += _vcluster_policies(tenant, platform, kubernetes_api_cidrs)
    return policies


def _vault_policy(tenant: Tenant, vault: Reach) -> Manifest:
    """Any pod of the tenant may reach Vault's port, nothing else there: Vault's policy then limits it to
    the tenant's own secret (tenancy.builders.vault.tenant_policy_rules)."""
    return _policy(
        tenant,
        "allow-vault",
        {"podSelector": {}, "policyTypes": ["Egress"], "egress": [reach_egress_rule(vault)]},
    )


def _vcluster_policies(
    tenant: Tenant, platform: PlatformRefs, kubernetes_api_cidrs: Sequence[str]
) -> list[Manifest]:
    if not kubernetes_api_cidrs:
        raise SpecError(
            [
                SpecIssue(
                    f"Pulumi.{tenant.environment}.yaml",
                    "platform:kubernetesApiCidrs",
                    f"is empty, but tenant {tenant.name} has a vCluster, which must reach the API server; "
                    "list the API server's endpoint addresses there",
                )
            ]
        )
    control_plane = {"matchLabels": dict(VCLUSTER_POD_LABELS)}
    return [
        # The syncer talks to the host API server, which no pod selector names. Any tenant pod can carry
        # these labels (tenant-admin creates pods), so the destination is what keeps this narrow: the
        # API server's addresses, never the internet or other in-cluster services on 443/6443.
        _policy(
            tenant,
            "allow-vcluster-to-apiserver",
            {
                "podSelector": control_plane,
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"ipBlock": {"cidr": cidr}} for cidr in kubernetes_api_cidrs],
                        "ports": _tcp(*API_SERVER_PORTS),
                    }
                ],
            },
        ),
        # kubectl from outside reaches the vCluster API through the platform gateway (TLS passed through).
        _policy(
            tenant,
            "allow-ingress-gateway-to-vcluster",
            {
                "podSelector": control_plane,
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [_from_ingress_gateway(platform)], "ports": _tcp(VCLUSTER_API_PORT)}],
            },
        ),
    ]
