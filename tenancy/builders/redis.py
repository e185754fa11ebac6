"""Redis with Sentinel for the platform's own services (the self-service API's queue and rate limits).

Chart: DandyDeveloper ``redis-ha`` (version pinned in tenancy.versions). Why this chart: it runs the
official Redis images (Docker Library, mirrored on ECR Public); Bitnami's free images, which the
bitnami/redis chart needs, moved to an unmaintained legacy registry in August 2025; and it is the chart
Argo CD's own HA mode depends on, so it is widely run and maintained.

Clients use Sentinel (redis-py ``Sentinel``): they ask any Sentinel for the master of
``MASTER_GROUP_NAME`` and connect to it. HAProxy (the chart's optional master-only proxy) stays off:
Sentinel-aware clients need no extra hop, and HAProxy's master check needs two Sentinels to agree,
which a one-node dev Redis cannot give.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tenancy.builders.contract import NAMESPACES, SELF_SERVICE_POD_LABELS
from tenancy.builders.namespace import Manifest
from tenancy.builders.platform_namespace import PLATFORM_LABELS, allow_ingress
from tenancy.builders.security import runtime_default_seccomp
from tenancy.spec.platform import PlatformConfig

NAMESPACE = NAMESPACES.redis
# Where the self-service API and its workers run; the only clients of this Redis today.
SELF_SERVICE_NAMESPACE = NAMESPACES.self_service

RELEASE_NAME = "redis-ha"  # contains the chart name, so the chart's fullname is exactly this
REDIS_PORT = 6379
SENTINEL_PORT = 26379
MASTER_GROUP_NAME = "mymaster"  # the chart's default redis.masterGroupName
# The chart selects the Redis pods by these (release, app); policies must match them exactly.
POD_LABELS = {"app": "redis-ha", "release": RELEASE_NAME}

# One password guards Redis and Sentinel: every client needs both (it asks Sentinel for the master, then
# logs in to the master), so a second password would protect nothing, and the self-service client
# passes one password to both. Key "auth" is the chart's default ``authKey``; Sentinel reads the same key.
AUTH_SECRET = "redis-auth"
AUTH_KEY = "auth"

# The Redis container's memory limit, and the dataset cap inside it. With the chart's ``maxmemory 0``
# Redis grows until the kernel kills it at the limit, losing whatever the AOF had not yet written.
# Three quarters leave room for what Redis holds beside the dataset: client and replication buffers,
# the AOF rewrite buffer and the fork's copy-on-write pages. ``noeviction``: the queue must never drop
# a job to make room; a full Redis refuses writes with an OOM error the client sees and reports.
MEMORY_LIMIT_MIB = 512
MAXMEMORY_MIB = MEMORY_LIMIT_MIB * 3 // 4
MAXMEMORY_POLICY = "noeviction"


def _resources(cpu: str, memory: str, *, cpu_limit: str, memory_limit: str) -> dict[str, Any]:
    return {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    }


def redis_replicas(config: PlatformConfig) -> int:
    """Redis nodes; each pod runs one Redis and one Sentinel."""
    return 3 if config.high_availability else 1


def sentinel_hosts(config: PlatformConfig) -> list[str]:
    """host:port of every Sentinel: the per-node announce Services, stable across pod restarts."""
    return [
        f"{RELEASE_NAME}-announce-{index}.{NAMESPACE}.svc.cluster.local:{SENTINEL_PORT}"
        for index in range(redis_replicas(config))
    ]


def auth_secret_manifest() -> Manifest:
    """The Secret holding the password; the component fills its data from a generated password."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": AUTH_SECRET, "namespace": NAMESPACE, "labels": dict(PLATFORM_LABELS)},
        "type": "Opaque",
    }


def render_redis_values(config: PlatformConfig) -> dict[str, Any]:
    """Values for the redis-ha chart: the password from a Secret, AOF on, restricted pods.

    Prod: 3 nodes, one per host (hard anti-affinity), quorum 2, at most one node down at a time.
    Dev: 1 node, which needs writes without replicas (the chart's default min-replicas-to-write 1
    refuses every write on a lone master) and a quorum one Sentinel can reach.
    """
    replicated = config.high_availability
    redis_config: dict[str, Any] = {
        "appendonly": "yes",  # a string: Redis reads yes/no, not true
        "maxmemory": f"{MAXMEMORY_MIB}mb",  # Redis reads "mb" as MiB (1024*1024 bytes)
        "maxmemory-policy": MAXMEMORY_POLICY,
    }
    if not replicated:
        redis_config["min-replicas-to-write"] = 0

    values: dict[str, Any] = {
        # Replicas, anti-affinity and quorum are set in both environments although prod's equal the
        # chart's defaults: they are the topology, and a chart upgrade must not change them silently.
        "replicas": redis_replicas(config),
        "hardAntiAffinity": replicated,
        "auth": True,
        "existingSecret": AUTH_SECRET,
        "redis": {
            "config": redis_config,
            "resources": _resources("100m", "256Mi", cpu_limit="1", memory_limit=f"{MEMORY_LIMIT_MIB}Mi"),
        },
        "sentinel": {
            "auth": True,
            "existingSecret": AUTH_SECRET,
            "authKey": AUTH_KEY,
            "quorum": 2 if replicated else 1,
            "resources": _resources("50m", "64Mi", cpu_limit="200m", memory_limit="128Mi"),
        },
        "splitBrainDetection": {
            "resources": _resources("10m", "32Mi", cpu_limit="100m", memory_limit="64Mi"),
        },
        "init": {"resources": _resources("50m", "32Mi", cpu_limit="200m", memory_limit="64Mi")},
        "persistentVolume": {"storageClass": config.storage_class},
        # Every container already sets seccomp; the pod-level profile covers any container added later.
        "securityContext": {"seccompProfile": runtime_default_seccomp()},
    }
    if replicated:
        # maxUnavailable, not minAvailable: with one pod per node, drains must still make progress.
        values["podDisruptionBudget"] = {"maxUnavailable": 1}
    return values


def redis_policies(client_namespaces: Sequence[str]) -> list[Manifest]:
    """Redis and Sentinel ports from the self-service pods (API and workers) of each client namespace,
    not from whatever else runs there; replication stays inside the namespace."""
    return [
        allow_ingress(
            NAMESPACE,
            f"allow-{client}-to-redis",
            pods=POD_LABELS,
            from_namespace=client,
            from_pods=SELF_SERVICE_POD_LABELS,
            ports=[REDIS_PORT, SENTINEL_PORT],
        )
        for client in client_namespaces
    ]
