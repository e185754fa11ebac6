"""A tenant namespace's AuthorizationPolicies: deny by default, allow the namespace, the gateway to
Qdrant, and metrics scraping (mTLS identities; the NetworkPolicies enforce the same at L3/L4)."""

from __future__ import annotations

import pulumi

from components.kubernetes import custom_resource
from tenancy.builders.contract import PlatformRefs
from tenancy.builders.istio import tenant_authorization_policies
from tenancy.spec.tenant import Tenant


class TenantMeshPolicies(pulumi.ComponentResource):
    """Needs the tenant namespace and Istio's CRDs (the platform stack) to exist."""

    def __init__(
        self, name: str, *, tenant: Tenant, platform: PlatformRefs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("platform:tenant:MeshPolicies", name, None, opts)
        for policy in tenant_authorization_policies(tenant, platform):
            custom_resource(
                f"{name}-{policy['metadata']['name']}", policy, pulumi.ResourceOptions(parent=self)
            )
        self.register_outputs({})
