"""Logs for the whole platform: Loki stores them, Alloy collects them, Grafana shows them.

Charts (versions pinned in tenancy.versions): grafana-community ``loki`` and ``grafana``, grafana ``alloy``
(Promtail's supported successor).

Multi-tenancy: Loki runs with ``auth_enabled: false``, one Loki tenant for everything, and every
stream from a tenant's namespace carries a ``tenant`` label taken from the namespace's
``tenancy.platform/tenant`` label. Why not one Loki org per tenant: tenants are declared by their own
stacks, so the platform stack cannot list them, and Grafana (for the platform team only) could then
not query across tenants without a data source per tenant. Who may read which tenant's logs is decided
where the query is made (Grafana for the platform team; a tenant-facing log API would pin
``{tenant="<name>"}``). The price is that Loki's per-tenant limits apply to the whole cluster, so prod
raises them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tenancy.builders.contract import GATEWAY_REFERENCE, INGRESS_GATEWAY_LABELS, NAMESPACES
from tenancy.builders.identity import OPERATOR_TO_INSTANCE_PORTS, WAIT_FOR_READY
from tenancy.builders.namespace import Manifest
from tenancy.builders.platform_namespace import (
    ISTIOD_METRICS_PORT,
    ISTIOD_POD_LABELS,
    PLATFORM_LABELS,
    SIDECAR_METRICS_PORT,
    allow_egress,
    allow_egress_to_api_server,
    allow_egress_to_meshed_pods,
    allow_egress_to_reach,
    allow_ingress,
    object_store_reach,
)
from tenancy.builders.security import restricted_container, runtime_default_seccomp
from tenancy.spec.platform import PlatformConfig
from tenancy.spec.tenant import LABEL_TENANT
from tenancy.versions import CNPG_POSTGRESQL_IMAGE

NAMESPACE = NAMESPACES.observability
CLUSTER_DOMAIN = "cluster.local"

LOKI_RELEASE = "loki"
GRAFANA_RELEASE = "grafana"
ALLOY_RELEASE = "alloy"
# The charts select pods by these; policies must match them exactly.
LOKI_POD_LABELS = {"app.kubernetes.io/name": "loki", "app.kubernetes.io/instance": LOKI_RELEASE}
GRAFANA_POD_LABELS = {"app.kubernetes.io/name": "grafana", "app.kubernetes.io/instance": GRAFANA_RELEASE}
ALLOY_POD_LABELS = {"app.kubernetes.io/name": "alloy", "app.kubernetes.io/instance": ALLOY_RELEASE}

# Loki's nginx gateway routes pushes and queries to whichever Loki components run, so the URLs are the
# same for the single binary (dev) and the replicated read/write/backend targets (prod).
LOKI_GATEWAY_URL = f"http://{LOKI_RELEASE}-gateway.{NAMESPACE}.svc.{CLUSTER_DOMAIN}"
LOKI_PUSH_URL = f"{LOKI_GATEWAY_URL}/loki/api/v1/push"

# Object storage credentials reach Loki as environment variables from this Secret; the Loki config only
# names the variables (the chart always runs Loki with -config.expand-env=true).
LOKI_STORAGE_SECRET = "loki-object-storage"
ACCESS_KEY_ID_ENV = "AWS_ACCESS_KEY_ID"
SECRET_ACCESS_KEY_ENV = "AWS_SECRET_ACCESS_KEY"

GRAFANA_ADMIN_SECRET = "grafana-admin"
# The chart's default key names (admin.userKey / admin.passwordKey).
GRAFANA_ADMIN_USER_KEY = "admin-user"
GRAFANA_ADMIN_PASSWORD_KEY = "admin-password"
GRAFANA_ADMIN_USER = "admin"
GRAFANA_HTTP_PORT = 3000  # the container port; the Service listens on 80
GRAFANA_SERVICE_PORT = 80

# Replicated Grafana (prod) keeps its state in PostgreSQL run by CloudNativePG: SQLite on a
# ReadWriteOnce volume serves one replica only.
GRAFANA_DATABASE = "grafana-db"
GRAFANA_DATABASE_NAME = "grafana"
GRAFANA_DATABASE_POD_LABELS = {"cnpg.io/cluster": GRAFANA_DATABASE}
CNPG_OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "cloudnative-pg"}
# The instance manager's exporter, announced on the database pods (spec.inheritedMetadata) for the
# Prometheus this namespace will run; no scraper is deployed yet. The namespace is not meshed, so
# 9187 is reached directly, and the baseline's same-namespace rule already lets it through.
GRAFANA_DATABASE_METRICS_PORT = 9187
GRAFANA_DATABASE_SCRAPE_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(GRAFANA_DATABASE_METRICS_PORT),
    "prometheus.io/path": "/metrics",
}

# The Alloy image creates user alloy (uid 473) but runs as root unless told otherwise.
ALLOY_UID = 473
# The chart's default --storage.path (positions of tailed logs) lies under /tmp; with a read-only root
# filesystem an emptyDir on /tmp holds it and any temporary file.
ALLOY_WRITABLE_PATH = "/tmp"


def resources(cpu: str, memory: str, *, cpu_limit: str, memory_limit: str) -> dict[str, Any]:
    return {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    }


def grafana_host(config: PlatformConfig) -> str:
    return f"grafana.{config.domain}"


# --- Alloy -------------------------------------------------------------------------------------


def namespace_label_meta(label: str) -> str:
    """The discovery label holding a namespace label's value (Prometheus sanitises label names)."""
    return "__meta_kubernetes_namespace_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", label)


