"""Namespaces of platform services: each denies all traffic by default and allows what its service needs.

Every platform component builds its namespace from these pieces, so the allows a service has are
listed in one place beside that service, and the default-deny is never forgotten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tenancy.builders.contract import NAMESPACES
from tenancy.builders.namespace import Manifest
from tenancy.spec.errors import SpecError, SpecIssue
from tenancy.spec.platform import DnsConfig, ObjectStorageConfig, PlatformConfig, VaultConfig

PodSecurity = Literal["restricted", "baseline", "privileged"]
PLATFORM_LABELS = {"tenancy.platform/component": "platform", "app.kubernetes.io/managed-by": "pulumi"}
# istiod, as every namespace's policies name it: its pods, xDS port, and Prometheus endpoint.
ISTIOD_POD_LABELS = {"app": "istiod"}
ISTIOD_XDS_PORT = 15012
ISTIOD_METRICS_PORT = 15014
# The sidecar agent's merged Prometheus endpoint on every meshed pod, served outside mutual TLS.
SIDECAR_METRICS_PORT = 15020
# Namespaces whose pods carry an Istio sidecar (platform and tenant namespaces alike).
MESHED_NAMESPACE_LABELS = {"istio-injection": "enabled"}
# The Kubernetes API as NetworkPolicies see it: the kubernetes Service's 443 is translated to its
# endpoints' port before policies apply, 443 on managed clusters and 6443 on kubeadm.
API_SERVER_PORTS = [443, 6443]
# Hosts whose configuration every sidecar receives, by default and in tenant namespaces: the services of
# its own namespace (what tenants' and platform services' calls go to), and istio-system, the mesh's
# own services. Nothing else: with the default (every service in the mesh) each sidecar's memory and
# istiod's push work grow with every tenant, and each tenant's proxy would list every other tenant's
# services. Addresses outside that scope (the API server, git hosts, object storage) are not mesh
# services; sidecars pass them through, and NetworkPolicies decide where pods may connect.
SIDECAR_EGRESS_HOSTS = ["./*", f"{NAMESPACES.mesh}/*"]


@dataclass(frozen=True)
class Reach:
    """Where pods reach a service the platform uses but does not run (the object store, Vault): its pods
    in ``namespace`` (a service in the cluster), else the addresses in ``cidrs``, on ``port`` as
    NetworkPolicies see it (the pods' port in the cluster, else the endpoint's). Neither set: any address
    on ``port``, for platform workloads only (tenant stacks refuse that, see ``vault_reach`` and
    ``backup_platform``)."""

    port: int
    cidrs: tuple[str, ...] = ()
    namespace: str | None = None


def object_store_reach(storage: ObjectStorageConfig) -> Reach:
    """The object store as platform config ``objectStorage`` places it (``namespace``, ``cidrs``)."""
    return Reach(port=storage.pod_port, cidrs=tuple(storage.cidrs), namespace=storage.namespace)


def vault_service_reach(vault: VaultConfig) -> Reach | None:
    """Vault as platform config ``vault`` places it; None when it is off or has no address."""
    if not vault.enabled or vault.address is None:
        return None
    return Reach(port=vault.port, cidrs=tuple(vault.cidrs), namespace=vault.namespace)


def sidecar_egress_hosts(*namespaces: str | None) -> list[str]:
    """SIDECAR_EGRESS_HOSTS plus the services of each namespace given (a Vault or object store in the
    cluster, ``Reach.namespace``): in scope, a sidecar sends calls there as the mesh's (mTLS, which a
    meshed service under STRICT mode requires) rather than passing them through as unknown plaintext. A
    service outside the cluster needs nothing here: it is passed through."""
    return list(dict.fromkeys([*SIDECAR_EGRESS_HOSTS, *(f"{name}/*" for name in namespaces if name)]))


def namespace_manifest(name: str, *, mesh: bool, pod_security: PodSecurity = "restricted") -> Manifest:
    labels = {
        **PLATFORM_LABELS,
        "pod-security.kubernetes.io/enforce": pod_security,
        "pod-security.kubernetes.io/warn": pod_security,
        "pod-security.kubernetes.io/audit": pod_security,
        "istio-injection": MESHED_NAMESPACE_LABELS["istio-injection"] if mesh else "disabled",
    }
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def network_policy(namespace: str, name: str, spec: dict[str, Any]) -> Manifest:
    """A NetworkPolicy of a platform namespace, labelled as the platform's."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(PLATFORM_LABELS)},
        "spec": spec,
    }


