"""The platform's own self-service service: API and worker Deployments in ``tenancy-system``.

One image (``Containerfile``) runs both: ``tenantctl serve --workers 0`` answers HTTP behind the
gateway, ``tenantctl serve --workers N`` runs operations on tenant stacks. They share the platform's
Redis Sentinel (queue, rate limits, API keys, idempotency, write locks) and the tenants git remote;
workers keep tenant stacks' state in object storage and encrypt their secrets with Vault transit.

Only workers talk to the Kubernetes API (tenant stacks), so only their ServiceAccount has rights, and
few of them cluster-wide (``WORKER_RULES``; never cluster-admin): their rights over Secrets, workloads
and policies are ``WORKER_TENANT_RULES``, granted in each tenant namespace by that tenant stack's
RoleBinding, and AppProjects in argocd. The API's ServiceAccount has none and mounts no token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from tenancy import versions
from tenancy.builders.contract import (
    INGRESS_GATEWAY_LABELS,
    NAMESPACES,
    REALM,
    SELF_SERVICE_POD_LABELS,
    SELF_SERVICE_WORKER_ACCOUNT,
    SELF_SERVICE_WORKER_LABELS,
    SELF_SERVICE_WORKER_TENANT_ROLE,
    issuer_url,
)
from tenancy.builders.gitops import IN_CLUSTER
from tenancy.builders.identity import (
    API_CLIENT_ID,
    KEYCLOAK_HTTP_PORT,
    KEYCLOAK_INTERNAL_HOST,
    KEYCLOAK_INTERNAL_URL,
    KEYCLOAK_POD_LABELS,
    portal_url,
)
from tenancy.builders.istio import GATEWAY_SERVICE_ACCOUNT, principal
from tenancy.builders.namespace import POD_SECURITY_ENFORCE, POD_SECURITY_LEVEL, Manifest
from tenancy.builders.network import QDRANT_HTTP_PORT, QDRANT_POD_LABELS
from tenancy.builders.platform_namespace import (
    PLATFORM_LABELS,
    Reach,
    allow_egress,
    allow_egress_to_api_server,
    allow_egress_to_cidrs,
    allow_egress_to_reach,
    allow_ingress,
    network_policy,
    object_store_reach,
    sidecar_egress_hosts,
    vault_service_reach,
)
from tenancy.builders.rbac import TENANT_ROLES, WORKER_BINDING, tenant_role_rules
from tenancy.builders.redis import NAMESPACE as REDIS_NAMESPACE
from tenancy.builders.redis import POD_LABELS as REDIS_POD_LABELS
from tenancy.builders.redis import REDIS_PORT, SENTINEL_PORT, sentinel_hosts
from tenancy.builders.security import restricted_container, runtime_default_seccomp
from tenancy.builders.vcluster import CHART_ROLE as VCLUSTER_CHART_ROLE
from tenancy.builders.vcluster import CHART_ROLE_RULES as VCLUSTER_CHART_ROLE_RULES
from tenancy.spec.platform import PlatformConfig
from tenancy.spec.tenant import LABEL_ENVIRONMENT, LABEL_PREFIX, LABEL_TENANT, NAMESPACE_PREFIX

Role = Literal["api", "worker"]

NAMESPACE = NAMESPACES.self_service
API_NAME = "selfservice-api"
WORKER_NAME = SELF_SERVICE_WORKER_ACCOUNT  # tenant namespaces admit this identity to their Qdrant
NAMES: dict[Role, str] = {"api": API_NAME, "worker": WORKER_NAME}
HOST_PREFIX = "api"
HTTP_PORT = 8080  # the container's port and the Service's
ISTIO_METRICS_PORT = 15020  # the sidecar's merged Prometheus endpoint (our /metrics is merged into it)
ENV_SECRET = "selfservice-credentials"  # Redis password, git remote, object storage keys, Vault token

# What the image provides (Containerfile; tests/platform/test_selfservice.py checks both agree).
IMAGE_UID = 10001
PROJECT_DIR = "/app"  # Pulumi.yaml, __main__.py, the program's packages
STATE_DIR = "/var/lib/tenancy"  # writable volume: tenants checkout, scratch specs, file backend (dev)
PULUMI_HOME = "/opt/pulumi"  # the CLI's plugins, baked into the image (read-only)
# The engine's Pulumi work directory (TENANCY_WORKSPACE_DIR): a view of the read-only project where the CLI
# writes tenant stacks' settings files, Pulumi.<env>.<tenant>.yaml (tenancy.automation.project_view). A
# pod's own emptyDir, not the state volume: the file is derived (the engine sets a stack's whole config on
# every operation, and PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER takes the secrets provider from the
# stack's state when the file is gone), and worker replicas never write each other's.
WORKSPACE_DIR = "/var/lib/tenancy-workspace"
WRITABLE_PATHS = {
    "state": STATE_DIR,
    "tmp": "/tmp",
    "pulumi-workspaces": f"{PULUMI_HOME}/workspaces",
    "workspace": WORKSPACE_DIR,
}
# Without a state bucket, tenant stacks' state is a Pulumi file backend on the workers' volume (this
# claim, at STATE_DIR). The API mounts the same claim read-only here to reveal secret outputs; every pod
# mounting it carries STATE_VOLUME_LABELS and must run on the node that has it attached (README, "The
# self-service service on the platform").
STATE_CLAIM = f"{WORKER_NAME}-state"
FILE_BACKEND_DIR = "pulumi-state"  # inside the claim
WORKER_STATE_MOUNT = "/var/lib/tenancy-workers"
STATE_VOLUME_LABELS = {"tenancy.platform/state-volume": STATE_CLAIM}
HOSTNAME_TOPOLOGY = "kubernetes.io/hostname"
COMMAND = ["tenantctl", "serve"]

# Graceful shutdown: the API only finishes requests; a worker lets a running update end (an update
# cut short must be recovered before the stack's next one). The pod gets the grace plus time to drain.
API_SHUTDOWN_GRACE_SECONDS = 20
WORKER_SHUTDOWN_GRACE_SECONDS = {"dev": 120, "prod": 600}
DRAIN_SECONDS = 30
PRESTOP_SLEEP_SECONDS = 5  # the gateway drops the endpoint before uvicorn stops accepting

STATE_PORTS_FALLBACK = 443


def image_pod_security_context() -> dict[str, Any]:
    """The pod security context every pod running the self-service image gets (its API, workers and
    the tenants' backup jobs): the image's non-root user and group, RuntimeDefault seccomp."""
    return {
        "runAsNonRoot": True,
        "runAsUser": IMAGE_UID,
        "runAsGroup": IMAGE_UID,
        "fsGroup": IMAGE_UID,
        "seccompProfile": runtime_default_seccomp(),
    }


def labels(role: Role) -> dict[str, str]:
    if role == "worker":
        return dict(SELF_SERVICE_WORKER_LABELS)  # what tenant namespaces' policies name
    return {"app.kubernetes.io/name": "selfservice", "app.kubernetes.io/component": role}


def host(domain: str) -> str:
    return f"{HOST_PREFIX}.{domain}"


def _metadata(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE, "labels": dict(PLATFORM_LABELS), **extra}


# --- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceImage:
    """The image the platform runs its own code from: the API, the workers and tenants' backup jobs.

    ``platform:selfService.image`` (by digest, set by the deploy workflow to the image it built) is the
    one source. Until it is set, workloads show the pinned base image (tenancy.versions) and do not run:
    the Deployments have no replicas and the backup CronJobs are suspended.
    """

    reference: str
    built: bool


def service_image(config: PlatformConfig) -> ServiceImage:
    image = config.self_service.image
    return ServiceImage(image or versions.SELF_SERVICE_BASE_IMAGE, built=image is not None)


def shutdown_grace_seconds(config: PlatformConfig, role: Role) -> int:
    return API_SHUTDOWN_GRACE_SECONDS if role == "api" else WORKER_SHUTDOWN_GRACE_SECONDS[config.environment]


def uses_file_backend(config: PlatformConfig) -> bool:
    """No state bucket: tenant stacks' state is a file backend on the workers' volume (dev)."""
    return not (config.object_storage and config.self_service.state_bucket)


def state_backend_url(config: PlatformConfig, role: Role = "worker") -> str:
    """Where tenant stacks keep their state: the bucket in object storage, else a file backend on the
    workers' volume, which the API reads through its read-only mount of the same claim."""
    storage, bucket = config.object_storage, config.self_service.state_bucket
    if storage is None or bucket is None:
        root = STATE_DIR if role == "worker" else WORKER_STATE_MOUNT
        return f"file://{root}/{FILE_BACKEND_DIR}"
    query = f"endpoint={storage.host}&region={storage.region}"
    if storage.force_path_style:
        query += "&s3ForcePathStyle=true"
    if storage.plain_http:
        query += "&disableSSL=true"
    return f"s3://{bucket}?{query}"


def secrets_provider(config: PlatformConfig) -> str:
    """Vault transit when Vault is on (prod); else a passphrase from the credentials Secret."""
    if config.vault.enabled:
        return f"hashivault://{config.self_service.transit_key}"
    return "passphrase"


def _secret_env(name: str, key: str, *, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": ENV_SECRET, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


# Keys of the credentials Secret; the component fills them from config secrets and generated values.
SECRET_KEYS = {
    "redis_password": "redis-password",
    "git_remote": "git-remote",
    "access_key_id": "object-storage-access-key-id",
    "secret_access_key": "object-storage-secret-access-key",
    "vault_token": "vault-token",
    "api_vault_token": "api-vault-token",  # only with platform:selfServiceApiVaultToken
    "passphrase": "pulumi-passphrase",
}


def backup_store_environment(config: PlatformConfig) -> list[dict[str, Any]]:
    """Where tenants' Qdrant backups are (``TENANCY_SERVICE_BACKUP_*``, read by
    ``tenancy.automation.data_operations.BackupStore``): the platform's backup bucket, each tenant under
    ``tenants/<env>/<tenant>/qdrant/`` (and what deleted tenants left under ``…/retired/``). Both roles:
    the API lists backups, checks a restore's backup and records hand-overs, the workers take, restore,
    set aside and sweep them. Only names and the endpoint here; the credentials are the
    object-storage keys of the credentials Secret (secretKeyRef), never plain values."""
    storage = config.object_storage
    if storage is None:
        return []
    endpoint = f"{'http' if storage.plain_http else 'https'}://{storage.host}"
    env = [
        {"name": "TENANCY_SERVICE_BACKUP_BUCKET", "value": storage.backup_bucket},
        {"name": "TENANCY_SERVICE_BACKUP_S3_ENDPOINT", "value": endpoint},
        {"name": "TENANCY_SERVICE_BACKUP_S3_REGION", "value": storage.region},
        {"name": "TENANCY_SERVICE_BACKUP_S3_PATH_STYLE", "value": str(storage.force_path_style).lower()},
        _secret_env("AWS_ACCESS_KEY_ID", SECRET_KEYS["access_key_id"]),
        _secret_env("AWS_SECRET_ACCESS_KEY", SECRET_KEYS["secret_access_key"]),
    ]
    return env


def secrets_provider_environment(
    config: PlatformConfig, role: Role, *, api_vault_token: bool = False
) -> list[dict[str, Any]]:
    """What the engine's secrets provider (``TENANCY_SECRETS_PROVIDER``) needs in each role: the workers
    encrypt and decrypt tenant stacks' secrets, the API decrypts their outputs when a tenant-admin reveals
    the Qdrant API key or the vCluster kubeconfig (``routes/secrets.py``). Without it the engine refuses
    before reading a stack (``PulumiEngine._check_secrets_provider``).

    Prod (Vault transit): ``VAULT_SERVER_URL`` and ``VAULT_SERVER_TOKEN`` for both roles. The API's token is
    ``platform:selfServiceApiVaultToken`` when the operator issued one (``api_vault_token``: decrypt with the
    transit key, nothing else), else the workers' ``platform:selfServiceVaultToken``; the platform program
    cannot mint a lasting one itself (a token it issued is a child of its own short-lived
    ``platform:vaultToken`` and dies with it, an orphan needs sudo, and nothing in the API renews it), see
    README "The self-service service on the platform". Only the workers get ``VAULT_TOKEN``: it is the
    tenant programs' ``platform:vaultToken``, which the API never runs. Dev: the generated passphrase."""
    if config.vault.enabled:
        assert config.vault.address is not None
        env = [
            {"name": "VAULT_SERVER_URL", "value": config.vault.address},
            _secret_env(
                "VAULT_SERVER_TOKEN",
                SECRET_KEYS["api_vault_token" if role == "api" and api_vault_token else "vault_token"],
            ),
        ]
        if role == "worker":
            # Prod tenant programs require the secret config platform:vaultToken, which the engine
            # takes from VAULT_TOKEN (tenancy.automation.stack_config): without it every tenant
            # update the workers run would stop with config_missing.
            env.append(_secret_env("VAULT_TOKEN", SECRET_KEYS["vault_token"]))
        return env
    return [_secret_env("PULUMI_CONFIG_PASSPHRASE", SECRET_KEYS["passphrase"])]


def environment(config: PlatformConfig, role: Role, *, api_vault_token: bool = False) -> list[dict[str, Any]]:
    """The service's settings (see README, "The self-service service on the platform"). ``api_vault_token``:
    the credentials Secret holds the API's own Vault token (``secrets_provider_environment``)."""
    domain = config.domain
    issuer = issuer_url(domain)
    plain = {
        "TENANCY_SERVICE_HOST": "0.0.0.0",  # the pod's address; the mesh and the policies guard it
        "TENANCY_SERVICE_PORT": str(HTTP_PORT),
        "TENANCY_SERVICE_STATE_DIR": STATE_DIR,
        "TENANCY_SERVICE_PROJECT_DIR": PROJECT_DIR,
        # This platform's tenants only: its workers deploy with this cluster's credentials and this
        # environment's state, so another environment's tenant (its file is in the same repository)
        # must never be written, reconciled or run here.
        "TENANCY_SERVICE_ENVIRONMENTS": config.environment,
        "TENANCY_SERVICE_WORKERS": "0" if role == "api" else str(config.self_service.workers),
        "TENANCY_SERVICE_SHUTDOWN_GRACE_SECONDS": str(shutdown_grace_seconds(config, role)),
        "TENANCY_SERVICE_AUDIT_LOG": "-",  # JSON lines on stdout: Alloy ships them to Loki
        "TENANCY_SERVICE_ISSUER": issuer,
        # The issuer stays the public URL (the tokens' iss); the keys are read from Keycloak in the cluster.
        "TENANCY_SERVICE_JWKS_URL": jwks_url(),
        "TENANCY_SERVICE_AUDIENCE": API_CLIENT_ID,
        "TENANCY_SERVICE_PORTAL_PUBLIC_URL": portal_url(domain),  # the redirect URI the realm allows
        # The browser signs in at the public URL; the code exchange stays in the cluster.
        "TENANCY_SERVICE_PORTAL_TOKEN_URL": token_url(),
        # Only the gateway's forwarded client addresses are believed (engineer "auth"'s setting).
        "TENANCY_SERVICE_TRUSTED_PROXIES": ",".join(trusted_proxies(config)),
        "TENANCY_SERVICE_BACKEND": "redis",
        "TENANCY_SERVICE_REDIS_SENTINELS": ",".join(sentinel_hosts(config)),
        "TENANCY_SERVICE_PULUMI_PREVIEW": "true",  # the API queues previews; workers run them
        "TENANCY_PROJECT_DIR": PROJECT_DIR,
        "TENANCY_WORKSPACE_DIR": WORKSPACE_DIR,  # the project is read-only: the CLI writes here
        "TENANCY_STATE_DIR": STATE_DIR,
        "TENANCY_MAX_PARALLEL": str(config.self_service.workers),
        "TENANCY_BACKEND_URL": state_backend_url(config, role),
        "TENANCY_SECRETS_PROVIDER": secrets_provider(config),
        "PULUMI_HOME": PULUMI_HOME,
        "PULUMI_SKIP_UPDATE_CHECK": "true",  # else the CLI writes $PULUMI_HOME/.cachedVersionInfo
        # The image bakes every provider in; one missing fails at once ("plugin <name> <version> not
        # installed") instead of a download into the read-only $PULUMI_HOME/plugins.
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        # The Python language host runs `python -m pip list` on every preview and update (the program's
        # packages name its plugins); unless told not to, pip first asks PyPI for a newer pip: a call out
        # of the platform for nothing where gitHosts leaves port 443 open, and up to 5 s and a warning per
        # operation where the egress policies or the mesh stop it.
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PULUMI_DIY_BACKEND_GZIP": "true",
    }
    if role == "worker":
        # Tenant stacks run here reach Keycloak in the cluster, not through the gateway (the program's
        # platform:keycloakUrl, tenancy.stacks.tenant); a stack run by hand uses the public URL.
        plain["TENANCY_STACK_CONFIG"] = json.dumps(tenant_stack_config())
    env: list[dict[str, Any]] = [{"name": name, "value": value} for name, value in plain.items()]
    env += [
        _secret_env("TENANCY_SERVICE_REDIS_PASSWORD", SECRET_KEYS["redis_password"]),
        # With the credential in it (https://<user>:<token>@host/...); absent: a local repository only.
        _secret_env("TENANCY_SERVICE_GIT_REMOTE", SECRET_KEYS["git_remote"], optional=True),
    ]
    env += backup_store_environment(config)  # with the object-store credentials, for both roles
    if role == "worker" and config.object_storage is not None and config.self_service.state_bucket:
        env.append({"name": "AWS_REGION", "value": config.object_storage.region})
    env += secrets_provider_environment(config, role, api_vault_token=api_vault_token)
    return env


KEYCLOAK_URL_CONFIG = "platform:keycloakUrl"
# Helm repositories (https): what tenant stacks' releases fetch their pinned charts from.
CHART_REPOSITORY_PORT = 443


def jwks_url() -> str:
    """The realm's signing keys, read from Keycloak's Service in iam (through the mesh)."""
    return f"{KEYCLOAK_INTERNAL_URL}/realms/{REALM}/protocol/openid-connect/certs"


def token_url() -> str:
    """The realm's token endpoint at Keycloak's Service in iam, where the API exchanges the portal's
    authorization code. The portal's default (the issuer's public URL) would leave through the gateway's
    load balancer, which the API's egress policies do not reach once gitHosts is narrowed; the tokens'
    ``iss`` is KC_HOSTNAME's either way."""
    return f"{KEYCLOAK_INTERNAL_URL}/realms/{REALM}/protocol/openid-connect/token"


def tenant_stack_config() -> dict[str, str]:
    """``TENANCY_STACK_CONFIG`` of the workers: extra config on every tenant stack they run."""
    return {KEYCLOAK_URL_CONFIG: KEYCLOAK_INTERNAL_URL}


# Behind its sidecar the app sees every connection coming from the sidecar's inbound passthrough
# address (127.0.0.6, ::6 for IPv6), never the gateway pod's. The AuthorizationPolicy admits only the
# gateway's identity on that path, so these addresses stand for "the gateway": its X-Forwarded-For (the
# client the gateway saw) is believed, anyone else's is not.
SIDECAR_INBOUND_ADDRESSES = ("127.0.0.6/32", "::6/128")


def trusted_proxies(config: PlatformConfig) -> list[str]:
    """``TENANCY_SERVICE_TRUSTED_PROXIES``: the gateway, as the app sees it through its sidecar."""
    return list(SIDECAR_INBOUND_ADDRESSES)


# --- workloads -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizing:
    replicas: int
    cpu: str
    memory: str
    cpu_limit: str
    memory_limit: str


def sizing(config: PlatformConfig, role: Role) -> Sizing:
    """Small in dev; in prod two API replicas at least (HPA up to 6) and three workers. A single worker
    replica when tenant state is a file backend on its volume."""
    prod = config.high_availability
    if role == "api":
        return Sizing(2 if prod else 1, "100m", "256Mi", "1", "512Mi")
    shared_state = not uses_file_backend(config)
    # Each running update is a Pulumi CLI plus the program plus providers: about 1 GiB at its peak.
    workers = config.self_service.workers
    return Sizing(
        3 if prod and shared_state else 1,
        "500m",
        f"{max(1, workers)}Gi",
        "2",
        f"{max(2, workers * 2)}Gi",
    )


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _volumes(config: PlatformConfig, role: Role) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = []
    file_backend = uses_file_backend(config)
    for name in WRITABLE_PATHS:
        if name == "state" and role == "worker" and file_backend:
            volumes.append({"name": name, "persistentVolumeClaim": {"claimName": STATE_CLAIM}})
        else:
            size = {"state": "2Gi", "workspace": "64Mi"}.get(name, "512Mi")
            volumes.append({"name": name, "emptyDir": {"sizeLimit": size}})
    if role == "api" and file_backend:
        # Read-only at the volume too: nothing in the API's pods can write the workers' state, and the
        # kubelet leaves its ownership alone (no fsGroup change on a read-only volume).
        volumes.append(
            {"name": "worker-state", "persistentVolumeClaim": {"claimName": STATE_CLAIM, "readOnly": True}}
        )
    return volumes


def _volume_mounts(config: PlatformConfig, role: Role) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"name": name, "mountPath": path} for name, path in WRITABLE_PATHS.items()
    ]
    if role == "api" and uses_file_backend(config):
        mounts.append({"name": "worker-state", "mountPath": WORKER_STATE_MOUNT, "readOnly": True})
    return mounts


