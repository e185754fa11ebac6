"""A Qdrant stand-in: several peers over real HTTP on loopback, sharing one cluster state.

It implements what backups, restores and drains call, with Qdrant's shapes and refusals: API-key
check, shard snapshots taken only where a replica lives, uploads checked against their checksum,
cluster operations (move, replicate, drop) and refusing to remove a peer that still holds shards.
Points are kept per shard, so a test can tell whether data survived.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from tests.ports import listening_socket

API_KEY = "standin-key"


@dataclass
class Shard:
    points: dict[str, Any] = field(default_factory=dict)
    replicas: dict[int, str] = field(default_factory=dict)  # peer -> state


@dataclass
class Collection:
    params: dict[str, Any]
    shards: dict[int, Shard] = field(default_factory=dict)


@dataclass
class ClusterState:
    peers: dict[int, str] = field(default_factory=dict)  # peer id -> p2p uri
    collections: dict[str, Collection] = field(default_factory=dict)
    snapshots: dict[tuple[int, str, int, str], bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    fail: set[str] = field(default_factory=set)  # names of operations to fail, for failure tests
    corrupt_download: bool = False

    def add_collection(self, name: str, *, shards: int, replication_factor: int, points: int) -> None:
        peers = sorted(self.peers)
        collection = Collection(
            params={
                "vectors": {"size": 4, "distance": "Cosine"},
                "shard_number": shards,
                "replication_factor": replication_factor,
            }
        )
        for shard_id in range(shards):
            holders = [peers[(shard_id + i) % len(peers)] for i in range(min(replication_factor, len(peers)))]
            collection.shards[shard_id] = Shard(replicas={p: "Active" for p in holders})
        for n in range(points):
            collection.shards[n % shards].points[f"p{n}"] = {"vector": [n, 1, 2, 3], "payload": {"n": n}}
        self.collections[name] = collection

    def all_points(self, name: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for shard in self.collections[name].shards.values():
            merged.update(shard.points)
        return merged


def _ok(result: Any) -> JSONResponse:
    return JSONResponse({"result": result, "status": "ok", "time": 0.0})


def _error(code: int, message: str) -> JSONResponse:
    return JSONResponse({"status": {"error": message}, "time": 0.0}, status_code=code)


def peer_app(state: ClusterState, me: int) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def require_key(request: Request, call_next: Any) -> Any:
        if request.headers.get("api-key") != API_KEY:
            return _error(401, "Must provide an API key or an Authorization bearer token")
        return await call_next(request)

    @app.get("/cluster")
    def cluster() -> JSONResponse:
        return _ok(
            {
                "status": "enabled",
                "peer_id": me,
                "peers": {str(p): {"uri": u} for p, u in state.peers.items()},
            }
        )

    @app.delete("/cluster/peer/{peer_id}")
    def remove_peer(peer_id: int) -> JSONResponse:
        with state.lock:
            for collection in state.collections.values():
                if any(peer_id in s.replicas for s in collection.shards.values()):
                    return _error(400, f"Bad request: Cannot remove peer {peer_id} as there are shards on it")
            state.peers.pop(peer_id, None)
        return _ok(True)

    @app.get("/collections")
    def collections() -> JSONResponse:
        return _ok({"collections": [{"name": n} for n in sorted(state.collections)]})

    @app.get("/collections/{name}")
    def collection(name: str) -> JSONResponse:
        if name not in state.collections:
            return _error(404, f"Not found: Collection `{name}` doesn't exist!")
        c = state.collections[name]
        return _ok({"status": "green", "config": {"params": c.params, "hnsw_config": {"m": 16}}})

    @app.put("/collections/{name}")
    async def create(name: str, request: Request) -> JSONResponse:
        params = await request.json()
        with state.lock:
            if name in state.collections:
                return _error(409, f"Wrong input: Collection `{name}` already exists!")
            peers = sorted(state.peers)
            rf = min(int(params.get("replication_factor", 1)), len(peers))
            c = Collection(params={k: v for k, v in params.items() if k != "hnsw_config"})
            for shard_id in range(int(params.get("shard_number", 1))):
                c.shards[shard_id] = Shard(
                    replicas={peers[(shard_id + i) % len(peers)]: "Active" for i in range(rf)}
                )
            state.collections[name] = c
        return _ok(True)

    @app.delete("/collections/{name}")
    def delete(name: str) -> JSONResponse:
        with state.lock:
            state.collections.pop(name, None)
        return _ok(True)

    @app.get("/collections/{name}/cluster")
    def layout(name: str) -> JSONResponse:
        c = state.collections[name]
        local, remote = [], []
        for shard_id, shard in sorted(c.shards.items()):
            for peer, status in sorted(shard.replicas.items()):
                entry = {"shard_id": shard_id, "state": status}
                if peer == me:
                    local.append({**entry, "points_count": len(shard.points)})
                else:
                    remote.append({**entry, "peer_id": peer})
        return _ok(
            {
                "peer_id": me,
                "shard_count": len(c.shards),
                "local_shards": local,
                "remote_shards": remote,
                "shard_transfers": [],
            }
        )

    @app.post("/collections/{name}/cluster")
    async def operate(name: str, request: Request) -> JSONResponse:
        body = await request.json()
        ((kind, op),) = body.items()
        if kind in state.fail:
            return _error(500, f"Service internal error: {kind} failed")
        with state.lock:
            shard = state.collections[name].shards[int(op["shard_id"])]
            if kind in ("move_shard", "replicate_shard"):
                if op["from_peer_id"] not in shard.replicas or op["to_peer_id"] not in state.peers:
                    return _error(400, "Bad request: invalid transfer")
                shard.replicas[op["to_peer_id"]] = "Active"
                if kind == "move_shard":
                    del shard.replicas[op["from_peer_id"]]
            elif kind == "drop_replica":
                if len(shard.replicas) < 2:
                    return _error(400, "Bad request: cannot drop the last replica of a shard")
                shard.replicas.pop(op["peer_id"], None)
            else:
                return _error(400, f"Bad request: unknown operation {kind}")
        return _ok(True)

    @app.post("/collections/{name}/shards/{shard_id}/snapshots")
    def snapshot(name: str, shard_id: int) -> JSONResponse:
        shard = state.collections[name].shards[shard_id]
        if me not in shard.replicas:
            return _error(404, f"Not found: shard {shard_id} is not on peer {me}")
        data = json.dumps(shard.points, sort_keys=True).encode()
        snap = f"{name}-shard-{shard_id}-{time.time_ns()}.snapshot"
        state.snapshots[(me, name, shard_id, snap)] = data
        return _ok({"name": snap, "size": len(data), "checksum": hashlib.sha256(data).hexdigest()})

    @app.get("/collections/{name}/shards/{shard_id}/snapshots/{snap}")
    def download(name: str, shard_id: int, snap: str) -> Response:
        data = state.snapshots.get((me, name, shard_id, snap))
        if data is None:
            return _error(404, f"Not found: snapshot {snap}")
        if state.corrupt_download:
            data = data[:-1] + b"X"
        return Response(data, media_type="application/octet-stream")

    @app.delete("/collections/{name}/shards/{shard_id}/snapshots/{snap}")
    def drop_snapshot(name: str, shard_id: int, snap: str) -> JSONResponse:
        state.snapshots.pop((me, name, shard_id, snap), None)
        return _ok(True)

    @app.post("/collections/{name}/shards/{shard_id}/snapshots/upload")
    async def upload(
        name: str, shard_id: int, request: Request, snapshot: Annotated[UploadFile, File()]
    ) -> JSONResponse:
        data = await snapshot.read()
        if request.query_params.get("checksum") not in (None, hashlib.sha256(data).hexdigest()):
            return _error(400, "Bad request: Snapshot checksum mismatch")
        with state.lock:
            shard = state.collections[name].shards[shard_id]
            if me not in shard.replicas:
                return _error(404, f"Not found: shard {shard_id} is not on peer {me}")
            shard.points = json.loads(data)
        return _ok(True)

    return app


@contextmanager
def qdrant_cluster(peers: int) -> Iterator[tuple[ClusterState, dict[int, str]]]:
    """Start ``peers`` stand-in peers on loopback; yields the state and each peer's HTTP URL."""
    state = ClusterState()
    servers: list[uvicorn.Server] = []
    urls: dict[int, str] = {}
    sockets: dict[int, socket.socket] = {}
    for peer in range(1, peers + 1):
        peer_id = 1000 + peer
        sockets[peer_id] = listening_socket()  # the port is the peer's from here on (tests/ports.py)
        urls[peer_id] = f"http://127.0.0.1:{sockets[peer_id].getsockname()[1]}"
        state.peers[peer_id] = urls[peer_id] + "/"
    for peer_id, url in urls.items():
        port = int(url.rsplit(":", 1)[1])
        config = uvicorn.Config(peer_app(state, peer_id), host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        threading.Thread(target=server.run, kwargs={"sockets": [sockets[peer_id]]}, daemon=True).start()
        servers.append(server)
    deadline = time.monotonic() + 10
    while not all(s.started for s in servers):
        if time.monotonic() > deadline:
            raise RuntimeError("Qdrant stand-in did not start")
        time.sleep(0.02)
    try:
        yield state, urls
    finally:
        for server in servers:
            server.should_exit = True
        for peer_socket in sockets.values():
            peer_socket.close()
