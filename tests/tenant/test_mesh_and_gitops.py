"""A tenant's AuthorizationPolicies and Argo CD AppProject, and the spec's git repositories."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Any

import pytest

from components.tenant.gitops import TenantAppProject
from components.tenant.mesh import TenantMeshPolicies
from tenancy.builders.contract import PlatformRefs, tenant_contract
from tenancy.builders.gitops import IN_CLUSTER, app_project_manifest
from tenancy.builders.istio import SIDECAR_EGRESS_HOSTS, tenant_authorization_policies, tenant_sidecar
from tenancy.render.runtime import capture_program
from tenancy.spec.errors import SpecError
from tenancy.spec.tenant import Tenant, parse_tenant, resolve

PLATFORM = PlatformRefs.from_mapping(
    tenant_contract(
        domain="data.example.com",
        storage_class="standard",
        vault_kv_mount="tenants",
        vault_auth_path="kubernetes",
    )
)
GATEWAY = "cluster.local/ns/istio-ingress/sa/istio-ingressgateway"


def tenant(
    name: str = "acme", *, qdrant: bool = True, vcluster: bool = False, repositories: list[str] | None = None
) -> Tenant:
    document: dict[str, Any] = {"name": name, "owners": [f"ops@{name}.example"], "plan": "medium"}
    if qdrant:
        document["qdrant"] = {"enabled": True}
    if vcluster:
        document["vcluster"] = {"enabled": True}
    if repositories is not None:
        document["gitops"] = {"repositories": repositories}
    return resolve(parse_tenant(document, file=f"tenants/prod/{name}.yaml"), "prod")


# --- a small model of Istio's ALLOW evaluation, enough for the fields the builder uses ------------------


def _source_matches(source: dict[str, Any], namespace: str, principal: str) -> bool:
    assert set(source) <= {"namespaces", "principals", "notPrincipals"}, f"model does not know {set(source)}"
    if "namespaces" in source and namespace not in source["namespaces"]:
        return False
    if any(fnmatchcase(principal, p) for p in source.get("notPrincipals", [])):
        return False  # (a peer without mTLS has no principal: "" is in no list, so it matches)
    return "principals" not in source or any(fnmatchcase(principal, p) for p in source["principals"])


def _rule_matches(rule: dict[str, Any], namespace: str, principal: str, port: int) -> bool:
    sources = [f["source"] for f in rule.get("from", [])]
    operations = [t["operation"] for t in rule.get("to", [])]
    source_ok = not sources or any(_source_matches(s, namespace, principal) for s in sources)
    return source_ok and (not operations or any(str(port) in o["ports"] for o in operations))


def admits(policies: list[dict[str, Any]], *, namespace: str, principal: str, port: int) -> bool:
    """Istio's order: a matching DENY refuses whatever allows; else whether any ALLOW policy lets this
    peer reach this port (workload selectors ignored: the worst case for ALLOWs)."""
    actions = {policy["spec"].get("action", "ALLOW") for policy in policies}
    assert actions <= {"ALLOW", "DENY"}, actions
    for action in ("DENY", "ALLOW"):
        for policy in policies:
            if policy["spec"].get("action", "ALLOW") != action:
                continue
            if any(
                _rule_matches(rule, namespace, principal, port) for rule in policy["spec"].get("rules", [])
            ):
                return action == "ALLOW"
    return False


PORTS = [6333, 6334, 15020, 8080, 5432, 443, 8443]


@pytest.mark.parametrize("service_account", ["default", "qdrant", "istio-ingressgateway"])
def test_tenant_a_admits_nothing_from_tenant_b(service_account: str) -> None:
    policies = tenant_authorization_policies(tenant("acme", vcluster=True), PLATFORM)
    # Even a service account in tenant B named like the gateway's gets nowhere.
    principal = f"cluster.local/ns/tenant-globex/sa/{service_account}"
    for port in PORTS:
        assert not admits(policies, namespace="tenant-globex", principal=principal, port=port)


def test_tenant_namespace_denies_by_default_and_admits_itself() -> None:
    policies = tenant_authorization_policies(tenant("acme"), PLATFORM)
    [deny] = [p for p in policies if p["metadata"]["name"] == "allow-nothing"]
    assert deny["spec"] == {}  # ALLOW without rules: nothing else matches, so everything else is denied
    assert deny["metadata"]["namespace"] == "tenant-acme"
    assert admits(
        policies, namespace="tenant-acme", principal="cluster.local/ns/tenant-acme/sa/app", port=5432
    )


def test_ingress_gateway_reaches_qdrant_ports_only() -> None:
    policies = tenant_authorization_policies(tenant("acme"), PLATFORM)
    [qdrant] = [p for p in policies if p["metadata"]["name"] == "allow-ingress-gateway-to-qdrant"]
    assert qdrant["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "qdrant"
    assert admits([qdrant], namespace="istio-ingress", principal=GATEWAY, port=6333)
    assert admits([qdrant], namespace="istio-ingress", principal=GATEWAY, port=6334)
    assert not admits(policies, namespace="istio-ingress", principal=GATEWAY, port=5432)
    # Another workload in the gateway's namespace is not the gateway.
    other = "cluster.local/ns/istio-ingress/sa/something-else"
    assert not admits(policies, namespace="istio-ingress", principal=other, port=6333)


def test_only_qdrant_nodes_reach_qdrants_peer_port() -> None:
    """Found by a traffic review: Qdrant checks no key on its peer port (6335), and the namespace admits
    its own pods on every port; a workload with the read-only key, or none, could write and dump
    collections there. Now only the Qdrant nodes' own identity reaches it."""
    policies = tenant_authorization_policies(tenant("acme", vcluster=True), PLATFORM)
    node = "cluster.local/ns/tenant-acme/sa/qdrant"
    assert admits(policies, namespace="tenant-acme", principal=node, port=6335)
    for other in ("cluster.local/ns/tenant-acme/sa/app", "cluster.local/ns/tenant-acme/sa/vc-workload", ""):
        assert not admits(policies, namespace="tenant-acme", principal=other, port=6335), other
        assert admits(policies, namespace="tenant-acme", principal=other, port=6333)  # the API, keyed
    assert not admits(policies, namespace="istio-ingress", principal=GATEWAY, port=6335)


