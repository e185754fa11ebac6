"""Chart models: pods, services, labels and PDBs of the pinned qdrant and vcluster charts, from values."""

from __future__ import annotations

import pytest

from tenancy import versions
from tenancy.builders.qdrant_postrender import POST_RENDERER
from tenancy.policy import charts
from tenancy.policy.charts import helm_merge
from tenancy.policy.model import PolicyObject
from tenancy.policy.pods import containers
from tenancy.policy.rules import check_stack
from tenancy.policy.sources import objects_from_render
from tenancy.render.write import render_capture
from tests.conftest import captured_stack
from tests.policy.objects import fields, release, violations_of


@pytest.fixture(scope="module")
def acme() -> list[PolicyObject]:
    return objects_from_render(render_capture(captured_stack("prod.acme")))


def test_helm_merge_merges_maps_replaces_lists_and_deletes_nulls() -> None:
    defaults = {"a": {"b": 1, "c": 2}, "list": [1, 2], "gone": {"x": 1}}
    assert helm_merge(defaults, {"a": {"c": 3}, "list": [9], "gone": None}) == {
        "a": {"b": 1, "c": 3},
        "list": [9],
    }


def test_the_tenants_qdrant_and_vcluster_values_pass_every_rule(acme: list[PolicyObject]) -> None:
    assert {o.chart for o in acme if o.is_release} >= {"qdrant", "vcluster"}
    assert [v.message for v in check_stack(acme)] == []


def test_qdrant_chart_defaults_are_not_restricted_and_the_findings_name_values_keys() -> None:
    qdrant = release("qdrant", {"updateVolumeFsOwnership": False}, version="1.19.0")
    assert fields(violations_of("pod-security-restricted", qdrant)) == [
        "values.containerSecurityContext.capabilities.drop",
        "values.podSecurityContext.seccompProfile.type",
    ]


def test_qdrants_root_chown_init_container_is_fixed_by_turning_it_off() -> None:
    found = violations_of("pod-security-restricted", release("qdrant", {}, version="1.19.0"))
    init = [
        v
        for v in found
        if "ensure-dir-ownership" in v.problem and v.field == "values.updateVolumeFsOwnership"
    ]
    assert init
    assert init[0].fix.startswith("set values.updateVolumeFsOwnership to false")


def test_qdrant_without_resources_fails_naming_the_values_key() -> None:
    found = violations_of(
        "container-resources", release("qdrant", {"updateVolumeFsOwnership": False}, version="1.19.0")
    )
    assert fields(found) == ["values.resources"]


def test_qdrant_sidecars_are_checked_at_their_values_entry() -> None:
    sidecar = {"name": "proxy", "image": "envoy:latest"}
    qdrant = release(
        "qdrant", {"sidecarContainers": [sidecar], "updateVolumeFsOwnership": False}, version="1.19.0"
    )
    assert fields(violations_of("image-pinned", qdrant)) == ["values.sidecarContainers[0].image"]


def test_vcluster_chart_defaults_run_the_control_plane_as_root() -> None:
    found = violations_of("pod-security-restricted", release("vcluster", {}, version="0.36.1"))
    assert "values.controlPlane.statefulSet.security.containerSecurityContext.runAsUser" in fields(found)


def test_vcluster_coredns_needs_a_seccomp_profile_which_the_pod_security_standard_gives() -> None:
    coredns = "values.controlPlane.coredns.security.podSecurityContext.seccompProfile.type"
    assert coredns in fields(
        violations_of("pod-security-restricted", release("vcluster", {}, version="0.36.1"))
    )
    standard = release("vcluster", {"policies": {"podSecurityStandard": "restricted"}}, version="0.36.1")
    assert coredns not in fields(violations_of("pod-security-restricted", standard))


def test_vcluster_default_control_plane_resources_lack_a_cpu_limit() -> None:
    found = violations_of("container-resources", release("vcluster", {}, version="0.36.1"))
    assert [(v.field, v.problem.split(" has no ")[1]) for v in found] == [
        ("values.controlPlane.statefulSet.resources", "limits.cpu")
    ]


def test_vcluster_services_exposed_by_values_fail_in_tenant_namespaces() -> None:
    exposed = release(
        "vcluster", {"controlPlane": {"service": {"spec": {"type": "NodePort"}}}}, version="0.36.1"
    )
    assert fields(violations_of("no-external-service", exposed)) == ["values.controlPlane.service.spec.type"]


def test_the_render_and_the_chart_model_agree_on_the_release_namespace(acme: list[PolicyObject]) -> None:
    assert {o.namespace for o in acme if o.is_release} == {"tenant-acme"}


def test_the_qdrant_chart_defaults_fail_the_hardening_checkov_asks_for() -> None:
    """Chart defaults: no liveness probe (CKV_K8S_8), UID 1000 (_40); keys as env vars (_35) fail too."""
    env = [
        {"name": "QDRANT__SERVICE__API_KEY", "valueFrom": {"secretKeyRef": {"name": "k", "key": "api-key"}}}
    ]
    found = violations_of(
        "tenant-workload-hardened",
        release("qdrant", {"env": env, "updateVolumeFsOwnership": False}, version="1.19.0"),
    )
    not_guaranteed = {
        "values.resources",
        *(f for f in fields(found) if f.startswith("values.podAnnotations")),
    }
    assert [f for f in fields(found) if f not in not_guaranteed] == [
        "values",  # a token mounted: only the post-renderer turns it off
        "values.image.tag",  # by tag: only the post-renderer pins the digest
        "values.livenessProbe",
        "values.containerSecurityContext.runAsUser",
        "values.env[0]",
    ]
    [env] = [v for v in found if v.field == "values.env[0]"]
    assert "Fix: mount the Secret as a file" in env.message


def test_a_vcluster_with_a_writable_root_fails_the_hardening_rule(acme: list[PolicyObject]) -> None:
    [vcluster] = [o for o in acme if o.chart == "vcluster"]
    values = vcluster.values
    security = values["controlPlane"]["statefulSet"]["security"]["containerSecurityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["runAsUser"] >= 10000
    writable = dict(values)
    writable["controlPlane"] = {
        **values["controlPlane"],
        "statefulSet": {
            **values["controlPlane"]["statefulSet"],
            "security": {
                **values["controlPlane"]["statefulSet"]["security"],
                "containerSecurityContext": {**security, "readOnlyRootFilesystem": False},
            },
        },
    }
    found = violations_of("tenant-workload-hardened", release("vcluster", writable, version="0.36.1"))
    assert fields(found) == [
        "values.controlPlane.statefulSet.security.containerSecurityContext.readOnlyRootFilesystem"
    ]


def test_a_burstable_qdrant_or_sidecar_fails_the_hardening_rule(acme: list[PolicyObject]) -> None:
    [qdrant] = [o for o in acme if o.chart == "qdrant"]
    assert violations_of("tenant-workload-hardened", qdrant) == []
    values = dict(qdrant.values)
    values["podAnnotations"] = {**values["podAnnotations"], "sidecar.istio.io/proxyCPU": "50m"}
    values["resources"] = {"requests": {"cpu": "1", "memory": "8Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}}
    burstable = release("qdrant", values, version="1.19.0", postrender=qdrant.body["postrender"])
    found = violations_of("tenant-workload-hardened", burstable)
    assert fields(found) == ["values.resources", "values.podAnnotations['sidecar.istio.io/proxyCPU']"]
    assert "not Guaranteed" in found[1].message


def test_qdrant_runs_by_digest_without_a_token_only_through_its_post_renderer(
    acme: list[PolicyObject],
) -> None:
    """CKV_K8S_43 and 38: the chart cannot say either; its post-renderer does, and the model knows it."""
    [qdrant] = [o for o in acme if o.chart == "qdrant"]
    assert qdrant.body["postrender"] == POST_RENDERER
    assert violations_of("tenant-workload-hardened", qdrant) == []
    [pod] = charts.QDRANT.pods(qdrant)
    assert pod.spec["automountServiceAccountToken"] is False
    version = qdrant.values["image"]["tag"]
    assert pod.spec["containers"][-1]["image"] == (
        f"{versions.QDRANT_IMAGE}:{version}@{versions.QDRANT_IMAGE_DIGESTS[version]}"
    )

    without = release("qdrant", dict(qdrant.values), version="1.19.0")
    found = violations_of("tenant-workload-hardened", without)
    assert fields(found) == ["values", "values.image.tag"]
    assert all(POST_RENDERER in v.message for v in found)


def test_a_qdrant_version_without_a_recorded_digest_runs_by_tag_and_fails_the_rule(
    acme: list[PolicyObject],
) -> None:
    [qdrant] = [o for o in acme if o.chart == "qdrant"]
    values = {**qdrant.values, "image": {"tag": "v1.17.0"}}
    found = violations_of(
        "tenant-workload-hardened", release("qdrant", values, version="1.19.0", postrender=POST_RENDERER)
    )
    assert fields(found) == ["values.image.tag"]
    assert "docker.io/qdrant/qdrant:v1.17.0 by tag" in found[0].message


def test_only_the_named_vcluster_images_may_run_by_tag(acme: list[PolicyObject]) -> None:
    [vcluster] = [o for o in acme if o.chart == "vcluster"]
    assert violations_of("tenant-workload-hardened", vcluster) == []  # the syncer keeps its token
    images = {c["image"] for t in charts.VCLUSTER.pods(vcluster) if t.rendered for _, c in containers(t.spec)}
    assert images <= versions.ACCEPTED_WITHOUT_DIGEST
    values = dict(vcluster.values)
    statefulset = values["controlPlane"]["statefulSet"]
    values["controlPlane"] = {
        **values["controlPlane"],
        "statefulSet": {**statefulset, "image": {**statefulset.get("image", {}), "tag": "0.36.0"}},
    }
    found = violations_of("tenant-workload-hardened", release("vcluster", values, version="0.36.1"))
    assert fields(found) == ["values.controlPlane.statefulSet.image.tag"]
