"""Vault names, paths and policies for the platform and its tenants (plain data, no Pulumi runtime).

Layout: one KV v2 mount for all tenants (``platform:vault.kvMount``); each tenant owns the secret
``<env>/<tenant>/qdrant`` under it, a policy ``tenant-<env>-<tenant>`` that can read that secret and
nothing else, and a Kubernetes auth role ``tenant-<env>-<tenant>`` that only the tenant namespace's
service accounts can log in with.

Why these names: dev and prod may share one Vault server, and Vault policies are global to it, so
the environment is part of every tenant name: the policy, the secret's folder and the auth role.

Sharing one Vault between environments also needs, in the two platform files, a different
``vault.kubernetesAuthPath`` and a different ``vault.kvMount`` per environment. Each platform stack
declares its own mount and auth method: on a shared path the second stack cannot create them (Vault
refuses a taken path), and if they were made to share one the stacks would overwrite each other's
settings (an auth method trusts exactly one cluster, see ``kubernetes_auth_config_args``) and
destroying one environment would delete the other's secrets or logins. Each platform file is
validated on its own, so nothing checks this across the two: keep the defaults (``tenants``,
``kubernetes``) only where each environment has its own Vault.

Every name is passed to Vault explicitly: the provider auto-names (random suffix) any name left out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from tenancy.builders.platform_namespace import Reach
from tenancy.spec.errors import SpecError, SpecIssue
from tenancy.spec.platform import VaultConfig
from tenancy.spec.tenant import Tenant

VAULT_TOKEN_CONFIG_KEY = "vaultToken"  # secret config ``platform:vaultToken``, read by both stack kinds
KV_VERSION = "2"
QDRANT_SECRET = "qdrant"
# Pods log in with a projected service-account token whose audience is this value; Vault 1.20+
# warns about roles without an audience, and an audience stops tokens meant for other services
# (or the API server itself) from being replayed against Vault.
AUDIENCE = "vault"
# Short-lived Vault tokens: the agent renews within the max TTL, then logs in again with a fresh
# service-account token, so a leaked Vault token is useful for minutes, not days.
TOKEN_TTL_SECONDS = 15 * 60
TOKEN_MAX_TTL_SECONDS = 60 * 60
# The in-cluster API server address: with it Vault reviews tokens using its own pod's credentials.
IN_CLUSTER_KUBERNETES_HOST = "https://kubernetes.default.svc"

READ_CAPABILITIES = frozenset({"read", "list"})
# Vault path segments are plain words: ``*`` and ``+`` are glob characters in policy paths, and a
# quote or newline would break out of the HCL string. Refusing them keeps every granted path literal.
_SEGMENT = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VAULT_PATH = re.compile(rf"^{_SEGMENT}(?:/{_SEGMENT})*$")


def check_vault_path(path: str, *, what: str) -> str:
    """``path`` unchanged if it is a literal Vault path; ValueError naming ``what`` otherwise."""
    if not _VAULT_PATH.match(path) or ".." in path:
        raise ValueError(
            f"{what} {path!r} is not a plain Vault path: use letters, digits, '-', '_' and '.' "
            "in '/'-separated segments, with no leading or trailing '/' and no '*' or '+'"
        )
    return path


# --- the platform side ---------------------------------------------------------------------------


def provider_args(address: str | None) -> dict[str, Any]:
    """Arguments of the ``pulumi_vault.Provider`` both stack kinds use (the token is added by the caller).

    ``skip_child_token`` is on: the token in ``platform:vaultToken`` is meant to be short-lived and
    narrowly scoped already (issued to CI or the worker per run). Without it the provider first mints
    a child token, which needs ``auth/token/create`` on that token's policy, fails for batch tokens,
    and would mint one more token per tenant update when hundreds run in parallel.
    """
    if not address:
        raise ValueError("vault.address is required to talk to Vault; set platform:vault.address")
    if not address.startswith(("https://", "http://")):
        raise ValueError(
            f"vault.address {address!r} must be an http(s) URL such as https://vault.example.com"
        )
    return {"address": address.rstrip("/"), "skip_child_token": True}


def kv_mount_args(vault: VaultConfig) -> dict[str, Any]:
    """The KV v2 secrets engine holding every tenant's secrets."""
    return {
        "path": check_vault_path(vault.kv_mount, what="vault.kvMount"),
        "type": "kv",
        "options": {"version": KV_VERSION},
        "description": "Tenant secrets (KV v2), one folder per environment and tenant; managed by Pulumi",
    }


