"""How every component declares a pinned Helm release and a custom resource, so all releases get the
same pinning, history and failure handling, and every custom resource is declared from a manifest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from tenancy import versions
from tenancy.builders.namespace import Manifest
from tenancy.versions import ChartPin

HELM_DEFAULT_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class ReleaseTimeout:
    """How long an install or upgrade may take before Helm fails it (and rolls it back), and why."""

    seconds: int
    reason: str


# Every chart the program installs, with the time its release needs on a real cluster. Helm waits for
# every Deployment, StatefulSet and DaemonSet to be ready, every Job hook to finish and every
# LoadBalancer Service to get an address; its default 300 s fails the slow ones half-way, and a rollback
# of a half-done first install (cleanup_on_fail) deletes what had already started.
RELEASE_TIMEOUTS: dict[str, ReleaseTimeout] = {
    versions.ISTIO_BASE.chart: ReleaseTimeout(
        300, "CRDs and the validating webhook configuration only: no workload to wait for"
    ),
    versions.ISTIO_CNI.chart: ReleaseTimeout(
        900,
        "a DaemonSet rolled one node at a time (maxUnavailable 1): each node pulls the image and "
        "installs the plugin before the next starts, so the time grows with the node count",
    ),
    versions.ISTIOD.chart: ReleaseTimeout(
        600, "prod rolls two or more replicas behind a PDB (minAvailable 1), one after the other"
    ),
    versions.ISTIO_GATEWAY.chart: ReleaseTimeout(
        900,
        "Helm waits for the LoadBalancer Service's external address, which a cloud load balancer "
        "takes minutes to provision, then for the replicas behind it",
    ),
    versions.CLOUDNATIVE_PG.chart: ReleaseTimeout(
        600, "CRDs, then the operator pod, which must be ready to serve its admission webhook"
    ),
    versions.KEYCLOAKX.chart: ReleaseTimeout(
        1800,
        "the first start migrates the database schema and imports the realm; the StatefulSet starts "
        "its pods in order (OrderedReady), each one re-augmenting Keycloak before it is ready; an "
        "upgrade across Keycloak versions runs its schema migrations while Helm waits",
    ),
    versions.ARGO_CD.chart: ReleaseTimeout(
        1200,
        "the redis-secret-init pre-install hook Job runs first; in prod three redis-ha pods with hard "
        "anti-affinity each need a node of their own (a cluster autoscaler adds nodes in minutes) and "
        "start in order, and every Argo CD component waits for Redis",
    ),
    versions.LOKI.chart: ReleaseTimeout(
        900, "replicated Loki (prod) starts its StatefulSets and joins every member to its ring"
    ),
    versions.GRAFANA.chart: ReleaseTimeout(
        900, "prod Grafana migrates its PostgreSQL schema on first start, one replica at a time"
    ),
    versions.ALLOY.chart: ReleaseTimeout(600, "a DaemonSet on every node, rolled one node at a time"),
    versions.REDIS_HA.chart: ReleaseTimeout(
        900,
        "three nodes with hard anti-affinity (one per host) start in order, each syncing from the "
        "master and registering with Sentinel before the next",
    ),
    versions.VCLUSTER.chart: ReleaseTimeout(
        900,
        "the control plane StatefulSet waits for its volume to be provisioned and attached, then "
        "starts the API server and syncer",
    ),
}

# Qdrant: a rolling upgrade restarts the pods one at a time, each loading its collections from disk
# before it is ready; the time grows with the pods and with the data on each.
QDRANT_BASE_SECONDS = 300
QDRANT_SECONDS_PER_POD = 180  # schedule, attach the volume, start, rejoin the Raft consensus
QDRANT_SECONDS_PER_GIB = 3  # load segments and replay the WAL; a conservative ~350 MiB/s
QDRANT_MAX_SECONDS = 4 * 3600


def qdrant_release_timeout(*, replicas: int, storage_bytes: int) -> ReleaseTimeout:
    """The timeout of a Qdrant release of ``replicas`` pods with ``storage_bytes`` of volume each."""
    per_pod = QDRANT_SECONDS_PER_POD + QDRANT_SECONDS_PER_GIB * -(-storage_bytes // 2**30)
    seconds = min(QDRANT_BASE_SECONDS + replicas * per_pod, QDRANT_MAX_SECONDS)
    return ReleaseTimeout(
        seconds,
        f"{replicas} pod(s) restart one at a time, each loading up to {storage_bytes // 2**30} GiB "
        "of collections before it is ready",
    )


def release_timeout(pin: ChartPin) -> ReleaseTimeout:
    if pin.chart not in RELEASE_TIMEOUTS:
        raise KeyError(
            f"chart {pin.chart} has no entry in components.kubernetes.RELEASE_TIMEOUTS: "
            "add how long its release may take, and why"
        )
    return RELEASE_TIMEOUTS[pin.chart]


def helm_release(
    resource_name: str,
    *,
    release: str,
    namespace: pulumi.Input[str],
    pin: ChartPin,
    values: dict[str, Any],
    opts: pulumi.ResourceOptions,
    timeout: ReleaseTimeout | None = None,
    postrender: str | None = None,
) -> k8s.helm.v3.Release:
    """Release ``release`` of the pinned chart ``pin``; a failed install or upgrade is rolled back.

    It may take ``timeout`` (by default the chart's entry in RELEASE_TIMEOUTS); ``postrender`` names a
    program on PATH that Helm runs over the rendered manifests (tenancy.builders.qdrant_postrender).
    """
    timeout = timeout or release_timeout(pin)
    return k8s.helm.v3.Release(
        resource_name,
        name=release,
        namespace=namespace,
        chart=pin.chart,
        version=pin.version,
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=pin.repo),
        values=values,
        max_history=10,
        cleanup_on_fail=True,
        timeout=timeout.seconds,
        postrender=postrender,
        opts=opts,
    )


def custom_resource(
    resource_name: str, manifest: Manifest, opts: pulumi.ResourceOptions
) -> k8s.apiextensions.CustomResource:
    return k8s.apiextensions.CustomResource(
        resource_name,
        api_version=manifest["apiVersion"],
        kind=manifest["kind"],
        metadata=manifest["metadata"],
        spec=manifest["spec"],
        opts=opts,
    )
