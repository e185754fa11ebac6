"""The tenant's namespace with its quota and container limits, and the self-service workers' binding there."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from tenancy.builders.namespace import limit_range_manifest, namespace_manifest, resource_quota_manifest
from tenancy.builders.rbac import WORKER_BINDING_RESOURCE_SUFFIX, worker_role_binding_manifest
from tenancy.spec.tenant import Tenant


class TenantNamespace(pulumi.ComponentResource):
    namespace: pulumi.Output[str]

    def __init__(self, name: str, *, tenant: Tenant, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:tenant:Namespace", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        ns = namespace_manifest(tenant)
        self.resource = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=ns["metadata"],
            opts=child.merge(pulumi.ResourceOptions(protect=tenant.deletion_protection)),
        )
        # The workers' rights here come from this binding alone (tenancy.builders.rbac): it comes first,
        # and the quota, the limits and everything that depends on this component come after it.
        binding = worker_role_binding_manifest(tenant)
        self.worker_binding = k8s.rbac.v1.RoleBinding(
            f"{name}{WORKER_BINDING_RESOURCE_SUFFIX}",
            metadata=binding["metadata"],
            role_ref=binding["roleRef"],
            subjects=binding["subjects"],
            # Left to the namespace's deletion, never deleted alone: the provider waits for a deleted
            # object by listing its kind in the namespace, which the workers could no longer do once
            # this binding were gone (and they list RoleBindings nowhere else).
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.resource], retain_on_delete=True),
        )
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[self.resource, self.worker_binding])
        quota = resource_quota_manifest(tenant)
        k8s.core.v1.ResourceQuota(
            f"{name}-quota", metadata=quota["metadata"], spec=quota["spec"], opts=in_namespace
        )
        limits = limit_range_manifest(tenant)
        k8s.core.v1.LimitRange(
            f"{name}-limits", metadata=limits["metadata"], spec=limits["spec"], opts=in_namespace
        )

        self.namespace = self.resource.metadata.apply(lambda m: str(m.name))
        self.register_outputs({"namespace": self.namespace})
