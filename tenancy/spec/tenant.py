"""The tenant specification: the shape of ``tenants/<env>/<name>.yaml``.

Two models: ``TenantSpec`` is what a person writes (optional fields fall back to the plan), and
``Tenant`` is the resolved form the builders consume (every size concrete, names derived).
Keeping defaults unresolved in the file means a plan change reaches tenants that did not pin a size.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from cronsim import CronSim, CronSimError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from tenancy import versions
from tenancy.spec.errors import SpecError, SpecIssue, issues_from_validation_error
from tenancy.spec.plans import (
    BACKUP_DEFAULT_KEEP_LAST,
    BACKUP_DEFAULT_MAX_AGE_DAYS,
    BACKUP_DEFAULT_SCHEDULE,
    BACKUP_JOB,
    PLANS,
    SIDECAR,
    VCLUSTER_COREDNS,
    VCLUSTER_STORAGE,
    Plan,
    PlanLimits,
    PodOverhead,
    Size,
    qdrant_sidecar,
)
from tenancy.spec.quantity import Bytes, Cpu, parse_quantity
from tenancy.spec.text import forbidden_characters

LABEL_PREFIX = "tenancy.platform"
LABEL_TENANT = f"{LABEL_PREFIX}/tenant"
LABEL_ENVIRONMENT = f"{LABEL_PREFIX}/environment"
LABEL_PLAN = f"{LABEL_PREFIX}/plan"
NAMESPACE_PREFIX = "tenant-"
RESERVED_NAMES = frozenset({"admin", "default", "kube", "platform", "system", "istio", "argocd", "vault"})
MAX_NAME_LENGTH = 30  # leaves room for "tenant-" and chart suffixes within the 63-character DNS label limit

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_GROUP_PATH = re.compile(r"^(/[A-Za-z0-9][-A-Za-z0-9_.]*)+$")
_GIT_HOST = r"[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?"
_GIT_PATH_SEGMENT = r"[A-Za-z0-9._~-]+"
_GIT_REPOSITORY = re.compile(
    rf"^(https://{_GIT_HOST}(:[0-9]{{1,5}})?(/{_GIT_PATH_SEGMENT})+/?"  # https://host/org/repo.git
    rf"|ssh://[A-Za-z0-9._-]+@{_GIT_HOST}(:[0-9]{{1,5}})?(/{_GIT_PATH_SEGMENT})+"  # ssh://git@host/org/repo
    rf"|[A-Za-z0-9._-]+@{_GIT_HOST}:{_GIT_PATH_SEGMENT}(/{_GIT_PATH_SEGMENT})*)$"  # git@host:org/repo.git
)
MAX_REPOSITORIES = 50


def not_a_tenant_name(name: str) -> str | None:
    """Why ``name``, given on a command line, cannot name a tenant (not a DNS label); None if it can."""
    if DNS_LABEL.match(name):
        return None
    return f"{name!r} is not a tenant name: lowercase letters, digits and '-', starting with a letter"


def _check_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"{name!r} is {len(name)} characters; a tenant name has at most {MAX_NAME_LENGTH}")
    if not DNS_LABEL.match(name):
        raise ValueError(
            f"{name!r} is not a DNS label: use lowercase letters, digits and '-', starting with a letter"
        )
    if name in RESERVED_NAMES:
        raise ValueError(f"{name!r} is reserved for the platform; pick another name")
    return name


# Label keys the tenant's labels may not take, because every object of the tenant carries them (pod
# templates included): the charts' own labels, which their selectors, Services, NetworkPolicies and
# AuthorizationPolicies match (qdrant 1.19.0 ``qdrant.labels``: app, app.kubernetes.io/name, instance,
# version, managed-by, helm.sh/chart; vcluster 0.36.1: app, release), where a tenant's value comes
# last and wins, so the StatefulSet's selector no longer matches its pods and the release fails; and
# the keys Kubernetes, Istio and vCluster read (sidecar.istio.io/inject drops a pod's sidecar).
_CHART_LABEL_KEYS = frozenset(
    {
        "app",
        "release",
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/component",
        "app.kubernetes.io/version",
        "app.kubernetes.io/managed-by",
        "helm.sh/chart",
        "istio-injection",
    }
)
_RESERVED_LABEL_DOMAINS = ("kubernetes.io", "k8s.io", "istio.io", "loft.sh")


def _reserved_label_key(key: str) -> str | None:
    """Why ``key`` belongs to the platform or to what it runs, or None when a tenant may use it."""
    if key in _CHART_LABEL_KEYS:
        return "the platform's charts set it on the tenant's pods and select them by it"
    prefix, slash, _ = key.rpartition("/")
    if not slash or prefix == "app.kubernetes.io":  # app.kubernetes.io/part-of and the like are the user's
        return None
    if any(prefix == domain or prefix.endswith(f".{domain}") for domain in _RESERVED_LABEL_DOMAINS):
        return f"{prefix}/ is read by Kubernetes, Istio or vCluster"
    return None


# Labels go on every object of the tenant: 100,000 of them made a render run for minutes in 1.6 GB and
# objects past the API server's size limit (an outside review). A tenant needs a handful.
MAX_LABELS = 32


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise ValueError(
            f"has {len(labels)} labels; a tenant has at most {MAX_LABELS} (each goes on every object of it)"
        )
    for key, value in labels.items():
        if not _LABEL_KEY.match(key):
            raise ValueError(f"label key {key!r} is not a valid Kubernetes label key")
        if key.startswith(f"{LABEL_PREFIX}/"):
            raise ValueError(
                f"label key {key!r} uses the platform's prefix {LABEL_PREFIX}/, which it sets itself"
            )
        reserved = _reserved_label_key(key)
        if reserved is not None:
            raise ValueError(
                f"label key {key!r} is reserved: {reserved}; use a key of your own, such as 'team' or "
                "'example.com/app'"
            )
        if not _LABEL_VALUE.match(value) or len(value) > 63:
            raise ValueError(f"label value {value!r} (key {key!r}) is not a valid Kubernetes label value")
    return labels


def _check_emails(owners: list[str]) -> list[str]:
    for owner in owners:
        if not _EMAIL.match(owner):
            raise ValueError(f"{owner!r} is not an email address")
    if len(set(owners)) != len(owners):
        raise ValueError("owners are listed more than once")
    return owners


def _check_groups(groups: list[str]) -> list[str]:
    for group in groups:
        if not _GROUP_PATH.match(group):
            raise ValueError(f"{group!r} is not a Keycloak group path such as '/tenants/acme/admins'")
    return groups


def _check_repositories(repositories: list[str]) -> list[str]:
    for url in repositories:
        if any(char in url for char in "*?[]"):
            raise ValueError(f"{url!r} contains a wildcard; name each repository Argo CD may deploy from")
        if not _GIT_REPOSITORY.match(url):
            raise ValueError(
                f"{url!r} is not a git repository URL; use https://host/org/repo.git, "
                "ssh://git@host/org/repo.git or git@host:org/repo.git (no credentials in the URL)"
            )
    if len(set(repositories)) != len(repositories):
        raise ValueError("repositories are listed more than once")
    return repositories


def _check_qdrant_version(version: str) -> str:
    if version not in versions.QDRANT_VERSIONS:
        supported = ", ".join(versions.QDRANT_VERSIONS)
        raise ValueError(f"Qdrant {version!r} is not offered; supported versions: {supported}")
    return version


def _check_kubernetes_version(version: str) -> str:
    if version not in versions.VCLUSTER_KUBERNETES_VERSIONS:
        supported = ", ".join(versions.VCLUSTER_KUBERNETES_VERSIONS)
        raise ValueError(f"Kubernetes {version!r} is not offered for vClusters; supported: {supported}")
    return version


# What a Kubernetes CronJob reads: five fields of numbers, ranges, steps, lists and month/day names.
# cronsim's own extensions (L, W, #, a seconds field) are refused: the CronJob would not run them.
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*,/-]+$")
_CRON_NAMES = frozenset(
    "jan feb mar apr may jun jul aug sep oct nov dec sun mon tue wed thu fri sat".split()  # noqa: SIM905
)
_CRON_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@functools.lru_cache(maxsize=1024)  # pure; parsing the cron expression was 15% of a file's check
def _check_schedule(schedule: str) -> str:
    fields = schedule.split()
    names = re.findall(r"[A-Za-z]+", schedule)
    if (
        len(fields) != 5
        or not all(_CRON_FIELD.match(field) for field in fields)
        or any(name.lower() not in _CRON_NAMES for name in names)
    ):
        raise ValueError(
            f"{schedule!r} is not a cron schedule: write five fields, minute hour day-of-month month "
            "day-of-week, e.g. '0 3 * * *' for daily at 03:00 UTC"
        )
    try:
        CronSim(schedule, _CRON_EPOCH)
    except CronSimError as error:
        raise ValueError(f"{schedule!r} is not a cron schedule: {error}") from None
    return " ".join(fields)


@functools.lru_cache(maxsize=1024)  # pure, and up to 20,000 cron steps: every PATCH validated it anew
def shortest_interval(schedule: str) -> timedelta:
    """The shortest gap between two runs of ``schedule`` over a leap year's worth of runs (bounded:
    a schedule runs at most every minute, and the first gaps under any bound show up within a day)."""
    runs = CronSim(schedule, _CRON_EPOCH)
    previous = next(runs)
    shortest = timedelta(days=366 * 4)
    horizon = _CRON_EPOCH + timedelta(days=366 * 4)  # every weekday of every date, Feb 29 included
    if schedule.split()[2:] == ["*", "*", "*"]:
        # Every day runs at the same times, so the gaps repeat daily and one day's runs show them all;
        # walking four years of a daily schedule was most of `tenantctl validate`'s start-up.
        horizon = previous + timedelta(days=1)
    for _ in range(20_000):
        current = next(runs, None)
        if current is None or current > horizon:
            break
        shortest = min(shortest, current - previous)
        if shortest <= timedelta(minutes=1):
            break
        previous = current
    return shortest


TenantName = Annotated[str, AfterValidator(_check_name)]


class _Model(BaseModel):
    # Strict: "1" is not a number, 0 is not a boolean and true is not a number, in a file as in the
    # API (what one accepts, the other must too). Enums stay lax: their values arrive as strings.
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        str_strip_whitespace=True,
        strict=True,
    )


class Resources(_Model):
    """CPU and memory of one pod. Requests equal limits: stateful services get Guaranteed QoS."""

    cpu: Cpu = Field(description="CPU per pod, e.g. '500m' or '2'.")
    memory: Bytes = Field(description="Memory per pod, e.g. '2Gi'.")


class Storage(_Model):
    size: Bytes | None = Field(
        default=None, description="Volume size per replica; defaults to the plan's size."
    )
    storage_class: str | None = Field(
        default=None,
        description="StorageClass; defaults to the platform's storage class for the environment.",
    )


class Snapshots(_Model):
    enabled: bool = Field(
        default=True,
        description=(
            "Keep Qdrant snapshots on their own persistent volume and back them up on a schedule to "
            "the platform's object storage."
        ),
    )
    size: Bytes | None = Field(default=None, description="Snapshot volume size per replica; plan default.")
    storage_class: str | None = Field(default=None, description="StorageClass for the snapshot volume.")
    schedule: Annotated[str, AfterValidator(_check_schedule)] = Field(
        default=BACKUP_DEFAULT_SCHEDULE,
        description=(
            "When the backup runs: a 5-field cron schedule in UTC, e.g. '0 3 * * *' (daily at 03:00); "
            "the plan sets how often at most."
        ),
    )
    keep_last: int | None = Field(
        default=None, ge=1, description=f"Backups kept; default {BACKUP_DEFAULT_KEEP_LAST}, the plan caps it."
    )
    max_age_days: int | None = Field(
        default=None,
        ge=1,
        description=f"Delete backups older than this, also those kept after the tenant or its Qdrant is "
        f"deleted; default {BACKUP_DEFAULT_MAX_AGE_DAYS}, plan-capped.",
    )


def _check_utc_time(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"'{value}' is not a time; write it as 2026-01-31T12:00:00Z") from None
    if parsed.utcoffset() != timedelta(0):
        raise ValueError(f"'{value}' must be in UTC (end it with Z)")
    return value


UtcTime = Annotated[str, AfterValidator(_check_utc_time)]


def parse_utc_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class KeyRotation(_Model):
    """The last rotation of the Qdrant keys: written by ``rotate-keys``, not by hand.

    Generation N's keys are derived from random passwords whose keepers name N, so the keys change
    exactly when the generation does and stay the same on every re-run. Qdrant accepts generation
    N-1's keys beside generation N's until ``revokedAt`` is recorded: the service records it once
    ``graceUntil`` has passed and queues the update that revokes them. The program never reads the
    clock, so a render of the same file is the same whenever it runs.
    """

    generation: int = Field(ge=1, le=1_000_000, description="Key generation; 0 (no record) is the first.")
    started_at: UtcTime = Field(description="When the rotation was requested (UTC).")
    grace_until: UtcTime = Field(description="Until when the previous generation's keys still work (UTC).")
    requested_by: str = Field(min_length=1, max_length=200, description="Who requested the rotation.")
    revoked_at: UtcTime | None = Field(
        default=None,
        description="When the previous generation's keys were revoked (UTC): written by the service once "
        "graceUntil has passed; until then both generations' keys work.",
    )


class QdrantSpec(_Model):
    enabled: bool = Field(default=False, description="Run a Qdrant vector database for this tenant.")
    version: Annotated[str, AfterValidator(_check_qdrant_version)] = Field(
        default=versions.QDRANT_DEFAULT_VERSION, description="Qdrant server version."
    )
    replicas: int | None = Field(
        default=None, ge=1, le=9, description="Qdrant nodes; plan default when unset."
    )
    resources: Resources | None = Field(
        default=None, description="Per-node CPU/memory; plan default when unset."
    )
    storage: Storage = Field(default_factory=Storage, description="Data volume per node.")
    read_only_key: bool = Field(default=True, description="Also generate a read-only API key.")
    snapshots: Snapshots = Field(default_factory=Snapshots, description="Snapshot volume.")
    key_rotation: KeyRotation | None = Field(
        default=None, description="The last key rotation (tenantctl rotate-keys writes it)."
    )


class VClusterSpec(_Model):
    enabled: bool = Field(
        default=False, description="Run a virtual Kubernetes cluster in the tenant namespace."
    )
    kubernetes_version: Annotated[str, AfterValidator(_check_kubernetes_version)] = Field(
        default=versions.VCLUSTER_DEFAULT_KUBERNETES_VERSION,
        description="Kubernetes minor version, e.g. '1.33'.",
    )
    resources: Resources | None = Field(default=None, description="Control-plane CPU/memory; plan default.")
    storage_class: str | None = Field(
        default=None,
        description="StorageClass of the control plane's volume; defaults to the platform's storage class.",
    )


class Groups(_Model):
    admins: Annotated[list[str], AfterValidator(_check_groups)] | None = Field(
        default=None,
        description="Keycloak groups with the tenant-admin role; default /tenants/<name>/admins.",
    )
    viewers: Annotated[list[str], AfterValidator(_check_groups)] | None = Field(
        default=None,
        description="Keycloak groups with the tenant-viewer role; default /tenants/<name>/viewers.",
    )


class GitOpsSpec(_Model):
    """What the tenant's Argo CD project may deploy from."""

    repositories: Annotated[list[str], AfterValidator(_check_repositories)] = Field(
        default_factory=list,
        max_length=MAX_REPOSITORIES,
        description=(
            "Git repositories (https:// or ssh) Argo CD may deploy this tenant's applications from; "
            "none means nothing can be deployed through Argo CD."
        ),
    )


