"""Every rule: a violating input fails with a message naming object, rule and fix; a compliant one passes."""

from __future__ import annotations

from typing import Any

import pytest

from tenancy.policy.model import PolicyObject
from tenancy.policy.rules import RESOURCE_RULES, STACK_RULES, check_stack, check_stacks
from tests.policy.objects import (
    TENANT_NAMESPACE,
    container,
    fields,
    guard_rails,
    manifest,
    messages,
    pod_spec,
    release,
    tenant_object,
    violations_of,
    workload,
)

WORKLOADS = ["Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"]
POD_SPEC_AT = {
    "Pod": "spec",
    "Job": "spec.template.spec",
    "CronJob": "spec.jobTemplate.spec.template.spec",
}


def _pod_field(kind: str, rest: str) -> str:
    return f"{POD_SPEC_AT.get(kind, 'spec.template.spec')}.{rest}"


def test_rule_names_are_unique_and_every_rule_is_described() -> None:
    names = [r.name for r in RESOURCE_RULES] + [r.name for r in STACK_RULES]
    assert len(names) == len(set(names)) == 12
    assert all(r.description for r in RESOURCE_RULES) and all(r.description for r in STACK_RULES)


def test_a_compliant_tenant_workload_and_namespace_pass_every_rule() -> None:
    assert check_stack([workload(), *guard_rails()]) == []


def test_violation_message_names_object_rule_field_and_fix() -> None:
    broken = workload(spec=pod_spec(containers=[container(securityContext={})]))
    message = next(m for m in messages("pod-security-restricted", broken) if "escalate" in m)
    assert message == (
        "Deployment tenant-acme/web: [pod-security-restricted] container 'web' may escalate privileges "
        "(spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation). "
        "Fix: set spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation to false"
    )


# --- pod-security-restricted ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", WORKLOADS)
def test_every_workload_kind_in_a_tenant_namespace_must_be_restricted(kind: str) -> None:
    broken = workload(kind, spec=pod_spec(containers=[container(securityContext={"runAsNonRoot": True})]))
    found = fields(violations_of("pod-security-restricted", broken))
    assert found == [
        _pod_field(kind, "containers[0].securityContext.allowPrivilegeEscalation"),
        _pod_field(kind, "containers[0].securityContext.capabilities.drop"),
        _pod_field(kind, "securityContext.seccompProfile.type"),
    ]
    assert violations_of("pod-security-restricted", workload(kind)) == []


