"""The platform's own workloads reach the object store, and the self-service workers and API Vault (the
API decrypts revealed stack outputs with Vault transit), where the platform config places them: their
pods in ``namespace`` on listenerPort, else ``cidrs`` on the endpoint's port, else (neither set) any
address on that port. The real dev and prod platform programs run under mocks with each placement; every
connection is traced through the declared NetworkPolicies and, for meshed callers, the Sidecar that
applies to their pods, and each rule the connection needs is removed in turn."""

from __future__ import annotations

import shutil
from typing import Any, NamedTuple

import pytest
import yaml

from tenancy.builders import identity, observability, selfservice
from tenancy.builders.contract import NAMESPACES
from tenancy.render.runtime import StackCapture, capture_stack
from tests.conftest import PROJECT_DIR
from tests.platform.support import (
    connection_allowed,
    egress_to_address_allowed,
    namespace_of,
    sidecar_knows,
)

# A store on a port of its own (not 443, which the self-service opens to the default gitHosts, every
# address, for git and Helm repositories), so each trace below depends on the store's rule alone.
STORE_CIDR, STORE_ADDRESS, STORE_PORT = "203.0.113.0/28", "203.0.113.5", 9443
VAULT_CIDR, VAULT_ADDRESS, VAULT_PORT = "198.51.100.10/32", "198.51.100.10", 8200
ELSEWHERE = "192.0.2.1"
# In the cluster: Services on 80 in front of pods listening on listenerPort.
STORE_NAMESPACE, STORE_LISTENER, STORE_HOST = "object-store", 9000, "minio.object-store.svc.cluster.local"
VAULT_NAMESPACE, VAULT_LISTENER, VAULT_HOST = "vault", 8201, "vault.vault.svc.cluster.local"
SERVICE_PORT = 80

PLACEMENTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "cidrs": (
        {"endpoint": f"https://s3.internal.example:{STORE_PORT}", "cidrs": [STORE_CIDR]},
        {"address": f"https://vault.example.com:{VAULT_PORT}", "cidrs": [VAULT_CIDR]},
    ),
    "namespace": (
        {"endpoint": f"http://{STORE_HOST}", "namespace": STORE_NAMESPACE, "listenerPort": STORE_LISTENER},
        {"address": f"http://{VAULT_HOST}", "namespace": VAULT_NAMESPACE, "listenerPort": VAULT_LISTENER},
    ),
    "neither": (
        {"endpoint": f"https://s3.example.com:{STORE_PORT}"},
        {"address": f"https://vault.example.com:{VAULT_PORT}"},
    ),
}


class Platform(NamedTuple):
    environment: str
    placement: str
    capture: StackCapture


@pytest.fixture(
    scope="module", params=[(e, p) for e in ("dev", "prod") for p in PLACEMENTS], ids=lambda p: "-".join(p)
)
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Platform:
    """The real platform program of ``Pulumi.<env>.yaml`` with objectStorage (and in prod Vault) placed."""
    environment, placement = request.param
    store, vault = PLACEMENTS[placement]
    project = tmp_path_factory.mktemp(f"{environment}-{placement}")
    shutil.copy(PROJECT_DIR / "Pulumi.yaml", project / "Pulumi.yaml")
    stack_file = yaml.safe_load((PROJECT_DIR / f"Pulumi.{environment}.yaml").read_text())
    config = stack_file["config"]
    config["platform:objectStorage"] = {"lokiBucket": "loki", "backupBucket": "backups", **store}
    if config["platform:vault"]["enabled"]:
        kept = {k: v for k, v in config["platform:vault"].items() if k not in ("address", "cidrs")}
        config["platform:vault"] = {**kept, **vault}
    (project / f"Pulumi.{environment}.yaml").write_text(yaml.safe_dump(stack_file))
    return Platform(environment, placement, capture_stack(environment, project_dir=project))


def objects(capture: StackCapture, kind: str) -> list[dict[str, Any]]:
    return [{"kind": r.kind, **r.inputs} for r in capture.kubernetes_objects() if r.kind == kind]


def namespace(capture: StackCapture, name: str) -> dict[str, Any]:
    [found] = [n for n in objects(capture, "Namespace") if n["metadata"]["name"] == name]
    return namespace_of(name, found["metadata"].get("labels", {}))


# --- the callers' pods, as what runs them labels them ---------------------------------------------------


