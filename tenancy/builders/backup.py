"""A tenant's scheduled Qdrant backup: the CronJob that runs ``python -m tenancy.dataops.job backup``, its
ServiceAccount, its traffic, its Vault login and credentials, and the admission policy that keeps that
ServiceAccount to the platform's CronJob (plain data, no Pulumi runtime).

Who may do what, in one place:

- the job runs the platform's own image (``tenancy.builders.selfservice.service_image``) under the
  ServiceAccount ``qdrant-backup`` in the tenant namespace, Pod Security ``restricted``, sized as the plans
  count it (``tenancy.spec.plans.BACKUP_JOB``, one pod at a time);
- it reads the tenant's Qdrant API key from the existing Secret (a file), talks to Qdrant's HTTP port in its
  namespace and to the object store, nothing else (``network_policy``; the namespace's allow-same-namespace
  excludes its pods);
- its object-store credentials are minted at run time by Vault's AWS secrets engine for the role
  ``backup-<env>-<tenant>``, whose policy reaches only ``<bucket>/tenants/<env>/<tenant>/qdrant/*``; the job
  logs in with a projected token (audience ``vault``) of its ServiceAccount, which only the Kubernetes-auth
  role ``backup-<env>-<tenant>`` accepts. Nothing of it is ever in a Secret the tenant can read;
- tenant admins may create pods, Jobs and CronJobs in their namespace, so ``admission_policies`` makes the
  API server refuse any pod or Job under that ServiceAccount that the platform's CronJob did not create, and
  any tenant change to that CronJob, ServiceAccount, or a token Secret for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tenancy.builders.contract import NAMESPACES
from tenancy.builders.istio import principal
from tenancy.builders.namespace import Manifest, metadata
from tenancy.builders.network import BACKUP_JOB_NAME, NAME_LABEL, QDRANT_HTTP_PORT
from tenancy.builders.platform_namespace import PLATFORM_LABELS, Reach, object_store_reach, reach_egress_rule
from tenancy.builders.qdrant import API_KEY, API_KEY_SECRET, SELECTOR_LABELS, qdrant_endpoints
from tenancy.builders.security import restricted_container
from tenancy.builders.selfservice import IMAGE_UID, image_pod_security_context, service_image
from tenancy.builders.vault import (
    AUDIENCE,
    TOKEN_DIRECTORY,
    TOKEN_FILE,
    PolicyRule,
    check_vault_path,
    render_policy,
    token_mount,
    token_volume,
)
from tenancy.spec.errors import SpecError, SpecIssue
from tenancy.spec.plans import BACKUP_JOB
from tenancy.spec.platform import PlatformConfig
from tenancy.spec.tenant import NAMESPACE_PREFIX, Tenant, shortest_interval

NAME = BACKUP_JOB_NAME  # the CronJob and its ServiceAccount; its Jobs are named qdrant-backup-<minute>
SERVICE_ACCOUNT = NAME
CONTAINER = "backup"
POD_LABELS = {NAME_LABEL: NAME, "app.kubernetes.io/component": "backup"}
COMMAND = ["python", "-m", "tenancy.dataops.job", "backup"]
KEY_DIRECTORY = "/var/run/secrets/qdrant"
PREFIX = "tenants/{environment}/{tenant}/qdrant"  # the same prefix the workers' backups use
# Kubernetes CronJob schedules are in the controller's time zone unless stated; the tenant file says UTC.
TIME_ZONE = "Etc/UTC"
# A run may take as long as the gap to the next one (Forbid skips a run while one is active), at least
# an hour (large snapshots) and at most six (a stuck run must not hold the next day's back).
MIN_DEADLINE = timedelta(hours=1)
MAX_DEADLINE = timedelta(hours=6)
HISTORY = {"successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3}
BACKOFF_LIMIT = 2
EXIT_INVALID_SETTINGS = 2  # tenancy.dataops.job.EXIT_INVALID: retrying cannot help
# Vault: the job's login token lives for minutes; its object-store credentials for one run.
LOGIN_TOKEN_TTL_SECONDS = 10 * 60


def prefix(tenant: Tenant) -> str:
    return PREFIX.format(environment=tenant.environment, tenant=tenant.name)


def vault_name(tenant: Tenant) -> str:
    """The Vault policy, Kubernetes-auth role and AWS-engine role of the tenant's backup job."""
    return f"backup-{tenant.environment}-{tenant.name}"


