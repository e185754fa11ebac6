"""Namespace-scoped roles for the tenant's Keycloak groups."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from tenancy.builders.rbac import role_binding_manifests, role_manifests
from tenancy.spec.tenant import Tenant


class TenantAccess(pulumi.ComponentResource):
    def __init__(
        self, name: str, *, tenant: Tenant, group_prefix: str, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("platform:tenant:Access", name, None, opts)
        roles = []
        for role in role_manifests(tenant):
            roles.append(
                k8s.rbac.v1.Role(
                    f"{name}-{role['metadata']['name']}-role",
                    metadata=role["metadata"],
                    rules=role["rules"],
                    opts=pulumi.ResourceOptions(parent=self),
                )
            )
        for binding in role_binding_manifests(tenant, group_prefix=group_prefix):
            k8s.rbac.v1.RoleBinding(
                f"{name}-{binding['metadata']['name']}-binding",
                metadata=binding["metadata"],
                role_ref=binding["roleRef"],
                subjects=binding["subjects"],
                opts=pulumi.ResourceOptions(parent=self, depends_on=roles),
            )
        self.register_outputs({})