def postgres_pod(capture: StackCapture) -> dict[str, str]:
    """An instance pod of the identity database as CloudNativePG 1.30 labels it (pkg/specs/pods.go
    PodWithExistingStorage: cnpg.io/cluster, cnpg.io/instanceName, cnpg.io/podRole), plus the Cluster's
    spec.inheritedMetadata labels."""
    [cluster] = [c for c in objects(capture, "Cluster") if c["metadata"]["namespace"] == NAMESPACES.identity]
    name = cluster["metadata"]["name"]
    inherited = cluster["spec"].get("inheritedMetadata", {}).get("labels", {})
    return {
        "cnpg.io/cluster": name,
        "cnpg.io/instanceName": f"{name}-1",
        "cnpg.io/podRole": "instance",
        **inherited,
    }


def loki_pods(capture: StackCapture) -> list[dict[str, str]]:
    """The write, read and backend pods of the pinned loki chart (18.11.0): ``loki.podTemplate`` labels
    each with ``loki.labels`` (``app.kubernetes.io/name``, the chart's name unless nameOverride;
    ``app.kubernetes.io/instance``, the release), its component and memberlist, then podLabels."""
    [release] = [
        r.inputs
        for r in capture.resources
        if r.type == "kubernetes:helm.sh/v3:Release" and r.inputs.get("chart") == "loki"
    ]
    values = release["values"]
    assert "nameOverride" not in values and "commonLabels" not in values
    assert release["version"] == "18.11.0"
    pods = []
    for component in ("write", "read", "backend"):
        pods.append(
            {
                "helm.sh/chart": "loki-18.11.0",
                "app.kubernetes.io/name": "loki",
                "app.kubernetes.io/instance": release["name"],
                "app.kubernetes.io/version": "3.7.6",
                "app.kubernetes.io/component": component,
                "app.kubernetes.io/part-of": "memberlist",
                **values.get("loki", {}).get("podLabels", {}),
                **values.get("defaults", {}).get("podLabels", {}),
                **values.get(component, {}).get("podLabels", {}),
            }
        )
    return pods


def deployment_pod(capture: StackCapture, name: str) -> dict[str, str]:
    [found] = [d for d in objects(capture, "Deployment") if d["metadata"]["name"] == name]
    return dict(found["spec"]["template"]["metadata"]["labels"])


class Caller(NamedTuple):
    namespace: str
    policy: str  # the NetworkPolicy that lets it out to the store (and Vault)
    pods: list[dict[str, str]]
    sidecar: str | None  # the Sidecar that widens its mesh scope to an in-cluster store; None: unmeshed
    vault_policy: str | None  # the NetworkPolicy that lets it out to Vault; None: it never calls Vault

    @property
    def reaches_vault(self) -> bool:
        return self.vault_policy is not None


def callers(platform: Platform) -> dict[str, Caller]:
    capture, prod = platform.capture, platform.environment == "prod"
    found = {
        "postgres": Caller(
            NAMESPACES.identity,
            "allow-postgres-to-object-storage",
            [postgres_pod(capture)],
            identity.DATABASE_CLUSTER,
            None,
        ),
        "api": Caller(
            NAMESPACES.self_service,
            "allow-api-to-object-storage",
            [deployment_pod(capture, selfservice.API_NAME)],
            selfservice.API_NAME,
            "allow-api-to-vault" if prod else None,
        ),
        "worker": Caller(
            NAMESPACES.self_service,
            "allow-workers-to-storage-and-vault",
            [deployment_pod(capture, selfservice.WORKER_NAME)],
            selfservice.WORKER_NAME,
            "allow-workers-to-storage-and-vault" if prod else None,
        ),
    }
    if prod:  # Loki keeps its chunks on the object store when replicated only
        found["loki"] = Caller(
            observability.NAMESPACE, "allow-loki-to-object-storage", loki_pods(capture), None, None
        )
    return found


# --- the destinations, and what reaches them -------------------------------------------------------------


