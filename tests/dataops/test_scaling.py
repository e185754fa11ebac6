"""Scale-down drains peers before pods go; scale-up restores the replication factor."""

from __future__ import annotations

import pytest

from tenancy.dataops.qdrant_api import QdrantCluster, statefulset_ordinal
from tenancy.dataops.scaling import ScalingError, drain, rebalance
from tests.dataops.qdrant_standin import ClusterState

Cluster = tuple[ClusterState, QdrantCluster]


def _ordinals(state: ClusterState) -> dict[str, int]:
    return {uri: index for index, uri in enumerate(state.peers[p] for p in sorted(state.peers))}


def test_draining_to_one_node_moves_every_shard_before_removing_peers(cluster: Cluster) -> None:
    state, qdrant = cluster
    state.add_collection("docs", shards=4, replication_factor=1, points=40)
    state.add_collection("pairs", shards=2, replication_factor=2, points=10)
    points = {name: state.all_points(name) for name in state.collections}
    ordinals = _ordinals(state)
    ordinals_by_peer = dict(state.peers)
    first = min(state.peers)

    report = drain(qdrant, replicas=1, ordinal_of=ordinals.get, transfer_timeout=5)

    assert sorted(state.peers) == [first]
    assert report.removed_peers == sorted(p for p in ordinals_by_peer if p != first)
    for collection in state.collections.values():
        for shard in collection.shards.values():
            assert set(shard.replicas) == {first}
    assert {name: state.all_points(name) for name in state.collections} == points


def test_draining_keeps_the_replication_factor_where_enough_peers_stay(cluster: Cluster) -> None:
    state, qdrant = cluster
    state.add_collection("docs", shards=3, replication_factor=2, points=9)
    drain(qdrant, replicas=2, ordinal_of=_ordinals(state).get, transfer_timeout=5)
    assert len(state.peers) == 2
    for shard in state.collections["docs"].shards.values():
        assert len(shard.replicas) == 2 and set(shard.replicas) <= set(state.peers)


def test_a_failed_move_removes_no_peer_and_says_what_to_do(cluster: Cluster) -> None:
    state, qdrant = cluster
    state.add_collection("docs", shards=3, replication_factor=1, points=9)
    state.fail.add("move_shard")
    with pytest.raises(ScalingError, match="The StatefulSet was not shrunk and no volume was deleted"):
        drain(qdrant, replicas=1, ordinal_of=_ordinals(state).get, transfer_timeout=5)
    assert len(state.peers) == 3


def test_scale_up_replicates_shards_onto_new_peers(cluster: Cluster) -> None:
    state, qdrant = cluster
    first = min(state.peers)
    state.add_collection("docs", shards=2, replication_factor=3, points=6)
    for shard in state.collections["docs"].shards.values():
        shard.replicas = {first: "Active"}  # as created while the cluster had one node

    report = rebalance(qdrant, transfer_timeout=5)

    assert len(report.replicated) == 4
    for shard in state.collections["docs"].shards.values():
        assert set(shard.replicas) == set(state.peers)


def test_the_pod_ordinal_is_read_from_the_peer_uri() -> None:
    assert statefulset_ordinal("http://qdrant-2.qdrant-headless:6335/") == 2
    assert statefulset_ordinal("http://qdrant-12.qdrant-headless.tenant-acme.svc:6335/") == 12
    assert statefulset_ordinal("http://10.0.0.4:6335/") is None
