"""A tenant's Vault secret, policy and role: it reads its own secret and nothing else."""

from __future__ import annotations

import json
import re
from typing import Any

import pulumi
import pytest

from components.tenant.vault import TenantVaultAccess, tenant_vault_provider
from tenancy.builders.vault import (
    AUDIENCE,
    TOKEN_MAX_TTL_SECONDS,
    PolicyRule,
    policy_name,
    role_name,
    secret_api_path,
    tenant_policy,
    tenant_policy_rules,
    tenant_role_args,
)
from tenancy.render.runtime import StackCapture, capture_program
from tenancy.spec.tenant import Tenant, TenantSpec, resolve

MOUNT = "tenants"
AUTH = "kubernetes"
WRITE_CAPABILITIES = {"create", "update", "patch", "delete", "sudo"}
_BLOCK = re.compile(r'path\s+"([^"]*)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]\s*\}')

SECRET_TYPE = "vault:kv/secretV2:SecretV2"
POLICY_TYPE = "vault:index/policy:Policy"
ROLE_TYPE = "vault:kubernetes/authBackendRole:AuthBackendRole"
PROVIDER_TYPE = "pulumi:providers:vault"


def tenant(name: str, environment: str = "prod") -> Tenant:
    spec = TenantSpec.model_validate({"name": name, "owners": [f"owner@{name}.example"], "plan": "small"})
    return resolve(spec, environment)


def parse_policy(hcl: str) -> list[PolicyRule]:
    """Read the HCL Vault would store; fails if any text is left that is not a path block."""
    rules = [
        PolicyRule(path, tuple(c.strip().strip('"') for c in caps.split(",") if c.strip()))
        for path, caps in _BLOCK.findall(hcl)
    ]
    assert _BLOCK.sub("", hcl).strip() == "", "policy holds something besides path blocks"
    return rules


def paths(rules: list[PolicyRule]) -> set[str]:
    return {rule.path for rule in rules}


# --- pure: the policy ---------------------------------------------------------------------------


def test_tenant_policy_reads_only_its_own_secret() -> None:
    rules = parse_policy(tenant_policy(tenant("acme"), kv_mount=MOUNT))
    assert {rule.path: set(rule.capabilities) for rule in rules} == {
        "tenants/data/prod/acme/qdrant": {"read"},
        "tenants/metadata/prod/acme/qdrant": {"read", "list"},
    }


def test_rendered_policy_says_exactly_what_the_rules_say() -> None:
    acme = tenant("acme")
    assert parse_policy(tenant_policy(acme, kv_mount=MOUNT)) == tenant_policy_rules(acme, kv_mount=MOUNT)


def test_tenant_policy_grants_no_write_capabilities() -> None:
    for rule in parse_policy(tenant_policy(tenant("acme"), kv_mount=MOUNT)):
        assert not set(rule.capabilities) & WRITE_CAPABILITIES, rule


def test_tenant_policy_has_no_wildcard_that_could_reach_other_tenants() -> None:
    for rule in parse_policy(tenant_policy(tenant("acme"), kv_mount=MOUNT)):
        assert "*" not in rule.path and "+" not in rule.path, rule
        assert "/prod/acme/" in rule.path


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("acme", "prod"), ("globex", "prod")),
        (("acme", "prod"), ("acme-corp", "prod")),  # a name that is a prefix of another
        (("acme", "prod"), ("acme", "dev")),  # the same tenant in another environment
    ],
)
def test_two_tenants_policies_share_no_path(first: tuple[str, str], second: tuple[str, str]) -> None:
    one = paths(parse_policy(tenant_policy(tenant(*first), kv_mount=MOUNT)))
    other = paths(parse_policy(tenant_policy(tenant(*second), kv_mount=MOUNT)))
    assert one.isdisjoint(other)
    # Literal paths only: no path of one tenant is a prefix a glob could extend into the other's.
    assert not any(b.startswith(a + "/") or a.startswith(b + "/") for a in one for b in other)


@pytest.mark.parametrize("mount", ["*", "tenants/*", "ten+ants", 'x" {} path "y', "/tenants", "a/../b", ""])
def test_a_mount_that_is_not_a_literal_path_is_refused(mount: str) -> None:
    with pytest.raises(ValueError, match="not a plain Vault path"):
        tenant_policy(tenant("acme"), kv_mount=mount)


def test_names_carry_environment_where_vault_is_shared() -> None:
    acme = tenant("acme")
    assert policy_name(acme) == "tenant-prod-acme"
    assert role_name(acme) == "tenant-prod-acme"
    assert secret_api_path(acme, kv_mount=MOUNT) == "tenants/data/prod/acme/qdrant"


def test_dev_and_prod_of_one_tenant_get_different_login_roles() -> None:
    prod, dev = tenant("acme"), tenant("acme", environment="dev")
    assert role_name(dev) == "tenant-dev-acme"
    assert role_name(dev) != role_name(prod)
    assert tenant_role_args(dev)["role_name"] != tenant_role_args(prod)["role_name"]