@pytest.mark.parametrize(
    ("security", "expected"),
    [
        ({"runAsNonRoot": False}, "container 'web' may run as root"),
        ({"privileged": True}, "container 'web' is privileged"),
        ({"runAsUser": 0}, "container 'web' runs as user 0 (root)"),
        ({"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}, "adds capabilities SYS_ADMIN"),
        ({"seccompProfile": {"type": "Unconfined"}}, "uses seccomp profile Unconfined"),
    ],
)
def test_each_restricted_control_is_checked(security: dict[str, Any], expected: str) -> None:
    context = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
        **security,
    }
    found = messages(
        "pod-security-restricted", workload(spec=pod_spec(containers=[container(securityContext=context)]))
    )
    assert len(found) == 1
    assert expected in found[0]


def test_pod_level_settings_cover_every_container() -> None:
    pod = pod_spec(
        securityContext={"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        containers=[
            container(securityContext={"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}})
        ],
    )
    assert messages("pod-security-restricted", workload(spec=pod)) == []


def test_init_containers_are_held_to_restricted_too() -> None:
    pod = pod_spec(initContainers=[container("setup", securityContext={})])
    found = fields(violations_of("pod-security-restricted", workload(spec=pod)))
    assert "spec.template.spec.initContainers[0].securityContext.allowPrivilegeEscalation" in found


def test_volume_types_outside_restricted_are_refused() -> None:
    pod = pod_spec(
        volumes=[{"name": "share", "nfs": {"server": "nfs", "path": "/"}}, {"name": "tmp", "emptyDir": {}}]
    )
    assert messages("pod-security-restricted", workload(spec=pod)) == [
        "Deployment tenant-acme/web: [pod-security-restricted] volume 'share' of its pods is of type nfs, "
        "which Pod Security restricted forbids (spec.template.spec.volumes[0]). Fix: use a configMap, "
        "secret, emptyDir, projected or persistentVolumeClaim volume at spec.template.spec.volumes[0]"
    ]


def test_pod_security_restricted_applies_to_tenant_namespaces_only() -> None:
    root = workload(
        namespace="observability", stack="prod", spec=pod_spec(containers=[container(securityContext={})])
    )
    assert violations_of("pod-security-restricted", root) == []


# --- container-resources -------------------------------------------------------------------------------
def test_containers_without_requests_and_limits_fail_everywhere() -> None:
    pod = pod_spec(containers=[container(resources={"requests": {"cpu": "1", "memory": "1Gi"}})])
    found = messages("container-resources", workload(namespace="argocd", stack="prod", labels={}, spec=pod))
    assert found == [
        "Deployment argocd/web: [container-resources] container 'web' has no limits.cpu, limits.memory "
        "(spec.template.spec.containers[0].resources). Fix: set limits.cpu, limits.memory under "
        "spec.template.spec.containers[0].resources"
    ]


def test_init_containers_need_resources_and_sized_containers_pass() -> None:
    assert violations_of("container-resources", workload()) == []
    pod = pod_spec(initContainers=[container("setup", resources={})])
    assert fields(violations_of("container-resources", workload(spec=pod))) == [
        "spec.template.spec.initContainers[0].resources"
    ]


# --- image-pinned --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("nginx", "has no tag, so it pulls latest"),
        ("localhost:5000/team/app", "has no tag, so it pulls latest"),
        ("ghcr.io/acme/web:latest", "uses the latest tag"),
    ],
)
def test_untagged_and_latest_images_fail(image: str, problem: str) -> None:
    found = messages("image-pinned", workload(spec=pod_spec(containers=[container(image=image)])))
    assert found == [
        f"Deployment tenant-acme/web: [image-pinned] container 'web' image {image!r} {problem} "
        "(spec.template.spec.containers[0].image). Fix: pin a version tag or digest at "
        "spec.template.spec.containers[0].image, kept in tenancy/versions.py"
    ]


@pytest.mark.parametrize("image", ["ghcr.io/acme/web:1.2.3", "registry:5000/web:2", "web@sha256:abc123"])
def test_tagged_and_digest_images_pass(image: str) -> None:
    assert violations_of("image-pinned", workload(spec=pod_spec(containers=[container(image=image)]))) == []


def test_latest_in_any_charts_values_fails() -> None:
    grafana = release(
        "grafana",
        {"image": {"tag": "latest"}, "sidecar": {"image": "kiwigrid/k8s-sidecar:latest"}},
        version="12.11.1",
    )
    found = violations_of("image-pinned", grafana)
    assert fields(found) == ["values.image.tag", "values.sidecar.image"]
    assert release("grafana", {"image": {"tag": "13.2.0"}}, version="12.11.1").values


def test_a_latest_qdrant_tag_is_reported_once() -> None:
    qdrant = release(
        "qdrant", {"image": {"tag": "latest"}, "updateVolumeFsOwnership": False}, version="1.19.0"
    )
    assert fields(violations_of("image-pinned", qdrant)) == ["values.image.tag"]


# --- no-host-access ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hostNetwork": True}, "spec.template.spec.hostNetwork"),
        ({"hostPID": True}, "spec.template.spec.hostPID"),
        ({"hostIPC": True}, "spec.template.spec.hostIPC"),
        (
            {"volumes": [{"name": "logs", "hostPath": {"path": "/var/log"}}]},
            "spec.template.spec.volumes[0].hostPath",
        ),
        (
            {"containers": [container(ports=[{"containerPort": 80, "hostPort": 80}])]},
            "spec.template.spec.containers[0].ports[0].hostPort",
        ),
    ],
)
def test_host_access_fails_in_any_namespace(change: dict[str, Any], field: str) -> None:
    platform_daemon = workload(
        "DaemonSet", namespace="observability", stack="prod", labels={}, spec=pod_spec(**change)
    )
    found = violations_of("no-host-access", platform_daemon)
    assert fields(found) == [field]
    assert "DaemonSet observability/web: [no-host-access]" in found[0].message


