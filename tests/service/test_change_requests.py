"""Change requests: what a tenant-admin may not do alone waits for a platform-admin, is never applied
before approval, and approval applies exactly what was reviewed (or is refused when the tenant moved)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pygit2
import pytest
import yaml

from tenancy.service.core.change_requests import (
    ChangeRequest,
    ListScope,
    RedisChangeRequestStore,
    RequestStatus,
    SqliteChangeRequestStore,
    decided,
    field_diff,
)
from tests.service.conftest import AppFactory, Issuer, LiveServer, create_tenant, spec, wait_for

ACME = "/api/v1/environments/dev/tenants/acme"
PINNED = {"storage": {"size": "10Gi"}, "snapshots": {"size": "5Gi"}}  # a plan change must not grow volumes


@pytest.fixture
def live(make_app: AppFactory, serve: Any) -> LiveServer:
    app, _ = make_app()
    server: LiveServer = serve(app)
    return server


def _file(live: LiveServer, name: str = "acme") -> dict[str, Any] | None:
    text = live.app.state.backends.repository.read_text("dev", name)
    return yaml.safe_load(text) if text else None


def _operations(live: LiveServer, name: str = "acme") -> int:
    from tenancy.automation.contract import StackRef

    return len(live.app.state.backends.queue.recent(stack=StackRef("dev", name), limit=50))


def _audit(live: LiveServer) -> list[dict[str, Any]]:
    path = Path(live.app.state.backends.settings.audit_target)
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_change_reason_header_is_read_as_utf8_and_refused_with_control_characters(
    live: LiveServer, issuer: Issuer
) -> None:
    """A JSON reason with a control character is refused (422 ``invalid_character``); the header is
    shown to the same platform-admins, in terminals too (``tenantctl requests show``), so it is
    refused alike. Clients send UTF-8 bytes in headers, which are read as such."""
    create_tenant(live.app, "acme")
    requester = live.client(issuer.admin_of("acme", sub="alice"))
    change = {"plan": "medium", "qdrant": PINNED}
    sneaky = requester.patch(ACME, json=change, headers={"Change-Reason": b"ok\xc2\x9b2J\xc2\x85Approved"})
    assert sneaky.status_code == 422, sneaky.text
    error = sneaky.json()["error"]
    assert error["code"] == "invalid_character" and error["details"][0]["field"] == "Change-Reason"
    assert "U+009B" in error["details"][0]["reason"]
    admin = live.client(issuer.platform_admin(sub="root"))
    assert admin.get("/api/v1/change-requests").json()["changeRequests"] == []  # nothing was filed
    filed = requester.patch(ACME, json=change, headers={"Change-Reason": "Ölpreis: mehr Last".encode()})
    assert filed.status_code == 202, filed.text
    assert filed.json()["changeRequest"]["reason"] == "Ölpreis: mehr Last"


def test_an_upgrade_waits_for_a_platform_admin_who_approves_exactly_it(
    live: LiveServer, issuer: Issuer
) -> None:
    create_tenant(live.app, "acme")
    before, queued = _file(live), _operations(live)
    requester = live.client(issuer.admin_of("acme", sub="alice"))
    filed = requester.patch(
        ACME,
        json={"plan": "medium", "qdrant": PINNED},
        headers={"Change-Reason": "more traffic next month"},
    )
    assert filed.status_code == 202, filed.text
    request = filed.json()["changeRequest"]
    assert filed.headers["Location"] == f"/api/v1/change-requests/{request['id']}"
    assert request["status"] == "pending" and request["reason"] == "more traffic next month"
    assert {"field": "plan", "before": "small", "after": "medium"} in request["diff"]
    assert request["needs"][0]["field"] == "plan"
    assert request["preview"]["summary"]  # the rendered change the reviewer sees
    # Never applied before approval: git and the queue are untouched.
    assert _file(live) == before and _operations(live) == queued

    admin = live.client(issuer.platform_admin(sub="root"))
    listed = admin.get("/api/v1/change-requests", params={"status": "pending"}).json()["changeRequests"]
    assert [item["id"] for item in listed] == [request["id"]]
    shown = admin.get(f"/api/v1/change-requests/{request['id']}").json()
    assert shown["document"]["plan"] == "medium" and shown["baseEtag"]

    approved = admin.post(f"/api/v1/change-requests/{request['id']}/approve")
    assert approved.status_code == 202, approved.text
    body = approved.json()
    assert body["changeRequest"]["status"] == "approved" and body["changeRequest"]["decidedBy"] == "user:root"
    assert _file(live) == {**shown["document"], "name": "acme"}
    assert wait_for(admin, body["accepted"]["operation"]["id"])["status"] == "succeeded"
    # git and the operation name who asked, and the commit who approved (outside journey review: both
    # named the approver only).
    repository = live.app.state.backends.repository
    message = repository._git()[pygit2.Oid(hex=body["accepted"]["commit"])].message
    assert "Requested-by: user:alice\nApproved-by: user:root\n" in message
    assert admin.get(f"/api/v1/operations/{body['accepted']['operation']['id']}").json()["requestedBy"] == (
        "user:alice"
    )

    # The requester sees the outcome; a second approval changes nothing.
    outcome = requester.get(f"/api/v1/change-requests/{request['id']}").json()
    assert outcome["status"] == "approved" and outcome["operationId"] == body["accepted"]["operation"]["id"]
    again = admin.post(f"/api/v1/change-requests/{request['id']}/approve")
    assert again.status_code == 409 and again.json()["error"]["code"] == "change_request_decided"
    lines = [line for line in _audit(live) if line["action"].startswith("change_request")]
    actions = [(line["action"], line["outcome"]) for line in lines]
    assert actions == [
        ("change_request.create", "accepted"),
        ("change_request.approve", "succeeded"),
        ("change_request.approve", "refused"),
    ]


def test_the_loser_of_two_racing_approvals_is_told_what_the_request_is_now(
    live: LiveServer, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an outside review of replicas: of two approvals at once, the loser was told the request
    "is pending, no longer pending" (its status as read before the other one won)."""
    create_tenant(live.app, "acme")
    requester = live.client(issuer.admin_of("acme", sub="alice"))
    filed = requester.patch(ACME, json={"plan": "medium", "qdrant": PINNED}).json()["changeRequest"]["id"]
    approvals = live.app.state.backends.approvals
    as_read = approvals.store.get(filed)  # what the loser read, pending, before the winner approved
    admin = live.client(issuer.platform_admin(sub="root"))
    assert admin.post(f"/api/v1/change-requests/{filed}/approve").status_code == 202
    monkeypatch.setattr(approvals, "_decidable", lambda *args: as_read)
    lost = admin.post(f"/api/v1/change-requests/{filed}/approve")
    assert lost.status_code == 409 and lost.json()["error"]["code"] == "change_request_decided"
    assert f"change request {filed} is approved, no longer pending" in lost.json()["error"]["message"]


