"""A tenant's scheduled Qdrant backup: the CronJob and its ServiceAccount, the job's traffic (egress and
Qdrant's side), and in Vault the credentials role limited to the tenant's prefix, a policy reading only
those and the login role only the job's ServiceAccount can use (tenancy.builders.backup)."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s
import pulumi_vault as vault

from components.kubernetes import custom_resource
from tenancy.builders.backup import (
    BackupPlatform,
    authorization_policy,
    aws_role_args,
    cronjob_manifest,
    network_policy,
    service_account_manifest,
    vault_login_role_args,
    vault_name,
    vault_policy,
)
from tenancy.spec.tenant import Tenant


class QdrantBackup(pulumi.ComponentResource):
    """Needs the tenant namespace, its Qdrant (the key Secret) and a Vault provider."""

    schedule: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        tenant: Tenant,
        platform: BackupPlatform,
        auth_path: pulumi.Input[str],
        vault_provider: vault.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("platform:tenant:QdrantBackup", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        in_vault = pulumi.ResourceOptions(parent=self, provider=vault_provider)

        credentials = vault.aws.SecretBackendRole(
            f"{name}-credentials", **aws_role_args(tenant, platform), opts=in_vault
        )
        policy = vault.Policy(
            f"{name}-policy",
            name=vault_name(tenant),
            policy=vault_policy(tenant, platform),
            opts=pulumi.ResourceOptions(parent=self, provider=vault_provider, depends_on=[credentials]),
        )
        login = vault.kubernetes.AuthBackendRole(
            f"{name}-login",
            backend=auth_path,
            token_policies=[policy.name],
            **vault_login_role_args(tenant),
            opts=in_vault,
        )

        account = service_account_manifest(tenant)
        service_account = k8s.core.v1.ServiceAccount(
            f"{name}-account",
            metadata=account["metadata"],
            automount_service_account_token=account["automountServiceAccountToken"],
            opts=child,
        )
        egress = network_policy(tenant, platform)
        network = k8s.networking.v1.NetworkPolicy(
            f"{name}-egress", metadata=egress["metadata"], spec=egress["spec"], opts=child
        )
        mesh = custom_resource(f"{name}-to-qdrant", authorization_policy(tenant), child)
        manifest = cronjob_manifest(tenant, platform)
        # Runs only once it can log in, reach Qdrant and the store, and is let in by Qdrant.
        cronjob = k8s.batch.v1.CronJob(
            f"{name}-cronjob",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[service_account, network, mesh, login]),
        )
        self.schedule = cronjob.spec.apply(lambda spec: str(spec.schedule))
        self.register_outputs({"schedule": self.schedule})