class TenantSpec(_Model):
    """One tenant, as written in ``tenants/<env>/<name>.yaml``."""

    name: TenantName = Field(description="DNS label, unique per environment; must match the file name.")
    display_name: str | None = Field(default=None, max_length=100, description="Human-readable name.")
    owners: Annotated[list[str], AfterValidator(_check_emails)] = Field(
        min_length=1, description="Email addresses of the people accountable for this tenant."
    )
    groups: Groups = Field(default_factory=Groups, description="Keycloak groups mapped to tenant roles.")
    plan: Plan = Field(
        strict=False, description="small | medium | large: sets the quota, limits and default sizes."
    )
    labels: Annotated[dict[str, str], AfterValidator(_check_labels)] = Field(
        default_factory=dict, description="Extra labels put on every object of the tenant."
    )
    deletion_protection: bool = Field(
        default=True, description="Refuse to destroy this tenant's stack until this is set to false."
    )
    qdrant: QdrantSpec = Field(default_factory=QdrantSpec)
    vcluster: VClusterSpec = Field(default_factory=VClusterSpec)
    gitops: GitOpsSpec = Field(default_factory=GitOpsSpec, description="Argo CD project settings.")

    def to_document(self) -> dict[str, Any]:
        """The spec in its normal form: camelCase keys, defaults left out. Two specs that deploy the
        same have the same normal form (operations carry it; their fingerprints compare it)."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)

    def to_file_document(self) -> dict[str, Any]:
        """The spec as its file keeps it: camelCase keys and every field its author wrote, a value
        equal to today's default included (a Qdrant ``version`` or vCluster ``kubernetesVersion``
        pinned to today's default stays pinned when the default moves), and nothing else."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