def state_volume_affinity() -> dict[str, Any]:
    """Every pod that mounts the workers' ReadWriteOnce claim (the worker, the API's replicas) on the
    node of the others: ReadWriteOnce is per node, and a pod scheduled elsewhere would wait on the
    attachment for good (the pods already holding it never move on their own). The term matches the
    pod itself, so the first of them schedules anywhere (where the volume can be) and the rest follow,
    whichever rolls out first: the API after the worker, or a recreated worker to the API's node."""
    return {
        "podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": dict(STATE_VOLUME_LABELS)},
                    "topologyKey": HOSTNAME_TOPOLOGY,
                }
            ]
        }
    }


def _spread(role: Role) -> list[dict[str, Any]]:
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "DoNotSchedule" if key == "kubernetes.io/hostname" else "ScheduleAnyway",
            "labelSelector": {"matchLabels": labels(role)},
        }
        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
    ]


def deployment_manifest(
    config: PlatformConfig, role: Role, *, image: str, started: bool, api_vault_token: bool = False
) -> Manifest:
    """The API (``--workers 0``) or worker Deployment. ``started`` false: no replicas (no image yet).
    ``api_vault_token``: the API decrypts with its own Vault token (``secrets_provider_environment``)."""
    size = sizing(config, role)
    container: dict[str, Any] = {
        "name": "selfservice",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(COMMAND),
        "args": ["--workers", "0" if role == "api" else str(config.self_service.workers)],
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "env": environment(config, role, api_vault_token=api_vault_token),
        "resources": {
            "requests": {"cpu": size.cpu, "memory": size.memory},
            "limits": {"cpu": size.cpu_limit, "memory": size.memory_limit},
        },
        "securityContext": restricted_container(
            runAsUser=IMAGE_UID, runAsGroup=IMAGE_UID, readOnlyRootFilesystem=True
        ),
        "volumeMounts": _volume_mounts(config, role),
        # Slow first start: the tenants repository is cloned before the app answers.
        "startupProbe": _probe("/healthz", period=5, failures=60),
        "livenessProbe": _probe("/healthz", period=10, failures=3),
        "readinessProbe": _probe("/readyz", period=5, failures=2),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
    }
    pod_labels = {**labels(role), "sidecar.istio.io/inject": "true"}
    file_backend = uses_file_backend(config)
    if file_backend:
        pod_labels.update(STATE_VOLUME_LABELS)
    pod: dict[str, Any] = {
        "serviceAccountName": NAMES[role],
        "automountServiceAccountToken": role == "worker",
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": shutdown_grace_seconds(config, role)
        + PRESTOP_SLEEP_SECONDS
        + DRAIN_SECONDS,
        "securityContext": image_pod_security_context(),
        "containers": [container],
        "volumes": _volumes(config, role),
    }
    if file_backend:
        pod["affinity"] = state_volume_affinity()
    if config.high_availability and not file_backend:
        # With a file backend every replica shares the worker's node: a spread over nodes cannot hold.
        pod["topologySpreadConstraints"] = _spread(role)
    annotations = {
        # Istio merges these into the sidecar's 15020 endpoint, which Alloy scrapes.
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(HTTP_PORT),
        "prometheus.io/path": "/metrics",
        # Let a running update finish before the sidecar stops forwarding its traffic.
        "proxy.istio.io/config": json.dumps(
            {"terminationDrainDuration": f"{shutdown_grace_seconds(config, role) + PRESTOP_SLEEP_SECONDS}s"}
        ),
    }
    strategy: dict[str, Any]
    if role == "worker" and file_backend:
        strategy = {"type": "Recreate"}  # one worker owns the file backend's volume
    elif file_backend:
        # The API's pods must join the worker's node (state_volume_affinity), which may have no room for
        # one more pod: a surge pod would wait there for good and the old one would never go. An old
        # replica makes room first (with one replica, the API is down while its new pod starts).
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    else:
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    spec: dict[str, Any] = {
        "replicas": size.replicas if started else 0,
        "selector": {"matchLabels": labels(role)},
        "strategy": strategy,
        "template": {"metadata": {"labels": pod_labels, "annotations": annotations}, "spec": pod},
    }
    if role == "api" and config.high_availability:
        del spec["replicas"]  # the HPA owns it
        if not started:
            spec["replicas"] = 0
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(NAMES[role], labels={**PLATFORM_LABELS, **labels(role)}),
        "spec": spec,
    }


