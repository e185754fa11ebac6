"""A tenant's vCluster API from outside the cluster: ``<tenant>.vc.<domain>`` through the platform gateway,
with TLS passed through so the vCluster presents its own certificate and checks kubectl's."""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

from tenancy.builders.istio import gateway_manifest
from tenancy.render.runtime import StackCapture
from tenancy.spec.platform import read_platform_config_file
from tests.conftest import PROJECT_DIR

Run = Callable[[str], StackCapture]
VIRTUAL_SERVICE = "kubernetes:networking.istio.io/v1:VirtualService"


def vcluster_values(capture: StackCapture) -> dict[str, Any]:
    [found] = [
        r.inputs["values"]
        for r in capture.of_type("kubernetes:helm.sh/v3:Release")
        if r.inputs["chart"] == "vcluster"
    ]
    return found


def api_route(capture: StackCapture) -> dict[str, Any]:
    [route] = [r for r in capture.of_type(VIRTUAL_SERVICE) if r.inputs["metadata"]["name"] == "vcluster-api"]
    return route.inputs


def test_kubeconfig_output_names_the_external_address_and_the_in_cluster_one_stays_available(
    run_stack: Run,
) -> None:
    capture = run_stack("prod.acme")
    export = vcluster_values(capture)["exportKubeConfig"]
    # The default Secret (vc-vcluster) is the one the stack output reads: usable from a laptop or CI.
    assert export["server"] == "https://acme.vc.data.example.com"
    assert capture.outputs["vclusterKubeconfigSecret"] == "vc-vcluster"
    # Pods in the tenant's namespace may not leave the cluster to reach the gateway: they get their own.
    assert export["additionalSecrets"] == [
        {
            "name": "vc-vcluster-in-cluster",
            "server": "https://vcluster.tenant-acme:443",
            "context": "vcluster",
        }
    ]
    assert export["context"] == "vcluster"


def test_vcluster_certificate_covers_its_external_name(run_stack: Run) -> None:
    # The gateway does not terminate TLS: kubectl verifies the vCluster's own certificate for this name.
    proxy = vcluster_values(run_stack("dev.initech"))["controlPlane"]["proxy"]
    assert proxy == {"extraSANs": ["initech.vc.dev.data.example.com"]}


def test_route_passes_tls_through_from_the_platform_gateway_to_the_vcluster(run_stack: Run) -> None:
    route = api_route(run_stack("prod.acme"))
    assert route["apiVersion"] == "networking.istio.io/v1"
    assert route["metadata"]["namespace"] == "tenant-acme"
    assert route["metadata"]["labels"]["tenancy.platform/tenant"] == "acme"
    spec = route["spec"]
    assert spec["hosts"] == ["acme.vc.data.example.com"]
    assert spec["gateways"] == ["istio-ingress/platform-gateway"]
    # Only the gateway needs the route: no sidecar's configuration grows with it.
    assert spec["exportTo"] == ["istio-ingress"]
    assert "http" not in spec and "tcp" not in spec  # an HTTP route would need TLS terminated first
    [tls] = spec["tls"]
    assert tls["match"] == [{"port": 443, "sniHosts": ["acme.vc.data.example.com"]}]
    assert tls["route"] == [
        {"destination": {"host": "vcluster.tenant-acme.svc.cluster.local", "port": {"number": 443}}}
    ]


def test_the_platform_gateway_of_the_same_environment_passes_the_route_through(run_stack: Run) -> None:
    for environment, stack in (("prod", "prod.acme"), ("dev", "dev.initech")):
        config = read_platform_config_file(PROJECT_DIR / f"Pulumi.{environment}.yaml")
        servers = gateway_manifest(config)["spec"]["servers"]
        [host] = api_route(run_stack(stack))["spec"]["hosts"]
        passthrough = [s for s in servers if s.get("tls", {}).get("mode") == "PASSTHROUGH"]
        assert [s["port"]["number"] for s in passthrough] == [443]
        assert any(fnmatchcase(host, pattern) for s in passthrough for pattern in s["hosts"])
        # The platform's certificate for *.<domain> covers one label only, never a vCluster's name.
        assert host.endswith(f".vc.{config.domain}") and host.count(".") == config.domain.count(".") + 2


def test_tenants_without_a_vcluster_get_no_route(run_stack: Run) -> None:
    routes = run_stack("prod.globex").of_type(VIRTUAL_SERVICE)
    assert [r.inputs["metadata"]["name"] for r in routes] == ["qdrant-api"]  # Qdrant's, not a vCluster's


def test_the_control_plane_volume_keeps_a_pinned_class_over_the_platform_default(
    run_stack: Run, scratch_project: Any
) -> None:
    assert vcluster_values(run_stack("prod.acme"))["controlPlane"]["statefulSet"]["persistence"] == {
        "volumeClaim": {"size": "10Gi", "storageClass": "fast-ssd"}  # platform:storageClass of prod
    }
    acme = scratch_project / "tenants" / "prod" / "acme.yaml"
    acme.write_text(
        acme.read_text().replace(
            'kubernetesVersion: "1.34"', 'kubernetesVersion: "1.34"\n  storageClass: standard'
        )
    )
    values = vcluster_values(run_stack("prod.acme", scratch_project))
    assert values["controlPlane"]["statefulSet"]["persistence"]["volumeClaim"]["storageClass"] == "standard"
