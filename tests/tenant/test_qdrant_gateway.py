"""A tenant's Qdrant from outside the cluster: ``<tenant>.qdrant.<domain>`` through the platform gateway,
traced hop by hop through what the platform and tenant stacks declare: the Gateway server and its
certificate, the route (REST and gRPC), the connection and request-size limits, the AuthorizationPolicy
and NetworkPolicy on Qdrant's side, and the Service ports the chart renders."""

from __future__ import annotations

import json
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

from tenancy.builders.istio import gateway_manifest
from tenancy.builders.qdrant import MAX_REQUEST_SIZE_MB
from tenancy.render.runtime import StackCapture
from tenancy.spec.platform import read_platform_config_file
from tests.conftest import PROJECT_DIR

Run = Callable[[str], StackCapture]
PROD = read_platform_config_file(PROJECT_DIR / "Pulumi.prod.yaml")


def named(capture: StackCapture, kind: str, name: str) -> dict[str, Any]:
    [found] = [
        r.inputs
        for r in capture.kubernetes_objects()
        if r.kind == kind and r.inputs["metadata"]["name"] == name
    ]
    return found


def qdrant_values(capture: StackCapture) -> dict[str, Any]:
    [values] = [
        r.inputs["values"]
        for r in capture.of_type("kubernetes:helm.sh/v3:Release")
        if r.inputs["chart"] == "qdrant"
    ]
    return values


def test_the_endpoints_are_stack_outputs(run_stack: Run) -> None:
    outputs = run_stack("prod.acme").outputs
    assert outputs["qdrantPublicEndpoint"] == "https://acme.qdrant.data.example.com"
    assert outputs["qdrantPublicGrpcEndpoint"] == "acme.qdrant.data.example.com:443"


def test_the_platform_gateway_terminates_tls_for_the_qdrant_zone_on_a_server_of_its_own() -> None:
    servers = gateway_manifest(PROD)["spec"]["servers"]
    [server] = [
        s
        for s in servers
        if any(fnmatchcase("acme.qdrant.data.example.com", h) for h in s["hosts"])
        and s["port"]["protocol"] == "HTTPS"
        and s["hosts"] != ["*.data.example.com"]
    ]
    assert server["hosts"] == ["*.qdrant.data.example.com"]
    assert server["tls"]["mode"] == "SIMPLE" and server["tls"]["credentialName"] == PROD.gateway_tls_secret


def test_rest_and_grpc_route_from_the_gateway_to_qdrants_ports(run_stack: Run) -> None:
    capture = run_stack("prod.acme")
    route = named(capture, "VirtualService", "qdrant-api")
    spec = route["spec"]
    assert spec["hosts"] == ["acme.qdrant.data.example.com"]
    assert spec["gateways"] == ["istio-ingress/platform-gateway"] and spec["exportTo"] == ["istio-ingress"]
    grpc, rest = spec["http"]
    assert grpc["match"] == [{"headers": {"content-type": {"prefix": "application/grpc"}}}]
    service = "qdrant.tenant-acme.svc.cluster.local"
    assert grpc["route"] == [{"destination": {"host": service, "port": {"number": 6334}}}]
    assert "match" not in rest and rest["route"] == [
        {"destination": {"host": service, "port": {"number": 6333}}}
    ]
    # What the chart's Service renders on those ports, so Istio handles them as HTTP and gRPC.
    ports = {p["port"]: p.get("appProtocol") for p in qdrant_values(capture)["service"]["ports"]}
    assert ports[6333] == "http" and ports[6334] == "grpc"


def test_the_gateway_limits_connections_to_each_tenant_and_keeps_mtls(run_stack: Run) -> None:
    rule = named(run_stack("prod.acme"), "DestinationRule", "qdrant-gateway-limits")["spec"]
    assert rule["host"] == "qdrant.tenant-acme.svc.cluster.local" and rule["exportTo"] == ["istio-ingress"]
    pool = rule["trafficPolicy"]["connectionPool"]
    assert pool["tcp"]["maxConnections"] > 0 and pool["http"]["http2MaxRequests"] > 0
    assert pool["http"]["http1MaxPendingRequests"] > 0
    assert rule["trafficPolicy"]["tls"] == {"mode": "ISTIO_MUTUAL"}


def test_no_filter_holds_request_bodies_in_the_shared_gateway(run_stack: Run) -> None:
    """Found by a traffic review: a buffer filter on the Qdrant chain held each request body, up to 32
    MiB, in the gateway's memory before Qdrant checked the API key (about 30 slow uploads, without a
    key, took a gateway pod that also serves Keycloak, the API and every tenant to its memory limit),
    and refused snapshot uploads above 32 MiB that Qdrant takes. Bodies now stream to Qdrant, which
    caps JSON bodies itself."""
    objects = run_stack("prod").kubernetes_objects()
    assert [r.inputs["metadata"]["name"] for r in objects if r.kind == "EnvoyFilter"] == []
    assert "envoy.filters.http.buffer" not in json.dumps([r.inputs for r in objects])
    assert (
        qdrant_values(run_stack("prod.acme"))["config"]["service"]["max_request_size_mb"]
        == MAX_REQUEST_SIZE_MB
    )


def test_policies_allow_exactly_the_gateway_to_exactly_the_routed_ports(run_stack: Run) -> None:
    capture = run_stack("prod.acme")
    routed = {
        r["route"][0]["destination"]["port"]["number"]
        for r in named(capture, "VirtualService", "qdrant-api")["spec"]["http"]
    }
    authz = named(capture, "AuthorizationPolicy", "allow-ingress-gateway-to-qdrant")["spec"]
    [rule] = authz["rules"]
    assert rule["from"] == [
        {"source": {"namespaces": ["istio-ingress"], "principals": ["*/sa/istio-ingressgateway"]}}
    ]
    assert {int(p) for p in rule["to"][0]["operation"]["ports"]} == routed == {6333, 6334}
    network = named(capture, "NetworkPolicy", "allow-ingress-gateway-to-qdrant")["spec"]
    [ingress] = network["ingress"]
    assert {p["port"] for p in ingress["ports"]} == routed
    assert ingress["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-ingress"}},
            "podSelector": {"matchLabels": {"istio": "ingressgateway"}},
        }
    ]
