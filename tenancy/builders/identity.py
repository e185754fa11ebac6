"""Identity: the CloudNativePG operator, Keycloak's PostgreSQL ``Cluster``, Keycloak and its realm.

Pure functions: names, Helm values, manifests and the realm import document. The component
(components/platform/identity.py) only declares resources from them.

Token contract with the self-service API (tests/platform/test_identity.py keeps it): access tokens
issued for the ``tenant-api`` client carry ``iss`` = ``issuer_url(domain)``, ``aud`` including
``tenant-api``, ``groups`` = full group paths (``/platform-admins``, ``/tenants/<tenant>/admins``) and
``roles`` = a flat list of realm roles (``platform-admin``, ``tenant-admin``, ``tenant-viewer``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import yaml

from tenancy import versions
from tenancy.builders.contract import (
    ARGOCD_CLI_CALLBACK,
    ARGOCD_CLI_CLIENT_ID,
    ARGOCD_PORT_FORWARD_URL,
    GATEWAY_REFERENCE,
    INGRESS_GATEWAY_LABELS,
    NAMESPACES,
    REALM,
    SELF_SERVICE_POD_LABELS,
)
from tenancy.builders.namespace import Manifest
from tenancy.builders.platform_namespace import (
    PLATFORM_LABELS,
    allow_egress,
    allow_egress_to_api_server,
    allow_egress_to_reach,
    allow_ingress,
    allow_ingress_from_anywhere,
    object_store_reach,
    sidecar_egress_hosts,
)
from tenancy.builders.security import restricted_container, runtime_default_seccomp
from tenancy.spec.plans import Size, guaranteed
from tenancy.spec.platform import ObjectStorageConfig, PlatformConfig
from tenancy.spec.tenant import Tenant

# --- CloudNativePG operator (namespace cnpg-system, outside the mesh) --------------------------
OPERATOR_RELEASE = "cloudnative-pg"
# The chart's selector labels (templates/_helpers.tpl cloudnative-pg.selectorLabels).
OPERATOR_POD_LABELS = {
    "app.kubernetes.io/name": "cloudnative-pg",
    "app.kubernetes.io/instance": OPERATOR_RELEASE,
}
OPERATOR_WEBHOOK_PORT = 9443  # the chart's webhook.port; the API server calls it directly

# --- the database (namespace iam, meshed) -------------------------------------------------------
DATABASE_CLUSTER = "keycloak-db"
DATABASE_NAME = "keycloak"
DATABASE_OWNER = "keycloak"  # must equal the username in the initdb secret (CNPG bootstrap rules)
DATABASE_SECRET = "keycloak-db-credentials"
BACKUP_SECRET = "keycloak-db-backup-credentials"
DATABASE_SERVICE = f"{DATABASE_CLUSTER}-rw"  # the primary; CNPG always creates it
# The CA CloudNativePG generates for the Cluster and signs its server certificate with (keys ca.crt and
# ca.key); the server certificate names every form of the -rw/-ro/-r Services, the short one included.
DATABASE_CA_SECRET = f"{DATABASE_CLUSTER}-ca"
DATABASE_CA_DIR = "/opt/keycloak/conf/database-ca"
# Appended to Keycloak's default PostgreSQL JDBC URL (db-url-properties, leading "?" included): TLS,
# the server certificate signed by the Cluster's CA, and the host name Keycloak dials in it. Keycloak
# builds that URL as "jdbc:postgresql://<host>:<port>/<database><db-url-properties>" with nothing between
# (keycloak/keycloak quarkus/config-api .../config/database/Database.java, Vendor.POSTGRES), and its option
# reference says to start the value with the vendor's separator; pgjdbc then reads "?k=v&k=v", and
# sslrootcert as a PEM file path.
DATABASE_TLS_URL_PROPERTIES = f"?sslmode=verify-full&sslrootcert={DATABASE_CA_DIR}/ca.crt"
POSTGRES_PORT = 5432
STATUS_PORT = 8000  # the instance manager's status endpoint the operator polls (own TLS, pinned cert)
# All the operator reaches on an instance: CloudNativePG 1.30 calls the instance manager there (status,
# pg_controldata, backup mode, its own upgrade) and never opens a PostgreSQL connection itself (the
# connection pools are the instance manager's, in the pod); 5432 is for Keycloak and the replicas.
OPERATOR_TO_INSTANCE_PORTS = [STATUS_PORT]
METRICS_PORT = 9187  # the instance manager's Prometheus exporter
ISTIO_METRICS_PORT = 15020  # the sidecar agent's merged Prometheus endpoint, outside mutual TLS
# CNPG labels on instance pods (pkg/specs/pods.go); pooler pods share cnpg.io/cluster, not podRole.
DATABASE_POD_LABELS = {"cnpg.io/cluster": DATABASE_CLUSTER, "cnpg.io/podRole": "instance"}
# Instance pods and the initdb/join Job pods: all run the instance manager, which reads the API.
DATABASE_WORKLOAD_LABELS = {"cnpg.io/cluster": DATABASE_CLUSTER}
BACKUP_RETENTION = "30d"
BACKUP_SCHEDULE = "0 0 2 * * *"  # robfig cron with seconds: daily at 02:00:00
# Create the Keycloak release only once the database accepts connections: the pulumi-kubernetes
# provider waits for the Cluster's Ready condition (CNPG sets it when all instances are up).
WAIT_FOR_READY = {"pulumi.com/waitFor": "condition=Ready"}
# The injected sidecars of Keycloak and the database pods, requests equal to limits so those pods are
# Guaranteed like their main containers (the mesh default requests 50m but allows 500m).
PLATFORM_SIDECAR = guaranteed(Size(cpu="200m", memory="256Mi"))
# Pod annotations (through the Cluster's spec.inheritedMetadata) that point a Prometheus at the exporter.
METRICS_SCRAPE_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(METRICS_PORT),
    "prometheus.io/path": "/metrics",
}

# --- Keycloak (namespace iam, meshed) -----------------------------------------------------------
KEYCLOAK_RELEASE = "keycloak"
KEYCLOAK_SERVICE = f"{KEYCLOAK_RELEASE}-http"  # the chart's <fullname>-http Service
KEYCLOAK_SERVICE_PORT = 80
KEYCLOAK_HTTP_PORT = 8080  # container port behind the Service; what NetworkPolicies see
# The management port (the chart's http-internal): health and, with the chart's default metrics.enabled,
# Prometheus metrics. No caller reaches it through the mesh: iam's AuthorizationPolicies admit none.
KEYCLOAK_MANAGEMENT_PORT = 9000
# Pod annotations that let the sidecar agent fold Keycloak's metrics into its merged endpoint on 15020
# (Istio's metrics merging, read at injection), which observability may scrape: the database's pattern.
KEYCLOAK_SCRAPE_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(KEYCLOAK_MANAGEMENT_PORT),
    "prometheus.io/path": "/metrics",
}
# JGroups (jdbc-ping stack): data on 7800 and FD_SOCK2 failure detection on 7800 + 50000.
JGROUPS_PORTS = [7800, 57800]
# The chart's selector labels: name is the chart name, instance the release name.
KEYCLOAK_POD_LABELS = {"app.kubernetes.io/name": "keycloakx", "app.kubernetes.io/instance": KEYCLOAK_RELEASE}
# Keycloak as callers inside the cluster reach it, through the mesh: the self-service's JWKS and the
# tenant stacks its workers run (admin API, group provisioning). Not through the gateway: that would
# need the gateway's addresses and sends /admin into the admin-surface DENY (builders.admin_access).
KEYCLOAK_INTERNAL_HOST = f"{KEYCLOAK_SERVICE}.{NAMESPACES.identity}.svc.cluster.local"
KEYCLOAK_INTERNAL_URL = f"http://{KEYCLOAK_INTERNAL_HOST}"  # the Service's port 80; mTLS by the sidecars
ADMIN_SECRET = "keycloak-admin"
CLIENT_SECRETS = "keycloak-client-secrets"
REALM_SECRET = "keycloak-realm"
REALM_FILE = f"{REALM}-realm.json"
IMPORT_DIR = "/opt/keycloak/data/import"
ARGOCD_SECRET_ENV = "ARGOCD_CLIENT_SECRET"
ARGOCD_SECRET_KEY = "argocd"
PROVISIONER_SECRET_ENV = "TENANT_PROVISIONER_CLIENT_SECRET"
PROVISIONER_SECRET_KEY = "tenant-provisioner"
# The platform's Istio Gateway (istio-ingress/platform-gateway); TLS ends there.
PLATFORM_GATEWAY = GATEWAY_REFERENCE

# --- the realm ----------------------------------------------------------------------------------
API_CLIENT_ID = "tenant-api"
ARGOCD_CLIENT_ID = "argocd"
ARGOCD_CLI_OFFLINE_IDLE_SECONDS = 8 * 3600  # an argocd CLI login unused this long signs in again
ARGOCD_CLI_OFFLINE_MAX_SECONDS = 24 * 3600  # and one this old, used or not
# The self-service portal (tenantctl serve at /), signing people in with authorization code + PKCE.
PORTAL_CLIENT_ID = "tenant-portal"
PORTAL_CALLBACK_PATH = "/auth/callback"
# Tenant stacks log in as this client (client credentials) to declare their groups.
PROVISIONER_CLIENT_ID = "tenant-provisioner"
# What its service account may do in the realm, and no more (realm-management client roles):
# - manage-users: create and delete groups (Keycloak files groups under user management) and map
#   realm roles to them (a manage-users admin may map any role that is not itself an admin role);
# - view-users: read groups, also by path, and their role mappings (refresh, the /tenants lookup);
# - view-realm: read realm roles by name and by id (the role lookups and GroupRoles).
# No manage-realm, manage-clients or realm-admin: it cannot touch clients, roles or realm settings.
# manage-users is still broad: it covers every user, membership and role mapping of the realm,
# platform-admin included, so the client secret is as sensitive as an admin login. Keycloak's
# fine-grained admin permissions could narrow it to /tenants; they are not set up here.
PROVISIONER_ROLES = ("manage-users", "view-users", "view-realm")
PLATFORM_ADMIN = "platform-admin"
TENANT_ADMIN = "tenant-admin"
TENANT_VIEWER = "tenant-viewer"
PLATFORM_ADMINS_GROUP = "platform-admins"
TENANTS_GROUP = "tenants"
# Per-tenant subgroups of /tenants/<tenant> and the realm role each one grants.
TENANT_SUBGROUP_ROLES = {"admins": TENANT_ADMIN, "viewers": TENANT_VIEWER}


def _same(cpu: str, memory: str) -> dict[str, dict[str, str]]:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}}


def _metadata(name: str, namespace: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": dict(PLATFORM_LABELS), **extra}


def auth_host(domain: str) -> str:
    return f"auth.{domain}"


# --- operator -------------------------------------------------------------------------------------


def operator_values(*, high_availability: bool) -> dict[str, Any]:
    """Values for the cloudnative-pg chart.

    The chart's security contexts already meet Pod Security "restricted" and are left alone. Its
    PodMonitor stays off: the platform runs no Prometheus Operator, so the CRD would be missing.
    """
    values: dict[str, Any] = {
        # Two replicas in prod: the admission webhook fails closed, so a lone operator pod being
        # rescheduled blocks every change to a Cluster. Leader election keeps one reconciler.
        "replicaCount": 2 if high_availability else 1,
        "resources": _same("100m", "256Mi"),
    }
    if high_availability:
        values["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": dict(OPERATOR_POD_LABELS)},
            }
        ]
    return values


def operator_namespace_policies(config: PlatformConfig) -> list[Manifest]:
    """What the operator in cnpg-system may do beyond the baseline (DNS, same namespace)."""
    namespace = NAMESPACES.database_operator
    return [
        # The API server calls the admission webhook from outside any pod network: no peer selector.
        allow_ingress_from_anywhere(
            namespace, "allow-apiserver-to-webhook", pods=OPERATOR_POD_LABELS, ports=[OPERATOR_WEBHOOK_PORT]
        ),
        allow_egress_to_api_server(
            namespace, "allow-operator-to-apiserver", pods=OPERATOR_POD_LABELS, config=config
        ),
        # Every CNPG cluster of the platform (Keycloak's in iam, Grafana's in observability).
        allow_egress(
            namespace,
            "allow-operator-to-postgres",
            pods=OPERATOR_POD_LABELS,
            to_namespace=None,
            to_pods={"cnpg.io/podRole": "instance"},
            ports=OPERATOR_TO_INSTANCE_PORTS,
        ),
    ]


# --- namespace iam --------------------------------------------------------------------------------


def identity_namespace_policies(config: PlatformConfig) -> list[Manifest]:
    """Allows in iam beyond the baseline. Keycloak -> Postgres is same-namespace, already allowed;
    Keycloak calls nothing outside (no identity brokering, no external user federation)."""
    namespace = NAMESPACES.identity
    policies = [
        allow_ingress(
            namespace,
            "allow-gateway-to-keycloak",
            pods=KEYCLOAK_POD_LABELS,
            from_namespace=NAMESPACES.ingress,
            from_pods=INGRESS_GATEWAY_LABELS,
            ports=[KEYCLOAK_HTTP_PORT],
        ),
        # The self-service API and workers: the JWKS, and tenant stacks' group provisioning (the workers).
        allow_ingress(
            namespace,
            "allow-selfservice-to-keycloak",
            pods=KEYCLOAK_POD_LABELS,
            from_namespace=NAMESPACES.self_service,
            from_pods=SELF_SERVICE_POD_LABELS,
            ports=[KEYCLOAK_HTTP_PORT],
        ),
        allow_ingress(
            namespace,
            "allow-cnpg-operator-to-postgres",
            pods=DATABASE_POD_LABELS,
            from_namespace=NAMESPACES.database_operator,
            from_pods=OPERATOR_POD_LABELS,
            ports=OPERATOR_TO_INSTANCE_PORTS,
        ),
        # The exporter's metrics, merged by the sidecar agent (see database_cluster); for the
        # scraper the observability namespace will run.
        allow_ingress(
            namespace,
            "allow-observability-to-postgres-metrics",
            pods=DATABASE_POD_LABELS,
            from_namespace=NAMESPACES.observability,
            ports=[ISTIO_METRICS_PORT],
        ),
        # Keycloak's sidecar metrics, merged on the same port.
        allow_ingress(
            namespace,
            "allow-observability-to-keycloak-metrics",
            pods=KEYCLOAK_POD_LABELS,
            from_namespace=NAMESPACES.observability,
            ports=[ISTIO_METRICS_PORT],
        ),
        # The instance manager watches its Cluster and holds the primary Lease through the API.
        allow_egress_to_api_server(
            namespace, "allow-postgres-to-apiserver", pods=DATABASE_WORKLOAD_LABELS, config=config
        ),
    ]
    if config.object_storage is not None:
        # Base backups, WAL archives and recoveries: barman-cloud runs in the instance pods (and the
        # recovery Job's), which all carry cnpg.io/cluster.
        policies.append(
            allow_egress_to_reach(
                namespace,
                "allow-postgres-to-object-storage",
                pods=DATABASE_WORKLOAD_LABELS,
                reaches=[object_store_reach(config.object_storage)],
            )
        )
    return policies


# --- secrets (values are generated by the component) ----------------------------------------------


def basic_auth_secret(
    name: str,
    *,
    username: pulumi.Input[str],
    password: pulumi.Input[str],
    namespace: str = NAMESPACES.identity,
) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(name, namespace),
        "type": "kubernetes.io/basic-auth",
        "stringData": {"username": username, "password": password},
    }


def opaque_secret(
    name: str, data: dict[str, pulumi.Input[str]], *, namespace: str = NAMESPACES.identity
) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(name, namespace),
        "type": "Opaque",
        "stringData": dict(data),
    }


def backup_credentials_secret(
    *, access_key_id: pulumi.Input[str], secret_access_key: pulumi.Input[str], region: str
) -> Manifest:
    return opaque_secret(
        BACKUP_SECRET,
        {"ACCESS_KEY_ID": access_key_id, "ACCESS_SECRET_KEY": secret_access_key, "REGION": region},
    )


# --- the database ---------------------------------------------------------------------------------


def _backup(object_storage: ObjectStorageConfig) -> dict[str, Any]:
    """Native ``barmanObjectStore`` (in-tree Barman Cloud), chosen over the barman-cloud plugin.

    The in-tree path is deprecated since CNPG 1.26 and is removed in 1.31; the plugin replaces it.
    The plugin needs cert-manager (its chart issues the mTLS certificates between operator and
    plugin) and a second pinned chart; the platform runs neither today. On the pinned operator 1.30
    the in-tree path is fully supported, so backups work now, and the move to the plugin is one
    bounded change: the same ``configuration`` block moves into an ObjectStore resource and the
    Cluster gains ``plugins``. tests/platform/test_identity.py fails when the operator pin moves
    past 1.30, so the move cannot be forgotten.
    """

    def ref(key: str) -> dict[str, str]:
        return {"name": BACKUP_SECRET, "key": key}

    return {
        "retentionPolicy": BACKUP_RETENTION,
        "barmanObjectStore": {
            "destinationPath": f"s3://{object_storage.backup_bucket}/{NAMESPACES.identity}",
            "endpointURL": object_storage.endpoint,
            "s3Credentials": {
                "accessKeyId": ref("ACCESS_KEY_ID"),
                "secretAccessKey": ref("ACCESS_SECRET_KEY"),
                "region": ref("REGION"),
            },
            "wal": {"compression": "gzip"},
            "data": {"compression": "gzip"},
        },
    }


def database_cluster(
    *,
    high_availability: bool,
    storage_class: pulumi.Input[str],
    object_storage: ObjectStorageConfig | None,
) -> Manifest:
    """Keycloak's PostgreSQL: 3 instances across nodes in prod, 1 in dev.

    Monitoring: ``spec.monitoring.enablePodMonitor`` is deprecated in 1.30 ("create a PodMonitor
    manually") and the platform has no Prometheus Operator, so none is requested. The exporter on
    9187 sits behind the STRICT sidecar, so instead of a second mTLS exception the pods carry
    ``prometheus.io/*`` annotations: at injection Istio's metrics merging records them in the
    sidecar's environment and serves the exporter's metrics on the agent's 15020
    (``/stats/prometheus``), which is outside mutual TLS; ``identity_namespace_policies`` lets
    ``observability`` reach 15020. No scraper is deployed yet: this only makes the endpoint ready.
    A scraper should target 15020 on pods with ``sidecar.istio.io/status``, not follow
    ``prometheus.io/port``: the injector rewrites that to 15020, but CNPG re-applies its inherited
    annotations to running pods, so it reads 9187 again after the first reconcile (the merged
    endpoint keeps working, its configuration is fixed at injection).
    """
    replicated = high_availability
    memory = "2Gi" if replicated else "512Mi"
    spec: dict[str, Any] = {
        "instances": 3 if replicated else 1,
        "imageName": versions.CNPG_POSTGRESQL_IMAGE,
        "bootstrap": {
            "initdb": {
                "database": DATABASE_NAME,
                "owner": DATABASE_OWNER,
                "secret": {"name": DATABASE_SECRET},
            }
        },
        "postgresql": {
            # Parameters are strings in the CRD. A quarter of the memory limit for shared buffers.
            "parameters": {"shared_buffers": "512MB" if replicated else "128MB"}
        },
        "resources": _same("1" if replicated else "500m", memory),
        "storage": {"size": "20Gi" if replicated else "5Gi", "storageClass": storage_class},
        # A PDB on one instance blocks every node drain; with three it keeps a quorum.
        "enablePDB": replicated,
        "inheritedMetadata": {
            "annotations": {**METRICS_SCRAPE_ANNOTATIONS, **PLATFORM_SIDECAR.istio_annotations()}
        },
    }
    if replicated:
        spec["affinity"] = {
            "enablePodAntiAffinity": True,
            "podAntiAffinityType": "required",
            "topologyKey": "kubernetes.io/hostname",
        }
    if object_storage is not None:
        spec["backup"] = _backup(object_storage)
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": _metadata(DATABASE_CLUSTER, NAMESPACES.identity, annotations=dict(WAIT_FOR_READY)),
        "spec": spec,
    }


def scheduled_backup() -> Manifest:
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "ScheduledBackup",
        "metadata": _metadata(f"{DATABASE_CLUSTER}-daily", NAMESPACES.identity),
        "spec": {
            "schedule": BACKUP_SCHEDULE,
            "cluster": {"name": DATABASE_CLUSTER},
            "method": "barmanObjectStore",
            # A base backup right away: WAL archived before the first base backup restores nothing.
            "immediate": True,
            "backupOwnerReference": "self",
        },
    }


def database_status_port_exception() -> Manifest:
    """Accept the operator's connections to the status port 8000 without Istio mTLS.

    The CNPG operator runs in cnpg-system without a sidecar and polls each instance's status
    endpoint on 8000 over its own TLS, pinned to its client certificate. A STRICT sidecar on the
    database pod rejects every connection that is not Istio mTLS, so the operator would lose sight
    of the instances. PERMISSIVE on 8000 only, on the database pods only: 5432 and every other port
    stay STRICT.
    """
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": _metadata(f"{DATABASE_CLUSTER}-operator-status", NAMESPACES.identity),
        "spec": {
            "selector": {"matchLabels": dict(DATABASE_POD_LABELS)},
            "mtls": {"mode": "STRICT"},
            "portLevelMtls": {str(STATUS_PORT): {"mode": "PERMISSIVE"}},
        },
    }


def database_sidecar(config: PlatformConfig) -> Manifest | None:
    """The database pods' mesh scope when the object store runs in the cluster (``objectStorage.namespace``):
    the mesh default plus the store's services, so barman-cloud's uploads reach a meshed store over mTLS
    (STRICT refuses the plaintext a sidecar passes through for a host outside its scope). None otherwise:
    a store outside the cluster is passed through, under the mesh default Sidecar."""
    storage = config.object_storage
    if storage is None or not storage.namespace:
        return None
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": _metadata(DATABASE_CLUSTER, NAMESPACES.identity),
        "spec": {
            "workloadSelector": {"labels": dict(DATABASE_WORKLOAD_LABELS)},
            "egress": [{"hosts": sidecar_egress_hosts(storage.namespace)}],
            "outboundTrafficPolicy": {"mode": "ALLOW_ANY"},
        },
    }


# --- Keycloak ------------------------------------------------------------------------------------


def keycloak_jgroups_service() -> Manifest:
    """A headless Service declaring Keycloak's JGroups ports (replicated only).

    JGroups connects pod IP to pod IP. Without a Service naming those ports the client sidecar
    treats the traffic as unknown and sends it in plain TCP, which a STRICT peer rejects. Declaring
    them lets Istio match the endpoints and use mutual TLS, so the mesh stays STRICT everywhere but
    CloudNativePG's status port: no second PERMISSIVE exception.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(f"{KEYCLOAK_RELEASE}-jgroups", NAMESPACES.identity),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": dict(KEYCLOAK_POD_LABELS),
            "ports": [
                {"name": f"tcp-jgroups-{port}", "port": port, "targetPort": port, "protocol": "TCP"}
                for port in JGROUPS_PORTS
            ],
        },
    }


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def keycloak_values(*, domain: str, high_availability: bool) -> dict[str, Any]:
    """Values for the keycloakx chart; ``extraEnv`` and ``extraVolume*`` are YAML strings the chart tpl's."""
    replicated = high_availability
    env = [
        # A full URL fixes scheme, host and port of every URL Keycloak issues, the issuer among them.
        {"name": "KC_HOSTNAME", "value": f"https://{auth_host(domain)}"},
        _secret_env("KC_BOOTSTRAP_ADMIN_USERNAME", ADMIN_SECRET, "username"),
        _secret_env("KC_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_SECRET, "password"),
        # Resolved by the realm import's ${ARGOCD_CLIENT_SECRET} and
        # ${TENANT_PROVISIONER_CLIENT_SECRET} placeholders.
        _secret_env(ARGOCD_SECRET_ENV, CLIENT_SECRETS, ARGOCD_SECRET_KEY),
        _secret_env(PROVISIONER_SECRET_ENV, CLIENT_SECRETS, PROVISIONER_SECRET_KEY),
        # Keycloak's default pool (100) per replica would exceed PostgreSQL's 100 connections.
        {"name": "KC_DB_POOL_MAX_SIZE", "value": "30"},
        # Verify the database: pgjdbc's default (sslmode=prefer) encrypts but trusts any certificate.
        {"name": "KC_DB_URL_PROPERTIES", "value": DATABASE_TLS_URL_PROPERTIES},
        {"name": "KC_LOG_CONSOLE_OUTPUT", "value": "json"},
    ]
    volumes = [
        {"name": "realm-import", "secret": {"secretName": REALM_SECRET}},
        # Only the certificate: the CA's private key stays out of Keycloak's pod.
        {
            "name": "database-ca",
            "secret": {"secretName": DATABASE_CA_SECRET, "items": [{"key": "ca.crt", "path": "ca.crt"}]},
        },
    ]
    mounts = [
        {"name": "realm-import", "mountPath": IMPORT_DIR, "readOnly": True},
        {"name": "database-ca", "mountPath": DATABASE_CA_DIR, "readOnly": True},
    ]
    values: dict[str, Any] = {
        "fullnameOverride": KEYCLOAK_RELEASE,
        # StatefulSet OrderedReady: replica 0 imports the realm before replica 1 starts, which
        # then finds it and skips the import; there is no first-boot race.
        "replicas": 2 if replicated else 1,
        "args": ["start", "--import-realm"],
        # Keycloak's own default; the chart's "/auth" would put the issuer under /auth/realms/...
        "http": {"relativePath": "/"},
        # TLS ends at the Istio gateway; Envoy sets X-Forwarded-For/-Proto, not RFC 7239 Forwarded.
        "proxy": {"mode": "xforwarded"},
        "database": {
            "vendor": "postgres",
            "hostname": DATABASE_SERVICE,
            "port": POSTGRES_PORT,
            "database": DATABASE_NAME,
            "username": DATABASE_OWNER,
            "existingSecret": DATABASE_SECRET,
            "existingSecretKey": "password",
        },
        # dbchecker stays off (chart default): inside the mesh its `nc -z` reaches the local
        # sidecar, which completes every TCP handshake, so it proves nothing. The Cluster's Ready
        # wait (WAIT_FOR_READY) orders Keycloak after the database instead.
        "extraEnv": yaml.safe_dump(env, sort_keys=False),
        "extraVolumes": yaml.safe_dump(volumes, sort_keys=False),
        "extraVolumeMounts": yaml.safe_dump(mounts, sort_keys=False),
        # The image caps the heap at 70% of the limit; upstream suggests >= 750Mi, ~2Gi for prod.
        "resources": _same("1" if replicated else "500m", "2Gi" if replicated else "1Gi"),
        "podAnnotations": {**KEYCLOAK_SCRAPE_ANNOTATIONS, **PLATFORM_SIDECAR.istio_annotations()},
        "podSecurityContext": {
            "fsGroup": 1000,
            "runAsNonRoot": True,
            "seccompProfile": runtime_default_seccomp(),
        },
        # No readOnlyRootFilesystem: `start` re-augments into /opt/keycloak/lib (keycloak#44632).
        "securityContext": restricted_container(runAsUser=1000),
        # Keycloak never calls the Kubernetes API (jdbc-ping discovery goes through the database).
        "serviceAccount": {"automountServiceAccountToken": False},
    }
    if replicated:
        # The chart's default affinity already requires one replica per node.
        values["podDisruptionBudget"] = {"maxUnavailable": 1}
    return values


def keycloak_virtual_service(domain: str) -> Manifest:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": _metadata(KEYCLOAK_RELEASE, NAMESPACES.identity),
        "spec": {
            "hosts": [auth_host(domain)],
            "gateways": [PLATFORM_GATEWAY],
            "http": [
                {
                    "route": [
                        {
                            "destination": {
                                "host": f"{KEYCLOAK_SERVICE}.{NAMESPACES.identity}.svc.cluster.local",
                                "port": {"number": KEYCLOAK_SERVICE_PORT},
                            }
                        }
                    ]
                }
            ],
        },
    }


# --- the realm -----------------------------------------------------------------------------------


def _mapper(name: str, mapper: str, config: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "protocol": "openid-connect",
        "protocolMapper": mapper,
        "consentRequired": False,
        "config": config,
    }


def groups_mapper() -> dict[str, Any]:
    """``groups``: full paths (``/tenants/acme/admins``); short names would be ambiguous across tenants."""
    return _mapper(
        "groups",
        "oidc-group-membership-mapper",
        {
            "claim.name": "groups",
            "full.path": "true",
            "access.token.claim": "true",
            "id.token.claim": "true",
            "userinfo.token.claim": "true",
            "introspection.token.claim": "true",
        },
    )


def realm_roles_mapper() -> dict[str, Any]:
    """``roles``: a flat list of realm roles (the built-in scope nests them under realm_access)."""
    return _mapper(
        "realm-roles",
        "oidc-usermodel-realm-role-mapper",
        {
            "claim.name": "roles",
            "multivalued": "true",
            "jsonType.label": "String",
            "usermodel.realmRoleMapping.rolePrefix": "",
            "access.token.claim": "true",
            "id.token.claim": "true",
            "userinfo.token.claim": "true",
            "introspection.token.claim": "true",
        },
    )


def audience_mapper(client_id: str) -> dict[str, Any]:
    return _mapper(
        f"audience-{client_id}",
        "oidc-audience-mapper",
        {
            "included.client.audience": client_id,
            "access.token.claim": "true",
            "id.token.claim": "false",
            "introspection.token.claim": "true",
        },
    )


def _api_client() -> dict[str, Any]:
    """The self-service API's client: public.

    Its callers are people using ``tenantctl`` (device flow, or authorization code with PKCE on a
    loopback redirect) and, later, a browser page: none can keep a client secret. The API itself
    only verifies tokens against the realm's JWKS and needs no secret either.
    """
    return {
        **_public_code_flow_client(API_CLIENT_ID, "Tenant self-service API"),
        # RFC 8252 loopback redirects for the CLI; Keycloak lets any port match.
        "redirectUris": ["http://127.0.0.1/*"],
        "webOrigins": ["+"],
        "attributes": {
            "pkce.code.challenge.method": "S256",
            "oauth2.device.authorization.grant.enabled": "true",
            "post.logout.redirect.uris": "+",
        },
        "protocolMappers": [groups_mapper(), realm_roles_mapper(), audience_mapper(API_CLIENT_ID)],
    }


def _public_code_flow_client(client_id: str, name: str) -> dict[str, Any]:
    """What every client that cannot keep a secret shares: public, the authorization code flow only
    (no implicit flow, no passwords, no service account); each adds its redirects and PKCE."""
    return {
        "clientId": client_id,
        "name": name,
        "enabled": True,
        "protocol": "openid-connect",
        "publicClient": True,
        "standardFlowEnabled": True,
        "implicitFlowEnabled": False,
        "directAccessGrantsEnabled": False,
        "serviceAccountsEnabled": False,
    }


def portal_url(domain: str) -> str:
    """Where the portal is: the self-service API's own host (the same app serves both, one origin)."""
    return f"https://api.{domain}"


def _portal_client(domain: str) -> dict[str, Any]:
    """The portal's client: public (a browser session cannot keep a secret), authorization code with
    PKCE only, redirecting to the portal's callback alone; its access tokens name ``tenant-api`` in
    ``aud`` and carry groups and roles, so the API accepts them as it accepts its own."""
    base = portal_url(domain)
    return {
        **_public_code_flow_client(PORTAL_CLIENT_ID, "Tenant self-service portal"),
        "rootUrl": base,
        "redirectUris": [f"{base}{PORTAL_CALLBACK_PATH}"],
        "webOrigins": [base],
        "attributes": {"pkce.code.challenge.method": "S256", "post.logout.redirect.uris": f"{base}/"},
        "protocolMappers": [groups_mapper(), realm_roles_mapper(), audience_mapper(API_CLIENT_ID)],
    }


def _argocd_client(domain: str) -> dict[str, Any]:
    """Argo CD's SSO client: confidential; the secret reaches Keycloak only through its environment.

    The groups mapper sits on the client rather than in a ``groups`` client scope: declaring any
    ``clientScopes`` in an import replaces all of Keycloak's built-in scopes. Argo CD must therefore
    not request a ``groups`` scope (its default requestedScopes includes it).
    """
    base = f"https://argocd.{domain}"
    return {
        "clientId": ARGOCD_CLIENT_ID,
        "name": "Argo CD",
        "enabled": True,
        "protocol": "openid-connect",
        "publicClient": False,
        "clientAuthenticatorType": "client-secret",
        "secret": "${" + ARGOCD_SECRET_ENV + "}",
        "standardFlowEnabled": True,
        "implicitFlowEnabled": False,
        "directAccessGrantsEnabled": False,
        "serviceAccountsEnabled": False,
        "rootUrl": base,
        # Besides its public host: through a port-forward (the public host is closed outside
        # adminSourceCidrs) (see tenancy.builders.contract).
        "redirectUris": [f"{base}/auth/callback", f"{ARGOCD_PORT_FORWARD_URL}/auth/callback"],
        "webOrigins": [base, ARGOCD_PORT_FORWARD_URL],
        "attributes": {"post.logout.redirect.uris": f"{base}/*##{ARGOCD_PORT_FORWARD_URL}/*"},
        "protocolMappers": [groups_mapper()],
    }


def _argocd_cli_client() -> dict[str, Any]:
    """``argocd login --sso``: a public client (the CLI holds no secret), authorization code with PKCE
    (S256, required) only, returning to the CLI's listener on localhost; its ID tokens carry the same
    ``groups`` claim as the web client's, which Argo CD's RBAC reads."""
    return {
        **_public_code_flow_client(ARGOCD_CLI_CLIENT_ID, "Argo CD CLI"),
        "redirectUris": [ARGOCD_CLI_CALLBACK],
        "webOrigins": [],
        # argocd login --sso asks for offline_access whenever the realm offers it (Argo CD v3.4's
        # apiclient): a laptop's refresh token would otherwise keep an admin session for the realm's
        # 30-day offline idle time, past the user's SSO logout. A working day's idle time instead.
        "attributes": {
            "pkce.code.challenge.method": "S256",
            "client.offline.session.idle.timeout": str(ARGOCD_CLI_OFFLINE_IDLE_SECONDS),
            # And a day in all, however often it is used (without it Keycloak sets no maximum).
            "client.offline.session.max.lifespan": str(ARGOCD_CLI_OFFLINE_MAX_SECONDS),
        },
        "protocolMappers": [groups_mapper()],
    }


def _provisioner_client() -> dict[str, Any]:
    """The client tenant stacks log in with to declare their groups: confidential, no login flows.

    Only the client-credentials grant (its service account) is on; what that account may do is
    ``PROVISIONER_ROLES``, granted on the service-account user in ``realm_import``.
    """
    return {
        "clientId": PROVISIONER_CLIENT_ID,
        "name": "Tenant stacks (group provisioning)",
        "enabled": True,
        "protocol": "openid-connect",
        "publicClient": False,
        "clientAuthenticatorType": "client-secret",
        "secret": "${" + PROVISIONER_SECRET_ENV + "}",
        "standardFlowEnabled": False,
        "implicitFlowEnabled": False,
        "directAccessGrantsEnabled": False,
        "serviceAccountsEnabled": True,
    }


def _provisioner_service_account() -> dict[str, Any]:
    """The provisioner's service-account user, as realm exports write it, with its admin roles."""
    return {
        "username": f"service-account-{PROVISIONER_CLIENT_ID}",
        "enabled": True,
        "serviceAccountClientId": PROVISIONER_CLIENT_ID,
        "clientRoles": {"realm-management": list(PROVISIONER_ROLES)},
    }


def realm_import(domain: str) -> dict[str, Any]:
    """The ``platform`` realm as Keycloak imports it at first start (``--import-realm``).

    The import runs once: when the realm exists, Keycloak skips the file, so later changes here
    reach a running realm only through the admin API (a realm imported before the
    ``tenant-provisioner`` client existed needs that client and its service-account roles added
    once, by hand or with ``kcadm.sh``). Per-tenant groups are not part of it: the import creates
    the parent ``/tenants``; each tenant stack declares its own subtree (``tenant_groups``) as the
    ``tenant-provisioner`` client.
    """
    roles = [
        (PLATFORM_ADMIN, "Operates the platform: every tenant, every platform service."),
        (TENANT_ADMIN, "Manages the tenants whose /tenants/<tenant>/admins group the user is in."),
        (TENANT_VIEWER, "Reads the tenants whose /tenants/<tenant>/viewers group the user is in."),
    ]
    return {
        "realm": REALM,
        "enabled": True,
        "displayName": "Data platform",
        "sslRequired": "external",
        "registrationAllowed": False,
        "loginWithEmailAllowed": True,
        "duplicateEmailsAllowed": False,
        "resetPasswordAllowed": False,
        "bruteForceProtected": True,
        # An audit trail of logins and admin changes, kept 30 days.
        "eventsEnabled": True,
        "eventsExpiration": 30 * 24 * 3600,
        "adminEventsEnabled": True,
        "adminEventsDetailsEnabled": False,
        "roles": {"realm": [{"name": name, "description": text} for name, text in roles]},
        "groups": [
            {
                "name": PLATFORM_ADMINS_GROUP,
                "path": f"/{PLATFORM_ADMINS_GROUP}",
                "realmRoles": [PLATFORM_ADMIN],
            },
            {"name": TENANTS_GROUP, "path": f"/{TENANTS_GROUP}", "subGroups": []},
        ],
        "clients": [
            _api_client(),
            _portal_client(domain),
            _argocd_client(domain),
            _argocd_cli_client(),
            _provisioner_client(),
        ],
        "users": [_provisioner_service_account()],
    }


@dataclass(frozen=True)
class TenantGroup:
    """One Keycloak group a tenant stack declares, and the realm roles mapped to it."""

    path: str
    realm_roles: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]

    @property
    def parent(self) -> str:
        return self.path.rsplit("/", 1)[0]


def tenant_root_group(tenant: Tenant) -> str:
    return f"/{TENANTS_GROUP}/{tenant.name}"


def tenant_groups(tenant: Tenant) -> list[TenantGroup]:
    """The tenant's own subtree of ``/tenants``, parents before children.

    Always ``/tenants/<tenant>`` with ``admins`` (tenant-admin) and ``viewers`` (tenant-viewer). A
    group the spec names under ``/tenants/<tenant>/`` (``groups.admins`` / ``groups.viewers``) is
    declared too, with any missing parent between, and gets tenant-admin or tenant-viewer by the
    list it is in. A group outside that subtree is bound as named but not declared: it belongs to
    someone else (a team group, another tenant's subtree) and must exist already.
    """
    root = tenant_root_group(tenant)
    roles: dict[str, set[str]] = {root: set()}
    for sub, role in TENANT_SUBGROUP_ROLES.items():
        roles[f"{root}/{sub}"] = {role}
    for role, paths in ((TENANT_ADMIN, tenant.admin_groups), (TENANT_VIEWER, tenant.viewer_groups)):
        for path in paths:
            if path != root and not path.startswith(f"{root}/"):
                continue
            roles.setdefault(path, set()).add(role)
            parent = path.rsplit("/", 1)[0]
            while parent != root and parent.startswith(f"{root}/"):
                roles.setdefault(parent, set())
                parent = parent.rsplit("/", 1)[0]
    # Shallower paths first, then by path: every parent comes before its children.
    ordered = sorted(roles, key=lambda path: (path.count("/"), path))
    return [TenantGroup(path, tuple(sorted(roles[path]))) for path in ordered]
