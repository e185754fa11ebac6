"""Running a write under an Idempotency-Key (see ``core.idempotency`` for the rules)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from tenancy.service.api import API_PREFIX
from tenancy.service.backends import Backends
from tenancy.service.core.errors import ServiceError, error_body
from tenancy.service.core.idempotency import StoredResponse
from tenancy.service.core.security import Principal
from tenancy.service.deps import request_fingerprint

WriteResult = tuple[int, dict[str, Any], dict[str, str]]


def run_idempotent(
    request: Request,
    backends: Backends,
    principal: Principal,
    key: str | None,
    body: Any,
    write: Callable[[], WriteResult],
    *,
    stored: Callable[[dict[str, Any]], dict[str, Any]] = lambda body: body,
) -> JSONResponse:
    """Run ``write`` once per (caller, key); a repeat replays the first answer (``stored`` decides what
    of it is kept: an API key's plaintext, for one, is not)."""
    if key is None:
        status, payload, headers = write()
        return JSONResponse(payload, status_code=status, headers=headers)
    store = backends.idempotency
    replay = store.begin(principal.actor, key, request_fingerprint(request, body))
    if replay is not None:
        headers = {"Idempotent-Replayed": "true", **answer_headers(replay.body)}
        return JSONResponse(replay.body, status_code=replay.status, headers=headers)
    try:
        status, payload, headers = write()
    except ServiceError as error:
        if error.took_effect:  # done, though answered with an error: a retry must not do it again
            body = error_body(error.code, error.message, error.details)
            store.finish(principal.actor, key, StoredResponse(status=error.status, body=body))
        else:
            store.abandon(principal.actor, key)
        raise
    except BaseException:
        store.abandon(principal.actor, key)
        raise
    if 200 <= status < 300:
        store.finish(principal.actor, key, StoredResponse(status=status, body=stored(payload)))
    else:
        store.abandon(principal.actor, key)
    return JSONResponse(payload, status_code=status, headers=headers)


def answer_headers(body: dict[str, Any]) -> dict[str, str]:
    """The headers of a write's answer, from its body: its ETag and where its operation or change request
    is. The write's route answers with them, and a replay makes them again from the stored body (the
    store keeps status and body only), so both carry the same (outside replica review: a replay had
    neither, and a client retrying after a timeout could not go on with If-Match)."""
    headers: dict[str, str] = {}
    if isinstance(body.get("etag"), str):
        headers["ETag"] = f'"{body["etag"]}"'
    for field, path in (("operation", "operations"), ("changeRequest", "change-requests")):
        found = body.get(field)
        if isinstance(found, dict) and isinstance(found.get("id"), str):
            headers["Location"] = f"{API_PREFIX}/{path}/{found['id']}"
            break
    return headers
