"""Istio: chart values per environment, mesh-wide mTLS, the platform Gateway, and the component's order."""

from __future__ import annotations

from typing import Any

import pytest

from components.platform.istio import Istio
from tenancy import versions
from tenancy.builders import contract
from tenancy.builders import istio as build
from tenancy.render.runtime import DeclaredResource, StackCapture, capture_program
from tenancy.render.schema import declared_schema_problems
from tenancy.spec.platform import PlatformConfig, parse_platform_config, read_platform_config_file
from tests.chart_keys import leaf_paths, load_all
from tests.conftest import PROJECT_DIR

RELEASE = "kubernetes:helm.sh/v3:Release"


@pytest.fixture(scope="module")
def dev_config() -> PlatformConfig:
    return read_platform_config_file(PROJECT_DIR / "Pulumi.dev.yaml")


@pytest.fixture(scope="module")
def prod_config() -> PlatformConfig:
    return read_platform_config_file(PROJECT_DIR / "Pulumi.prod.yaml")


def capture(config: PlatformConfig) -> StackCapture:
    def program() -> dict[str, Any]:
        istio = Istio("istio", config=config)
        return {
            "gatewayName": istio.gateway_name,
            "ingressNamespace": istio.ingress_namespace,
            "meshNamespace": istio.mesh_namespace,
        }

    return capture_program(program, stack=config.environment)


@pytest.fixture(scope="module")
def dev(dev_config: PlatformConfig) -> StackCapture:
    return capture(dev_config)


@pytest.fixture(scope="module")
def prod(prod_config: PlatformConfig) -> StackCapture:
    return capture(prod_config)


def release(captured: StackCapture, chart: str) -> DeclaredResource:
    [found] = [r for r in captured.of_type(RELEASE) if r.inputs["chart"] == chart]
    return found


def of_kind(captured: StackCapture, kind: str) -> list[DeclaredResource]:
    return [r for r in captured.resources if r.kind == kind]