def test_without_qdrant_the_gateway_gets_nothing() -> None:
    policies = tenant_authorization_policies(tenant("acme", qdrant=False), PLATFORM)
    assert "allow-ingress-gateway-to-qdrant" not in {p["metadata"]["name"] for p in policies}
    assert not admits(policies, namespace="istio-ingress", principal=GATEWAY, port=6333)


def test_ingress_gateway_reaches_the_vcluster_api_port_only() -> None:
    policies = tenant_authorization_policies(tenant("acme", qdrant=False, vcluster=True), PLATFORM)
    [vcluster] = [p for p in policies if p["metadata"]["name"] == "allow-ingress-gateway-to-vcluster"]
    assert vcluster["spec"]["selector"]["matchLabels"] == {"app": "vcluster", "release": "vcluster"}
    assert admits([vcluster], namespace="istio-ingress", principal=GATEWAY, port=8443)
    assert not admits([vcluster], namespace="istio-ingress", principal=GATEWAY, port=443)
    other = "cluster.local/ns/istio-ingress/sa/something-else"
    assert not admits(policies, namespace="istio-ingress", principal=other, port=8443)


def test_without_a_vcluster_the_gateway_cannot_reach_its_port() -> None:
    policies = tenant_authorization_policies(tenant("acme"), PLATFORM)
    assert "allow-ingress-gateway-to-vcluster" not in {p["metadata"]["name"] for p in policies}
    assert not admits(policies, namespace="istio-ingress", principal=GATEWAY, port=8443)


def test_metrics_port_is_open_to_the_monitoring_namespace_only() -> None:
    policies = tenant_authorization_policies(tenant("acme"), PLATFORM)
    scraper = "cluster.local/ns/observability/sa/collector"
    assert admits(policies, namespace="observability", principal=scraper, port=15020)
    assert not admits(policies, namespace="observability", principal=scraper, port=6333)


