"""Scaling a tenant's Qdrant without losing shards.

A StatefulSet scaled from n to m removes pods m..n-1. Before that happens, every shard replica on
those peers moves to a peer that stays (or is dropped where enough replicas stay), and the peers
leave the consensus. Only then may the StatefulSet shrink and the removed pods' volumes be deleted.
After scaling up, shards are replicated onto the new peers until every shard has the replication
factor its collection asked for (bounded by the number of peers).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from tenancy.dataops.qdrant_api import QdrantCluster, QdrantError, statefulset_ordinal

Progress = Callable[[str], None]


class ScalingError(RuntimeError):
    """A drain or rebalance step failed; nothing was shrunk. The message says what to do."""


@dataclass
class ScalingReport:
    moved: list[str] = field(default_factory=list)
    replicated: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    removed_peers: list[int] = field(default_factory=list)


def peers_to_remove(
    uris: dict[int, str], replicas: int, ordinal_of: Callable[[str], int | None]
) -> list[int]:
    """The peers whose pods a StatefulSet of ``replicas`` pods no longer has."""
    doomed = []
    for peer_id, uri in uris.items():
        ordinal = ordinal_of(uri)
        if ordinal is None:
            raise ScalingError(f"peer {peer_id} ({uri}) is not a pod of the StatefulSet; drain it by hand")
        if ordinal >= replicas:
            doomed.append(peer_id)
    return sorted(doomed)


def drain(
    qdrant: QdrantCluster,
    *,
    replicas: int,
    ordinal_of: Callable[[str], int | None] = statefulset_ordinal,
    transfer_timeout: float = 3600,
    progress: Progress = lambda _: None,
) -> ScalingReport:
    """Empty the peers a shrink to ``replicas`` pods would remove, then remove them from the cluster."""
    if replicas < 1:
        raise ScalingError("a Qdrant keeps at least one node")
    uris = qdrant.peer_uris()
    doomed = peers_to_remove(uris, replicas, ordinal_of)
    staying = sorted(set(uris) - set(doomed))
    report = ScalingReport()
    if not doomed:
        return report
    try:
        for collection in qdrant.collections():
            wanted = int(qdrant.collection_params(collection).get("replication_factor", 1))
            layout = qdrant.layout(collection)
            load = Counter(r.peer_id for r in layout.replicas if r.peer_id in staying)
            for shard_id in layout.shard_ids():
                holders = set(layout.holders(shard_id, active_only=False))
                kept = holders & set(staying)
                leaving = sorted(holders & set(doomed))
                target_count = min(wanted, len(staying))
                for source in leaving:
                    if len(kept) < max(target_count, 1):
                        candidates = [p for p in staying if p not in kept]
                        target = min(candidates, key=lambda p: (load[p], p))
                        qdrant.cluster_operation(
                            collection,
                            {
                                "move_shard": {
                                    "shard_id": shard_id,
                                    "from_peer_id": source,
                                    "to_peer_id": target,
                                }
                            },
                        )
                        kept.add(target)
                        load[target] += 1
                        report.moved.append(f"{collection}/{shard_id}: {source} -> {target}")
                        progress(f"moving {collection} shard {shard_id} from peer {source} to {target}")
                    else:
                        qdrant.cluster_operation(
                            collection, {"drop_replica": {"shard_id": shard_id, "peer_id": source}}
                        )
                        report.dropped.append(f"{collection}/{shard_id}@{source}")
            qdrant.wait_for_transfers(collection, timeout=transfer_timeout)
            left = [r for r in qdrant.layout(collection).replicas if r.peer_id in doomed]
            if left:
                raise ScalingError(
                    f"collection {collection!r} still has shards on peers "
                    f"{sorted({r.peer_id for r in left})} after the moves"
                )
        for peer_id in doomed:
            qdrant.remove_peer(peer_id)
            report.removed_peers.append(peer_id)
            progress(f"removed peer {peer_id} from the cluster")
    except (QdrantError, ScalingError) as error:
        raise ScalingError(
            f"draining the nodes to remove failed: {error}. The StatefulSet was not shrunk and no volume "
            "was deleted; fix the cause (see the Qdrant logs) and run the scale-down again"
        ) from None
    return report


def rebalance(
    qdrant: QdrantCluster, *, transfer_timeout: float = 3600, progress: Progress = lambda _: None
) -> ScalingReport:
    """After new peers joined: give every shard the replication factor its collection asked for."""
    report = ScalingReport()
    peers = sorted(qdrant.peer_uris())
    try:
        for collection in qdrant.collections():
            wanted = min(int(qdrant.collection_params(collection).get("replication_factor", 1)), len(peers))
            layout = qdrant.layout(collection)
            load = Counter(r.peer_id for r in layout.replicas)
            for shard_id in layout.shard_ids():
                active = layout.holders(shard_id)
                if not active:
                    raise ScalingError(f"shard {shard_id} of {collection!r} has no active replica to copy")
                holders = set(layout.holders(shard_id, active_only=False))
                while len(holders) < wanted:
                    target = min((p for p in peers if p not in holders), key=lambda p: (load[p], p))
                    qdrant.cluster_operation(
                        collection,
                        {
                            "replicate_shard": {
                                "shard_id": shard_id,
                                "from_peer_id": active[0],
                                "to_peer_id": target,
                            }
                        },
                    )
                    holders.add(target)
                    load[target] += 1
                    report.replicated.append(f"{collection}/{shard_id}: {active[0]} -> {target}")
                    progress(f"replicating {collection} shard {shard_id} to peer {target}")
            qdrant.wait_for_transfers(collection, timeout=transfer_timeout)
    except (QdrantError, ScalingError) as error:
        raise ScalingError(
            f"replicating shards onto the new nodes failed: {error}. The data is safe on the old nodes; "
            "run the rebalance again once the cause is fixed"
        ) from None
    return report
