"""Argo CD: Keycloak SSO, RBAC, HA in prod only, its route through the gateway, and its namespace."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
import yaml

from components.platform.argocd import ArgoCD
from tenancy import versions
from tenancy.builders import argocd as build
from tenancy.render.runtime import DeclaredResource, StackCapture, capture_program
from tenancy.render.schema import declared_schema_problems
from tenancy.spec.platform import PlatformConfig, read_platform_config_file
from tests.chart_keys import load_all
from tests.conftest import PROJECT_DIR

ISSUER = "https://auth.data.example.com/realms/platform"
CLIENT_SECRET = "keycloak-client-secret-value"
RELEASE = "kubernetes:helm.sh/v3:Release"


@pytest.fixture(scope="module")
def dev_config() -> PlatformConfig:
    return read_platform_config_file(PROJECT_DIR / "Pulumi.dev.yaml")


@pytest.fixture(scope="module")
def prod_config() -> PlatformConfig:
    return read_platform_config_file(PROJECT_DIR / "Pulumi.prod.yaml")


def values(config: PlatformConfig) -> dict[str, Any]:
    return build.render_argocd_values(config, oidc_config=build.oidc_config(ISSUER))


def capture(config: PlatformConfig) -> StackCapture:
    def program() -> dict[str, Any]:
        argocd = ArgoCD(
            "argocd",
            config=config,
            oidc_client_secret=pulumi.Output.secret(CLIENT_SECRET),
            issuer_url=pulumi.Output.from_input(ISSUER),
        )
        return {"namespace": argocd.namespace, "url": argocd.url}

    return capture_program(program, stack=config.environment)


@pytest.fixture(scope="module")
def dev(dev_config: PlatformConfig) -> StackCapture:
    return capture(dev_config)


@pytest.fixture(scope="module")
def prod(prod_config: PlatformConfig) -> StackCapture:
    return capture(prod_config)


def of_kind(captured: StackCapture, kind: str) -> list[DeclaredResource]:
    return [r for r in captured.resources if r.kind == kind]


def policy(captured: StackCapture, name: str) -> dict[str, Any]:
    [found] = [r.inputs for r in of_kind(captured, "NetworkPolicy") if r.inputs["metadata"]["name"] == name]
    return found


# --- values ---------------------------------------------------------------------------------------------


def test_sso_goes_to_keycloak_without_dex_or_local_admin(dev_config: PlatformConfig) -> None:
    chart = values(dev_config)
    assert chart["dex"] == {"enabled": False}
    cm = chart["configs"]["cm"]
    assert cm["admin.enabled"] is False
    # Reached through a port-forward while the public host is closed (adminSourceCidrs empty): its SSO
    # returns there, a URL Argo CD knows as its own.
    assert yaml.safe_load(cm["additionalUrls"]) == ["http://localhost:8080"]
    # The chart renders the value with toString: a dict would become "map[...]".
    assert isinstance(cm["oidc.config"], str)
    oidc = yaml.safe_load(cm["oidc.config"])
    assert oidc == {
        "name": "Keycloak",
        "issuer": ISSUER,
        "clientID": "argocd",
        "clientSecret": "$argocd-oidc:clientSecret",
        # argocd login --sso, through the realm's public client for it (no allowedAudiences: Argo CD
        # then accepts ID tokens issued to either client).
        "cliClientID": "argocd-cli",
        # The realm has no "groups" scope (Keycloak would refuse the request); a client mapper adds the claim.
        "requestedScopes": ["openid", "profile", "email"],
    }
    assert chart["global"]["domain"] == "argocd.dev.data.example.com"  # redirect URL base


def test_the_cli_client_argo_cd_names_is_a_public_pkce_client_of_the_realm(
    dev_config: PlatformConfig,
) -> None:
    from tenancy.builders.identity import realm_import

    oidc = yaml.safe_load(values(dev_config)["configs"]["cm"]["oidc.config"])
    [cli] = [c for c in realm_import("data.example.com")["clients"] if c["clientId"] == oidc["cliClientID"]]
    assert cli["publicClient"] is True and cli["attributes"]["pkce.code.challenge.method"] == "S256"
    assert [
        c["clientId"]
        for c in realm_import("data.example.com")["clients"]
        if c["clientId"] == oidc["clientID"]
    ]


def test_platform_admins_are_admins_and_everyone_else_gets_nothing_by_default(
    dev_config: PlatformConfig,
) -> None:
    rbac = values(dev_config)["configs"]["rbac"]
    assert all(isinstance(v, str) for v in rbac.values())  # argocd-rbac-cm data must be strings
    assert rbac["policy.csv"].splitlines() == ["g, /platform-admins, role:admin"]
    assert rbac["policy.default"] == ""
    assert rbac["scopes"] == "[groups]"


def test_server_speaks_plain_http_behind_the_gateway(dev_config: PlatformConfig) -> None:
    assert values(dev_config)["configs"]["params"] == {"server.insecure": True}


# The argo-cd chart's defaults for the server Service (values.yaml at the pinned version).
CHART_SERVICE_DEFAULTS = {
    "servicePortHttpName": "http",
    "servicePortHttpsName": "https",
    "servicePortHttpsAppProtocol": "",
}


def _istio_protocol(port: dict[str, str]) -> str:
    """How Istio picks a Service port's protocol: appProtocol first, else the name's prefix."""
    return port.get("appProtocol") or port["name"].split("-", 1)[0]


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_both_server_service_ports_reach_the_one_container_port_as_plain_http(
    environment: str, dev_config: PlatformConfig, prod_config: PlatformConfig
) -> None:
    config = dev_config if environment == "dev" else prod_config
    service = CHART_SERVICE_DEFAULTS | values(config)["server"].get("service", {})
    # templates/argocd-server/service.yaml: ports 80 and 443, both targeting containerPorts.server.
    ports = [
        {"name": service["servicePortHttpName"]},
        {"name": service["servicePortHttpsName"], "appProtocol": service["servicePortHttpsAppProtocol"]},
    ]
    assert len({port["name"] for port in ports}) == 2  # Service port names must differ
    # One target port, one protocol; and it is plain HTTP because server.insecure is on.
    assert {_istio_protocol(port) for port in ports} == {"http"}


def test_dev_runs_single_replicas_and_plain_redis(dev_config: PlatformConfig) -> None:
    chart = values(dev_config)
    assert "redis-ha" not in chart
    for component in ("server", "repoServer", "applicationSet", "controller"):
        assert "replicas" not in chart[component] and "pdb" not in chart[component]


def test_prod_follows_the_charts_ha_setup_with_real_pdbs(prod_config: PlatformConfig) -> None:
    chart = values(prod_config)
    assert chart["redis-ha"]["enabled"] is True
    for component in ("server", "repoServer", "applicationSet"):
        assert chart[component]["replicas"] == 2
        # pdb.enabled alone renders minAvailable 0.
        assert chart[component]["pdb"] == {"enabled": True, "minAvailable": 1}
    # More controller replicas would shard clusters, not stand in for each other.
    assert "replicas" not in chart["controller"] and "pdb" not in chart["controller"]
    assert chart["redis-ha"]["podDisruptionBudget"] == {"maxUnavailable": 1}
    assert chart["redis-ha"]["haproxy"]["podDisruptionBudget"] == {"maxUnavailable": 1}
    assert "redis" not in chart  # the single Redis is not rendered with redis-ha on


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf path -> value; dotted keys such as "oidc.config" stay one path segment."""
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out |= flatten(value, f"{prefix}.{key}" if prefix else key)
        return out
    return {prefix: tree}


