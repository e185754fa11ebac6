"""A replica whose checkout is behind the remote (up to git_refresh_seconds, or for as long as the
remote cannot be reached) does not expire a valid pending change request as "deleted since": it checks
the branch as the remote has it before it stores the expiry every replica reads (outside review diff6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fakeredis

from tests.service.conftest import Issuer, LiveServer, spec
from tests.service.test_replicas_sharing_a_remote import _remote, _replica

ACME = "/api/v1/environments/dev/tenants/acme"


def test_a_replica_behind_the_remote_does_not_expire_a_valid_request(
    tmp_path: Path, serve: Any, issuer: Issuer
) -> None:
    remote = _remote(tmp_path)
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    a: LiveServer = serve(_replica(tmp_path, "a", issuer, remote, redis))
    b: LiveServer = serve(_replica(tmp_path, "b", issuer, remote, redis, git_refresh_seconds=3600))
    with b.client(issuer.platform_admin()) as admin_b:
        assert admin_b.get(ACME).status_code == 404  # B has synced once, before acme exists
    with a.client(issuer.platform_admin()) as admin_a:
        assert admin_a.put(ACME, json=spec("acme")).status_code == 202
    with a.client(issuer.admin_of("acme")) as requester:
        filed = requester.patch(ACME, json={"groups": {"viewers": ["/auditors"]}})
        assert filed.status_code == 202, filed.text
        request_id = filed.json()["changeRequest"]["id"]
    with b.client(issuer.platform_admin()) as admin_b:
        listed = admin_b.get("/api/v1/change-requests?status=pending").json()["changeRequests"]
    with a.client(issuer.platform_admin()) as admin_a:
        shown = admin_a.get(f"/api/v1/change-requests/{request_id}").json()
        assert shown["status"] == "pending", (shown["status"], shown.get("decisionReason"), listed)
        approved = admin_a.post(f"/api/v1/change-requests/{request_id}/approve")
        assert approved.status_code == 202, approved.text
