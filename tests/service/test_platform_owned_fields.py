"""`plan` and `groups` belong to the platform team: a tenant-admin keeps what a platform-admin set
and creates tenants only on a self-service plan; asking for more files a change request naming the
field (202, nothing committed) instead of a 403 (tests/service/test_change_requests.py decides them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.service.conftest import AppFactory, Issuer, LiveServer, create_tenant, spec

ACME = "/api/v1/environments/dev/tenants/acme"


@pytest.fixture
def live(make_app: AppFactory, serve: Any) -> LiveServer:
    app, _ = make_app(workers=0)
    server: LiveServer = serve(app)
    return server


@pytest.fixture
def tenant_admin(live: LiveServer, issuer: Issuer) -> Iterator[httpx.Client]:
    with live.client(issuer.admin_of("acme")) as client:
        yield client


def _refused_fields(response: httpx.Response) -> set[str]:
    """The fields a change request was filed for (a platform-admin must approve them)."""
    assert response.status_code == 202, response.text
    request = response.json()["changeRequest"]
    assert request["status"] == "pending"
    return {need["field"] for need in request["needs"]}


def _file(live: LiveServer) -> str | None:
    text: str | None = live.app.state.backends.repository.read_text("dev", "acme")
    return text


def test_a_tenant_admin_cannot_change_the_plan(live: LiveServer, tenant_admin: httpx.Client) -> None:
    create_tenant(live.app, "acme")
    before = _file(live)
    pinned = {"storage": {"size": "10Gi"}, "snapshots": {"size": "5Gi"}}  # volumes cannot grow
    assert _refused_fields(tenant_admin.patch(ACME, json={"plan": "large", "qdrant": pinned})) == {"plan"}
    medium = spec("acme", plan="medium", qdrant={"enabled": True, **pinned})
    assert _refused_fields(tenant_admin.put(ACME, json=medium)) == {"plan"}
    assert _file(live) == before


def test_a_tenant_admin_cannot_change_the_groups(live: LiveServer, tenant_admin: httpx.Client) -> None:
    create_tenant(live.app, "acme")
    patch = {"groups": {"admins": ["/tenants/acme/admins", "/contractors"]}}
    assert _refused_fields(tenant_admin.patch(ACME, json=patch)) == {"groups"}


def test_a_tenant_admin_creates_only_on_a_self_service_plan_with_default_groups(
    live: LiveServer, tenant_admin: httpx.Client
) -> None:
    custom = spec("acme", plan="large", groups={"viewers": ["/everyone"]})
    assert _refused_fields(tenant_admin.put(ACME, json=custom)) == {"plan", "groups"}
    assert _file(live) is None
    assert tenant_admin.put(ACME, json=spec("acme", plan="small")).status_code == 202


def test_a_tenant_admin_changes_everything_else_and_keeps_the_platforms_choices(
    live: LiveServer, tenant_admin: httpx.Client
) -> None:
    create_tenant(live.app, "acme", plan="medium", groups={"admins": ["/teams/acme-leads"]})
    response = tenant_admin.patch(ACME, json={"displayName": "Acme", "qdrant": {"replicas": 2}})
    assert response.status_code == 202, response.text
    document = yaml.safe_load(_file(live) or "")
    assert document["plan"] == "medium" and document["groups"] == {"admins": ["/teams/acme-leads"]}


def test_a_platform_admin_sets_plan_and_groups(live: LiveServer, issuer: Issuer) -> None:
    create_tenant(live.app, "acme")
    with live.client(issuer.platform_admin()) as platform:
        # The existing volumes keep their sizes (a plan change must not grow them): see the next test.
        pinned = {"storage": {"size": "10Gi"}, "snapshots": {"size": "5Gi"}}
        change = {"plan": "large", "groups": {"viewers": ["/auditors"]}, "qdrant": pinned}
        response = platform.patch(ACME, json=change)
    assert response.status_code == 202, response.text
    assert yaml.safe_load(_file(live) or "")["plan"] == "large"


def test_a_plan_change_that_would_grow_volumes_is_refused_naming_the_size_to_pin(
    live: LiveServer, issuer: Issuer
) -> None:
    create_tenant(live.app, "acme")
    before = _file(live)
    with live.client(issuer.platform_admin()) as platform_admin:
        response = platform_admin.patch(ACME, json={"plan": "medium"})
        assert response.status_code == 422, response.text
        details = {d["field"]: d["reason"] for d in response.json()["error"]["details"]}
        assert "set qdrant.storage.size: 10Gi to keep the current volumes" in details["qdrant.storage.size"]
        assert _file(live) == before
        pinned = {"plan": "medium", "qdrant": {"storage": {"size": "10Gi"}, "snapshots": {"size": "5Gi"}}}
        assert platform_admin.patch(ACME, json=pinned).status_code == 202
