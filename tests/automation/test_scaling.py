"""Changing a tenant's Qdrant node count through `tenantctl up`: drained before the shrink, volumes
deleted after it, shards replicated after growth. The fake engine plays Pulumi; a multi-peer Qdrant
stand-in on loopback plays the tenant's cluster; a recording double plays Kubernetes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

import tenancy.cli.operations as operations
from tenancy.automation.contract import (
    EmitEvent,
    EngineRequest,
    EngineResult,
    OperationKind,
    OperationStatus,
    StackRef,
)
from tenancy.automation.errors import FixedVolumesChanged
from tenancy.automation.fake_engine import FakeEngine
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.automation.scaling import QdrantScaling, ScalingPlan, plan_scaling
from tenancy.automation.storage import QUEUE_FILE
from tenancy.automation.worker import Worker
from tenancy.cli import app, exit_codes
from tenancy.dataops.qdrant_api import QdrantCluster
from tenancy.spec.platform import platform_config_reader
from tenancy.spec.tenant import Tenant, parse_tenant, resolve
from tests.dataops.qdrant_standin import API_KEY, ClusterState, qdrant_cluster

runner = CliRunner()
ACME = StackRef("dev", "acme")


class RecordingEngine(FakeEngine):
    """The fake engine, noting how many Qdrant peers were still in the cluster when the update ran."""

    def __init__(self, state: ClusterState, log: list[Any]) -> None:
        super().__init__()
        self.state, self.log = state, log

    def run(self, request: EngineRequest, emit: EmitEvent) -> EngineResult:
        self.log.append(("update", len(self.state.peers)))
        return super().run(request, emit)


class FakeKubernetes:
    def __init__(self, log: list[Any]) -> None:
        self.log = log
        self.fail = False

    def delete_pvcs(self, namespace: str, names: Sequence[str]) -> None:
        if self.fail:
            from tenancy.automation.scaling import ScalingFailed

            raise ScalingFailed("persistentvolumeclaims is forbidden")
        self.log.append(("delete_pvcs", namespace, list(names)))

    def resize_pvcs(self, namespace: str, names: Sequence[str], size: str) -> None:
        if self.fail:
            from tenancy.automation.scaling import ScalingFailed

            raise ScalingFailed("persistentvolumeclaims is forbidden")
        self.log.append(("resize_pvcs", namespace, list(names), size))

    def orphan_statefulset(self, namespace: str, name: str) -> None:
        self.log.append(("orphan_statefulset", namespace, name))


class Setup:
    def __init__(
        self, project: Path, state: ClusterState, engine: RecordingEngine, kube: FakeKubernetes
    ) -> None:
        self.project, self.state, self.engine, self.kube = project, state, engine, kube

    def up(self, replicas: int, **qdrant: Any) -> Result:
        spec = {
            "name": "acme",
            "owners": ["team@acme.example"],
            "plan": "medium",
            "deletionProtection": False,
            "qdrant": {"enabled": True, "replicas": replicas, "snapshots": {"enabled": False}, **qdrant},
        }
        (self.project / "tenants" / "dev" / "acme.yaml").write_text(yaml.safe_dump(spec))
        return runner.invoke(app, ["up", "acme", "--env", "dev", "--project", str(self.project)])

    def deployed_replicas(self) -> int:
        spec = self.engine.deployed_spec(ACME)
        assert spec is not None
        return int(spec["qdrant"]["replicas"])


@pytest.fixture
def setup(cli_project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    log: list[Any] = []
    with qdrant_cluster(3) as (state, urls):
        engine = RecordingEngine(state, log)
        kube = FakeKubernetes(log)
        ordinals = {state.peers[p]: index for index, p in enumerate(sorted(state.peers))}
        first = urls[min(urls)]
        scaling = QdrantScaling(
            kubernetes=kube,
            connect=lambda stack, tenant: QdrantCluster(
                url=first, api_key=API_KEY, timeout=10, http_port=None
            ),
            platform_of=platform_config_reader(cli_project),
            ordinal_of=ordinals.get,
            transfer_timeout=5,
            join_timeout=0,
        )
        monkeypatch.setattr(operations, "make_engine", lambda settings: engine)
        monkeypatch.setattr(operations, "make_scaling", lambda settings, engine: scaling)
        yield Setup(cli_project, state, engine, kube)


def test_scale_down_drains_before_the_shrink_and_deletes_volumes_only_after(setup: Setup) -> None:
    assert setup.up(3).exit_code == 0
    setup.state.add_collection("docs", shards=4, replication_factor=1, points=40)
    points = setup.state.all_points("docs")
    setup.engine.log.clear()

    result = setup.up(1)

    assert result.exit_code == 0, result.output
    # The update ran with the two departing peers already out of the cluster, then the volumes went.
    assert setup.engine.log == [
        ("update", 1),
        ("delete_pvcs", "tenant-acme", ["qdrant-storage-qdrant-1", "qdrant-storage-qdrant-2"]),
    ]
    assert setup.deployed_replicas() == 1
    assert setup.state.all_points("docs") == points
    [only] = setup.state.peers
    assert all(set(shard.replicas) == {only} for shard in setup.state.collections["docs"].shards.values())


def test_a_failed_drain_leaves_the_statefulset_and_volumes_and_says_what_to_do(setup: Setup) -> None:
    assert setup.up(3).exit_code == 0
    setup.state.add_collection("docs", shards=3, replication_factor=1, points=9)
    setup.state.fail.add("move_shard")
    setup.engine.log.clear()

    result = setup.up(1)

    assert result.exit_code == exit_codes.OPERATION_FAILED
    assert "The StatefulSet was not shrunk and no volume was deleted" in result.output
    assert "run the scale-down again" in result.output
    assert setup.engine.log == []  # no update, no volume deleted
    assert setup.deployed_replicas() == 3
    assert len(setup.state.peers) == 3


def test_a_failed_update_after_the_drain_deletes_no_volume(setup: Setup) -> None:
    assert setup.up(3).exit_code == 0
    setup.engine.fail_next(ACME, "the Helm release timed out")
    setup.engine.log.clear()

    assert setup.up(2).exit_code == exit_codes.OPERATION_FAILED
    assert [entry[0] for entry in setup.engine.log] == ["update"]
    assert setup.deployed_replicas() == 3

    # Running it again finds the peer already drained and finishes the job.
    assert setup.up(2).exit_code == 0
    assert setup.engine.log[-1] == ("delete_pvcs", "tenant-acme", ["qdrant-storage-qdrant-2"])


def test_a_volume_delete_failure_fails_the_operation_with_the_command_to_finish(setup: Setup) -> None:
    assert setup.up(3).exit_code == 0
    setup.kube.fail = True

    result = setup.up(2)

    assert result.exit_code == exit_codes.OPERATION_FAILED
    assert "kubectl delete pvc -n tenant-acme qdrant-storage-qdrant-2" in result.output
    assert setup.deployed_replicas() == 2


def test_scale_down_below_a_collections_replication_factor_is_refused(setup: Setup) -> None:
    assert setup.up(3).exit_code == 0
    setup.state.add_collection("pairs", shards=2, replication_factor=3, points=4)
    setup.engine.log.clear()

    result = setup.up(2)

    assert result.exit_code == exit_codes.OPERATION_FAILED
    assert "pairs ask for a replication factor of 3" in result.output
    assert "keep qdrant.replicas: 3" in result.output
    assert setup.engine.log == [] and len(setup.state.peers) == 3
    assert setup.deployed_replicas() == 3


def test_scale_up_replicates_shards_onto_the_new_nodes(setup: Setup) -> None:
    assert setup.up(1).exit_code == 0
    setup.state.add_collection("docs", shards=3, replication_factor=1, points=9)
    setup.state.collections["docs"].params["replication_factor"] = 2  # asked for 2 while there was 1 node

    result = setup.up(3)

    assert result.exit_code == 0, result.output
    for shard in setup.state.collections["docs"].shards.values():
        assert len(shard.replicas) == 2
    assert not [entry for entry in setup.engine.log if entry[0] == "delete_pvcs"]


def _allow_expansion(project: Path, classes: str) -> None:
    platform = project / "Pulumi.dev.yaml"
    document = yaml.safe_load(platform.read_text())
    document["config"]["platform:expandableStorageClasses"] = [classes]
    platform.write_text(yaml.safe_dump(document))


def test_a_volume_grows_on_an_expandable_class_claims_first_then_the_statefulset_is_recreated(
    setup: Setup,
) -> None:
    _allow_expansion(setup.project, "fast-ssd")
    assert setup.up(2, storage={"size": "10Gi", "storageClass": "fast-ssd"}).exit_code == 0
    setup.engine.log.clear()

    result = setup.up(2, storage={"size": "30Gi", "storageClass": "fast-ssd"})

    assert result.exit_code == 0, result.output
    assert setup.engine.log == [
        ("resize_pvcs", "tenant-acme", ["qdrant-storage-qdrant-0", "qdrant-storage-qdrant-1"], "30Gi"),
        ("orphan_statefulset", "tenant-acme", "qdrant"),
        ("update", 3),
    ]
    deployed = setup.engine.deployed_spec(ACME)
    assert deployed is not None and deployed["qdrant"]["storage"]["size"] == "30Gi"  # the new size recorded


def test_a_volume_on_a_class_not_listed_as_expandable_is_refused_before_anything_runs(setup: Setup) -> None:
    _allow_expansion(setup.project, "fast-ssd")
    assert setup.up(2, storage={"size": "10Gi", "storageClass": "standard"}).exit_code == 0
    setup.engine.log.clear()

    result = setup.up(2, storage={"size": "30Gi", "storageClass": "standard"})

    assert result.exit_code == exit_codes.OPERATION_FAILED
    assert "qdrant.storage.size: would grow from 10Gi to 30Gi, but StorageClass standard is not listed" in (
        " ".join(result.output.split())
    )
    assert setup.engine.log == []


def test_a_failed_resize_leaves_the_statefulset_in_place(setup: Setup) -> None:
    _allow_expansion(setup.project, "fast-ssd")
    assert setup.up(2, storage={"size": "10Gi", "storageClass": "fast-ssd"}).exit_code == 0
    setup.kube.fail = True
    setup.engine.log.clear()

    result = setup.up(2, storage={"size": "30Gi", "storageClass": "fast-ssd"})

    assert result.exit_code == exit_codes.OPERATION_FAILED
    assert "the StatefulSet was not changed" in " ".join(result.output.split())
    assert setup.engine.log == []


def _tenant(replicas: int, snapshots: bool = True) -> Tenant:
    document = {
        "name": "acme",
        "owners": ["a@acme.example"],
        "plan": "large",
        "qdrant": {"enabled": True, "replicas": replicas, "snapshots": {"enabled": snapshots}},
    }
    return resolve(parse_tenant(document, file="acme.yaml"), "dev")


def test_the_removed_nodes_volumes_include_their_snapshot_volumes() -> None:
    plan = plan_scaling(ACME, _tenant(4), _tenant(2))
    assert isinstance(plan, ScalingPlan) and plan.shrinking
    assert plan.removed_claims == [
        "qdrant-storage-qdrant-2",
        "qdrant-snapshots-qdrant-2",
        "qdrant-storage-qdrant-3",
        "qdrant-snapshots-qdrant-3",
    ]
    assert plan_scaling(ACME, _tenant(2), _tenant(2)) is None


def test_a_worker_that_cannot_reach_qdrant_refuses_a_scale_down(queue: Any, spec: Any) -> None:
    engine = FakeEngine()
    medium = {"plan": "medium", "deletionProtection": False}
    queue.submit(
        ACME,
        OperationKind.up,
        spec=spec("acme", **medium, qdrant={"enabled": True, "replicas": 3}),
        requested_by="t",
    )
    Worker(queue, engine, max_parallel=1).run_until_idle()
    queue.submit(
        ACME,
        OperationKind.up,
        spec=spec("acme", **medium, qdrant={"enabled": True, "replicas": 1}),
        requested_by="t",
    )

    [done] = Worker(queue, engine, max_parallel=1).run_until_idle()

    assert done.status is OperationStatus.failed
    assert done.summary is not None and done.summary.code == "scaling_failed"
    assert "nothing was changed" in (done.summary.error or "")
    assert len(engine.calls) == 1


def test_a_fresh_queue_still_drains_before_a_shrink(setup: Setup) -> None:
    """The applied spec comes from the stack (its ``appliedSpec`` output), not the queue's history: a
    new service or a restored (emptied) queue database still sees 3 -> 1 as a shrink."""
    assert setup.up(3).exit_code == 0
    setup.state.add_collection("docs", shards=3, replication_factor=1, points=30)
    points = setup.state.all_points("docs")
    queue_file = setup.project / ".tenancy" / QUEUE_FILE
    assert queue_file.is_file()
    queue_file.unlink()  # the queue forgets every operation; the stack's state does not
    setup.engine.log.clear()

    result = setup.up(1)

    assert result.exit_code == 0, result.output
    assert setup.engine.log == [
        ("update", 1),
        ("delete_pvcs", "tenant-acme", ["qdrant-storage-qdrant-1", "qdrant-storage-qdrant-2"]),
    ]
    assert setup.state.all_points("docs") == points


def test_a_fresh_queue_still_refuses_a_volume_change_the_stack_cannot_make(
    queue: Any, spec: Any, tmp_path: Path
) -> None:
    engine = FakeEngine()
    medium = {"plan": "medium", "deletionProtection": False}
    qdrant = {"enabled": True, "replicas": 1, "storage": {"size": "10Gi"}}
    queue.submit(ACME, OperationKind.up, spec=spec("acme", **medium, qdrant=qdrant), requested_by="t")
    Worker(queue, engine, max_parallel=1).run_until_idle()
    fresh = SqliteOperationQueue(tmp_path / "fresh.sqlite3")
    try:
        smaller = {**qdrant, "storage": {"size": "5Gi"}}
        fresh.submit(ACME, OperationKind.up, spec=spec("acme", **medium, qdrant=smaller), requested_by="t")
        [done] = Worker(fresh, engine, max_parallel=1).run_until_idle()
    finally:
        fresh.close()

    assert done.status is OperationStatus.failed
    assert done.summary is not None and done.summary.code == FixedVolumesChanged.code
    assert len(engine.calls) == 1  # only the first update ran
