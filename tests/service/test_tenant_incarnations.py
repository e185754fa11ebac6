"""A tenant name can be reused: nothing of the earlier tenant (API keys, operations) reaches the new
owner, and deleting a tenant revokes its keys."""

from __future__ import annotations

from typing import Any

import httpx

from tenancy.service.core.tenants_repo import GitAuthor
from tests.service.conftest import AppFactory, Issuer, LiveServer, destroy_standing_stack, spec, wait_for

SEARCH = "/api/v1/environments/dev/tenants/search"
KEYS = "/api/v1/tenants/search/api-keys"


def _make_key(client: httpx.Client) -> str:
    created = client.post(KEYS, json={"name": "ci", "role": "tenant-admin"})
    assert created.status_code == 201, created.text
    key: str = created.json()["key"]
    return key


def test_deleting_a_tenant_revokes_its_api_keys(make_app: AppFactory, serve: Any, issuer: Issuer) -> None:
    app, _ = make_app()
    server: LiveServer = serve(app)
    with server.client(issuer.admin_of("search")) as team_a:
        wait_for(team_a, team_a.put(SEARCH, json=spec("search")).json()["operation"]["id"])
        key = _make_key(team_a)
        with server.client(key) as machine:
            assert machine.get(SEARCH).status_code == 200
        deleted = team_a.delete(SEARCH)
        assert deleted.status_code == 202
        listed = team_a.get(KEYS).json()["apiKeys"]
    assert [k["active"] for k in listed] == [False]
    with server.client(key) as machine:
        assert machine.get(SEARCH).status_code == 401


