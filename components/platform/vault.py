"""The platform's side of Vault: the KV v2 mount for tenant secrets and the Kubernetes auth method.

Vault itself runs outside this program; the program only configures it through its API, at
``platform:vault.address``, with the secret token ``platform:vaultToken``.
"""

from __future__ import annotations

import pulumi
import pulumi_vault as vault

from tenancy.builders.vault import (
    TOKEN_REVIEWER_JWT_CONFIG_KEY,
    VAULT_TOKEN_CONFIG_KEY,
    kubernetes_auth_args,
    kubernetes_auth_config_args,
    kv_mount_args,
    provider_args,
)
from tenancy.spec.platform import CONFIG_NAMESPACE, PlatformConfig


class VaultIntegration(pulumi.ComponentResource):
    """KV v2 mount ``config.vault.kv_mount`` and Kubernetes auth at ``config.vault.kubernetes_auth_path``."""

    kv_mount: pulumi.Output[str]
    auth_path: pulumi.Output[str]
    provider: vault.Provider

    def __init__(
        self, name: str, *, config: PlatformConfig, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        if not config.vault.enabled:
            raise ValueError(
                f"Vault is disabled for {config.environment}; set platform:vault.enabled to use it "
                "(or call vault_integration(), which declares nothing then)"
            )
        super().__init__("platform:platform:Vault", name, None, opts)
        # The SDK does not mark the provider token secret by itself; require_secret does.
        token = pulumi.Config(CONFIG_NAMESPACE).require_secret(VAULT_TOKEN_CONFIG_KEY)
        self.provider = vault.Provider(
            f"{name}-provider",
            token=token,
            **provider_args(config.vault.address),
            opts=pulumi.ResourceOptions(parent=self),
        )
        in_vault = pulumi.ResourceOptions(parent=self, provider=self.provider)
        # Protected in prod: deleting the mount deletes every tenant's secrets, and deleting the
        # auth method every tenant's login role. A rename would be a delete and a create.
        keep = in_vault.merge(pulumi.ResourceOptions(protect=config.high_availability))
        mount = vault.Mount(f"{name}-kv", **kv_mount_args(config.vault), opts=keep)
        auth = vault.AuthBackend(f"{name}-kubernetes-auth", **kubernetes_auth_args(config.vault), opts=keep)
        # A Vault outside the cluster reviews logins with a reviewer's token (secret config).
        reviewer = (
            pulumi.Config(CONFIG_NAMESPACE).require_secret(TOKEN_REVIEWER_JWT_CONFIG_KEY)
            if config.vault.outside_cluster
            else None
        )
        vault.kubernetes.AuthBackendConfig(
            f"{name}-kubernetes-auth-config",
            backend=auth.path,
            **kubernetes_auth_config_args(config.vault, token_reviewer_jwt=reviewer),
            opts=in_vault,
        )

        self.kv_mount = mount.path
        self.auth_path = auth.path
        self.register_outputs({"kv_mount": self.kv_mount, "auth_path": self.auth_path})


def vault_integration(
    name: str, *, config: PlatformConfig, opts: pulumi.ResourceOptions | None = None
) -> VaultIntegration | None:
    """The Vault integration when the environment uses Vault; ``None`` (nothing declared) otherwise."""
    if not config.vault.enabled:
        return None
    return VaultIntegration(name, config=config, opts=opts)
