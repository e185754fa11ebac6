"""Platform logs: Loki (dev single binary, prod replicated on S3), Alloy, Grafana."""

from __future__ import annotations

import json
import re
from typing import Any

import pulumi
import pulumi_random as random
import pytest
import yaml

from components.platform.observability import Observability
from tenancy import versions
from tenancy.builders.contract import NAMESPACES, PlatformRefs
from tenancy.builders.identity import KEYCLOAK_POD_LABELS, WAIT_FOR_READY, identity_namespace_policies
from tenancy.builders.istio import mesh_namespace_policies
from tenancy.builders.namespace import namespace_manifest as tenant_namespace_manifest
from tenancy.builders.network import network_policy_manifests
from tenancy.builders.observability import (
    ALLOY_POD_LABELS,
    GRAFANA_ADMIN_PASSWORD_KEY,
    GRAFANA_POD_LABELS,
    LOKI_POD_LABELS,
    LOKI_PUSH_URL,
    namespace_label_meta,
    observability_policies,
    render_alloy_config,
    render_alloy_values,
    render_grafana_values,
    render_loki_values,
)
from tenancy.builders.platform_namespace import SIDECAR_METRICS_PORT, baseline_policies
from tenancy.builders.qdrant import SELECTOR_LABELS as QDRANT_SELECTOR_LABELS
from tenancy.render.runtime import DeclaredResource, StackCapture, capture_program
from tenancy.render.schema import declared_schema_problems
from tenancy.spec.platform import PlatformConfig
from tenancy.spec.tenant import LABEL_TENANT, TenantSpec, resolve
from tests.chart_keys import load_all
from tests.platform.support import (
    connection_allowed,
    dev_config,
    is_secret,
    namespace_of,
    prod_config,
    strings,
)

RELEASE = "kubernetes:helm.sh/v3:Release"
ACCESS_KEY_ID = "AKIAEXAMPLEACCESSKEY"
SECRET_ACCESS_KEY = "example/secret+access/key"
OBJECT_STORAGE_SECRETS = {
    "platform:objectStorageAccessKeyId": ACCESS_KEY_ID,
    "platform:objectStorageSecretAccessKey": SECRET_ACCESS_KEY,
}


def capture(config: PlatformConfig) -> StackCapture:
    def program() -> dict[str, Any]:
        observability = Observability("observability", config=config)
        return {
            "lokiPushUrl": observability.loki_push_url,
            "grafanaUrl": observability.grafana_url,
            "grafanaAdminPassword": observability.grafana_admin_password,
            "namespace": observability.namespace,
        }

    return capture_program(program, stack=config.environment, config=OBJECT_STORAGE_SECRETS)


@pytest.fixture(scope="module")
def dev() -> StackCapture:
    return capture(dev_config())


@pytest.fixture(scope="module")
def prod() -> StackCapture:
    return capture(prod_config())


def release(captured: StackCapture, chart: str) -> DeclaredResource:
    [found] = [r for r in captured.of_type(RELEASE) if r.inputs["chart"] == chart]
    return found


def policy(captured: StackCapture, name: str) -> dict[str, Any]:
    [found] = [
        r.inputs
        for r in captured.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
        if r.inputs["metadata"]["name"] == name
    ]
    return found


# --- the Alloy config, read back -----------------------------------------------------------------


def _block(config: str, header: str) -> str:
    """The body of the block opened by ``header``, braces matched (the config has none in strings)."""
    text = re.sub(r"^\s*//[^\n]*", "", config, flags=re.M)  # whole-line comments only: URLs hold //
    start = text.index(header + " {") + len(header) + 2
    depth = 1
    for index in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[start:index]
    raise AssertionError(f"block {header} is not closed")


def _attributes(body: str) -> dict[str, Any]:
    """Top-level ``name = value`` lines of a block body; values are JSON-shaped in this config."""
    return {
        name: json.loads(value)
        for name, value in re.findall(r"^\s*(\w+)\s*=\s*(\[.*\]|\".*\"|true|false)\s*$", body, re.M)
    }


def relabel_rules(config: str) -> list[dict[str, Any]]:
    body = _block(config, 'discovery.relabel "pod_logs"')
    return [_attributes(rule) for rule in re.findall(r"rule\s*\{([^{}]*)\}", body)]


# --- Loki ----------------------------------------------------------------------------------------


