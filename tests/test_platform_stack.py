"""The platform stacks dev and prod: the whole platform, in a safe order, HA exactly where it should be."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tenancy.builders.contract import NAMESPACES, PlatformRefs
from tenancy.render.runtime import GENERATED, StackCapture
from tests.conftest import captured_stack

Run = Callable[[str], StackCapture]


@pytest.fixture(scope="module")
def dev() -> StackCapture:

    return captured_stack("dev")


@pytest.fixture(scope="module")
def prod() -> StackCapture:

    return captured_stack("prod")


def releases(capture: StackCapture) -> dict[str, dict[str, Any]]:
    return {r.inputs["name"]: r.inputs for r in capture.of_type("kubernetes:helm.sh/v3:Release")}


def custom(capture: StackCapture, kind: str) -> list[dict[str, Any]]:
    return [r.inputs for r in capture.resources if r.kind == kind]


def test_both_stacks_declare_every_platform_service(dev: StackCapture, prod: StackCapture) -> None:
    expected = {
        "istio-base",
        "istio-cni",
        "istiod",
        "istio-ingressgateway",
        "argocd",
        "cloudnative-pg",
        "keycloak",
        "loki",
        "grafana",
        "alloy",
        "redis-ha",
    }
    for capture in (dev, prod):
        names = set(releases(capture))
        assert {n for n in expected if not any(n in name for name in names)} == set(), sorted(names)


def test_every_platform_namespace_denies_by_default(prod: StackCapture) -> None:
    namespaces = {r.inputs["metadata"]["name"] for r in prod.kubernetes_objects() if r.kind == "Namespace"}
    assert set(vars(NAMESPACES).values()) <= namespaces
    deny = {
        r.inputs["metadata"]["namespace"]
        for r in prod.kubernetes_objects()
        if r.kind == "NetworkPolicy" and r.inputs["metadata"]["name"] == "default-deny"
    }
    assert namespaces <= deny


def test_mesh_is_strict_with_one_port_level_exception_for_cnpg_status(prod: StackCapture) -> None:
    policies = custom(prod, "PeerAuthentication")
    mesh_wide = [
        p for p in policies if p["metadata"]["namespace"] == NAMESPACES.mesh and "selector" not in p["spec"]
    ]
    assert [p["spec"]["mtls"]["mode"] for p in mesh_wide] == ["STRICT"]
    exceptions = [p for p in policies if p["spec"].get("portLevelMtls")]
    assert [list(p["spec"]["portLevelMtls"]) for p in exceptions] == [["8000"]]
    assert exceptions[0]["spec"]["selector"]["matchLabels"]["cnpg.io/cluster"] == "keycloak-db"


def test_prod_runs_three_postgres_instances_and_dev_one(dev: StackCapture, prod: StackCapture) -> None:
    def keycloak_db(capture: StackCapture) -> dict[str, Any]:
        [cluster] = [c for c in custom(capture, "Cluster") if c["metadata"]["name"] == "keycloak-db"]
        return cluster

    assert keycloak_db(dev)["spec"]["instances"] == 1
    assert keycloak_db(prod)["spec"]["instances"] == 3
    assert keycloak_db(prod)["spec"]["enablePDB"] is True and "backup" in keycloak_db(prod)["spec"]
    assert "backup" not in keycloak_db(dev)["spec"]


def test_prod_is_highly_available_where_dev_is_small(dev: StackCapture, prod: StackCapture) -> None:
    assert releases(prod)["redis-ha"]["values"]["replicas"] == 3
    assert releases(dev)["redis-ha"]["values"]["replicas"] == 1
    assert releases(prod)["argocd"]["values"]["redis-ha"]["enabled"] is True
    assert releases(prod)["keycloak"]["values"]["replicas"] == 2
    assert releases(dev)["keycloak"]["values"]["replicas"] == 1
    assert (
        releases(prod)["loki"]["values"]["deploymentMode"]
        != releases(dev)["loki"]["values"]["deploymentMode"]
    )


def test_order_is_crds_then_mesh_then_database_then_keycloak_then_argocd(prod: StackCapture) -> None:
    assert "istio-istiod" in prod.named("identity").depends_on
    assert "identity-keycloak" in prod.named("argocd").depends_on
    assert {"istio-istiod", "identity-operator"} <= set(prod.named("observability").depends_on)
    assert "istio-cni" in prod.named("istio-istiod").depends_on
    assert "istio-base" in prod.named("istio-cni").depends_on


def test_secrets_are_generated_and_outputs_that_hold_them_are_secret(prod: StackCapture) -> None:
    assert {"grafanaAdminPassword", "redisPassword"} <= prod.secret_outputs
    for key, value in prod.outputs.items():
        if key not in prod.secret_outputs:
            assert GENERATED not in str(value), key
    assert len(prod.of_type("random:index/randomPassword:RandomPassword")) >= 4


def test_platform_exports_what_tenant_stacks_read(prod: StackCapture) -> None:
    contract = prod.outputs["tenantContract"]
    from pydantic.alias_generators import to_camel

    assert set(contract) == {to_camel(f) for f in PlatformRefs.field_names()}
    assert (
        contract["issuerUrl"] == prod.outputs["issuerUrl"] == "https://auth.data.example.com/realms/platform"
    )
    assert contract["storageClass"] == "fast-ssd"
    assert prod.outputs["vaultKvMount"] == "tenants"


def test_platform_exports_where_tenant_stacks_declare_their_groups(prod: StackCapture) -> None:
    from tenancy.render.runtime import platform_outputs_for
    from tenancy.spec.platform import read_platform_config_file
    from tests.conftest import PROJECT_DIR

    assert prod.outputs["keycloakUrl"] == "https://auth.data.example.com"
    assert prod.outputs["keycloakProvisionerSecret"] == f"{GENERATED}-identity-provisioner-client-secret"
    assert "keycloakProvisionerSecret" in prod.secret_outputs
    assert "keycloakUrl" not in prod.secret_outputs
    # What the mock runtime hands tenant stacks is what this stack exports.
    mocked = platform_outputs_for(read_platform_config_file(PROJECT_DIR / "Pulumi.prod.yaml"))
    assert set(mocked) <= set(prod.outputs)
    assert mocked["keycloakUrl"] == prod.outputs["keycloakUrl"]
    assert mocked["tenantContract"] == prod.outputs["tenantContract"]


def test_dev_runs_without_vault(dev: StackCapture) -> None:
    assert not [r for r in dev.resources if r.type.startswith("vault:")]
    assert "vaultKvMount" not in dev.outputs