def test_high_availability_changes_only_replicas_pdbs_redis_and_sizes(prod_config: PlatformConfig) -> None:
    single = flatten(values(prod_config.model_copy(update={"high_availability": False})))
    ha = flatten(values(prod_config))
    added = {p for p in ha.keys() - single.keys() if not p.startswith("redis-ha.")}
    assert added == {
        f"{component}.{key}"
        for component in ("server", "repoServer", "applicationSet")
        for key in ("replicas", "pdb.enabled", "pdb.minAvailable")
    }
    assert {p for p in single.keys() - ha.keys()} == {p for p in single if p.startswith("redis.resources.")}
    resized = {p.split(".")[0] for p in single.keys() & ha.keys() if single[p] != ha[p]}
    assert resized == {"controller", "server", "repoServer"}
    assert all(".resources." in p for p in single.keys() & ha.keys() if single[p] != ha[p])


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_every_argocd_container_has_requests_and_limits(
    environment: str, dev_config: PlatformConfig, prod_config: PlatformConfig
) -> None:
    chart = values(dev_config if environment == "dev" else prod_config)
    components = ["controller", "server", "repoServer", "applicationSet", "notifications", "redisSecretInit"]
    resources = [chart[c]["resources"] for c in components]
    if environment == "prod":
        ha = chart["redis-ha"]
        resources += [
            ha["redis"]["resources"],
            ha["sentinel"]["resources"],
            ha["splitBrainDetection"]["resources"],
            ha["init"]["resources"],
            ha["haproxy"]["resources"],
            ha["haproxy"]["init"]["resources"],
        ]
    else:
        resources.append(chart["redis"]["resources"])
    for item in resources:
        assert set(item) == {"requests", "limits"}
        assert all(set(part) == {"cpu", "memory"} for part in item.values())


def test_our_network_policies_replace_the_charts(dev_config: PlatformConfig) -> None:
    assert values(dev_config)["global"]["networkPolicy"] == {"create": False}