def test_an_approval_cut_short_by_a_crash_is_settled_from_git(live: LiveServer, issuer: Issuer) -> None:
    """Found by an outside review: ``kill -9`` of the service while an approval ran left its request
    ``applying`` for good (approve and reject answered 409, it never expired nor was purged). An
    approval names its request in its commit (``Change-Request: <id>``); a request ``applying`` for
    longer than any approval takes is settled when next read: approved with that commit if git has
    it, pending again otherwise. One being applied right now is left alone."""
    from tenancy.automation.contract import StackRef
    from tenancy.service.core.approvals import APPLYING_FOR_AT_MOST_SECONDS
    from tenancy.service.core.security import Principal

    create_tenant(live.app, "acme")
    requester = live.client(issuer.admin_of("acme", sub="alice"))
    admin = live.client(issuer.platform_admin(sub="root"))
    backends = live.app.state.backends
    store = backends.approvals.store

    def filed(name: str) -> ChangeRequest:
        body = requester.patch(ACME, json={"displayName": name, "groups": {"viewers": [f"/{name}"]}}).json()
        return store.get(body["changeRequest"]["id"])  # type: ignore[no-any-return]

    def cut_short(request: ChangeRequest, *, seconds_ago: float) -> None:
        applying = replace(
            request,
            status=RequestStatus.applying,
            decided_by="user:root",
            decided_at=time.time() - seconds_ago,
        )
        assert store.transition(request.id, RequestStatus.pending, applying) is not None

    # Cut short before its commit: pending again, and it can be approved.
    before = filed("before")
    cut_short(before, seconds_ago=APPLYING_FOR_AT_MOST_SECONDS + 1)
    shown = admin.get(f"/api/v1/change-requests/{before.id}").json()
    assert shown["status"] == "pending" and shown["decidedBy"] is None
    approved = admin.post(f"/api/v1/change-requests/{before.id}/approve")
    assert approved.status_code == 202, approved.text
    head = backends.repository.head()
    message = backends.repository._run("log", "-1", "--format=%B", head).stdout
    assert f"Change-Request: {before.id}" in message  # the approval names its request

    # Cut short after its commit (the process died before it recorded the approval): approved, with it.
    after = filed("after")
    root = Principal(subject="root", display_name="root", email=None, kind="user", platform_admin=True)
    backends.changes.replace(
        StackRef("dev", "acme"),
        after.document,
        root,
        if_match=f'"{after.base_etag}"',
        change_request=after.id,
    )
    cut_short(after, seconds_ago=APPLYING_FOR_AT_MOST_SECONDS + 1)
    listed = {item["id"]: item for item in requester.get("/api/v1/change-requests").json()["changeRequests"]}
    assert (
        listed[after.id]["status"] == "approved" and listed[after.id]["commit"] == backends.repository.head()
    )
    assert listed[after.id]["decidedBy"] == "user:root"

    # One being applied now is not touched.
    now = filed("now")
    cut_short(now, seconds_ago=5)
    assert admin.get(f"/api/v1/change-requests/{now.id}").json()["status"] == "applying"
    recovered = [line for line in _audit(live) if line["actor"] == "system:recovery"]
    assert [(line["outcome"], line["reason"].split(":")[0]) for line in recovered] == [
        ("failed", before.id),
        ("succeeded", after.id),
    ]