def test_prod_loki_is_replicated_on_object_storage() -> None:
    values = render_loki_values(prod_config())
    assert values["deploymentMode"] == "SimpleScalable"
    assert values["loki"]["commonConfig"]["replication_factor"] == 3
    for target in ("read", "write", "backend"):
        assert values[target]["replicas"] == 3
    storage = values["loki"]["storage"]
    assert storage["type"] == "s3"
    assert storage["bucketNames"] == {"chunks": "prod-loki", "ruler": "prod-loki"}
    assert storage["s3"]["endpoint"] == "s3.eu-central-1.amazonaws.com"
    assert storage["s3"]["region"] == "eu-central-1"
    [schema] = values["loki"]["schemaConfig"]["configs"]
    assert (schema["store"], schema["schema"], schema["object_store"]) == ("tsdb", "v13", "s3")
    assert values["write"]["persistence"]["storageClass"] == "fast-ssd"


def test_dev_loki_is_a_single_binary_on_a_persistent_filesystem() -> None:
    values = render_loki_values(dev_config())
    assert values["deploymentMode"] == "Monolithic"
    assert values["singleBinary"]["replicas"] == 1
    assert values["singleBinary"]["persistence"]["storageClass"] == "standard"
    assert values["loki"]["storage"] == {"type": "filesystem"}
    assert values["loki"]["commonConfig"]["replication_factor"] == 1
    # The chart refuses scalable targets next to filesystem storage; their defaults are 3.
    assert [values[t]["replicas"] for t in ("read", "write", "backend")] == [0, 0, 0]
    [schema] = values["loki"]["schemaConfig"]["configs"]
    assert (schema["store"], schema["schema"], schema["object_store"]) == ("tsdb", "v13", "filesystem")


def test_plain_http_object_storage_is_marked_insecure_and_opened_on_its_port() -> None:
    config = prod_config(endpoint="http://minio.storage.svc:9000")
    s3 = render_loki_values(config)["loki"]["storage"]["s3"]
    assert (s3["endpoint"], s3["insecure"]) == ("minio.storage.svc:9000", True)
    captured = capture(config)
    egress = policy(captured, "allow-loki-to-object-storage")["spec"]["egress"]
    assert egress == [{"ports": [{"protocol": "TCP", "port": 9000}]}]


def test_object_storage_keys_reach_loki_from_a_secret_and_never_through_values(prod: StackCapture) -> None:
    values = release(prod, "loki").inputs["values"]
    s3 = values["loki"]["storage"]["s3"]
    assert s3["accessKeyId"] == "${AWS_ACCESS_KEY_ID}"
    assert s3["secretAccessKey"] == "${AWS_SECRET_ACCESS_KEY}"
    assert values["defaults"]["extraEnvFrom"] == [{"secretRef": {"name": "loki-object-storage"}}]
    everything = [s for r in prod.resources if r.type == RELEASE for s in strings(r.inputs)]
    assert ACCESS_KEY_ID not in everything and SECRET_ACCESS_KEY not in everything

    [secret] = [
        r
        for r in prod.of_type("kubernetes:core/v1:Secret")
        if r.inputs["metadata"]["name"] == "loki-object-storage"
    ]
    assert secret.inputs["stringData"] == {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
    }
    assert is_secret(secret, "stringData", "AWS_ACCESS_KEY_ID")
    assert is_secret(secret, "stringData", "AWS_SECRET_ACCESS_KEY")


def test_dev_needs_no_object_storage_keys(dev: StackCapture) -> None:
    names = {r.inputs["metadata"]["name"] for r in dev.of_type("kubernetes:core/v1:Secret")}
    assert "loki-object-storage" not in names
    assert "defaults" not in release(dev, "loki").inputs["values"]


@pytest.mark.parametrize("config", [dev_config(), prod_config()], ids=["dev", "prod"])
def test_loki_leaves_out_the_canary_its_test_minio_and_the_rules_sidecar(config: PlatformConfig) -> None:
    values = render_loki_values(config)
    assert values["lokiCanary"] == {"enabled": False}
    assert values["test"] == {"enabled": False}
    assert "minio" not in values  # off by chart default, and it fails the render when on
    assert values["sidecar"]["rules"]["enabled"] is False
    # With the sidecar off and RBAC namespaced the chart creates no ClusterRole.
    assert values["rbac"]["namespaced"] is True


