"""The platform's Vault integration: a KV v2 mount and Kubernetes auth, only where Vault is enabled."""

from __future__ import annotations

from typing import Any

import pytest

from components.platform.vault import VaultIntegration, vault_integration
from tenancy.builders.vault import IN_CLUSTER_KUBERNETES_HOST
from tenancy.render.runtime import StackCapture, capture_program
from tenancy.spec.platform import PlatformConfig, parse_platform_config

TOKEN = {"platform:vaultToken": "s.platform-t0ken"}
PROVIDER_TYPE = "pulumi:providers:vault"
MOUNT_TYPE = "vault:index/mount:Mount"
AUTH_TYPE = "vault:index/authBackend:AuthBackend"
AUTH_CONFIG_TYPE = "vault:kubernetes/authBackendConfig:AuthBackendConfig"


def prod_config(**vault: Any) -> PlatformConfig:
    return parse_platform_config(
        {
            "domain": "data.example.com",
            "vault": {"enabled": True, "address": "https://vault.example.com/", **vault},
        },
        environment="prod",
        file="Pulumi.prod.yaml",
    )


def dev_config() -> PlatformConfig:
    return parse_platform_config(
        {"domain": "dev.data.example.com", "vault": {"enabled": False}},
        environment="dev",
        file="Pulumi.dev.yaml",
    )


def capture(config: PlatformConfig, values: dict[str, str] | None = None) -> StackCapture:
    def program() -> dict[str, Any]:
        integration = vault_integration("vault", config=config)
        if integration is None:
            return {}
        return {"kvMount": integration.kv_mount, "authPath": integration.auth_path}

    return capture_program(program, stack=config.environment, config=TOKEN if values is None else values)


@pytest.fixture(scope="module")
def prod() -> StackCapture:
    return capture(prod_config())


def test_prod_declares_a_kv_version_2_mount_at_the_configured_path(prod: StackCapture) -> None:
    [mount] = prod.of_type(MOUNT_TYPE)
    assert mount.inputs["path"] == "tenants"
    assert mount.inputs["type"] == "kv"
    assert mount.inputs["options"] == {"version": "2"}


def test_prod_declares_kubernetes_auth_at_the_configured_path(prod: StackCapture) -> None:
    [auth] = prod.of_type(AUTH_TYPE)
    assert auth.inputs["type"] == "kubernetes"
    assert auth.inputs["path"] == "kubernetes"


def test_kubernetes_auth_reviews_tokens_with_vaults_own_in_cluster_identity(prod: StackCapture) -> None:
    [auth_config] = prod.of_type(AUTH_CONFIG_TYPE)
    assert auth_config.inputs["backend"] == "kubernetes"
    assert auth_config.inputs["kubernetesHost"] == IN_CLUSTER_KUBERNETES_HOST
    assert auth_config.inputs["disableLocalCaJwt"] is False
    # Nothing long-lived is handed to Vault: its pod's own token and CA are used.
    assert "tokenReviewerJwt" not in auth_config.inputs
    assert "kubernetesCaCert" not in auth_config.inputs


def test_configured_paths_and_host_are_used() -> None:
    captured = capture(
        prod_config(
            kvMount="platform/tenants", kubernetesAuthPath="k8s-prod", kubernetesHost="https://10.0.0.1"
        )
    )
    assert captured.outputs == {"kvMount": "platform/tenants", "authPath": "k8s-prod"}
    [auth_config] = captured.of_type(AUTH_CONFIG_TYPE)
    assert auth_config.inputs["backend"] == "k8s-prod"
    assert auth_config.inputs["kubernetesHost"] == "https://10.0.0.1"


def _self_signed_ca() -> str:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test cluster CA")])
    now = datetime.datetime.now(datetime.UTC)
    builder = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
    builder = builder.serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


CA = _self_signed_ca()
OUTSIDE = {
    "cidrs": ["10.30.0.10/32"],
    "kubernetesHost": "https://api.example.com:6443",
    "kubernetesCaCert": CA,
}