def expected_rules(placement: str, *, vault: bool) -> list[dict[str, Any]]:
    """What each caller's policy must say, written out rather than built."""

    def tcp(*ports: int) -> list[dict[str, Any]]:
        return [{"protocol": "TCP", "port": port} for port in ports]

    def in_namespace(name: str) -> list[dict[str, Any]]:
        return [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}]

    if placement == "cidrs":
        rules = [{"to": [{"ipBlock": {"cidr": STORE_CIDR}}], "ports": tcp(STORE_PORT)}]
        return rules + (
            [{"to": [{"ipBlock": {"cidr": VAULT_CIDR}}], "ports": tcp(VAULT_PORT)}] if vault else []
        )
    if placement == "namespace":
        rules = [{"to": in_namespace(STORE_NAMESPACE), "ports": tcp(STORE_LISTENER)}]
        return rules + (
            [{"to": in_namespace(VAULT_NAMESPACE), "ports": tcp(VAULT_LISTENER)}] if vault else []
        )
    return [{"ports": tcp(*sorted({STORE_PORT, VAULT_PORT} if vault else {STORE_PORT}))}]


def expected_vault_rules(placement: str) -> list[dict[str, Any]]:
    """What a policy letting a caller out to Vault alone (the API's) must say."""
    if placement == "cidrs":
        return [
            {"to": [{"ipBlock": {"cidr": VAULT_CIDR}}], "ports": [{"protocol": "TCP", "port": VAULT_PORT}]}
        ]
    if placement == "namespace":
        return [
            {
                "to": [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": VAULT_NAMESPACE}}}
                ],
                "ports": [{"protocol": "TCP", "port": VAULT_LISTENER}],
            }
        ]
    return [{"ports": [{"protocol": "TCP", "port": VAULT_PORT}]}]


def reaches(
    platform: Platform,
    caller: Caller,
    pod: dict[str, str],
    *,
    policies: list[dict[str, Any]],
    sidecars: list[dict[str, Any]],
    service: str = "store",
) -> bool:
    """Whether the pod's connection to the store (or Vault) as configured gets through: egress (and the
    destination's ingress) NetworkPolicies and, for an in-cluster service, the caller's mesh scope."""
    store = service == "store"
    if platform.placement != "namespace":
        address = (STORE_ADDRESS if store else VAULT_ADDRESS) if platform.placement == "cidrs" else ELSEWHERE
        port = STORE_PORT if store else VAULT_PORT
        return egress_to_address_allowed(
            policies, namespace=caller.namespace, pod=pod, address=address, port=port
        )
    name, listener, host = (
        (STORE_NAMESPACE, STORE_LISTENER, STORE_HOST)
        if store
        else (VAULT_NAMESPACE, VAULT_LISTENER, VAULT_HOST)
    )
    source = (namespace(platform.capture, caller.namespace), pod)
    destination = (namespace_of(name, {"istio-injection": "enabled"}), {"app": "server"})
    allowed = connection_allowed(policies, source=source, destination=destination, port=listener)
    if caller.sidecar is None:  # unmeshed: plaintext, straight to the pod
        return allowed
    return allowed and sidecar_knows(
        sidecars, namespace=caller.namespace, pod=pod, host=host, port=SERVICE_PORT
    )


def test_each_platform_caller_is_let_out_to_the_store_as_configured_and_nowhere_else(
    platform: Platform,
) -> None:
    for name, caller in callers(platform).items():
        _check_caller(platform, name, caller)


def _check_caller(platform: Platform, name: str, caller: Caller) -> None:
    [policy] = [
        p
        for p in objects(platform.capture, "NetworkPolicy")
        if (p["metadata"]["namespace"], p["metadata"]["name"]) == (caller.namespace, caller.policy)
    ]
    together = caller.vault_policy == caller.policy
    assert policy["spec"]["egress"] == expected_rules(platform.placement, vault=together), name
    if caller.vault_policy is not None and not together:
        [alone] = [
            p
            for p in objects(platform.capture, "NetworkPolicy")
            if (p["metadata"]["namespace"], p["metadata"]["name"]) == (caller.namespace, caller.vault_policy)
        ]
        assert alone["spec"]["podSelector"] == policy["spec"]["podSelector"], name
        assert alone["spec"]["egress"] == expected_vault_rules(platform.placement), name

    policies = objects(platform.capture, "NetworkPolicy")
    sidecars = objects(platform.capture, "Sidecar")
    for pod in caller.pods:
        selector = policy["spec"]["podSelector"]["matchLabels"]
        assert all(pod.get(k) == v for k, v in selector.items()), (name, pod)
        assert reaches(platform, caller, pod, policies=policies, sidecars=sidecars)
        if caller.reaches_vault:
            assert reaches(platform, caller, pod, policies=policies, sidecars=sidecars, service="vault")
        out = {"namespace": caller.namespace, "pod": pod}
        if platform.placement == "cidrs":  # not elsewhere on the port, nor another port there
            assert not egress_to_address_allowed(policies, **out, address=ELSEWHERE, port=STORE_PORT)
            assert not egress_to_address_allowed(policies, **out, address=STORE_ADDRESS, port=9000)
        elif platform.placement == "namespace":  # the pods' port only, in the store's namespace only
            source = (namespace(platform.capture, caller.namespace), pod)
            store_pod = (namespace_of(STORE_NAMESPACE, {}), {"app": "server"})
            other_pod = (namespace_of("elsewhere", {}), {"app": "server"})
            assert not connection_allowed(policies, source=source, destination=store_pod, port=SERVICE_PORT)
            assert not connection_allowed(policies, source=source, destination=other_pod, port=STORE_LISTENER)
            assert not egress_to_address_allowed(policies, **out, address=ELSEWHERE, port=STORE_LISTENER)
        else:  # any address, on the endpoint's port only
            assert not egress_to_address_allowed(policies, **out, address=ELSEWHERE, port=9000)


