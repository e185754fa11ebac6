"""A tenant's Keycloak groups: ``/tenants/<tenant>`` with ``admins`` and ``viewers``, each mapped to
its realm role, plus the groups its spec names under ``/tenants/<tenant>/``.

Everything the tenant's RoleBindings, Argo CD project and the self-service API check is bound to
these groups, so they exist as long as the tenant does. The tenant stack talks to Keycloak as the
``tenant-provisioner`` client of the platform realm, with the provider ``tenant_keycloak_provider``
makes from the platform stack's outputs.
"""

from __future__ import annotations

import pulumi
import pulumi_keycloak as keycloak

from tenancy import versions
from tenancy.builders.contract import REALM
from tenancy.builders.identity import (
    PROVISIONER_CLIENT_ID,
    TENANT_ADMIN,
    TENANT_VIEWER,
    TENANTS_GROUP,
    tenant_groups,
    tenant_root_group,
)
from tenancy.spec.tenant import Tenant


def tenant_keycloak_provider(
    name: str,
    *,
    url: pulumi.Input[str],
    client_secret: pulumi.Input[str],
    opts: pulumi.ResourceOptions | None = None,
) -> keycloak.Provider:
    """The Keycloak provider of a tenant stack: the platform realm, as ``tenant-provisioner``.

    ``url`` and ``client_secret`` are the platform stack's ``keycloakUrl`` and
    ``keycloakProvisionerSecret``. The Keycloak version is given because the client may not read
    ``/admin/serverinfo``, where the provider would otherwise learn it.
    """
    return keycloak.Provider(
        name,
        url=url,
        realm=REALM,
        client_id=PROVISIONER_CLIENT_ID,
        # Marked here too: a secret read from a stack output is secret only if the platform kept it so.
        client_secret=pulumi.Output.secret(client_secret),
        keycloak_version=versions.KEYCLOAK,
        opts=opts,
    )


class TenantGroups(pulumi.ComponentResource):
    """The tenant's subtree of ``/tenants`` (``tenancy.builders.identity.tenant_groups``).

    The parent ``/tenants`` comes from the realm import and is looked up, never declared: tenant
    stacks share it. With deletion protection the tenant's root group is protected too: deleting it
    deletes every subgroup and membership below it.
    """

    group_paths: pulumi.Output[list[str]]

    def __init__(
        self,
        name: str,
        *,
        tenant: Tenant,
        provider: keycloak.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("platform:tenant:Groups", name, None, opts)
        lookup = pulumi.InvokeOptions(parent=self, provider=provider)
        tenants = keycloak.get_group_output(realm_id=REALM, group_path=f"/{TENANTS_GROUP}", opts=lookup)
        role_ids = {
            role: keycloak.get_role_output(realm_id=REALM, name=role, opts=lookup).id
            for role in (TENANT_ADMIN, TENANT_VIEWER)
        }

        root = tenant_root_group(tenant)
        ids: dict[str, pulumi.Output[str]] = {f"/{TENANTS_GROUP}": tenants.id}
        declared: list[str] = []
        for group in tenant_groups(tenant):
            # acme-groups-acme, acme-groups-acme/admins, ...
            resource_name = f"{name}-{group.path.removeprefix(f'/{TENANTS_GROUP}/')}"
            created = keycloak.Group(
                resource_name,
                realm_id=REALM,
                name=group.name,
                parent_id=ids[group.parent],
                opts=pulumi.ResourceOptions(
                    parent=self,
                    provider=provider,
                    protect=tenant.deletion_protection and group.path == root,
                ),
            )
            ids[group.path] = created.id
            declared.append(group.path)
            if group.realm_roles:
                keycloak.GroupRoles(
                    f"{resource_name}-roles",
                    realm_id=REALM,
                    group_id=created.id,
                    role_ids=[role_ids[role] for role in group.realm_roles],
                    opts=pulumi.ResourceOptions(parent=self, provider=provider),
                )

        self.group_paths = pulumi.Output.from_input(declared)
        self.register_outputs({"group_paths": self.group_paths})
