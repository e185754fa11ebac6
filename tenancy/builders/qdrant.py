"""Helm values for a tenant's Qdrant (qdrant/qdrant chart, version pinned in tenancy.versions).

API keys never go through the chart's ``apiKey`` value: ``apiKey: true`` makes a new random key on
every client-side render, and ``valueFrom`` needs a cluster lookup at render time. The keys live in a
Secret the program owns. Qdrant reads them from a file, not from environment variables (which any
process dumping its environment, or a crash report, would show): the Secret's ``local.yaml`` is mounted
at ``/qdrant/config/local.yaml``, the config file Qdrant reads last (after ``config.yaml`` and the
chart's ``production.yaml``) and the same place the chart's own ``apiKey`` mechanism uses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import pulumi
import yaml

from tenancy.builders.contract import GATEWAY_NAME, QDRANT_API_ZONE, PlatformRefs
from tenancy.builders.namespace import Manifest, chart_labels, metadata, volume_claim_labels
from tenancy.builders.network import QDRANT_GRPC_PORT, QDRANT_HTTP_PORT
from tenancy.builders.security import restricted_container, runtime_default_seccomp
from tenancy.spec.plans import qdrant_sidecar
from tenancy.spec.tenant import QdrantSettings, Tenant

RELEASE_NAME = "qdrant"
SERVICE_ACCOUNT = RELEASE_NAME  # the chart's pods run as its fullname (templates/statefulset.yaml)
# The peers' internal gRPC (points, collections, shard snapshots, consensus). Qdrant checks no key there
# unless ``service.enforce_internal_auth`` is on, which a key rotation's rolling restart would break (a
# restarted node sends the new key to nodes that know only the old one); so only the Qdrant pods may
# reach it, by their mTLS identity (istio.py, ``qdrant-peers-only``).
P2P_PORT = 6335
API_KEY_SECRET = "qdrant-api-keys"
API_KEY = "api-key"
READ_ONLY_API_KEY = "read-only-api-key"
CONFIG_FILE_KEY = "local.yaml"  # the server Secret's key holding Qdrant's config file with its keys
# Qdrant's own copy of the keys (its config file), apart from the keys clients read (API_KEY_SECRET):
# during a rotation the server accepts a new key before any client is handed it.
SERVER_KEYS_SECRET = "qdrant-server-keys"
CONFIG_FILE_PATH = "/qdrant/config/local.yaml"
# The chart's default pod UID/GID (1000/2000/3000) are below 10000, where they may collide with host
# users. A new fsGroup (not only a new UID) matters for running tenants: the root of each volume then
# no longer matches, so the kubelet re-owns the files once (group read-write, fsGroupChangePolicy
# OnRootMismatch) and the new UID can write what the old one created; later starts skip the walk.
QDRANT_UID = 10001
# Qdrant's own cap on a JSON request body (its default, stated); snapshot uploads (multipart) it takes
# at any size. The gateway streams bodies to it and buffers none (see gateway_manifest).
MAX_REQUEST_SIZE_MB = 32
# Probes: Qdrant answers "/" (liveness) and "/readyz" (the chart's readiness) without an API key. Startup
# may replay a large WAL and load collections before "/" answers: the startup probe allows ten minutes
# before liveness takes over and may restart a hung node.
LIVENESS_PROBE = {
    "enabled": True,
    "initialDelaySeconds": 0,
    "periodSeconds": 10,
    "timeoutSeconds": 5,
    "failureThreshold": 6,
    "successThreshold": 1,
}
STARTUP_PROBE = {
    "enabled": True,
    "initialDelaySeconds": 5,
    "periodSeconds": 10,
    "timeoutSeconds": 5,
    "failureThreshold": 60,
    "successThreshold": 1,
}
# The chart's three ports, restated with appProtocol so Istio treats 6333 as HTTP and 6334 as gRPC
# whatever the port names become (Istio reads appProtocol first, then the name's prefix). The cluster
# port (p2p) keeps the chart's form: Istio sniffs it (Qdrant's peers speak HTTP/2 there, client first).
# Probes run against the HTTP port, as the chart's default.
SERVICE_PORTS = [
    {
        "name": "http",
        "port": QDRANT_HTTP_PORT,
        "targetPort": QDRANT_HTTP_PORT,
        "protocol": "TCP",
        "appProtocol": "http",
        "checksEnabled": True,
    },
    {
        "name": "grpc",
        "port": QDRANT_GRPC_PORT,
        "targetPort": QDRANT_GRPC_PORT,
        "protocol": "TCP",
        "appProtocol": "grpc",
        "checksEnabled": False,
    },
    {
        "name": "p2p",
        "port": P2P_PORT,
        "targetPort": P2P_PORT,
        "protocol": "TCP",
        "checksEnabled": False,
    },
]
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


# --- from outside the cluster, through the platform gateway -----------------------------------------------
# Each tenant's Qdrant answers at <tenant>.qdrant.<domain>: REST at https://<tenant>.qdrant.<domain> and
# gRPC at <tenant>.qdrant.<domain>:443 (TLS). The zone has a Gateway server of its own (hosts
# *.qdrant.<domain>, tenancy.builders.istio.gateway_manifest), so it is a filter chain of its own. Nothing
# buffers request bodies there: a buffer filter held each body, up to 32 MiB, in the shared gateway's
# memory before Qdrant checked the key, and refused snapshot uploads Qdrant takes at any size.
GATEWAY_HTTPS_PORT = 443
# gRPC requests carry this content type (application/grpc, +proto, +json): they go to the gRPC port.
GRPC_CONTENT_TYPE_PREFIX = "application/grpc"
# Circuit breakers of each gateway pod towards one tenant's Qdrant: beyond these, the gateway answers 503
# at once instead of queueing without bound, so one tenant's burst cannot take every gateway connection.
GATEWAY_CONNECTION_POOL: dict[str, Any] = {
    "tcp": {"maxConnections": 256, "connectTimeout": "5s"},
    "http": {
        "http1MaxPendingRequests": 128,  # requests waiting for a connection
        "http2MaxRequests": 512,  # requests in flight (HTTP/1.1 and gRPC alike)
        "idleTimeout": "300s",
    },
}


def public_host(tenant: Tenant, domain: pulumi.Input[str]) -> pulumi.Output[str]:
    return pulumi.Output.concat(tenant.name, f".{QDRANT_API_ZONE}.", domain)


def public_endpoints(tenant: Tenant, domain: pulumi.Input[str]) -> dict[str, pulumi.Output[str]]:
    """What a client outside the cluster uses: a REST URL, and gRPC's host:port (TLS on 443)."""
    host = public_host(tenant, domain)
    return {
        "http": pulumi.Output.concat("https://", host),
        "grpc": pulumi.Output.concat(host, f":{GATEWAY_HTTPS_PORT}"),
    }


