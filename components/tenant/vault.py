"""A tenant's place in Vault: its secret, a policy that reads only that secret, and a login role
that only service accounts of the tenant's namespace can use.

The mount and auth paths come from the platform stack (``tenantContract``); the tenant stack talks
to Vault with its own provider, made by ``tenant_vault_provider``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pulumi
import pulumi_vault as vault

from tenancy.builders.vault import (
    VAULT_TOKEN_CONFIG_KEY,
    policy_name,
    provider_args,
    secret_api_path,
    secret_name,
    tenant_policy,
    tenant_role_args,
)
from tenancy.spec.platform import CONFIG_NAMESPACE
from tenancy.spec.tenant import Tenant


def tenant_vault_provider(
    name: str,
    *,
    address: str | None,
    token: pulumi.Input[str] | None = None,
    opts: pulumi.ResourceOptions | None = None,
) -> vault.Provider:
    """The Vault provider of a tenant stack.

    ``address`` is the platform config's ``vault.address``; ``token`` defaults to the secret config
    ``platform:vaultToken`` of the tenant stack.
    """
    if token is None:
        token = pulumi.Config(CONFIG_NAMESPACE).require_secret(VAULT_TOKEN_CONFIG_KEY)
    # The SDK does not mark the provider token secret by itself.
    return vault.Provider(name, token=pulumi.Output.secret(token), **provider_args(address), opts=opts)


def _data_json(secrets: Mapping[str, pulumi.Input[str]]) -> pulumi.Output[str]:
    values = pulumi.Output.all(**dict(secrets))
    return pulumi.Output.secret(values.apply(lambda data: json.dumps(data, sort_keys=True)))


class TenantVaultAccess(pulumi.ComponentResource):
    """Secret ``<env>/<tenant>/qdrant``, policy and role ``tenant-<env>-<tenant>``."""

    secret_path: pulumi.Output[str]
    policy_name: pulumi.Output[str]
    role_name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        tenant: Tenant,
        kv_mount: pulumi.Input[str],
        auth_path: pulumi.Input[str],
        secrets: Mapping[str, pulumi.Input[str]],
        provider: vault.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        if not secrets:
            raise ValueError(f"tenant {tenant.name}: no secrets to keep in Vault")
        super().__init__("platform:tenant:VaultAccess", name, None, opts)
        in_vault = pulumi.ResourceOptions(parent=self, provider=provider)
        mount = pulumi.Output.from_input(kv_mount)

        secret = vault.kv.SecretV2(
            f"{name}-secret",
            mount=mount,
            name=secret_name(tenant),
            data_json=_data_json(secrets),
            # Destroying the tenant removes every version and the metadata, not just the latest
            # version: nothing of a deleted tenant stays readable, or reappears for a new tenant
            # that reuses the name.
            delete_all_versions=True,
            opts=in_vault,
        )
        policy = vault.Policy(
            f"{name}-policy",
            name=policy_name(tenant),
            policy=mount.apply(lambda kv: tenant_policy(tenant, kv_mount=kv)),
            opts=in_vault,
        )
        role = vault.kubernetes.AuthBackendRole(
            f"{name}-role",
            backend=auth_path,
            token_policies=[policy.name],
            **tenant_role_args(tenant),
            opts=in_vault,
        )

        # Tied to the secret's id so whatever reads the path is created after the secret exists.
        self.secret_path = pulumi.Output.all(mount, secret.id).apply(
            lambda values: secret_api_path(tenant, kv_mount=str(values[0]))
        )
        self.policy_name = policy.name
        self.role_name = role.role_name
        self.register_outputs(
            {"secret_path": self.secret_path, "policy_name": self.policy_name, "role_name": self.role_name}
        )
