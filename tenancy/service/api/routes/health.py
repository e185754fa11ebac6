"""Liveness, readiness and Prometheus metrics (unauthenticated; they reveal nothing about tenants)."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from tenancy.service.deps import BackendsDep
from tenancy.service.models import HealthView

router = APIRouter(tags=["health"])
log = logging.getLogger("tenancy.service")


@router.get("/healthz", response_model=HealthView, summary="Liveness: the process answers")
def healthz() -> HealthView:
    return HealthView(status="ok")


@router.get(
    "/readyz",
    response_model=HealthView,
    responses={503: {"model": HealthView, "description": "Not ready: a check is failing."}},
    summary="Readiness: queue, tenants repository, signing keys and the audit log",
)
def readyz(backends: BackendsDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        backends.queue.recent(limit=1)
        checks["queue"] = "ok"
    except Exception as error:  # a check reports, it does not raise
        log.warning("readiness: queue check failed: %s", type(error).__name__)
        checks["queue"] = "failing"
    checks["repository"] = "ok" if backends.repository.healthy() else "failing"
    checks["signing_keys"] = "ok" if backends.verifier.keys.ready() else "failing"
    # A write is answered only once its audit record is flushed: without the log, none can be.
    checks["audit_log"] = "ok" if backends.audit.writable() else "failing"
    if backends.worker is not None:  # this process runs operations: they run only while it does
        checks["worker"] = "ok" if backends.worker.healthy else "failing"
    ready = all(value == "ok" for value in checks.values())
    view = HealthView(status="ready" if ready else "not_ready", checks=checks)
    return JSONResponse(view.wire(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
def metrics(backends: BackendsDep) -> Response:
    return Response(backends.metrics.render(), media_type=CONTENT_TYPE_LATEST)
