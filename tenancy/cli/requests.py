"""``tenantctl requests list|show|approve|reject``: platform-admins decide change requests.

The commands talk to the running service (``--url``, ``TENANCY_API_URL``) with a platform-admin's
token (``--token``, ``TENANCY_TOKEN``): the service owns the requests, applies an approval through
the same path as every other write (git commit, queue) and audits every decision.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Annotated, Any

import typer

from tenancy.cli import exit_codes
from tenancy.cli.remote import RemoteFailure, call, fail

requests_app = typer.Typer(
    name="requests",
    help="Change requests that need a platform-admin: list, show, approve, reject.",
    no_args_is_help=True,
)

UrlOption = Annotated[
    str,
    typer.Option("--url", envvar="TENANCY_API_URL", help="The service's base URL."),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="TENANCY_TOKEN",
        help="A platform-admin's access token (e.g. tenantctl dev-token --platform-admin).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]
DEFAULT_URL = "http://127.0.0.1:8080"


def _call(
    method: str,
    url: str,
    token: str | None,
    path: str,
    body: Any = None,
    *,
    as_json: bool,
    whose: str = "a platform-admin's access token",
) -> Any:
    """The service's JSON answer; else the error (the API's code and message, ``service_unreachable``
    when it cannot be reached) printed as every command prints one (``{"error": ...}`` with
    ``--json``), and exit 2 for what the caller must fix, 3 when the service failed."""
    if not token:
        fail(
            RemoteFailure(
                "unauthenticated", f"pass --token or set TENANCY_TOKEN ({whose})", exit_codes.INVALID_INPUT
            ),
            as_json,
        )
    try:
        return call(method, url, token, path, body)
    except RemoteFailure as failure:
        fail(failure, as_json)


def _shown(text: object) -> str:
    """What a requester wrote, safe for a terminal: control and formatting characters (an escape
    sequence, a right-to-left override) as ``\\uXXXX``. The service refuses them, but an older
    service or another client may have stored some, and a platform-admin reads this before approving."""
    return "".join(
        f"\\u{ord(char):04x}" if unicodedata.category(char) in ("Cc", "Cf") else char for char in str(text)
    )


def _line(request: dict[str, Any]) -> str:
    needs = ", ".join(need["field"] for need in request["needs"]) or "-"
    return (
        f"{request['id']}  {request['status']:<8}  {request['environment']}.{request['tenant']:<20}  "
        f"needs {needs:<12}  by {_shown(request['requesterName'])}  {request['createdAt'][:16]}"
    )


def _show(request: dict[str, Any]) -> None:
    typer.echo(f"{request['id']}  {request['environment']}.{request['tenant']}  {request['status']}")
    who = f"{_shown(request['requesterName'])} ({_shown(request['requestedBy'])})"
    typer.echo(f"requested by {who} at {request['createdAt']}")
    typer.echo(f"expires {request['expiresAt']}")
    typer.echo(f"reason: {_shown(request['reason'])}")
    for need in request["needs"]:
        typer.echo(f"needs a platform-admin: {need['field']}: {need['reason']}")
    typer.echo("diff:")
    for change in request["diff"]:
        typer.echo(f"  {change['field']}: {json.dumps(change['before'])} -> {json.dumps(change['after'])}")
    preview = request.get("preview") or {}
    if "summary" in preview:
        summary = ", ".join(f"{count} {action}" for action, count in sorted(preview["summary"].items()))
        typer.echo(f"preview: {summary}")
        for change in preview.get("changes", []):
            fields = ", ".join(change.get("changedFields") or [])
            typer.echo(f"  {change['action']:<6} {change['type']} {change['name']}  {fields}".rstrip())
    elif "error" in preview:
        typer.echo(f"preview: {preview['error']}")
    if request.get("decidedBy"):
        typer.echo(f"decided by {request['decidedBy']} at {request['decidedAt']}")
    if request.get("decisionReason"):
        typer.echo(f"decision: {_shown(request['decisionReason'])}")
    if request.get("operationId"):
        typer.echo(f"operation: {request['operationId']}")


@requests_app.command("list")
def list_requests(
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            help="pending | applying | approved | rejected | expired, or all (the default).",
        ),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """List change requests, newest first."""
    path = "/change-requests" + (f"?status={status}" if status and status != "all" else "")
    body = _call("GET", url, token, path, as_json=as_json)
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    requests = body["changeRequests"]
    if not requests:
        typer.echo("no change requests")
    for request in requests:
        typer.echo(_line(request))


@requests_app.command("show")
def show_request(
    request_id: Annotated[str, typer.Argument(help="The change request's id (cr-...).")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a change request: reason, diff, preview and outcome."""
    body = _call("GET", url, token, f"/change-requests/{request_id}", as_json=as_json)
    if as_json:
        typer.echo(json.dumps(body, indent=2))
    else:
        _show(body)


@requests_app.command("approve")
def approve_request(
    request_id: Annotated[str, typer.Argument(help="The change request's id (cr-...).")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Approve: commit and apply exactly the change shown (refused if the tenant changed since)."""
    body = _call("POST", url, token, f"/change-requests/{request_id}/approve", as_json=as_json)
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    operation = body["accepted"]["operation"]
    commit = (body["accepted"].get("commit") or "")[:12] or "no change"
    typer.echo(f"approved {request_id}: commit {commit}, operation {operation['id']} {operation['status']}")


@requests_app.command("reject")
def reject_request(
    request_id: Annotated[str, typer.Argument(help="The change request's id (cr-...).")],
    reason: Annotated[str, typer.Option("--reason", help="Why, for the requester.")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Reject, with a reason the requester sees."""
    body = _call(
        "POST", url, token, f"/change-requests/{request_id}/reject", {"reason": reason}, as_json=as_json
    )
    if as_json:
        typer.echo(json.dumps(body, indent=2))
    else:
        typer.echo(f"rejected {request_id}: {reason}")


def register(app: typer.Typer) -> None:
    app.add_typer(requests_app, name="requests")