def _service_host(tenant: Tenant) -> str:
    return f"{RELEASE_NAME}.{tenant.namespace}.svc.cluster.local"


def gateway_virtual_service(tenant: Tenant, platform: PlatformRefs) -> Manifest:
    """Route ``<tenant>.qdrant.<domain>`` from the platform gateway to Qdrant: gRPC (by content type) to
    its gRPC port, everything else to its REST port.

    TLS ends at the gateway, which then speaks mTLS to Qdrant's sidecar as its own identity (the tenant's
    AuthorizationPolicy allows exactly that identity on exactly these ports). Qdrant still checks the
    ``api-key`` header on every request: the gateway passes headers through untouched. Exported to the
    gateway's namespace only: no sidecar anywhere needs this route.
    """

    def to(port: int) -> list[dict[str, Any]]:
        return [{"destination": {"host": _service_host(tenant), "port": {"number": port}}}]

    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": metadata(tenant, f"{RELEASE_NAME}-api"),
        "spec": {
            "hosts": [public_host(tenant, platform.domain)],
            "gateways": [pulumi.Output.concat(platform.ingress_namespace, "/", GATEWAY_NAME)],
            "exportTo": [platform.ingress_namespace],
            "http": [
                {
                    "name": "grpc",
                    "match": [{"headers": {"content-type": {"prefix": GRPC_CONTENT_TYPE_PREFIX}}}],
                    "route": to(QDRANT_GRPC_PORT),
                },
                {"name": "rest", "route": to(QDRANT_HTTP_PORT)},
            ],
        },
    }