def differing_paths(dev: dict[str, Any], prod: dict[str, Any]) -> set[str]:
    def flat(values: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for path in leaf_paths(values):
            node: Any = values
            for part in path.split("."):
                node = node[part]
            out[path] = node
        return out

    a, b = flat(dev), flat(prod)
    return {path for path in a.keys() | b.keys() if a.get(path) != b.get(path)}


# --- values ---------------------------------------------------------------------------------------------


def test_dev_istiod_runs_one_fixed_replica_without_autoscaler(dev_config: PlatformConfig) -> None:
    values = build.istiod_values(dev_config)
    # Autoscaling is on by default and would make the chart ignore replicaCount.
    assert values["autoscaleEnabled"] is False
    assert values["replicaCount"] == 1
    assert "autoscaleMin" not in values


def test_prod_istiod_autoscales_from_two_so_the_chart_renders_its_pdb(prod_config: PlatformConfig) -> None:
    values = build.istiod_values(prod_config)
    assert values["autoscaleEnabled"] is True
    # The chart renders the PDB only when the HPA's minimum exceeds one.
    assert values["autoscaleMin"] >= 2 and values["autoscaleMax"] > values["autoscaleMin"]
    assert "replicaCount" not in values  # ignored while the HPA is on


def test_prod_istiod_differs_from_dev_only_in_scaling_sizes_and_spread(
    dev_config: PlatformConfig, prod_config: PlatformConfig
) -> None:
    changed = differing_paths(build.istiod_values(dev_config), build.istiod_values(prod_config))
    assert {p.split(".")[0] for p in changed} == {
        "autoscaleEnabled",
        "autoscaleMin",
        "autoscaleMax",
        "replicaCount",
        "resources",
        "topologySpreadConstraints",
    }


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_istiod_injects_native_sidecars_whatever_the_release_defaults(
    environment: str, dev_config: PlatformConfig, prod_config: PlatformConfig
) -> None:
    values = build.istiod_values(dev_config if environment == "dev" else prod_config)
    # The injection template reads .NativeSidecars from istiod's ENABLE_NATIVE_SIDECARS; a string, as
    # the chart renders env values quoted and istiod parses "true".
    assert values["env"]["ENABLE_NATIVE_SIDECARS"] == "true"


def test_istiod_untaints_new_nodes_once_the_cni_agent_runs_there(prod_config: PlatformConfig) -> None:
    taint = build.istiod_values(prod_config)["taint"]
    assert taint["enabled"] is True
    assert taint["name"] == "cni.istio.io/not-ready"
    # The agent runs in kube-system, not in istiod's namespace: the controller is told where to look.
    assert taint["namespace"] == build.CNI_NAMESPACE == "kube-system"
    # The agent must still schedule onto a tainted node: the chart tolerates every NoSchedule taint,
    # and our values leave its tolerations alone.
    assert "tolerations" not in build.cni_values(prod_config)


def test_dev_gateway_has_one_replica_and_no_pdb(dev_config: PlatformConfig) -> None:
    values = build.gateway_values(dev_config)
    assert values["autoscaling"] == {"enabled": False}
    assert values["replicaCount"] == 1
    assert "podDisruptionBudget" not in values


def test_prod_gateway_autoscales_from_two_with_a_pdb(prod_config: PlatformConfig) -> None:
    values = build.gateway_values(prod_config)
    assert values["autoscaling"]["enabled"] is True
    assert values["autoscaling"]["minReplicas"] >= 2  # the chart's PDB gate
    assert values["podDisruptionBudget"] == {"minAvailable": 1}
    assert "replicaCount" not in values


def test_prod_gateway_differs_from_dev_only_in_scaling_pdb_sizes_and_spread(
    dev_config: PlatformConfig, prod_config: PlatformConfig
) -> None:
    changed = differing_paths(build.gateway_values(dev_config), build.gateway_values(prod_config))
    assert {p.split(".")[0] for p in changed} == {
        "autoscaling",
        "replicaCount",
        "podDisruptionBudget",
        "resources",
        "topologySpreadConstraints",
    }


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_every_istio_container_we_configure_has_requests_and_limits(
    environment: str, dev_config: PlatformConfig, prod_config: PlatformConfig
) -> None:
    config = dev_config if environment == "dev" else prod_config
    istiod = build.istiod_values(config)
    for resources in [
        build.cni_values(prod_config)["resources"],
        istiod["resources"],
        istiod["global"]["proxy"]["resources"],
        build.gateway_values(config)["resources"],
    ]:
        assert set(resources) == {"requests", "limits"}
        for part in resources.values():
            assert set(part) == {"cpu", "memory"} and all(isinstance(v, str) for v in part.values())


def test_sidecars_are_injected_without_privileged_init_containers(prod_config: PlatformConfig) -> None:
    values = build.istiod_values(prod_config)
    # istio-validation (unprivileged) instead of istio-init (NET_ADMIN): the CNI agent redirects traffic.
    assert values["cni"] == {"enabled": True, "provider": "default"}
    # Tenant namespaces enforce "restricted": injected containers need a seccomp profile.
    assert values["global"]["proxy"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert values["seccompProfile"] == {"type": "RuntimeDefault"}


def test_gateway_pod_meets_restricted_and_still_binds_low_ports(prod_config: PlatformConfig) -> None:
    values = build.gateway_values(prod_config)
    pod = values["securityContext"]
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"} and pod["runAsNonRoot"] is True
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"} in pod["sysctls"]
    container = values["containerSecurityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["runAsNonRoot"] is True


def test_cni_agent_lives_in_kube_system_so_istio_system_stays_restricted(prod_config: PlatformConfig) -> None:
    assert build.CNI_NAMESPACE == "kube-system"
    assert build.cni_values(prod_config)["seccompProfile"] == {"type": "RuntimeDefault"}


def _with(config: PlatformConfig, **changes: Any) -> PlatformConfig:
    return PlatformConfig.model_validate({**config.model_dump(), **changes})


@pytest.mark.parametrize("platform", ["default", "gke", "k3s", "openshift", "cilium"])
def test_each_cluster_flavour_gets_its_cni_paths_in_keys_the_chart_reads(
    platform: str, prod_config: PlatformConfig
) -> None:
    config = _with(prod_config, istio_cni={"platform": platform})
    cni, istiod = build.cni_values(config), build.istiod_values(config)
    charts = load_all()
    assert charts[versions.ISTIO_CNI.chart].unknown(cni) == []
    assert charts[versions.ISTIOD.chart].unknown(istiod) == []
    # The chart's defaults (/opt/cni/bin, /etc/cni/net.d) hold for default and Cilium clusters.
    expected_bin = {"gke": "/home/kubernetes/bin", "k3s": "/var/lib/rancher/k3s/data/cni",
                    "openshift": "/var/lib/cni/bin"}.get(platform)  # fmt: skip
    assert cni.get("cniBinDir") == expected_bin
    multus = platform == "openshift"
    assert (cni.get("provider"), istiod["cni"]["provider"]) == (
        ("multus", "multus") if multus else (None, "default")
    )
    assert (cni.get("chained", True), "seLinuxOptions" in cni) == (not multus, multus)


def test_cni_paths_can_be_overridden_for_an_unlisted_cluster(prod_config: PlatformConfig) -> None:
    config = _with(prod_config, istio_cni={"platform": "k3s", "cniBinDir": "/opt/k3s/cni/bin"})
    values = build.cni_values(config)
    assert values["cniBinDir"] == "/opt/k3s/cni/bin"
    assert values["cniConfDir"] == "/var/lib/rancher/k3s/agent/etc/cni/net.d"


def test_the_readiness_taint_controller_can_be_turned_off(prod_config: PlatformConfig) -> None:
    config = _with(prod_config, istio_cni={"readinessTaint": False})
    assert build.istiod_values(config)["taint"]["enabled"] is False


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_every_value_is_a_key_the_pinned_chart_reads(
    environment: str, dev_config: PlatformConfig, prod_config: PlatformConfig
) -> None:
    config = dev_config if environment == "dev" else prod_config
    charts = load_all()
    for pin, values in [
        (versions.ISTIO_BASE, build.base_values()),
        (versions.ISTIO_CNI, build.cni_values(prod_config)),
        (versions.ISTIOD, build.istiod_values(config)),
        (versions.ISTIO_GATEWAY, build.gateway_values(config)),
    ]:
        keys = charts[pin.chart]
        assert keys.version == pin.version
        assert keys.unknown(values) == []


# --- mesh-wide objects ------------------------------------------------------------------------------------


def test_mesh_wide_mtls_is_strict_in_the_root_namespace_without_selector() -> None:
    policy = build.mesh_peer_authentication()
    assert policy["apiVersion"] == "security.istio.io/v1"
    assert policy["metadata"]["namespace"] == "istio-system"
    assert policy["spec"] == {"mtls": {"mode": "STRICT"}}


def test_gateway_serves_https_for_the_domain_and_redirects_http(prod_config: PlatformConfig) -> None:
    gateway = build.gateway_manifest(prod_config)
    assert gateway["apiVersion"] == "networking.istio.io/v1"
    assert gateway["metadata"] == {
        "name": "platform-gateway",
        "namespace": "istio-ingress",
        "labels": gateway["metadata"]["labels"],
    }
    assert gateway["spec"]["selector"] == {"istio": "ingressgateway"}
    https, http, _, _ = gateway["spec"]["servers"]
    assert https["port"] == {"number": 443, "name": "https", "protocol": "HTTPS"}
    assert https["hosts"] == ["*.data.example.com"]
    assert https["tls"]["mode"] == "SIMPLE"
    assert https["tls"]["credentialName"] == prod_config.gateway_tls_secret
    assert http["port"]["number"] == 80 and http["tls"] == {"httpsRedirect": True}
    assert contract.GATEWAY_REFERENCE == "istio-ingress/platform-gateway"


def test_gateway_takes_its_certificate_secret_and_hosts_from_the_platform_config() -> None:
    config = parse_platform_config(
        {"domain": "staging.example.org", "gatewayTlsSecret": "wildcard-staging-tls"},
        environment="dev",
        file="Pulumi.dev.yaml",
    )
    https, http, vcluster_api, qdrant_api = build.gateway_manifest(config)["spec"]["servers"]
    assert https["tls"]["credentialName"] == qdrant_api["tls"]["credentialName"] == "wildcard-staging-tls"
    assert https["hosts"] == http["hosts"] == ["*.staging.example.org"]
    assert vcluster_api["hosts"] == ["*.vc.staging.example.org"]
    assert qdrant_api["hosts"] == ["*.qdrant.staging.example.org"]


def test_gateway_passes_tls_for_vcluster_apis_through_beside_the_https_server(
    prod_config: PlatformConfig,
) -> None:
    servers = build.gateway_manifest(prod_config)["spec"]["servers"]
    [passthrough] = [s for s in servers if s["tls"].get("mode") == "PASSTHROUGH"]
    # The vCluster presents its own certificate and authenticates kubectl by client certificate: the
    # gateway must not terminate TLS, so it routes on SNI alone.
    assert passthrough["port"] == {"number": 443, "name": "tls-vcluster-api", "protocol": "TLS"}
    assert passthrough["hosts"] == ["*.vc.data.example.com"]
    assert passthrough["tls"] == {"mode": "PASSTHROUGH"}
    # Istio drops a server whose host string another TLS server on the port already has, and wants a
    # distinct port name per server; Envoy then prefers the more specific SNI match.
    on_443 = [s for s in servers if s["port"]["number"] == 443]
    hosts = [host for server in on_443 for host in server["hosts"]]
    assert len(hosts) == len(set(hosts))
    assert len({s["port"]["name"] for s in servers}) == len(servers)
    [https] = [s for s in on_443 if s["tls"].get("mode") == "SIMPLE" and s["port"]["name"] == "https"]
    assert https["hosts"] == ["*.data.example.com"]


# --- the mesh's default scope -----------------------------------------------------------------------------


def test_mesh_default_sidecar_keeps_every_proxy_to_its_namespace_and_istio_system() -> None:
    sidecar = build.mesh_default_sidecar()
    assert sidecar["apiVersion"] == "networking.istio.io/v1" and sidecar["kind"] == "Sidecar"
    # The root namespace and no workloadSelector: the default for every namespace without its own.
    assert sidecar["metadata"]["namespace"] == "istio-system"
    assert "workloadSelector" not in sidecar["spec"]
    assert sidecar["spec"]["egress"] == [{"hosts": ["./*", "istio-system/*"]}]
    # Destinations outside the scope (API server, git, object storage) are passed through, not refused.
    assert sidecar["spec"]["outboundTrafficPolicy"] == {"mode": "ALLOW_ANY"}


def test_platform_declares_the_default_sidecar_and_no_wider_one(prod: StackCapture) -> None:
    sidecars = of_kind(prod, "Sidecar")
    assert [s.inputs["metadata"]["namespace"] for s in sidecars] == ["istio-system"]
    assert all("*/*" not in rule["hosts"] for s in sidecars for rule in s.inputs["spec"]["egress"])


def test_gateway_accepts_traffic_from_anywhere_on_its_container_ports_only() -> None:
    [policy] = [
        p
        for p in build.ingress_namespace_policies()
        if p["metadata"]["name"] == "allow-traffic-from-anywhere"
    ]
    [rule] = policy["spec"]["ingress"]
    assert "from" not in rule  # load balancers and clients have no pod identity
    assert {p["port"] for p in rule["ports"]} == {80, 443, 15021}
    assert policy["spec"]["podSelector"]["matchLabels"]["istio"] == "ingressgateway"


def test_istiod_webhooks_are_reachable_by_the_api_server(dev_config: PlatformConfig) -> None:
    [policy] = [
        p
        for p in build.mesh_namespace_policies(dev_config)
        if p["metadata"]["name"] == "allow-webhooks-from-apiserver"
    ]
    [rule] = policy["spec"]["ingress"]
    assert "from" not in rule and rule["ports"] == [{"protocol": "TCP", "port": 15017}]


# --- the component --------------------------------------------------------------------------------------


def test_releases_install_base_then_cni_then_istiod_then_gateway(prod: StackCapture) -> None:
    base, cni, istiod, gateway = (release(prod, chart) for chart in ("base", "cni", "istiod", "gateway"))
    assert base.depends_on == ["istio-mesh-namespace"]
    assert cni.depends_on == [base.name]
    assert istiod.depends_on == [cni.name]
    assert istiod.name in gateway.depends_on and "istio-ingress-namespace" in gateway.depends_on


def test_releases_are_pinned_and_placed(dev: StackCapture) -> None:
    placed = {r.inputs["chart"]: (r.inputs["name"], r.inputs["namespace"]) for r in dev.of_type(RELEASE)}
    assert placed == {
        "base": ("istio-base", "istio-system"),
        "cni": ("istio-cni", "kube-system"),
        "istiod": ("istiod", "istio-system"),
        # The release name gives the pods istio=ingressgateway and the SA the tenant policies name.
        "gateway": ("istio-ingressgateway", "istio-ingress"),
    }
    for r in dev.of_type(RELEASE):
        assert r.inputs["version"] == "1.30.3"
        assert r.inputs["repositoryOpts"]["repo"] == versions.ISTIO_REPO


def test_istio_custom_resources_wait_for_the_crds(prod: StackCapture) -> None:
    base = release(prod, "base").name
    for kind in ("PeerAuthentication", "Gateway", "Sidecar"):
        [resource] = of_kind(prod, kind)
        assert base in resource.depends_on


def test_component_declares_no_permissive_mtls(prod: StackCapture) -> None:
    # The CloudNativePG status-port exception belongs to the identity component, scoped to its pods.
    for resource in of_kind(prod, "PeerAuthentication"):
        assert "PERMISSIVE" not in repr(resource.inputs)
    assert len(of_kind(prod, "PeerAuthentication")) == 1


def test_namespaces_istio_system_restricted_and_unmeshed_ingress_injectable(dev: StackCapture) -> None:
    namespaces = {
        r.inputs["metadata"]["name"]: r.inputs["metadata"]["labels"] for r in of_kind(dev, "Namespace")
    }
    assert set(namespaces) == {"istio-system", "istio-ingress"}  # kube-system is the cluster's
    assert namespaces["istio-system"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert namespaces["istio-system"]["istio-injection"] == "disabled"
    # istio-injection=disabled would stop the injector from filling in the gateway's image.
    assert namespaces["istio-ingress"]["istio-injection"] == "enabled"
    assert namespaces["istio-ingress"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_every_kubernetes_object_matches_the_schema(
    environment: str, dev: StackCapture, prod: StackCapture
) -> None:
    captured = dev if environment == "dev" else prod
    assert declared_schema_problems(captured.kubernetes_objects()) == []


def test_outputs_name_the_gateway_and_namespaces(dev: StackCapture) -> None:
    assert dev.outputs == {
        "gatewayName": "istio-ingress/platform-gateway",
        "ingressNamespace": "istio-ingress",
        "meshNamespace": "istio-system",
    }


def test_meshed_workloads_can_wait_for_istiod(prod_config: PlatformConfig) -> None:
    def program() -> dict[str, Any]:
        istio = Istio("istio", config=prod_config)
        assert istio.ready == [istio.istiod]
        return {}

    capture_program(program, stack="prod")
