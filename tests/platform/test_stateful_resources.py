"""Prod's stateful platform resources survive `pulumi destroy`, a stack mix-up or a rename."""

from __future__ import annotations

import pytest

from tenancy.render.runtime import DeclaredResource, StackCapture
from tests.conftest import captured_stack

# Where the platform keeps state: Keycloak's and Grafana's databases, logs, Redis, tenant secrets.
PROTECTED_IN_PROD = [
    "identity-database",
    "observability-grafana-db",
    "vault-kv",
    "vault-kubernetes-auth",
    # Keycloak takes these in only once (first start, first realm import): a new value never reaches it.
    "identity-admin-password",
    "identity-argocd-client-secret",
    "identity-provisioner-client-secret",
    "observability-grafana-admin-password",  # Grafana sets it when it creates its database
]
RETAINED_IN_PROD = ["identity-database", "observability-grafana-db", "observability-loki", "redis-release"]


@pytest.fixture(scope="module")
def dev() -> StackCapture:
    return captured_stack("dev")


@pytest.fixture(scope="module")
def prod() -> StackCapture:
    return captured_stack("prod")


def managed(capture: StackCapture, name: str) -> DeclaredResource:
    [found] = [r for r in capture.resources if r.name == name and not r.type.startswith("pulumi:providers:")]
    return found


@pytest.mark.parametrize("name", PROTECTED_IN_PROD)
def test_prod_refuses_to_delete_or_replace_stateful_resources(prod: StackCapture, name: str) -> None:
    assert managed(prod, name).protect


@pytest.mark.parametrize("name", RETAINED_IN_PROD)
def test_prod_keeps_databases_logs_and_redis_in_the_cluster_when_they_leave_the_program(
    prod: StackCapture, name: str
) -> None:
    assert managed(prod, name).retain_on_delete


def test_the_vault_mount_and_auth_method_are_the_ones_protected(prod: StackCapture) -> None:
    mount = managed(prod, "vault-kv")
    auth = managed(prod, "vault-kubernetes-auth")
    assert (mount.type, auth.type) == ("vault:index/mount:Mount", "vault:index/authBackend:AuthBackend")


def test_dev_protects_nothing_so_it_can_be_torn_down(dev: StackCapture) -> None:
    assert not [r.name for r in dev.resources if r.protect or r.retain_on_delete]


def test_prod_protects_nothing_else(prod: StackCapture) -> None:
    assert sorted(r.name for r in prod.resources if r.protect) == sorted(PROTECTED_IN_PROD)
    assert sorted(r.name for r in prod.resources if r.retain_on_delete) == sorted(RETAINED_IN_PROD)


def test_no_config_change_replaces_grafanas_admin_password(dev: StackCapture, prod: StackCapture) -> None:
    # Grafana sets it when it creates its database; a new value would only reach the stack output.
    for capture in (dev, prod):
        ignored = managed(capture, "observability-grafana-admin-password").ignore_changes
        assert {"length", "special", "upper", "lower", "numeric", "keepers"} <= set(ignored)
