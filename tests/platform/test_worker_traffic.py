"""Every connection the self-service workers open for scaling, backups and restores, traced through
what the real platform and tenant programs declare: NetworkPolicies on both ends, the tenant's Istio
AuthorizationPolicies, and the workers' Sidecar scope. Each rule the workers need is removed in turn to
show that the connection then fails."""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest

from tenancy.builders.contract import NAMESPACES
from tenancy.builders.network import QDRANT_HTTP_PORT
from tenancy.builders.platform_namespace import baseline_policies
from tenancy.builders.qdrant import RELEASE_NAME
from tenancy.builders.selfservice import WORKER_NAME, labels, namespace_policies
from tenancy.dataops.qdrant_api import QdrantCluster
from tenancy.render.runtime import StackCapture
from tenancy.spec.platform import parse_platform_config, read_platform_config_file
from tests.conftest import PROJECT_DIR, captured_stack
from tests.platform.support import connection_allowed, namespace_of, sidecar_knows

TENANT_NAMESPACE = "tenant-acme"
WORKER_PRINCIPAL = f"cluster.local/ns/{NAMESPACES.self_service}/sa/{WORKER_NAME}"


@pytest.fixture(scope="module")
def platform() -> StackCapture:
    return captured_stack("prod")


@pytest.fixture(scope="module")
def tenant() -> StackCapture:
    return captured_stack("prod.acme")


def objects(*captures: StackCapture, kind: str) -> list[dict[str, Any]]:
    return [r.inputs for c in captures for r in c.kubernetes_objects() if r.kind == kind]


def namespace_labels(captured: StackCapture, name: str) -> dict[str, Any]:
    [found] = [n for n in objects(captured, kind="Namespace") if n["metadata"]["name"] == name]
    return namespace_of(name, found["metadata"].get("labels", {}))


def qdrant_pod_labels(tenant: StackCapture) -> dict[str, str]:
    """The labels the pinned chart (qdrant 1.19.0) puts on Qdrant's pods: ``qdrant.selectorLabels``
    (``app`` and ``app.kubernetes.io/name`` are the chart's name unless nameOverride is set,
    ``app.kubernetes.io/instance`` the release's), then ``additionalLabels`` and ``podLabels``."""
    [release] = [
        r
        for r in tenant.resources
        if r.type == "kubernetes:helm.sh/v3:Release" and r.inputs.get("chart") == "qdrant"
    ]
    values = release.inputs["values"]
    assert "nameOverride" not in values and release.inputs["name"] == RELEASE_NAME
    return {
        "app": "qdrant",
        "app.kubernetes.io/name": "qdrant",
        "app.kubernetes.io/instance": RELEASE_NAME,
        **values.get("additionalLabels", {}),
        **values.get("podLabels", {}),
    }


def worker_pod_labels(platform: StackCapture) -> dict[str, str]:
    [worker] = [d for d in objects(platform, kind="Deployment") if d["metadata"]["name"] == WORKER_NAME]
    return dict(worker["spec"]["template"]["metadata"]["labels"])


# --- Istio, as far as these policies use it --------------------------------------------------------


def _matches(selector: dict[str, str] | None, pod: dict[str, str]) -> bool:
    return all(pod.get(key) == value for key, value in (selector or {}).items())


def mesh_allows(
    policies: list[dict[str, Any]],
    *,
    namespace: str,
    pod: dict[str, str],
    source_namespace: str,
    principal: str,
    port: int,
) -> bool:
    """Whether ALLOW AuthorizationPolicies in ``namespace`` admit the caller (no ALLOW policy: all)."""
    applying = [
        p
        for p in policies
        if p["metadata"]["namespace"] == namespace
        and p["spec"].get("action", "ALLOW") == "ALLOW"
        and _matches(p["spec"].get("selector", {}).get("matchLabels"), pod)
    ]
    if not applying:
        return True

    def source_ok(source: dict[str, Any]) -> bool:
        namespaces, principals = source.get("namespaces"), source.get("principals")
        return (namespaces is None or source_namespace in namespaces) and (
            principals is None or any(fnmatch.fnmatchcase(principal, p) for p in principals)
        )

    for policy in applying:
        for rule in policy["spec"].get("rules", []):
            froms = rule.get("from")
            from_ok = froms is None or any(source_ok(f["source"]) for f in froms)
            tos = rule.get("to")
            to_ok = tos is None or any(
                "ports" not in t["operation"] or str(port) in t["operation"]["ports"] for t in tos
            )
            if from_ok and to_ok:
                return True
    return False


