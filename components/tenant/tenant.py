"""Everything one tenant owns, in dependency order: namespace and guard rails first, services after."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulumi
import pulumi_keycloak
import pulumi_vault

from components.tenant.access import TenantAccess
from components.tenant.backup import QdrantBackup
from components.tenant.gitops import TenantAppProject
from components.tenant.identity import TenantGroups
from components.tenant.mesh import TenantMeshPolicies
from components.tenant.namespace import TenantNamespace
from components.tenant.network import TenantNetworkPolicies
from components.tenant.qdrant import QdrantCluster
from components.tenant.vault import TenantVaultAccess
from components.tenant.vcluster import VirtualCluster
from tenancy.builders.backup import BackupPlatform, backup_wanted
from tenancy.builders.contract import PlatformRefs
from tenancy.builders.platform_namespace import Reach
from tenancy.spec.platform import DnsConfig
from tenancy.spec.tenant import Tenant


class TenantResources(pulumi.ComponentResource):
    namespace: pulumi.Output[str]
    qdrant: QdrantCluster | None
    vcluster: VirtualCluster | None
    vault: TenantVaultAccess | None
    backup: QdrantBackup | None
    app_project: TenantAppProject

    def __init__(
        self,
        name: str,
        *,
        tenant: Tenant,
        platform: PlatformRefs,
        group_prefix: str,
        keycloak_provider: pulumi_keycloak.Provider | None,
        kubernetes_api_cidrs: Sequence[str],
        vault_provider: pulumi_vault.Provider | None = None,
        vault_reach: Reach | None = None,
        dns: DnsConfig | None = None,
        backup: BackupPlatform | None = None,
        vcluster_images: Mapping[str, str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``vault_provider`` set: the tenant's keys are also kept in Vault (prod); else only in Secrets.

        ``keycloak_provider`` None: the tenant's Keycloak groups are managed elsewhere (not declared).

        ``kubernetes_api_cidrs``: the platform config's ``kubernetesApiCidrs``, the only addresses a
        vCluster may connect to outside the cluster's pods (required when the tenant has a vCluster).

        ``vault_reach``: where the tenant's pods may reach Vault to read their keys (egress, and Vault's
        namespace in the Sidecar's scope when Vault runs in the cluster).

        ``dns``: the platform config's ``dns``, the cluster DNS pods its namespace may resolve through.

        ``backup``: where scheduled Qdrant backups go and how the job gets its credentials
        (tenancy.builders.backup.backup_platform); with a Vault provider and ``qdrant.snapshots`` on, the
        tenant gets the backup CronJob. None: no scheduled backups (the platform has no store or no Vault).

        ``vcluster_images``: the platform config's ``vclusterImages``, digests for the vCluster's images.
        """
        super().__init__("platform:tenant:Tenant", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        namespace = TenantNamespace(f"{name}", tenant=tenant, opts=child)
        after_namespace = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
        # RoleBindings and the Argo CD project name these groups: they come first.
        after_groups = after_namespace
        if keycloak_provider is not None:
            groups = TenantGroups(f"{name}-groups", tenant=tenant, provider=keycloak_provider, opts=child)
            after_groups = pulumi.ResourceOptions(parent=self, depends_on=[namespace, groups])
        isolation = TenantNetworkPolicies(
            f"{name}-network",
            tenant=tenant,
            platform=platform,
            kubernetes_api_cidrs=kubernetes_api_cidrs,
            vault=vault_reach,
            dns=dns,
            opts=after_namespace,
        )
        access = TenantAccess(f"{name}-access", tenant=tenant, group_prefix=group_prefix, opts=after_groups)
        mesh = TenantMeshPolicies(
            f"{name}-mesh",
            tenant=tenant,
            platform=platform,
            vault_namespace=vault_reach.namespace if vault_reach else None,
            object_store_namespace=backup.store.namespace if backup else None,
            opts=after_namespace,
        )
        self.app_project = TenantAppProject(
            f"{name}-gitops", tenant=tenant, platform=platform, opts=after_groups
        )
        # Services start only once their quota, limits and isolation are in place.
        guarded = pulumi.ResourceOptions(parent=self, depends_on=[namespace, isolation, access, mesh])

        self.qdrant = None
        if tenant.qdrant is not None:
            self.qdrant = QdrantCluster(
                f"{name}-qdrant",
                tenant=tenant,
                storage_class=platform.storage_class,
                platform=platform,
                opts=guarded,
            )
        self.vcluster = None
        if tenant.vcluster is not None:
            self.vcluster = VirtualCluster(
                f"{name}-vcluster",
                tenant=tenant,
                platform=platform,
                image_overrides=vcluster_images,
                opts=guarded,
            )
        self.vault = None
        if vault_provider is not None and self.qdrant is not None:
            keys = {"api-key": self.qdrant.api_key}
            if self.qdrant.read_only_api_key is not None:
                keys["read-only-api-key"] = self.qdrant.read_only_api_key
            self.vault = TenantVaultAccess(
                f"{name}-vault",
                tenant=tenant,
                kv_mount=platform.vault_kv_mount,
                auth_path=platform.vault_auth_path,
                secrets=keys,
                provider=vault_provider,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace]),
            )
        self.backup = None
        if backup_wanted(tenant) and self.qdrant is not None:
            if backup is None or vault_provider is None:
                pulumi.log.warn(
                    f"tenant {tenant.name}: qdrant.snapshots is on but the platform keeps no scheduled "
                    "backups (it needs platform:objectStorage and Vault); the snapshot volume is all it gets",
                    self,
                )
            else:
                self.backup = QdrantBackup(
                    f"{name}-backup",
                    tenant=tenant,
                    platform=backup,
                    auth_path=platform.vault_auth_path,
                    vault_provider=vault_provider,
                    opts=pulumi.ResourceOptions(
                        parent=self, depends_on=[namespace, isolation, mesh, self.qdrant]
                    ),
                )
        self.namespace = namespace.namespace
        self.register_outputs({"namespace": self.namespace})
