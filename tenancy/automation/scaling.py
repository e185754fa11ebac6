"""Scaling a tenant's Qdrant around the Pulumi update that changes its StatefulSet.

The update alone cannot scale Qdrant safely: a StatefulSet shrunk by Helm drops pods whose peers stay
in the consensus and whose shards may be the only copies, and leaves their volumes behind; a grown one
starts empty peers that hold nothing until shards are replicated onto them. So the worker wraps the
update of a tenant whose ``qdrant.replicas`` changes:

- **down**: drain (move every shard replica off the peers being removed, then remove them from the
  consensus), then the update, then delete the removed pods' PersistentVolumeClaims. A failed drain
  stops before the update, so the StatefulSet is never shrunk over live shards; a failed update keeps
  the volumes.
- **up**: the update, then wait for the new peers to join and replicate shards onto them until every
  collection's replication factor holds again.

Kubernetes actions go through ``KubernetesActions`` (``kubectl`` here, a fake in tests); the tenant's
Qdrant through a ``QdrantConnector`` (its cluster API, reached from the worker).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tenancy.automation.contract import EmitEvent, Engine, StackRef
from tenancy.automation.errors import AutomationError
from tenancy.dataops.qdrant_api import QdrantCluster, QdrantError, statefulset_ordinal
from tenancy.dataops.scaling import ScalingError, drain, rebalance
from tenancy.spec.platform import PlatformConfig, platform_config_reader
from tenancy.spec.tenant import Tenant

# The chart's volumeClaimTemplates; a pod's claim is "<template>-<statefulset>-<ordinal>".
# The release is ``tenancy.builders.qdrant.RELEASE_NAME``, not imported: that module pulls in Pulumi,
# which the CLI and the service load only when they run an engine.
RELEASE_NAME = "qdrant"
STORAGE_TEMPLATE = "qdrant-storage"
SNAPSHOTS_TEMPLATE = "qdrant-snapshots"
QDRANT_HTTP_PORT = 6333


class ScalingFailed(AutomationError):
    code = "scaling_failed"


class KubernetesActions(Protocol):
    """The few Kubernetes calls scaling needs, beside what the Pulumi update declares."""

    def delete_pvcs(self, namespace: str, names: Sequence[str]) -> None:
        """Delete these PersistentVolumeClaims (absent ones are fine)."""

    def resize_pvcs(self, namespace: str, names: Sequence[str], size: str) -> None:
        """Ask for ``size`` on these PersistentVolumeClaims (their StorageClass expands them)."""

    def orphan_statefulset(self, namespace: str, name: str) -> None:
        """Delete the StatefulSet object but not its pods (``--cascade=orphan``); absent is fine."""


class Kubectl:
    """``KubernetesActions`` through the ``kubectl`` the update runner already carries."""

    def __init__(self, kubectl: str = "kubectl", *, timeout: float = 300.0) -> None:
        self.kubectl = kubectl
        self.timeout = timeout

    def delete_pvcs(self, namespace: str, names: Sequence[str]) -> None:
        if names:
            self._run(
                "delete", "persistentvolumeclaim", "--namespace", namespace, "--ignore-not-found", *names
            )

    def resize_pvcs(self, namespace: str, names: Sequence[str], size: str) -> None:
        patch = json.dumps({"spec": {"resources": {"requests": {"storage": size}}}})
        for name in names:
            self._run(
                "patch", "persistentvolumeclaim", name, "--namespace", namespace, "--type=merge", "-p", patch
            )

    def orphan_statefulset(self, namespace: str, name: str) -> None:
        self._run(
            "delete", "statefulset", name, "--namespace", namespace, "--cascade=orphan", "--ignore-not-found"
        )

    def _run(self, *args: str) -> None:
        try:
            done = subprocess.run(
                [self.kubectl, *args], capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ScalingFailed(f"kubectl {args[0]} {args[1]} could not run: {error}") from None
        if done.returncode != 0:
            reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ScalingFailed(f"kubectl {args[0]} {args[1]} failed: {reason[0]}")


# The tenant's Qdrant cluster API as the worker reaches it; the caller closes it.
QdrantConnector = Callable[[StackRef, Tenant], QdrantCluster]


def engine_qdrant_connector(engine: Engine) -> QdrantConnector:
    """Reach a tenant's Qdrant at its in-cluster Service with the API key its stack exports.

    The worker runs in the cluster (the platform's worker Deployment); the key is read from the
    stack's outputs and never leaves this process.
    """

    def connect(stack: StackRef, tenant: Tenant) -> QdrantCluster:
        key = engine.outputs(stack, reveal_secrets=True).get("qdrantApiKey")
        if not isinstance(key, str) or not key:
            raise ScalingFailed(
                f"stack {stack.name} exports no qdrantApiKey, so its Qdrant cannot be drained; run "
                "`tenantctl up` without the replica change first so the stack exports it, then scale"
            )
        domain = f"{tenant.namespace}.svc.cluster.local"
        url = f"http://{RELEASE_NAME}.{domain}:{QDRANT_HTTP_PORT}"
        return QdrantCluster(url=url, api_key=key, http_port=QDRANT_HTTP_PORT, peer_domain=domain)

    return connect


@dataclass(frozen=True)
class ScalingPlan:
    """How one update changes a tenant's Qdrant node count."""

    stack: StackRef
    tenant: Tenant
    old_replicas: int
    new_replicas: int
    grown_volumes: tuple[tuple[str, str], ...] = ()  # (volumeClaimTemplate, new size)

    @property
    def shrinking(self) -> bool:
        return self.new_replicas < self.old_replicas

    @property
    def growing(self) -> bool:
        return self.new_replicas > self.old_replicas

    @property
    def removed_claims(self) -> list[str]:
        """The PersistentVolumeClaims of the pods a shrink removes."""
        templates = [STORAGE_TEMPLATE]
        if self.tenant.qdrant is not None and self.tenant.qdrant.snapshots:
            templates.append(SNAPSHOTS_TEMPLATE)
        return [
            f"{template}-{RELEASE_NAME}-{ordinal}"
            for ordinal in range(self.new_replicas, self.old_replicas)
            for template in templates
        ]


def plan_scaling(stack: StackRef, before: Tenant, after: Tenant) -> ScalingPlan | None:
    """The node-count and volume-size change from the applied spec ``before`` to ``after``, or None.

    Sizes that changed are growths here: ``tenancy.spec.changes`` refused every other change before.
    """
    if before.qdrant is None or after.qdrant is None:
        return None
    old, new = before.qdrant, after.qdrant
    grown: list[tuple[str, str]] = []
    if new.storage_size != old.storage_size:
        grown.append((STORAGE_TEMPLATE, new.storage_size))
    if old.snapshots and new.snapshots and new.snapshot_size != old.snapshot_size:
        grown.append((SNAPSHOTS_TEMPLATE, new.snapshot_size))
    if old.replicas == new.replicas and not grown:
        return None
    return ScalingPlan(stack, after, old.replicas, new.replicas, tuple(grown))


class QdrantScaling:
    """The steps around the update (see the module docstring)."""

    def __init__(
        self,
        *,
        kubernetes: KubernetesActions,
        connect: QdrantConnector,
        platform_of: Callable[[str], PlatformConfig | None] = lambda environment: None,
        ordinal_of: Callable[[str], int | None] = statefulset_ordinal,
        transfer_timeout: float = 3600.0,
        join_timeout: float = 600.0,
        poll_interval: float = 2.0,
    ) -> None:
        self.kubernetes = kubernetes
        self.connect = connect
        self.platform_of = platform_of
        self.ordinal_of = ordinal_of
        self.transfer_timeout = transfer_timeout
        self.join_timeout = join_timeout
        self.poll_interval = poll_interval

    def volume_rules(self, environment: str) -> tuple[str | None, frozenset[str]]:
        """The platform's default StorageClass now and the classes whose volumes may grow."""
        platform = self.platform_of(environment)
        if platform is None:
            return None, frozenset()
        return platform.storage_class, frozenset(platform.expandable_storage_classes)

    def before_update(self, plan: ScalingPlan, emit: EmitEvent) -> None:
        """Drain the peers a shrink removes, or grow the volumes; raises ``ScalingFailed`` (the
        StatefulSet unchanged) on failure."""
        if plan.grown_volumes:
            self._grow_volumes(plan, emit)
        if not plan.shrinking:
            return
        emit(
            kind="diagnostic",
            status="started",
            message=f"draining Qdrant nodes {plan.new_replicas}..{plan.old_replicas - 1} before the shrink",
        )
        qdrant = self._connect(plan)
        try:
            self._refuse_below_replication_factor(qdrant, plan)
            report = drain(
                qdrant,
                replicas=plan.new_replicas,
                ordinal_of=self.ordinal_of,
                transfer_timeout=self.transfer_timeout,
                progress=lambda line: emit(kind="diagnostic", status="running", message=line),
            )
        except ScalingError as error:
            raise ScalingFailed(str(error)) from None
        finally:
            qdrant.close()
        emit(
            kind="diagnostic",
            status="done",
            message=f"drained: {len(report.moved)} shard(s) moved, {len(report.dropped)} surplus replica(s) "
            f"dropped, peers {report.removed_peers} removed from the cluster",
        )

    def _grow_volumes(self, plan: ScalingPlan, emit: EmitEvent) -> None:
        """Resize the existing claims, then delete the StatefulSet object but not its pods, so the
        update re-creates it with the new volumeClaimTemplate size (which an update cannot change)."""
        namespace = plan.tenant.namespace
        ordinals = range(min(plan.old_replicas, plan.new_replicas))
        try:
            for template, size in plan.grown_volumes:
                claims = [f"{template}-{RELEASE_NAME}-{ordinal}" for ordinal in ordinals]
                self.kubernetes.resize_pvcs(namespace, claims, size)
                emit(kind="diagnostic", status="done", message=f"asked for {size} on {', '.join(claims)}")
            self.kubernetes.orphan_statefulset(namespace, RELEASE_NAME)
        except ScalingFailed as error:
            raise ScalingFailed(
                f"growing the Qdrant volumes failed ({error.message}); the StatefulSet was not changed. "
                "Check the claims (kubectl get pvc -n "
                f"{namespace}) and the StorageClass's allowVolumeExpansion, then run the update again"
            ) from None
        emit(
            kind="diagnostic",
            status="done",
            message=f"deleted the StatefulSet {RELEASE_NAME} without its pods; the update re-creates it",
        )

    def after_update(self, plan: ScalingPlan, emit: EmitEvent) -> None:
        """After a successful update: delete the removed pods' volumes, or rebalance onto new peers."""
        if not plan.shrinking and not plan.growing:
            return
        if plan.shrinking:
            claims = plan.removed_claims
            try:
                self.kubernetes.delete_pvcs(plan.tenant.namespace, claims)
            except ScalingFailed as error:
                raise ScalingFailed(
                    f"Qdrant was scaled down to {plan.new_replicas} node(s), but deleting the volumes of "
                    f"the removed nodes failed ({error.message}); delete them by hand: kubectl delete pvc "
                    f"-n {plan.tenant.namespace} {' '.join(claims)}"
                ) from None
            emit(kind="diagnostic", status="done", message=f"deleted volumes {', '.join(claims)}")
            return
        qdrant = self._connect(plan)
        try:
            self._wait_for_peers(qdrant, plan)
            report = rebalance(
                qdrant,
                transfer_timeout=self.transfer_timeout,
                progress=lambda line: emit(kind="diagnostic", status="running", message=line),
            )
        except ScalingError as error:
            raise ScalingFailed(str(error)) from None
        finally:
            qdrant.close()
        emit(
            kind="diagnostic",
            status="done",
            message=f"rebalanced: {len(report.replicated)} shard replica(s) copied onto the new nodes",
        )

    def _connect(self, plan: ScalingPlan) -> QdrantCluster:
        try:
            return self.connect(plan.stack, plan.tenant)
        except ScalingFailed:
            raise
        except Exception as error:  # the connector is pluggable: report, never a traceback
            raise ScalingFailed(
                f"cannot reach the Qdrant of {plan.stack.name} ({type(error).__name__}); nothing was changed"
            ) from None

    @staticmethod
    def _refuse_below_replication_factor(qdrant: QdrantCluster, plan: ScalingPlan) -> None:
        try:
            factors = {
                name: int(qdrant.collection_params(name).get("replication_factor", 1))
                for name in qdrant.collections()
            }
        except QdrantError as error:
            raise ScalingError(f"reading the collections failed: {error}") from None
        above = sorted(name for name, factor in factors.items() if factor > plan.new_replicas)
        if above:
            raise ScalingFailed(
                f"cannot scale Qdrant down to {plan.new_replicas} node(s): collection(s) {', '.join(above)} "
                f"ask for a replication factor of {max(factors[n] for n in above)}, which needs that many "
                "nodes; lower their replication factor (PATCH /collections/<name>) or keep qdrant.replicas: "
                f"{plan.old_replicas}. Nothing was changed"
            )

    def _wait_for_peers(self, qdrant: QdrantCluster, plan: ScalingPlan) -> None:
        deadline = time.monotonic() + self.join_timeout
        while True:
            try:
                joined = len(qdrant.peer_uris())
            except QdrantError as error:
                raise ScalingError(f"asking the cluster for its peers failed: {error}") from None
            if joined >= plan.new_replicas:
                return
            if time.monotonic() >= deadline:
                raise ScalingError(
                    f"only {joined} of {plan.new_replicas} Qdrant nodes joined the cluster within "
                    f"{self.join_timeout:.0f} s; look at the new pods' logs"
                )
            time.sleep(self.poll_interval)


def default_scaling(engine: Engine, project_dir: Path) -> QdrantScaling | None:
    """Scaling for a worker running inside the cluster (the platform's worker Deployment), where the
    tenants' Qdrant Services resolve; None elsewhere (a laptop's ``tenantctl up``), which refuses a
    scale-down rather than shrinking over shards it cannot move."""
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    return QdrantScaling(
        kubernetes=Kubectl(),
        connect=engine_qdrant_connector(engine),
        platform_of=platform_config_reader(project_dir),
    )