def deadline(tenant: Tenant) -> timedelta:
    assert tenant.qdrant is not None
    gap = shortest_interval(tenant.qdrant.backup_schedule)
    return max(MIN_DEADLINE, min(MAX_DEADLINE, gap))


# --- what the platform provides ---------------------------------------------------------------------


@dataclass(frozen=True)
class BackupPlatform:
    """What a tenant's backup job needs from the platform config (``Pulumi.<env>.yaml``)."""

    image: str
    image_built: bool
    bucket: str
    endpoint: str
    region: str
    force_path_style: bool
    store: Reach  # where the job reaches the object store
    vault_address: str
    vault_auth_path: str
    vault_aws_mount: str
    role_arn: str | None = None


def backup_platform(config: PlatformConfig) -> BackupPlatform | None:
    """The backup job's platform; None when the platform keeps no backups (no object storage or no Vault,
    which alone hands out credentials the tenant never sees). SpecError when the store is unreachable."""
    storage, vault = config.object_storage, config.vault
    if storage is None or not vault.enabled or vault.address is None:
        return None
    if not (storage.cidrs or storage.namespace):
        raise SpecError(
            [
                SpecIssue(
                    f"Pulumi.{config.environment}.yaml",
                    "platform:objectStorage",
                    "has neither cidrs (a store outside the cluster) nor namespace (a store in it), so no "
                    "tenant backup job could reach it; set one of them",
                )
            ]
        )
    image = service_image(config)
    return BackupPlatform(
        image=image.reference,
        image_built=image.built,
        bucket=storage.backup_bucket,
        endpoint=storage.endpoint if "://" in storage.endpoint else f"https://{storage.endpoint}",
        region=storage.region,
        force_path_style=storage.force_path_style,
        store=object_store_reach(storage),
        vault_address=vault.address.rstrip("/"),
        vault_auth_path=check_vault_path(vault.kubernetes_auth_path, what="vault.kubernetesAuthPath"),
        vault_aws_mount=check_vault_path(vault.aws_mount, what="vault.awsMount"),
        role_arn=storage.backup_role_arn,
    )


def backup_wanted(tenant: Tenant) -> bool:
    return tenant.qdrant is not None and tenant.qdrant.snapshots


# --- the job ----------------------------------------------------------------------------------------


def credentials_path(tenant: Tenant, platform: BackupPlatform) -> str:
    """Where the job reads its STS credentials: ``<aws mount>/sts/<role>`` (federation or assumed role)."""
    return f"{platform.vault_aws_mount}/sts/{vault_name(tenant)}"


def job_environment(tenant: Tenant, platform: BackupPlatform) -> list[dict[str, str]]:
    """``tenancy.dataops.job.JobSettings``, as the environment of the job's container."""
    assert tenant.qdrant is not None
    values = {
        "BACKUP_QDRANT_URL": qdrant_endpoints(tenant)["http"],
        "BACKUP_QDRANT_API_KEY_FILE": f"{KEY_DIRECTORY}/{API_KEY}",
        "BACKUP_QDRANT_HTTP_PORT": str(QDRANT_HTTP_PORT),
        "BACKUP_BUCKET": platform.bucket,
        "BACKUP_PREFIX": prefix(tenant),
        "BACKUP_S3_ENDPOINT": platform.endpoint,
        "BACKUP_S3_REGION": platform.region,
        "BACKUP_S3_FORCE_PATH_STYLE": "true" if platform.force_path_style else "false",
        "BACKUP_KEEP_LAST": str(tenant.qdrant.backup_keep_last),
        "BACKUP_MAX_AGE_DAYS": str(tenant.qdrant.backup_max_age_days),
        "BACKUP_VAULT_ADDRESS": platform.vault_address,
        "BACKUP_VAULT_AUTH_PATH": platform.vault_auth_path,
        "BACKUP_VAULT_ROLE": vault_name(tenant),
        "BACKUP_VAULT_CREDENTIALS_PATH": credentials_path(tenant, platform),
        "BACKUP_VAULT_TOKEN_FILE": f"{TOKEN_DIRECTORY}/{TOKEN_FILE}",
        "HOME": "/tmp",
    }
    return [{"name": name, "value": value} for name, value in values.items()]


