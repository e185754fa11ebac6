"""A tenant's scheduled Qdrant backup as the real tenant program declares it: the CronJob (schedule,
hardening, size, image, settings), its traffic traced through the namespace's NetworkPolicies, Qdrant's
AuthorizationPolicies and the Sidecar, and its Vault credentials limited to the tenant's prefix."""

from __future__ import annotations

import json
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenancy.automation.contract import StackRef
from tenancy.automation.data_operations import backup_prefix
from tenancy.builders import backup as build
from tenancy.builders.istio import SIDECAR_EGRESS_HOSTS
from tenancy.builders.qdrant import RELEASE_NAME
from tenancy.dataops.job import JobSettings
from tenancy.policy.rules import check_object
from tenancy.policy.sources import manifest_object
from tenancy.render.runtime import StackCapture
from tenancy.spec.plans import BACKUP_JOB, SIDECAR
from tenancy.spec.platform import read_platform_config_file
from tests.conftest import PROJECT_DIR
from tests.platform.support import connection_allowed, egress_to_address_allowed, namespace_of

Run = Callable[..., StackCapture]
PROD = read_platform_config_file(PROJECT_DIR / "Pulumi.prod.yaml")
BUILT_IMAGE = "registry.example.com/platform/selfservice@sha256:" + "ab" * 32
NAMESPACE = "tenant-acme"


def named(capture: StackCapture, kind: str, name: str) -> dict[str, Any]:
    [found] = [
        r.inputs
        for r in capture.kubernetes_objects()
        if r.kind == kind and r.inputs["metadata"]["name"] == name
    ]
    return found


def cronjob(capture: StackCapture) -> dict[str, Any]:
    return named(capture, "CronJob", build.NAME)


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def qdrant_values(capture: StackCapture) -> dict[str, Any]:
    [values] = [
        r.inputs["values"]
        for r in capture.of_type("kubernetes:helm.sh/v3:Release")
        if r.inputs["chart"] == "qdrant"
    ]
    return values


def qdrant_pod_labels(values: dict[str, Any]) -> dict[str, str]:
    """The labels the qdrant chart (1.19.0, templates/_helpers.tpl "qdrant.selectorLabels") puts on its pods:
    app and app.kubernetes.io/name are the chart name (nameOverride), instance the release name."""
    name = values.get("nameOverride") or "qdrant"
    return {
        "app": name,
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": RELEASE_NAME,
        **values.get("additionalLabels", {}),
        **values.get("podLabels", {}),
    }


@pytest.fixture
def scheduled(scratch_project: Path, run_stack: Run) -> StackCapture:
    """prod.acme with its own schedule and retention, on a platform whose image has been built."""
    tenant_file = scratch_project / "tenants" / "prod" / "acme.yaml"
    tenant = yaml.safe_load(tenant_file.read_text())
    tenant["qdrant"]["snapshots"].update(schedule="30 1 * * *", keepLast=5, maxAgeDays=10)
    tenant_file.write_text(yaml.safe_dump(tenant))
    platform_file = scratch_project / "Pulumi.prod.yaml"
    platform = yaml.safe_load(platform_file.read_text())
    platform["config"]["platform:selfService"]["image"] = BUILT_IMAGE
    platform_file.write_text(yaml.safe_dump(platform))
    return run_stack("prod.acme", scratch_project)


# --- the CronJob ----------------------------------------------------------------------------------------


def test_the_tenant_files_schedule_and_retention_reach_the_cronjob_and_the_outputs(
    scheduled: StackCapture,
) -> None:
    job = cronjob(scheduled)
    assert job["spec"]["schedule"] == "30 1 * * *" and job["spec"]["timeZone"] == "Etc/UTC"
    assert scheduled.outputs["qdrantBackupSchedule"] == "30 1 * * *"
    env = {e["name"]: e["value"] for e in pod_spec(job)["containers"][0]["env"]}
    assert env["BACKUP_KEEP_LAST"] == "5" and env["BACKUP_MAX_AGE_DAYS"] == "10"
    # The platform's built image, by digest, and the job runs.
    assert pod_spec(job)["containers"][0]["image"] == BUILT_IMAGE
    assert job["spec"]["suspend"] is False


def test_without_the_built_image_the_cronjob_is_declared_suspended_on_the_pinned_base(run_stack: Run) -> None:
    from tenancy import versions

    job = cronjob(run_stack("prod.acme"))
    assert job["spec"]["schedule"] == "0 3 * * *"  # the default: daily at 03:00 UTC
    assert pod_spec(job)["containers"][0]["image"] == versions.SELF_SERVICE_BASE_IMAGE
    assert job["spec"]["suspend"] is True


