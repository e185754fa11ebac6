"""The part of Qdrant's HTTP API that backups, restores and drains use.

Shard snapshots, not collection or full-storage snapshots: in a distributed Qdrant a collection
snapshot holds only the shards of the node it was taken on, and a full-storage snapshot can only be
restored by starting a node with ``--storage-snapshot``. A snapshot per shard, each taken on a peer
holding an active replica, covers every point exactly once and restores through the API into a
cluster of any size, as long as the collection is re-created with its recorded shard count.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

import httpx

ACTIVE = "Active"


class QdrantError(RuntimeError):
    """Qdrant refused or failed a call; the message says which call and Qdrant's own status."""


@dataclass(frozen=True)
class ShardReplica:
    shard_id: int
    peer_id: int
    state: str


@dataclass(frozen=True)
class CollectionLayout:
    """Where every replica of a collection's shards lives, and transfers still under way."""

    name: str
    replicas: tuple[ShardReplica, ...]
    transfers: int

    def shard_ids(self) -> list[int]:
        return sorted({replica.shard_id for replica in self.replicas})

    def holders(self, shard_id: int, *, active_only: bool = True) -> list[int]:
        return sorted(
            r.peer_id
            for r in self.replicas
            if r.shard_id == shard_id and (r.state == ACTIVE or not active_only)
        )


