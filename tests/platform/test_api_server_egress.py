"""Platform namespaces reach the Kubernetes API server at its addresses (``kubernetesApiCidrs``) only,
and the few rules still open to any address are the ones the README lists, on their own ports."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tenancy.builders import argocd, identity, istio, observability, selfservice
from tenancy.render.runtime import StackCapture
from tenancy.spec.errors import SpecError
from tenancy.spec.platform import PlatformConfig, parse_platform_config, read_platform_config_file
from tests.conftest import PROJECT_DIR, captured_stack

API_PORTS = {443, 6443}


@pytest.fixture(scope="module", params=["dev", "prod"])
def platform(request: pytest.FixtureRequest) -> tuple[PlatformConfig, StackCapture]:
    environment = request.param
    config = read_platform_config_file(PROJECT_DIR / f"Pulumi.{environment}.yaml")
    return config, captured_stack(environment)


def _egress_rules(capture: StackCapture) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(namespace/name, pod selector, rule) of every egress rule of every NetworkPolicy."""
    for resource in capture.kubernetes_objects():
        if resource.kind != "NetworkPolicy":
            continue
        metadata, spec = resource.inputs["metadata"], resource.inputs["spec"]
        for rule in spec.get("egress") or []:
            yield f"{metadata['namespace']}/{metadata['name']}", spec["podSelector"], rule


def _ports(rule: dict[str, Any]) -> set[int] | None:
    """The TCP ports a rule opens; None: every port."""
    return {p["port"] for p in rule["ports"]} if rule.get("ports") else None


def _any_address(rule: dict[str, Any]) -> bool:
    peers = rule.get("to") or []
    return not peers or any(p.get("ipBlock", {}).get("cidr") in {"0.0.0.0/0", "::/0"} for p in peers)


def test_every_platform_workload_that_calls_the_api_reaches_it_by_address(
    platform: tuple[PlatformConfig, StackCapture],
) -> None:
    config, capture = platform
    callers = {
        "argocd/allow-apiserver": {},
        "istio-system/allow-apiserver": {"matchLabels": {"app": "istiod"}},
        "cnpg-system/allow-operator-to-apiserver": {"matchLabels": identity.OPERATOR_POD_LABELS},
        "iam/allow-postgres-to-apiserver": {"matchLabels": identity.DATABASE_WORKLOAD_LABELS},
        "observability/allow-alloy-to-api-server": {"matchLabels": observability.ALLOY_POD_LABELS},
        "tenancy-system/allow-workers-to-apiserver": {"matchLabels": selfservice.labels("worker")},
    }
    if config.high_availability:
        callers["observability/allow-grafana-db-to-api-server"] = {
            "matchLabels": observability.GRAFANA_DATABASE_POD_LABELS
        }
    found = {name: (pods, rule) for name, pods, rule in _egress_rules(capture) if name in callers}
    assert set(found) == set(callers)
    expected_peers = [{"ipBlock": {"cidr": cidr}} for cidr in config.kubernetes_api_cidrs]
    for name, (pods, rule) in found.items():
        assert pods == callers[name], name
        assert rule["to"] == expected_peers, name
        assert _ports(rule) == API_PORTS, name


def test_no_egress_rule_opens_the_api_servers_ports_to_any_address(
    platform: tuple[PlatformConfig, StackCapture],
) -> None:
    _, capture = platform
    for name, _, rule in _egress_rules(capture):
        ports = _ports(rule)
        if _any_address(rule):
            assert ports is not None and 6443 not in ports, name


def test_only_the_documented_rules_reach_any_address(platform: tuple[PlatformConfig, StackCapture]) -> None:
    """The README's accepted findings, each on its own ports: Keycloak's public URL (argocd-server) and
    git hosts at the default gitHosts (every address): the repo-server's, the self-service's git remote
    and the workers' Helm repositories. The object store and Vault join
    them only when their config names neither cidrs nor namespace, which neither shipped stack does
    (tests/platform/test_object_store_egress.py runs that case)."""
    config, capture = platform
    assert config.object_storage is None or config.object_storage.cidrs
    assert not config.vault.enabled or config.vault.cidrs
    open_rules = {name: _ports(rule) for name, _, rule in _egress_rules(capture) if _any_address(rule)}
    assert open_rules == {
        "argocd/allow-server-to-keycloak": {443},
        "argocd/allow-repo-server-to-git": {443, 22},
        "tenancy-system/allow-git": {443},
        "tenancy-system/allow-workers-to-chart-repositories": {443},
    }