def pod_log_labels(tenant_label: str = LABEL_TENANT) -> list[tuple[str, str]]:
    """(discovery label, log label) for every label a log stream carries.

    The tenant comes from the namespace, never from the pod: tenants set their pods' labels (directly or
    through their vCluster), but only the platform labels their namespace.
    """
    return [
        ("__meta_kubernetes_namespace", "namespace"),
        ("__meta_kubernetes_pod_name", "pod"),
        ("__meta_kubernetes_pod_container_name", "container"),
        (namespace_label_meta(tenant_label), "tenant"),
    ]


def _alloy_string(value: str) -> str:
    return json.dumps(value)  # Alloy strings use the same quoting and escapes as JSON


def render_alloy_config(*, push_url: str, tenant_label: str = LABEL_TENANT) -> str:
    """The Alloy pipeline: pods on this node -> labels -> logs through the Kubernetes API -> Loki.

    No ``{{`` anywhere: the chart passes the config through Helm's ``tpl``.
    """
    rules = "\n".join(
        f"  rule {{\n"
        f"    source_labels = [{_alloy_string(source)}]\n"
        f"    target_label  = {_alloy_string(target)}\n"
        f"  }}"
        for source, target in pod_log_labels(tenant_label)
    )
    return f"""\
// Generated by tenancy.builders.observability.render_alloy_config.

// Pods on this node only: each DaemonSet pod tails its own node, so no log is read twice.
// HOSTNAME is the node name (set by the chart). Namespace metadata brings the namespace's labels.
discovery.kubernetes "pods" {{
  role = "pod"
  selectors {{
    role  = "pod"
    field = "spec.nodeName=" + coalesce(sys.env("HOSTNAME"), constants.hostname)
  }}
  attach_metadata {{
    namespace = true
  }}
}}

// The labels of every log stream. Pods in a namespace without the tenant label (platform
// services) get no tenant label.
discovery.relabel "pod_logs" {{
  targets = discovery.kubernetes.pods.targets
{rules}
}}

// Logs through the Kubernetes API (pods/log): no hostPath, no root, no privileged container.
loki.source.kubernetes "pods" {{
  targets    = discovery.relabel.pod_logs.output
  forward_to = [loki.write.default.receiver]
}}

loki.write "default" {{
  endpoint {{
    url = {_alloy_string(push_url)}
  }}
}}
"""


