"""Health, readiness, metrics and per-principal rate limits."""

from __future__ import annotations

from typing import Any

import pytest

from tests.service.conftest import AppFactory, Issuer, LiveServer, spec


def test_health_and_readiness_answer_without_credentials(make_app: AppFactory, serve: Any) -> None:
    app, _ = make_app(workers=0)
    server: LiveServer = serve(app)
    with server.client() as client:
        assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
        ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {
        "queue": "ok",
        "repository": "ok",
        "signing_keys": "ok",
        "audit_log": "ok",
    }


def test_readiness_fails_when_the_signing_keys_cannot_be_fetched(make_app: AppFactory, serve: Any) -> None:
    app, _ = make_app(workers=0, jwks_url="http://127.0.0.1:9/nothing")
    server: LiveServer = serve(app)
    with server.client() as client:
        ready = client.get("/readyz")
        me = client.get("/api/v1/me", headers={"Authorization": "Bearer a.b.c"})
    assert ready.status_code == 503 and ready.json()["checks"]["signing_keys"] == "failing"
    assert me.status_code == 401  # a malformed token is refused before any key is needed


def test_metrics_count_requests_by_route_template_and_auth_failures(
    make_app: AppFactory, serve: Any, issuer: Issuer
) -> None:
    app, _ = make_app(workers=0)
    server: LiveServer = serve(app)
    with server.client(issuer.admin_of("acme")) as client:
        client.put("/api/v1/environments/dev/tenants/acme", json=spec("acme"))
        client.get("/api/v1/environments/dev/tenants/acme")
        client.get("/api/v1/me", headers={"Authorization": "Bearer nonsense"})
        text = client.get("/metrics").text
    assert (
        'tenant_api_requests_total{method="GET",route="/api/v1/environments/{environment}/tenants/{name}",'
        'status="200"} 1.0'
    ) in text
    assert 'tenant_api_operations_submitted_total{kind="up"} 1.0' in text
    assert 'tenant_api_auth_failures_total{reason="malformed"} 1.0' in text
    # The write's waits, one per durable step: where its time went (commit, queue, audit).
    for stage in ("commit", "queue", "audit"):
        assert f'tenant_api_write_wait_seconds_count{{stage="{stage}"}} 1.0' in text
    assert "acme" not in text  # tenant names never become labels


def test_requests_are_rate_limited_per_principal(make_app: AppFactory, serve: Any, issuer: Issuer) -> None:
    # An hour's window: a burst of a fraction of a second all but never crosses into the next one.
    app, _ = make_app(workers=0, rate_limit_requests=5, rate_limit_window_seconds=3600)
    server: LiveServer = serve(app)
    noisy = issuer.admin_of("acme", sub="noisy")
    quiet = issuer.admin_of("acme", sub="quiet")
    with server.client(noisy) as client:
        statuses = [client.get("/api/v1/me").status_code for _ in range(7)]
        limited = client.get("/api/v1/me")
    assert statuses == [200] * 5 + [429] * 2
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 3600
    with server.client(quiet) as client:
        assert client.get("/api/v1/me").status_code == 200


def test_the_openapi_document_describes_the_versioned_api(make_app: AppFactory, serve: Any) -> None:
    app, _ = make_app(workers=0)
    server: LiveServer = serve(app)
    with server.client() as client:
        document = client.get("/openapi.json").json()
    assert document["info"]["version"] == "1.0.0"
    put = document["paths"]["/api/v1/environments/{environment}/tenants/{name}"]["put"]
    schema = put["requestBody"]["content"]["application/json"]["schema"]
    assert {"owners", "plan", "qdrant", "vcluster", "deletionProtection"} <= set(schema["properties"])
    assert "name" not in schema["required"]
    assert document["components"]["securitySchemes"].keys() == {"HTTPBearer", "APIKeyHeader"}


def test_readiness_runs_git_at_most_once_per_few_seconds(
    make_app: AppFactory, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = make_app(workers=0)
    server: LiveServer = serve(app)
    repository = app.state.backends.repository
    runs = []
    run = repository._run

    def counting(*args: str, **kwargs: Any) -> Any:
        runs.append(args)
        return run(*args, **kwargs)

    monkeypatch.setattr(repository, "_run", counting)
    with server.client() as client:
        statuses = [client.get("/readyz").status_code for _ in range(10)]
    assert statuses == [200] * 10
    assert len(runs) <= 1  # an unauthenticated probe cannot make the service spawn git at will


def test_the_service_runs_blocking_request_work_on_as_many_threads_as_set(make_app: AppFactory) -> None:
    """Writes in flight together share one commit: the thread pool bounds how many are in flight, so it
    is a setting (TENANCY_SERVICE_REQUEST_THREADS), applied in the serving event loop at start-up."""
    import anyio
    import anyio.to_thread

    async def threads_while_serving(threads: int | None) -> float:
        app, _ = make_app(workers=0, **({"request_threads": threads} if threads else {}))
        async with app.router.lifespan_context(app):
            return anyio.to_thread.current_default_thread_limiter().total_tokens

    assert anyio.run(threads_while_serving, 3) == 3
    assert anyio.run(threads_while_serving, None) == 128  # the default, above Starlette's 40


def test_the_api_docs_load_without_internet(make_app: AppFactory, serve: Any) -> None:
    """Found following the README: /docs loaded Swagger UI from a CDN, so it was blank on a machine (or
    in a cluster) without internet. Every asset the pages name is served by the service itself."""
    import re

    app, _ = make_app(workers=0)
    server: LiveServer = serve(app)
    with server.client() as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page)
            assert html.status_code == 200, page
            assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text)
            assert assets and not any("//" in asset for asset in assets), (page, assets)  # none elsewhere
            for asset in assets:
                assert client.get(asset).status_code == 200, asset
        assert client.get("/openapi.json").status_code == 200