def test_loki_caches_are_off_in_dev_and_sized_down_in_prod() -> None:
    dev_values, prod_values = render_loki_values(dev_config()), render_loki_values(prod_config())
    assert dev_values["chunksCache"] == {"enabled": False}
    assert dev_values["resultsCache"] == {"enabled": False}
    assert prod_values["chunksCache"]["allocatedMemory"] < 8192  # the chart's default
    assert prod_values["memcachedExporter"] == {"enabled": False}


@pytest.mark.parametrize("config", [dev_config(), prod_config()], ids=["dev", "prod"])
def test_every_loki_workload_has_requests_and_limits(config: PlatformConfig) -> None:
    values = render_loki_values(config)
    if config.high_availability:
        workloads = ["read", "write", "backend", "gateway", "chunksCache", "resultsCache"]
    else:
        workloads = ["singleBinary", "gateway"]
    for workload in workloads:
        limits = values[workload]["resources"]
        assert set(limits) == {"requests", "limits"}, workload
        assert set(limits["limits"]) == {"cpu", "memory"}, workload


# --- Alloy ---------------------------------------------------------------------------------------


def test_every_log_line_gets_the_tenant_label_from_its_namespace() -> None:
    config = render_alloy_config(push_url=LOKI_PUSH_URL)
    rules = relabel_rules(config)
    meta = "__meta_kubernetes_namespace_label_tenancy_platform_tenant"
    assert namespace_label_meta(LABEL_TENANT) == meta
    assert {"source_labels": [meta], "target_label": "tenant"} in rules
    # The label is taken from the namespace, which tenants cannot label, never from a pod.
    tenant_sources = [r["source_labels"] for r in rules if r["target_label"] == "tenant"]
    assert tenant_sources == [[meta]]
    # Discovery attaches namespace labels, and the tailed targets are the relabelled ones.
    assert _attributes(_block(config, "attach_metadata")) == {"namespace": True}
    tailing = _block(config, 'loki.source.kubernetes "pods"')
    assert re.search(r"targets\s*=\s*discovery\.relabel\.pod_logs\.output", tailing)


def test_tenant_namespaces_carry_the_label_alloy_reads() -> None:
    tenant = resolve(
        TenantSpec.model_validate({"name": "acme", "owners": ["a@acme.example"], "plan": "small"}), "prod"
    )
    assert tenant_namespace_manifest(tenant)["metadata"]["labels"][LABEL_TENANT] == "acme"


def test_log_streams_are_labelled_with_namespace_pod_and_container() -> None:
    rules = relabel_rules(render_alloy_config(push_url=LOKI_PUSH_URL))
    assert {r["target_label"]: r["source_labels"] for r in rules if r["target_label"] != "tenant"} == {
        "namespace": ["__meta_kubernetes_namespace"],
        "pod": ["__meta_kubernetes_pod_name"],
        "container": ["__meta_kubernetes_pod_container_name"],
    }


def test_alloy_tails_logs_through_the_api_and_writes_to_loki() -> None:
    config = render_alloy_config(push_url=LOKI_PUSH_URL)
    assert 'loki.source.kubernetes "pods"' in config
    assert "loki.source.file" not in config
    write = _block(config, 'loki.write "default"')
    assert _attributes(_block(write, "endpoint")) == {"url": LOKI_PUSH_URL}
    assert LOKI_PUSH_URL == "http://loki-gateway.observability.svc.cluster.local/loki/api/v1/push"
    assert "{{" not in config  # the chart runs the config through Helm's tpl


def test_alloy_needs_no_host_path_and_runs_restricted_as_its_own_user() -> None:
    values = render_alloy_values()
    assert "hostPath" not in set(strings(values))
    assert values["alloy"].get("mounts", {}).get("varlog") in (None, False)
    context = values["alloy"]["securityContext"]
    assert (context["runAsNonRoot"], context["runAsUser"]) == (True, 473)
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    for block in (values["alloy"]["resources"], values["configReloader"]["resources"]):
        assert set(block) == {"requests", "limits"}


def test_alloy_may_read_pods_their_logs_and_namespaces_but_no_secrets() -> None:
    rbac = render_alloy_values()["rbac"]
    # Both lists end up in the one ClusterRole.
    rules = rbac["rules"] + rbac["clusterRules"]
    assert {resource for rule in rules for resource in rule["resources"]} == {
        "pods",
        "pods/log",
        "namespaces",
    }
    assert all(set(rule["verbs"]) <= {"get", "list", "watch"} for rule in rules)
    assert all(rule["apiGroups"] == [""] for rule in rules)