def render_alloy_values() -> dict[str, Any]:
    """Values for the alloy chart: a DaemonSet reading logs through the API, Pod Security restricted."""
    return {
        "alloy": {
            "configMap": {"content": render_alloy_config(push_url=LOKI_PUSH_URL)},
            "enableReporting": False,  # egress is closed anyway; this stops the failing attempts
            "securityContext": restricted_container(
                runAsUser=ALLOY_UID, runAsGroup=ALLOY_UID, readOnlyRootFilesystem=True
            ),
            "resources": resources("50m", "128Mi", cpu_limit="500m", memory_limit="512Mi"),
            "mounts": {"extra": [{"name": "tmp", "mountPath": ALLOY_WRITABLE_PATH}]},
        },
        "controller": {"volumes": {"extra": [{"name": "tmp", "emptyDir": {}}]}},
        "global": {
            "podSecurityContext": {
                "runAsNonRoot": True,
                "runAsUser": ALLOY_UID,
                "runAsGroup": ALLOY_UID,
                "fsGroup": ALLOY_UID,
                "seccompProfile": runtime_default_seccomp(),
            }
        },
        "configReloader": {
            "resources": resources("10m", "50Mi", cpu_limit="100m", memory_limit="64Mi"),
        },
        # The chart's default ClusterRole reads every Secret and ConfigMap in the cluster; tailing logs
        # needs pods, their logs, and namespaces (for the tenant label), so the ClusterRole grants only that.
        # Both lists go into that one ClusterRole, and neither may be empty: once either is set, the
        # template (rbac.yaml, chart 1.11.1) writes each list with toYaml under `rules:`, and an empty
        # list renders a bare `[]` after the first list's items, which is invalid YAML, so the install
        # fails. The rule is split in two to fill both.
        "rbac": {
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]}
            ],
            "clusterRules": [
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}
            ],
        },
        "crds": {"create": False},  # the PodLogs CRD serves loki.source.podlogs, which is not used
    }


# --- Loki --------------------------------------------------------------------------------------


def _schema(object_store: str) -> dict[str, Any]:
    return {
        "configs": [
            {
                "from": "2024-04-01",
                "store": "tsdb",
                "object_store": object_store,
                "schema": "v13",
                "index": {"prefix": "loki_index_", "period": "24h"},
            }
        ]
    }


