"""The platform stack ``<env>``: shared services in dependency order, and the contract tenant stacks read.

Order: Istio first (its CRDs, CNI and istiod must exist before anything meshed starts); identity
(operator -> database -> Keycloak) next, since Argo CD's SSO needs Keycloak's client secret; then
Argo CD, observability and Redis, which only need the mesh; the self-service service after Redis,
whose password it is given. Vault is configured independently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
from pydantic.alias_generators import to_camel

from components.platform.argocd import ArgoCD
from components.platform.backup_admission import BackupAdmission
from components.platform.identity import Identity
from components.platform.istio import Istio
from components.platform.observability import Observability
from components.platform.redis import RedisSentinel
from components.platform.selfservice import SelfService
from components.platform.vault import vault_integration
from tenancy.builders.contract import tenant_contract
from tenancy.spec.platform import PlatformConfig, read_platform_config
from tenancy.stacks.tenant import (
    CONTRACT_OUTPUT,
    KEYCLOAK_PROVISIONER_SECRET_OUTPUT,
    KEYCLOAK_URL_OUTPUT,
)


def load_platform_config(environment: str) -> PlatformConfig:
    return read_platform_config(pulumi.Config("platform").get, environment=environment)


def declare_platform_stack(environment: str, *, project_dir: Path) -> dict[str, Any]:
    """Declare the platform services of ``environment``; return the stack outputs."""
    config = load_platform_config(environment)

    istio = Istio("istio", config=config)
    after_mesh = pulumi.ResourceOptions(depends_on=istio.ready)
    identity = Identity("identity", config=config, opts=after_mesh)
    argocd = ArgoCD(
        "argocd",
        config=config,
        oidc_client_secret=identity.argocd_client_secret,
        issuer_url=identity.issuer_url,
        opts=pulumi.ResourceOptions(depends_on=[*istio.ready, identity.keycloak]),
    )
    # Grafana's database in prod is a CNPG Cluster: it needs the operator's CRDs.
    observability = Observability(
        "observability",
        config=config,
        opts=pulumi.ResourceOptions(depends_on=[*istio.ready, identity.operator]),
    )
    redis = RedisSentinel("redis", config=config, opts=after_mesh)
    self_service = SelfService(
        "selfservice",
        config=config,
        redis_password=redis.password,
        opts=pulumi.ResourceOptions(depends_on=[*istio.ready, redis]),
    )
    vault = vault_integration("vault", config=config)
    # Before any tenant stack declares a backup CronJob: its ServiceAccount is the platform's alone.
    BackupAdmission("backup-admission")

    contract = tenant_contract(
        domain=config.domain,
        storage_class=config.storage_class,
        vault_kv_mount=config.vault.kv_mount,
        vault_auth_path=config.vault.kubernetes_auth_path,
    )
    outputs: dict[str, Any] = {
        CONTRACT_OUTPUT: {to_camel(key): value for key, value in contract.items()},
        "domain": config.domain,
        "gateway": istio.gateway_name,
        "issuerUrl": identity.issuer_url,
        "apiClientId": identity.api_client_id,
        # Tenant stacks declare their Keycloak groups with these (see components.tenant.identity).
        KEYCLOAK_URL_OUTPUT: identity.keycloak_url,
        KEYCLOAK_PROVISIONER_SECRET_OUTPUT: identity.provisioner_client_secret,
        "argocdUrl": argocd.url,
        "grafanaUrl": observability.grafana_url,
        "grafanaAdminPassword": observability.grafana_admin_password,
        "lokiPushUrl": observability.loki_push_url,
        "redisSentinelHosts": redis.sentinel_hosts,
        "redisMasterGroup": redis.master_group_name,
        "redisPassword": redis.password,
        "selfServiceUrl": self_service.url,
        "selfServiceImage": self_service.image,
    }
    if vault is not None:
        outputs["vaultKvMount"] = vault.kv_mount
        outputs["vaultAuthPath"] = vault.auth_path
    return outputs