@dataclass
class QdrantCluster:
    """One tenant's Qdrant: a peer to ask about the cluster, and an HTTP address for every peer."""

    url: str
    api_key: str
    timeout: float = 600.0
    http_port: int | None = 6333
    # The peers' URIs name them as their own namespace resolves them (``qdrant-2.qdrant-headless``);
    # from elsewhere (the platform's workers) they need the namespace's domain, e.g.
    # ``tenant-acme.svc.cluster.local``. None: use the names as Qdrant reports them.
    peer_domain: str | None = None
    _peers: dict[int, str] = field(default_factory=dict, init=False, repr=False)
    _clients: dict[str, httpx.Client] = field(default_factory=dict, init=False, repr=False)

    def _client(self, base_url: str) -> httpx.Client:
        # One keep-alive client per peer: a backup makes several calls to each.
        base = base_url.rstrip("/")
        if base not in self._clients:
            self._clients[base] = httpx.Client(
                base_url=base, headers={"api-key": self.api_key}, timeout=self.timeout
            )
        return self._clients[base]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def _call(self, method: str, path: str, *, peer: int | None = None, **kwargs: Any) -> Any:
        base = self.url if peer is None else self.peer_url(peer)
        try:
            response = self._client(base).request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise QdrantError(f"{method} {path} on {base}: {type(error).__name__}: {error}") from None
        if response.status_code >= 400:
            raise QdrantError(f"{method} {path}: Qdrant answered {response.status_code}: {_status(response)}")
        return response.json().get("result")

    # --- cluster -------------------------------------------------------------------------------

    def peers(self) -> dict[int, str]:
        """Peer id -> HTTP address of that peer (read from its p2p URI in ``GET /cluster``)."""
        self._peers = {peer_id: self._http_address(uri) for peer_id, uri in self.peer_uris().items()}
        return dict(self._peers)

    def peer_uris(self) -> dict[int, str]:
        result = self._call("GET", "/cluster")
        return {int(peer_id): info["uri"] for peer_id, info in result.get("peers", {}).items()}

    def peer_url(self, peer_id: int) -> str:
        if peer_id not in self._peers:
            self.peers()
        try:
            return self._peers[peer_id]
        except KeyError:
            raise QdrantError(f"peer {peer_id} is not in the cluster") from None

    def _http_address(self, p2p_uri: str) -> str:
        parts = urlsplit(p2p_uri)
        host = parts.hostname or ""
        if self.peer_domain and host.count(".") < 2 and ":" not in host:
            host = f"{host}.{self.peer_domain}"  # "<pod>.<headless service>" resolves in its namespace only
        elif self.http_port is None:
            return urlunsplit((parts.scheme, parts.netloc, "", "", "")).rstrip("/")
        port = self.http_port if self.http_port is not None else parts.port
        return f"{parts.scheme}://{host}" + (f":{port}" if port else "")

    def remove_peer(self, peer_id: int) -> None:
        self._call("DELETE", f"/cluster/peer/{peer_id}")
        self._peers.pop(peer_id, None)

    # --- collections ---------------------------------------------------------------------------

    def collections(self) -> list[str]:
        result = self._call("GET", "/collections")
        return sorted(c["name"] for c in result.get("collections", []))

    def collection_params(self, name: str) -> dict[str, Any]:
        """What re-creates the collection: its params (vectors, shards, replication) and index settings."""
        config = self._call("GET", f"/collections/{name}")["config"]
        keep = ("hnsw_config", "optimizer_config", "wal_config", "quantization_config")
        body: dict[str, Any] = dict(config["params"])
        for key in keep:
            if config.get(key) is not None:
                body[key] = config[key]
        return body

    def create_collection(self, name: str, params: Mapping[str, Any]) -> None:
        self._call("PUT", f"/collections/{name}", json=dict(params))

    def delete_collection(self, name: str) -> None:
        self._call("DELETE", f"/collections/{name}")

    def layout(self, name: str) -> CollectionLayout:
        result = self._call("GET", f"/collections/{name}/cluster")
        me = int(result["peer_id"])
        replicas = [ShardReplica(int(s["shard_id"]), me, s["state"]) for s in result.get("local_shards", [])]
        replicas += [
            ShardReplica(int(s["shard_id"]), int(s["peer_id"]), s["state"])
            for s in result.get("remote_shards", [])
        ]
        return CollectionLayout(
            name, tuple(sorted(replicas, key=_replica_order)), len(result.get("shard_transfers", []))
        )

    def cluster_operation(self, name: str, operation: Mapping[str, Any]) -> None:
        self._call("POST", f"/collections/{name}/cluster", json=dict(operation))

    # --- shard snapshots -----------------------------------------------------------------------

    def create_shard_snapshot(self, collection: str, shard_id: int, *, peer: int) -> dict[str, Any]:
        result = self._call(
            "POST",
            f"/collections/{collection}/shards/{shard_id}/snapshots",
            peer=peer,
            params={"wait": "true"},
        )
        return dict(result)

    @contextmanager
    def download_shard_snapshot(
        self, collection: str, shard_id: int, snapshot: str, *, peer: int
    ) -> Iterator[Iterator[bytes]]:
        path = f"/collections/{collection}/shards/{shard_id}/snapshots/{snapshot}"
        with self._client(self.peer_url(peer)).stream("GET", path) as response:
            if response.status_code >= 400:
                response.read()
                raise QdrantError(f"GET {path}: Qdrant answered {response.status_code}: {_status(response)}")
            yield response.iter_bytes(1 << 20)

    def delete_shard_snapshot(self, collection: str, shard_id: int, snapshot: str, *, peer: int) -> None:
        self._call("DELETE", f"/collections/{collection}/shards/{shard_id}/snapshots/{snapshot}", peer=peer)

    def upload_shard_snapshot(
        self, collection: str, shard_id: int, snapshot: Path | BinaryIO, *, peer: int, checksum: str
    ) -> None:
        """Recover one shard from a snapshot; ``priority=snapshot`` makes it win over the replicas."""
        params = {"wait": "true", "priority": "snapshot", "checksum": checksum}
        path = f"/collections/{collection}/shards/{shard_id}/snapshots/upload"
        if isinstance(snapshot, Path):
            with snapshot.open("rb") as handle:
                self._call("POST", path, peer=peer, params=params, files={"snapshot": handle})
        else:
            self._call("POST", path, peer=peer, params=params, files={"snapshot": snapshot})

    def wait_for_transfers(self, collection: str, *, timeout: float, interval: float = 1.0) -> None:
        deadline = time.monotonic() + timeout
        while self.layout(collection).transfers:
            if time.monotonic() > deadline:
                raise QdrantError(f"shard transfers of {collection!r} did not finish within {timeout:.0f} s")
            time.sleep(interval)


def _replica_order(replica: ShardReplica) -> tuple[int, int]:
    return (replica.shard_id, replica.peer_id)


def _status(response: httpx.Response) -> str:
    try:
        status = response.json().get("status")
    except ValueError:
        return response.text[:200]
    if isinstance(status, dict):
        return str(status.get("error", status))[:500]
    return str(status)[:500]


_ORDINAL = re.compile(r"^[a-z0-9-]*?-(\d+)\.")


def statefulset_ordinal(uri: str) -> int | None:
    """The pod ordinal in a peer URI such as ``http://qdrant-2.qdrant-headless:6335/``."""
    match = _ORDINAL.match(urlsplit(uri).hostname or "")
    return int(match.group(1)) if match else None