def _alloy_cluster_role_rules(rbac: dict[str, Any]) -> str:
    """The `rules:` block of alloy 1.11.1 templates/rbac.yaml (ClusterRole), as Helm renders it:

    rules:
      {{- if or .Values.rbac.rules .Values.rbac.clusterRules }}
      {{- .Values.rbac.rules | toYaml | nindent 2 }}
      {{- .Values.rbac.clusterRules | toYaml | nindent 2 }}
      {{- else }}
      []
      {{- end }}
    """

    def to_yaml(value: Any) -> str:  # Helm's toYaml: block style, "null" for nil, no trailing newline
        return "null" if value is None else yaml.safe_dump(value, default_flow_style=False).rstrip("\n")

    def nindent(text: str) -> str:
        return "\n" + "\n".join("  " + line for line in text.splitlines())

    rules, cluster_rules = rbac.get("rules"), rbac.get("clusterRules")
    if rules or cluster_rules:
        return "rules:" + nindent(to_yaml(rules)) + nindent(to_yaml(cluster_rules))
    return "rules:\n  []"


def test_alloy_cluster_role_renders_as_valid_yaml() -> None:
    rbac = render_alloy_values()["rbac"]
    # Once either list is set the template writes both, each through toYaml: an empty list (or null)
    # then lands as a bare `[]` (or `null`) after the other list's items, which is not YAML, and the
    # alloy release fails to install. So neither list may be empty.
    assert rbac["rules"] and rbac["clusterRules"]
    rendered = yaml.safe_load(_alloy_cluster_role_rules(rbac))
    assert rendered["rules"] == rbac["rules"] + rbac["clusterRules"]


def test_alloy_cluster_role_model_matches_the_charts_failure() -> None:
    # The model above reproduces the reported failure, so the test before it can catch it.
    one_rule = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(_alloy_cluster_role_rules({"rules": one_rule, "clusterRules": []}))


# --- Grafana -------------------------------------------------------------------------------------


def test_grafana_admin_password_is_generated_and_secret_never_in_values(prod: StackCapture) -> None:
    [generated] = prod.of_type("random:index/randomPassword:RandomPassword")
    assert generated.name == "observability-grafana-admin-password"
    [admin] = [
        r
        for r in prod.of_type("kubernetes:core/v1:Secret")
        if r.inputs["metadata"]["name"] == "grafana-admin"
    ]
    assert is_secret(admin, "stringData", GRAFANA_ADMIN_PASSWORD_KEY)
    password = admin.inputs["stringData"][GRAFANA_ADMIN_PASSWORD_KEY]

    values = release(prod, "grafana").inputs["values"]
    assert values["admin"] == {"existingSecret": "grafana-admin"}
    assert "adminPassword" not in values
    assert password not in set(strings(values))
    assert "grafanaAdminPassword" in prod.secret_outputs
    assert prod.outputs["grafanaAdminPassword"] == password


def test_loki_is_grafanas_data_source() -> None:
    values = render_grafana_values(dev_config())
    [source] = values["datasources"]["datasources.yaml"]["datasources"]
    assert source["type"] == "loki"
    assert source["url"] == "http://loki-gateway.observability.svc.cluster.local"
    assert source["isDefault"] is True


def test_grafana_is_served_at_grafana_dot_domain_through_the_platform_gateway(prod: StackCapture) -> None:
    [route] = prod.of_type("kubernetes:networking.istio.io/v1:VirtualService")
    spec = route.inputs["spec"]
    assert spec["hosts"] == ["grafana.data.example.com"]
    assert spec["gateways"] == ["istio-ingress/platform-gateway"]
    [http] = spec["http"]
    assert http["route"][0]["destination"]["host"] == "grafana.observability.svc.cluster.local"
    assert prod.outputs["grafanaUrl"] == "https://grafana.data.example.com"
    ini = release(prod, "grafana").inputs["values"]["grafana.ini"]
    assert ini["server"]["root_url"] == "https://grafana.data.example.com"


def test_dev_grafana_keeps_its_state_on_a_volume_without_a_root_init_container() -> None:
    values = render_grafana_values(dev_config())
    assert values["persistence"] == {"enabled": True, "storageClassName": "standard"}
    assert values["initChownData"] == {"enabled": False}
    assert "replicas" not in values