# --- the connections ---------------------------------------------------------------------------------


def test_workers_reach_every_peer_of_a_tenant_qdrant_on_its_rest_port(
    platform: StackCapture, tenant: StackCapture
) -> None:
    worker = (namespace_labels(platform, NAMESPACES.self_service), worker_pod_labels(platform))
    qdrant = (namespace_labels(tenant, TENANT_NAMESPACE), qdrant_pod_labels(tenant))
    policies = objects(platform, tenant, kind="NetworkPolicy")
    assert connection_allowed(policies, source=worker, destination=qdrant, port=QDRANT_HTTP_PORT)
    # Only the REST port: not gRPC, not the peers' p2p port.
    for port in (6334, 6335):
        assert not connection_allowed(policies, source=worker, destination=qdrant, port=port)

    authz = objects(tenant, kind="AuthorizationPolicy")
    call = {"namespace": TENANT_NAMESPACE, "pod": qdrant[1], "source_namespace": NAMESPACES.self_service}
    assert mesh_allows(authz, principal=WORKER_PRINCIPAL, port=QDRANT_HTTP_PORT, **call)
    assert not mesh_allows(authz, principal=WORKER_PRINCIPAL, port=6335, **call)
    # The API's pods run in the same namespace but are not the workers.
    api = f"cluster.local/ns/{NAMESPACES.self_service}/sa/selfservice-api"
    assert not mesh_allows(authz, principal=api, port=QDRANT_HTTP_PORT, **call)

    # The Service the connector calls, and each peer's name as the workers qualify it.
    sidecars = objects(platform, tenant, kind="Sidecar")
    service = qdrant_service_host(tenant)
    peer = QdrantCluster(url="http://x", api_key="k", peer_domain=f"{TENANT_NAMESPACE}.svc.cluster.local")
    peer_host = peer._http_address("http://qdrant-2.qdrant-headless:6335").split("//")[1].split(":")[0]
    assert peer_host == f"qdrant-2.qdrant-headless.{TENANT_NAMESPACE}.svc.cluster.local"
    for host in (service, f"qdrant-headless.{TENANT_NAMESPACE}.svc.cluster.local"):
        assert sidecar_knows(
            sidecars,
            namespace=NAMESPACES.self_service,
            pod=worker[1],
            host=host,
            port=QDRANT_HTTP_PORT,
        ), host
    # Other pods of the namespace (the API) keep the mesh default's narrow scope.
    assert not sidecar_knows(
        sidecars, namespace=NAMESPACES.self_service, pod=labels("api"), host=service, port=QDRANT_HTTP_PORT
    )


def qdrant_service_host(tenant: StackCapture) -> str:
    """The host of the stack's ``qdrantEndpoint``, which backups and restores call (scaling builds the
    same: tenancy.builders.qdrant.qdrant_endpoints)."""
    endpoint = str(tenant.outputs["qdrantEndpoint"])
    assert endpoint == f"http://{RELEASE_NAME}.{TENANT_NAMESPACE}.svc.cluster.local:{QDRANT_HTTP_PORT}"
    return endpoint.split("//")[1].split(":")[0]


