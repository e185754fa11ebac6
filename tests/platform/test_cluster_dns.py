"""Every platform namespace resolves names through the cluster DNS pods the platform config names."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.platform.istio import Istio
from tenancy.builders.contract import NAMESPACES
from tenancy.render.runtime import StackCapture, capture_program, capture_stack
from tenancy.spec.errors import SpecError
from tenancy.spec.platform import parse_platform_config
from tests.conftest import PROJECT_DIR
from tests.platform.support import API_SERVER_CIDRS, connection_allowed, namespace_of

OPENSHIFT_DNS = {
    "namespace": "openshift-dns",
    "podLabels": {"dns.operator.openshift.io/daemonset-dns": "default"},
    "ports": [5353],
}


def _parse(**values: Any) -> Any:
    return parse_platform_config(
        {"domain": "dev.data.example.com", "kubernetesApiCidrs": API_SERVER_CIDRS, **values},
        environment="dev",
        file="Pulumi.dev.yaml",
    )


def _capture(config: Any) -> StackCapture:
    def program() -> dict[str, Any]:
        Istio("istio", config=config)
        return {}

    return capture_program(program, stack=config.environment)


def _allow_dns(capture: StackCapture, namespace: str) -> dict[str, Any]:
    [policy] = [
        r.inputs
        for r in capture.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
        if r.inputs["metadata"]["namespace"] == namespace and r.inputs["metadata"]["name"] == "allow-dns"
    ]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", **policy}


def test_the_default_is_kube_dns_in_kube_system_on_53() -> None:
    dns = _parse().dns
    assert (dns.namespace, dns.pod_labels, dns.ports) == ("kube-system", {"k8s-app": "kube-dns"}, [53])


def test_a_platform_namespace_reaches_the_dns_pods_the_config_names() -> None:
    capture = _capture(_parse(dns=OPENSHIFT_DNS))
    policy = _allow_dns(capture, NAMESPACES.ingress)
    gateway = (namespace_of(NAMESPACES.ingress, {}), {"istio": "ingressgateway"})
    openshift_dns = (namespace_of("openshift-dns", {}), dict(OPENSHIFT_DNS["podLabels"]))
    kube_dns = (namespace_of("kube-system", {}), {"k8s-app": "kube-dns"})
    assert connection_allowed([policy], source=gateway, destination=openshift_dns, port=5353)
    assert not connection_allowed([policy], source=gateway, destination=openshift_dns, port=53)
    assert not connection_allowed([policy], source=gateway, destination=kube_dns, port=53)
    assert {(p["protocol"], p["port"]) for p in policy["spec"]["egress"][0]["ports"]} == {
        ("UDP", 5353),
        ("TCP", 5353),
    }


def test_a_tenant_stack_resolves_through_the_dns_pods_its_environment_names(tmp_path: Path) -> None:
    # The real tenant program, from a project whose Pulumi.dev.yaml names OpenShift's DNS pods.
    shutil.copy(PROJECT_DIR / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    stack_file = yaml.safe_load((PROJECT_DIR / "Pulumi.dev.yaml").read_text())
    stack_file["config"]["platform:dns"] = OPENSHIFT_DNS
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump(stack_file))
    (tmp_path / "tenants" / "dev").mkdir(parents=True)
    shutil.copy(PROJECT_DIR / "tenants" / "dev" / "acme.yaml", tmp_path / "tenants" / "dev" / "acme.yaml")

    capture = capture_stack("dev.acme", project_dir=tmp_path)
    namespace = capture.outputs["namespace"]
    policy = _allow_dns(capture, namespace)
    tenant_pod = (namespace_of(namespace, {}), {"app": "anything"})
    openshift_dns = (namespace_of("openshift-dns", {}), dict(OPENSHIFT_DNS["podLabels"]))
    kube_dns = (namespace_of("kube-system", {}), {"k8s-app": "kube-dns"})
    assert connection_allowed([policy], source=tenant_pod, destination=openshift_dns, port=5353)
    assert not connection_allowed([policy], source=tenant_pod, destination=kube_dns, port=53)


@pytest.mark.parametrize(
    ("dns", "field", "reason"),
    [
        ({"podLabels": {}}, "platform:dns.podLabels", "empty selector"),
        ({"podLabels": {"k8s app": "x"}}, "platform:dns.podLabels", "not a Kubernetes label"),
        ({"ports": []}, "platform:dns.ports", "at least one port"),
        ({"ports": [70000]}, "platform:dns.ports", "not a port"),
    ],
)
def test_a_bad_dns_setting_names_its_key_and_reason(dns: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(SpecError) as caught:
        _parse(dns=dns)
    [issue] = caught.value.issues
    assert issue.field == field and reason in issue.reason


def test_a_relative_cni_path_is_refused_with_its_key() -> None:
    with pytest.raises(SpecError) as caught:
        _parse(istioCni={"cniBinDir": "opt/cni/bin"})
    [issue] = caught.value.issues
    assert issue.field == "platform:istioCni.cniBinDir" and "absolute path" in issue.reason


def test_an_unknown_cni_platform_lists_the_known_ones() -> None:
    with pytest.raises(SpecError) as caught:
        _parse(istioCni={"platform": "eks"})
    [issue] = caught.value.issues
    assert issue.field == "platform:istioCni.platform" and "openshift" in issue.reason