def test_one_bounded_run_at_a_time_under_pod_security_restricted(run_stack: Run) -> None:
    job = cronjob(run_stack("prod.acme"))
    spec = job["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] <= 3 and spec["failedJobsHistoryLimit"] <= 3
    run = spec["jobTemplate"]["spec"]
    # Daily: a run may take six hours at most; bad settings fail at once, other failures retry twice.
    assert run["activeDeadlineSeconds"] == 6 * 3600 and run["backoffLimit"] == 2
    assert run["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2]
    violations = check_object(manifest_object(job, stack="prod.acme", origin="CronJob"))
    assert violations == []
    pod = pod_spec(job)
    assert pod["serviceAccountName"] == build.SERVICE_ACCOUNT and pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"


def test_an_hourly_schedule_bounds_each_run_by_the_hour() -> None:
    from tenancy.spec.tenant import parse_tenant, resolve

    spec = {
        "name": "acme",
        "owners": ["a@acme.example"],
        "plan": "large",
        "qdrant": {"enabled": True, "snapshots": {"schedule": "0 * * * *"}},
    }
    tenant = resolve(parse_tenant(spec, file="acme.yaml"), "prod")
    platform = build.backup_platform(PROD)
    assert platform is not None
    job = build.cronjob_manifest(tenant, platform)
    assert job["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 3600


def test_the_job_is_sized_as_the_plans_count_it(run_stack: Run) -> None:
    [container] = pod_spec(cronjob(run_stack("prod.acme")))["containers"]
    size = {"cpu": BACKUP_JOB.cpu, "memory": BACKUP_JOB.memory}
    assert container["resources"] == {"requests": size, "limits": size}
    # Its sidecar is the mesh default (no size annotations), which the plan check counts as SIDECAR.
    template = cronjob(run_stack("prod.acme"))["spec"]["jobTemplate"]["spec"]["template"]
    assert not any(
        k.startswith("sidecar.istio.io/proxy") for k in template["metadata"].get("annotations", {})
    )
    from tenancy.builders.istio import istiod_values

    proxy = istiod_values(PROD)["global"]["proxy"]["resources"]
    assert proxy["requests"] == {"cpu": SIDECAR.requests.cpu, "memory": SIDECAR.requests.memory}


def test_the_jobs_environment_is_valid_job_settings_with_the_workers_prefix(
    run_stack: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = run_stack("prod.acme")
    pod = pod_spec(cronjob(capture))
    [container] = pod["containers"]
    for item in container["env"]:
        monkeypatch.setenv(item["name"], item["value"])
    settings = JobSettings()
    assert settings.from_vault
    assert settings.prefix == backup_prefix(StackRef("prod", "acme")) == "tenants/prod/acme/qdrant"
    assert settings.bucket == PROD.object_storage.backup_bucket  # type: ignore[union-attr]
    assert settings.qdrant_url == capture.outputs["qdrantEndpoint"]
    # The key comes from the Qdrant Secret the stack exports, as a file; the login token is projected.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    key_volume = volumes[mounts[str(settings.qdrant_api_key_file.parent)]]["secret"]
    assert key_volume["secretName"] == capture.outputs["qdrantApiKeySecret"]
    assert [i["path"] for i in key_volume["items"]] == [settings.qdrant_api_key_file.name]
    token = volumes[mounts[str(settings.vault_token_file.parent)]]["projected"]["sources"][0]
    assert token["serviceAccountToken"]["audience"] == "vault"
    assert settings.vault_address == capture.outputs["vaultAddress"]
    assert settings.vault_auth_path == capture.outputs["vaultAuthPath"]
    # No credential of any kind in the manifest.
    assert not any(e["name"].startswith("AWS_") or "valueFrom" in e for e in container["env"])


def test_dev_without_object_storage_or_vault_declares_no_backup(run_stack: Run) -> None:
    capture = run_stack("dev.acme")
    assert [r for r in capture.kubernetes_objects() if r.kind == "CronJob"] == []
    assert "qdrantBackupSchedule" not in capture.outputs
    assert capture.of_type("vault:aws/secretBackendRole:SecretBackendRole") == []


# --- traffic ------------------------------------------------------------------------------------------


def _policies(capture: StackCapture) -> list[dict[str, Any]]:
    return [r.inputs for r in capture.kubernetes_objects() if r.kind == "NetworkPolicy"]


def test_the_job_reaches_its_qdrants_http_port_and_nothing_else_in_the_namespace(run_stack: Run) -> None:
    capture = run_stack("prod.acme")
    policies = _policies(capture)
    namespace = namespace_of(NAMESPACE, {"istio-injection": "enabled"})
    job_pod = dict(cronjob(capture)["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"])
    qdrant_pod = qdrant_pod_labels(qdrant_values(capture))
    # The port the job calls is the chart Service's HTTP port (and the container's).
    ports = {p["port"]: p["targetPort"] for p in qdrant_values(capture)["service"]["ports"]}
    assert ports[6333] == 6333
    backup = (namespace, job_pod)
    assert connection_allowed(policies, source=backup, destination=(namespace, qdrant_pod), port=6333)
    assert not connection_allowed(policies, source=backup, destination=(namespace, qdrant_pod), port=6334)
    app = (namespace, {"app": "tenant-app"})
    assert not connection_allowed(policies, source=backup, destination=app, port=8080)
    # Everyone else in the namespace keeps what they had.
    assert connection_allowed(policies, source=app, destination=(namespace, qdrant_pod), port=6334)
    other_tenant = (namespace_of("tenant-globex", {}), qdrant_pod)
    assert not connection_allowed(policies, source=backup, destination=other_tenant, port=6333)


def test_only_the_job_reaches_the_object_store_and_nothing_else_outside(run_stack: Run) -> None:
    capture = run_stack("prod.acme")
    policies = _policies(capture)
    job_pod = dict(cronjob(capture)["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"])
    store = PROD.object_storage
    assert store is not None and store.cidrs == ["10.30.1.0/28"]
    inside_store = "10.30.1.5"
    assert egress_to_address_allowed(
        policies, namespace=NAMESPACE, pod=job_pod, address=inside_store, port=443
    )
    assert not egress_to_address_allowed(
        policies, namespace=NAMESPACE, pod=job_pod, address="1.1.1.1", port=443
    )
    assert not egress_to_address_allowed(
        policies, namespace=NAMESPACE, pod={"app": "tenant-app"}, address=inside_store, port=443
    )
    # Vault (namespace-wide allow) stays reachable for the job's login.
    assert egress_to_address_allowed(
        policies, namespace=NAMESPACE, pod=job_pod, address="10.30.0.10", port=443
    )
    # The store is outside the cluster: the Sidecar passes it through, nothing to add to its scope.
    sidecar = named(capture, "Sidecar", "default")["spec"]
    assert sidecar["egress"] == [{"hosts": SIDECAR_EGRESS_HOSTS}]
    assert sidecar["outboundTrafficPolicy"] == {"mode": "ALLOW_ANY"}


def test_an_object_store_in_the_cluster_is_reached_on_its_pod_port_through_the_mesh() -> None:
    from tenancy.builders.istio import tenant_sidecar
    from tenancy.spec.platform import parse_platform_config
    from tenancy.spec.tenant import parse_tenant, resolve

    values = {
        "domain": "data.example.com",
        "vault": {"enabled": True, "address": "https://vault.vault.svc:8200", "namespace": "vault"},
        "objectStorage": {
            "endpoint": "http://minio.minio.svc:9000",
            "lokiBucket": "loki",
            "backupBucket": "backups",
            "namespace": "minio",
        },
    }
    config = parse_platform_config(values, environment="prod", file="Pulumi.prod.yaml")
    platform = build.backup_platform(config)
    assert platform is not None and platform.store.port == 9000
    tenant = resolve(
        parse_tenant({"name": "acme", "owners": ["a@acme.example"], "plan": "small"}, file="a"), "prod"
    )
    [store_rule] = build.network_policy(tenant, platform)["spec"]["egress"][1:]
    assert store_rule == {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "minio"}}}],
        "ports": [{"protocol": "TCP", "port": 9000}],
    }
    hosts = tenant_sidecar(tenant, object_store_namespace="minio")["spec"]["egress"][0]["hosts"]
    assert hosts == [*SIDECAR_EGRESS_HOSTS, "minio/*"]