def test_pods_without_host_access_pass() -> None:
    assert violations_of("no-host-access", workload("DaemonSet")) == []


# --- no-external-service -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["LoadBalancer", "NodePort"])
def test_tenant_services_cannot_be_exposed_outside_the_gateway(kind: str) -> None:
    service = tenant_object("v1", "Service", "web", {"spec": {"type": kind, "ports": [{"port": 80}]}})
    assert messages("no-external-service", service) == [
        f"Service tenant-acme/web: [no-external-service] Service is of type {kind} (spec.type). "
        "Fix: tenants are reached through the platform gateway: use type ClusterIP at spec.type"
    ]


def test_cluster_ip_services_and_the_platform_gateway_pass() -> None:
    internal = tenant_object("v1", "Service", "web", {"spec": {"type": "ClusterIP"}})
    gateway = manifest(
        "v1",
        "Service",
        {"name": "gateway", "namespace": "istio-ingress"},
        {"spec": {"type": "LoadBalancer"}},
        stack="prod",
    )
    assert violations_of("no-external-service", internal, gateway) == []


def test_a_chart_service_exposed_in_a_tenant_namespace_fails() -> None:
    qdrant = release("qdrant", {"service": {"type": "LoadBalancer"}}, version="1.19.0")
    assert fields(violations_of("no-external-service", qdrant)) == ["values.service.type"]


# --- tenant-label --------------------------------------------------------------------------------------
def test_objects_in_a_tenant_namespace_need_the_tenant_label() -> None:
    unlabelled = manifest(
        "v1", "ConfigMap", {"name": "settings", "namespace": TENANT_NAMESPACE}, stack="prod.acme"
    )
    assert messages("tenant-label", unlabelled) == [
        "ConfigMap tenant-acme/settings: [tenant-label] the object has no tenancy.platform/tenant label "
        "(metadata.labels). Fix: add tenancy.platform/tenant: acme to metadata.labels (tenant.labels in the "
        "builders carries it)"
    ]


def test_the_label_must_name_the_owning_tenant() -> None:
    wrong = manifest(
        "v1",
        "ConfigMap",
        {"name": "settings", "namespace": TENANT_NAMESPACE, "labels": {"tenancy.platform/tenant": "globex"}},
        stack="prod.acme",
    )
    assert (
        "is labelled for tenant 'globex' but belongs to tenant 'acme'" in messages("tenant-label", wrong)[0]
    )


def test_pod_templates_carry_the_tenant_label_too() -> None:
    deployment = workload()
    body = dict(deployment.body)
    body["spec"] = {
        **body["spec"],
        "template": {**body["spec"]["template"], "metadata": {"labels": {"app": "web"}}},
    }
    broken = manifest(
        "apps/v1", "Deployment", dict(body["metadata"]), {"spec": body["spec"]}, stack="prod.acme"
    )
    assert fields(violations_of("tenant-label", broken)) == ["spec.template.metadata.labels"]


def test_cluster_scoped_objects_a_tenant_stack_declares_are_the_tenants() -> None:
    role = manifest("rbac.authorization.k8s.io/v1", "ClusterRole", {"name": "acme-reader"}, stack="prod.acme")
    assert fields(violations_of("tenant-label", role)) == ["metadata.labels"]
    platform_role = manifest("rbac.authorization.k8s.io/v1", "ClusterRole", {"name": "reader"}, stack="prod")
    assert violations_of("tenant-label", platform_role) == []


def test_tenant_namespaces_carry_the_label_whoever_declares_them() -> None:
    namespace = manifest("v1", "Namespace", {"name": "tenant-acme"}, stack="prod")
    assert fields(violations_of("tenant-label", namespace)) == ["metadata.labels"]