def test_argocd_reaches_git_hosts_only_where_the_config_says() -> None:
    config = parse_platform_config(
        {
            "domain": "dev.data.example.com",
            "kubernetesApiCidrs": ["10.10.0.2/32"],
            "gitHosts": {"cidrs": ["192.0.2.0/24", "2001:db8::/64"], "ports": [443]},
        },
        environment="dev",
        file="Pulumi.dev.yaml",
    )
    [git] = [
        p for p in argocd.namespace_policies(config) if p["metadata"]["name"] == "allow-repo-server-to-git"
    ]
    assert git["spec"]["podSelector"] == {"matchLabels": argocd.REPO_SERVER_POD_LABELS}
    [rule] = git["spec"]["egress"]
    assert rule["to"] == [{"ipBlock": {"cidr": "192.0.2.0/24"}}, {"ipBlock": {"cidr": "2001:db8::/64"}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 443}]


@pytest.mark.parametrize(
    ("git_hosts", "field", "reason"),
    [
        ({"cidrs": []}, "platform:gitHosts.cidrs", "list at least one CIDR"),
        ({"cidrs": ["github.com"]}, "platform:gitHosts.cidrs.0", "is not a CIDR"),
        ({"ports": []}, "platform:gitHosts.ports", "list at least one port"),
        ({"ports": [70000]}, "platform:gitHosts.ports", "is not a port"),
    ],
)
def test_git_hosts_refuse_what_is_not_an_address_or_port(
    git_hosts: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(SpecError) as error:
        parse_platform_config(
            {"domain": "dev.example.com", "gitHosts": git_hosts}, environment="dev", file="Pulumi.dev.yaml"
        )
    [issue] = error.value.issues
    assert (issue.file, issue.field) == ("Pulumi.dev.yaml", field)
    assert reason in issue.reason


@pytest.mark.parametrize(
    "policies",
    [
        argocd.namespace_policies,
        istio.mesh_namespace_policies,
        identity.operator_namespace_policies,
        identity.identity_namespace_policies,
        observability.observability_policies,
        selfservice.namespace_policies,
    ],
)
def test_a_platform_without_api_server_addresses_fails_naming_the_key(policies: Any) -> None:
    config = parse_platform_config({"domain": "data.example.com"}, environment="dev", file="Pulumi.dev.yaml")
    with pytest.raises(SpecError) as error:
        policies(config)
    [issue] = error.value.issues
    assert (issue.file, issue.field) == ("Pulumi.dev.yaml", "platform:kubernetesApiCidrs")
    assert "must reach the Kubernetes API server" in issue.reason


def test_argocd_server_reaches_keycloak_at_the_gateway_when_its_addresses_are_known() -> None:
    config = parse_platform_config(
        {
            "domain": "dev.data.example.com",
            "kubernetesApiCidrs": ["10.10.0.2/32"],
            "gatewayCidrs": ["198.51.100.7/32"],
        },
        environment="dev",
        file="Pulumi.dev.yaml",
    )
    [keycloak] = [
        p for p in argocd.namespace_policies(config) if p["metadata"]["name"] == "allow-server-to-keycloak"
    ]
    assert keycloak["spec"]["podSelector"] == {"matchLabels": argocd.SERVER_POD_LABELS}
    [rule] = keycloak["spec"]["egress"]
    # The load balancer's address, and the gateway pods where kube-proxy hands that address over in-cluster.
    assert rule["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-ingress"}},
            "podSelector": {"matchLabels": {"istio": "ingressgateway"}},
        },
        {"ipBlock": {"cidr": "198.51.100.7/32"}},
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": 443}]


@pytest.mark.parametrize(
    ("cidr", "reason"), [("0.0.0.0/0", "narrows nothing"), ("auth.example.com", "not a CIDR")]
)
def test_gateway_cidrs_refuse_what_narrows_nothing(cidr: str, reason: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_platform_config(
            {"domain": "dev.example.com", "gatewayCidrs": [cidr]}, environment="dev", file="Pulumi.dev.yaml"
        )
    [issue] = error.value.issues
    assert (issue.file, issue.field) == ("Pulumi.dev.yaml", "platform:gatewayCidrs.0")
    assert reason in issue.reason
