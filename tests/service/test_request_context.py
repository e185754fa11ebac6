"""What every request goes through, checked without a server: request ids, no-store, metrics labels,
the hot GET route's dependency tree, and the JSON a view sends."""

from __future__ import annotations

import asyncio
import gc
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute

from tenancy.automation.contract import Operation, OperationKind, OperationStatus, StackRef
from tenancy.service.api.routes import tenants
from tenancy.service.core.metrics import RequestContextMiddleware, ServiceMetrics
from tenancy.service.core.security import Role
from tenancy.service.models import Environment, OperationView, TenantStatus, TenantView
from tests.conftest import PROJECT_DIR


def _app(metrics: ServiceMetrics) -> FastAPI:
    app = FastAPI()

    @app.get("/api/v1/things/{name}")
    async def thing(name: str) -> dict[str, str]:
        return {"name": name}

    @app.get("/api/v1/cached")
    async def cached() -> PlainTextResponse:
        return PlainTextResponse("x", headers={"Cache-Control": "max-age=5"})

    @app.get("/page")
    async def page() -> PlainTextResponse:
        return PlainTextResponse("x")

    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app


def _get(app: FastAPI, path: str, headers: list[tuple[str, str]] | None = None) -> httpx.Response:
    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(get())


def test_request_ids_are_echoed_when_well_formed_and_made_otherwise() -> None:
    app = _app(ServiceMetrics())
    offered = _get(app, "/api/v1/things/a", [("X-Request-Id", "abc.DEF_1-2")])
    assert offered.headers["x-request-id"] == "abc.DEF_1-2"
    for bad in ("has space", "x" * 65, "a/b", ""):
        made = _get(app, "/api/v1/things/a", [("X-Request-Id", bad)])
        assert len(made.headers["x-request-id"]) == 32 and made.headers["x-request-id"] != bad
    # Sent twice, the last one counts (as it did when the headers were read into a dict).
    twice = _get(app, "/api/v1/things/a", [("X-Request-Id", "first"), ("X-Request-Id", "second")])
    assert twice.headers["x-request-id"] == "second"
    none = _get(app, "/api/v1/things/a")
    assert len(none.headers.get_list("x-request-id")) == 1 and len(none.headers["x-request-id"]) == 32


def test_api_answers_are_no_store_unless_the_route_says_otherwise() -> None:
    app = _app(ServiceMetrics())
    assert (_get(app, "/api/v1/things/a")).headers["cache-control"] == "no-store"
    assert (_get(app, "/api/v1/cached")).headers.get_list("cache-control") == ["max-age=5"]
    assert "cache-control" not in (_get(app, "/page")).headers


def test_metrics_count_each_route_template_method_and_status_in_its_own_series() -> None:
    metrics = ServiceMetrics()
    app = _app(metrics)
    for name in ("a", "b", "c"):
        _get(app, f"/api/v1/things/{name}")
    _get(app, "/nowhere")
    text = metrics.render().decode()
    assert 'tenant_api_requests_total{method="GET",route="/api/v1/things/{name}",status="200"} 3.0' in text
    assert 'tenant_api_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert 'tenant_api_request_duration_seconds_count{method="GET",route="/api/v1/things/{name}"} 3.0' in text


def _dependants(dependant: Any) -> int:
    return 1 + sum(_dependants(sub) for sub in dependant.dependencies)


def test_reading_a_tenant_solves_one_dependency_tree_without_repeats() -> None:
    """FastAPI walks every declared dependency on every request, cached or not: the hot GET declares
    the tenant, the caller and the backends as one (ReadableTenantAccess)."""
    route = next(route for route in tenants.router.routes if getattr(route, "name", "") == "read_tenant")
    assert isinstance(route, APIRoute) and route.methods == {"GET"}
    # the route, the tenant access, authenticate, and its two credential schemes (for OpenAPI)
    assert _dependants(route.dependant) == 5