def state_claim_manifest(config: PlatformConfig) -> Manifest | None:
    """The worker's volume for a file backend (no state bucket); None with object storage."""
    if not uses_file_backend(config):
        return None
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(STATE_CLAIM),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": config.storage_class,
            "resources": {"requests": {"storage": "5Gi"}},
        },
    }


def service_manifest() -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(API_NAME),
        "spec": {
            "selector": labels("api"),
            "ports": [
                {
                    "name": "http",
                    "port": HTTP_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }


def service_account_manifest(role: Role) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(NAMES[role]),
        # The API calls no Kubernetes API: no token in its pods at all.
        "automountServiceAccountToken": role == "worker",
    }


def autoscaler_manifest(config: PlatformConfig) -> Manifest | None:
    if not config.high_availability:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(API_NAME),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": API_NAME},
            "minReplicas": 2,
            "maxReplicas": 6,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                }
            ],
        },
    }


def disruption_budgets(config: PlatformConfig) -> list[Manifest]:
    """One replica of each may be down for a drain; prod only (dev runs single replicas)."""
    if not config.high_availability:
        return []
    return [
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _metadata(NAMES[role]),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(role)}},
        }
        for role in ("api", "worker")
    ]


def virtual_service_manifest(config: PlatformConfig) -> Manifest:
    """``api.<domain>``: the API and the portal (served by the same app, same origin)."""
    from tenancy.builders.contract import GATEWAY_REFERENCE

    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": _metadata(API_NAME),
        "spec": {
            "hosts": [host(config.domain)],
            "gateways": [GATEWAY_REFERENCE],
            "http": [
                {
                    # An update is never run inside a request, but event streams stay open.
                    "timeout": "3600s",
                    "route": [
                        {
                            "destination": {
                                "host": f"{API_NAME}.{NAMESPACE}.svc.cluster.local",
                                "port": {"number": HTTP_PORT},
                            }
                        }
                    ],
                }
            ],
        },
    }


