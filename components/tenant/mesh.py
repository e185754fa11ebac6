"""A tenant namespace's mesh configuration: AuthorizationPolicies that deny by default and allow the
namespace, the gateway to Qdrant and the vCluster API, and metrics scraping (mTLS identities; the
NetworkPolicies enforce the same at L3/L4); and the Sidecar that keeps its proxies' configuration to
the namespace itself."""

from __future__ import annotations

import pulumi

from components.kubernetes import custom_resource
from tenancy.builders.contract import PlatformRefs
from tenancy.builders.istio import tenant_authorization_policies, tenant_sidecar
from tenancy.spec.tenant import Tenant


class TenantMeshPolicies(pulumi.ComponentResource):
    """Needs the tenant namespace and Istio's CRDs (the platform stack) to exist."""

    def __init__(
        self,
        name: str,
        *,
        tenant: Tenant,
        platform: PlatformRefs,
        vault_namespace: str | None = None,
        object_store_namespace: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("platform:tenant:MeshPolicies", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        for policy in tenant_authorization_policies(tenant, platform):
            custom_resource(f"{name}-{policy['metadata']['name']}", policy, child)
        sidecar = tenant_sidecar(
            tenant, vault_namespace=vault_namespace, object_store_namespace=object_store_namespace
        )
        custom_resource(f"{name}-sidecar", sidecar, child)
        self.register_outputs({})