def test_a_view_sends_the_json_a_json_response_of_its_wire_form_would() -> None:
    operation = Operation(
        id="op-1",
        stack=StackRef("dev", "acme"),
        kind=OperationKind.up,
        status=OperationStatus.succeeded,
        requested_by="user:ünïcode",
        created_at=1_700_000_000.25,
    )
    view = TenantView(
        environment=Environment.dev,
        name="acme",
        role=Role.admin,
        etag="abc",
        spec={"name": "acme", "displayName": 'Åcme «quoted» "x"', "nested": [1, 2.5, None, {"k": True}]},
        status=TenantStatus(phase="ready"),
        last_operation=OperationView.of(operation),
        outputs={"endpoint": "https://acme.example", "count": 3},
    )
    assert view.wire_json() == JSONResponse(view.wire()).body
    assert json.loads(view.wire_json()) == view.wire()


def test_the_service_is_served_by_uvloop_and_httptools_as_pinned() -> None:
    """``tenantctl serve``, the service tests' live server and the benchmark all serve this way; a
    missing parser or loop fails here rather than leaving the service slower unnoticed."""
    import httptools
    import uvicorn
    import uvloop
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from tenancy.cli.serve import UVICORN_OPTIONS

    config = uvicorn.Config(FastAPI(), **UVICORN_OPTIONS)
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol
    loop = config.get_loop_factory()
    assert loop is not None
    created = loop()
    assert isinstance(created, uvloop.Loop)
    created.close()
    assert config.proxy_headers is False  # forwarding headers are core.client_address's to judge
    pinned = (PROJECT_DIR / "pyproject.toml").read_text()
    assert f'"uvloop=={uvloop.__version__}"' in pinned and f'"httptools=={httptools.__version__}"' in pinned


def test_the_body_guard_reads_the_first_length_and_type_a_request_sends() -> None:
    from tenancy.service.core.request_body import RequestBodyGuard

    seen: list[bytes] = []

    async def echo(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        seen.append(message.get("body", b""))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = RequestBodyGuard(echo, max_bytes=10, max_depth=3)

    async def call(headers: list[tuple[bytes, bytes]], body: bytes) -> int:
        scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await guard(scope, receive, send)
        return int(sent[0]["status"])

    assert asyncio.run(call([(b"content-length", b"11")], b"x" * 11)) == 413
    assert asyncio.run(call([(b"content-length", b"2"), (b"content-length", b"11")], b"{}")) == 200
    assert asyncio.run(call([(b"content-length", b"abc")], b"")) == 413
    deep = b"[[[[1]]]]"
    assert asyncio.run(call([(b"content-type", b"application/json")], deep)) == 422
    # The first type counts: text/plain is refused as not JSON (415, since 9f435ea), even with a JSON
    # type after it, and a JSON type first is checked as JSON whatever follows.
    headers = [(b"content-type", b"text/plain"), (b"content-type", b"application/json")]
    assert asyncio.run(call(headers, deep)) == 415
    assert asyncio.run(call(list(reversed(headers)), deep)) == 422
    assert asyncio.run(call(list(reversed(headers)), b"[1]")) == 200 and seen[-1] == b"[1]"


def test_tenantctl_serve_freezes_what_start_up_made_before_it_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The objects start-up leaves (modules, the app, its caches) live as long as the process: frozen
    out of the garbage collector's sight before the first request, a full collection no longer walks
    them all while every request thread waits."""
    import uvicorn

    from tenancy.cli import serve

    seen: dict[str, Any] = {}

    def run(app: Any, **options: Any) -> None:
        seen["frozen"] = gc.get_freeze_count()
        seen["options"] = options

    monkeypatch.setattr(uvicorn, "run", run)
    try:
        serve.serve(host="127.0.0.1", port=1, state_dir=tmp_path / "state", project=PROJECT_DIR, workers=0)
    finally:
        gc.unfreeze()  # this test process goes on collecting as before
    assert seen["frozen"] > 10_000  # the app and what it imported, at the moment serving starts
    assert {key: seen["options"][key] for key in serve.UVICORN_OPTIONS} == serve.UVICORN_OPTIONS