def test_object_storage_without_a_way_to_reach_it_fails_naming_the_key() -> None:
    from tenancy.spec.errors import SpecError

    config = PROD.model_copy(
        update={"object_storage": PROD.object_storage.model_copy(update={"cidrs": []})}  # type: ignore[union-attr]
    )
    with pytest.raises(SpecError) as raised:
        build.backup_platform(config)
    [issue] = raised.value.issues
    assert (issue.file, issue.field) == ("Pulumi.prod.yaml", "platform:objectStorage")


def test_qdrant_admits_the_jobs_identity_on_its_http_port(run_stack: Run) -> None:
    capture = run_stack("prod.acme")
    policy = named(capture, "AuthorizationPolicy", "allow-backup-to-qdrant")["spec"]
    qdrant_pod = qdrant_pod_labels(qdrant_values(capture))
    assert all(qdrant_pod.get(k) == v for k, v in policy["selector"]["matchLabels"].items())
    [rule] = policy["rules"]
    account = pod_spec(cronjob(capture))["serviceAccountName"]
    assert rule["from"] == [{"source": {"principals": [f"cluster.local/ns/{NAMESPACE}/sa/{account}"]}}]
    assert rule["to"] == [{"operation": {"ports": ["6333"]}}]


# --- credentials ------------------------------------------------------------------------------------