# --- permissions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str
    resource_names: tuple[str, ...] = ()  # empty: every object of these resources

    def manifest(self) -> dict[str, Any]:
        rule: dict[str, Any] = {
            "apiGroups": list(self.api_groups),
            "resources": list(self.resources),
            "verbs": list(self.verbs),
        }
        if self.resource_names:
            rule["resourceNames"] = list(self.resource_names)
        return rule


MANAGE = ("get", "list", "watch", "create", "update", "patch", "delete")
READ = ("get", "list", "watch")
WORKER_TENANT_ROLE = SELF_SERVICE_WORKER_TENANT_ROLE
WORKER_GITOPS_ROLE = f"{WORKER_NAME}-appprojects"

# Tenant namespaces are the platform's when they carry the ownership label (tenancy.platform/tenant,
# naming the tenant whose namespace it is), and only who holds this custom verb may set it: the
# workers, and cluster-admins (who could remove the policy anyway). RBAC takes any verb on any resource
# name; the ownership policy asks the API server's authorizer for it.
OWNERSHIP_LABEL = LABEL_TENANT
OWN_TENANT_NAMESPACES = Rule(
    (LABEL_PREFIX,),
    ("tenantnamespaces",),
    ("own",),
    "to set the label that makes a namespace the platform's (tenancy.platform/tenant), which nobody "
    "else may set or change: the workers act only in namespaces carrying it",
)

