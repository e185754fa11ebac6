"""Ending change requests with their tenant never costs a fetch per request: a listing with the remote
unreachable fetches at most once (a read's refresh, backing off), and what it cannot check stays
pending (outside review diff7)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fakeredis

from tests.service.conftest import Issuer, LiveServer, spec
from tests.service.test_replicas_sharing_a_remote import _remote, _replica

NAMES = ("n1", "n2", "n3")


def test_listing_with_the_remote_down_does_not_fetch_once_per_request(
    tmp_path: Path, serve: Any, issuer: Issuer
) -> None:
    remote = _remote(tmp_path)
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    app = _replica(tmp_path, "a", issuer, remote, redis)
    live: LiveServer = serve(app)
    for name in NAMES:
        path = f"/api/v1/environments/dev/tenants/{name}"
        with live.client(issuer.admin_of(name, sub="early-bird")) as early:
            document = {"owners": [f"me@{name}.example"], "plan": "large", "qdrant": {"enabled": True}}
            filed = early.put(path, json=document)
            assert filed.status_code == 202 and filed.json().get("changeRequest"), filed.text
        with live.client(issuer.platform_admin()) as admin:
            assert admin.put(path, json=spec(name)).status_code == 202  # created meanwhile
    os.rename(remote, remote + ".gone")  # the remote cannot be reached
    repository = app.state.backends.repository
    calls = []
    real_sync = repository.sync

    def counted() -> None:
        calls.append(1)
        real_sync()

    repository.sync = counted
    # As if the last fetch were long ago: the next read tries the (unreachable) remote.
    repository._synced_at = repository._fetched_at = float("-inf")
    with live.client(issuer.platform_admin()) as admin:
        for _ in range(2):
            listed = admin.get("/api/v1/change-requests?status=pending").json()["changeRequests"]
            assert len(listed) == 3  # unsure: still pending
    assert len(calls) <= 2, f"{len(calls)} blocking syncs (git fetch under the commit lock) for 2 listings"