def _ports(ports: list[int], protocol: str = "TCP") -> list[dict[str, Any]]:
    return [{"protocol": protocol, "port": port} for port in ports]


def _peer(namespace: str | None, pod_labels: dict[str, str] | None) -> dict[str, Any]:
    """Pods with ``pod_labels`` (any when None) in ``namespace`` (any namespace when None)."""
    by_name = {"matchLabels": {"kubernetes.io/metadata.name": namespace}} if namespace is not None else {}
    peer: dict[str, Any] = {"namespaceSelector": by_name}
    if pod_labels is not None:
        peer["podSelector"] = {"matchLabels": dict(pod_labels)}
    return peer


def dns_egress_rule(dns: DnsConfig) -> dict[str, Any]:
    """The egress rule to the cluster DNS pods (platform config ``dns``), UDP and TCP on each port."""
    return {
        "to": [_peer(dns.namespace, dns.pod_labels)],
        "ports": _ports(dns.ports, "UDP") + _ports(dns.ports),
    }


def baseline_policies(namespace: str, *, mesh: bool, dns: DnsConfig | None = None) -> list[Manifest]:
    """Default deny both ways, then DNS, traffic inside the namespace, and (meshed) istiod."""
    policies = [
        network_policy(namespace, "default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        network_policy(
            namespace,
            "allow-dns",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [dns_egress_rule(dns or DnsConfig())],
            },
        ),
        network_policy(
            namespace,
            "allow-same-namespace",
            {
                "podSelector": {},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": {}}]}],
                "egress": [{"to": [{"podSelector": {}}]}],
            },
        ),
    ]
    if mesh:
        policies.append(
            allow_egress(
                namespace,
                "allow-mesh-control-plane",
                to_namespace=NAMESPACES.mesh,
                to_pods=ISTIOD_POD_LABELS,
                ports=[ISTIOD_XDS_PORT],
            )
        )
    return policies


def allow_ingress(
    namespace: str,
    name: str,
    *,
    pods: dict[str, str] | None = None,
    from_namespace: str | None,
    from_pods: dict[str, str] | None = None,
    ports: list[int],
) -> Manifest:
    """Allow ``ports`` on ``pods`` (all pods when None) from a namespace (any when None) and its pods."""
    return network_policy(
        namespace,
        name,
        {
            "podSelector": {"matchLabels": dict(pods)} if pods else {},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [_peer(from_namespace, from_pods)],
                    "ports": _ports(ports),
                }
            ],
        },
    )


def allow_egress(
    namespace: str,
    name: str,
    *,
    pods: dict[str, str] | None = None,
    to_namespace: str | None,
    to_pods: dict[str, str] | None = None,
    ports: list[int],
) -> Manifest:
    """Allow ``pods`` (all when None) to reach ``ports`` in a namespace (any in-cluster when None)."""
    return network_policy(
        namespace,
        name,
        {
            "podSelector": {"matchLabels": dict(pods)} if pods else {},
            "policyTypes": ["Egress"],
            "egress": [{"to": [_peer(to_namespace, to_pods)], "ports": _ports(ports)}],
        },
    )


def allow_ingress_from_anywhere(
    namespace: str, name: str, *, pods: dict[str, str], ports: list[int]
) -> Manifest:
    """Allow ``ports`` on ``pods`` from callers without a pod identity: the API server (webhooks),
    load balancers, the internet. The twin of ``allow_egress_outside``."""
    return network_policy(
        namespace,
        name,
        {
            "podSelector": {"matchLabels": dict(pods)},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": _ports(ports)}],
        },
    )


def _ip_blocks(cidrs: Sequence[str]) -> list[dict[str, Any]]:
    return [{"ipBlock": {"cidr": cidr}} for cidr in cidrs]