def test_a_key_of_an_earlier_tenant_never_works_for_a_new_tenant_of_the_same_name(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    app, _ = make_app()
    server: LiveServer = serve(app)
    with server.client(issuer.admin_of("search", sub="team-a")) as team_a:
        wait_for(team_a, team_a.put(SEARCH, json=spec("search")).json()["operation"]["id"])
        old_key = _make_key(team_a)
    # The file is removed by a merged pull request: no API call revokes anything.
    app.state.backends.repository.delete(
        "dev", "search", author=GitAuthor("Reviewer", "r@example.com"), message="Remove search"
    )
    destroy_standing_stack(server, issuer, SEARCH)  # the earlier tenant's stack, before the name is reused
    with server.client(issuer.admin_of("search", sub="team-b")) as team_b:
        created = team_b.put(SEARCH, json=spec("search", owners=["b@team-b.example"]))
        assert created.status_code == 202
        wait_for(team_b, created.json()["operation"]["id"])
    with server.client(old_key) as machine:
        assert machine.get(SEARCH).status_code == 401
        assert machine.post(f"{SEARCH}/qdrant/api-key/reveal").status_code == 401
        assert machine.patch(SEARCH, json={"displayName": "mine now"}).status_code == 401


def test_a_key_works_only_where_its_tenant_is_still_the_one_it_was_made_for(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    """Found by an outside security review: a key bound to both environments' files kept working for a
    tenant deleted and made again in one of them, while the other environment's file lived on (its
    PATCH was committed and applied under the key). Each environment counts on its own."""
    app, _ = make_app()
    server: LiveServer = serve(app)
    prod = "/api/v1/environments/prod/tenants/search"
    with server.client(issuer.admin_of("search", sub="team-a")) as team_a:
        for path in (SEARCH, prod):
            wait_for(team_a, team_a.put(path, json=spec("search")).json()["operation"]["id"])
        key = _make_key(team_a)
    with server.client(key) as machine:
        assert machine.get(SEARCH).status_code == 200 and machine.get(prod).status_code == 200
    app.state.backends.repository.delete(
        "dev", "search", author=GitAuthor("Reviewer", "r@example.com"), message="Remove search"
    )
    destroy_standing_stack(server, issuer, SEARCH)
    with server.client(issuer.admin_of("search", sub="team-b")) as team_b:
        wait_for(
            team_b,
            team_b.put(SEARCH, json=spec("search", owners=["b@team-b.example"])).json()["operation"]["id"],
        )
    with server.client(key) as machine:
        assert machine.get(prod).status_code == 200  # still the tenant it was made for
        assert machine.get(SEARCH).status_code == 404  # someone else's now: as any tenant not yours
        assert machine.patch(SEARCH, json={"displayName": "mine now"}).status_code == 404
        listed = machine.get("/api/v1/tenants").json()["tenants"]
        assert {(t["environment"], t["name"]) for t in listed} == {("prod", "search")}
        recent = app.state.backends.queue.recent(limit=50)
        in_dev = [operation.id for operation in recent if operation.stack.environment == "dev"]
        assert in_dev and all(machine.get(f"/api/v1/operations/{id_}").status_code == 404 for id_ in in_dev)


def test_api_keys_are_made_only_for_a_tenant_that_exists(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    app, _ = make_app(workers=0)
    server: LiveServer = serve(app)
    with server.client(issuer.admin_of("search")) as client:
        response = client.post(KEYS, json={"name": "ci"})
    assert response.status_code == 404
    assert "create it" in response.json()["error"]["message"]


def test_nothing_an_earlier_tenant_left_is_applied_to_counted_against_or_shown_to_the_next(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    """Found by an outside security review: after a tenant was deleted and its name made again with an
    identical file, a platform-admin approving the earlier team's pending change request applied it to
    the new tenant (its If-Match held: the content was the same); the earlier tenant's pending requests
    counted against the new tenant's cap; and the new owners listed the earlier team's API keys."""
    app, _ = make_app(change_request_max_pending=1, api_key_max_active=1)
    server: LiveServer = serve(app)
    pinned = {"storage": {"size": "10Gi"}, "snapshots": {"size": "5Gi"}}
    upgrade = {"patch": {"plan": "medium", "qdrant": pinned}, "reason": "more traffic"}
    with server.client(issuer.admin_of("search", sub="team-a")) as team_a:
        wait_for(team_a, team_a.put(SEARCH, json=spec("search")).json()["operation"]["id"])
        _make_key(team_a)
        filed = team_a.post(f"{SEARCH}/change-requests", json=upgrade)
        assert filed.status_code == 202, filed.text
        earlier = filed.json()["changeRequest"]["id"]
    app.state.backends.repository.delete(
        "dev", "search", author=GitAuthor("Reviewer", "r@example.com"), message="Remove search"
    )
    destroy_standing_stack(server, issuer, SEARCH)
    with (
        server.client(issuer.admin_of("search", sub="team-b")) as team_b,
        server.client(issuer.platform_admin(sub="root")) as admin,
    ):
        gone = admin.post(f"/api/v1/change-requests/{earlier}/approve")
        assert gone.status_code == 409 and "dev.search was deleted since" in gone.json()["error"]["message"]
        created = team_b.put(SEARCH, json=spec("search"))  # byte for byte the file team A had
        wait_for(team_b, created.json()["operation"]["id"])
        assert team_b.get(KEYS).json()["apiKeys"] == []
        # Nor do the earlier team's keys count against the new tenant's cap of one (a review of this fix).
        assert team_b.post(KEYS, json={"name": "ci", "role": "tenant-viewer"}).status_code == 201
        stale = admin.post(f"/api/v1/change-requests/{earlier}/approve")
        assert stale.status_code == 409, stale.text
        assert stale.json()["error"]["code"] == "change_request_stale"
        assert "filed for an earlier tenant named search" in stale.json()["error"]["message"]
        assert team_b.get(SEARCH).json()["spec"]["plan"] == "small"
        # The earlier tenant's pending request takes none of the new tenant's room (a cap of one).
        mine = team_b.post(f"{SEARCH}/change-requests", json=upgrade)
        assert mine.status_code == 202, mine.text


def test_a_change_made_for_an_earlier_tenant_is_refused_in_the_write_s_own_turn(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    """A review of this stop's fix: approval checked the incarnation before the write's turn, so a delete
    and re-create in between could still be written over. The write now checks it in its turn."""
    import pytest

    from tenancy.automation.contract import StackRef
    from tenancy.service.core.errors import ServiceError
    from tenancy.service.core.security import Principal

    app, _ = make_app(workers=0)
    server: LiveServer = serve(app)
    with server.client(issuer.admin_of("search")) as client:
        assert client.put(SEARCH, json=spec("search")).status_code == 202
    backends = app.state.backends
    head = backends.repository.head()
    root = Principal(subject="root", display_name="root", email=None, kind="user", platform_admin=True)
    with pytest.raises(ServiceError) as refused:
        backends.changes.replace(
            StackRef("dev", "search"),
            spec("search", displayName="Theirs"),
            root,
            if_match=None,
            incarnation="dev:0000000000000000000000000000000000000000",  # an earlier tenant's
        )
    assert refused.value.code == "change_request_stale"
    assert backends.repository.head() == head  # nothing written