def test_an_approval_whose_operation_could_not_be_queued_reads_approved_with_its_commit(
    live: LiveServer, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: when the approval's commit landed but queueing its operation failed (503
    engine_unavailable), the request went back to pending though git had the change, and approving
    it again answered change_request_stale. It now reads approved, with the commit; the start-up
    reconcile queues the update git holds."""
    create_tenant(live.app, "acme")
    requester = live.client(issuer.admin_of("acme", sub="alice"))
    filed = requester.patch(ACME, json={"groups": {"viewers": ["/x"]}}).json()["changeRequest"]["id"]
    backends = live.app.state.backends

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the queue is down")

    monkeypatch.setattr(backends.queue, "submit", refuse)
    monkeypatch.setattr(backends.queue, "submit_in_order", refuse)  # how a commit's group queues
    admin = live.client(issuer.platform_admin(sub="root"))
    answer = admin.post(f"/api/v1/change-requests/{filed}/approve")
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "engine_unavailable", answer.text
    shown = admin.get(f"/api/v1/change-requests/{filed}").json()
    assert shown["status"] == "approved" and shown["commit"] == backends.repository.head()
    assert shown["operationId"] is None and shown["decidedBy"] == "user:root"


def test_reject_takes_a_reason_the_requester_sees(live: LiveServer, issuer: Issuer) -> None:
    create_tenant(live.app, "acme")
    requester = live.client(issuer.admin_of("acme"))
    filed = requester.patch(ACME, json={"groups": {"viewers": ["/auditors"]}})
    request_id = filed.json()["changeRequest"]["id"]
    admin = live.client(issuer.platform_admin())
    assert admin.post(f"/api/v1/change-requests/{request_id}/reject", json={}).status_code == 422
    rejected = admin.post(f"/api/v1/change-requests/{request_id}/reject", json={"reason": "use SSO groups"})
    assert rejected.status_code == 200, rejected.text
    outcome = requester.get(f"/api/v1/change-requests/{request_id}").json()
    assert outcome["status"] == "rejected" and outcome["decisionReason"] == "use SSO groups"
    assert "groups" not in (_file(live) or {})
    late = admin.post(f"/api/v1/change-requests/{request_id}/approve")
    assert late.json()["error"]["code"] == "change_request_decided"


def test_a_size_above_the_plan_asks_for_the_plan_that_fits(live: LiveServer, issuer: Issuer) -> None:
    create_tenant(live.app, "acme")
    requester = live.client(issuer.admin_of("acme"))
    response = requester.patch(ACME, json={"qdrant": {"replicas": 3, **PINNED}})
    assert response.status_code == 202, response.text
    request = response.json()["changeRequest"]
    assert request["document"]["plan"] == "medium" and request["document"]["qdrant"]["replicas"] == 3
    assert "the medium plan fits them" in request["needs"][0]["reason"]
    # Beyond every plan stays what it is: invalid, with the validator's message.
    too_big = requester.patch(ACME, json={"qdrant": {"replicas": 10}})  # the large plan's maximum is 9
    assert too_big.status_code == 422 and too_big.json()["error"]["code"] == "invalid_spec"


def test_more_replicas_than_the_plan_allows_asks_for_the_larger_plan_keeping_the_volumes(
    live: LiveServer, issuer: Issuer
) -> None:
    # Without sizes in the request: the larger plan's default volumes would grow the tenant's, which
    # their class does not allow; the request proposes the plan with the volumes as they are (before,
    # the answer was the small plan's limit, and setting the plan was refused: no way forward).
    create_tenant(live.app, "acme")
    requester = live.client(issuer.admin_of("acme"))
    response = requester.patch(ACME, json={"qdrant": {"replicas": 3}})
    assert response.status_code == 202, response.text
    request = response.json()["changeRequest"]
    qdrant = request["document"]["qdrant"]
    assert request["document"]["plan"] == "medium" and qdrant["replicas"] == 3
    assert qdrant["storage"]["size"] == "10Gi" and qdrant["snapshots"]["size"] == "5Gi"  # the small plan's
    assert "the volumes keep their current sizes" in request["needs"][0]["reason"]
    approved = live.client(issuer.platform_admin()).post(f"/api/v1/change-requests/{request['id']}/approve")
    assert approved.status_code == 202, approved.text
    assert (_file(live) or {})["qdrant"]["storage"]["size"] == "10Gi"


def test_a_pending_request_of_a_deleted_tenant_ends_as_expired(live: LiveServer, issuer: Issuer) -> None:
    # It can never be approved (change_request_stale), so listings stop offering it as pending
    # (journey review: it stayed pending for its whole week after the tenant was deleted).
    create_tenant(live.app, "acme")
    requester = live.client(issuer.admin_of("acme"))
    filed = requester.patch(ACME, json={"groups": {"viewers": ["/auditors"]}})
    request_id = filed.json()["changeRequest"]["id"]
    admin = live.client(issuer.platform_admin())
    assert admin.delete(ACME).status_code == 202

    pending = admin.get("/api/v1/change-requests?status=pending").json()["changeRequests"]

    assert request_id not in [request["id"] for request in pending]
    shown = admin.get(f"/api/v1/change-requests/{request_id}").json()
    assert shown["status"] == "expired" and "was deleted since" in shown["decisionReason"]
    expiries = [
        e for e in _audit(live) if e["action"] == "change_request.expire" and e.get("reason") == request_id
    ]
    assert len(expiries) == 1
    stale = admin.post(f"/api/v1/change-requests/{request_id}/approve")
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "change_request_stale"


def test_a_new_tenant_on_a_paid_plan_is_a_request(live: LiveServer, issuer: Issuer) -> None:
    requester = live.client(issuer.admin_of("newco"))
    document = {"owners": ["me@newco.example"], "plan": "large", "qdrant": {"enabled": True}}
    response = requester.put("/api/v1/environments/dev/tenants/newco", json=document)
    assert response.status_code == 202, response.text
    request = response.json()["changeRequest"]
    assert request["baseEtag"] is None and _file(live, "newco") is None
    # Someone creates the tenant meanwhile: approving would not apply what was reviewed.
    create_tenant(live.app, "newco")
    stale = live.client(issuer.platform_admin()).post(f"/api/v1/change-requests/{request['id']}/approve")
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "change_request_stale"
    assert _file(live, "newco")["plan"] == "small"  # type: ignore[index]
    # And it is no longer offered as pending: it ends as expired, saying why.
    shown = requester.get(f"/api/v1/change-requests/{request['id']}").json()
    assert shown["status"] == "expired" and "created since by another change" in shown["decisionReason"]


def test_only_platform_admins_decide_and_others_see_only_their_tenants(
    live: LiveServer, issuer: Issuer
) -> None:
    create_tenant(live.app, "acme")
    filed = live.client(issuer.admin_of("acme")).patch(ACME, json={"plan": "large", "qdrant": PINNED})
    request_id = filed.json()["changeRequest"]["id"]
    own_admin = live.client(issuer.admin_of("acme"))
    refused = own_admin.post(f"/api/v1/change-requests/{request_id}/approve")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    stranger = live.client(issuer.admin_of("globex"))
    assert stranger.get(f"/api/v1/change-requests/{request_id}").status_code == 404
    assert stranger.get("/api/v1/change-requests").json()["changeRequests"] == []
    assert ("change_request.approve", "denied") in [(a["action"], a["outcome"]) for a in _audit(live)]


def test_an_explicit_request_carries_its_reason(live: LiveServer, issuer: Issuer) -> None:
    create_tenant(live.app, "acme")
    requester = live.client(issuer.admin_of("acme"))
    both = requester.post(f"{ACME}/change-requests", json={"patch": {}, "spec": {}, "reason": "x"})
    assert both.status_code == 422
    response = requester.post(
        f"{ACME}/change-requests", json={"patch": {"displayName": "ACME"}, "reason": "please review"}
    )
    assert response.status_code == 202, response.text
    assert response.json()["changeRequest"]["diff"] == [
        {"field": "displayName", "before": None, "after": "ACME"}
    ]


def test_requests_expire_undecided(make_app: AppFactory, serve: Any, issuer: Issuer) -> None:
    app, _ = make_app(change_request_ttl_hours=0.0003, workers=0)  # about a second
    live: LiveServer = serve(app)
    create_tenant(app, "acme")
    filed = live.client(issuer.admin_of("acme")).patch(ACME, json={"groups": {"viewers": ["/x"]}})
    request_id = filed.json()["changeRequest"]["id"]
    time.sleep(1.2)
    admin = live.client(issuer.platform_admin())
    expired = admin.post(f"/api/v1/change-requests/{request_id}/approve")
    assert expired.status_code == 409 and expired.json()["error"]["code"] == "change_request_expired"
    assert admin.get(f"/api/v1/change-requests/{request_id}").json()["status"] == "expired"
    assert "change_request.expire" in [line["action"] for line in _audit(live)]


def test_the_routes_are_in_openapi_with_their_error_codes(live: LiveServer) -> None:
    document = httpx.get(f"{live.url}/openapi.json").json()
    paths = document["paths"]
    for path in (
        "/api/v1/change-requests",
        "/api/v1/change-requests/{request_id}",
        "/api/v1/change-requests/{request_id}/approve",
        "/api/v1/change-requests/{request_id}/reject",
        "/api/v1/environments/{environment}/tenants/{name}/change-requests",
    ):
        assert path in paths, path
    for code in ("change_request_stale", "change_request_expired", "change_request_decided"):
        assert code in document["info"]["description"]


def _request(request_id: str = "cr-000000000001") -> ChangeRequest:
    now = time.time()
    return ChangeRequest(
        id=request_id,
        environment="dev",
        tenant="acme",
        requested_by="user:a",
        requester_name="a",
        reason="r",
        created_at=now,
        expires_at=now + 60,
        base_etag=None,
        base_document=None,
        document={"plan": "large"},
        diff=field_diff(None, {"plan": "large"}),
        needs=[{"field": "plan", "reason": "x"}],
    )


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_request_is_decided_once_on_either_store(backend: str, tmp_path: Path) -> None:
    store: Any = (
        SqliteChangeRequestStore(tmp_path / "cr.sqlite3")
        if backend == "sqlite"
        else RedisChangeRequestStore(fakeredis.FakeRedis(), prefix="t:")
    )
    request = _request()
    store.add(request)
    approved = decided(request, RequestStatus.approved, by="user:root")
    assert store.transition(request.id, RequestStatus.pending, approved) == approved
    rejected = decided(request, RequestStatus.rejected, by="user:other", reason="no")
    assert store.transition(request.id, RequestStatus.pending, rejected) is None
    assert store.get(request.id) == approved
    assert [item.id for item in store.list()] == [request.id]
    # Newest first, a page at a time (the listing reads every page it needs).
    newer = [
        replace(request, id=f"cr-{index + 16:012x}", created_at=request.created_at + 1 + index)
        for index in range(4)
    ]
    for item in newer:
        store.add(item)
    order = [item.id for item in reversed(newer)] + [request.id]
    assert [item.id for item in store.list(limit=2)] == order[:2]
    assert [item.id for item in store.list(limit=2, offset=2)] == order[2:4]
    assert [item.id for item in store.list(limit=2, offset=4)] == order[4:]
    # The pending ones, without reading the decided: what the per-tenant cap counts.
    assert sorted(item.id for item in store.pending()) == sorted(item.id for item in newer)
    store.transition(
        newer[0].id, RequestStatus.pending, decided(newer[0], RequestStatus.rejected, by="user:r")
    )
    assert sorted(item.id for item in store.pending()) == sorted(item.id for item in newer[1:])
    # Past retention, the decided ones go; a pending one or one being applied stays, however old.
    applying = replace(newer[1], status=RequestStatus.applying)
    assert store.transition(newer[1].id, RequestStatus.pending, applying) == applying
    assert store.purge(created_before=newer[2].created_at) == 2  # the first request and newer[0]
    assert sorted(item.id for item in store.list()) == sorted(item.id for item in newer[1:])
    assert store.purge(created_before=newer[-1].created_at + 1) == 0


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_scoped_listing_reads_its_tenants_and_its_requesters_requests_only(
    backend: str, tmp_path: Path
) -> None:
    """What a tenant-admin's listing reads: its tenants' requests and the ones it filed, newest first,
    a page at a time, through the stores' indexes; including requests stored before those were kept."""
    server = fakeredis.FakeServer()
    store: Any = (
        SqliteChangeRequestStore(tmp_path / "cr.sqlite3")
        if backend == "sqlite"
        else RedisChangeRequestStore(fakeredis.FakeRedis(server=server), prefix="t:")
    )
    base = _request()
    rows = [
        replace(
            base, id=f"cr-{index:012x}", tenant=tenant, requested_by=actor, created_at=base.created_at + index
        )
        for index, (tenant, actor) in enumerate(
            [
                ("acme", "user:a"),
                ("zeta", "user:z"),
                ("acme", "user:b"),
                ("newco", "user:a"),
                ("zeta", "user:b"),
            ]
        )
    ]
    for row in rows:
        store.add(row)

    def ids(scope: ListScope, **page: int) -> list[str]:
        return [item.id for item in store.list(scope=scope, **page)]

    newest_first = [row.id for row in reversed(rows)]
    acme_or_mine = ListScope(frozenset({"acme"}), "user:a")  # acme's, and user:a's on newco
    assert ids(acme_or_mine) == [row for row in newest_first if row in {rows[0].id, rows[2].id, rows[3].id}]
    assert ids(acme_or_mine, limit=2) == [rows[3].id, rows[2].id]
    assert ids(acme_or_mine, limit=2, offset=2) == [rows[0].id]
    assert ids(ListScope(frozenset({"zeta", "acme"}))) == [rows[4].id, rows[2].id, rows[1].id, rows[0].id]
    assert ids(ListScope(frozenset(), "user:nobody")) == []
    assert [item.id for item in store.list()] == newest_first  # unscoped: everything, as before
    store.purge(created_before=rows[1].created_at + 0.5)  # none decided: nothing goes
    store.transition(rows[0].id, RequestStatus.pending, decided(rows[0], RequestStatus.rejected, by="user:r"))
    store.purge(created_before=rows[1].created_at)
    assert ids(acme_or_mine) == [rows[3].id, rows[2].id]

    # A store written before it indexed requests by tenant and requester: it finds them all the same.
    if backend == "sqlite":
        store.close()
        path = tmp_path / "old.sqlite3"
        import sqlite3

        with sqlite3.connect(path) as old:
            old.execute(
                "CREATE TABLE change_requests (id TEXT PRIMARY KEY, created_at REAL NOT NULL,"
                " status TEXT NOT NULL, body TEXT NOT NULL)"
            )
            old.executemany(
                "INSERT INTO change_requests VALUES (?, ?, ?, ?)",
                [(row.id, row.created_at, row.status.value, row.to_json()) for row in rows],
            )
        store = SqliteChangeRequestStore(path)
    else:
        redis = fakeredis.FakeRedis(server=server)
        for key in [*redis.keys("t:change-requests:by-*"), b"t:change-requests:indexed"]:
            redis.delete(key)
        store = RedisChangeRequestStore(redis, prefix="t:")
    kept = rows if backend == "sqlite" else rows[1:]  # the SQLite one written afresh, rows[0] too
    assert ids(ListScope(frozenset({"zeta"}), "user:a")) == [
        row.id for row in reversed(kept) if row.tenant == "zeta" or row.requested_by == "user:a"
    ]
    if backend == "redis":
        # A replica of the earlier version, in a rolling upgrade, files into the main index only: the
        # next scoped listing finds it all the same.
        late = replace(base, id="cr-00000000ffff", tenant="zeta", created_at=base.created_at + 10)
        redis.set(f"t:change-request:{late.id}", late.to_json())
        redis.zadd("t:change-requests", {late.id: late.created_at})
        assert ids(ListScope(frozenset({"zeta"})))[0] == late.id