def test_prod_grafana_runs_two_replicas_on_a_shared_database_with_a_pdb(prod: StackCapture) -> None:
    values = release(prod, "grafana").inputs["values"]
    assert values["replicas"] == 2
    assert values["podDisruptionBudget"] == {"maxUnavailable": 1}
    assert "persistence" not in values  # a ReadWriteOnce volume cannot be shared
    assert values["grafana.ini"]["database"]["type"] == "postgres"
    password_ref = values["envValueFrom"]["GF_DATABASE_PASSWORD"]["secretKeyRef"]
    assert password_ref == {"name": "grafana-db-app", "key": "password"}
    [database] = prod.of_type("kubernetes:postgresql.cnpg.io/v1:Cluster")
    assert database.inputs["spec"]["instances"] == 2
    assert database.inputs["spec"]["imageName"] == versions.CNPG_POSTGRESQL_IMAGE
    assert "observability-grafana-db" in release(prod, "grafana").depends_on


def test_prod_grafana_waits_until_its_database_is_ready(prod: StackCapture) -> None:
    # The release depends on the Cluster; the annotation makes Pulumi wait for CloudNativePG's Ready
    # condition (and so the grafana-db-app Secret) rather than for the object to exist.
    [database] = prod.of_type("kubernetes:postgresql.cnpg.io/v1:Cluster")
    annotations = database.inputs["metadata"]["annotations"]
    # The same readiness wait as Keycloak's database.
    assert WAIT_FOR_READY.items() <= annotations.items()
    assert annotations["pulumi.com/waitFor"] == "condition=Ready"
    assert database.name in release(prod, "grafana").depends_on


def test_grafana_runs_restricted_with_requests_and_limits() -> None:
    values = render_grafana_values(dev_config())
    assert values["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert set(values["resources"]) == {"requests", "limits"}
    assert values["automountServiceAccountToken"] is False


# --- namespace and policies ----------------------------------------------------------------------


def test_observability_namespace_is_restricted_and_outside_the_mesh(dev: StackCapture) -> None:
    [namespace] = dev.of_type("kubernetes:core/v1:Namespace")
    labels = namespace.inputs["metadata"]["labels"]
    assert namespace.inputs["metadata"]["name"] == "observability"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["istio-injection"] == "disabled"
    assert dev.outputs["namespace"] == "observability"


def test_alloy_may_reach_the_api_server(dev: StackCapture) -> None:
    spec = policy(dev, "allow-alloy-to-api-server")["spec"]
    assert spec["podSelector"] == {"matchLabels": ALLOY_POD_LABELS}
    assert {port["port"] for port in spec["egress"][0]["ports"]} == {443, 6443}


def test_only_the_ingress_gateway_may_reach_grafana(dev: StackCapture) -> None:
    spec = policy(dev, "allow-gateway-to-grafana")["spec"]
    assert spec["podSelector"] == {"matchLabels": GRAFANA_POD_LABELS}
    [rule] = spec["ingress"]
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-ingress"}},
            "podSelector": {"matchLabels": {"istio": "ingressgateway"}},
        }
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": 3000}]


def test_alloy_and_grafana_reach_loki_inside_the_namespace_only(dev: StackCapture) -> None:
    same = policy(dev, "allow-same-namespace")["spec"]
    assert same["ingress"] == [{"from": [{"podSelector": {}}]}]
    names = {
        r.inputs["metadata"]["name"] for r in dev.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    }
    assert not any("loki" in name and "ingress" in name for name in names)


def test_only_prod_loki_may_leave_the_cluster_for_object_storage(
    dev: StackCapture, prod: StackCapture
) -> None:
    spec = policy(prod, "allow-loki-to-object-storage")["spec"]
    assert spec["podSelector"] == {"matchLabels": LOKI_POD_LABELS}
    assert spec["egress"] == [{"ports": [{"protocol": "TCP", "port": 443}]}]
    with pytest.raises(ValueError):
        policy(dev, "allow-loki-to-object-storage")


# --- whole component -----------------------------------------------------------------------------


def test_outputs_name_the_push_url_and_namespace(dev: StackCapture) -> None:
    assert dev.outputs["lokiPushUrl"] == LOKI_PUSH_URL
    assert dev.outputs["namespace"] == "observability"


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_every_built_in_object_passes_the_schema(
    environment: str, dev: StackCapture, prod: StackCapture
) -> None:
    captured = {"dev": dev, "prod": prod}[environment]
    assert declared_schema_problems(captured.kubernetes_objects()) == []


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_chart_key_files_cover_every_value(environment: str, dev: StackCapture, prod: StackCapture) -> None:
    captured = {"dev": dev, "prod": prod}[environment]
    charts = load_all()
    for found in captured.of_type(RELEASE):
        keys = charts[found.inputs["chart"]]
        assert keys.version == found.inputs["version"]
        assert keys.unknown(found.inputs["values"]) == [], found.name