def loki_storage_secret_manifest() -> Manifest:
    """The Secret Loki reads its object storage keys from; the component fills its data."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": LOKI_STORAGE_SECRET, "namespace": NAMESPACE, "labels": dict(PLATFORM_LABELS)},
        "type": "Opaque",
    }


def render_loki_values(config: PlatformConfig) -> dict[str, Any]:
    """Values for the loki chart: one binary on a volume in dev, replicated on object storage in prod."""
    replicated = config.high_availability
    storage = config.object_storage if replicated else None
    if replicated and storage is None:
        raise ValueError("a replicated Loki needs platform:objectStorage")

    loki: dict[str, Any] = {
        "auth_enabled": False,  # see the module docstring: one Loki tenant, a tenant label per stream
        "commonConfig": {"replication_factor": 3 if replicated else 1},
        "schemaConfig": _schema("s3" if storage else "filesystem"),
        "compactor": {
            "retention_enabled": True,
            "delete_request_store": "s3" if storage else "filesystem",
        },
        "limits_config": {"retention_period": "720h" if replicated else "168h"},
        "analytics": {"reporting_enabled": False},
    }
    values: dict[str, Any] = {
        "loki": loki,
        # Pinned although it is the chart's default: the default changed in chart 12.0.
        "deploymentMode": "SimpleScalable" if storage else "Monolithic",
        # The canary (a DaemonSet pushing test logs) and the Helm test that needs it.
        "lokiCanary": {"enabled": False},
        "test": {"enabled": False},
        # The rules sidecar watches ConfigMaps and Secrets; with it off and RBAC namespaced, the chart
        # creates no ClusterRole at all.
        "sidecar": {"rules": {"enabled": False}},
        "rbac": {"namespaced": True},
        "gateway": {
            "resources": resources("50m", "64Mi", cpu_limit="250m", memory_limit="128Mi"),
            # The access-log exporter sidecar: nothing scrapes it, and it has no resources of its own.
            "metrics": {"enabled": False},
        },
    }

    if storage is None:
        # Filesystem storage allows exactly one replica, and no read/write/backend targets (the chart's
        # defaults of 3 each would fail its validation).
        loki["storage"] = {"type": "filesystem"}
        values["singleBinary"] = {
            "replicas": 1,
            "persistence": {"storageClass": config.storage_class},
            "resources": resources("250m", "512Mi", cpu_limit="1", memory_limit="1Gi"),
        }
        values["read"] = {"replicas": 0}
        values["write"] = {"replicas": 0}
        values["backend"] = {"replicas": 0}
        # The memcached caches default to 8 GiB (chunks) + 1 GiB (results): more than all of dev Loki.
        values["chunksCache"] = {"enabled": False}
        values["resultsCache"] = {"enabled": False}
        return values

    # SimpleScalable (read, write, backend; 3 each, hard anti-affinity and PDBs by chart default).
    # The chart marks it deprecated for Loki 4; the move to Monolithic-on-object-storage goes through
    # the chart's "Monolithic<->SimpleScalable" transition mode.
    host, insecure = storage.host, storage.plain_http
    s3: dict[str, Any] = {
        "endpoint": host,
        "region": storage.region,
        "s3ForcePathStyle": storage.force_path_style,
        "accessKeyId": "${" + ACCESS_KEY_ID_ENV + "}",
        "secretAccessKey": "${" + SECRET_ACCESS_KEY_ENV + "}",
    }
    if insecure:
        s3["insecure"] = True
    loki["storage"] = {
        "type": "s3",
        # The ruler keeps its rule groups under their own key prefix, so one bucket serves both.
        "bucketNames": {"chunks": storage.loki_bucket, "ruler": storage.loki_bucket},
        "s3": s3,
    }
    # All tenants share Loki's one tenant, so its per-tenant limits are the cluster's limits.
    loki["limits_config"].update(
        {
            "ingestion_rate_mb": 32,
            "ingestion_burst_size_mb": 64,
            "max_global_streams_per_user": 50000,
        }
    )
    values["defaults"] = {"extraEnvFrom": [{"secretRef": {"name": LOKI_STORAGE_SECRET}}]}
    values["write"] = {
        "replicas": 3,
        "persistence": {"storageClass": config.storage_class},
        "resources": resources("500m", "1Gi", cpu_limit="2", memory_limit="2Gi"),
    }
    values["read"] = {
        "replicas": 3,
        "resources": resources("250m", "512Mi", cpu_limit="2", memory_limit="2Gi"),
    }
    values["backend"] = {
        "replicas": 3,
        "persistence": {"storageClass": config.storage_class},
        "resources": resources("250m", "512Mi", cpu_limit="1", memory_limit="1Gi"),
    }
    values["gateway"].update({"replicas": 2, "podDisruptionBudget": {"maxUnavailable": 1}})
    # Caches sized for platform logs, not the chart's 8 GiB default; resources set explicitly because
    # the chart's derived ones carry no CPU limit.
    values["chunksCache"] = {
        "allocatedMemory": 1024,
        "resources": resources("100m", "1280Mi", cpu_limit="500m", memory_limit="1280Mi"),
    }
    values["resultsCache"] = {
        "allocatedMemory": 512,
        "resources": resources("100m", "640Mi", cpu_limit="500m", memory_limit="640Mi"),
    }
    values["memcachedExporter"] = {"enabled": False}  # nothing scrapes it
    return values


# --- Grafana -----------------------------------------------------------------------------------


def grafana_admin_secret_manifest() -> Manifest:
    """The Secret holding Grafana's admin login; the component fills its data."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": GRAFANA_ADMIN_SECRET, "namespace": NAMESPACE, "labels": dict(PLATFORM_LABELS)},
        "type": "Opaque",
    }