# Cluster-wide (ClusterRoleBinding): only what a tenant stack needs before its namespace exists, to
# create that namespace and bind WORKER_TENANT_ROLE in it. RBAC cannot name "namespaces the platform
# owns", so the admission policy below keeps these writes (and every other) to those namespaces.
# README "Worker permissions" lists these with the same reasons.
WORKER_RULES = (
    Rule(("",), ("namespaces",), MANAGE, "each tenant stack creates and deletes its namespace"),
    Rule(
        ("rbac.authorization.k8s.io",),
        ("rolebindings",),
        ("create",),
        "a tenant stack binds selfservice-worker-tenant in its new namespace, where the workers hold no "
        "right yet (RBAC cannot filter a create by name); written only in the platform's tenant "
        "namespaces and only in the shapes the tenant stacks write (admission)",
    ),
    Rule(
        ("rbac.authorization.k8s.io",),
        ("rolebindings",),
        ("get", "update", "patch"),
        "that binding only, by name: the provider reads it back and updates it (a tenant stack leaves "
        "its deletion to the namespace's)",
        resource_names=(WORKER_BINDING,),
    ),
    Rule(
        ("rbac.authorization.k8s.io",),
        ("clusterroles",),
        ("bind",),
        "to bind that one ClusterRole (and no other) in a tenant namespace",
        resource_names=(WORKER_TENANT_ROLE,),
    ),
    OWN_TENANT_NAMESPACES,
)

# The Roles the workers may bind in a tenant namespace: the tenant's own (its Keycloak groups) and the
# vCluster chart's (its control plane's ServiceAccount).
BINDABLE_ROLES = (*TENANT_ROLES, VCLUSTER_CHART_ROLE)

# In tenant namespaces only: ClusterRole WORKER_TENANT_ROLE, bound by each tenant stack's RoleBinding
# (tenancy.builders.rbac.worker_role_binding_manifest). What tenant stacks declare (components/tenant),
# what the Qdrant and vCluster charts render (Helm keeps each release's state in Secrets there), what
# Helm and the provider read to wait for readiness, and the worker's own kubectl calls (scaling).
WORKER_TENANT_RULES = (
    Rule(
        ("",),
        (
            "resourcequotas",
            "limitranges",
            "secrets",
            "configmaps",
            "services",
            "serviceaccounts",
            "persistentvolumeclaims",
        ),
        MANAGE,
        "the tenant's quota and limits, the Qdrant keys, the vCluster kubeconfig it reads, Helm's release "
        "records, and what the Qdrant and vCluster charts create",
    ),
    Rule(
        ("",), ("pods", "pods/log", "events", "endpoints"), READ, "Helm and kubectl wait for pods to be ready"
    ),
    Rule(("apps",), ("statefulsets", "deployments"), MANAGE, "Qdrant and vCluster workloads"),
    Rule(("apps",), ("replicasets", "controllerrevisions"), READ, "readiness of those workloads"),
    Rule(("policy",), ("poddisruptionbudgets",), MANAGE, "Qdrant's PDB when replicated"),
    Rule(("batch",), ("cronjobs",), MANAGE, "the tenant's scheduled Qdrant backup"),
    Rule(("networking.k8s.io",), ("networkpolicies",), MANAGE, "the tenant's default-deny and allows"),
    Rule(
        ("rbac.authorization.k8s.io",),
        ("roles",),
        (*MANAGE, "escalate"),
        "roles for the tenant's groups and the vCluster's; escalate because those grant verbs (exec, "
        "port-forward) the workers do not hold, and only what those roles grant (admission)",
    ),
    Rule(
        ("rbac.authorization.k8s.io",),
        ("roles",),
        ("bind",),
        "to bind those roles, by name, and no other",
        resource_names=BINDABLE_ROLES,
    ),
    Rule(
        ("rbac.authorization.k8s.io",),
        ("rolebindings",),
        MANAGE,
        "the bindings of the tenant's groups and of the vCluster's ServiceAccount, only in the shapes the "
        "tenant stacks write (admission)",
    ),
    Rule(
        ("networking.istio.io",),
        ("virtualservices", "destinationrules", "sidecars"),
        MANAGE,
        "the tenant's routes through the gateway, their connection limits and its sidecar scope",
    ),
    Rule(("security.istio.io",), ("authorizationpolicies",), MANAGE, "the tenant's mesh policies"),
)

# In argocd only (a Role there, bound by the ArgoCD component): the tenants' AppProjects.
WORKER_GITOPS_RULES = (
    Rule(("argoproj.io",), ("appprojects",), MANAGE, "the tenant's Argo CD project (in argocd)"),
)


def _role(kind: str, name: str, rules: tuple[Rule, ...], namespace: str | None = None) -> Manifest:
    metadata: dict[str, Any] = {"name": name, "labels": dict(PLATFORM_LABELS)}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": metadata,
        "rules": [rule.manifest() for rule in rules],
    }


def worker_cluster_role() -> Manifest:
    return _role("ClusterRole", WORKER_NAME, WORKER_RULES)