def test_a_vault_outside_the_cluster_reviews_tokens_with_a_reviewer_at_the_address_it_reaches() -> None:
    """Found by a traffic review: the shipped prod config placed Vault outside the cluster (cidrs), yet
    its auth reviewed tokens as a Vault inside does (its own pod's token and CA, kubernetes.default.svc):
    every login of a tenant pod and backup job would have failed."""
    captured = capture(prod_config(**OUTSIDE), {**TOKEN, "platform:vaultTokenReviewerJwt": "eyJreviewer"})
    [auth_config] = captured.of_type(AUTH_CONFIG_TYPE)
    assert auth_config.inputs["kubernetesHost"] == "https://api.example.com:6443"
    assert auth_config.inputs["kubernetesCaCert"] == CA
    assert auth_config.inputs["disableLocalCaJwt"] is True
    assert auth_config.inputs["tokenReviewerJwt"] == "eyJreviewer"
    assert ("tokenReviewerJwt",) in auth_config.secret_paths
    with pytest.raises(Exception, match="platform:vaultTokenReviewerJwt"):
        capture(prod_config(**OUTSIDE), TOKEN)


@pytest.mark.parametrize(
    ("vault", "field"),
    [
        ({"cidrs": ["10.30.0.10/32"], "kubernetesCaCert": CA}, "vault.kubernetesHost"),
        (
            {**OUTSIDE, "kubernetesHost": "https://kubernetes.default.svc.cluster.local"},
            "vault.kubernetesHost",
        ),
        (
            {"cidrs": ["10.30.0.10/32"], "kubernetesHost": "https://api.example.com:6443"},
            "vault.kubernetesCaCert",
        ),
        (  # a PEM header around anything but a certificate
            {
                **OUTSIDE,
                "kubernetesCaCert": "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n"
                "-----END CERTIFICATE-----",
            },
            "vault.kubernetesCaCert",
        ),
    ],
)
def test_a_vault_outside_the_cluster_without_what_it_reviews_with_is_refused(
    vault: dict[str, Any], field: str
) -> None:
    from tenancy.spec.errors import SpecError

    with pytest.raises(SpecError) as caught:
        prod_config(**vault)
    assert any(field in issue.reason for issue in caught.value.issues), caught.value.issues


def test_vault_token_is_secret_in_the_provider_inputs(prod: StackCapture) -> None:
    [provider] = prod.of_type(PROVIDER_TYPE)
    assert provider.inputs["token"] == "s.platform-t0ken"
    assert ("token",) in provider.secret_paths
    assert provider.inputs["address"] == "https://vault.example.com"
    assert provider.inputs["skipChildToken"] == "true"  # provider inputs reach the engine as strings


def test_every_vault_object_is_a_child_of_the_integration(prod: StackCapture) -> None:
    vault_objects = [r for r in prod.resources if r.type.startswith(("vault:", "pulumi:providers:vault"))]
    assert len(vault_objects) == 4
    assert {r.parent for r in vault_objects} == {"vault"}


def test_outputs_are_the_mount_and_auth_paths(prod: StackCapture) -> None:
    assert prod.outputs == {"kvMount": "tenants", "authPath": "kubernetes"}
    assert prod.secret_outputs == set()


def test_vault_disabled_in_dev_declares_nothing() -> None:
    captured = capture(dev_config(), values={})
    assert captured.resources == []
    assert captured.outputs == {}


def test_the_component_refuses_a_config_without_vault() -> None:
    with pytest.raises(ValueError, match=r"vault\.enabled"):
        VaultIntegration("vault", config=dev_config())


def test_a_missing_vault_token_names_the_config_key() -> None:
    with pytest.raises(Exception, match="platform:vaultToken"):
        capture(prod_config(), values={})


@pytest.mark.parametrize("mount", ["tenants/*", "/tenants", "ten ants"])
def test_a_mount_that_is_not_a_literal_path_is_refused(mount: str) -> None:
    with pytest.raises(ValueError, match=r"vault\.kvMount"):
        capture(prod_config(kvMount=mount))