def service_account_manifest(tenant: Tenant) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(tenant, SERVICE_ACCOUNT),
        # The job calls no Kubernetes API; its only token is the projected one for Vault.
        "automountServiceAccountToken": False,
    }


def cronjob_manifest(tenant: Tenant, platform: BackupPlatform) -> Manifest:
    """The tenant's backup CronJob: the tenant file's schedule in UTC, one run at a time."""
    assert tenant.qdrant is not None
    size = {"cpu": BACKUP_JOB.cpu, "memory": BACKUP_JOB.memory}
    run_for = int(deadline(tenant).total_seconds())
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": platform.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(COMMAND),
        "env": job_environment(tenant, platform),
        # Requests equal limits, what the plans count (tenancy.spec.tenant quota usage "backup").
        "resources": {"requests": dict(size), "limits": dict(size)},
        "securityContext": restricted_container(
            runAsUser=IMAGE_UID, runAsGroup=IMAGE_UID, readOnlyRootFilesystem=True
        ),
        "volumeMounts": [
            {"name": "qdrant-key", "mountPath": KEY_DIRECTORY, "readOnly": True},
            token_mount(),
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod: dict[str, Any] = {
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "securityContext": image_pod_security_context(),
        "containers": [container],
        "volumes": [
            {
                "name": "qdrant-key",
                "secret": {
                    "secretName": API_KEY_SECRET,
                    "items": [{"key": API_KEY, "path": API_KEY}],
                    "defaultMode": 0o440,
                },
            },
            token_volume(),
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        ],
    }
    job_spec: dict[str, Any] = {
        "activeDeadlineSeconds": run_for,
        "backoffLimit": BACKOFF_LIMIT,
        # Bad settings fail the same way every time: no retries for them.
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER,
                        "operator": "In",
                        "values": [EXIT_INVALID_SETTINGS],
                    },
                }
            ]
        },
        "template": {"metadata": {"labels": {**tenant.labels, **POD_LABELS}}, "spec": pod},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata(tenant, NAME, labels={**tenant.labels, **POD_LABELS}),
        "spec": {
            "schedule": tenant.qdrant.backup_schedule,
            "timeZone": TIME_ZONE,
            "concurrencyPolicy": "Forbid",
            # A run missed by more than this (controller down) is skipped, not started late.
            "startingDeadlineSeconds": min(3600, run_for // 2),
            **HISTORY,
            # Without the platform's built image there is nothing to run: declared, not started.
            "suspend": not platform.image_built,
            "jobTemplate": {"metadata": {"labels": {**tenant.labels, **POD_LABELS}}, "spec": job_spec},
        },
    }


# --- credentials ------------------------------------------------------------------------------------


def object_store_policy(tenant: Tenant, platform: BackupPlatform) -> dict[str, Any]:
    """The IAM policy of the credentials Vault mints: objects under the tenant's prefix, nothing else.

    The effective rights are this policy intersected with the engine's own identity (an IAM user for
    federation tokens, ``role_arn`` for assumed roles): the platform team grants that identity the whole
    backup bucket; this narrows each tenant's credentials to its prefix.
    """
    bucket, folder = platform.bucket, prefix(tenant)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TenantBackupObjects",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                ],
                "Resource": [f"arn:aws:s3:::{bucket}/{folder}/*"],
            },
            {
                "Sid": "TenantBackupListing",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
                "Condition": {"StringLike": {"s3:prefix": [f"{folder}/*"]}},
            },
        ],
    }


