"""Plans: what a tenant may use. A plan sets the namespace quota, container limits and default sizes.

Changing a plan here changes every tenant on it at the next update; add a new plan rather than
shrinking one that tenants already fill.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from tenancy.spec.quantity import parse_quantity


class Plan(StrEnum):
    small = "small"
    medium = "medium"
    large = "large"


class Size(BaseModel):
    """CPU and memory for one pod; requests equal limits (Guaranteed QoS for stateful services)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    cpu: str
    memory: str


class PlanQuota(BaseModel):
    """The namespace ResourceQuota of a plan (values are Kubernetes quantities or counts)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    requests_cpu: str
    requests_memory: str
    limits_cpu: str
    limits_memory: str
    requests_storage: str
    persistent_volume_claims: int
    pods: int
    services: int
    secrets: int
    config_maps: int


class PlanLimits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    quota: PlanQuota
    container_max: Size = Field(description="Largest single container (LimitRange max).")
    container_default: Size = Field(description="Limit given to a container that sets none.")
    container_default_request: Size = Field(description="Request given to a container that sets none.")
    qdrant_max_replicas: int
    qdrant_default_replicas: int
    qdrant_default_size: Size
    qdrant_default_storage: str
    qdrant_default_snapshot_storage: str
    vcluster_allowed: bool
    vcluster_default_size: Size
    backup_min_interval_hours: int = Field(description="Shortest time between two scheduled backups.")
    backup_max_keep_last: int = Field(description="Most backups kept (qdrant.snapshots.keepLast).")
    backup_max_age_days: int = Field(description="Oldest a kept backup may be (qdrant.snapshots.maxAgeDays).")


# The vCluster's data volume is the same on every plan: it sits in a StatefulSet volumeClaimTemplate,
# which Kubernetes cannot change, so a plan change must not change it.
VCLUSTER_STORAGE = "10Gi"


class PodOverhead(BaseModel):
    """What every pod in a tenant namespace costs beyond the containers a tenant sizes."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    requests: Size
    limits: Size

    def istio_annotations(self) -> dict[str, str]:
        """Pod annotations that size this pod's injected sidecar (Istio's per-pod resource override)."""
        return {
            "sidecar.istio.io/proxyCPU": self.requests.cpu,
            "sidecar.istio.io/proxyCPULimit": self.limits.cpu,
            "sidecar.istio.io/proxyMemory": self.requests.memory,
            "sidecar.istio.io/proxyMemoryLimit": self.limits.memory,
        }


def guaranteed(size: Size) -> PodOverhead:
    """Requests equal to limits: with its main container sized the same way the pod is Guaranteed."""
    return PodOverhead(requests=size, limits=size)


# The Istio sidecar injected into every tenant pod (tenancy.builders.istio sets it from these).
SIDECAR = PodOverhead(requests=Size(cpu="50m", memory="128Mi"), limits=Size(cpu="500m", memory="256Mi"))
# Qdrant's sidecar carries every byte its node serves, to clients and to its peers: it gets a quarter
# of the node's CPU (at least 500m, so a small node is not capped below the mesh default) and requests
# equal to limits, which keeps the pod Guaranteed (tenancy.builders.qdrant sets it per pod).
QDRANT_SIDECAR_MIN_CPU_MILLI = 500
QDRANT_SIDECAR_MEMORY = "512Mi"


def qdrant_sidecar(cpu: str) -> PodOverhead:
    """The sidecar of a Qdrant node of ``cpu`` (a Kubernetes quantity); requests equal limits."""
    milli = max(QDRANT_SIDECAR_MIN_CPU_MILLI, int(parse_quantity(cpu) * 1000 / 4))
    return guaranteed(Size(cpu=f"{milli}m", memory=QDRANT_SIDECAR_MEMORY))