def worker_tenant_cluster_role() -> Manifest:
    """Bound by no ClusterRoleBinding: only tenant stacks' RoleBindings in their namespaces grant it."""
    return _role("ClusterRole", WORKER_TENANT_ROLE, WORKER_TENANT_RULES)


def worker_gitops_role(argocd_namespace: str) -> Manifest:
    return _role("Role", WORKER_GITOPS_ROLE, WORKER_GITOPS_RULES, namespace=argocd_namespace)


def _worker_subjects() -> list[dict[str, Any]]:
    return [{"kind": "ServiceAccount", "name": WORKER_NAME, "namespace": NAMESPACE}]


def worker_cluster_role_binding() -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": WORKER_NAME, "labels": dict(PLATFORM_LABELS)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": WORKER_NAME},
        "subjects": _worker_subjects(),
    }


def worker_gitops_role_binding(argocd_namespace: str) -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": WORKER_NAME, "namespace": argocd_namespace, "labels": dict(PLATFORM_LABELS)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": WORKER_GITOPS_ROLE},
        "subjects": _worker_subjects(),
    }


WORKER_USER = f"system:serviceaccount:{NAMESPACE}:{WORKER_NAME}"
ADMISSION_POLICY = "selfservice-worker-tenant-namespaces"
OWNERSHIP_POLICY = "tenant-namespace-ownership"


def _owned(namespace: str, name: str) -> str:
    """CEL: the Namespace ``namespace`` (namespaceObject, object or oldObject) is the platform's tenant
    namespace called ``name``: it carries the ownership label, naming the tenant it is the namespace of."""
    labels = f"{namespace}.metadata.labels"
    return (
        f"(has({labels}) && '{OWNERSHIP_LABEL}' in {labels}"
        f" && {name} == '{NAMESPACE_PREFIX}' + {labels}['{OWNERSHIP_LABEL}'])"
    )


def grantable_rules() -> dict[str, list[str]]:
    """``group/resource`` to verbs: every right a Role the tenant stacks write grants (the tenant's
    roles and the vCluster chart's), so the most the workers' ``escalate`` can put in a Role."""
    grantable: dict[str, set[str]] = {}
    rules = [rule for role in tenant_role_rules().values() for rule in role]
    for rule in (*rules, *VCLUSTER_CHART_ROLE_RULES):
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grantable.setdefault(f"{group}/{resource}", set()).update(rule["verbs"])
    return {key: sorted(verbs) for key, verbs in sorted(grantable.items())}


def worker_admission_policy(*, group_prefix: str) -> Manifest:
    """Keep the workers' writes to the platform's tenant namespaces (and tenant AppProjects in argocd),
    and their Roles and RoleBindings there to what tenant stacks write.

    Tenant namespaces only exist once their stack creates them, so creating a namespace and the
    RoleBinding that grants ``WORKER_TENANT_ROLE`` in it is bound cluster-wide; this policy makes every
    create, update and delete the workers send outside a namespace the platform owns (``tenant-<name>``
    labelled ``tenancy.platform/tenant=<name>``, a label only they and cluster-admins may set: the
    ownership policy) fail at admission, so they cannot bind that role (and so read Secrets) anywhere
    else, not even in a ``tenant-*`` namespace someone else made. A namespace they create, update or
    delete is such a namespace, before and after (they adopt none), and keeps Pod Security
    ``restricted`` enforced: relabelled ``privileged``, the workloads they manage in it could run
    privileged pods, with the node's and so the cluster's rights. ``escalate`` on Roles lets them grant
    what they do not hold: a Role they write grants only what the tenant's and the vCluster chart's
    roles grant, and a RoleBinding binds only the tenant's Keycloak groups (``group_prefix`` + a group
    path) or the namespace's own ServiceAccounts to those roles, or themselves to their tenant role and
    nothing else. An AppProject they write keeps its tenant's namespace as its only destination and no
    cluster-scoped kind, and they change no other project: Argo CD's controller deploys with every
    right wherever a project lets it.
    """
    managed = [
        rule for rule in (*WORKER_RULES, *WORKER_TENANT_RULES, *WORKER_GITOPS_RULES) if "create" in rule.verbs
    ]
    # Namespaces by name (the next check wants them labelled); everything else the workers write is
    # namespaced, in a namespace that exists (namespaceObject), owned or argocd for AppProjects.
    checks = (
        f"request.resource.resource == 'namespaces' ? request.name.startsWith('{NAMESPACE_PREFIX}')"
        f" : ({_owned('namespaceObject', 'request.namespace')}"
        f" || (request.namespace == '{NAMESPACES.gitops}' && request.resource.resource == 'appprojects'))"
    )
    grantable = json.dumps(grantable_rules(), separators=(",", ":"))
    # The prefix is platform config: a JSON string is a CEL string literal, whatever it holds.
    subject = (
        f"(s.kind == 'Group' && s.name.startsWith({json.dumps(group_prefix + '/')}))"
        " || (s.kind == 'ServiceAccount' && has(s.namespace) && s.namespace == request.namespace)"
    )
    bindable = json.dumps(list(BINDABLE_ROLES))
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": ADMISSION_POLICY, "labels": dict(PLATFORM_LABELS)},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": list(rule.api_groups),
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE", "DELETE"],
                        "resources": list(rule.resources),
                    }
                    for rule in managed
                ]
            },
            "matchConditions": [
                {
                    "name": "only-the-self-service-workers",
                    "expression": f"request.userInfo.username == '{WORKER_USER}'",
                }
            ],
            "validations": [
                {
                    "expression": checks,
                    "message": (
                        f"the self-service workers change only the platform's tenant namespaces "
                        f"({NAMESPACE_PREFIX}<name> labelled {OWNERSHIP_LABEL}=<name>), what is in them, "
                        f"and tenant AppProjects in {NAMESPACES.gitops}"
                    ),
                    "reason": "Forbidden",
                },
                {
                    # A namespace they create is labelled the platform's, one they change or delete was
                    # already: they adopt none (a tenant-* namespace someone else made stays closed).
                    "expression": "request.resource.resource != 'namespaces'"
                    f" || ((request.operation == 'DELETE' || {_owned('object', 'request.name')})"
                    f" && (request.operation == 'CREATE' || {_owned('oldObject', 'request.name')}))",
                    "message": (
                        "a namespace the self-service workers create, change or delete is the platform's "
                        f"before and after: {NAMESPACE_PREFIX}<name> labelled {OWNERSHIP_LABEL}=<name>"
                    ),
                    "reason": "Forbidden",
                },
                {
                    # Namespaces they may write keep Pod Security restricted: with it relabelled
                    # privileged, a StatefulSet they manage there could run a privileged pod on a node.
                    "expression": "request.resource.resource != 'namespaces' || request.operation == 'DELETE'"
                    f" || (has(object.metadata.labels) && '{POD_SECURITY_ENFORCE}' in object.metadata.labels"
                    f" && object.metadata.labels['{POD_SECURITY_ENFORCE}'] == '{POD_SECURITY_LEVEL}')",
                    "message": (
                        f"a namespace the self-service workers create or change keeps {POD_SECURITY_ENFORCE}"
                        f"={POD_SECURITY_LEVEL}"
                    ),
                    "reason": "Forbidden",
                },
                {
                    # escalate lets them write Roles granting what they do not hold: only what the
                    # tenant's roles and the vCluster chart's grant (no wildcard, nothing else).
                    "expression": "request.resource.resource != 'roles' || request.operation == 'DELETE'"
                    " || !has(object.rules) || object.rules.all(r, !has(r.apiGroups) || !has(r.resources)"
                    " || r.apiGroups.all(g, r.resources.all(x, (g + '/' + x) in variables.grantable"
                    " && r.verbs.all(v, v in variables.grantable[g + '/' + x]))))",
                    "message": (
                        "a Role the self-service workers write grants only what the tenant's roles and the "
                        "vCluster chart's grant"
                    ),
                    "reason": "Forbidden",
                },
                {
                    # Who gets a role: the tenant's Keycloak groups or the namespace's own
                    # ServiceAccounts, to those roles only; the workers themselves only their tenant role.
                    "expression": "request.resource.resource != 'rolebindings'"
                    " || request.operation == 'DELETE' || (object.roleRef.kind == 'ClusterRole'"
                    f" ? (object.roleRef.name == '{WORKER_TENANT_ROLE}' && has(object.subjects)"
                    " && size(object.subjects) == 1 && object.subjects.all(s, s.kind == 'ServiceAccount'"
                    f" && s.name == '{WORKER_NAME}' && has(s.namespace) && s.namespace == '{NAMESPACE}'))"
                    f" : (object.roleRef.kind == 'Role' && object.roleRef.name in {bindable}"
                    f" && (!has(object.subjects) || object.subjects.all(s, {subject}))))",
                    "message": (
                        f"a RoleBinding the self-service workers write binds them to {WORKER_TENANT_ROLE} "
                        f"only, or the tenant's groups ({group_prefix}/…) or the namespace's own "
                        f"ServiceAccounts to {', '.join(BINDABLE_ROLES)}"
                    ),
                    "reason": "Forbidden",
                },
                {
                    # An AppProject is where Argo CD's controller, which holds every right, may deploy:
                    # the workers keep each one to its own tenant's namespace and no cluster-wide kind,
                    # and touch no other project (Argo CD's default allows everything everywhere).
                    "expression": "request.resource.resource != 'appprojects' || ("
                    f"(request.operation == 'CREATE' || {_tenant_project('oldObject')})"
                    f" && (request.operation == 'DELETE' || {_tenant_project('object')}))",
                    "message": (
                        "an AppProject the self-service workers write deploys only to its tenant's namespace "
                        f"({NAMESPACE_PREFIX}<project name> on {IN_CLUSTER}) and no cluster-scoped kind"
                    ),
                    "reason": "Forbidden",
                },
            ],
            "variables": [{"name": "grantable", "expression": grantable}],
        },
    }


