"""What a tenant stack needs from the platform: the platform stack exports it, tenant stacks read it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

# Fixed by the platform: tenant NetworkPolicies select these by label, so they are part of the contract.
# (The cluster DNS pods are the platform config's ``dns``: tenancy.spec.platform.DnsConfig.)
INGRESS_GATEWAY_LABELS = {"istio": "ingressgateway"}
# The self-service workers (tenancy.builders.selfservice): the one platform workload that reaches every
# tenant's Qdrant (drains, rebalances, backups and restores), by these pod labels and this identity.
SELF_SERVICE_WORKER_LABELS = {
    "app.kubernetes.io/name": "selfservice",
    "app.kubernetes.io/component": "worker",
}
SELF_SERVICE_WORKER_ACCOUNT = "selfservice-worker"
# What both self-service roles' pods (API and workers) carry: iam admits them to Keycloak by it.
SELF_SERVICE_POD_LABELS = {"app.kubernetes.io/name": "selfservice"}
# The ClusterRole holding the workers' rights inside a tenant namespace. The platform declares it and
# binds it nowhere; each tenant stack binds it in its own namespace (tenancy.builders.rbac), so the
# workers read and write Secrets and workloads only where a tenant stack put that RoleBinding.
SELF_SERVICE_WORKER_TENANT_ROLE = f"{SELF_SERVICE_WORKER_ACCOUNT}-tenant"


@dataclass(frozen=True)
class PlatformRefs:
    """Values the platform stack exports (``tenantContract``) and tenant stacks consume."""

    ingress_namespace: pulumi.Input[str]
    monitoring_namespace: pulumi.Input[str]
    mesh_namespace: pulumi.Input[str]
    argocd_namespace: pulumi.Input[str]
    storage_class: pulumi.Input[str]
    domain: pulumi.Input[str]
    issuer_url: pulumi.Input[str]
    vault_kv_mount: pulumi.Input[str]
    vault_auth_path: pulumi.Input[str]

    @classmethod
    def field_names(cls) -> list[str]:
        return list(cls.__dataclass_fields__)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> PlatformRefs:
        return cls(**{name: values[name] for name in cls.field_names()})


@dataclass(frozen=True)
class PlatformNamespaces:
    """Where each platform service runs; fixed so policies and docs can name them."""

    mesh: str = "istio-system"
    ingress: str = "istio-ingress"
    gitops: str = "argocd"
    identity: str = "iam"
    database_operator: str = "cnpg-system"
    observability: str = "observability"
    redis: str = "redis"
    self_service: str = "tenancy-system"


NAMESPACES = PlatformNamespaces()
# Where Argo CD answers through `kubectl port-forward svc/argocd-server -n argocd 8080:80`: with the
# admin surfaces closed to everyone outside adminSourceCidrs (the default), the gateway refuses its
# public host, sign-in callback included, so this is how platform admins reach it then. Its SSO returns
# there (argocd-cm additionalUrls, and the Keycloak client's redirect URIs).
ARGOCD_PORT_FORWARD_URL = "http://localhost:8080"
# `argocd login --sso` redeems its code without a client secret (PKCE), so it signs in through a public
# client of its own (argocd-cm oidc.config cliClientID; Argo CD then accepts tokens for either client),
# returning to the listener the CLI opens on localhost (its --sso-port, 8085 by default).
ARGOCD_CLI_CLIENT_ID = "argocd-cli"
ARGOCD_CLI_CALLBACK = "http://localhost:8085/auth/callback"
REALM = "platform"
# The platform's Istio Gateway, and how VirtualServices in any namespace name it.
GATEWAY_NAME = "platform-gateway"
GATEWAY_REFERENCE = f"{NAMESPACES.ingress}/{GATEWAY_NAME}"
# Each tenant's vCluster API is served at <tenant>.vc.<domain>: the platform Gateway passes TLS for
# *.vc.<domain> through untouched (the vCluster presents its own certificate and authenticates kubectl by
# client certificate, which a terminating gateway would strip), and each tenant stack routes its own host.
# A zone of its own, not vc-<tenant>.<domain>: Istio's host wildcards take whole labels only, and the
# platform's *.<domain> certificate does not cover a two-label name, so browsers never coalesce an
# HTTP/2 connection for another platform host onto a vCluster's passthrough connection (or back).
VCLUSTER_API_ZONE = "vc"
# Each tenant's Qdrant is served at <tenant>.qdrant.<domain> (REST and gRPC, TLS ending at the gateway): a
# Gateway server of its own for *.qdrant.<domain>, so the gateway's request-size limit applies there only.
QDRANT_API_ZONE = "qdrant"


def issuer_url(domain: str) -> str:
    return f"https://auth.{domain}/realms/{REALM}"


def tenant_contract(
    *, domain: str, storage_class: str, vault_kv_mount: str, vault_auth_path: str
) -> dict[str, str]:
    """The ``tenantContract`` output of a platform stack, keyed by PlatformRefs field names."""
    values = {
        "ingress_namespace": NAMESPACES.ingress,
        "monitoring_namespace": NAMESPACES.observability,
        "mesh_namespace": NAMESPACES.mesh,
        "argocd_namespace": NAMESPACES.gitops,
        "storage_class": storage_class,
        "domain": domain,
        "issuer_url": issuer_url(domain),
        "vault_kv_mount": vault_kv_mount,
        "vault_auth_path": vault_auth_path,
    }
    assert set(values) == set(PlatformRefs.field_names())
    return values