def gateway_destination_rule(tenant: Tenant, platform: PlatformRefs) -> Manifest:
    """Connection limits the gateway applies towards this tenant's Qdrant, with mesh mTLS kept.

    Istio looks up a destination rule in the client's namespace first, then in the service's namespace
    when exported to the client: this one lives with the tenant and is exported to the gateway only, so
    it limits traffic from outside and leaves the tenant's own in-namespace clients alone.
    """
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": metadata(tenant, f"{RELEASE_NAME}-gateway-limits"),
        "spec": {
            "host": _service_host(tenant),
            "exportTo": [platform.ingress_namespace],
            "trafficPolicy": {
                "connectionPool": {
                    "tcp": dict(GATEWAY_CONNECTION_POOL["tcp"]),
                    "http": dict(GATEWAY_CONNECTION_POOL["http"]),
                },
                "tls": {"mode": "ISTIO_MUTUAL"},
            },
        },
    }


def api_key_secret_manifest(tenant: Tenant) -> Manifest:
    """The Secret holding the keys; its data is filled by the component from generated passwords."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(tenant, API_KEY_SECRET),
        "type": "Opaque",
    }


def server_keys_secret_manifest(tenant: Tenant) -> Manifest:
    """The Secret Qdrant mounts its config file from; filled by the component."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(tenant, SERVER_KEYS_SECRET),
        "type": "Opaque",
    }


def qdrant_key_config(
    api_key: str,
    read_only_api_key: str | None,
    *,
    alt_api_key: str | None = None,
    jwt_rbac: bool = False,
) -> str:
    """The ``local.yaml`` Qdrant reads its keys from (the server Secret's ``CONFIG_FILE_KEY``).

    ``alt_api_key`` (Qdrant >= 1.18, every offered version) is accepted exactly as ``api_key``, and with
    ``jwt_rbac`` tokens signed with either key are accepted too: that is what keeps both generations
    working during a rotation's grace period.
    """
    service: dict[str, Any] = {"api_key": api_key}
    if alt_api_key is not None:
        service["alt_api_key"] = alt_api_key
    if read_only_api_key is not None:
        service["read_only_api_key"] = read_only_api_key
    if jwt_rbac:
        service["jwt_rbac"] = True
    return yaml.safe_dump({"service": service}, sort_keys=True)


