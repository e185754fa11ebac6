"""A platform service's namespace with its NetworkPolicies."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from tenancy.builders.namespace import Manifest
from tenancy.builders.platform_namespace import PodSecurity, baseline_policies, namespace_manifest
from tenancy.spec.platform import DnsConfig


class PlatformNamespace(pulumi.ComponentResource):
    """Namespace ``namespace``: baseline policies (deny, DNS, same-namespace, istiod) plus ``policies``.

    ``dns``: where the cluster's DNS pods are (platform config ``dns``; kube-dns in kube-system if None).
    """

    name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        namespace: str,
        mesh: bool,
        pod_security: PodSecurity = "restricted",
        policies: list[Manifest] | None = None,
        dns: DnsConfig | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("platform:platform:Namespace", name, None, opts)
        manifest = namespace_manifest(namespace, mesh=mesh, pod_security=pod_security)
        self.resource = k8s.core.v1.Namespace(
            f"{name}-namespace", metadata=manifest["metadata"], opts=pulumi.ResourceOptions(parent=self)
        )
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[self.resource])
        for policy in baseline_policies(namespace, mesh=mesh, dns=dns) + list(policies or []):
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{policy['metadata']['name']}",
                metadata=policy["metadata"],
                spec=policy["spec"],
                opts=in_namespace,
            )
        self.name = self.resource.metadata.apply(lambda m: str(m.name))
        self.register_outputs({"name": self.name})