def test_authorization_policies_use_the_v1_api_with_string_ports() -> None:
    for policy in tenant_authorization_policies(tenant("acme"), PLATFORM):
        assert policy["apiVersion"] == "security.istio.io/v1"
        assert policy["metadata"]["labels"]["tenancy.platform/tenant"] == "acme"
        for rule in policy["spec"].get("rules", []):
            for operation in rule.get("to", []):
                assert all(isinstance(port, str) for port in operation["operation"]["ports"])


# --- Sidecar -------------------------------------------------------------------------------------------


def test_tenant_sidecars_receive_only_their_namespace_and_the_mesh_control_plane() -> None:
    sidecar = tenant_sidecar(tenant("acme", vcluster=True))
    assert sidecar["apiVersion"] == "networking.istio.io/v1" and sidecar["kind"] == "Sidecar"
    assert sidecar["metadata"]["namespace"] == "tenant-acme"
    assert sidecar["metadata"]["labels"]["tenancy.platform/tenant"] == "acme"
    # No workloadSelector: it is the namespace's Sidecar, for every pod in it.
    assert set(sidecar["spec"]) == {"egress", "outboundTrafficPolicy"}
    assert sidecar["spec"]["egress"] == [{"hosts": ["./*", "istio-system/*"]}]
    assert list(SIDECAR_EGRESS_HOSTS) == ["./*", "istio-system/*"]


def test_tenant_sidecar_names_no_other_tenant_and_no_whole_mesh_wildcard() -> None:
    hosts = [h for rule in tenant_sidecar(tenant("acme"))["spec"]["egress"] for h in rule["hosts"]]
    assert not any(h.startswith(("*/", "~/")) or h == "*" for h in hosts)
    assert not any(h.startswith("tenant-") for h in hosts)


# --- AppProject -----------------------------------------------------------------------------------------


def test_app_project_deploys_only_into_the_tenant_namespace_here() -> None:
    project = app_project_manifest(tenant("acme"), "argocd")
    assert project["apiVersion"] == "argoproj.io/v1alpha1" and project["kind"] == "AppProject"
    assert project["metadata"]["name"] == "acme" and project["metadata"]["namespace"] == "argocd"
    spec = project["spec"]
    assert spec["destinations"] == [{"server": IN_CLUSTER, "namespace": "tenant-acme"}]
    assert spec["clusterResourceWhitelist"] == []  # nothing cluster-scoped


def test_app_project_sources_are_the_tenants_repositories() -> None:
    repos = ["https://git.example.com/acme/deploy.git", "git@github.com:acme/charts.git"]
    assert app_project_manifest(tenant("acme", repositories=repos), "argocd")["spec"]["sourceRepos"] == repos


def test_without_repositories_nothing_can_be_deployed() -> None:
    assert app_project_manifest(tenant("acme"), "argocd")["spec"]["sourceRepos"] == []


@pytest.mark.parametrize(
    ("group", "kind"),
    [
        ("", "ResourceQuota"),
        ("", "LimitRange"),
        ("networking.k8s.io", "NetworkPolicy"),
        ("rbac.authorization.k8s.io", "RoleBinding"),
        ("security.istio.io", "AuthorizationPolicy"),
        ("security.istio.io", "PeerAuthentication"),
        ("networking.istio.io", "VirtualService"),
        ("networking.istio.io", "Sidecar"),  # a tenant's own Sidecar could widen its proxies' scope
    ],
)
def test_platform_owned_kinds_are_blacklisted(group: str, kind: str) -> None:
    blacklist = app_project_manifest(tenant("acme"), "argocd")["spec"]["namespaceResourceBlacklist"]
    # Argo CD matches group and kind as globs (filepath.Match).
    assert any(fnmatchcase(group, b["group"]) and fnmatchcase(kind, b["kind"]) for b in blacklist)
    assert not any(
        fnmatchcase("apps", b["group"]) and fnmatchcase("Deployment", b["kind"]) for b in blacklist
    )