def aws_role_args(tenant: Tenant, platform: BackupPlatform) -> dict[str, Any]:
    """``pulumi_vault.aws.SecretBackendRole``: credentials for one run, limited to the tenant's prefix."""
    lifetime = int(deadline(tenant).total_seconds())
    args: dict[str, Any] = {
        "backend": platform.vault_aws_mount,
        "name": vault_name(tenant),
        "policy_document": json.dumps(object_store_policy(tenant, platform), sort_keys=True),
        "default_sts_ttl": lifetime,
        "max_sts_ttl": lifetime,
    }
    if platform.role_arn:
        args |= {"credential_type": "assumed_role", "role_arns": [platform.role_arn]}
    else:
        args["credential_type"] = "federation_token"
    return args


def vault_policy(tenant: Tenant, platform: BackupPlatform) -> str:
    """Read the tenant's backup credentials, nothing else (not even the tenant's Qdrant secret)."""
    return render_policy([PolicyRule(credentials_path(tenant, platform), ("read",))])


def vault_login_role_args(tenant: Tenant) -> dict[str, Any]:
    """The Kubernetes-auth role: only the backup ServiceAccount of the tenant's namespace, audience vault."""
    return {
        "role_name": vault_name(tenant),
        "bound_service_account_names": [SERVICE_ACCOUNT],
        "bound_service_account_namespaces": [tenant.namespace],
        "audience": AUDIENCE,
        "token_ttl": LOGIN_TOKEN_TTL_SECONDS,
        "token_max_ttl": LOGIN_TOKEN_TTL_SECONDS,
    }


# --- traffic ----------------------------------------------------------------------------------------