def test_charts_in_tenant_namespaces_label_what_they_render() -> None:
    qdrant = release("qdrant", {}, version="1.19.0")
    vcluster = release("vcluster", {}, version="0.36.1")
    assert fields(violations_of("tenant-label", qdrant, vcluster)) == [
        "values.additionalLabels",
        "values.controlPlane.statefulSet.labels",
        "values.controlPlane.statefulSet.pods.labels",
    ]


# --- helm-version-pinned -------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["", "^1.19.0", "~1.19", ">=1.0.0", "1.x", "*", "1.19"])
def test_releases_without_one_exact_version_fail(version: str) -> None:
    loose = release("loki", {}, version=version, namespace="observability", stack="prod")
    found = messages("helm-version-pinned", loose)
    assert len(found) == 1
    assert found[0].startswith("HelmRelease observability/loki: [helm-version-pinned] ")
    assert found[0].endswith(
        "Fix: pin loki to an exact version in tenancy/versions.py and pass it as version"
    )


@pytest.mark.parametrize("version", ["18.11.0", "v1.30.3", "1.0.0-rc.1"])
def test_releases_with_an_exact_version_pass(version: str) -> None:
    assert (
        violations_of("helm-version-pinned", release("loki", {}, version=version, namespace="observability"))
        == []
    )


# --- tenant-chart-modelled -----------------------------------------------------------------------------
def test_a_chart_the_policies_do_not_model_cannot_go_into_a_tenant_namespace() -> None:
    found = messages("tenant-chart-modelled", release("redis-ha", {}, version="4.39.0"))
    assert found == [
        "HelmRelease tenant-acme/redis-ha: [tenant-chart-modelled] chart 'redis-ha' is not modelled by the "
        "policies, so Pod Security, resources and labels of what it renders in a tenant namespace cannot be "
        "checked (chart). Fix: model the chart in tenancy/policy/charts.py, or install it outside tenant "
        "namespaces"
    ]


def test_a_modelled_chart_at_another_version_needs_its_model_updated() -> None:
    found = messages("tenant-chart-modelled", release("qdrant", {}, version="1.20.0"))
    assert len(found) == 1
    assert "the policies model qdrant 1.19.0, not 1.20.0" in found[0]


def test_modelled_charts_and_platform_charts_outside_tenant_namespaces_pass() -> None:
    platform = release("redis-ha", {}, version="4.39.0", namespace="redis", stack="prod")
    assert violations_of("tenant-chart-modelled", platform, release("qdrant", {}, version="1.19.0")) == []


# --- stateful-pdb --------------------------------------------------------------------------------------
def _pdb(selector: dict[str, Any], namespace: str = TENANT_NAMESPACE) -> PolicyObject:
    return manifest(
        "policy/v1",
        "PodDisruptionBudget",
        {"name": "web", "namespace": namespace},
        {"spec": {"maxUnavailable": 1, "selector": selector}},
        stack="prod.acme",
    )


def test_a_replicated_statefulset_without_a_pdb_fails() -> None:
    found = messages("stateful-pdb", workload("StatefulSet", replicas=3))
    assert found == [
        "StatefulSet tenant-acme/web: [stateful-pdb] 3 replicas of stateful pods and no PodDisruptionBudget "
        "selects them, so a node drain may take several down at once (spec.replicas). Fix: declare a "
        "policy/v1 PodDisruptionBudget in tenant-acme whose selector matches spec.template.metadata.labels, "
        "with maxUnavailable: 1"
    ]


@pytest.mark.parametrize(
    "selector",
    [
        {"matchLabels": {"app": "web"}},
        {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]},
    ],
)
def test_a_matching_pdb_protects_a_replicated_statefulset(selector: dict[str, Any]) -> None:
    assert violations_of("stateful-pdb", workload("StatefulSet", replicas=3), _pdb(selector)) == []


def test_a_pdb_selecting_other_pods_or_in_another_namespace_does_not_count() -> None:
    other_pods = _pdb({"matchLabels": {"app": "api"}})
    other_namespace = _pdb({"matchLabels": {"app": "web"}}, namespace="tenant-globex")
    assert (
        len(violations_of("stateful-pdb", workload("StatefulSet", replicas=2), other_pods, other_namespace))
        == 1
    )