def test_roles_bind_the_tenants_keycloak_groups() -> None:
    acme = tenant("acme")
    roles = {r["name"]: r for r in app_project_manifest(acme, "argocd")["spec"]["roles"]}
    assert roles["tenant-admin"]["groups"] == ["/tenants/acme/admins"]
    assert roles["tenant-viewer"]["groups"] == ["/tenants/acme/viewers"]
    assert "p, proj:acme:tenant-admin, applications, *, acme/*, allow" in roles["tenant-admin"]["policies"]
    assert all(", get, " in line for line in roles["tenant-viewer"]["policies"])


def test_role_policies_pass_argo_cds_project_policy_validation() -> None:
    # Mirrors validatePolicy in argo-cd v3.4.4 pkg/apis/application/v1alpha1/types.go.
    resources = {"applications", "applicationsets", "repositories", "exec", "logs", "clusters"}
    for role in app_project_manifest(tenant("acme"), "argocd")["spec"]["roles"]:
        for line in role["policies"]:
            kind, subject, resource, action, obj, effect = (part.strip() for part in line.split(","))
            assert kind == "p" and subject == f"proj:acme:{role['name']}"
            assert resource in resources and action in {"get", "create", "update", "delete", "sync", "*"}
            assert re.fullmatch(r"acme(/[*\w\-.]+)?/[*\w\-.]+", obj) and effect == "allow"


# --- the spec -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/acme/deploy.git",
        "https://git.example.com:8443/platform/acme/deploy",
        "ssh://git@git.example.com:2222/acme/deploy.git",
        "git@github.com:acme/deploy.git",
    ],
)
def test_git_repositories_accept_https_and_ssh(url: str) -> None:
    assert tenant(repositories=[url]).repositories == (url,)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://github.com/acme/deploy.git", "not a git repository URL"),
        ("https://user:token@github.com/acme/deploy.git", "not a git repository URL"),
        ("https://github.com/acme/*", "wildcard"),
        ("*", "wildcard"),
        ("github.com/acme/deploy", "not a git repository URL"),
    ],
)
def test_git_repositories_reject_plain_http_credentials_and_wildcards(url: str, reason: str) -> None:
    with pytest.raises(SpecError) as error:
        tenant(repositories=[url])
    [issue] = error.value.issues
    assert issue.field.startswith("gitops.repositories") and reason in issue.reason


def test_repositories_default_to_none() -> None:
    assert tenant().repositories == ()


# --- components -----------------------------------------------------------------------------------------


def test_components_declare_the_policies_and_the_project() -> None:
    acme = tenant("acme", repositories=["https://github.com/acme/deploy.git"])

    def program() -> dict[str, Any]:
        TenantMeshPolicies("acme-mesh", tenant=acme, platform=PLATFORM)
        project = TenantAppProject("acme-gitops", tenant=acme, platform=PLATFORM)
        return {"project": project.project}

    captured = capture_program(program, stack="prod.acme", project="platform")
    policies = captured.of_type("kubernetes:security.istio.io/v1:AuthorizationPolicy")
    assert {p.inputs["metadata"]["name"] for p in policies} == {
        "allow-nothing",
        "allow-same-namespace",
        "qdrant-peers-only",
        "allow-ingress-gateway-to-qdrant",
        "allow-selfservice-workers-to-qdrant",
        "allow-metrics-scraping",
    }
    assert all(p.inputs["metadata"]["namespace"] == "tenant-acme" for p in policies)
    assert all(p.parent == "acme-mesh" for p in policies)
    [sidecar] = captured.of_type("kubernetes:networking.istio.io/v1:Sidecar")
    assert sidecar.inputs["metadata"]["namespace"] == "tenant-acme" and sidecar.parent == "acme-mesh"
    assert sidecar.inputs["spec"]["egress"] == [{"hosts": ["./*", "istio-system/*"]}]
    [deny] = [p for p in policies if p.inputs["metadata"]["name"] == "allow-nothing"]
    assert deny.inputs["spec"] == {}  # kept, not dropped as empty
    [project] = captured.of_type("kubernetes:argoproj.io/v1alpha1:AppProject")
    assert project.inputs["metadata"]["namespace"] == "argocd"
    assert project.inputs["spec"]["sourceRepos"] == ["https://github.com/acme/deploy.git"]
    assert captured.outputs == {"project": "acme"}