def test_nothing_is_unpinned(prod: StackCapture) -> None:
    pins = {pin.chart: pin for pin in (versions.LOKI, versions.GRAFANA, versions.ALLOY)}
    releases = prod.of_type(RELEASE)
    assert {r.inputs["chart"] for r in releases} == set(pins)
    for found in releases:
        pin = pins[found.inputs["chart"]]
        assert found.inputs["version"] == pin.version
        assert found.inputs["repositoryOpts"]["repo"] == pin.repo


def test_custom_resources_wait_for_what_the_component_waits_for() -> None:
    def program() -> dict[str, Any]:
        crds = random.RandomString("mesh-crds", length=4)
        Observability("observability", config=prod_config(), opts=pulumi.ResourceOptions(depends_on=[crds]))
        return {}

    captured = capture_program(program, stack="prod", config=OBJECT_STORAGE_SECRETS)
    [route] = captured.of_type("kubernetes:networking.istio.io/v1:VirtualService")
    [database] = captured.of_type("kubernetes:postgresql.cnpg.io/v1:Cluster")
    for resource in (route, database):
        assert {"mesh-crds", "observability-namespace"} <= set(resource.depends_on)


# --- scraping: traced through both namespaces' NetworkPolicies ------------------------------------


def _scraping_policies() -> list[dict[str, Any]]:
    refs = PlatformRefs(
        ingress_namespace=NAMESPACES.ingress,
        monitoring_namespace=NAMESPACES.observability,
        mesh_namespace=NAMESPACES.mesh,
        argocd_namespace=NAMESPACES.gitops,
        storage_class="standard",
        domain="data.example.com",
        issuer_url="https://auth.data.example.com/realms/platform",
        vault_kv_mount="tenants",
        vault_auth_path="kubernetes",
    )
    return [
        *baseline_policies(NAMESPACES.observability, mesh=False),
        *observability_policies(prod_config()),
        *baseline_policies(NAMESPACES.mesh, mesh=False),
        *mesh_namespace_policies(prod_config()),
        *baseline_policies(NAMESPACES.identity, mesh=True),
        *identity_namespace_policies(dev_config()),
        *network_policy_manifests(_acme(), refs, kubernetes_api_cidrs=[]),
    ]


def _acme() -> Any:
    spec = {"name": "acme", "owners": ["a@acme.example"], "plan": "small", "qdrant": {"enabled": True}}
    return resolve(TenantSpec.model_validate(spec), "prod")


ALLOY = (namespace_of(NAMESPACES.observability, {}), dict(ALLOY_POD_LABELS))


def test_the_collector_scrapes_every_meshed_pods_merged_metrics() -> None:
    policies = _scraping_policies()
    tenant = _acme()
    qdrant = (
        namespace_of(tenant.namespace, tenant_namespace_manifest(tenant)["metadata"]["labels"]),
        dict(QDRANT_SELECTOR_LABELS),
    )
    keycloak = (namespace_of(NAMESPACES.identity, {"istio-injection": "enabled"}), dict(KEYCLOAK_POD_LABELS))
    for target in (qdrant, keycloak):
        assert connection_allowed(policies, source=ALLOY, destination=target, port=SIDECAR_METRICS_PORT)
        # Only the metrics port: the data ports stay closed to the observability namespace.
        assert not connection_allowed(policies, source=ALLOY, destination=target, port=6333)


def test_the_collector_scrapes_istiod() -> None:
    istiod = (namespace_of(NAMESPACES.mesh, {"istio-injection": "disabled"}), {"app": "istiod"})
    assert connection_allowed(_scraping_policies(), source=ALLOY, destination=istiod, port=15014)


def test_grafana_and_loki_may_not_scrape_or_call_other_namespaces() -> None:
    tenant = _acme()
    qdrant = (
        namespace_of(tenant.namespace, tenant_namespace_manifest(tenant)["metadata"]["labels"]),
        dict(QDRANT_SELECTOR_LABELS),
    )
    grafana = (namespace_of(NAMESPACES.observability, {}), dict(GRAFANA_POD_LABELS))
    assert not connection_allowed(_scraping_policies(), source=grafana, destination=qdrant, port=15020)
