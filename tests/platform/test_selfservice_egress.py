"""Every connection the self-service API and workers open, traced through the real dev and prod
platform programs (their stack files, and with ``gitHosts`` narrowed): NetworkPolicies on both ends,
the caller's Sidecar scope (mesh-wide STRICT mTLS), and the URLs their environment really names. Each
rule a connection needs is removed in turn and the connection must fail; nothing else leaves on 443.

Connections: Keycloak's JWKS (both roles; the workers' readiness checks the keys), its token endpoint
(the API's portal code exchange) and its admin API (tenant stacks the workers run) at Keycloak's Service
in iam; the tenants git remote (both roles) and
Helm repositories (workers) at ``gitHosts.cidrs``. The API server, object store and Vault are traced in
test_api_server_egress.py and test_object_store_egress.py, tenants' Qdrant in test_worker_traffic.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import pytest
import yaml

from tenancy.automation.contract import EngineRequest, OperationKind, StackRef
from tenancy.automation.fake_engine import TenantProgram
from tenancy.builders import identity, selfservice
from tenancy.builders.contract import NAMESPACES
from tenancy.render.runtime import StackCapture, capture_stack
from tenancy.spec.yaml_loading import load_yaml
from tests.conftest import PROJECT_DIR, captured_stack
from tests.platform.support import (
    connection_allowed,
    egress_to_address_allowed,
    namespace_of,
    sidecar_knows,
)

GIT_CIDR, GIT_ADDRESS, GIT_PORT = "203.0.113.0/24", "203.0.113.7", 8443
ELSEWHERE = "192.0.2.1"
KEYCLOAK_CHART = "keycloakx"  # the chart's name: its pods' app.kubernetes.io/name (no nameOverride)


class Platform(NamedTuple):
    environment: str
    narrowed: bool  # gitHosts.cidrs and selfService.gitPort set
    capture: StackCapture


@pytest.fixture(
    scope="module",
    params=[(e, n) for e in ("dev", "prod") for n in (False, True)],
    ids=lambda p: f"{p[0]}-{'narrowed' if p[1] else 'shipped'}",
)
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Platform:
    environment, narrowed = request.param
    if not narrowed:
        return Platform(environment, False, captured_stack(environment))
    project = tmp_path_factory.mktemp(f"{environment}-git")
    shutil.copy(PROJECT_DIR / "Pulumi.yaml", project / "Pulumi.yaml")
    stack_file = yaml.safe_load((PROJECT_DIR / f"Pulumi.{environment}.yaml").read_text())
    config = stack_file["config"]
    config["platform:gitHosts"] = {"cidrs": [GIT_CIDR], "ports": [443]}
    config["platform:selfService"] = {**config.get("platform:selfService", {}), "gitPort": GIT_PORT}
    (project / f"Pulumi.{environment}.yaml").write_text(yaml.safe_dump(stack_file))
    return Platform(environment, True, capture_stack(environment, project_dir=project))


def objects(capture: StackCapture, kind: str) -> list[dict[str, Any]]:
    return [{"kind": r.kind, **r.inputs} for r in capture.kubernetes_objects() if r.kind == kind]


def namespace(capture: StackCapture, name: str) -> dict[str, Any]:
    [found] = [n for n in objects(capture, "Namespace") if n["metadata"]["name"] == name]
    return namespace_of(name, found["metadata"].get("labels", {}))


def deployment(capture: StackCapture, name: str) -> dict[str, Any]:
    [found] = [d for d in objects(capture, "Deployment") if d["metadata"]["name"] == name]
    return found


def pod_labels(capture: StackCapture, name: str) -> dict[str, str]:
    return dict(deployment(capture, name)["spec"]["template"]["metadata"]["labels"])


def env_of(capture: StackCapture, name: str) -> dict[str, str]:
    [container] = deployment(capture, name)["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def keycloak_pod(capture: StackCapture) -> dict[str, str]:
    """A Keycloak pod as the pinned keycloakx chart (7.1.11) labels it: ``keycloak.selectorLabels``
    (app.kubernetes.io/name: the chart's name unless nameOverride, app.kubernetes.io/instance: the
    release) plus ``podLabels`` (templates/statefulset.yaml)."""
    [release] = [
        r.inputs
        for r in capture.resources
        if r.type == "kubernetes:helm.sh/v3:Release" and r.inputs.get("chart") == KEYCLOAK_CHART
    ]
    assert release["version"] == "7.1.11" and "nameOverride" not in release["values"]
    return {
        "app.kubernetes.io/name": KEYCLOAK_CHART,
        "app.kubernetes.io/instance": release["name"],
        **release["values"].get("podLabels", {}),
    }


def keycloak_urls(capture: StackCapture, role: str) -> list[str]:
    """Where the role's process calls Keycloak: the JWKS, (API) the portal's code exchange, and (workers)
    the tenant stacks' provider."""
    env = env_of(capture, selfservice.NAMES[role])  # type: ignore[index]
    urls = [env["TENANCY_SERVICE_JWKS_URL"]]
    if role == "api":
        urls.append(env["TENANCY_SERVICE_PORTAL_TOKEN_URL"])
    if role == "worker":
        urls.append(json.loads(env["TENANCY_STACK_CONFIG"])["platform:keycloakUrl"])
    return urls


