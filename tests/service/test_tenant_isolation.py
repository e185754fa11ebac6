"""A caller can read or change nothing of another tenant, on any route, and cannot even tell it exists;
viewers read but never write."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tenancy.automation.contract import StackRef
from tenancy.service.api.main import API_PREFIX
from tenancy.service.app import create_app
from tests.service.conftest import Issuer, LiveServer, TenantEngine, settings_for, spec, wait_for


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # {tenant}, {env}, {operation}, {key} filled in per case
    body: Any = None
    writes: bool = False


TENANT = "/environments/{env}/tenants/{tenant}"
ROUTES = [
    Route("GET", TENANT),
    Route("HEAD", TENANT),
    Route("PUT", TENANT, spec("{tenant}"), writes=True),
    Route("PATCH", TENANT, {"qdrant": {"replicas": 1}}, writes=True),
    Route("DELETE", TENANT, writes=True),
    Route("POST", TENANT + "/preview", spec("{tenant}"), writes=True),
    Route("GET", TENANT + "/operations"),
    Route("POST", TENANT + "/qdrant/api-key/reveal", writes=True),
    Route("GET", TENANT + "/vcluster/kubeconfig", writes=True),
    Route("POST", TENANT + "/qdrant/keys/rotate", {"grace": "1h"}, writes=True),
    Route("GET", TENANT + "/qdrant/keys/rotate"),
    Route("GET", "/operations/{operation}"),
    Route("GET", "/operations/{operation}/events"),
    Route("GET", "/tenants/{tenant}/api-keys", writes=True),
    Route("POST", "/tenants/{tenant}/api-keys", {"name": "probe"}, writes=True),
    Route("DELETE", "/tenants/{tenant}/api-keys/{key}", writes=True),
    Route("POST", TENANT + "/change-requests", {"patch": {"displayName": "x"}, "reason": "r"}, writes=True),
    Route("GET", TENANT + "/qdrant/snapshots"),
    Route("POST", TENANT + "/qdrant/snapshots", writes=True),
    Route("POST", TENANT + "/qdrant/restore", {"backup": "20261206T031500Z-a1b2c3"}, writes=True),
    Route("POST", TENANT + "/qdrant/retired/{incarnation}/handover", writes=True),
    Route("DELETE", TENANT + "/qdrant/retired/{incarnation}/handover", writes=True),
    Route("GET", "/change-requests/{request}"),
    Route("POST", "/change-requests/{request}/approve", writes=True),
    Route("POST", "/change-requests/{request}/reject", {"reason": "probe"}, writes=True),
]
# Routes that name no tenant: they only ever show the caller's own.
UNSCOPED = {("GET", "/tenants"), ("GET", "/me"), ("GET", "/change-requests")}


@dataclass
class World:
    server: LiveServer
    engine: TenantEngine
    issuer: Issuer
    beta_operation: str
    beta_key: str
    alpha_key: str
    beta_request: str

    def fill(self, route: Route, tenant: str) -> tuple[str, Any]:
        path = API_PREFIX + route.path.format(
            env="dev",
            tenant=tenant,
            operation=self.beta_operation,
            key=self.beta_key,
            request=self.beta_request,
            incarnation="a" * 40,  # a deleted incarnation's folder
        )
        body = route.body
        if isinstance(body, dict) and body.get("name") == "{tenant}":
            body = {**body, "name": tenant}
        return path, body

    def snapshot(self) -> tuple[Any, ...]:
        backends = self.server.app.state.backends
        beta = StackRef("dev", "beta")
        return (
            [c.sha for c in backends.repository.history("dev", "beta")],
            backends.repository.read_text("dev", "beta"),
            [(op.id, op.status) for op in backends.queue.recent(stack=beta)],
            [(k.id, k.revoked_at) for k in backends.api_keys.list("beta")],
            len(self.engine.calls_for(beta)),
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, issuer: Issuer) -> Iterator[World]:
    engine = TenantEngine()
    settings = settings_for(tmp_path_factory.mktemp("isolation"), issuer, workers=2)
    with LiveServer(create_app(settings, engine=engine)) as server:
        with server.client(issuer.admin_of("beta")) as beta:
            accepted = beta.put(f"{API_PREFIX}/environments/dev/tenants/beta", json=spec("beta")).json()
            wait_for(beta, accepted["operation"]["id"])
            beta_key = beta.post(f"{API_PREFIX}/tenants/beta/api-keys", json={"name": "beta-ci"}).json()["id"]
            filed = beta.patch(
                f"{API_PREFIX}/environments/dev/tenants/beta", json={"groups": {"viewers": ["/x"]}}
            )
            beta_request = filed.json()["changeRequest"]["id"]
        with server.client(issuer.admin_of("alpha")) as alpha:
            alpha.put(f"{API_PREFIX}/environments/dev/tenants/alpha", json=spec("alpha"))
            alpha_key = alpha.post(
                f"{API_PREFIX}/tenants/alpha/api-keys", json={"name": "alpha-ci", "role": "tenant-admin"}
            ).json()["key"]
        yield World(server, engine, issuer, accepted["operation"]["id"], beta_key, alpha_key, beta_request)


def test_the_route_table_covers_every_route_that_names_a_tenant(world: World) -> None:
    served = {
        (method.upper(), path.removeprefix(API_PREFIX))
        for path, operations in world.server.app.openapi()["paths"].items()
        if path.startswith(API_PREFIX)
        for method in operations
    }
    listed = {
        (r.method, r.path.replace("{env}", "{environment}").replace("{tenant}", "{name}")) for r in ROUTES
    }
    listed = {
        (
            m,
            p.replace("{operation}", "{operation_id}")
            .replace("{key}", "{key_id}")
            .replace("{request}", "{request_id}"),
        )
        for m, p in listed
    }
    assert served - UNSCOPED == listed


def _callers(world: World) -> dict[str, dict[str, str]]:
    return {
        "admin-of-another-tenant": {"Authorization": f"Bearer {world.issuer.admin_of('alpha')}"},
        "api-key-of-another-tenant": {"X-API-Key": world.alpha_key},
        "viewer-of-another-tenant": {"Authorization": f"Bearer {world.issuer.viewer_of('alpha')}"},
    }


@pytest.mark.parametrize(
    "caller", ["admin-of-another-tenant", "api-key-of-another-tenant", "viewer-of-another-tenant"]
)
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_another_tenant_is_invisible_on_every_route(world: World, route: Route, caller: str) -> None:
    before = world.snapshot()
    headers = _callers(world)[caller]
    with world.server.client() as client:
        path, body = world.fill(route, "beta")
        response = client.request(route.method, path, json=body, headers=headers)
        ghost_path, ghost_body = world.fill(route, "gamma")  # a tenant that does not exist at all
        ghost = client.request(route.method, ghost_path, json=ghost_body, headers=headers)
    assert response.status_code == 404, response.text
    if route.method == "HEAD":  # no body: the status is all a caller learns
        assert ghost.status_code == 404 and response.content == ghost.content == b""
    else:
        # The same answer whether the tenant exists or not: nothing to learn from the difference.
        assert response.json()["error"]["code"] == ghost.json()["error"]["code"]
        assert (
            response.json()["error"]["message"].replace("beta", "gamma") == ghost.json()["error"]["message"]
        )
        assert "QDRANT-SECRET" not in response.text and "beta-ci" not in response.text
    assert world.snapshot() == before


def test_a_restore_into_another_tenant_cannot_tell_it_exists(world: World) -> None:
    before = world.snapshot()
    restore = f"{API_PREFIX}/environments/dev/tenants/alpha/qdrant/restore"
    with world.server.client(world.issuer.admin_of("alpha")) as client:
        into_beta = client.post(restore, json={"backup": "20261206T031500Z-a1b2c3", "into": "beta"})
        into_ghost = client.post(restore, json={"backup": "20261206T031500Z-a1b2c3", "into": "gamma"})
    assert into_beta.status_code == 404, into_beta.text
    assert into_beta.json()["error"]["code"] == into_ghost.json()["error"]["code"] == "tenant_not_found"
    assert (
        into_beta.json()["error"]["message"].replace("beta", "gamma") == into_ghost.json()["error"]["message"]
    )
    assert world.snapshot() == before


def test_listing_shows_only_the_callers_tenants(world: World) -> None:
    with world.server.client(world.issuer.admin_of("alpha")) as client:
        names = {t["name"] for t in client.get(f"{API_PREFIX}/tenants").json()["tenants"]}
    assert names == {"alpha"}
    with world.server.client(world.issuer.platform_admin()) as client:
        names = {t["name"] for t in client.get(f"{API_PREFIX}/tenants").json()["tenants"]}
    assert {"alpha", "beta"} <= names


@pytest.mark.parametrize("route", [r for r in ROUTES if r.writes], ids=lambda r: f"{r.method} {r.path}")
def test_viewers_cannot_write(world: World, route: Route) -> None:
    before = world.snapshot()
    with world.server.client(world.issuer.viewer_of("beta")) as client:
        path, body = world.fill(route, "beta")
        response = client.request(route.method, path, json=body)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "forbidden"
    assert world.snapshot() == before


def test_viewers_can_read(world: World) -> None:
    with world.server.client(world.issuer.viewer_of("beta")) as client:
        tenant = client.get(f"{API_PREFIX}/environments/dev/tenants/beta")
        operation = client.get(f"{API_PREFIX}/operations/{world.beta_operation}")
    assert tenant.status_code == 200 and tenant.json()["role"] == "tenant-viewer"
    assert operation.status_code == 200


def test_a_viewer_api_key_cannot_write(world: World) -> None:
    with world.server.client(world.issuer.admin_of("beta")) as person:
        key = person.post(f"{API_PREFIX}/tenants/beta/api-keys", json={"name": "ro"}).json()["key"]
    before = world.snapshot()
    with world.server.client(key) as machine:
        assert machine.get(f"{API_PREFIX}/environments/dev/tenants/beta").status_code == 200
        response = machine.patch(f"{API_PREFIX}/environments/dev/tenants/beta", json={"displayName": "x"})
    assert response.status_code == 403
    assert world.snapshot() == before


def test_an_admin_api_key_cannot_manage_api_keys(world: World) -> None:
    with world.server.client(world.alpha_key) as machine:
        response = machine.post(f"{API_PREFIX}/tenants/alpha/api-keys", json={"name": "more"})
    assert response.status_code == 403
