"""The tenant stack ``<env>.<tenant>``: one tenant's resources, wired to its platform stack."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pulumi
from pydantic.alias_generators import to_camel

from components.tenant import TenantResources
from components.tenant.identity import tenant_keycloak_provider
from components.tenant.vault import tenant_vault_provider
from tenancy.automation.contract import APPLIED_SPEC_OUTPUT
from tenancy.builders.backup import backup_platform
from tenancy.builders.contract import PlatformRefs
from tenancy.builders.vault import vault_reach
from tenancy.spec.errors import SpecError, SpecIssue
from tenancy.spec.platform import (
    CONFIG_NAMESPACE,
    KEYCLOAK_URL_KEY,
    MANAGE_KEYCLOAK_GROUPS_KEY,
    PLATFORM_STACK_KEY,
    read_platform_config_file,
    tenant_stack_setting_problems,
)
from tenancy.spec.tenant import Tenant, resolve
from tenancy.spec.tree import read_tenant_file
from tenancy.spec.yaml_loading import load_yaml

# Outputs of the platform stack that tenant stacks read.
CONTRACT_OUTPUT = "tenantContract"
KEYCLOAK_URL_OUTPUT = "keycloakUrl"
KEYCLOAK_PROVISIONER_SECRET_OUTPUT = "keycloakProvisionerSecret"  # a secret output
# The organisation of every stack on the DIY (self-managed) backend.
DIY_ORGANIZATION = "organization"


def tenants_dir(project_dir: Path, config: pulumi.Config) -> Path:
    """``platform:tenantsDir``, else $TENANCY_TENANTS_DIR, else ``tenants/`` beside Pulumi.yaml."""
    configured = config.get("tenantsDir") or os.environ.get("TENANCY_TENANTS_DIR")
    return Path(configured) if configured else project_dir / "tenants"


def tenant_file(project_dir: Path, environment: str, name: str, config: pulumi.Config) -> Path:
    path = tenants_dir(project_dir, config) / environment / f"{name}.yaml"
    if not path.is_file():
        raise SpecError([SpecIssue(str(path), "", f"no such tenant file for stack {environment}.{name}")])
    return path


def load_tenant(project_dir: Path, environment: str, name: str, config: pulumi.Config) -> Tenant:
    spec = read_tenant_file(tenant_file(project_dir, environment, name, config), environment=environment)
    return resolve(spec, environment)


def applied_document(project_dir: Path, environment: str, name: str, config: pulumi.Config) -> Any:
    """The tenant document this update applies, as written (``load_tenant`` validated it already)."""
    return load_yaml(tenant_file(project_dir, environment, name, config).read_text(encoding="utf-8"))


def platform_stack(environment: str, config: pulumi.Config) -> pulumi.StackReference:
    """The platform stack of ``environment``: ``platform:platformStack``, else ``<org>/<project>/<env>``.

    The organisation is this stack's own: the DIY backend reports ``organization``, Pulumi Cloud the
    real one, so the default works on both.
    """
    organization = pulumi.get_organization() or DIY_ORGANIZATION
    stack = config.get(PLATFORM_STACK_KEY) or f"{organization}/{pulumi.get_project()}/{environment}"
    return pulumi.StackReference(f"platform-{environment}", stack_name=stack)


def platform_refs(reference: pulumi.StackReference) -> PlatformRefs:
    """Read the platform stack's ``tenantContract``."""
    contract = reference.require_output(CONTRACT_OUTPUT)

    def pick(key: str) -> pulumi.Output[str]:
        return contract.apply(lambda values: str(values[key]))

    return PlatformRefs.from_mapping({field: pick(to_camel(field)) for field in PlatformRefs.field_names()})