def _allows(policy: dict[str, Any], action: str, resource: str, *, prefix: str | None = None) -> bool:
    for statement in policy["Statement"]:
        if statement["Effect"] != "Allow" or action not in statement["Action"]:
            continue
        if not any(fnmatchcase(resource, pattern) for pattern in statement["Resource"]):
            continue
        condition = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
        if condition is None or (prefix is not None and any(fnmatchcase(prefix, c) for c in condition)):
            return True
    return False


def test_the_credentials_reach_only_the_tenants_prefix(run_stack: Run) -> None:
    capture = run_stack("prod.acme")
    [role] = capture.of_type("vault:aws/secretBackendRole:SecretBackendRole")
    assert role.inputs["backend"] == PROD.vault.aws_mount and role.inputs["name"] == "backup-prod-acme"
    assert role.inputs["credentialType"] == "federation_token"
    policy = json.loads(role.inputs["policyDocument"])
    bucket = "arn:aws:s3:::example-platform-prod-pg-backups"
    own = "tenants/prod/acme/qdrant/"
    for action in ("s3:PutObject", "s3:GetObject", "s3:DeleteObject"):
        assert _allows(policy, action, f"{bucket}/{own}backups/20261206T030000Z/manifest.json")
        assert not _allows(policy, action, f"{bucket}/tenants/prod/acme-corp/qdrant/x")
        assert not _allows(policy, action, f"{bucket}/tenants/dev/acme/qdrant/x")
        assert not _allows(policy, action, f"{bucket}/iam/base/x")  # the Keycloak database's backups
        # What an earlier tenant of the name left (set aside when it was deleted) is out of its reach.
        assert not _allows(policy, action, f"{bucket}/tenants/prod/acme/retired/{'a' * 40}/x/manifest.json")
    assert _allows(policy, "s3:ListBucket", bucket, prefix=own)
    assert not _allows(policy, "s3:ListBucket", bucket, prefix="tenants/prod/")
    assert not _allows(policy, "s3:ListBucket", bucket, prefix="tenants/prod/acme/retired/")
    assert not _allows(policy, "s3:ListBucket", bucket)


def test_only_the_jobs_service_account_logs_in_to_read_them(run_stack: Run) -> None:
    capture = run_stack("prod.acme")
    roles = {
        r.inputs["roleName"]: r.inputs
        for r in capture.of_type("vault:kubernetes/authBackendRole:AuthBackendRole")
    }
    login = roles["backup-prod-acme"]
    assert login["boundServiceAccountNames"] == [build.SERVICE_ACCOUNT]
    assert login["boundServiceAccountNamespaces"] == [NAMESPACE] and login["audience"] == "vault"
    policies = {r.inputs["name"]: r.inputs["policy"] for r in capture.of_type("vault:index/policy:Policy")}
    assert login["tokenPolicies"] == ["backup-prod-acme"]
    assert policies["backup-prod-acme"] == 'path "aws/sts/backup-prod-acme" {\n  capabilities = ["read"]\n}\n'
    # The tenant's own role (any of its service accounts) cannot read the backup credentials.
    tenant_role = roles[capture.outputs["vaultRole"]]
    assert tenant_role["tokenPolicies"] == [capture.outputs["vaultRole"]]
    assert "aws/" not in policies[capture.outputs["vaultRole"]]
    env = {e["name"]: e["value"] for e in pod_spec(cronjob(capture))["containers"][0]["env"]}
    assert env["BACKUP_VAULT_ROLE"] == "backup-prod-acme"
    assert env["BACKUP_VAULT_CREDENTIALS_PATH"] == "aws/sts/backup-prod-acme"


def test_an_assumed_role_is_used_when_the_platform_names_one() -> None:
    from tenancy.spec.tenant import parse_tenant, resolve

    arn = "arn:aws:iam::123456789012:role/qdrant-backups"
    config = PROD.model_copy(
        update={"object_storage": PROD.object_storage.model_copy(update={"backup_role_arn": arn})}  # type: ignore[union-attr]
    )
    platform = build.backup_platform(config)
    assert platform is not None
    spec = {"name": "acme", "owners": ["a@acme.example"], "plan": "small", "qdrant": {"enabled": True}}
    tenant = resolve(parse_tenant(spec, file="a"), "prod")
    args = build.aws_role_args(tenant, platform)
    assert args["credential_type"] == "assumed_role" and args["role_arns"] == [arn]
