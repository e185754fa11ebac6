"""Helm values for a tenant's Qdrant (qdrant/qdrant chart, version pinned in tenancy.versions).

API keys never go through the chart's ``apiKey`` value: ``apiKey: true`` makes a new random key on
every client-side render, and ``valueFrom`` needs a cluster lookup at render time. The keys live in a
Secret the program owns and reach Qdrant as environment variables, which outrank its config files.
"""

from __future__ import annotations

from typing import Any

import pulumi

from tenancy.builders.namespace import Manifest, chart_labels, metadata, volume_claim_labels
from tenancy.builders.network import QDRANT_GRPC_PORT, QDRANT_HTTP_PORT
from tenancy.builders.security import restricted_container, runtime_default_seccomp
from tenancy.spec.tenant import Tenant

RELEASE_NAME = "qdrant"
API_KEY_SECRET = "qdrant-api-keys"
API_KEY = "api-key"
READ_ONLY_API_KEY = "read-only-api-key"
# The chart selects pods by these; PDBs and spread constraints must match them exactly.
SELECTOR_LABELS = {"app.kubernetes.io/name": "qdrant", "app.kubernetes.io/instance": RELEASE_NAME}
# Qdrant (>= 1.17, every offered version) serves /metrics alone on this port, without an API key. On the
# HTTP port /metrics needs a key, which Istio's agent cannot send when it merges the application's metrics
# into the sidecar's 15020 endpoint. No policy opens this port beyond the tenant's own namespace: the
# agent scrapes it over localhost, and the monitoring namespace reads the merged metrics on 15020.
METRICS_PORT = 6336
# Once replicated, every new collection keeps each shard on two peers, so the one pod a drain may take
# (PDB maxUnavailable 1) never takes a shard offline; a write succeeds once one replica has it, so
# writes go on while the other is down. These are defaults for new collections: a client may still ask
# for others when it creates one.
REPLICATED_COLLECTION_DEFAULTS = {"replication_factor": 2, "write_consistency_factor": 1}


def qdrant_endpoints(tenant: Tenant) -> dict[str, str]:
    host = f"{RELEASE_NAME}.{tenant.namespace}.svc.cluster.local"
    return {"http": f"http://{host}:{QDRANT_HTTP_PORT}", "grpc": f"{host}:{QDRANT_GRPC_PORT}"}


def api_key_secret_manifest(tenant: Tenant) -> Manifest:
    """The Secret holding the keys; its data is filled by the component from generated passwords."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(tenant, API_KEY_SECRET),
        "type": "Opaque",
    }


def _secret_env(name: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": API_KEY_SECRET, "key": key}}}


def render_qdrant_values(
    tenant: Tenant, *, default_storage_class: pulumi.Input[str], keys_checksum: pulumi.Input[str]
) -> dict[str, Any]:
    """Values for the qdrant chart. ``keys_checksum`` rolls the pods when a key changes."""
    q = tenant.qdrant
    if q is None:
        raise ValueError(f"tenant {tenant.name} has no Qdrant")
    replicated = q.replicas > 1
    env = [_secret_env("QDRANT__SERVICE__API_KEY", API_KEY)]
    if q.read_only_key:
        env.append(_secret_env("QDRANT__SERVICE__READ_ONLY_API_KEY", READ_ONLY_API_KEY))

    config: dict[str, Any] = {
        # Cluster mode at every replica count (the chart's default, pinned on purpose): a node started
        # without it would switch modes on its existing storage when the tenant scales from 1 to 3.
        "cluster": {"enabled": True},
        "service": {"metrics_port": METRICS_PORT},
    }
    if replicated:
        config["storage"] = {"collection": dict(REPLICATED_COLLECTION_DEFAULTS)}

    size = {"cpu": q.cpu, "memory": q.memory}
    values: dict[str, Any] = {
        "fullnameOverride": RELEASE_NAME,
        "image": {"tag": q.version},
        "replicaCount": q.replicas,
        "config": config,
        "resources": {"requests": dict(size), "limits": dict(size)},
        "env": env,
        "podAnnotations": {
            "tenancy.platform/api-keys-checksum": keys_checksum,
            # Istio's injector moves these to the sidecar (15020) and has its agent merge what they point
            # at into the sidecar's own metrics.
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(METRICS_PORT),
            "prometheus.io/path": "/metrics",
        },
        "additionalLabels": chart_labels(tenant),
        "persistence": {
            "size": q.storage_size,
            "storageClassName": q.storage_class or default_storage_class,
            "additionalLabels": volume_claim_labels(tenant),
        },
        "snapshotPersistence": {
            "enabled": q.snapshots,
            "size": q.snapshot_size,
            "storageClassName": q.snapshot_storage_class or default_storage_class,
            "additionalLabels": volume_claim_labels(tenant),
        },
        # The chart's chown init container runs as root; fsGroup on fresh volumes does the same job.
        "updateVolumeFsOwnership": False,
        "podSecurityContext": {
            "runAsNonRoot": True,
            "fsGroup": 3000,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": runtime_default_seccomp(),
        },
        "containerSecurityContext": restricted_container(
            runAsUser=1000, runAsGroup=2000, privileged=False, readOnlyRootFilesystem=True
        ),
    }
    if replicated:
        values["podDisruptionBudget"] = {"enabled": True, "maxUnavailable": 1}
        values["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": dict(SELECTOR_LABELS)},
            },
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": dict(SELECTOR_LABELS)},
            },
        ]
    return values