def test_crds_stay_installed_by_the_chart(prod_config: PlatformConfig) -> None:
    assert "crds" not in values(prod_config)  # chart default: install and keep


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_every_value_is_a_key_the_pinned_chart_reads(
    environment: str, dev_config: PlatformConfig, prod_config: PlatformConfig
) -> None:
    keys = load_all()["argo-cd"]
    assert keys.version == versions.ARGO_CD.version
    chart = values(dev_config if environment == "dev" else prod_config)
    assert keys.unknown(chart) == []


def test_virtual_service_routes_the_argocd_host_through_the_platform_gateway(
    prod_config: PlatformConfig,
) -> None:
    route = build.virtual_service_manifest(prod_config)
    assert route["apiVersion"] == "networking.istio.io/v1"
    assert route["spec"]["hosts"] == ["argocd.data.example.com"]
    assert route["spec"]["gateways"] == ["istio-ingress/platform-gateway"]
    [http] = route["spec"]["http"]
    assert http["route"] == [
        {"destination": {"host": "argocd-server.argocd.svc.cluster.local", "port": {"number": 80}}}
    ]


# --- the component --------------------------------------------------------------------------------------


def test_namespace_is_meshed_and_restricted(dev: StackCapture) -> None:
    [namespace] = of_kind(dev, "Namespace")
    labels = namespace.inputs["metadata"]["labels"]
    assert namespace.inputs["metadata"]["name"] == "argocd"
    assert labels["istio-injection"] == "enabled"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_client_secret_lives_in_a_labelled_secret_marked_secret(dev: StackCapture) -> None:
    [secret] = of_kind(dev, "Secret")
    metadata = secret.inputs["metadata"]
    assert (metadata["name"], metadata["namespace"]) == ("argocd-oidc", "argocd")
    # Without the label Argo CD uses "$argocd-oidc:clientSecret" literally.
    assert metadata["labels"]["app.kubernetes.io/part-of"] == "argocd"
    assert secret.inputs["stringData"] == {"clientSecret": CLIENT_SECRET}
    assert ("stringData",) in secret.secret_paths or ("stringData", "clientSecret") in secret.secret_paths
    [release] = dev.of_type(RELEASE)
    assert CLIENT_SECRET not in repr(release.inputs)
    assert CLIENT_SECRET not in repr(dev.outputs)


def test_release_waits_for_namespace_and_secret_and_is_pinned(prod: StackCapture) -> None:
    [release] = prod.of_type(RELEASE)
    assert set(release.depends_on) == {"argocd-namespace", "argocd-oidc-client"}
    assert release.inputs["name"] == "argocd" and release.inputs["namespace"] == "argocd"
    assert release.inputs["chart"] == "argo-cd" and release.inputs["version"] == "10.1.1"
    assert yaml.safe_load(release.inputs["values"]["configs"]["cm"]["oidc.config"])["issuer"] == ISSUER
    assert release.inputs["values"]["redis-ha"]["enabled"] is True


def test_only_the_ingress_gateway_reaches_argocd_server(dev: StackCapture) -> None:
    spec = policy(dev, "allow-ingress-gateway-to-server")["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "argocd-server"}}
    [rule] = spec["ingress"]
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-ingress"}},
            "podSelector": {"matchLabels": {"istio": "ingressgateway"}},
        }
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]  # the Service's port 80 targets it


def test_argocd_reaches_the_api_server_by_address_keycloak_and_git_hosts(dev: StackCapture) -> None:
    api = policy(dev, "allow-apiserver")["spec"]
    assert api["podSelector"] == {}
    assert api["egress"][0]["to"] == [{"ipBlock": {"cidr": "10.10.0.2/32"}}]  # Pulumi.dev.yaml
    assert {p["port"] for p in api["egress"][0]["ports"]} == {443, 6443}
    keycloak = policy(dev, "allow-server-to-keycloak")["spec"]
    assert keycloak["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "argocd-server"}}
    assert keycloak["egress"][0]["ports"] == [{"protocol": "TCP", "port": 443}]
    git = policy(dev, "allow-repo-server-to-git")["spec"]
    assert git["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "argocd-repo-server"}}
    # gitHosts' defaults: tenants choose their repositories, so every address (README, accepted findings).
    assert git["egress"][0]["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]
    assert {p["port"] for p in git["egress"][0]["ports"]} == {443, 22}
    assert "default-deny" in {r.inputs["metadata"]["name"] for r in of_kind(dev, "NetworkPolicy")}


def test_virtual_service_is_declared_in_the_argocd_namespace(dev: StackCapture) -> None:
    [route] = of_kind(dev, "VirtualService")
    assert route.inputs["metadata"]["namespace"] == "argocd"
    assert route.depends_on == ["argocd-namespace"]


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_every_kubernetes_object_matches_the_schema(
    environment: str, dev: StackCapture, prod: StackCapture
) -> None:
    captured = dev if environment == "dev" else prod
    assert declared_schema_problems(captured.kubernetes_objects()) == []


def test_outputs_are_the_namespace_and_url(dev: StackCapture) -> None:
    assert dev.outputs == {"namespace": "argocd", "url": "https://argocd.dev.data.example.com"}