# --- the resolved tenant -----------------------------------------------------------------------


class QdrantSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    version: str
    replicas: int
    cpu: str
    memory: str
    storage_size: str
    storage_class: str | None
    read_only_key: bool
    snapshots: bool
    snapshot_size: str
    snapshot_storage_class: str | None
    key_generation: int = 0
    # The previous generation's keys are accepted beside the current ones (a rotation whose grace
    # period has not been ended by a recorded revocation).
    key_previous_accepted: bool = False
    backup_schedule: str = BACKUP_DEFAULT_SCHEDULE
    backup_keep_last: int = BACKUP_DEFAULT_KEEP_LAST
    backup_max_age_days: int = BACKUP_DEFAULT_MAX_AGE_DAYS


class VClusterSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kubernetes_version: str
    cpu: str
    memory: str
    storage_size: str
    storage_class: str | None = None


class Tenant(BaseModel):
    """A validated tenant with every default resolved; what builders take."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    environment: str
    plan: Plan
    limits: PlanLimits
    owners: tuple[str, ...]
    admin_groups: tuple[str, ...]
    viewer_groups: tuple[str, ...]
    extra_labels: dict[str, str]
    deletion_protection: bool
    qdrant: QdrantSettings | None
    vcluster: VClusterSettings | None
    repositories: tuple[str, ...] = ()

    @property
    def namespace(self) -> str:
        return f"{NAMESPACE_PREFIX}{self.name}"

    @property
    def labels(self) -> dict[str, str]:
        """Labels every object of this tenant carries; the tenant label is what policies key on."""
        return {
            **self.extra_labels,
            LABEL_TENANT: self.name,
            LABEL_ENVIRONMENT: self.environment,
            LABEL_PLAN: self.plan.value,
            "app.kubernetes.io/managed-by": "pulumi",
        }


def resolve(spec: TenantSpec, environment: str) -> Tenant:
    limits = PLANS[spec.plan]
    qdrant, vcluster = _services(spec, limits)
    return Tenant(
        name=spec.name,
        environment=environment,
        plan=spec.plan,
        limits=limits,
        owners=tuple(spec.owners),
        admin_groups=tuple(spec.groups.admins or [f"/tenants/{spec.name}/admins"]),
        viewer_groups=tuple(spec.groups.viewers or [f"/tenants/{spec.name}/viewers"]),
        extra_labels=dict(spec.labels),
        deletion_protection=spec.deletion_protection,
        qdrant=qdrant,
        vcluster=vcluster,
        repositories=tuple(spec.gitops.repositories),
    )


def _services(spec: TenantSpec, limits: PlanLimits) -> tuple[QdrantSettings | None, VClusterSettings | None]:
    """The resolved Qdrant and vCluster of ``spec`` (None when off): all the plan checks need."""
    qdrant = None
    if spec.qdrant.enabled:
        size = spec.qdrant.resources
        rotation = spec.qdrant.key_rotation
        qdrant = QdrantSettings(
            version=spec.qdrant.version,
            replicas=spec.qdrant.replicas or limits.qdrant_default_replicas,
            cpu=size.cpu if size else limits.qdrant_default_size.cpu,
            memory=size.memory if size else limits.qdrant_default_size.memory,
            storage_size=spec.qdrant.storage.size or limits.qdrant_default_storage,
            storage_class=spec.qdrant.storage.storage_class,
            read_only_key=spec.qdrant.read_only_key,
            snapshots=spec.qdrant.snapshots.enabled,
            snapshot_size=spec.qdrant.snapshots.size or limits.qdrant_default_snapshot_storage,
            snapshot_storage_class=spec.qdrant.snapshots.storage_class or spec.qdrant.storage.storage_class,
            key_generation=rotation.generation if rotation else 0,
            key_previous_accepted=rotation is not None and rotation.revoked_at is None,
            backup_schedule=spec.qdrant.snapshots.schedule,
            backup_keep_last=spec.qdrant.snapshots.keep_last or BACKUP_DEFAULT_KEEP_LAST,
            backup_max_age_days=spec.qdrant.snapshots.max_age_days or BACKUP_DEFAULT_MAX_AGE_DAYS,
        )
    vcluster = None
    if spec.vcluster.enabled:
        size = spec.vcluster.resources
        vcluster = VClusterSettings(
            kubernetes_version=spec.vcluster.kubernetes_version,
            cpu=size.cpu if size else limits.vcluster_default_size.cpu,
            memory=size.memory if size else limits.vcluster_default_size.memory,
            storage_size=VCLUSTER_STORAGE,
            storage_class=spec.vcluster.storage_class,
        )
    return qdrant, vcluster


# --- plan limits ---------------------------------------------------------------------------------


# The plan checks' findings, (field, reason) pairs, by what they read: the plan and the Qdrant and
# vCluster specs (frozen models, hashed and compared by value). Tenants share plans and sizes, so a
# tree of thousands of files has few distinct entries; bounded all the same, like the YAML tag cache.
_PLAN_FINDINGS: dict[tuple[Plan, QdrantSpec, VClusterSpec], tuple[tuple[str, str], ...]] = {}


def plan_issues(spec: TenantSpec, *, file: str) -> list[SpecIssue]:
    """What the spec asks for beyond its plan, each with the field to change."""
    key = (spec.plan, spec.qdrant, spec.vcluster)
    findings = _PLAN_FINDINGS.get(key)
    if findings is None:
        if len(_PLAN_FINDINGS) >= 1024:
            _PLAN_FINDINGS.clear()
        findings = _PLAN_FINDINGS[key] = tuple(
            (issue.field, issue.reason) for issue in _plan_issues(spec, file=file)
        )
    return [SpecIssue(file, field, reason) for field, reason in findings]


def _plan_issues(spec: TenantSpec, *, file: str) -> list[SpecIssue]:
    limits = PLANS[spec.plan]
    qdrant, vcluster = _services(spec, limits)  # not the whole Tenant: a third of the checks' time
    plan = spec.plan.value
    issues: list[SpecIssue] = []

    def over(field: str, asked: str, maximum: str, what: str) -> None:
        if parse_quantity(asked) > parse_quantity(maximum):
            issues.append(
                SpecIssue(
                    file,
                    field,
                    f"{what} {asked} exceeds the {plan} plan's maximum of {maximum}; "
                    "ask for less or move to a larger plan",
                )
            )

    if qdrant is not None:
        q = qdrant
        if q.replicas > limits.qdrant_max_replicas:
            issues.append(
                SpecIssue(
                    file,
                    "qdrant.replicas",
                    f"{q.replicas} replicas exceed the {plan} plan's maximum of "
                    f"{limits.qdrant_max_replicas}; ask for fewer or move to a larger plan",
                )
            )
        over("qdrant.resources.cpu", q.cpu, limits.container_max.cpu, "CPU per node")
        over("qdrant.resources.memory", q.memory, limits.container_max.memory, "memory per node")
        if q.snapshots:
            issues.extend(_backup_issues(q, limits, plan=plan, file=file))
    if vcluster is not None:
        v = vcluster
        if not limits.vcluster_allowed:
            issues.append(SpecIssue(file, "vcluster.enabled", f"the {plan} plan does not include a vCluster"))
        over("vcluster.resources.cpu", v.cpu, limits.container_max.cpu, "control-plane CPU")
        over("vcluster.resources.memory", v.memory, limits.container_max.memory, "control-plane memory")

    usage = _service_usage(qdrant, vcluster)
    quota = limits.quota
    checks = [
        ("requests.cpu", quota.requests_cpu, "CPU requests", "resources.cpu"),
        ("requests.memory", quota.requests_memory, "memory requests", "resources.memory"),
        ("limits.cpu", quota.limits_cpu, "CPU limits", "resources.cpu"),
        ("limits.memory", quota.limits_memory, "memory limits", "resources.memory"),
        ("storage", quota.requests_storage, "storage", "storage.size"),
    ]
    for key, maximum, what, field in checks:
        total = sum((service.get(key, Decimal(0)) for service in usage.values()), Decimal(0))
        if total > parse_quantity(maximum):
            issues.append(
                SpecIssue(
                    file,
                    _largest_consumer(usage, key, field),
                    f"together the services need {_fmt(total)} {what} ({_COUNTED[key]}), over the "
                    f"{plan} plan's quota of {maximum}; shrink them or take a larger plan",
                )
            )
    pvcs = sum((service.get("pvcs", Decimal(0)) for service in usage.values()), Decimal(0))
    if pvcs > quota.persistent_volume_claims:
        issues.append(
            SpecIssue(
                file,
                _largest_consumer(usage, "pvcs", "replicas"),
                f"{int(pvcs)} volumes exceed the {plan} plan's "
                f"{quota.persistent_volume_claims}; use fewer replicas or disable snapshot volumes",
            )
        )
    return issues


def _backup_issues(q: QdrantSettings, limits: PlanLimits, *, plan: str, file: str) -> list[SpecIssue]:
    issues = []
    minimum = timedelta(hours=limits.backup_min_interval_hours)
    if shortest_interval(q.backup_schedule) < minimum:
        issues.append(
            SpecIssue(
                file,
                "qdrant.snapshots.schedule",
                f"{q.backup_schedule!r} runs more often than the {plan} plan's one backup every "
                f"{limits.backup_min_interval_hours}h; run it less often or move to a larger plan",
            )
        )
    if q.backup_keep_last > limits.backup_max_keep_last:
        issues.append(
            SpecIssue(
                file,
                "qdrant.snapshots.keepLast",
                f"keeping {q.backup_keep_last} backups exceeds the {plan} plan's maximum of "
                f"{limits.backup_max_keep_last}; keep fewer or move to a larger plan",
            )
        )
    if q.backup_max_age_days > limits.backup_max_age_days:
        issues.append(
            SpecIssue(
                file,
                "qdrant.snapshots.maxAgeDays",
                f"keeping backups {q.backup_max_age_days} days exceeds the {plan} plan's maximum of "
                f"{limits.backup_max_age_days}; keep them for less or move to a larger plan",
            )
        )
    return issues


# What a plan-total message says it counted, per quota item (as ``_service_usage`` counts it).
_PODS_COUNTED = "every pod's containers, their sidecars included"
_COUNTED = {
    "requests.cpu": _PODS_COUNTED,
    "requests.memory": _PODS_COUNTED,
    "limits.cpu": _PODS_COUNTED,
    "limits.memory": _PODS_COUNTED,
    "storage": "every Qdrant replica's data volume and snapshot volume, and the vCluster's volume",
}


def _service_usage(
    qdrant: QdrantSettings | None, vcluster: VClusterSettings | None
) -> dict[str, dict[str, Decimal]]:
    """What each service adds to the namespace, per quota item: sized containers plus the sidecar of
    every pod (and the vCluster's CoreDNS pod), so a spec that passes the plan check fits the quota."""
    usage: dict[str, dict[str, Decimal]] = {}
    if qdrant is not None:
        q = qdrant
        node = Size(cpu=q.cpu, memory=q.memory)
        per_node_storage = parse_quantity(q.storage_size) + (
            parse_quantity(q.snapshot_size) if q.snapshots else 0
        )
        usage["qdrant"] = {
            **_pods(q.replicas, requests=node, limits=node, sidecar=qdrant_sidecar(q.cpu)),
            "storage": per_node_storage * q.replicas,
            "pvcs": Decimal(q.replicas * (2 if q.snapshots else 1)),
        }
        if q.snapshots:
            # One backup pod at a time (concurrencyPolicy Forbid), with its sidecar; requests=limits.
            usage["backup"] = _pods(1, requests=BACKUP_JOB, limits=BACKUP_JOB)
    if vcluster is not None:
        v = vcluster
        control_plane = Size(cpu=v.cpu, memory=v.memory)
        dns = _pods(1, requests=VCLUSTER_COREDNS.requests, limits=VCLUSTER_COREDNS.limits)
        usage["vcluster"] = {
            key: value + dns[key]
            for key, value in _pods(1, requests=control_plane, limits=control_plane).items()
        }
        usage["vcluster"].update(storage=parse_quantity(v.storage_size), pvcs=Decimal(1))
    return usage


def quota_usage(spec: TenantSpec) -> dict[str, tuple[Decimal, Decimal]]:
    """Quota item -> (used, the plan's quota), counted exactly as the plan check counts (sidecars
    and the vCluster's CoreDNS pod included); what the portal shows against the limits."""
    tenant = resolve(spec, environment="-")
    usage = _service_usage(tenant.qdrant, tenant.vcluster)
    quota = tenant.limits.quota
    maxima = {
        "requests.cpu": quota.requests_cpu,
        "requests.memory": quota.requests_memory,
        "limits.cpu": quota.limits_cpu,
        "limits.memory": quota.limits_memory,
        "storage": quota.requests_storage,
    }
    totals = {
        key: (sum((s.get(key, Decimal(0)) for s in usage.values()), Decimal(0)), parse_quantity(maximum))
        for key, maximum in maxima.items()
    }
    pvcs = sum((s.get("pvcs", Decimal(0)) for s in usage.values()), Decimal(0))
    totals["persistentvolumeclaims"] = (pvcs, Decimal(quota.persistent_volume_claims))
    return totals


def _pods(count: int, *, requests: Size, limits: Size, sidecar: PodOverhead = SIDECAR) -> dict[str, Decimal]:
    """Quota use of ``count`` pods of one sized container each, with their Istio sidecars."""
    return {
        "requests.cpu": (parse_quantity(requests.cpu) + parse_quantity(sidecar.requests.cpu)) * count,
        "requests.memory": (parse_quantity(requests.memory) + parse_quantity(sidecar.requests.memory))
        * count,
        "limits.cpu": (parse_quantity(limits.cpu) + parse_quantity(sidecar.limits.cpu)) * count,
        "limits.memory": (parse_quantity(limits.memory) + parse_quantity(sidecar.limits.memory)) * count,
    }


def _largest_consumer(usage: dict[str, dict[str, Decimal]], key: str, field: str) -> str:
    """The spec field of the service using most of ``key`` (vCluster storage is fixed: never blamed)."""
    candidates = {name: values.get(key, Decimal(0)) for name, values in usage.items()}
    if field == "storage.size":
        candidates.pop("vcluster", None)
    if not candidates:
        return "plan"
    service = max(candidates, key=lambda name: candidates[name])
    return f"{service}.{field}"


def _fmt(value: Decimal) -> str:
    gib = Decimal(2) ** 30
    if value >= gib:
        return f"{(value / gib).normalize():f}Gi"
    return f"{value.normalize():f}"


_KINDS: tuple[tuple[type, str], ...] = (
    (list, "holds a list"),
    (str, "holds a string"),
    (bool, "holds a boolean"),  # before int: a bool is an int
    (int, "holds a number"),
    (float, "holds a number"),
)


def not_a_mapping(data: Any) -> str:
    """Why a document that is not a mapping is no tenant, in the words ``tenantctl validate`` and the
    service's reads and writes share: "a tenant file holds one YAML mapping, this one holds a list"."""
    kind = (
        "is empty"
        if data is None
        else next((words for cls, words in _KINDS if isinstance(data, cls)), f"holds a {type(data).__name__}")
    )
    return f"a tenant file holds one YAML mapping, this one {kind}"


def parse_tenant(data: Any, *, file: str, strings: list[str] | None = None) -> TenantSpec:
    """Validate one tenant document (schema, then plan limits); raise SpecError naming file and field.
    ``strings``: every string of ``data``, if the caller has them (see ``forbidden_characters``)."""
    if not isinstance(data, Mapping):
        raise SpecError([SpecIssue(file, "", not_a_mapping(data))])
    refused = [
        SpecIssue(file, field, reason) for field, reason in forbidden_characters(data, strings=strings)
    ]
    if refused:
        raise SpecError(refused)
    try:
        spec = TenantSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(issues_from_validation_error(error, file=file)) from None
    issues = plan_issues(spec, file=file)
    if issues:
        raise SpecError(issues)
    return spec