def reaches_keycloak(
    platform: Platform, role: str, url: str, *, policies: list[dict[str, Any]], sidecars: list[dict[str, Any]]
) -> bool:
    capture = platform.capture
    parts = urlsplit(url)
    host, service_port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    name, service_namespace = host.split(".")[:2]
    if (name, service_namespace) != (identity.KEYCLOAK_SERVICE, NAMESPACES.identity):
        return False  # not Keycloak's Service (the public URL goes through the gateway)
    # The chart's Service <fullname>-http: port httpPort (80) to the pods' "http" port (8080).
    assert service_port == identity.KEYCLOAK_SERVICE_PORT
    pod = pod_labels(capture, selfservice.NAMES[role])  # type: ignore[index]
    source = (namespace(capture, NAMESPACES.self_service), pod)
    destination = (namespace(capture, NAMESPACES.identity), keycloak_pod(capture))
    return connection_allowed(
        policies, source=source, destination=destination, port=identity.KEYCLOAK_HTTP_PORT
    ) and sidecar_knows(sidecars, namespace=NAMESPACES.self_service, pod=pod, host=host, port=service_port)


def out(platform: Platform, role: str, policies: list[dict[str, Any]], address: str, port: int) -> bool:
    pod = pod_labels(platform.capture, selfservice.NAMES[role])  # type: ignore[index]
    return egress_to_address_allowed(
        policies, namespace=NAMESPACES.self_service, pod=pod, address=address, port=port
    )


def git_address(platform: Platform) -> tuple[str, int]:
    return (GIT_ADDRESS, GIT_PORT) if platform.narrowed else ("140.82.121.3", 443)  # a github.com address


# What each connection needs, by (kind, namespace, name); each is removed in turn.
KEYCLOAK_RULES = [
    ("NetworkPolicy", NAMESPACES.self_service, "allow-keycloak"),
    ("NetworkPolicy", NAMESPACES.identity, "allow-selfservice-to-keycloak"),
]
SIDECARS = {"api": selfservice.API_NAME, "worker": selfservice.WORKER_NAME}


def without(found: list[dict[str, Any]], key: tuple[str, str, str]) -> list[dict[str, Any]]:
    return [o for o in found if (o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) != key]


@pytest.mark.parametrize("role", ["api", "worker"])
def test_both_roles_reach_keycloak_in_the_cluster_and_only_through_each_rule(
    platform: Platform, role: str
) -> None:
    policies, sidecars = objects(platform.capture, "NetworkPolicy"), objects(platform.capture, "Sidecar")
    urls = keycloak_urls(platform.capture, role)
    for url in urls:
        assert reaches_keycloak(platform, role, url, policies=policies, sidecars=sidecars), url
        removals = [*KEYCLOAK_RULES, ("Sidecar", NAMESPACES.self_service, SIDECARS[role])]
        for key in removals:
            assert not reaches_keycloak(
                platform, role, url, policies=without(policies, key), sidecars=without(sidecars, key)
            ), (url, key)
    # Keycloak's pods on no other port, and no other iam pod (its database) from here.
    pod = pod_labels(platform.capture, selfservice.NAMES[role])  # type: ignore[index]
    source = (namespace(platform.capture, NAMESPACES.self_service), pod)
    iam = namespace(platform.capture, NAMESPACES.identity)
    database = {"cnpg.io/cluster": identity.DATABASE_CLUSTER, "cnpg.io/podRole": "instance"}
    assert not connection_allowed(policies, source=source, destination=(iam, database), port=5432)
    for port in identity.JGROUPS_PORTS:
        assert not connection_allowed(
            policies, source=source, destination=(iam, keycloak_pod(platform.capture)), port=port
        )