def declare_tenant_stack(environment: str, name: str, *, project_dir: Path) -> dict[str, Any]:
    """Declare one tenant; return the stack outputs a tenant needs."""
    config = pulumi.Config(CONFIG_NAMESPACE)
    # What an operator set by hand (the automation checks what it sets before any run): named, clearly.
    settings = {
        key: config.get(key) for key in (KEYCLOAK_URL_KEY, MANAGE_KEYCLOAK_GROUPS_KEY, PLATFORM_STACK_KEY)
    }
    problems = tenant_stack_setting_problems(
        {key: value for key, value in settings.items() if value is not None}
    )
    if problems:
        raise SpecError([SpecIssue(f"stack {environment}.{name}", "", problem) for problem in problems])
    platform_config = read_platform_config_file(project_dir / f"Pulumi.{environment}.yaml")
    tenant = load_tenant(project_dir, environment, name, config)
    platform = platform_stack(environment, config)
    keycloak_provider = None
    # platform:manageKeycloakGroups false: the tenant's groups are managed outside this stack.
    if config.get_bool(MANAGE_KEYCLOAK_GROUPS_KEY) is not False:
        # platform:keycloakUrl: where this stack reaches Keycloak when that is not the platform's public
        # URL; the self-service workers set its Service in the cluster (TENANCY_STACK_CONFIG).
        keycloak_url = config.get(KEYCLOAK_URL_KEY)
        keycloak_provider = tenant_keycloak_provider(
            f"{name}-keycloak-provider",
            url=keycloak_url or platform.require_output(KEYCLOAK_URL_OUTPUT),
            client_secret=platform.require_output(KEYCLOAK_PROVISIONER_SECRET_OUTPUT),
        )
    vault_provider = None
    if platform_config.vault.enabled:
        vault_provider = tenant_vault_provider(
            f"{name}-vault-provider", address=platform_config.vault.address
        )
    resources = TenantResources(
        name,
        tenant=tenant,
        platform=platform_refs(platform),
        group_prefix=platform_config.kubernetes_group_prefix,
        keycloak_provider=keycloak_provider,
        kubernetes_api_cidrs=platform_config.kubernetes_api_cidrs,
        vault_provider=vault_provider,
        vault_reach=vault_reach(platform_config.vault, environment=environment),
        dns=platform_config.dns,
        backup=backup_platform(platform_config),
        vcluster_images=platform_config.vcluster_images,
    )
    outputs: dict[str, Any] = {
        "tenant": tenant.name,
        "environment": environment,
        "namespace": resources.namespace,
        "deletionProtection": tenant.deletion_protection,
        "argocdProject": resources.app_project.project,
        # What this update applied: the worker compares the next spec with it (Qdrant nodes, volumes)
        # even when its queue has no history of this stack (tenancy.automation.worker).
        APPLIED_SPEC_OUTPUT: applied_document(project_dir, environment, name, config),
    }
    if resources.qdrant is not None:
        outputs["qdrantEndpoint"] = resources.qdrant.http_endpoint
        outputs["qdrantGrpcEndpoint"] = resources.qdrant.grpc_endpoint
        outputs["qdrantPublicEndpoint"] = resources.qdrant.public_endpoint  # through the gateway
        outputs["qdrantPublicGrpcEndpoint"] = resources.qdrant.public_grpc_endpoint
        outputs["qdrantApiKeySecret"] = resources.qdrant.api_key_secret_name
        outputs["qdrantApiKey"] = resources.qdrant.api_key
        if resources.qdrant.read_only_api_key is not None:
            outputs["qdrantReadOnlyApiKey"] = resources.qdrant.read_only_api_key
    if resources.vault is not None:
        outputs["vaultSecretPath"] = resources.vault.secret_path
        outputs["vaultRole"] = resources.vault.role_name
        # With the projected token (README, "Reading keys from Vault"): where and how a pod logs in.
        outputs["vaultAddress"] = platform_config.vault.address
        outputs["vaultAuthPath"] = platform.require_output(CONTRACT_OUTPUT).apply(
            lambda contract: str(contract["vaultAuthPath"])
        )
    if resources.backup is not None:
        outputs["qdrantBackupSchedule"] = resources.backup.schedule
    if resources.vcluster is not None:
        outputs["vclusterKubeconfigSecret"] = resources.vcluster.kubeconfig_secret_name
        outputs["vclusterKubeconfig"] = resources.vcluster.kubeconfig
    return outputs