def kubernetes_auth_args(vault: VaultConfig) -> dict[str, Any]:
    """The Kubernetes auth method tenants' service accounts log in with."""
    return {
        "type": "kubernetes",
        "path": check_vault_path(vault.kubernetes_auth_path, what="vault.kubernetesAuthPath"),
        "description": "Service accounts of tenant namespaces; managed by Pulumi",
    }


TOKEN_REVIEWER_JWT_CONFIG_KEY = "vaultTokenReviewerJwt"  # secret config, a Vault outside the cluster only


def kubernetes_auth_config_args(
    vault: VaultConfig, *, token_reviewer_jwt: pulumi.Input[str] | None = None
) -> dict[str, Any]:
    """How Vault checks a service-account token.

    Vault running in the cluster (the default): Vault calls the TokenReview API of ``kubernetes_host``
    with its own pod's service-account token and the CA mounted beside it (``disable_local_ca_jwt``
    false), which Kubernetes rotates for it; nothing long-lived is stored in Vault or in Pulumi state.
    That needs, outside this program: Vault's service account bound to the ``system:auth-delegator``
    ClusterRole (the Vault chart's ``server.authDelegator`` does it).

    Vault outside the cluster (``vault.cidrs``): it has no pod token, and cannot resolve or reach
    ``kubernetes.default.svc``, so it reviews with ``token_reviewer_jwt`` (the secret config
    ``platform:vaultTokenReviewerJwt``: a token of a service account bound to auth-delegator) at the
    API server's address as it reaches it, checking that server with ``vault.kubernetesCaCert``
    (both required by the config's validation). Without a reviewer token Vault would review each login
    with the caller's own token, which then needs auth-delegator for every tenant service account.
    """
    if not vault.outside_cluster:
        return {"kubernetes_host": vault.kubernetes_host, "disable_local_ca_jwt": False}
    if token_reviewer_jwt is None:
        raise ValueError(
            "a Vault outside the cluster (vault.cidrs) reviews tokens with "
            f"platform:{TOKEN_REVIEWER_JWT_CONFIG_KEY}"
        )
    return {
        "kubernetes_host": vault.kubernetes_host,
        "kubernetes_ca_cert": vault.kubernetes_ca_cert,
        "token_reviewer_jwt": token_reviewer_jwt,
        "disable_local_ca_jwt": True,
    }


# --- one tenant -----------------------------------------------------------------------------------


def secret_name(tenant: Tenant) -> str:
    """The tenant's secret under the KV mount (what ``vault kv get -mount=<mount>`` takes)."""
    return f"{tenant.environment}/{tenant.name}/{QDRANT_SECRET}"


def secret_api_path(tenant: Tenant, *, kv_mount: str) -> str:
    """The KV v2 API path of the secret: what policies, agent annotations and the CSI provider use."""
    return f"{kv_mount}/data/{secret_name(tenant)}"


def policy_name(tenant: Tenant) -> str:
    return f"tenant-{tenant.environment}-{tenant.name}"


def role_name(tenant: Tenant) -> str:
    """With the environment: ``dev.acme`` and ``prod.acme`` must not share a role on a shared Vault."""
    return f"tenant-{tenant.environment}-{tenant.name}"


@dataclass(frozen=True)
class PolicyRule:
    """One ``path "<path>" { capabilities = [...] }`` block; paths are literal (no globs)."""

    path: str
    capabilities: tuple[str, ...]


