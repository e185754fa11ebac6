"""The tenant's Argo CD AppProject, in the platform's Argo CD namespace."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from tenancy.builders.contract import PlatformRefs
from tenancy.builders.gitops import app_project_manifest
from tenancy.spec.tenant import Tenant


class TenantAppProject(pulumi.ComponentResource):
    """Project ``<tenant>``: the tenant's repositories, into the tenant's namespace only."""

    project: pulumi.Output[str]

    def __init__(
        self, name: str, *, tenant: Tenant, platform: PlatformRefs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("platform:tenant:AppProject", name, None, opts)
        manifest = app_project_manifest(tenant, platform.argocd_namespace)
        k8s.apiextensions.CustomResource(
            f"{name}-project",
            api_version=manifest["apiVersion"],
            kind=manifest["kind"],
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.project = pulumi.Output.from_input(tenant.name)
        self.register_outputs({"project": self.project})