def test_loki_runs_outside_the_mesh_so_no_sidecar_scope_applies(platform: Platform) -> None:
    """Loki reaches an in-cluster store in plaintext (the README says what a meshed store must accept)."""
    labels = namespace(platform.capture, observability.NAMESPACE)["labels"]
    assert labels["istio-injection"] == "disabled"


def test_the_mesh_scope_widens_only_for_a_store_or_vault_in_the_cluster(platform: Platform) -> None:
    sidecars = {
        (s["metadata"]["namespace"], s["metadata"]["name"]): s for s in objects(platform.capture, "Sidecar")
    }
    keycloak = f"{NAMESPACES.identity}/{identity.KEYCLOAK_INTERNAL_HOST}"
    widened = {
        key
        for key, sidecar in sidecars.items()
        if any(
            host not in ("./*", "istio-system/*", keycloak)
            for listener in sidecar["spec"]["egress"]
            if "port" not in listener
            for host in listener["hosts"]
        )
    }
    if platform.placement != "namespace":
        assert widened == set()
        worker = sidecars[(NAMESPACES.self_service, selfservice.WORKER_NAME)]
        assert worker["spec"]["egress"][-1] == {"hosts": ["./*", "istio-system/*", keycloak]}
        return
    assert {key for key in widened if key[1] in (identity.DATABASE_CLUSTER, selfservice.API_NAME)} == {
        (NAMESPACES.identity, identity.DATABASE_CLUSTER),
        (NAMESPACES.self_service, selfservice.API_NAME),
    }
    # Keycloak, beside its database in iam, keeps the mesh default.
    assert not sidecar_knows(
        list(sidecars.values()),
        namespace=NAMESPACES.identity,
        pod=dict(identity.KEYCLOAK_POD_LABELS),
        host=STORE_HOST,
        port=SERVICE_PORT,
    )


def test_without_each_rule_its_caller_cannot_reach_the_store(platform: Platform) -> None:
    for caller in callers(platform).values():
        _check_removals(platform, caller)


def _check_removals(platform: Platform, caller: Caller) -> None:
    policies = objects(platform.capture, "NetworkPolicy")
    sidecars = objects(platform.capture, "Sidecar")
    # Each rule, and the connections (store, Vault) that must break without it.
    services = ["store", "vault"] if caller.reaches_vault else ["store"]
    removals: list[tuple[str, str, list[str]]] = [("NetworkPolicy", caller.policy, ["store"])]
    if caller.vault_policy is not None:
        if caller.vault_policy == caller.policy:
            removals = [("NetworkPolicy", caller.policy, services)]
        else:
            removals.append(("NetworkPolicy", caller.vault_policy, ["vault"]))
    if platform.placement == "namespace" and caller.sidecar is not None:
        removals.append(("Sidecar", caller.sidecar, services))
    for kind, removed, broken in removals:
        left_policies = without(policies, kind, caller.namespace, removed)
        left_sidecars = without(sidecars, kind, caller.namespace, removed)
        assert len(left_policies) + len(left_sidecars) == len(policies) + len(sidecars) - 1, removed
        for pod in caller.pods:
            for service in broken:
                assert not reaches(
                    platform, caller, pod, policies=left_policies, sidecars=left_sidecars, service=service
                ), (kind, removed, service)


def without(found: list[dict[str, Any]], kind: str, namespace: str, name: str) -> list[dict[str, Any]]:
    return [
        o
        for o in found
        if (o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) != (kind, namespace, name)
    ]