# --- key generations and rotation ----------------------------------------------------------------------
# Qdrant has one slot for a second read-write key (``alt_api_key``) and none for a second read-only key.
# So from generation 1 on, the read-only key is a JWT with global read access (``{"access": "r"}``)
# signed with the generation's API key: Qdrant (``jwt_rbac``) accepts a token signed with ``api_key`` or
# ``alt_api_key``, so the previous generation's read-only token works exactly as long as its API key.
# Generation 0's random read-only key stays as it is until the first rotation's grace period ends.
READ_ONLY_CLAIMS = {"access": "r"}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def read_only_token(api_key: str) -> str:
    """The read-only key of a generation >= 1: an HS256 JWT signed with its API key. Deterministic,
    so every run of the program hands clients the same token for the same key."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = _b64url(json.dumps(READ_ONLY_CLAIMS, separators=(",", ":"), sort_keys=True).encode())
    signing_input = f"{header}.{claims}".encode("ascii")
    signature = hmac.new(api_key.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64url(signature)}"


@dataclass(frozen=True)
class KeySlot:
    """One generation's API key: a random password named by the generation's parity, so the previous
    generation's key lives in the other slot while both are wanted. ``keepers`` name the generation:
    a new generation replaces the slot's password, the same generation never does. Generation 0 has no
    keepers, so stacks from before rotation existed keep their key."""

    name_suffix: str
    generation: int
    keepers: dict[str, str] | None


def key_slot(generation: int) -> KeySlot:
    suffix = "api-key" if generation % 2 == 0 else "api-key-b"
    keepers = None if generation == 0 else {"generation": str(generation)}
    return KeySlot(name_suffix=suffix, generation=generation, keepers=keepers)


@dataclass(frozen=True)
class KeyPlan:
    current: KeySlot
    previous: KeySlot | None  # still accepted: the grace period has not ended
    legacy_read_only: bool  # generation 0's random read-only key is still wanted
    read_only_token: bool  # the current read-only key is a JWT signed with the current API key
    jwt_rbac: bool

    @property
    def in_grace(self) -> bool:
        return self.previous is not None


def key_plan(settings: QdrantSettings) -> KeyPlan:
    """Which keys exist and which Qdrant accepts: the previous generation's until the tenant file
    records their revocation (``keyRotation.revokedAt``, which the service writes once the grace period
    is over). A function of the file alone: the program never reads the clock."""
    generation = settings.key_generation
    in_grace = generation >= 1 and settings.key_previous_accepted
    read_only = settings.read_only_key
    return KeyPlan(
        current=key_slot(generation),
        previous=key_slot(generation - 1) if in_grace else None,
        legacy_read_only=read_only and (generation == 0 or (generation == 1 and in_grace)),
        read_only_token=read_only and generation >= 1,
        jwt_rbac=read_only and generation >= 1,
    )


def render_qdrant_values(
    tenant: Tenant, *, default_storage_class: pulumi.Input[str], keys_checksum: pulumi.Input[str]
) -> dict[str, Any]:
    """Values for the qdrant chart. ``keys_checksum`` rolls the pods when a key changes."""
    q = tenant.qdrant
    if q is None:
        raise ValueError(f"tenant {tenant.name} has no Qdrant")
    replicated = q.replicas > 1
    config: dict[str, Any] = {
        # Cluster mode at every replica count (the chart's default, pinned on purpose): a node started
        # without it would switch modes on its existing storage when the tenant scales from 1 to 3.
        "cluster": {"enabled": True},
        "service": {"metrics_port": METRICS_PORT, "max_request_size_mb": MAX_REQUEST_SIZE_MB},
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
        "service": {"ports": [dict(port) for port in SERVICE_PORTS]},
        "livenessProbe": dict(LIVENESS_PROBE),
        "startupProbe": dict(STARTUP_PROBE),
        "additionalVolumes": [
            {
                "name": "qdrant-keys",
                "secret": {
                    "secretName": SERVER_KEYS_SECRET,
                    "items": [{"key": CONFIG_FILE_KEY, "path": CONFIG_FILE_KEY}],
                    "defaultMode": 0o440,
                },
            }
        ],
        "additionalVolumeMounts": [
            {
                "name": "qdrant-keys",
                "mountPath": CONFIG_FILE_PATH,
                "subPath": CONFIG_FILE_KEY,
                "readOnly": True,
            }
        ],
        "podAnnotations": {
            "tenancy.platform/api-keys-checksum": keys_checksum,
            # Requests equal limits for the sidecar too, so the pod is Guaranteed; its CPU grows with the
            # node's (tenancy.spec.plans.qdrant_sidecar, which the plan's quota check counts).
            **qdrant_sidecar(q.cpu).istio_annotations(),
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
            "fsGroup": QDRANT_UID,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": runtime_default_seccomp(),
        },
        "containerSecurityContext": restricted_container(
            runAsUser=QDRANT_UID, runAsGroup=QDRANT_UID, privileged=False, readOnlyRootFilesystem=True
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
