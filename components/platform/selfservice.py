"""The self-service API and its workers in ``tenancy-system``: one image, two Deployments, the
credentials they need, the worker's permissions, and their route and policies."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.kubernetes import custom_resource
from components.platform.namespace import PlatformNamespace
from components.platform.passwords import password_taken_once
from tenancy.builders.selfservice import (
    ENV_SECRET,
    NAMES,
    NAMESPACE,
    SECRET_KEYS,
    api_sidecar,
    authorization_policies,
    autoscaler_manifest,
    deployment_manifest,
    disruption_budgets,
    host,
    namespace_ownership_policy,
    namespace_ownership_policy_binding,
    namespace_policies,
    service_account_manifest,
    service_image,
    service_manifest,
    state_claim_manifest,
    virtual_service_manifest,
    worker_admission_policy,
    worker_admission_policy_binding,
    worker_cluster_role,
    worker_cluster_role_binding,
    worker_sidecar,
    worker_tenant_cluster_role,
)
from tenancy.spec.platform import CONFIG_NAMESPACE, PlatformConfig

# Secret config keys (``pulumi config set --secret platform:<key>``).
GIT_REMOTE_CONFIG_KEY = "tenantsGitRemote"
VAULT_TOKEN_CONFIG_KEY = "selfServiceVaultToken"
# Optional: a decrypt-only Vault token for the API, issued by an operator (README); else the workers'.
API_VAULT_TOKEN_CONFIG_KEY = "selfServiceApiVaultToken"
OBJECT_STORAGE_ACCESS_KEY_ID = "objectStorageAccessKeyId"
OBJECT_STORAGE_SECRET_ACCESS_KEY = "objectStorageSecretAccessKey"


class SelfService(pulumi.ComponentResource):
    """The API at ``https://api.<domain>`` and the workers that run tenant stacks.

    Meshed: pass ``depends_on`` Istio's ``ready`` in ``opts``. ``redis_password`` is the platform
    Redis's (RedisSentinel.password).
    """

    namespace: pulumi.Output[str]
    url: pulumi.Output[str]
    image: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        config: PlatformConfig,
        redis_password: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("platform:platform:SelfService", name, None, opts)
        namespace = PlatformNamespace(
            f"{name}-namespace",
            namespace=NAMESPACE,
            mesh=True,
            policies=namespace_policies(config),
            dns=config.dns,
            opts=pulumi.ResourceOptions(parent=self),
        )
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[namespace])

        api_vault_token = configured_api_vault_token(config)
        credentials = k8s.core.v1.Secret(
            f"{name}-credentials",
            metadata={"name": ENV_SECRET, "namespace": NAMESPACE, "labels": namespace_labels()},
            type="Opaque",
            string_data=_credentials(name, config, redis_password, api_vault_token, parent=self),
            opts=in_namespace,
        )

        for role in NAMES:
            account = service_account_manifest(role)
            k8s.core.v1.ServiceAccount(
                f"{name}-{role}-account",
                metadata=account["metadata"],
                automount_service_account_token=account["automountServiceAccountToken"],
                opts=in_namespace,
            )
        role_manifest = worker_cluster_role()
        cluster_role = k8s.rbac.v1.ClusterRole(
            f"{name}-worker-role",
            metadata=role_manifest["metadata"],
            rules=role_manifest["rules"],
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Bound by no ClusterRoleBinding: each tenant stack binds it in its own namespace.
        tenant_role = worker_tenant_cluster_role()
        k8s.rbac.v1.ClusterRole(
            f"{name}-worker-tenant-role",
            metadata=tenant_role["metadata"],
            rules=tenant_role["rules"],
            opts=pulumi.ResourceOptions(parent=self),
        )
        binding = worker_cluster_role_binding()
        k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-worker-binding",
            metadata=binding["metadata"],
            role_ref=binding["roleRef"],
            subjects=binding["subjects"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace, cluster_role]),
        )
        admission = worker_admission_policy(group_prefix=config.kubernetes_group_prefix)
        admission_policy = k8s.admissionregistration.v1.ValidatingAdmissionPolicy(
            f"{name}-worker-admission",
            metadata=admission["metadata"],
            spec=admission["spec"],
            opts=pulumi.ResourceOptions(parent=self),
        )
        admission_binding = worker_admission_policy_binding()
        k8s.admissionregistration.v1.ValidatingAdmissionPolicyBinding(
            f"{name}-worker-admission-binding",
            metadata=admission_binding["metadata"],
            spec=admission_binding["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[admission_policy]),
        )
        # Who may make a namespace the platform's (tenancy.platform/ labels): the workers, cluster-admins.
        ownership = namespace_ownership_policy()
        ownership_policy = k8s.admissionregistration.v1.ValidatingAdmissionPolicy(
            f"{name}-namespace-ownership",
            metadata=ownership["metadata"],
            spec=ownership["spec"],
            opts=pulumi.ResourceOptions(parent=self),
        )
        ownership_binding = namespace_ownership_policy_binding()
        k8s.admissionregistration.v1.ValidatingAdmissionPolicyBinding(
            f"{name}-namespace-ownership-binding",
            metadata=ownership_binding["metadata"],
            spec=ownership_binding["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ownership_policy]),
        )
        claim = state_claim_manifest(config)
        if claim is not None:
            k8s.core.v1.PersistentVolumeClaim(
                f"{name}-worker-state", metadata=claim["metadata"], spec=claim["spec"], opts=in_namespace
            )

        image = service_image(config)
        if not image.built:
            pulumi.log.warn(
                "platform:selfService.image is not set: the self-service Deployments run no replicas "
                "until the deploy workflow sets it to the image it built",
                self,
            )
        running_image = image.reference
        after_credentials = pulumi.ResourceOptions(parent=self, depends_on=[namespace, credentials])
        for role in NAMES:
            manifest = deployment_manifest(
                config,
                role,
                image=running_image,
                started=image.built,
                api_vault_token=api_vault_token is not None,
            )
            k8s.apps.v1.Deployment(
                f"{name}-{role}", metadata=manifest["metadata"], spec=manifest["spec"], opts=after_credentials
            )
        service = service_manifest()
        k8s.core.v1.Service(
            f"{name}-api-service", metadata=service["metadata"], spec=service["spec"], opts=in_namespace
        )
        autoscaler = autoscaler_manifest(config)
        if autoscaler is not None:
            k8s.autoscaling.v2.HorizontalPodAutoscaler(
                f"{name}-api-autoscaler",
                metadata=autoscaler["metadata"],
                spec=autoscaler["spec"],
                opts=in_namespace,
            )
        for budget in disruption_budgets(config):
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-{budget['metadata']['name']}-budget",
                metadata=budget["metadata"],
                spec=budget["spec"],
                opts=in_namespace,
            )
        for policy in authorization_policies():
            custom_resource(f"{name}-{policy['metadata']['name']}", policy, in_namespace)
        custom_resource(f"{name}-route", virtual_service_manifest(config), in_namespace)
        custom_resource(f"{name}-worker-sidecar", worker_sidecar(config), in_namespace)
        custom_resource(f"{name}-api-sidecar", api_sidecar(config), in_namespace)

        self.namespace = namespace.name
        self.url = pulumi.Output.from_input(f"https://{host(config.domain)}")
        self.image = pulumi.Output.from_input(running_image)
        self.register_outputs({"namespace": self.namespace, "url": self.url, "image": self.image})


def namespace_labels() -> dict[str, str]:
    from tenancy.builders.platform_namespace import PLATFORM_LABELS

    return dict(PLATFORM_LABELS)


def configured_api_vault_token(config: PlatformConfig) -> pulumi.Output[str] | None:
    """``platform:selfServiceApiVaultToken`` (secret) when Vault is on; without Vault it is ignored."""
    token = pulumi.Config(CONFIG_NAMESPACE).get_secret(API_VAULT_TOKEN_CONFIG_KEY)
    if token is not None and not config.vault.enabled:
        pulumi.log.warn(
            f"platform:{API_VAULT_TOKEN_CONFIG_KEY} is set but vault.enabled is false: it is not used "
            "(the API decrypts tenant stacks' secrets with the generated passphrase)"
        )
        return None
    return token


def _credentials(
    name: str,
    config: PlatformConfig,
    redis_password: pulumi.Input[str],
    api_vault_token: pulumi.Output[str] | None,
    *,
    parent: pulumi.Resource,
) -> dict[str, pulumi.Input[str]]:
    """The credentials Secret's data: Redis's password, the git remote, state and secrets credentials."""
    platform = pulumi.Config(CONFIG_NAMESPACE)
    data: dict[str, pulumi.Input[str]] = {SECRET_KEYS["redis_password"]: pulumi.Output.secret(redis_password)}
    remote = platform.get_secret(GIT_REMOTE_CONFIG_KEY)
    if remote is None:
        pulumi.log.warn(
            f"platform:{GIT_REMOTE_CONFIG_KEY} is not set: the API keeps the tenants repository on its own "
            "volume, which a restart empties; set it to the tenants repository's URL with its credential"
        )
    else:
        data[SECRET_KEYS["git_remote"]] = remote
    if config.object_storage is not None:  # the state bucket (workers) and the backup bucket (both)
        data[SECRET_KEYS["access_key_id"]] = platform.require_secret(OBJECT_STORAGE_ACCESS_KEY_ID)
        data[SECRET_KEYS["secret_access_key"]] = platform.require_secret(OBJECT_STORAGE_SECRET_ACCESS_KEY)
    if config.vault.enabled:
        data[SECRET_KEYS["vault_token"]] = platform.require_secret(VAULT_TOKEN_CONFIG_KEY)
        if api_vault_token is not None:
            data[SECRET_KEYS["api_vault_token"]] = api_vault_token
    else:
        # Dev encrypts tenant stacks' secrets with a passphrase generated once and kept in the state.
        # Every dev tenant stack is encrypted with it: a new value would leave them all undecryptable,
        # so no input change replaces it. Not protected: dev protects nothing, so it can be torn down,
        # and the tenant stacks' state lives on the workers' volume, torn down with it.
        passphrase = password_taken_once(f"{name}-pulumi-passphrase", length=40, parent=parent, protect=False)
        data[SECRET_KEYS["passphrase"]] = pulumi.Output.secret(passphrase.result)
    return data
