"""Tenant NetworkPolicies: deny everything, then allow only what a tenant's services need.

Every tenant namespace denies ingress by default, so no pod of another tenant can reach it even
where the other tenant's egress would allow it: isolation holds on both ends.
"""

from __future__ import annotations

from typing import Any

import pulumi

from tenancy.builders.contract import DNS_NAMESPACE, DNS_POD_LABELS, INGRESS_GATEWAY_LABELS, PlatformRefs
from tenancy.builders.namespace import Manifest, metadata
from tenancy.spec.tenant import Tenant

QDRANT_HTTP_PORT = 6333
QDRANT_GRPC_PORT = 6334
ISTIO_XDS_PORT = 15012
ISTIO_METRICS_PORT = 15020  # the sidecar's merged Prometheus endpoint
VCLUSTER_POD_LABELS = {"app": "vcluster"}  # the control plane; see builders.vcluster


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


def network_policy_manifests(tenant: Tenant, platform: PlatformRefs) -> list[Manifest]:
    policies = [
        _policy(tenant, "default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        _policy(
            tenant,
            "allow-dns",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": _namespace_selector(DNS_NAMESPACE),
                                "podSelector": {"matchLabels": dict(DNS_POD_LABELS)},
                            }
                        ],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                    }
                ],
            },
        ),
        _policy(
            tenant,
            "allow-same-namespace",
            {
                "podSelector": {},
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
    metrics_ports = [ISTIO_METRICS_PORT]
    if tenant.qdrant is not None:
        metrics_ports.append(QDRANT_HTTP_PORT)
        policies.append(
            _policy(
                tenant,
                "allow-ingress-gateway-to-qdrant",
                {
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "qdrant"}},
                    "policyTypes": ["Ingress"],
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": _namespace_selector(platform.ingress_namespace),
                                    "podSelector": {"matchLabels": dict(INGRESS_GATEWAY_LABELS)},
                                }
                            ],
                            "ports": _tcp(QDRANT_HTTP_PORT, QDRANT_GRPC_PORT),
                        }
                    ],
                },
            )
        )
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
                        "ports": _tcp(*metrics_ports),
                    }
                ],
            },
        )
    )
    if tenant.vcluster is not None:
        # The vCluster syncer talks to the host API server, whose address is outside any pod selector.
        policies.append(
            _policy(
                tenant,
                "allow-vcluster-to-apiserver",
                {
                    "podSelector": {"matchLabels": dict(VCLUSTER_POD_LABELS)},
                    "policyTypes": ["Egress"],
                    "egress": [{"ports": _tcp(443, 6443)}],
                },
            )
        )
    return policies
