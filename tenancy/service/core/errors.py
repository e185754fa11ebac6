"""Errors as JSON a person can act on: ``{"error": {"code": "...", "message": "...", "details": [...]}}``.

Codes are stable (clients branch on them); messages may change. Exception text never reaches a
response: an unexpected error answers ``internal_error`` with the request id the log line carries.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("tenancy.service")

# code -> (HTTP status, what it means); the README lists the same table.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "unauthenticated": (401, "no credentials, or a token/API key that does not verify"),
    "forbidden": (403, "your role on this tenant does not allow this"),
    "backup_not_owned": (
        403,
        "the backup belongs to a deleted tenant of the same name (an earlier incarnation): a platform-admin "
        "may restore it, or hand its backups over to this tenant",
    ),
    "platform_admin_required": (
        403,
        "only a platform-admin may do this: set a platform-owned field (plan, groups), force a deletion "
        "without a backup (force), or hand a deleted tenant's backups over to a tenant of its name (or "
        "revoke that); details name the field when there is one",
    ),
    "csrf_failed": (403, "a portal session's write without its CSRF token (X-CSRF-Token)"),
    "not_found": (404, "no such route"),
    "tenant_not_found": (404, "no such tenant among those you can access"),
    "environment_not_served": (
        404,
        "this service manages another environment's tenants (each platform stack runs its own service, "
        "for its own cluster); call that environment's API",
    ),
    "operation_not_found": (404, "no such operation among those you can access"),
    "api_key_not_found": (404, "no such API key for this tenant"),
    "output_not_available": (404, "the tenant has no such output (not enabled or not deployed yet)"),
    "change_request_not_found": (404, "no such change request among those you can see"),
    "backup_not_found": (404, "the tenant has no complete backup with this id"),
    "bad_request": (
        400,
        "the request cannot be read (e.g. a JSON body that is not UTF-8 text); no details",
    ),
    "method_not_allowed": (405, "the route does not take this method"),
    "deletion_protected": (409, "deletionProtection is on"),
    "operation_in_progress": (409, "another operation is queued or running on the tenant; wait, then retry"),
    "qdrant_not_enabled": (409, "the tenant has no Qdrant (qdrant.enabled is off)"),
    "rotation_in_progress": (
        409,
        "a key rotation's grace period is running (the previous keys still work); rotate again after it",
    ),
    "idempotency_key_in_use": (409, "a request with this Idempotency-Key is still running"),
    "change_request_decided": (409, "the change request is no longer pending (approved, rejected, applying)"),
    "change_request_expired": (409, "the change request expired undecided; file it again"),
    "too_many_api_keys": (
        409,
        "the tenant has as many active API keys as it may; revoke one it no longer uses first",
    ),
    "too_many_change_requests": (
        409,
        "the tenant has as many change requests waiting for a platform-admin as it may; file it once one "
        "is decided or has expired",
    ),
    "conflict_with_repository": (
        409,
        "the tenant's file changed in the tenants repository while the change was being written (a merged "
        "pull request, another replica); nothing was written: read the tenant again and repeat the change",
    ),
    "previous_incarnation_not_destroyed": (
        409,
        "the name's earlier tenant was deleted but its stack is not destroyed yet (queued, running, or "
        "failed): its resources and Qdrant data are still there, so the name cannot be created again "
        "until that destroy succeeds (DELETE the tenant again to retry it; a platform-admin may force it)",
    ),
    "change_request_stale": (
        409,
        "the tenant changed since the change request was made; approving would not apply what was reviewed",
    ),
    "precondition_failed": (
        412,
        "If-Match does not match the tenant's current version, or If-None-Match: * and it exists",
    ),
    "backup_expired": (
        410,
        "the deleted tenant's backup is past its retention period; it cannot be restored",
    ),
    "payload_too_large": (413, "the request body is too large"),
    "unsupported_media_type": (
        415,
        "the request has a body whose Content-Type is not JSON; send it as application/json",
    ),
    "invalid_spec": (422, "the tenant spec is invalid; details name each field and reason"),
    "invalid_request": (422, "the request is malformed; details name each field and reason"),
    "json_too_deep": (422, "the JSON body nests arrays and objects deeper than the service accepts"),
    "invalid_character": (
        422,
        "a string of the body holds a control or formatting character (NUL, ESC, C1, bidi overrides, ...); "
        "details name each field",
    ),
    "idempotency_key_reused": (422, "the Idempotency-Key was used for a different request"),
    "rate_limited": (
        429,
        "too many requests from this principal, or a credential that does not verify from an address "
        "with too many failed authentications; retry after Retry-After",
    ),
    "preview_busy": (429, "too many previews in flight (yours or everyone's); retry after Retry-After"),
    "internal_error": (500, "an unexpected error; the log has the request id"),
    "service_unavailable": (
        503,
        "the service cannot answer this request right now; retry (after Retry-After when it is given)",
    ),
    "engine_unavailable": (503, "the automation engine could not answer"),
    "repository_unavailable": (503, "the tenants repository could not be written"),
    "tenant_busy": (
        503,
        "another change to the tenant is being written (by another replica, or one that stopped mid-write: "
        "its lock expires within two minutes); retry",
    ),
    "audit_unavailable": (
        503,
        "the audit log cannot be written: nothing is accepted until it can (a change already committed "
        "when its record failed says so, and stands)",
    ),
    "backups_unavailable": (503, "the service has no backup bucket configured, or it cannot be read"),
    "not_ready": (503, "a dependency of the service is not ready"),
    "identity_provider_unavailable": (
        503,
        "the identity provider's signing keys cannot be fetched; retry after Retry-After (not counted "
        "as a failed authentication)",
    ),
}


class ServiceError(Exception):
    """An error with a stable code; raised by routes and the layers they call."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        details: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        took_effect: bool = False,
    ) -> None:
        """``took_effect``: what the request asked for was done although it is answered with this
        error (a change committed and queued whose audit record then failed): an Idempotency-Key keeps
        this answer, so a retry replays it instead of doing the change again."""
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.status = ERROR_CODES[code][0]
        self.message = message
        self.details = details
        self.headers = headers
        self.took_effect = took_effect


