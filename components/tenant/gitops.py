"""The tenant's Argo CD AppProject, in the platform's Argo CD namespace."""

from __future__ import annotations

import pulumi

from components.kubernetes import custom_resource
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
        custom_resource(f"{name}-project", manifest, pulumi.ResourceOptions(parent=self))
        self.project = pulumi.Output.from_input(tenant.name)
        self.register_outputs({"project": self.project})