# The scheduled backup job's container (tenancy.builders.backup sizes it from this): it streams a
# snapshot from Qdrant to the object store, so it needs little CPU and a bounded buffer.
BACKUP_JOB = Size(cpu="100m", memory="256Mi")
# Defaults of qdrant.snapshots when a tenant sets none; a plan's maxima must allow them.
BACKUP_DEFAULT_SCHEDULE = "0 3 * * *"  # daily at 03:00 UTC
BACKUP_DEFAULT_KEEP_LAST = 7
BACKUP_DEFAULT_MAX_AGE_DAYS = 14

# The CoreDNS pod a vCluster runs in the host namespace (vcluster 0.36 chart defaults).
VCLUSTER_COREDNS = PodOverhead(requests=Size(cpu="20m", memory="64Mi"), limits=Size(cpu="1", memory="170Mi"))
# The vCluster control plane's init container and ephemeral storage are not CPU/memory quota items
# beyond its own size; its memory limit equals its request (set in tenancy.builders.vcluster).


PLANS: dict[Plan, PlanLimits] = {
    Plan.small: PlanLimits(
        quota=PlanQuota(
            requests_cpu="4",
            requests_memory="8Gi",
            limits_cpu="8",
            limits_memory="16Gi",
            requests_storage="100Gi",
            persistent_volume_claims=10,
            pods=30,
            services=15,
            secrets=50,
            config_maps=50,
        ),
        container_max=Size(cpu="2", memory="4Gi"),
        container_default=Size(cpu="500m", memory="512Mi"),
        container_default_request=Size(cpu="100m", memory="128Mi"),
        qdrant_max_replicas=1,
        qdrant_default_replicas=1,
        qdrant_default_size=Size(cpu="500m", memory="1Gi"),
        qdrant_default_storage="10Gi",
        qdrant_default_snapshot_storage="5Gi",
        vcluster_allowed=True,
        vcluster_default_size=Size(cpu="500m", memory="1Gi"),
        backup_min_interval_hours=24,
        backup_max_keep_last=7,
        backup_max_age_days=14,
    ),
    Plan.medium: PlanLimits(
        quota=PlanQuota(
            requests_cpu="16",
            requests_memory="32Gi",
            limits_cpu="32",
            limits_memory="64Gi",
            requests_storage="500Gi",
            persistent_volume_claims=30,
            pods=100,
            services=40,
            secrets=150,
            config_maps=150,
        ),
        container_max=Size(cpu="8", memory="16Gi"),
        container_default=Size(cpu="500m", memory="512Mi"),
        container_default_request=Size(cpu="100m", memory="128Mi"),
        qdrant_max_replicas=3,
        qdrant_default_replicas=1,
        qdrant_default_size=Size(cpu="1", memory="4Gi"),
        qdrant_default_storage="50Gi",
        qdrant_default_snapshot_storage="20Gi",
        vcluster_allowed=True,
        vcluster_default_size=Size(cpu="1", memory="2Gi"),
        backup_min_interval_hours=6,
        backup_max_keep_last=30,
        backup_max_age_days=60,
    ),
    Plan.large: PlanLimits(
        quota=PlanQuota(
            requests_cpu="64",
            requests_memory="128Gi",
            limits_cpu="128",
            limits_memory="256Gi",
            requests_storage="2Ti",
            persistent_volume_claims=100,
            pods=300,
            services=100,
            secrets=500,
            config_maps=500,
        ),
        container_max=Size(cpu="16", memory="64Gi"),
        container_default=Size(cpu="1", memory="1Gi"),
        container_default_request=Size(cpu="100m", memory="128Mi"),
        qdrant_max_replicas=9,
        qdrant_default_replicas=3,
        qdrant_default_size=Size(cpu="2", memory="8Gi"),
        qdrant_default_storage="200Gi",
        qdrant_default_snapshot_storage="100Gi",
        vcluster_allowed=True,
        vcluster_default_size=Size(cpu="2", memory="4Gi"),
        backup_min_interval_hours=1,
        backup_max_keep_last=168,
        backup_max_age_days=365,
    ),
}
