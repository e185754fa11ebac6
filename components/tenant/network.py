"""Default-deny NetworkPolicies with the few allows a tenant needs."""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_kubernetes as k8s

from tenancy.builders.contract import PlatformRefs
from tenancy.builders.network import network_policy_manifests
from tenancy.builders.platform_namespace import Reach
from tenancy.spec.platform import DnsConfig
from tenancy.spec.tenant import Tenant


class TenantNetworkPolicies(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        *,
        tenant: Tenant,
        platform: PlatformRefs,
        kubernetes_api_cidrs: Sequence[str],
        vault: Reach | None = None,
        dns: DnsConfig | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``kubernetes_api_cidrs``: the platform config's ``kubernetesApiCidrs``, where a vCluster may go;
        ``vault``: where the tenant's pods may reach Vault; ``dns``: the platform config's ``dns``."""
        super().__init__("platform:tenant:NetworkPolicies", name, None, opts)
        for policy in network_policy_manifests(
            tenant, platform, kubernetes_api_cidrs=kubernetes_api_cidrs, vault=vault, dns=dns
        ):
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{policy['metadata']['name']}",
                metadata=policy["metadata"],
                spec=policy["spec"],
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({})