def test_role_is_bound_to_exactly_the_tenant_namespace() -> None:
    args = tenant_role_args(tenant("acme"))
    assert args["bound_service_account_namespaces"] == ["tenant-acme"]
    assert args["bound_service_account_names"] == ["*"]
    assert args["audience"] == AUDIENCE
    assert args["token_ttl"] <= args["token_max_ttl"] <= TOKEN_MAX_TTL_SECONDS


# --- the component under mocks ------------------------------------------------------------------


def capture_access(*tenants: Tenant) -> StackCapture:
    def program() -> dict[str, Any]:
        provider = tenant_vault_provider("vault", address="https://vault.example.com")
        outputs: dict[str, Any] = {}
        for each in tenants:
            access = TenantVaultAccess(
                f"{each.name}-vault",
                tenant=each,
                kv_mount=pulumi.Output.from_input(MOUNT),  # as read from the platform stack
                auth_path=pulumi.Output.from_input(AUTH),
                secrets={"api-key": pulumi.Output.secret("k1"), "read-only-api-key": "k2"},
                provider=provider,
            )
            outputs[f"{each.name}SecretPath"] = access.secret_path
            outputs[f"{each.name}PolicyName"] = access.policy_name
            outputs[f"{each.name}RoleName"] = access.role_name
        return outputs

    return capture_program(
        program,
        stack=f"{tenants[0].environment}.{tenants[0].name}",
        config={"platform:vaultToken": "s.t0ken"},
    )


@pytest.fixture(scope="module")
def captured() -> StackCapture:
    return capture_access(tenant("acme"), tenant("globex"))


def test_kv_secret_data_is_secret_in_the_captured_inputs(captured: StackCapture) -> None:
    secret = captured.named("acme-vault-secret")
    assert ("dataJson",) in secret.secret_paths
    assert json.loads(secret.inputs["dataJson"]) == {"api-key": "k1", "read-only-api-key": "k2"}


def test_kv_secret_lives_at_the_tenant_path_under_the_mount(captured: StackCapture) -> None:
    secret = captured.named("acme-vault-secret")
    assert secret.inputs["mount"] == MOUNT
    assert secret.inputs["name"] == "prod/acme/qdrant"
    assert secret.inputs["deleteAllVersions"] is True


def test_captured_policy_is_the_builders_policy(captured: StackCapture) -> None:
    policy = captured.named("acme-vault-policy")
    assert policy.inputs["policy"] == tenant_policy(tenant("acme"), kv_mount=MOUNT)


def test_captured_role_is_bound_to_exactly_the_tenant_namespace(captured: StackCapture) -> None:
    role = captured.named("acme-vault-role").inputs
    assert role["backend"] == AUTH
    assert role["boundServiceAccountNamespaces"] == ["tenant-acme"]
    assert role["boundServiceAccountNames"] == ["*"]
    assert role["tokenPolicies"] == ["tenant-prod-acme"]
    assert role["audience"] == AUDIENCE
    assert role["tokenTtl"] <= TOKEN_MAX_TTL_SECONDS


def test_every_vault_object_is_named_explicitly(captured: StackCapture) -> None:
    names = {
        (r.type, r.name): r.inputs.get("roleName") or r.inputs.get("name")
        for r in captured.resources
        if r.type in (SECRET_TYPE, POLICY_TYPE, ROLE_TYPE)
    }
    assert names == {
        (SECRET_TYPE, "acme-vault-secret"): "prod/acme/qdrant",
        (POLICY_TYPE, "acme-vault-policy"): "tenant-prod-acme",
        (ROLE_TYPE, "acme-vault-role"): "tenant-prod-acme",
        (SECRET_TYPE, "globex-vault-secret"): "prod/globex/qdrant",
        (POLICY_TYPE, "globex-vault-policy"): "tenant-prod-globex",
        (ROLE_TYPE, "globex-vault-role"): "tenant-prod-globex",
    }


def test_outputs_name_the_secret_policy_and_role(captured: StackCapture) -> None:
    assert captured.outputs["acmeSecretPath"] == "tenants/data/prod/acme/qdrant"
    assert captured.outputs["acmePolicyName"] == "tenant-prod-acme"
    assert captured.outputs["acmeRoleName"] == "tenant-prod-acme"
    assert captured.secret_outputs == set()


def test_tenant_provider_token_comes_from_secret_config(captured: StackCapture) -> None:
    provider = captured.named("vault")
    assert provider.type == PROVIDER_TYPE
    assert provider.inputs["address"] == "https://vault.example.com"
    assert provider.inputs["token"] == "s.t0ken"
    assert ("token",) in provider.secret_paths


def test_a_tenant_without_secrets_is_refused() -> None:
    def program() -> dict[str, Any]:
        provider = tenant_vault_provider("vault", address="https://vault.example.com", token="t")
        TenantVaultAccess(
            "acme-vault", tenant=tenant("acme"), kv_mount=MOUNT, auth_path=AUTH, secrets={}, provider=provider
        )
        return {}

    with pytest.raises(ValueError, match="no secrets"):
        capture_program(program, stack="prod.acme")


def test_tenant_provider_needs_a_vault_address() -> None:
    with pytest.raises(ValueError, match=r"vault\.address"):
        tenant_vault_provider("vault", address=None, token="t")
