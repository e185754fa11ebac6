"""The tenant stack of every example tenant: what it declares, with which inputs, and what it keeps apart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tenancy.automation.contract import APPLIED_SPEC_OUTPUT
from tenancy.builders.contract import PlatformRefs
from tenancy.builders.network import network_policy_manifests
from tenancy.render.runtime import GENERATED, StackCapture
from tenancy.spec.errors import SpecError
from tenancy.spec.tenant import LABEL_TENANT, parse_tenant, resolve
from tests.conftest import PROJECT_DIR

Run = Callable[[str], StackCapture]
K8S = "kubernetes:"


def manifests(capture: StackCapture, kind: str) -> list[dict[str, Any]]:
    return [r.inputs for r in capture.kubernetes_objects() if r.kind == kind]


def release(capture: StackCapture, chart: str) -> dict[str, Any]:
    [found] = [r.inputs for r in capture.of_type(f"{K8S}helm.sh/v3:Release") if r.inputs["chart"] == chart]
    return found


def test_prod_acme_declares_namespace_guard_rails_and_both_services(run_stack: Run) -> None:
    capture = run_stack("prod.acme")
    [namespace] = manifests(capture, "Namespace")
    labels = namespace["metadata"]["labels"]
    assert namespace["metadata"]["name"] == "tenant-acme"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["istio-injection"] == "enabled"
    assert labels[LABEL_TENANT] == "acme" and labels["cost-center"] == "cc-1042"

    [quota] = manifests(capture, "ResourceQuota")
    assert quota["spec"]["hard"]["requests.memory"] == "32Gi"
    assert quota["spec"]["hard"]["services.loadbalancers"] == "0"
    [limits] = manifests(capture, "LimitRange")
    assert limits["spec"]["limits"][0]["max"] == {"cpu": "8", "memory": "16Gi"}

    qdrant = release(capture, "qdrant")["values"]
    assert qdrant["replicaCount"] == 3
    assert qdrant["config"]["cluster"]["enabled"] is True
    assert qdrant["resources"]["limits"] == {"cpu": "2", "memory": "8Gi"}
    assert qdrant["persistence"]["size"] == "100Gi"
    assert qdrant["persistence"]["storageClassName"] == "fast-ssd"
    assert qdrant["snapshotPersistence"]["enabled"] is True
    assert qdrant["podDisruptionBudget"] == {"enabled": True, "maxUnavailable": 1}
    assert {c["topologyKey"] for c in qdrant["topologySpreadConstraints"]} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }

    vcluster = release(capture, "vcluster")["values"]
    assert vcluster["controlPlane"]["distro"]["k8s"]["image"] == {
        "registry": "ghcr.io",
        "repository": "loft-sh/kubernetes",
        "tag": "v1.34.0",  # no public digest of it (tenancy/versions.py)
    }
    assert vcluster["controlPlane"]["statefulSet"]["resources"]["limits"]["memory"] == "2Gi"
    assert vcluster["exportKubeConfig"]["server"] == "https://acme.vc.data.example.com"


def test_single_node_qdrant_runs_in_cluster_mode_without_pdb_spread_or_replication(run_stack: Run) -> None:
    values = release(run_stack("dev.acme"), "qdrant")["values"]
    assert values["replicaCount"] == 1
    # Cluster mode from the first node on: scaling out later never switches modes on existing storage.
    assert values["config"]["cluster"]["enabled"] is True
    assert "podDisruptionBudget" not in values and "topologySpreadConstraints" not in values
    assert "storage" not in values["config"]  # one peer holds one copy; Qdrant's defaults stand


@pytest.mark.parametrize("stack", ["prod.acme", "prod.globex"])
def test_replicated_qdrant_keeps_every_shard_on_two_peers(run_stack: Run, stack: str) -> None:
    values = release(run_stack(stack), "qdrant")["values"]
    assert values["replicaCount"] > 1
    assert values["config"]["cluster"]["enabled"] is True
    # The one pod a drain may take (PDB maxUnavailable 1) leaves a replica of every shard; a write needs
    # one replica, so writes go on meanwhile.
    assert values["config"]["storage"]["collection"] == {
        "replication_factor": 2,
        "write_consistency_factor": 1,
    }
    assert values["podDisruptionBudget"]["maxUnavailable"] == 1


def test_qdrant_only_tenant_has_no_vcluster_and_vcluster_only_tenant_has_no_qdrant(run_stack: Run) -> None:
    globex = run_stack("prod.globex")
    assert [r.inputs["chart"] for r in globex.of_type(f"{K8S}helm.sh/v3:Release")] == ["qdrant"]
    assert "vclusterKubeconfig" not in globex.outputs
    assert "qdrantReadOnlyApiKey" not in globex.outputs  # readOnlyKey: false
    initech = run_stack("dev.initech")
    assert [r.inputs["chart"] for r in initech.of_type(f"{K8S}helm.sh/v3:Release")] == ["vcluster"]
    assert "qdrantEndpoint" not in initech.outputs


def test_qdrant_keys_are_generated_secret_and_stable_across_updates(run_stack: Run) -> None:
    capture = run_stack("prod.acme")
    passwords = capture.of_type("random:index/randomPassword:RandomPassword")
    assert {p.inputs["length"] for p in passwords} == {48} and all(
        p.inputs["special"] is False for p in passwords
    )
    secrets = {r.inputs["metadata"]["name"]: r for r in capture.kubernetes_objects() if r.kind == "Secret"}
    secret, server = secrets["qdrant-api-keys"], secrets["qdrant-server-keys"]
    assert ("stringData",) in secret.secret_paths and ("stringData",) in server.secret_paths
    values = release(capture, "qdrant")["values"]
    # The chart never generates keys (apiKey: true would mint a new one on every render).
    assert "apiKey" not in values and "readOnlyApiKey" not in values
    # Nor do the keys travel as environment variables: Qdrant reads them from the mounted local.yaml.
    assert "env" not in values
    [volume] = values["additionalVolumes"]
    assert volume["secret"]["secretName"] == "qdrant-server-keys"
    assert volume["secret"]["items"] == [{"key": "local.yaml", "path": "local.yaml"}]
    [mount] = values["additionalVolumeMounts"]
    assert mount == {
        "name": volume["name"],
        "mountPath": "/qdrant/config/local.yaml",
        "subPath": "local.yaml",
        "readOnly": True,
    }
    assert set(secret.inputs["stringData"]) == {"api-key", "read-only-api-key"}
    config = yaml.safe_load(server.inputs["stringData"]["local.yaml"])
    assert config == {
        "service": {
            "api_key": secret.inputs["stringData"]["api-key"],
            "read_only_api_key": secret.inputs["stringData"]["read-only-api-key"],
        }
    }


def test_secret_outputs_are_secret_and_plain_outputs_hold_no_secret(run_stack: Run) -> None:
    capture = run_stack("prod.acme")
    assert {"qdrantApiKey", "qdrantReadOnlyApiKey", "vclusterKubeconfig"} <= capture.secret_outputs
    for key, value in capture.outputs.items():
        if key not in capture.secret_outputs:
            assert GENERATED not in str(value), key
    assert capture.outputs["qdrantEndpoint"] == "http://qdrant.tenant-acme.svc.cluster.local:6333"
    assert capture.outputs["qdrantApiKeySecret"] == "qdrant-api-keys"
    assert capture.outputs["vclusterKubeconfigSecret"] == "vc-vcluster"


def test_tenant_workloads_run_restricted(run_stack: Run) -> None:
    capture = run_stack("prod.acme")
    qdrant = release(capture, "qdrant")["values"]
    container = qdrant["containerSecurityContext"]
    assert container["runAsNonRoot"] and not container["allowPrivilegeEscalation"]
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["seccompProfile"] == {"type": "RuntimeDefault"}
    assert qdrant["updateVolumeFsOwnership"] is False  # the chart's chown init container runs as root
    security = release(capture, "vcluster")["values"]["controlPlane"]["statefulSet"]["security"]
    assert security["containerSecurityContext"]["runAsUser"] != 0
    assert security["podSecurityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_rbac_binds_tenant_groups_to_namespace_roles_only(run_stack: Run) -> None:
    capture = run_stack("prod.globex")
    kinds = {r.kind for r in capture.kubernetes_objects()}
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    bindings = {b["metadata"]["name"]: b for b in manifests(capture, "RoleBinding")}
    admins = [s["name"] for s in bindings["tenant-admin"]["subjects"]]
    assert admins == ["oidc:/tenants/globex/admins", "oidc:/tenants/globex/search-oncall"]
    assert bindings["tenant-viewer"]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "tenant-viewer",
    }
    viewer = next(r for r in manifests(capture, "Role") if r["metadata"]["name"] == "tenant-viewer")
    assert not any("secrets" in rule["resources"] for rule in viewer["rules"])
    admin = next(r for r in manifests(capture, "Role") if r["metadata"]["name"] == "tenant-admin")
    netpol_rules = [rule for rule in admin["rules"] if "networkpolicies" in rule["resources"]]
    assert netpol_rules and all(set(rule["verbs"]) <= {"get", "list", "watch"} for rule in netpol_rules)


def test_services_wait_for_namespace_guard_rails(run_stack: Run) -> None:
    capture = run_stack("prod.acme")
    for component in ("acme-qdrant", "acme-vcluster"):
        assert {"acme", "acme-network", "acme-access", "acme-mesh"} <= set(
            capture.named(component).depends_on
        )
    assert capture.named("acme-qdrant-release").depends_on == ["acme-qdrant-server-keys"]
    # Clients are handed keys only after every pod accepts them.
    assert capture.named("acme-qdrant-api-keys").depends_on == ["acme-qdrant-release"]


def test_tenant_stack_reads_the_platform_through_a_stack_reference(run_stack: Run) -> None:
    capture = run_stack("prod.acme")
    [reference] = capture.of_type("pulumi:pulumi:StackReference")
    assert reference.inputs["name"] == "organization/platform/prod"


def test_the_stack_records_the_tenant_document_it_applied(run_stack: Run) -> None:
    """The worker compares the next spec with this output (Qdrant nodes, volumes), so it must be the
    tenant file exactly as the update read it, and not a secret."""
    capture = run_stack("prod.acme")
    document = yaml.safe_load((PROJECT_DIR / "tenants" / "prod" / "acme.yaml").read_text())
    assert capture.outputs[APPLIED_SPEC_OUTPUT] == document
    assert APPLIED_SPEC_OUTPUT not in capture.secret_outputs
    assert resolve(parse_tenant(capture.outputs[APPLIED_SPEC_OUTPUT], file="output"), "prod").name == "acme"


def test_deletion_protection_protects_the_namespace(run_stack: Run) -> None:
    assert run_stack("prod.acme").outputs["deletionProtection"] is True
    assert run_stack("dev.acme").outputs["deletionProtection"] is False


# --- isolation ----------------------------------------------------------------------------------

API_SERVER = ["10.20.0.0/28"]
REFS = PlatformRefs(
    ingress_namespace="istio-ingress",
    monitoring_namespace="observability",
    mesh_namespace="istio-system",
    argocd_namespace="argocd",
    storage_class="standard",
    domain="example.com",
    issuer_url="https://auth.example.com/realms/platform",
    vault_kv_mount="tenants",
    vault_auth_path="kubernetes",
)


def _tenant(name: str, **services: Any) -> Any:
    doc = {"name": name, "owners": ["a@example.com"], "plan": "medium", **services}
    return resolve(parse_tenant(doc, file=f"{name}.yaml"), "prod")


def _admits(policy: dict[str, Any], source_namespace: str, source_labels: dict[str, str]) -> bool:
    """Whether an ingress rule of ``policy`` admits a pod of ``source_namespace`` with ``source_labels``."""
    for rule in policy["spec"].get("ingress", []):
        for peer in rule.get("from", []):
            ns_selector = peer.get("namespaceSelector")
            pod_selector = peer.get("podSelector")
            if ns_selector is None:
                ns_ok = source_namespace == policy["metadata"]["namespace"]
            else:
                wanted = ns_selector.get("matchLabels", {})
                ns_ok = all(
                    v == {"kubernetes.io/metadata.name": source_namespace}.get(k) for k, v in wanted.items()
                )
            pods_ok = pod_selector is None or all(
                source_labels.get(k) == v for k, v in pod_selector.get("matchLabels", {}).items()
            )
            if ns_ok and pods_ok:
                return True
    return False


def test_tenant_cannot_reach_other_tenant() -> None:
    acme = _tenant("acme", qdrant={"enabled": True})
    globex = _tenant("globex", qdrant={"enabled": True}, vcluster={"enabled": True})
    for target, other in ((acme, globex), (globex, acme)):
        policies = network_policy_manifests(target, REFS, kubernetes_api_cidrs=API_SERVER)
        assert any(
            p["metadata"]["name"] == "default-deny" and p["spec"]["podSelector"] == {} for p in policies
        )
        any_pod = {"app.kubernetes.io/name": "qdrant", "istio": "ingressgateway", "k8s-app": "kube-dns"}
        assert not any(_admits(p, other.namespace, any_pod) for p in policies)
        assert any(_admits(p, target.namespace, {}) for p in policies)


def test_ingress_gateway_reaches_only_qdrant_ports() -> None:
    policies = network_policy_manifests(
        _tenant("acme", qdrant={"enabled": True}), REFS, kubernetes_api_cidrs=API_SERVER
    )
    [gateway] = [p for p in policies if p["metadata"]["name"] == "allow-ingress-gateway-to-qdrant"]
    assert _admits(gateway, "istio-ingress", {"istio": "ingressgateway"})
    assert not _admits(gateway, "istio-ingress", {"app": "something-else"})
    assert [p["port"] for p in gateway["spec"]["ingress"][0]["ports"]] == [6333, 6334]


def test_two_tenants_share_no_object() -> None:
    from tenancy.builders.namespace import limit_range_manifest, namespace_manifest, resource_quota_manifest
    from tenancy.builders.rbac import role_binding_manifests, role_manifests

    def objects(tenant: Any) -> set[tuple[str, str | None, str]]:
        built = [
            namespace_manifest(tenant),
            resource_quota_manifest(tenant),
            limit_range_manifest(tenant),
            *network_policy_manifests(tenant, REFS, kubernetes_api_cidrs=API_SERVER),
            *role_manifests(tenant),
            *role_binding_manifests(tenant, group_prefix="oidc:"),
        ]
        return {(m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]) for m in built}

    acme, globex = _tenant("acme"), _tenant("globex")
    assert objects(acme).isdisjoint(objects(globex))
    assert {ns for _, ns, _ in objects(acme) if ns} == {"tenant-acme"}


@pytest.mark.parametrize("stack", ["prod.acme", "prod.globex", "dev.acme", "dev.initech"])
def test_every_tenant_object_carries_the_tenant_label(run_stack: Run, stack: str) -> None:
    tenant = stack.split(".")[1]
    for resource in run_stack(stack).kubernetes_objects():
        assert resource.inputs["metadata"]["labels"][LABEL_TENANT] == tenant, resource.name


def test_prod_keeps_qdrant_keys_in_vault_and_dev_only_in_secrets(run_stack: Run) -> None:
    prod = run_stack("prod.acme")
    [secret] = prod.of_type("vault:kv/secretV2:SecretV2")
    assert secret.inputs["name"] == "prod/acme/qdrant"
    assert prod.outputs["vaultRole"] == "tenant-prod-acme"
    assert prod.of_type("pulumi:providers:vault")
    dev = run_stack("dev.acme")
    assert not [r for r in dev.resources if r.type.startswith("vault:")]
    assert "vaultSecretPath" not in dev.outputs


# --- the vCluster's way out -------------------------------------------------------------------------


def _egress_to(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [peer for rule in policy["spec"]["egress"] for peer in rule.get("to", [])]


def test_vcluster_may_reach_only_the_api_server_addresses_on_its_ports() -> None:
    policies = network_policy_manifests(
        _tenant("acme", vcluster={"enabled": True}), REFS, kubernetes_api_cidrs=["10.0.0.2/32", "10.0.1.0/28"]
    )
    [apiserver] = [p for p in policies if p["metadata"]["name"] == "allow-vcluster-to-apiserver"]
    [rule] = apiserver["spec"]["egress"]
    # A rule without `to` would admit every address on these ports: the internet, every cloud endpoint.
    assert rule["to"] == [{"ipBlock": {"cidr": "10.0.0.2/32"}}, {"ipBlock": {"cidr": "10.0.1.0/28"}}]
    assert [p["port"] for p in rule["ports"]] == [443, 6443]
    # Tenants can label any pod app=vcluster; the selector narrows which pods, the addresses what they reach.
    assert apiserver["spec"]["podSelector"] == {"matchLabels": {"app": "vcluster", "release": "vcluster"}}
    for policy in policies:
        for egress in policy["spec"].get("egress", []):
            assert egress.get("to"), f"{policy['metadata']['name']} allows egress to any address"


def test_ingress_gateway_reaches_the_vcluster_api_port_only() -> None:
    policies = network_policy_manifests(
        _tenant("acme", vcluster={"enabled": True}), REFS, kubernetes_api_cidrs=API_SERVER
    )
    [gateway] = [p for p in policies if p["metadata"]["name"] == "allow-ingress-gateway-to-vcluster"]
    assert gateway["spec"]["podSelector"] == {"matchLabels": {"app": "vcluster", "release": "vcluster"}}
    assert _admits(gateway, "istio-ingress", {"istio": "ingressgateway"})
    assert not _admits(gateway, "istio-ingress", {"app": "something-else"})
    assert not _admits(gateway, "tenant-globex", {"istio": "ingressgateway"})
    assert [p["port"] for p in gateway["spec"]["ingress"][0]["ports"]] == [8443]
    without = network_policy_manifests(
        _tenant("acme", qdrant={"enabled": True}), REFS, kubernetes_api_cidrs=[]
    )
    assert "allow-ingress-gateway-to-vcluster" not in {p["metadata"]["name"] for p in without}


def test_a_vcluster_tenant_needs_the_api_server_addresses_configured() -> None:
    with pytest.raises(SpecError) as error:
        network_policy_manifests(_tenant("acme", vcluster={"enabled": True}), REFS, kubernetes_api_cidrs=[])
    [issue] = error.value.issues
    assert (issue.file, issue.field) == ("Pulumi.prod.yaml", "platform:kubernetesApiCidrs")
    assert "acme" in issue.reason
    # Without a vCluster nothing leaves the cluster, so nothing needs the addresses.
    network_policy_manifests(_tenant("acme", qdrant={"enabled": True}), REFS, kubernetes_api_cidrs=[])


def test_tenant_stack_takes_the_api_server_addresses_from_the_platform_config(run_stack: Run) -> None:
    for stack, cidr in (("prod.acme", "10.20.0.0/28"), ("dev.initech", "10.10.0.2/32")):
        [apiserver] = [
            p
            for p in manifests(run_stack(stack), "NetworkPolicy")
            if p["metadata"]["name"] == "allow-vcluster-to-apiserver"
        ]
        assert _egress_to(apiserver) == [{"ipBlock": {"cidr": cidr}}]


# --- metrics ------------------------------------------------------------------------------------------


def test_metrics_scraping_reaches_only_the_sidecars_merged_endpoint() -> None:
    policies = network_policy_manifests(
        _tenant("acme", qdrant={"enabled": True}, vcluster={"enabled": True}),
        REFS,
        kubernetes_api_cidrs=API_SERVER,
    )
    [scraping] = [p for p in policies if p["metadata"]["name"] == "allow-metrics-scraping"]
    [rule] = scraping["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [15020]
    assert _admits(scraping, "observability", {})
    # Qdrant's own port stays closed to the scraper: mTLS is STRICT and the scraper is not meshed.
    for policy in policies:
        if _admits(policy, "observability", {}):
            assert 6333 not in [port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]]


def test_qdrants_metrics_are_merged_into_the_sidecar_endpoint_without_an_api_key(run_stack: Run) -> None:
    values = release(run_stack("prod.acme"), "qdrant")["values"]
    port = values["config"]["service"]["metrics_port"]
    # /metrics on 6333 asks for an API key, which Istio's agent cannot send; this port serves it without.
    assert port not in (6333, 6334, 6335) and not 15000 <= port <= 15099
    annotations = values["podAnnotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


# --- labels on what the charts render ---------------------------------------------------------------


def test_charts_get_the_tenant_labels_but_leave_managed_by_to_helm(run_stack: Run) -> None:
    capture = run_stack("prod.acme")
    qdrant = release(capture, "qdrant")["values"]
    control_plane = release(capture, "vcluster")["values"]["controlPlane"]
    label_maps = {
        "qdrant additionalLabels": qdrant["additionalLabels"],
        "vcluster statefulSet.labels": control_plane["statefulSet"]["labels"],
        "vcluster statefulSet.pods.labels": control_plane["statefulSet"]["pods"]["labels"],
        "vcluster service.labels": control_plane["service"]["labels"],
        "vcluster headlessService.labels": control_plane["advanced"]["headlessService"]["labels"],
        "vcluster serviceAccount.labels": control_plane["advanced"]["serviceAccount"]["labels"],
        "vcluster workloadServiceAccount.labels": control_plane["advanced"]["workloadServiceAccount"][
            "labels"
        ],
    }
    for where, labels in label_maps.items():
        assert labels[LABEL_TENANT] == "acme", where
        assert "app.kubernetes.io/managed-by" not in labels, where
        # The chart's selectors use these; a second key would make duplicate YAML keys.
        assert not {"app", "release"} & set(labels), where
        assert all(isinstance(value, str) for value in labels.values()), where


def test_qdrant_volume_claims_carry_only_labels_that_never_change(run_stack: Run) -> None:
    # volumeClaimTemplates cannot be changed after creation: a plan or a tenant label there would make the
    # next plan change (or label edit) an upgrade the API server refuses.
    values = release(run_stack("prod.acme"), "qdrant")["values"]
    expected = {LABEL_TENANT: "acme", "tenancy.platform/environment": "prod"}
    assert values["persistence"]["additionalLabels"] == expected
    assert values["snapshotPersistence"]["additionalLabels"] == expected


def test_kubeconfig_is_read_only_after_the_vcluster_has_written_it(run_stack: Run) -> None:
    capture = run_stack("prod.acme")
    [wait] = capture.of_type("command:local:Command")
    assert wait.inputs["create"] == (
        "kubectl wait --for=create secret/vc-vcluster --namespace tenant-acme --timeout=300s"
    )
    assert wait.depends_on == ["acme-vcluster-release"]
    assert capture.named("acme-vcluster-kubeconfig").depends_on == ["acme-vcluster-kubeconfig-created"]


def test_the_wait_uses_the_providers_kube_context() -> None:
    from tenancy.builders.vcluster import wait_for_secret_command

    command = wait_for_secret_command("tenant-a b", "vc-vcluster", context="prod cluster")
    assert command.startswith("kubectl --context 'prod cluster' wait")
    assert "--namespace 'tenant-a b'" in command