@pytest.mark.parametrize(
    "rule",
    [
        ("NetworkPolicy", NAMESPACES.self_service, "allow-workers-to-tenant-qdrant"),
        ("NetworkPolicy", TENANT_NAMESPACE, "allow-selfservice-workers-to-qdrant"),
        ("AuthorizationPolicy", TENANT_NAMESPACE, "allow-selfservice-workers-to-qdrant"),
        ("Sidecar", NAMESPACES.self_service, WORKER_NAME),
    ],
)
def test_without_each_rule_the_workers_cannot_reach_qdrant(
    platform: StackCapture, tenant: StackCapture, rule: tuple[str, str, str]
) -> None:
    kind, namespace, name = rule

    def kept(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            o
            for o in found
            if not (
                o["kind"] == kind
                and o["metadata"]["namespace"] == namespace
                and o["metadata"]["name"] == name
            )
        ]

    removed = objects(platform, tenant, kind=kind)
    assert len(kept(removed)) == len(removed) - 1, f"{kind} {namespace}/{name} is declared"
    worker = (namespace_labels(platform, NAMESPACES.self_service), worker_pod_labels(platform))
    qdrant = (namespace_labels(tenant, TENANT_NAMESPACE), qdrant_pod_labels(tenant))
    policies = kept(objects(platform, tenant, kind="NetworkPolicy"))
    authz = kept(objects(tenant, kind="AuthorizationPolicy"))
    sidecars = kept(objects(platform, tenant, kind="Sidecar"))
    reached = (
        connection_allowed(policies, source=worker, destination=qdrant, port=QDRANT_HTTP_PORT)
        and mesh_allows(
            authz,
            namespace=TENANT_NAMESPACE,
            pod=qdrant[1],
            source_namespace=NAMESPACES.self_service,
            principal=WORKER_PRINCIPAL,
            port=QDRANT_HTTP_PORT,
        )
        and sidecar_knows(
            sidecars,
            namespace=NAMESPACES.self_service,
            pod=worker[1],
            host=qdrant_service_host(tenant),
            port=QDRANT_HTTP_PORT,
        )
    )
    assert not reached


def test_workers_reach_the_api_server_and_the_object_store(platform: StackCapture) -> None:
    """kubectl and Pulumi to the API server (by address), boto3 to the object store (at objectStorage.cidrs
    in the shipped prod file; tests/platform/test_object_store_egress.py traces every placement); both
    leave the mesh as passthrough traffic, which the workers' Sidecar keeps."""
    config = read_platform_config_file(PROJECT_DIR / "Pulumi.prod.yaml")
    policies = {
        p["metadata"]["name"]: p["spec"]
        for p in objects(platform, kind="NetworkPolicy")
        if p["metadata"]["namespace"] == NAMESPACES.self_service
    }
    worker = worker_pod_labels(platform)

    def egress_ports(name: str) -> set[int]:
        spec = policies[name]
        assert all(worker.get(k) == v for k, v in spec["podSelector"]["matchLabels"].items())
        return {p["port"] for rule in spec["egress"] for p in rule["ports"]}

    assert config.object_storage is not None
    assert config.object_storage.port in egress_ports("allow-workers-to-storage-and-vault")
    if config.kubernetes_api_cidrs:
        assert {443, 6443} <= egress_ports("allow-workers-to-apiserver")
    else:
        assert {443, 6443} <= egress_ports("allow-workers-to-storage-and-vault")
    sidecars = [
        s for s in objects(platform, kind="Sidecar") if s["metadata"]["namespace"] == NAMESPACES.self_service
    ]
    # The workers' and the API's (Keycloak in scope): both pass what is outside the mesh through.
    assert {s["metadata"]["name"] for s in sidecars} == {"selfservice-worker", "selfservice-api"}
    assert all(s["spec"]["outboundTrafficPolicy"] == {"mode": "ALLOW_ANY"} for s in sidecars)


@pytest.mark.parametrize("role", ["api", "worker"])
def test_both_roles_reach_an_object_store_on_its_own_port(role: str) -> None:
    """Workers take and restore backups; the API lists them and checks a restore's backup. An object
    store on 9000 (MinIO) is reached by both, and the API's only path there is its own rule."""
    config = parse_platform_config(
        {
            "domain": "dev.data.example.com",
            "kubernetesApiCidrs": ["10.20.0.0/28"],
            "objectStorage": {
                "endpoint": "http://minio.storage.example:9000",
                "lokiBucket": "loki",
                "backupBucket": "backups",
            },
        },
        environment="dev",
        file="Pulumi.dev.yaml",
    )
    policies = baseline_policies(NAMESPACES.self_service, mesh=True) + namespace_policies(config)
    source = (namespace_of(NAMESPACES.self_service, {}), labels(role))
    outside = (namespace_of("object-store", {}), {})
    assert connection_allowed(policies, source=source, destination=outside, port=9000)
    if role == "api":
        without = [p for p in policies if p["metadata"]["name"] != "allow-api-to-object-storage"]
        assert not connection_allowed(without, source=source, destination=outside, port=9000)