def network_policy(tenant: Tenant, platform: BackupPlatform) -> Manifest:
    """The job's egress beyond DNS, istiod and Vault (namespace-wide policies): Qdrant's HTTP port in its
    namespace and the object store. Its pods are left out of allow-same-namespace
    (``tenancy.builders.network``), so this is all they reach in the namespace."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(tenant, "allow-backup-egress"),
        "spec": {
            "podSelector": {"matchLabels": dict(POD_LABELS)},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"podSelector": {"matchLabels": dict(SELECTOR_LABELS)}}],
                    "ports": [{"protocol": "TCP", "port": QDRANT_HTTP_PORT}],
                },
                reach_egress_rule(platform.store),
            ],
        },
    }


def authorization_policy(tenant: Tenant) -> Manifest:
    """Qdrant takes the job's calls on its HTTP port, by the job's mTLS identity."""
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": metadata(tenant, "allow-backup-to-qdrant"),
        "spec": {
            "selector": {"matchLabels": dict(SELECTOR_LABELS)},
            "action": "ALLOW",
            "rules": [
                {
                    "from": [{"source": {"principals": [principal(tenant.namespace, SERVICE_ACCOUNT)]}}],
                    "to": [{"operation": {"ports": [str(QDRANT_HTTP_PORT)]}}],
                }
            ],
        },
    }


# --- admission: the ServiceAccount belongs to the platform's CronJob -------------------------------------
# The controllers' identities: with --use-service-account-credentials (kubeadm and the managed offerings)
# each controller has its own service account; without it they all act as the controller manager.
CONTROLLER_MANAGER = "system:kube-controller-manager"
JOB_CONTROLLER = "system:serviceaccount:kube-system:job-controller"
CRONJOB_CONTROLLER = "system:serviceaccount:kube-system:cronjob-controller"
RUNS_ONLY_FROM_CRONJOB = "qdrant-backup-runs-only-from-its-cronjob"
OWNED_BY_PLATFORM = "qdrant-backup-owned-by-the-platform"
IN_TENANT_NAMESPACE = f"request.namespace.startsWith('{NAMESPACE_PREFIX}')"


def _runs_as_backup(spec: str, labels: str) -> str:
    """CEL: the pod (template) of ``spec`` and ``labels`` runs as the backup account or has its label."""
    return (
        f"(has({spec}.serviceAccountName) && {spec}.serviceAccountName == '{SERVICE_ACCOUNT}')"
        f" || (has({spec}.serviceAccount) && {spec}.serviceAccount == '{SERVICE_ACCOUNT}')"
        f" || (has({labels}) && '{NAME_LABEL}' in {labels} && {labels}['{NAME_LABEL}'] == '{NAME}')"
    )


def _owned_by(kind: str, name_check: str, users: tuple[str, ...]) -> str:
    allowed = ", ".join(f"'{user}'" for user in users)
    return (
        f"request.userInfo.username in [{allowed}]"
        " && has(object.metadata.ownerReferences)"
        " && object.metadata.ownerReferences.exists(r, r.kind == '"
        + kind
        + "' && r.apiVersion == 'batch/v1' && "
        + name_check
        + " && has(r.controller) && r.controller)"
    )


def runs_only_from_cronjob_policy() -> Manifest:
    """Pods and Jobs under the backup ServiceAccount (or with its label) only from the platform's CronJob.

    A pod so marked is admitted only when the Job controller creates it for a Job named qdrant-backup-*;
    such a Job only when the CronJob controller creates it for the CronJob qdrant-backup (which tenants
    cannot change: ``owned_by_platform_policy``). An update may not make a pod or Job one. Exec, attach
    and port-forward into the job's pods, and ephemeral containers there, are refused: they would hand
    the pod's Vault token to whoever runs them.
    """
    pod = _runs_as_backup("object.spec", "object.metadata.labels")
    old_pod = _runs_as_backup("oldObject.spec", "oldObject.metadata.labels")
    job = _runs_as_backup("object.spec.template.spec", "object.spec.template.metadata.labels")
    old_job = _runs_as_backup("oldObject.spec.template.spec", "oldObject.spec.template.metadata.labels")
    is_pod = "request.resource.resource == 'pods' && request.subResource == ''"
    is_job = "request.resource.resource == 'jobs'"
    pod_created = _owned_by("Job", f"r.name.startsWith('{NAME}-')", (JOB_CONTROLLER, CONTROLLER_MANAGER))
    job_created = _owned_by("CronJob", f"r.name == '{NAME}'", (CRONJOB_CONTROLLER, CONTROLLER_MANAGER))
    validations = [
        {
            "expression": (f"!({is_pod} && request.operation == 'CREATE') || !({pod}) || ({pod_created})"),
            "message": (
                f"pods under the ServiceAccount {SERVICE_ACCOUNT} (or labelled {NAME_LABEL}={NAME}) are "
                f"created only by the Job controller, for the platform's CronJob {NAME}"
            ),
        },
        {
            "expression": f"!({is_job} && request.operation == 'CREATE') || !({job}) || ({job_created})",
            "message": (
                f"Jobs under the ServiceAccount {SERVICE_ACCOUNT} (or labelled {NAME_LABEL}={NAME}) are "
                f"created only by the CronJob controller, for the platform's CronJob {NAME}"
            ),
        },
        {
            "expression": (f"!(({is_pod}) && request.operation == 'UPDATE') || !({pod}) || ({old_pod})"),
            "message": f"a pod cannot be moved under the ServiceAccount or label of {NAME}",
        },
        {
            "expression": f"!({is_job} && request.operation == 'UPDATE') || !({job}) || ({old_job})",
            "message": f"a Job cannot be moved under the ServiceAccount or label of {NAME}",
        },
        {
            "expression": (
                "!(request.resource.resource == 'pods' && request.subResource in "
                "['exec', 'attach', 'portforward', 'ephemeralcontainers'])"
                f" || !request.name.startsWith('{NAME}-')"
            ),
            "message": (
                f"no exec, attach, port-forward or ephemeral container in the pods of {NAME}: they hold "
                "its Vault login"
            ),
        },
    ]
    return _policy(
        RUNS_ONLY_FROM_CRONJOB,
        resource_rules=[
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["pods", "pods/ephemeralcontainers"],
            },
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CONNECT"],
                "resources": ["pods/exec", "pods/attach", "pods/portforward"],
            },
            {
                "apiGroups": ["batch"],
                "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["jobs"],
            },
        ],
        validations=validations,
    )


# Who deploys tenants: whoever may create namespaces cluster-wide (the self-service workers, a platform
# admin running `pulumi up`), a right no tenant Role can hold (Roles are namespaced, and tenants bind
# none). Asked of the API server's authorizer, so no list of platform identities is kept here. Except
# Argo CD's service accounts: its application controller may create namespaces (the chart's ClusterRole
# grants it everything), but it applies what tenants' Applications say, so through it a tenant could
# rewrite the backup CronJob and run its own code with the backup's Vault login (a traffic review).
ACTS_FOR_TENANTS = f"system:serviceaccount:{NAMESPACES.gitops}:"
PLATFORM_IDENTITY = (
    f"!request.userInfo.username.startsWith('{ACTS_FOR_TENANTS}')"
    " && authorizer.group('').resource('namespaces').check('create').allowed()"
)


def owned_by_platform_policy() -> Manifest:
    """Only a platform identity (``PLATFORM_IDENTITY``) creates, changes or deletes the CronJob or
    ServiceAccount ``qdrant-backup``, a CronJob under that ServiceAccount, or a token Secret for it: in a
    tenant's hands each would run its code, or hand it a token, as the backup job."""
    cronjob = _runs_as_backup(
        "object.spec.jobTemplate.spec.template.spec",
        "object.spec.jobTemplate.spec.template.metadata.labels",
    )
    token_secret = (
        "has(object.type) && object.type == 'kubernetes.io/service-account-token'"
        " && has(object.metadata.annotations)"
        " && 'kubernetes.io/service-account.name' in object.metadata.annotations"
        f" && object.metadata.annotations['kubernetes.io/service-account.name'] == '{SERVICE_ACCOUNT}'"
    )
    targets = (
        f"(request.resource.resource in ['cronjobs', 'serviceaccounts'] && request.name == '{NAME}')"
        f" || (request.resource.resource == 'cronjobs' && request.operation != 'DELETE' && ({cronjob}))"
        f" || (request.resource.resource == 'secrets' && request.operation != 'DELETE' && ({token_secret}))"
    )
    return _policy(
        OWNED_BY_PLATFORM,
        resource_rules=[
            {
                "apiGroups": ["batch"],
                "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE", "DELETE"],
                "resources": ["cronjobs"],
            },
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE", "DELETE"],
                "resources": ["serviceaccounts", "secrets"],
            },
        ],
        validations=[
            {
                "expression": f"!({targets}) || ({PLATFORM_IDENTITY})",
                "message": (
                    f"the CronJob and ServiceAccount {NAME} belong to the platform: only an identity that "
                    "may create namespaces changes them, runs a CronJob under that ServiceAccount or makes "
                    "a token Secret for it"
                ),
            }
        ],
    )


def _policy(
    name: str, *, resource_rules: list[dict[str, Any]], validations: list[dict[str, str]]
) -> Manifest:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": dict(PLATFORM_LABELS)},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": resource_rules},
            "matchConditions": [{"name": "in-a-tenant-namespace", "expression": IN_TENANT_NAMESPACE}],
            "validations": [{**validation, "reason": "Forbidden"} for validation in validations],
        },
    }


def admission_policies() -> list[Manifest]:
    return [runs_only_from_cronjob_policy(), owned_by_platform_policy()]


def admission_policy_binding(policy: Manifest) -> Manifest:
    name = policy["metadata"]["name"]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": dict(PLATFORM_LABELS)},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }
