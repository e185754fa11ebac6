"""The CrossGuard pack runs the same rules: the adapter, fed fake engine arguments (no Pulumi CLI here)."""

from __future__ import annotations

import runpy
from typing import Any

import pytest
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

from tenancy.policy.crossguard import policies, policy_object, stack_of
from tenancy.policy.rules import RESOURCE_RULES, STACK_RULES, check_stacks
from tenancy.policy.sources import objects_from_render
from tenancy.render.runtime import DeclaredResource, capture_program
from tenancy.render.write import render_capture
from tests.conftest import PROJECT_DIR
from tests.policy.objects import RESTRICTED, SIZED

PACK_MAIN = PROJECT_DIR / "policy_pack" / "__main__.py"
DEPLOYMENT_TYPE = "kubernetes:apps/v1:Deployment"


def _urn(stack: str, type_: str, name: str) -> str:
    return f"urn:pulumi:{stack}::platform::{type_}::{name}"


def _options() -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def _resource_args(
    type_: str, props: Any, *, stack: str = "prod.acme", name: str = "web"
) -> ResourceValidationArgs:
    return ResourceValidationArgs(type_, props, _urn(stack, type_, name), name, _options(), None)


def _policy(name: str) -> Any:
    return next(p for p in policies() if p.name == name)


def _validate(policy_name: str, args: Any) -> list[tuple[str, str | None]]:
    reported: list[tuple[str, str | None]] = []
    _policy(policy_name).validate(args, lambda message, urn=None: reported.append((message, urn)))
    return reported


def _deployment(container: dict[str, Any], namespace: str = "tenant-acme") -> dict[str, Any]:
    labels = {"tenancy.platform/tenant": "acme", "app": "web"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def _container(**changes: Any) -> dict[str, Any]:
    return {
        "name": "web",
        "image": "ghcr.io/acme/web:1.0.0",
        "securityContext": RESTRICTED,
        "resources": SIZED,
        **changes,
    }


def test_the_pack_has_one_mandatory_policy_per_rule() -> None:
    found = policies()
    assert [p.name for p in found] == [r.name for r in RESOURCE_RULES] + [r.name for r in STACK_RULES]
    assert {p.enforcement_level for p in found} == {EnforcementLevel.MANDATORY}
    assert all(isinstance(p, ResourceValidationPolicy) for p in found[: len(RESOURCE_RULES)])
    assert all(isinstance(p, StackValidationPolicy) for p in found[len(RESOURCE_RULES) :])


def test_the_pack_entry_point_builds_the_policy_pack(monkeypatch: pytest.MonkeyPatch) -> None:
    built: dict[str, Any] = {}
    monkeypatch.setattr("pulumi_policy.PolicyPack", lambda **kwargs: built.update(kwargs))
    runpy.run_path(str(PACK_MAIN), run_name="__main__")
    assert built["name"] == "tenancy-platform"
    assert built["enforcement_level"] == EnforcementLevel.MANDATORY
    assert [p.name for p in built["policies"]] == [p.name for p in policies()]


def test_pack_metadata_points_at_a_python_runtime() -> None:
    import yaml

    metadata = yaml.safe_load((PROJECT_DIR / "policy_pack" / "PulumiPolicy.yaml").read_text())
    assert metadata["runtime"]["name"] == "python"
    assert "pulumi-policy==1.21.0" in (PROJECT_DIR / "policy_pack" / "requirements.txt").read_text()


def test_a_violating_kubernetes_resource_is_reported_naming_object_rule_and_fix() -> None:
    props = _deployment(_container(image="nginx:latest"))
    assert _validate("image-pinned", _resource_args(DEPLOYMENT_TYPE, props)) == [
        (
            "Deployment tenant-acme/web: [image-pinned] container 'web' image 'nginx:latest' uses the latest "
            "tag (spec.template.spec.containers[0].image). Fix: pin a version tag or digest at "
            "spec.template.spec.containers[0].image, kept in tenancy/versions.py",
            None,
        )
    ]


def test_a_compliant_resource_passes_every_resource_policy() -> None:
    args = _resource_args(DEPLOYMENT_TYPE, _deployment(_container()))
    for rule in RESOURCE_RULES:
        assert _validate(rule.name, args) == [], rule.name


def test_helm_releases_are_checked_from_their_inputs() -> None:
    props = {
        "name": "loki",
        "namespace": "observability",
        "chart": "loki",
        "version": "^18.0.0",
        "repositoryOpts": {"repo": "https://grafana-community.github.io/helm-charts"},
        "values": {},
    }
    reported = _validate(
        "helm-version-pinned", _resource_args("kubernetes:helm.sh/v3:Release", props, stack="prod")
    )
    assert len(reported) == 1
    assert reported[0][0].startswith(
        "HelmRelease observability/loki: [helm-version-pinned] chart version '^18.0.0'"
    )


def test_resources_that_are_not_kubernetes_objects_are_skipped() -> None:
    args = _resource_args("random:index/randomPassword:RandomPassword", {"length": 32})
    assert all(_validate(rule.name, args) == [] for rule in RESOURCE_RULES)


def test_the_stack_comes_from_the_urn_so_tenant_stacks_own_their_cluster_objects() -> None:
    assert stack_of(_urn("prod.acme", "kubernetes:core/v1:Namespace", "x")) == "prod.acme"
    props = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "reader"},
    }
    reported = _validate(
        "tenant-label", _resource_args("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole", props)
    )
    assert [m.split(":")[0] for m, _ in reported] == ["ClusterRole reader"]
    platform = _resource_args("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole", props, stack="prod")
    assert _validate("tenant-label", platform) == []


def test_a_value_unknown_during_preview_is_not_reported_as_a_violation() -> None:
    props = unknown_checking_proxy(_deployment(_container(image=UNKNOWN_STRING_VALUE)))
    with pytest.raises(UnknownValueError):
        _validate("image-pinned", _resource_args(DEPLOYMENT_TYPE, props))


def test_known_violations_are_still_reported_beside_unknown_values() -> None:
    container = _container(image=UNKNOWN_STRING_VALUE, resources={})
    reported: list[str] = []
    args = _resource_args(DEPLOYMENT_TYPE, unknown_checking_proxy(_deployment(container)))
    _policy("container-resources").validate(args, lambda message, urn=None: reported.append(message))
    assert len(reported) == 1
    assert "[container-resources]" in reported[0]


def _policy_resource(
    type_: str, props: dict[str, Any], name: str, stack: str = "prod.acme"
) -> PolicyResource:
    return PolicyResource(type_, props, _urn(stack, type_, name), name, _options(), None, None, [], {})


def test_stack_policies_report_against_the_offending_resources_urn() -> None:
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "tenant-acme", "labels": {"tenancy.platform/tenant": "acme"}},
    }
    resources = [_policy_resource("kubernetes:core/v1:Namespace", namespace, "acme-namespace")]
    reported = _validate("tenant-namespace-guardrails", StackValidationArgs(resources))
    assert len(reported) == 1
    message, urn = reported[0]
    assert message.startswith(
        "Namespace tenant-acme: [tenant-namespace-guardrails] tenant namespace tenant-acme lacks"
    )
    assert urn == _urn("prod.acme", "kubernetes:core/v1:Namespace", "acme-namespace")


def test_policy_object_maps_a_release_to_the_render_view() -> None:
    props = {"chart": "qdrant", "version": "1.19.0", "repositoryOpts": {"repo": "r"}, "values": {"a": 1}}
    obj = policy_object("kubernetes:helm.sh/v3:Release", props, urn=_urn("dev.x", "t", "q"), name="q-release")
    assert obj is not None
    assert dict(obj.body) == {
        "name": "q-release",
        "namespace": "default",
        "chart": "qdrant",
        "version": "1.19.0",
        "repo": "r",
        "values": {"a": 1},
    }


def _broken_program() -> dict[str, Any]:
    import pulumi_kubernetes as k8s

    k8s.core.v1.Namespace("team", metadata={"name": "tenant-team"})
    k8s.apps.v1.StatefulSet(  # type: ignore[call-overload]  # a plain manifest dict, as builders pass
        "db",
        metadata={"name": "db", "namespace": "tenant-team"},
        spec={
            "replicas": 3,
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {"hostPID": True, "containers": [{"name": "db", "image": "postgres"}]},
            },
        },
    )
    k8s.core.v1.Service(
        "db-public",
        metadata={"name": "db", "namespace": "tenant-team"},
        spec={"type": "LoadBalancer", "ports": [{"port": 5432}]},
    )
    k8s.helm.v3.Release(
        "cache",
        name="cache",
        namespace="tenant-team",
        chart="qdrant",
        version="1.19.x",
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo="https://qdrant.github.io/qdrant-helm"),
        values={"replicaCount": 2},
    )
    k8s.networking.v1.NetworkPolicy(  # type: ignore[call-overload]  # a plain manifest dict
        "api-anywhere",
        metadata={"name": "api-anywhere", "namespace": "tenant-team"},
        spec={"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 6443}]}]},
    )
    return {}


def _crossguard_messages(resources: list[DeclaredResource], stack: str) -> set[str]:
    found: set[str] = set()
    for resource in resources:
        args = _resource_args(resource.type, resource.inputs, stack=stack, name=resource.name)
        for rule in RESOURCE_RULES:
            found |= {message for message, _ in _validate(rule.name, args)}
    stack_args = StackValidationArgs([_policy_resource(r.type, r.inputs, r.name, stack) for r in resources])
    for stack_rule in STACK_RULES:
        found |= {message for message, _ in _validate(stack_rule.name, stack_args)}
    return found


def test_crossguard_and_render_output_give_the_same_violations() -> None:
    capture = capture_program(_broken_program, stack="dev.team")
    rendered = {v.message for v in check_stacks(objects_from_render(render_capture(capture)))}
    assert rendered == _crossguard_messages(capture.resources, "dev.team")
    rules = {message.split("[")[1].split("]")[0] for message in rendered}
    assert rules == {r.name for r in RESOURCE_RULES} | {r.name for r in STACK_RULES}