def test_a_platform_admin_decides_from_the_cli(live: LiveServer, issuer: Issuer) -> None:
    from typer.testing import CliRunner

    from tenancy.cli import app as cli

    create_tenant(live.app, "acme")
    requester = live.client(issuer.admin_of("acme"))
    upgrade = requester.patch(ACME, json={"plan": "medium", "qdrant": PINNED}).json()["changeRequest"]["id"]
    groups = requester.patch(ACME, json={"groups": {"viewers": ["/x"]}}).json()["changeRequest"]["id"]
    runner = CliRunner()
    env = {"TENANCY_API_URL": live.url, "TENANCY_TOKEN": issuer.platform_admin()}

    listed = runner.invoke(cli, ["requests", "list", "--status", "pending"], env=env)
    assert listed.exit_code == 0, listed.output
    assert upgrade in listed.output and groups in listed.output
    everything = runner.invoke(cli, ["requests", "list", "--status", "all"], env=env)  # as its help says
    assert everything.exit_code == 0 and upgrade in everything.output, everything.output
    shown = runner.invoke(cli, ["requests", "show", upgrade], env=env)
    assert shown.exit_code == 0 and 'plan: "small" -> "medium"' in shown.output
    assert "preview:" in shown.output
    approved = runner.invoke(cli, ["requests", "approve", upgrade], env=env)
    assert approved.exit_code == 0, approved.output
    assert _file(live)["plan"] == "medium"  # type: ignore[index]
    # The groups request was made against the version before the upgrade: refused, not applied.
    stale = runner.invoke(cli, ["requests", "approve", groups], env=env)
    assert stale.exit_code == 2 and "change_request_stale" in stale.output
    rejected = runner.invoke(cli, ["requests", "reject", groups, "--reason", "ask again"], env=env)
    assert rejected.exit_code == 0, rejected.output
    assert requester.get(f"/api/v1/change-requests/{groups}").json()["decisionReason"] == "ask again"
    nobody = runner.invoke(cli, ["requests", "list"], env={"TENANCY_API_URL": live.url, "TENANCY_TOKEN": ""})
    assert nobody.exit_code == 2