def loki_data_source() -> dict[str, Any]:
    return {
        "name": "Loki",
        "type": "loki",
        "uid": "loki",
        "access": "proxy",
        "url": LOKI_GATEWAY_URL,
        "isDefault": True,
        "editable": False,
    }


def grafana_database_manifest(config: PlatformConfig) -> Manifest:
    """CloudNativePG Cluster for replicated Grafana: a primary and a standby, anti-affine by default."""
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {
            "name": GRAFANA_DATABASE,
            "namespace": NAMESPACE,
            "labels": dict(PLATFORM_LABELS),
            # Grafana (which depends on this Cluster) starts only once CloudNativePG reports it Ready,
            # by which time the grafana-db-app Secret its pods read exists.
            "annotations": dict(WAIT_FOR_READY),
        },
        "spec": {
            "instances": 2,
            "imageName": CNPG_POSTGRESQL_IMAGE,
            "storage": {"size": "5Gi", "storageClass": config.storage_class},
            "bootstrap": {"initdb": {"database": GRAFANA_DATABASE_NAME, "owner": GRAFANA_DATABASE_NAME}},
            "resources": resources("100m", "256Mi", cpu_limit="500m", memory_limit="512Mi"),
            "inheritedMetadata": {"annotations": dict(GRAFANA_DATABASE_SCRAPE_ANNOTATIONS)},
        },
    }


def render_grafana_values(config: PlatformConfig) -> dict[str, Any]:
    """Values for the grafana chart: Loki as data source, admin login from a Secret, restricted pods."""
    host = grafana_host(config)
    replicated = config.high_availability
    ini: dict[str, Any] = {
        "server": {"domain": host, "root_url": f"https://{host}"},
        "analytics": {"check_for_updates": False, "reporting_enabled": False},
    }
    values: dict[str, Any] = {
        # The login lives in a Secret the program owns; nothing secret passes through the values.
        "admin": {"existingSecret": GRAFANA_ADMIN_SECRET},
        "datasources": {"datasources.yaml": {"apiVersion": 1, "datasources": [loki_data_source()]}},
        "grafana.ini": ini,
        "resources": resources("100m", "256Mi", cpu_limit="1", memory_limit="512Mi"),
        # The chart's pod context lacks only the seccomp profile (its containers set it themselves).
        "securityContext": {"seccompProfile": runtime_default_seccomp()},
        # Grafana reads nothing from the Kubernetes API (the config sidecars are off).
        "rbac": {"create": False},
        "automountServiceAccountToken": False,
        "testFramework": {"enabled": False},
    }
    if not replicated:
        values["persistence"] = {"enabled": True, "storageClassName": config.storage_class}
        # The chown init container runs as root with CHOWN; fsGroup 472 already owns the volume.
        values["initChownData"] = {"enabled": False}
        return values

    # Replicas share state through PostgreSQL; credentials come from the Secret CloudNativePG writes.
    app_secret = f"{GRAFANA_DATABASE}-app"
    ini["database"] = {
        "type": "postgres",
        "host": f"{GRAFANA_DATABASE}-rw.{NAMESPACE}.svc.{CLUSTER_DOMAIN}:5432",
        "name": GRAFANA_DATABASE_NAME,
        "ssl_mode": "require",
    }
    values["envValueFrom"] = {
        "GF_DATABASE_USER": {"secretKeyRef": {"name": app_secret, "key": "username"}},
        "GF_DATABASE_PASSWORD": {"secretKeyRef": {"name": app_secret, "key": "password"}},
    }
    values["replicas"] = 2
    values["podDisruptionBudget"] = {"maxUnavailable": 1}
    values["topologySpreadConstraints"] = [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": dict(GRAFANA_POD_LABELS)},
        }
    ]
    return values