def test_keycloak_admits_only_the_self_service_from_tenancy_system(platform: Platform) -> None:
    policies = objects(platform.capture, "NetworkPolicy")
    iam = namespace(platform.capture, NAMESPACES.identity)
    keycloak = (iam, keycloak_pod(platform.capture))
    other = (namespace(platform.capture, NAMESPACES.self_service), {"app": "something-else"})
    assert not connection_allowed(
        policies, source=other, destination=keycloak, port=identity.KEYCLOAK_HTTP_PORT
    )
    tenant = (
        namespace_of("tenant-acme", {"istio-injection": "enabled"}),
        pod_labels(platform.capture, "selfservice-worker"),
    )
    assert not connection_allowed(
        policies, source=tenant, destination=keycloak, port=identity.KEYCLOAK_HTTP_PORT
    )


GIT_RULE = ("NetworkPolicy", NAMESPACES.self_service, "allow-git")
CHARTS_RULE = ("NetworkPolicy", NAMESPACES.self_service, "allow-workers-to-chart-repositories")


def needed(role: str, port: int) -> list[tuple[str, str, str]]:
    """The rules that let ``role`` out to gitHosts on ``port``: the workers' Helm rule joins the git
    rule when the git port is 443 (the shipped default)."""
    rules = [GIT_RULE] if port != selfservice.CHART_REPOSITORY_PORT else [GIT_RULE, CHARTS_RULE]
    return rules if role == "worker" else [GIT_RULE]


def without_all(found: list[dict[str, Any]], keys: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    for key in keys:
        found = without(found, key)
    return found


@pytest.mark.parametrize("role", ["api", "worker"])
def test_the_git_remote_is_reached_at_git_hosts_only(platform: Platform, role: str) -> None:
    policies = objects(platform.capture, "NetworkPolicy")
    address, port = git_address(platform)
    assert out(platform, role, policies, address, port)
    assert not out(platform, role, without_all(policies, needed(role, port)), address, port)
    if platform.narrowed:
        assert not out(platform, role, policies, ELSEWHERE, port)
        assert not out(platform, role, policies, GIT_ADDRESS, 22)


def test_only_workers_fetch_charts_from_helm_repositories_at_git_hosts(platform: Platform) -> None:
    policies = objects(platform.capture, "NetworkPolicy")
    address = GIT_ADDRESS if platform.narrowed else "185.199.108.153"  # qdrant.github.io's address
    port = selfservice.CHART_REPOSITORY_PORT
    assert out(platform, "worker", policies, address, port)
    git_port = GIT_PORT if platform.narrowed else 443
    removed = [CHARTS_RULE] + ([GIT_RULE] if git_port == port else [])
    assert not out(platform, "worker", without_all(policies, removed), address, port)
    if platform.narrowed:  # the API's git port is 8443 here: 443 is the workers' alone, at gitHosts only
        assert not out(platform, "api", policies, address, port)
        assert not out(platform, "worker", policies, ELSEWHERE, port)
        assert not out(platform, "api", policies, ELSEWHERE, port)  # Keycloak is no longer reached outside


def test_the_tenant_program_run_by_the_workers_reaches_keycloak_in_the_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers' TENANCY_STACK_CONFIG, as AutomationSettings read it, through the engine's stack config
    into the real tenant program: its Keycloak provider uses the Service in iam; by hand, the public URL."""
    from tenancy.automation.settings import AutomationSettings

    capture = captured_stack("prod")
    monkeypatch.setenv(
        "TENANCY_STACK_CONFIG", env_of(capture, selfservice.WORKER_NAME)["TENANCY_STACK_CONFIG"]
    )
    settings = AutomationSettings()
    spec = load_yaml((PROJECT_DIR / "tenants/prod/acme.yaml").read_text())
    request = EngineRequest("op", StackRef("prod", "acme"), OperationKind.up, spec)
    urls = {}
    for who, extra in (("workers", settings.stack_config), ("by hand", {})):
        program = TenantProgram(
            PROJECT_DIR, scratch_dir=tmp_path / who, stack_config=extra, environ={"VAULT_TOKEN": "s.t"}
        )
        [provider] = [r for r in program.run(request).declared if r.type == "pulumi:providers:keycloak"]
        urls[who] = provider.inputs["url"]
    assert urls == {"workers": identity.KEYCLOAK_INTERNAL_URL, "by hand": "https://auth.data.example.com"}