def test_the_cli_shows_a_stored_reason_s_escape_sequences_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    """Found by an outside security review: a reason that slipped past the service's check (stored by
    an older service) held ESC[8m, which concealed the "needs a platform-admin" line and the diff that
    `tenantctl requests show` printed after it on a platform-admin's terminal."""
    from tenancy.cli.requests import _show

    request = {
        "id": "cr-1",
        "environment": "dev",
        "tenant": "acme",
        "status": "pending",
        "requesterName": "Mallory\u202e",
        "requestedBy": "user:m",
        "createdAt": "2026-12-07T00:00:00Z",
        "expiresAt": "2026-12-14T00:00:00Z",
        "reason": "routine\x1b[8m",
        "needs": [{"field": "plan", "reason": "only a platform-admin changes a tenant's plan"}],
        "diff": [{"field": "plan", "before": "small", "after": "large"}],
        "preview": None,
    }
    _show(request)
    shown = capsys.readouterr().out
    assert "reason: routine\\u001b[8m\n" in shown and "\x1b" not in shown
    assert "Mallory\\u202e (user:m)" in shown and "\u202e" not in shown
    assert 'plan: "small" -> "large"' in shown


def test_one_tenants_flood_neither_hides_the_others_requests_nor_grows_without_bound(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    """Found by an outside review: the listing read the newest 500 requests and only then kept what the
    caller may see, so 500 filed by one tenant-admin hid every other tenant's request from its own
    admins and from platform-admins; and filing had no bound."""
    app, _ = make_app(workers=0, change_request_max_pending=2)
    live: LiveServer = serve(app)
    for name in ("zeta", "newco"):
        create_tenant(app, name)
    zeta = live.client(issuer.admin_of("zeta", sub="zed"))
    ask = {"patch": {"displayName": "please"}, "reason": "review"}
    mine = zeta.post("/api/v1/environments/dev/tenants/zeta/change-requests", json=ask).json()[
        "changeRequest"
    ]

    # At most two pending per tenant: the third waits for a decision.
    newco = live.client(issuer.admin_of("newco", sub="flood"))
    path = "/api/v1/environments/dev/tenants/newco/change-requests"
    first, second = (newco.post(path, json=ask) for _ in range(2))
    assert first.status_code == second.status_code == 202
    refused = newco.post(path, json=ask)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "too_many_change_requests"
    admin = live.client(issuer.platform_admin(sub="root"))
    rejected = admin.post(
        f"/api/v1/change-requests/{first.json()['changeRequest']['id']}/reject", json={"reason": "no"}
    )
    assert rejected.status_code == 200, rejected.text
    assert newco.post(path, json=ask).status_code == 202  # one was decided: room for one more

    # Many more rows than one listing returns (decided ones, from however long), all newer than
    # zeta's: its admin and the platform-admins still find zeta's pending request.
    store = app.state.backends.approvals.store
    template = store.get(first.json()["changeRequest"]["id"])
    for index in range(600):
        store.add(replace(template, id=f"cr-{index:012x}", created_at=time.time() + 1 + index / 1000))
    assert [item["id"] for item in zeta.get("/api/v1/change-requests").json()["changeRequests"]] == [
        mine["id"]
    ]
    pending = admin.get("/api/v1/change-requests", params={"status": "pending"}).json()["changeRequests"]
    assert mine["id"] in {item["id"] for item in pending}
    # What zeta's admin's listing reads is zeta's requests, not the 600 others (their tenant's index).
    read: list[int] = []
    listed = store.list

    def counting(**arguments: Any) -> list[ChangeRequest]:
        page = listed(**arguments)
        read.append(len(page))
        return page

    store.list = counting
    try:
        assert len(zeta.get("/api/v1/change-requests").json()["changeRequests"]) == 1
    finally:
        del store.list
    assert sum(read) == 1
    only_zeta = admin.get("/api/v1/change-requests", params={"tenant": "zeta"}).json()["changeRequests"]
    assert [item["id"] for item in only_zeta] == [mine["id"]]


def test_filing_a_request_renders_its_preview_within_the_preview_bounds(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    """Each filing renders the tenant's whole program, as POST .../preview does: the same bounds
    (429 preview_busy beyond them) hold, and nothing is filed when refused."""
    app, _ = make_app(workers=0, preview_max_per_principal=1)
    live: LiveServer = serve(app)
    create_tenant(app, "acme")
    requester = live.client(issuer.admin_of("acme", sub="alice"))
    ask = {"patch": {"displayName": "please"}, "reason": "review"}
    with app.state.backends.previews.admitted("user:alice"):  # alice's one preview is in flight
        busy = requester.post(f"{ACME}/change-requests", json=ask)
    assert busy.status_code == 429 and busy.json()["error"]["code"] == "preview_busy"
    assert app.state.backends.approvals.store.list() == []
    assert requester.post(f"{ACME}/change-requests", json=ask).status_code == 202


def test_a_write_filed_for_approval_keeps_its_preconditions(live: LiveServer, issuer: Issuer) -> None:
    """Found by following the README: a create-only PUT (If-None-Match: *) of a tenant that exists,
    or a PATCH with a stale If-Match, was filed for approval instead of refused, and its approval then
    overwrote the tenant it was never meant to touch."""
    create_tenant(live.app, "acme")
    requester = live.client(issuer.admin_of("acme", sub="alice"))
    admin = live.client(issuer.platform_admin(sub="root"))
    created_only = requester.put(
        ACME, json={"owners": ["a@b.example"], "plan": "medium"}, headers={"If-None-Match": "*"}
    )
    assert created_only.status_code == 412, created_only.text
    assert created_only.json()["error"]["code"] == "precondition_failed"
    stale = requester.patch(
        ACME, json={"plan": "medium", "qdrant": PINNED}, headers={"If-Match": '"stale0000"'}
    )
    assert stale.status_code == 412 and stale.json()["error"]["code"] == "precondition_failed"
    assert admin.get("/api/v1/change-requests").json()["changeRequests"] == []  # nothing filed
    current = requester.get(ACME).headers["ETag"]
    filed = requester.patch(ACME, json={"plan": "medium", "qdrant": PINNED}, headers={"If-Match": current})
    assert filed.status_code == 202 and filed.json()["changeRequest"]["status"] == "pending"
    # A create-only PUT of a tenant that does not exist yet is filed as before (a paid plan).
    creator = live.client(issuer.admin_of("globex", sub="gina"))
    new = creator.put(
        "/api/v1/environments/dev/tenants/globex",
        json={"owners": ["a@b.example"], "plan": "medium"},
        headers={"If-None-Match": "*"},
    )
    assert new.status_code == 202 and new.json()["changeRequest"]["baseEtag"] is None, new.text


def test_a_later_tenant_of_the_name_never_sees_the_earlier_ones_requests(
    live: LiveServer, issuer: Issuer
) -> None:
    """Found by an outside security review: after a delete and re-create, the new tenant's admins read
    the earlier tenant's requests (reason, document, requester). A request belongs to the incarnation it
    was filed against; a create's, once approved, to the one it began."""
    from tenancy.service.core.tenants_repo import GitAuthor

    create_tenant(live.app, "acme")
    bob = live.client(issuer.admin_of("acme", sub="bob"))
    old = bob.patch(ACME, json={"plan": "medium", "qdrant": PINNED}, headers={"Change-Reason": "ours"})
    old_id = old.json()["changeRequest"]["id"]
    colleague = live.client(issuer.admin_of("acme", sub="dora"))
    assert [r["id"] for r in colleague.get("/api/v1/change-requests").json()["changeRequests"]] == [old_id]

    live.app.state.backends.repository.delete(
        "dev", "acme", author=GitAuthor("Reviewer", "r@example.com"), message="Delete tenant dev.acme"
    )
    carol = live.client(issuer.admin_of("acme", sub="carol"))
    assert carol.put(ACME, json=spec("acme", owners=["c@other.example"])).status_code == 202
    assert carol.get("/api/v1/change-requests").json()["changeRequests"] == []
    assert carol.get(f"/api/v1/change-requests/{old_id}").status_code == 404
    assert [r["id"] for r in bob.get("/api/v1/change-requests").json()["changeRequests"]] == [
        old_id
    ]  # his own
    admin = live.client(issuer.platform_admin(sub="root"))
    assert old_id in {r["id"] for r in admin.get("/api/v1/change-requests").json()["changeRequests"]}

    # A create filed for approval, approved: the tenant it began sees it.
    creator = live.client(issuer.admin_of("globex", sub="gina"))
    filed = creator.put("/api/v1/environments/dev/tenants/globex", json=spec("globex", plan="medium"))
    assert filed.status_code == 202, filed.text
    created_id = filed.json()["changeRequest"]["id"]
    assert admin.post(f"/api/v1/change-requests/{created_id}/approve").status_code == 202
    teammate = live.client(issuer.admin_of("globex", sub="tom"))
    assert teammate.get(f"/api/v1/change-requests/{created_id}").status_code == 200


def test_filings_at_once_never_pass_the_cap(make_app: AppFactory, serve: Any, issuer: Issuer) -> None:
    """Found by the diff review: the count ran before the preview and the add, unlocked, so four admins
    filing at one moment all found room under a cap of one."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    app, _ = make_app(workers=0, change_request_max_pending=1, preview_max_per_principal=4)
    live: LiveServer = serve(app)
    create_tenant(app, "acme")
    start = threading.Barrier(4)

    def file(index: int) -> int:
        with live.client(issuer.admin_of("acme", sub=f"admin{index}")) as client:
            start.wait()
            answer = client.post(
                f"{ACME}/change-requests", json={"patch": {"displayName": "x"}, "reason": "r"}
            )
            return answer.status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(pool.map(file, range(4)))
    assert statuses.count(202) == 1 and set(statuses) <= {202, 409, 429}, statuses
    assert len(app.state.backends.approvals.store.list()) == 1


def test_the_requesters_name_reaches_platform_admins_without_control_characters(
    live: LiveServer, issuer: Issuer
) -> None:
    create_tenant(live.app, "acme")
    sneaky = issuer.admin_of(
        "acme", sub="mallory", preferred_username="mallory\x1b[2J\x9b31m\nApproved-by: root"
    )
    filed = live.client(sneaky).post(
        f"{ACME}/change-requests", json={"patch": {"displayName": "x"}, "reason": "r"}
    )
    assert filed.status_code == 202, filed.text
    assert filed.json()["changeRequest"]["requesterName"] == "mallory[2J31mApproved-by: root"


def test_decided_requests_are_removed_after_the_retention_and_pending_ones_never(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    """Decided requests are kept for TENANCY_SERVICE_CHANGE_REQUEST_RETENTION_DAYS after they were made
    (the audit log keeps every decision): a listing pages through what is stored, so it stays bounded."""
    app, _ = make_app(workers=0, change_request_retention_days=1)
    live: LiveServer = serve(app)
    create_tenant(app, "acme")
    store = app.state.backends.approvals.store
    month_ago = time.time() - 30 * 86400
    old = [
        replace(_request(f"cr-{index:012x}"), created_at=month_ago, status=status)
        for index, status in enumerate(
            [RequestStatus.approved, RequestStatus.rejected, RequestStatus.expired, RequestStatus.pending], 16
        )
    ]
    for request in old:
        store.add(request)
    filed = live.client(issuer.admin_of("acme")).post(
        f"{ACME}/change-requests", json={"patch": {"displayName": "x"}, "reason": "r"}
    )
    assert filed.status_code == 202, filed.text
    kept = {item.id for item in store.list()}
    assert kept == {old[3].id, filed.json()["changeRequest"]["id"]}