def test_single_replica_statefulsets_and_deployments_need_no_pdb() -> None:
    assert violations_of("stateful-pdb", workload("StatefulSet", replicas=1), workload(replicas=5)) == []


@pytest.mark.parametrize(
    ("chart", "version", "values", "field", "protected"),
    [
        (
            "qdrant",
            "1.19.0",
            {"replicaCount": 3},
            "values.replicaCount",
            {"podDisruptionBudget": {"enabled": True}},
        ),
        (
            "vcluster",
            "0.36.1",
            {"controlPlane": {"statefulSet": {"highAvailability": {"replicas": 3}}}},
            "values.controlPlane.statefulSet.highAvailability.replicas",
            {"controlPlane": {"advanced": {"podDisruptionBudget": {"enabled": True}}}},
        ),
        ("redis-ha", "4.39.0", {}, "values.replicas", {"podDisruptionBudget": {"maxUnavailable": 1}}),
        (
            "keycloakx",
            "7.1.11",
            {"replicas": 2},
            "values.replicas",
            {"podDisruptionBudget": {"maxUnavailable": 1}},
        ),
        (
            "argo-cd",
            "10.1.1",
            {"controller": {"replicas": 2, "pdb": {"enabled": True}}},
            "values.controller.replicas",
            {"controller": {"replicas": 2, "pdb": {"enabled": True, "maxUnavailable": 1}}},
        ),
        (
            "argo-cd",
            "10.1.1",
            {"redis-ha": {"enabled": True}},
            "values.redis-ha.replicas",
            {"redis-ha": {"enabled": True, "podDisruptionBudget": {"maxUnavailable": 1}}},
        ),
    ],
)
def test_replicated_stateful_charts_need_their_pdb_enabled(
    chart: str, version: str, values: dict[str, Any], field: str, protected: dict[str, Any]
) -> None:
    found = violations_of(
        "stateful-pdb", release(chart, values, version=version, namespace="platform", stack="prod")
    )
    assert fields(found) == [field]
    assert "Fix: set values." in found[0].message
    merged = {**values, **protected}
    assert violations_of("stateful-pdb", release(chart, merged, version=version, namespace="platform")) == []


def test_a_replicated_postgres_cluster_with_pdbs_turned_off_fails() -> None:
    def cluster(spec: dict[str, Any]) -> PolicyObject:
        return manifest(
            "postgresql.cnpg.io/v1",
            "Cluster",
            {"name": "db", "namespace": "iam"},
            {"spec": spec},
            stack="prod",
        )

    found = messages("stateful-pdb", cluster({"instances": 3, "enablePDB": False}))
    assert found == [
        "Cluster iam/db: [stateful-pdb] 3 PostgreSQL instances with PodDisruptionBudgets off "
        "(spec.enablePDB). Fix: remove spec.enablePDB (it defaults to true) or set it to true"
    ]
    assert (
        violations_of(
            "stateful-pdb", cluster({"instances": 3}), cluster({"instances": 1, "enablePDB": False})
        )
        == []
    )


# --- tenant-namespace-guardrails -----------------------------------------------------------------------
def test_a_tenant_namespace_without_guard_rails_fails_naming_each_missing_piece() -> None:
    namespace = guard_rails()[0]
    assert messages("tenant-namespace-guardrails", namespace) == [
        "Namespace tenant-acme: [tenant-namespace-guardrails] tenant namespace tenant-acme lacks a "
        "default-deny Ingress NetworkPolicy (podSelector {}, no ingress rules); a default-deny Egress "
        "NetworkPolicy (podSelector {}, no egress rules); a ResourceQuota; a LimitRange. Fix: declare them "
        "in tenant-acme in the same stack (components/tenant/namespace.py and network.py build them from "
        "the tenant's plan)"
    ]


def test_a_complete_tenant_namespace_passes() -> None:
    assert violations_of("tenant-namespace-guardrails", *guard_rails()) == []


