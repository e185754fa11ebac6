"""Talking to the running service from tenantctl: one call, and following an operation to its end.

Commands that work locally and against the service take ``--url`` (``TENANCY_API_URL``) and
``--token`` (``TENANCY_TOKEN``): with a URL they call the service, which checks the caller's role and
runs the operation on its workers; without, they run here. Errors print the API's stable code and
message; exit 2 for what the caller must fix (4xx), 3 when the service or the operation failed.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer

from tenancy.cli import exit_codes

# An operation's stream ends after the service's sse_max_seconds; following reconnects this often.
MAX_RECONNECTS = 10_000


class RemoteFailure(Exception):
    """The service refused or could not answer; ``code`` is the API's stable error code."""

    def __init__(self, code: str, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.code, self.message, self.exit_code = code, message, exit_code


def _headers(token: str) -> dict[str, str]:
    # API keys go in X-API-Key, tokens in Authorization: the service tells them apart the same way.
    if token.startswith("tnk_"):
        return {"X-API-Key": token}
    return {"Authorization": f"Bearer {token}"}


def call(method: str, url: str, token: str | None, path: str, body: Any = None) -> Any:
    """``method`` ``/api/v1<path>`` on the service; its JSON, or ``RemoteFailure``."""
    import httpx

    if not token:
        raise RemoteFailure(
            "unauthenticated", "pass --token or set TENANCY_TOKEN with --url", exit_codes.INVALID_INPUT
        )
    try:
        response = httpx.request(
            method, f"{url.rstrip('/')}/api/v1{path}", json=body, headers=_headers(token), timeout=60.0
        )
    except httpx.HTTPError as error:
        raise RemoteFailure(
            "service_unreachable",
            f"cannot reach the service at {url} ({type(error).__name__})",
            exit_codes.OPERATION_FAILED,
        ) from None
    if response.is_success:
        return response.json()
    raise _failure(response.status_code, response.content)


def _failure(status: int, content: bytes) -> RemoteFailure:
    exit_code = exit_codes.INVALID_INPUT if status < 500 else exit_codes.OPERATION_FAILED
    try:
        error = json.loads(content)["error"]
        message = str(error["message"])
        for detail in error.get("details") or []:
            message += f"\n  {detail['field']}: {detail['reason']}"
        return RemoteFailure(str(error["code"]), message, exit_code)
    except (ValueError, KeyError, TypeError):
        return RemoteFailure("http_error", f"the service answered HTTP {status}", exit_code)


def follow(url: str, token: str, operation_id: str, *, quiet: bool) -> dict[str, Any]:
    """Follow the operation's events (Server-Sent Events) until it ends; print each progress line on
    stderr unless ``quiet``; return the finished operation as the API shows it."""
    import httpx

    last_seen: str | None = None
    path = f"{url.rstrip('/')}/api/v1/operations/{operation_id}/events"
    for _ in range(MAX_RECONNECTS):
        headers = _headers(token) | ({"Last-Event-ID": last_seen} if last_seen else {})
        event = ""
        try:
            with httpx.stream("GET", path, headers=headers, timeout=120.0) as response:
                if not response.is_success:
                    raise _failure(response.status_code, response.read())
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event = line.removeprefix("event:").strip()
                    elif line.startswith("id:"):
                        last_seen = line.removeprefix("id:").strip()
                    elif line.startswith("data:"):
                        data = json.loads(line.removeprefix("data:"))
                        if event == "end":
                            return dict(data)
                        if event == "progress" and not quiet:
                            _progress_line(data)
        except httpx.HTTPError as error:
            raise RemoteFailure(
                "service_unreachable",
                f"lost the service at {url} while following operation {operation_id} "
                f"({type(error).__name__}); it keeps running: tenantctl can follow it again",
                exit_codes.OPERATION_FAILED,
            ) from None
    raise RemoteFailure(
        "follow_gave_up",
        f"operation {operation_id} did not finish; it keeps running",
        exit_codes.OPERATION_FAILED,
    )


def _progress_line(event: dict[str, Any]) -> None:
    words = [str(event[key]) for key in ("kind", "op", "resource", "status") if event.get(key)]
    message = f" - {event['message']}" if event.get("message") else ""
    sys.stderr.write(f"{' '.join(words)}{message}\n")
    sys.stderr.flush()


def fail(failure: RemoteFailure, as_json: bool) -> NoReturn:
    if as_json:
        typer.echo(json.dumps({"error": {"code": failure.code, "message": failure.message}}, indent=2))
    else:
        typer.echo(f"error: {failure.code}: {failure.message}", err=True)
    raise typer.Exit(failure.exit_code)