def namespace_ownership_policy() -> Manifest:
    """Only who may own tenant namespaces sets, changes or removes a ``tenancy.platform/`` label on a
    namespace: the workers (their ClusterRole grants the custom verb ``own`` on
    ``tenantnamespaces.tenancy.platform``) and cluster-admins (who could delete this policy anyway),
    as the API server's authorizer answers. Anyone else may create namespaces, ``tenant-*`` ones too,
    but none the workers act in."""
    platform_key = f"k.startsWith('{LABEL_PREFIX}/')"
    new, old = "object.metadata.labels", "oldObject.metadata.labels"
    kept = (
        f"(!has({new}) || {new}.filter(k, {platform_key}).all(k, request.operation == 'UPDATE'"
        f" && has({old}) && k in {old} && {old}[k] == {new}[k]))"
        f" && (request.operation == 'CREATE' || !has({old}) || {old}.filter(k, {platform_key})"
        f".all(k, has({new}) && k in {new}))"
    )
    group, resource, verb = OWN_TENANT_NAMESPACES.api_groups[0], *OWN_TENANT_NAMESPACES.resources, "own"
    may_own = f"authorizer.group('{group}').resource('{resource}').check('{verb}').allowed()"
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": OWNERSHIP_POLICY, "labels": dict(PLATFORM_LABELS)},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["namespaces"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": f"({kept}) || {may_own}",
                    "message": (
                        f"only the self-service workers and cluster-admins set, change or remove "
                        f"{LABEL_PREFIX}/ labels on a namespace ({OWNERSHIP_LABEL} makes it a tenant "
                        f"namespace of the platform)"
                    ),
                    "reason": "Forbidden",
                }
            ],
        },
    }


def namespace_ownership_policy_binding() -> Manifest:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": OWNERSHIP_POLICY, "labels": dict(PLATFORM_LABELS)},
        "spec": {"policyName": OWNERSHIP_POLICY, "validationActions": ["Deny"]},
    }


def _tenant_project(project: str) -> str:
    """CEL: ``project`` (object or oldObject) is a tenant's AppProject as tenancy.builders.gitops
    writes it: destinations only its tenant's namespace in this cluster, no cluster-scoped kinds."""
    whitelist = f"{project}.spec.clusterResourceWhitelist"
    return (
        f"(has({project}.spec) && has({project}.spec.destinations) && size({project}.spec.destinations) > 0"
        f" && {project}.spec.destinations.all(d, has(d.namespace) && has(d.server) && !has(d.name)"
        f" && d.namespace == '{NAMESPACE_PREFIX}' + {project}.metadata.name && d.server == '{IN_CLUSTER}')"
        f" && (!has({whitelist}) || size({whitelist}) == 0))"
    )


def worker_admission_policy_binding() -> Manifest:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": ADMISSION_POLICY, "labels": dict(PLATFORM_LABELS)},
        "spec": {"policyName": ADMISSION_POLICY, "validationActions": ["Deny"]},
    }


# --- network ---------------------------------------------------------------------------------------