def error_body(code: str, message: str, details: list[dict[str, str]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def error_response(error: ServiceError) -> JSONResponse:
    return JSONResponse(
        error_body(error.code, error.message, error.details), status_code=error.status, headers=error.headers
    )


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "-"))


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Only where and why: pydantic's "input" would echo what was sent, which may be a secret.
    details = [
        {"field": ".".join(str(part) for part in error.get("loc", ())), "reason": str(error.get("msg", ""))}
        for error in exc.errors()
    ]
    return JSONResponse(
        error_body("invalid_request", "the request is malformed; see details", details), status_code=422
    )


# Other 4xx errors FastAPI or Starlette raise (a body that cannot be decoded: 400) answer 400
# ``bad_request``; ``invalid_request`` is 422 only (a request read but not valid, with details). A 5xx
# the framework raises (none does today; a library's middleware or a later version might) answers with
# a code whose status it is: 503 ``service_unavailable`` (its Retry-After kept: come back later), any
# other 500 ``internal_error``, logged with the request id as an unexpected error is. A code never
# travels with another status than the table's.
_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    503: "service_unavailable",
}
_HTTP_MESSAGES = {
    "not_found": "no such route; the API lives under /api/v1 (see /docs)",
    "method_not_allowed": "this route does not take this method",
    "payload_too_large": "the request body is too large",
    "bad_request": "the request cannot be read (is its body UTF-8 JSON?)",
    "service_unavailable": "the service cannot answer this request right now; retry later",
}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal_error")
    if code == "internal_error":
        rid = request_id(request)
        log.error(
            "HTTP %d raised outside the service's errors handling %s %s (request %s)",
            exc.status_code,
            request.method,
            request.url.path,
            rid,
        )
        return JSONResponse(
            error_body(code, f"an unexpected error occurred; quote request id {rid} to the platform team"),
            status_code=ERROR_CODES[code][0],
        )
    return JSONResponse(
        error_body(code, _HTTP_MESSAGES[code]), status_code=ERROR_CODES[code][0], headers=exc.headers
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    status, body, headers = unexpected_answer(exc, request_id(request), request.method, request.url.path)
    return JSONResponse(body, status_code=status, headers=headers)


def unexpected_answer(
    exc: BaseException, rid: str, method: str, path: str
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The answer to an error no route handled (status, body, headers), logged: 503 to retry when the
    shared store (Redis) cannot be reached, else 500 naming the request id (the traceback goes to the
    operator's log, never to the caller)."""
    if _unreachable_store(exc):
        # Redis restarting or cut off (the rate limits, the queue, keys): the caller may retry, as
        # /readyz says meanwhile, rather than report a fault (outside replica review: every request
        # answered 500 during an outage).
        log.warning(
            "the shared store could not be reached handling %s %s (request %s): %s",
            method,
            path,
            rid,
            type(exc).__name__,
        )
        message = (
            f"the service's shared store (Redis) cannot be reached right now; retry in "
            f"{_RETRY_AFTER_STORE_SECONDS} s (after a write, read what it changed first, or repeat it "
            "with the same Idempotency-Key: it may have been recorded before the store went away)"
        )
        headers = {"Retry-After": str(_RETRY_AFTER_STORE_SECONDS)}
        return 503, error_body("service_unavailable", message), headers
    log.error("unexpected error handling %s %s (request %s)", method, path, rid, exc_info=exc)
    message = f"an unexpected error occurred; quote request id {rid} to the platform team"
    return 500, error_body("internal_error", message), {}


_RETRY_AFTER_STORE_SECONDS = 5


def _unreachable_store(exc: BaseException) -> bool:
    """A Redis connection or timeout error (redis-py's own classes, checked by module and name so the
    embedded default, which never imports redis, does not load it here)."""
    return any(
        cls.__module__.startswith("redis") and cls.__name__ in ("ConnectionError", "TimeoutError")
        for cls in type(exc).__mro__
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