def allow_egress_to_api_server(
    namespace: str, name: str, *, pods: dict[str, str] | None, config: PlatformConfig
) -> Manifest:
    """Allow ``pods`` (all when None) to reach the Kubernetes API server at its addresses (platform
    config ``kubernetesApiCidrs``) on API_SERVER_PORTS, and nothing else on those ports.

    The API server has no pod selector; its endpoint addresses are what keeps this narrow, so an empty
    list is an error naming the key rather than a rule open to every address."""
    if not config.kubernetes_api_cidrs:
        raise SpecError(
            [
                SpecIssue(
                    f"Pulumi.{config.environment}.yaml",
                    "platform:kubernetesApiCidrs",
                    f"is empty, but pods in {namespace} must reach the Kubernetes API server; list its "
                    "endpoint addresses (kubectl get endpointslices -n default -l "
                    "kubernetes.io/service-name=kubernetes) as CIDRs such as 10.0.0.2/32",
                )
            ]
        )
    return network_policy(
        namespace,
        name,
        {
            "podSelector": {"matchLabels": dict(pods)} if pods else {},
            "policyTypes": ["Egress"],
            "egress": [{"to": _ip_blocks(config.kubernetes_api_cidrs), "ports": _ports(API_SERVER_PORTS)}],
        },
    )


def allow_egress_to_cidrs(
    namespace: str, name: str, *, pods: dict[str, str] | None, cidrs: Sequence[str], ports: list[int]
) -> Manifest:
    """Allow ``pods`` (all when None) to reach ``ports`` at addresses outside the cluster's pods."""
    return network_policy(
        namespace,
        name,
        {
            "podSelector": {"matchLabels": dict(pods)} if pods else {},
            "policyTypes": ["Egress"],
            "egress": [{"to": _ip_blocks(cidrs), "ports": _ports(ports)}],
        },
    )


def allow_egress_outside(
    namespace: str, name: str, *, pods: dict[str, str] | None, ports: list[int]
) -> Manifest:
    """Allow egress on ``ports`` to any address: Keycloak's public URL, the tenants' git remote, whose
    addresses the platform does not know. Never for the API server (see ``allow_egress_to_api_server``)
    nor for the object store or Vault (``allow_egress_to_reach``, which falls back to this shape only
    when their config names no place); the port list is the boundary.
    """
    return network_policy(
        namespace,
        name,
        {
            "podSelector": {"matchLabels": dict(pods)} if pods else {},
            "policyTypes": ["Egress"],
            "egress": [{"ports": _ports(ports)}],
        },
    )


def reach_egress_rule(reach: Reach) -> dict[str, Any]:
    """The egress rule to ``reach``: its namespace's pods, else its CIDRs, else any address; on its port."""
    rule: dict[str, Any] = {}
    if reach.namespace:
        rule["to"] = [_peer(reach.namespace, None)]
    elif reach.cidrs:
        rule["to"] = _ip_blocks(reach.cidrs)
    rule["ports"] = _ports([reach.port])
    return rule


def allow_egress_to_reach(
    namespace: str, name: str, *, pods: dict[str, str] | None, reaches: Sequence[Reach]
) -> Manifest:
    """Allow ``pods`` (all when None) to reach each of ``reaches`` as the platform config places it
    (``reach_egress_rule``). Reaches open to any address share one rule, their ports sorted."""
    rules = [reach_egress_rule(reach) for reach in reaches if reach.namespace or reach.cidrs]
    anywhere = sorted({reach.port for reach in reaches if not (reach.namespace or reach.cidrs)})
    if anywhere:
        rules.append({"ports": _ports(anywhere)})
    return network_policy(
        namespace,
        name,
        {
            "podSelector": {"matchLabels": dict(pods)} if pods else {},
            "policyTypes": ["Egress"],
            "egress": rules,
        },
    )


def allow_egress_to_meshed_pods(
    namespace: str, name: str, *, pods: dict[str, str] | None, ports: list[int]
) -> Manifest:
    """Allow ``pods`` to reach ``ports`` on every pod of every meshed namespace, whoever owns it."""
    return network_policy(
        namespace,
        name,
        {
            "podSelector": {"matchLabels": dict(pods)} if pods else {},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"namespaceSelector": {"matchLabels": dict(MESHED_NAMESPACE_LABELS)}}],
                    "ports": _ports(ports),
                }
            ],
        },
    )