def namespace_policies(config: PlatformConfig) -> list[Manifest]:
    """Exactly the service's traffic: the gateway to the API; both roles to Redis, to Keycloak's pods
    (JWKS; the workers' tenant stacks also its admin API) and to the git remote at gitHosts' CIDRs;
    workers to the API server, Helm repositories (gitHosts' CIDRs, 443), object storage, Vault and the
    REST port of tenants' Qdrant pods; the API to object storage and Vault (revealing tenants' secrets)."""
    api, worker = labels("api"), labels("worker")
    policies = [
        allow_ingress(
            NAMESPACE,
            "allow-ingress-gateway-to-api",
            pods=api,
            from_namespace=NAMESPACES.ingress,
            from_pods=INGRESS_GATEWAY_LABELS,
            ports=[HTTP_PORT],
        ),
        allow_ingress(
            NAMESPACE,
            "allow-metrics-scraping",
            from_namespace=NAMESPACES.observability,
            ports=[ISTIO_METRICS_PORT],
        ),
        allow_egress(
            NAMESPACE,
            "allow-redis",
            to_namespace=REDIS_NAMESPACE,
            to_pods=REDIS_POD_LABELS,
            ports=[REDIS_PORT, SENTINEL_PORT],
        ),
        # Keycloak in the cluster, through the mesh: both roles read the JWKS (the workers' readiness
        # checks the keys too), and the workers' tenant stacks provision groups through its admin API.
        allow_egress(
            NAMESPACE,
            "allow-keycloak",
            pods=SELF_SERVICE_POD_LABELS,
            to_namespace=NAMESPACES.identity,
            to_pods=KEYCLOAK_POD_LABELS,
            ports=[KEYCLOAK_HTTP_PORT],
        ),
        # The tenants git remote: both roles clone it, the API commits to it. Only at gitHosts' CIDRs
        # (every address unless the platform config narrows them: README, accepted findings).
        allow_egress_to_cidrs(
            NAMESPACE,
            "allow-git",
            pods=SELF_SERVICE_POD_LABELS,
            cidrs=config.git_hosts.cidrs,
            ports=[config.self_service.git_port],
        ),
        # Tenant stacks' Helm releases fetch their pinned charts from Helm repositories over HTTPS: the
        # workers only, at the same gitHosts CIDRs (git, Helm and OCI repositories, as Argo CD's).
        allow_egress_to_cidrs(
            NAMESPACE,
            "allow-workers-to-chart-repositories",
            pods=worker,
            cidrs=config.git_hosts.cidrs,
            ports=[CHART_REPOSITORY_PORT],
        ),
        allow_egress_to_api_server(NAMESPACE, "allow-workers-to-apiserver", pods=worker, config=config),
    ]
    # Object storage and Vault where the config places them (their pods in the cluster, their CIDRs), or
    # by port when it names neither (a provider's endpoints serve from changing addresses).
    store, vault = _object_store(config), vault_service_reach(config.vault)
    worker_reaches = [reach for reach in (store, vault) if reach is not None]
    if worker_reaches:
        policies.append(
            allow_egress_to_reach(
                NAMESPACE, "allow-workers-to-storage-and-vault", pods=worker, reaches=worker_reaches
            )
        )
    if store is not None:
        # The API lists a tenant's backups and checks a restore's backup in the backup bucket itself.
        policies.append(
            allow_egress_to_reach(NAMESPACE, "allow-api-to-object-storage", pods=api, reaches=[store])
        )
    if vault is not None:
        # The API decrypts tenant stacks' outputs with Vault transit when a tenant-admin reveals a secret.
        policies.append(allow_egress_to_reach(NAMESPACE, "allow-api-to-vault", pods=api, reaches=[vault]))
    # Drains, rebalances, backups and restores call each tenant's Qdrant peers on their REST port: the
    # Qdrant pods of this environment's tenant namespaces, nothing else there (the tenant's ingress
    # policy and AuthorizationPolicy admit the workers on that port too).
    policies.append(
        network_policy(
            NAMESPACE,
            "allow-workers-to-tenant-qdrant",
            {
                "podSelector": {"matchLabels": dict(worker)},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": {"matchLabels": {LABEL_ENVIRONMENT: config.environment}},
                                "podSelector": {"matchLabels": dict(QDRANT_POD_LABELS)},
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": QDRANT_HTTP_PORT}],
                    }
                ],
            },
        )
    )
    return policies


def _object_store(config: PlatformConfig) -> Reach | None:
    return object_store_reach(config.object_storage) if config.object_storage is not None else None


def worker_sidecar(config: PlatformConfig) -> Manifest:
    """The workers' mesh scope: the mesh default (their own namespace, istio-system) plus every
    service's port 6333, which is how tenants' Qdrant Services and their peers' headless names join it,
    the namespaces of an object store or Vault in the cluster (``sidecar_egress_hosts``), and Keycloak's
    Service.

    Without them in scope the sidecar passes the calls through as unknown plaintext traffic, which a
    tenant Qdrant's sidecar refuses (mesh-wide STRICT mTLS). Sidecar hosts cannot name "every tenant-*
    namespace", so the port keeps the widening to Qdrant's REST port; only the worker pods get it.
    """
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": _metadata(WORKER_NAME),
        "spec": {
            "workloadSelector": {"labels": labels("worker")},
            "egress": [
                {
                    "port": {"number": QDRANT_HTTP_PORT, "protocol": "HTTP", "name": "http-qdrant"},
                    "hosts": ["*/*"],
                },
                {"hosts": _in_cluster_scope(config)},
            ],
            # As the mesh default: the API server, git, and an object store or Vault outside the cluster
            # are passed through.
            "outboundTrafficPolicy": {"mode": "ALLOW_ANY"},
        },
    }


# Keycloak's Service, as the Sidecars of both roles name it (its namespace/host): in scope, calls to it
# are mTLS, which Keycloak's sidecar (mesh-wide STRICT) requires.
KEYCLOAK_SIDECAR_HOST = f"{NAMESPACES.identity}/{KEYCLOAK_INTERNAL_HOST}"


def _in_cluster_scope(config: PlatformConfig) -> list[str]:
    store, vault = _object_store(config), vault_service_reach(config.vault)
    hosts = sidecar_egress_hosts(store.namespace if store else None, vault.namespace if vault else None)
    return [*hosts, KEYCLOAK_SIDECAR_HOST]


def api_sidecar(config: PlatformConfig) -> Manifest:
    """The API's mesh scope: the mesh default plus Keycloak's Service (JWKS) and, when the object store
    or Vault runs in the cluster, their namespaces' services (listing backups; decrypting revealed
    outputs with Vault transit), so its calls there are mTLS, which both under STRICT require. A store
    or Vault outside the cluster is passed through."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": _metadata(API_NAME),
        "spec": {
            "workloadSelector": {"labels": labels("api")},
            "egress": [{"hosts": _in_cluster_scope(config)}],
            "outboundTrafficPolicy": {"mode": "ALLOW_ANY"},
        },
    }


def authorization_policies() -> list[Manifest]:
    """Istio: nothing but the gateway may call the API; workers take no calls at all."""

    def policy(name: str, spec: dict[str, Any]) -> Manifest:
        return {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": _metadata(name),
            "spec": spec,
        }

    return [
        policy("allow-nothing", {}),
        policy(
            "allow-ingress-gateway-to-api",
            {
                "selector": {"matchLabels": labels("api")},
                "action": "ALLOW",
                "rules": [
                    {
                        "from": [
                            {
                                "source": {
                                    "principals": [principal(NAMESPACES.ingress, GATEWAY_SERVICE_ACCOUNT)]
                                }
                            }
                        ],
                        "to": [{"operation": {"ports": [str(HTTP_PORT)]}}],
                    }
                ],
            },
        ),
    ]