def test_separate_ingress_and_egress_deny_policies_count_as_default_deny() -> None:
    namespace, _, quota, limits = guard_rails()
    ingress = tenant_object("networking.k8s.io/v1", "NetworkPolicy", "deny-in", {"spec": {"podSelector": {}}})
    egress = tenant_object(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "deny-out",
        {"spec": {"podSelector": {}, "policyTypes": ["Egress"]}},
    )
    assert violations_of("tenant-namespace-guardrails", namespace, ingress, egress, quota, limits) == []


def test_a_deny_that_selects_some_pods_or_allows_traffic_is_no_default_deny() -> None:
    namespace, _, quota, limits = guard_rails()
    partial = tenant_object(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "deny-web",
        {"spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress", "Egress"]}},
    )
    allowing = tenant_object(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "allow",
        {"spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}], "egress": [{}]}},
    )
    found = messages("tenant-namespace-guardrails", namespace, partial, allowing, quota, limits)
    assert len(found) == 1
    assert "lacks a default-deny Ingress NetworkPolicy" in found[0]


def test_guard_rails_are_looked_for_in_the_stack_that_declares_the_namespace() -> None:
    namespace, deny, quota, limits = guard_rails()
    elsewhere = [manifest_in_stack(o, "prod.other") for o in (deny, quota, limits)]
    assert [v.rule for v in check_stacks([namespace, *elsewhere])] == ["tenant-namespace-guardrails"]


def manifest_in_stack(obj: PolicyObject, stack: str) -> PolicyObject:
    return manifest(
        obj.api_version, obj.kind, dict(obj.body["metadata"]), {"spec": obj.body.get("spec")}, stack=stack
    )


# --- common behaviour ----------------------------------------------------------------------------------
def test_patches_are_not_checked_as_whole_objects() -> None:
    from dataclasses import replace

    patch = replace(workload(spec=pod_spec(hostNetwork=True)), patch=True)
    assert check_stack([patch]) == []


def test_findings_about_masked_values_are_undecided_not_violations() -> None:
    from dataclasses import replace

    masked = replace(
        release("qdrant", {"replicaCount": "<secret>"}, version="1.19.0", namespace="platform"),
        hidden=(("values", "replicaCount"),),
    )
    found = violations_of(
        "stateful-pdb", replace(masked, body={**masked.body, "values": {"replicaCount": 3}})
    )
    assert [v.undecided for v in found] == [True]


# --- api-server-egress-by-address ------------------------------------------------------------------------
def _egress_policy(*rules: dict[str, Any], namespace: str = "argocd") -> PolicyObject:
    return manifest(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        {"name": "allow-apiserver", "namespace": namespace},
        {"spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": list(rules)}},
        stack="prod",
    )


@pytest.mark.parametrize(
    "rule",
    [
        {"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]},
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 6443}]},
        {
            "to": [{"ipBlock": {"cidr": "10.20.0.0/28"}}, {"ipBlock": {"cidr": "::/0"}}],
            "ports": [{"port": 6443}],
        },
        {"ports": [{"protocol": "TCP", "port": 6000, "endPort": 7000}]},
        {},
    ],
)
def test_egress_to_any_address_on_the_api_servers_port_fails(rule: dict[str, Any]) -> None:
    [message] = messages("api-server-egress-by-address", _egress_policy(rule))
    assert message.startswith(
        "NetworkPolicy argocd/allow-apiserver: [api-server-egress-by-address] "
        "egress to any address on port 6443"
    )
    assert "(spec.egress[0])" in message and "platform:kubernetesApiCidrs" in message


@pytest.mark.parametrize(
    "rule",
    [
        {"to": [{"ipBlock": {"cidr": "10.20.0.0/28"}}], "ports": [{"port": 443}, {"port": 6443}]},
        {"ports": [{"port": 443}, {"port": 22}]},  # a git host: any address, but not the API's port
        {"to": [{"namespaceSelector": {"matchLabels": {"istio-injection": "enabled"}}}]},  # pods only
        {"ports": [{"protocol": "UDP", "port": 6443}]},
    ],
)
def test_egress_to_the_api_servers_addresses_or_other_ports_passes(rule: dict[str, Any]) -> None:
    assert violations_of("api-server-egress-by-address", _egress_policy(rule)) == []