def tenant_policy_rules(tenant: Tenant, *, kv_mount: str) -> list[PolicyRule]:
    """Read the tenant's own secret and its metadata (versions, for ``vault kv get``); nothing else.

    KV v2 serves values under ``<mount>/data/`` and versions under ``<mount>/metadata/``; a rule
    without those prefixes matches nothing. Both paths are exact, so no other tenant's secret (nor
    a sibling such as ``acme-corp`` of ``acme``) can match.
    """
    mount = check_vault_path(kv_mount, what="vault.kvMount")
    name = check_vault_path(secret_name(tenant), what="tenant secret path")
    return [
        PolicyRule(f"{mount}/data/{name}", ("read",)),
        PolicyRule(f"{mount}/metadata/{name}", ("read", "list")),
    ]


def render_policy(rules: Sequence[PolicyRule]) -> str:
    """The HCL text Vault stores for ``rules``."""
    blocks = []
    for rule in rules:
        check_vault_path(rule.path, what="policy path")
        capabilities = ", ".join(f'"{capability}"' for capability in rule.capabilities)
        blocks.append(f'path "{rule.path}" {{\n  capabilities = [{capabilities}]\n}}\n')
    return "\n".join(blocks)


def tenant_policy(tenant: Tenant, *, kv_mount: str) -> str:
    return render_policy(tenant_policy_rules(tenant, kv_mount=kv_mount))


def tenant_role_args(tenant: Tenant) -> dict[str, Any]:
    """The Kubernetes auth role: any service account, but only in the tenant's own namespace.

    The policy list is left to the caller, who passes the Policy resource's name so the role
    is created after its policy.
    """
    return {
        "role_name": role_name(tenant),
        "bound_service_account_names": ["*"],
        "bound_service_account_namespaces": [tenant.namespace],
        "audience": AUDIENCE,
        "token_ttl": TOKEN_TTL_SECONDS,
        "token_max_ttl": TOKEN_MAX_TTL_SECONDS,
    }


# --- how a tenant workload reads its keys -------------------------------------------------------------
# The chosen path: the pod itself logs in (Vault agent, a client library, or the CLI) with a projected
# service-account token whose audience is AUDIENCE, so the token is useless against the API server or any
# other service, and short-lived. It needs no extra component on the platform (the Vault agent injector
# or CSI provider would, each with cluster-wide webhooks or node agents). Pods of the tenant namespace
# only: a pod inside the tenant's vCluster gets its projected token from the virtual cluster's API
# server, which this auth method (reviewing with the host cluster's) cannot verify (README, "Reading
# keys from Vault").
# What it needs, and the tenant stack declares: egress from the tenant namespace to Vault
# (tenancy.builders.network ``allow-vault``) and, for a Vault in the cluster, Vault's namespace among the
# tenant Sidecar's egress hosts (tenancy.builders.istio.tenant_sidecar).
TOKEN_VOLUME = "vault-token"
TOKEN_DIRECTORY = "/var/run/secrets/vault"
TOKEN_FILE = "token"
TOKEN_EXPIRATION_SECONDS = 600  # the kubelet renews it at 80% of its life


def vault_reach(vault: VaultConfig, *, environment: str) -> Reach | None:
    """How tenant pods reach Vault: its pods in ``namespace`` or the addresses in ``cidrs``, on ``port``;
    None without Vault. SpecError when Vault is on but unreachable (tenants get no any-address rule)."""
    if not vault.enabled:
        return None
    if not (vault.cidrs or vault.namespace):
        raise SpecError(
            [
                SpecIssue(
                    f"Pulumi.{environment}.yaml",
                    "platform:vault",
                    "has neither cidrs (a Vault outside the cluster) nor namespace (a Vault in it), so no "
                    "tenant workload could read its keys from Vault; set one of them",
                )
            ]
        )
    return Reach(port=vault.port, cidrs=tuple(vault.cidrs), namespace=vault.namespace)


def token_volume() -> dict[str, Any]:
    """The projected volume a tenant pod logs in to Vault with (README: "Reading keys from Vault")."""
    return {
        "name": TOKEN_VOLUME,
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": AUDIENCE,
                        "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
                        "path": TOKEN_FILE,
                    }
                }
            ]
        },
    }


def token_mount() -> dict[str, Any]:
    return {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIRECTORY, "readOnly": True}
