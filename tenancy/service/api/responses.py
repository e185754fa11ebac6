"""The error responses a route documents in OpenAPI, built from the one table of error codes
(``tenancy.service.core.errors.ERROR_CODES``: code → status and meaning).

A route module names the codes its routes answer with; their statuses and descriptions come from the
table, so a code cannot be documented under one status and answered under another, and no module
keeps its own wording of what a status means.
"""

from __future__ import annotations

from typing import Any

from tenancy.service.core.errors import ERROR_CODES
from tenancy.service.models import ErrorResponse

# What every authenticated route may answer before it runs (tenancy.service.deps).
AUTHENTICATED = ("unauthenticated", "rate_limited", "identity_provider_unavailable")
# What every route taking a JSON body may answer before it runs (tenancy.service.core.request_body,
# FastAPI's own parsing and validation).
WITH_BODY = (
    "bad_request",
    "payload_too_large",
    "unsupported_media_type",
    "json_too_deep",
    "invalid_character",
    "invalid_request",
)


def error_responses(*codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for ``codes``: one entry per status, listing its codes and what each
    means. KeyError for a code the table does not hold."""
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(ERROR_CODES[code][0], []).append(code)
    return {
        status: {
            "model": ErrorResponse,
            "description": "; ".join(f"`{code}`: {ERROR_CODES[code][1]}" for code in found) + ".",
        }
        for status, found in sorted(by_status.items())
    }