def grafana_virtual_service(config: PlatformConfig) -> Manifest:
    """grafana.<domain> through the platform gateway to Grafana's Service."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": GRAFANA_RELEASE, "namespace": NAMESPACE, "labels": dict(PLATFORM_LABELS)},
        "spec": {
            "hosts": [grafana_host(config)],
            "gateways": [GATEWAY_REFERENCE],  # istio-ingress/platform-gateway, HTTPS for *.<domain>
            "http": [
                {
                    "route": [
                        {
                            "destination": {
                                "host": f"{GRAFANA_RELEASE}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}",
                                "port": {"number": GRAFANA_SERVICE_PORT},
                            }
                        }
                    ]
                }
            ],
        },
    }


# --- Network -----------------------------------------------------------------------------------


def observability_policies(config: PlatformConfig) -> list[Manifest]:
    """What each piece needs beyond the namespace baseline (deny, DNS, same-namespace).

    Alloy -> Loki and Grafana -> Loki stay inside the namespace: the baseline's same-namespace rule
    covers them, and nothing outside the namespace may reach Loki.
    """
    policies = [
        # Kubernetes discovery of what to scrape, and pod logs, which Alloy tails through the API.
        allow_egress_to_api_server(
            NAMESPACE, "allow-alloy-to-api-server", pods=ALLOY_POD_LABELS, config=config
        ),
        # Alloy is the namespace's collector, the one that scrapes: every meshed pod's merged metrics
        # (the sidecar's 15020, application metrics folded in from its prometheus.io annotations, outside
        # mutual TLS), and istiod's own endpoint. The other side of each already admits this namespace.
        allow_egress_to_meshed_pods(
            NAMESPACE, "allow-scraping-meshed-pods", pods=ALLOY_POD_LABELS, ports=[SIDECAR_METRICS_PORT]
        ),
        allow_egress(
            NAMESPACE,
            "allow-scraping-istiod",
            pods=ALLOY_POD_LABELS,
            to_namespace=NAMESPACES.mesh,
            to_pods=ISTIOD_POD_LABELS,
            ports=[ISTIOD_METRICS_PORT],
        ),
        allow_ingress(
            NAMESPACE,
            "allow-gateway-to-grafana",
            pods=GRAFANA_POD_LABELS,
            from_namespace=NAMESPACES.ingress,
            from_pods=INGRESS_GATEWAY_LABELS,
            ports=[GRAFANA_HTTP_PORT],
        ),
    ]
    if config.high_availability and config.object_storage is not None:
        # Every pod of the release (the chart's selector labels): write flushes chunks, read and backend
        # (compactor, index gateway, ruler) read them. Loki runs outside the mesh, so a store in the
        # cluster is reached in plaintext on its pods' port: a meshed store must accept that (README).
        policies.append(
            allow_egress_to_reach(
                NAMESPACE,
                "allow-loki-to-object-storage",
                pods=LOKI_POD_LABELS,
                reaches=[object_store_reach(config.object_storage)],
            )
        )
    if config.high_availability:
        policies += [
            allow_ingress(
                NAMESPACE,
                "allow-database-operator-to-grafana-db",
                pods=GRAFANA_DATABASE_POD_LABELS,
                from_namespace=NAMESPACES.database_operator,
                from_pods=CNPG_OPERATOR_POD_LABELS,
                ports=OPERATOR_TO_INSTANCE_PORTS,
            ),
            # The instance manager in each database pod reports to the API server.
            allow_egress_to_api_server(
                NAMESPACE, "allow-grafana-db-to-api-server", pods=GRAFANA_DATABASE_POD_LABELS, config=config
            ),
        ]
    return policies
