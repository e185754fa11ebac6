"""The app factory: ``create_app()`` builds the tenant self-service API from settings.

Backends are built eagerly (so an app is usable over an ASGI transport without a lifespan); the
lifespan only starts and stops the worker threads that run queued operations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from tenancy.automation.contract import Engine, WorkQueue
from tenancy.service.api import API_PREFIX
from tenancy.service.api.main import api_routers
from tenancy.service.api.routes import health
from tenancy.service.backends import Backends, build_backends
from tenancy.service.core.audit import WritesNeedTheAuditLog
from tenancy.service.core.config import ServiceSettings
from tenancy.service.core.errors import ERROR_CODES, install_error_handlers
from tenancy.service.core.metrics import RequestContextMiddleware
from tenancy.service.core.processes import ALONE, ProcessShare
from tenancy.service.core.request_body import RequestBodyGuard
from tenancy.service.portal.routes import install_portal

DESCRIPTION = """\
Tenants create, change, scale and delete their own Qdrant and vCluster, and fetch their endpoints,
keys and kubeconfig, without a ticket and without ever seeing another tenant.

Authenticate with a Keycloak access token (`Authorization: Bearer <jwt>`, audience `tenant-api`) or
an API key (`Authorization: Bearer tnk_...` or `X-API-Key`). Writes answer 202 with an operation;
follow it at `/api/v1/operations/{id}/events` (Server-Sent Events).

Errors are `{"error": {"code", "message", "details"?}}`; codes:
""" + "\n".join(f"- `{code}` ({status}): {meaning}" for code, (status, meaning) in ERROR_CODES.items())


def create_app(
    settings: ServiceSettings | None = None,
    *,
    engine: Engine | None = None,
    queue: WorkQueue | None = None,
    redis: Any | None = None,
    seed_tenants: Path | None = None,
    data: Any | None = None,
    share: ProcessShare = ALONE,
) -> FastAPI:
    """``data``: where tenants' Qdrant and backups are (tenancy.automation.data_operations.TenantData);
    None: from the settings (the platform's backup bucket and the stacks' outputs), if configured.
    ``share``: this process's part of a service run as several processes (``core.processes``)."""
    settings = settings or ServiceSettings()
    backends = build_backends(
        settings, engine=engine, queue=queue, redis=redis, seed_tenants=seed_tenants, data=data, share=share
    )
    return app_for(backends)


def app_for(backends: Backends) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The worker threads a def route runs on (per event loop: set here, inside it). At 50 writing
        # clients, Starlette's 40 made 10 wait outside the commit groups: 12-18% fewer writes a second
        # than 128 here (benchmarks/bench_service.py, README "Self-service HTTP API").
        anyio.to_thread.current_default_thread_limiter().total_tokens = backends.settings.request_threads
        backends.start()
        try:
            yield
        finally:
            backends.stop()

    # /docs and /redoc from assets served here: FastAPI's pages load Swagger UI and ReDoc from a CDN,
    # so they were blank wherever the service (or its user) has no internet, an air-gapped cluster.
    app = FastAPIOffline(
        title="Tenant self-service API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.backends = backends
    install_error_handlers(app)
    # Starlette runs the middleware added last first: the context (request id, metrics) wraps the
    # body guard and the audit log's check, so their refusals carry the request id and are counted.
    app.add_middleware(WritesNeedTheAuditLog, audit=backends.audit, prefix=API_PREFIX)
    app.add_middleware(
        RequestBodyGuard,
        max_bytes=backends.settings.max_body_bytes,
        max_depth=backends.settings.max_json_depth,
    )
    app.add_middleware(RequestContextMiddleware, metrics=backends.metrics)
    app.include_router(health.router)
    for router in api_routers:
        app.include_router(router)
    install_portal(app, backends)
    return app
