"""``tenantctl rotate-keys``: start a Qdrant key rotation for one tenant.

With ``--url`` (or ``TENANCY_API_URL``) it asks the running service (``POST …/qdrant/keys/rotate``, the
caller's ``--token``), which commits the record as the caller, queues the update, audits it and later
revokes the old keys by itself; ``--status`` reads where the rotation stands. Without, the local path:

Records the next ``qdrant.keyRotation`` in the tenant file (tenancy.spec.rotation) and runs ``up``: the
new keys work beside the old ones until the revocation is recorded. The service records it by itself
once ``graceUntil`` has passed; on the local path ``--end-grace`` does. The key itself is never printed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
import yaml

from tenancy.automation.contract import OperationKind, StackRef
from tenancy.cli import exit_codes
from tenancy.cli.operations import _engine, _fail, _read_tenant, _requester, _run_one, _settings, _stack
from tenancy.cli.options import (
    EnvOption,
    JsonOption,
    ProjectOption,
    RemoteTokenOption,
    RemoteUrlOption,
    StateOption,
    TenantArgument,
    TenantsOption,
)
from tenancy.spec.rotation import RotationRefused, begin_rotation, end_grace, parse_grace

EndGraceOption = Annotated[
    bool,
    typer.Option(
        "--end-grace",
        help="Once graceUntil has passed: record the revocation and run up, so the old keys stop working.",
    ),
]
StatusOption = Annotated[
    bool, typer.Option("--status", help="With --url: show where the rotation stands; change nothing.")
]
GraceOption = Annotated[
    str, typer.Option("--grace", help="How long the old keys keep working: 15m to 7d (e.g. 1h, 2d).")
]


def rotate_keys(
    tenant: TenantArgument,
    env: EnvOption,
    grace: GraceOption = "1h",
    end: EndGraceOption = False,
    url: RemoteUrlOption = None,
    token: RemoteTokenOption = None,
    status: StatusOption = False,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    tenants: TenantsOption = None,
    state_dir: StateOption = None,
) -> None:
    """Rotate one tenant's Qdrant API key and read-only key without downtime.

    Writes the next key generation to tenants/<env>/<tenant>.yaml and runs
    `up`. The old keys keep working until the grace period ends; clients
    re-read their key (Vault or the Secret qdrant-api-keys) before then.
    Refused while a previous rotation's grace period runs. After graceUntil,
    --end-grace records the revocation and runs `up` (the service does this
    by itself for the tenants it manages).

    Example:  tenantctl rotate-keys acme --env dev --grace 1h
    Against the service: tenantctl rotate-keys acme --env dev --url URL --token T

    Exit codes: 0 ok, 2 invalid input or refused, 3 the operation failed.
    """
    if url:
        _rotate_remotely(url, token, _stack(env, tenant, as_json), grace, status=status, as_json=as_json)
        return
    if status:
        _fail(
            "--status asks the service: pass --url (or set TENANCY_API_URL)",
            exit_codes.INVALID_INPUT,
            as_json,
        )
    settings = _settings(project, tenants, state_dir)
    stack = _stack(env, tenant, as_json)
    # The file as its author wrote it (pins equal to today's defaults stay).
    document = _read_tenant(settings, stack, as_json).to_file_document()
    now = datetime.now(UTC)
    try:
        if end:
            ended = end_grace(document, now=now)
            if ended is None:
                raise RotationRefused(
                    "grace_not_over",
                    f"{stack.name} has no rotation whose grace period is over and not yet ended: "
                    "nothing to revoke",
                )
            rotated = ended
        else:
            rotated = begin_rotation(document, now=now, grace=parse_grace(grace), requested_by=_requester())
    except RotationRefused as refused:
        _fail(str(refused), exit_codes.INVALID_INPUT, as_json, code=refused.code)
    # Rewritten only once the update can run: without the Pulumi CLI this stops here, file untouched.
    engine = _engine(settings, as_json)
    path = settings.tenants_dir / env / f"{tenant}.yaml"
    path.write_text(yaml.safe_dump(rotated, sort_keys=False), encoding="utf-8")
    _run_one(OperationKind.up, tenant, env, as_json, settings, engine=engine)


_MAX_SUPERSEDED = 100  # superseding updates followed one after the other, at most


def _rotate_remotely(
    url: str, token: str | None, stack: StackRef, grace: str, *, status: bool, as_json: bool
) -> None:
    import json

    from tenancy.cli.remote import RemoteFailure, fail, follow
    from tenancy.cli.requests import _call

    whose = "an access token for the tenant"
    path = f"/environments/{stack.environment}/tenants/{stack.tenant}/qdrant/keys/rotate"
    accepted = finished = None
    if not status:
        accepted = _call("POST", url, token, path, {"grace": grace}, as_json=as_json, whose=whose)
        operation = accepted["operation"]
        if not as_json:
            typer.echo(
                f"rotating the Qdrant keys of {stack.name}: commit {(accepted.get('commit') or '')[:12]}, "
                f"operation {operation['id']} {operation['status']}"
            )
        try:  # the update deploying the new keys, to its end (as backup and restore follow theirs)
            assert token is not None  # _call refused without one
            finished = follow(url, token, operation["id"], quiet=as_json)
            # A later change of the tenant superseded it: that update carries the record forward and
            # deploys the new keys, so it is the one to follow.
            for _ in range(_MAX_SUPERSEDED):
                if finished["status"] != "superseded" or not finished.get("supersededBy"):
                    break
                finished = follow(url, token, finished["supersededBy"], quiet=as_json)
        except RemoteFailure as failure:
            fail(failure, as_json)
    state = _call("GET", url, token, path, as_json=as_json, whose=whose)
    if as_json:
        typer.echo(
            json.dumps(
                {"accepted": accepted, "operation": finished, "rotation": state} if accepted else state,
                indent=2,
            )
        )
    else:
        if finished is not None:
            summary = finished.get("summary") or {}
            error = f": {summary['error']}" if summary.get("error") else ""
            operation_id, generation = finished["id"], state["generation"]
            typer.echo(
                f"update {finished['status']}{error} (operation {operation_id}); generation {generation}"
            )
        typer.echo(f"phase {state['phase']}: {_phase_meaning(state)}")
    if finished is not None and finished["status"] != "succeeded":
        raise typer.Exit(exit_codes.OPERATION_FAILED)


def _phase_meaning(state: dict[str, Any]) -> str:
    """What the phase means for a client holding a key (``oldKeysAccepted`` says whether Qdrant as
    last updated accepts the previous generation's keys beside the current ones: before the new keys
    are deployed there are no two generations, and the keys in use are simply the current ones)."""
    until = state.get("graceUntil")
    phase = state["phase"]
    if phase == "rolling_out":
        return "the new keys are being deployed; the keys in use keep working meanwhile" + (
            f" and until {until}; re-read your key before then" if until else ""
        )
    if phase == "stalled":
        return (
            "the update deploying the new keys failed: the keys in use keep working, and are not revoked "
            "until the new ones are deployed; fix what failed it, then queue it again (PATCH the tenant "
            "with {})"
        )
    if phase == "grace":
        return f"both generations' keys work until {until}; re-read your key before then"
    if phase == "revoking":
        return "the previous keys are being revoked (Qdrant still accepts them until this update ends)"
    if phase == "complete":
        return "only the current keys work"
    return "no rotation yet"


def register(app: typer.Typer) -> None:
    app.command("rotate-keys")(rotate_keys)
