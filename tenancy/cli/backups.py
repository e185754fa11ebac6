"""``tenantctl backup|backups|restore``: a tenant's Qdrant backups, here or through the service.

Without ``--url`` the commands run here, like ``tenantctl up``: the operation goes through the
operation queue (so nothing else runs on the tenant meanwhile) and a worker in this process runs it
against the tenant's Qdrant (its stack outputs) and the platform's backup bucket
(``TENANCY_SERVICE_BACKUP_BUCKET``, ``…_BACKUP_S3_ENDPOINT``, ``…_BACKUP_S3_REGION``; credentials as
boto3 reads them). With ``--url`` (``TENANCY_API_URL``) and ``--token`` they call the service, which
checks the caller's role and runs the operation on its workers; the command follows its progress.

Exit codes: 0 ok, 2 invalid input or refused, 3 the operation or the service failed, 4 the Pulumi CLI
is missing (local backup and restore read the tenant's stack).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tenancy.automation.contract import OperationKind, OperationStatus, StackRef
from tenancy.cli import exit_codes, operations
from tenancy.cli.operations import _fail, _open_queue, _read_spec, _run_one, _settings, _stack
from tenancy.cli.options import (
    EnvOption,
    JsonOption,
    ProjectOption,
    StateOption,
    TenantArgument,
    TenantsOption,
    TokenOption,
    UrlOption,
)
from tenancy.cli.remote import RemoteFailure, call, fail, follow

if TYPE_CHECKING:
    from tenancy.dataops.retired import RetiredBackup

BackupOption = Annotated[str, typer.Option("--backup", help="The backup's id (see `tenantctl backups`).")]
CollectionOption = Annotated[
    list[str] | None,
    typer.Option(
        "--collection",
        help="Restore only this collection (repeat for more); default: every collection of the backup.",
        show_default=False,
    ),
]
IntoOption = Annotated[
    str | None,
    typer.Option(
        "--into",
        help="Restore into this other tenant of the same environment (its Qdrant must be on); "
        "default: the tenant itself.",
        show_default=False,
    ),
]


def backup(
    tenant: TenantArgument,
    env: EnvOption,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    tenants: TenantsOption = None,
    state_dir: StateOption = None,
) -> None:
    """Back up one tenant's Qdrant now (every shard of every collection).

    The backup is stored under the tenant's prefix of the platform's
    backup bucket; its manifest (time, size, collections, checksum) is
    written last, so an interrupted backup is never listed.

    Example:  tenantctl backup acme --env dev

    Exit codes: 0 ok, 2 invalid input or refused, 3 the backup failed,
    4 the Pulumi CLI is missing or too old.
    """
    stack = _stack(env, tenant, as_json)
    if url:
        _remote_operation(url, token, "POST", f"{_path(stack)}/snapshots", None, as_json)
        return
    settings = _settings(project, tenants, state_dir)
    _qdrant_on(_read_spec(settings, stack, as_json), stack, as_json)
    _bucket_or_fail(as_json)
    _run_one(OperationKind.backup, tenant, env, as_json, settings)


HandOverOption = Annotated[
    str | None,
    typer.Option(
        "--hand-over",
        help="Platform-admin, with --url: let this tenant's roles restore the backups the deleted "
        "incarnation <INCARNATION> of its name left (see FROM / retired.incarnation).",
        metavar="INCARNATION",
        show_default=False,
    ),
]


RevokeHandOverOption = Annotated[
    str | None,
    typer.Option(
        "--revoke-hand-over",
        help="Platform-admin, with --url: take back a --hand-over of the deleted incarnation <INCARNATION>'s "
        "backups; this tenant's roles no longer list or restore them (idempotent).",
        metavar="INCARNATION",
        show_default=False,
    ),
]


MigrateLegacyOption = Annotated[
    bool,
    typer.Option(
        "--migrate-legacy",
        help="Run here with the bucket's credentials: move this name's backups that deleted tenants left "
        "in the live prefix (taken before the retired/ layout) into their incarnation's folder, where "
        "git's history attributes them safely; report the rest. Idempotent. With --dry-run, only report.",
    ),
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="With --migrate-legacy: move nothing.")]


def backups(
    tenant: TenantArgument,
    env: EnvOption,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
    hand_over: HandOverOption = None,
    revoke_hand_over: RevokeHandOverOption = None,
    migrate_legacy: MigrateLegacyOption = False,
    dry_run: DryRunOption = False,
    tenants: TenantsOption = None,
) -> None:
    """List one tenant's complete backups, newest first: id, time, size, collections, checksum.

    Also those a deleted tenant of the name left that you may restore
    (FROM: when it was deleted, until when they are kept). A
    platform-admin lets the re-created tenant restore them with
    --hand-over <incarnation> --url ..., and takes it back with
    --revoke-hand-over <incarnation> --url ...

    Example:  tenantctl backups acme --env dev

    Exit codes: 0 ok, 2 invalid input or refused, 3 the bucket or the
    service cannot be read.
    """
    stack = _stack(env, tenant, as_json)
    if hand_over is not None and revoke_hand_over is not None:
        _fail(
            "--hand-over and --revoke-hand-over: pass one of them",
            exit_codes.INVALID_INPUT,
            as_json,
        )
    if migrate_legacy:
        if url:
            _fail(
                "--migrate-legacy runs here, with the bucket's credentials and the tenants repository's "
                "history: leave out --url",
                exit_codes.INVALID_INPUT,
                as_json,
            )
        _migrate_legacy(stack, _settings(None, tenants, None).tenants_dir, dry_run=dry_run, as_json=as_json)
        return
    if hand_over is not None or revoke_hand_over is not None:
        revoke = revoke_hand_over is not None
        _hand_over(url, token, stack, revoke_hand_over or hand_over or "", as_json, revoke=revoke)
        return
    if url:
        try:
            listed = call("GET", url, token, f"{_path(stack)}/snapshots")["backups"]
        except RemoteFailure as failure:
            fail(failure, as_json)
    else:
        from tenancy.automation.data_operations import (
            DataUnavailable,
            tenant_backups,
            tenant_retired_backups,
        )

        data = _bucket_or_fail(as_json)
        now = datetime.now(UTC)
        try:
            records = tenant_backups(data, stack)
            retired = [b for b in tenant_retired_backups(data, stack) if not b.expired(now)]
        except DataUnavailable as error:
            _fail(error.message, exit_codes.OPERATION_FAILED, as_json, code="backups_unavailable")
        # Here, with the bucket's credentials, the caller is the platform: every kept backup is listed.
        listed = [{**record.summary(), "retired": None} for record in records] + [
            {**b.record.summary(), "retired": _retired_summary(b)} for b in retired
        ]
        listed.sort(key=lambda item: str(item["created"]), reverse=True)
    if as_json:
        typer.echo(json.dumps({"backups": listed}, indent=2))
        return
    if not listed:
        typer.echo(f"no backups of {stack.name}")
        return
    typer.echo(f"{'ID':<24}  {'CREATED':<25}  {'SIZE':>12}  {'CHECKSUM':<16}  {'FROM':<28}  COLLECTIONS")
    for item in listed:
        retired = item.get("retired")
        origin = (
            f"deleted {retired['deleted'][:10]}, kept to {retired['expires'][:10]}"
            if retired
            else "this tenant"
        )
        typer.echo(
            f"{item['id']:<24}  {item['created']:<25}  {item['size']:>12}  {item['checksum'][:16]:<16}  "
            f"{origin:<28}  {', '.join(item['collections']) or '-'}"
        )


def restore(
    tenant: TenantArgument,
    env: EnvOption,
    backup_id: BackupOption,
    collections: CollectionOption = None,
    into: IntoOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    tenants: TenantsOption = None,
    state_dir: StateOption = None,
) -> None:
    """Restore a backup of one tenant, into it or into another tenant.

    The restored collections replace the target's collections of the
    same name; others are left alone. Every object's SHA-256 is checked
    before anything in Qdrant changes. Refused while another operation
    is queued or running on the target.

    Example:  tenantctl restore acme --env dev --backup <id> --collection docs --into acme-staging

    Exit codes: 0 ok, 2 invalid input or refused, 3 the restore failed,
    4 the Pulumi CLI is missing or too old.
    """
    source = _stack(env, tenant, as_json)
    target = _stack(env, into or tenant, as_json)
    if url:
        body: dict[str, Any] = {"backup": backup_id}
        if collections:
            body["collections"] = collections
        if into:
            body["into"] = into
        _remote_operation(url, token, "POST", f"{_path(source)}/restore", body, as_json)
        return
    from tenancy.automation.data_operations import DataUnavailable, tenant_backups, tenant_retired_backups

    settings = _settings(project, tenants, state_dir)
    _qdrant_on(_read_spec(settings, target, as_json), target, as_json)
    data = _bucket_or_fail(as_json)
    retired = None
    try:
        record = next((r for r in tenant_backups(data, source) if r.id == backup_id), None)
        if record is None:  # one a deleted tenant of the name left (here the caller is the platform)
            retired = next(
                (b for b in tenant_retired_backups(data, source) if b.record.id == backup_id), None
            )
            record = retired.record if retired is not None else None
    except DataUnavailable as error:
        _fail(error.message, exit_codes.OPERATION_FAILED, as_json, code="backups_unavailable")
    if retired is not None and retired.expired(datetime.now(UTC)):
        _fail(
            f"backup {backup_id} of the deleted {source.name} expired at "
            f"{retired.expires:%Y-%m-%d %H:%M} UTC (the retention it had); it can no longer be restored",
            exit_codes.INVALID_INPUT,
            as_json,
            code="backup_expired",
        )
    if record is None:
        _fail(
            f"{source.name} has no complete backup {backup_id} "
            f"(see `tenantctl backups {tenant} --env {env}`)",
            exit_codes.INVALID_INPUT,
            as_json,
            code="backup_not_found",
        )
    missing = sorted(set(collections or ()) - set(record.collections))
    if missing:
        _fail(
            f"--collection: not in backup {backup_id}: {', '.join(missing)} "
            f"(it holds {', '.join(record.collections) or 'no collections'})",
            exit_codes.INVALID_INPUT,
            as_json,
        )
    with _open_queue(settings, as_json) as opened:
        active = next(
            (
                op
                for op in opened.queue.recent(stack=target, limit=20)
                if op.status in (OperationStatus.queued, OperationStatus.running)
            ),
            None,
        )
    if active is not None:
        _fail(
            f"{target.name} has a {active.kind.value} operation {active.status.value} ({active.id}); "
            "wait for it to finish, then restore",
            exit_codes.INVALID_INPUT,
            as_json,
            code="operation_in_progress",
        )
    params: dict[str, Any] = {"backup": backup_id, "source": source.tenant}
    if retired is not None:
        params["retired"] = retired.owner.folder
    if collections:
        params["collections"] = sorted(set(collections))
    _run_one(OperationKind.restore, target.tenant, env, as_json, settings, params=params)


# --- pieces --------------------------------------------------------------------------------------


def _hand_over(
    url: str | None,
    token: str | None,
    stack: StackRef,
    incarnation: str,
    as_json: bool,
    *,
    revoke: bool = False,
) -> None:
    """Hand a deleted incarnation's backups over to ``stack`` (POST …/handover) or take that back
    (DELETE, ``revoke``): the service's, which checks the platform-admin role and audits it."""
    from tenancy.dataops.retired import RETIRED_FOLDER

    option = "--revoke-hand-over" if revoke else "--hand-over"
    if not url:
        _fail(
            f"{option} is the service's (it checks you are a platform-admin and audits it): pass --url",
            exit_codes.INVALID_INPUT,
            as_json,
        )
    if not re.fullmatch(RETIRED_FOLDER, incarnation):
        _fail(
            f"{option}: {incarnation!r} is not an incarnation (a commit id, as FROM and "
            "retired.incarnation show)",
            exit_codes.INVALID_INPUT,
            as_json,
        )
    try:
        method = "DELETE" if revoke else "POST"
        answer = call(method, url, token, f"{_path(stack)}/retired/{incarnation}/handover")
    except RemoteFailure as failure:
        fail(failure, as_json)
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
    elif revoke:
        typer.echo(
            f"the hand-over of the backups deleted incarnation {incarnation} left is taken back: "
            f"{stack.name}'s roles no longer list or restore them"
        )
    else:
        typer.echo(f"the backups deleted incarnation {incarnation} left are now {stack.name}'s to restore")


def _migrate_legacy(stack: StackRef, tenants_dir: Any, *, dry_run: bool, as_json: bool) -> None:
    from tenancy.automation.data_operations import DataUnavailable
    from tenancy.automation.legacy_backups import incarnation_lives, migrate_legacy_backups

    data = _bucket_or_fail(as_json)
    lives = incarnation_lives(tenants_dir, stack.environment, stack.tenant)
    if not lives:
        _fail(
            f"{tenants_dir} has no git history of {stack.environment}/{stack.tenant}.yaml: the backups "
            "cannot be attributed (pass --tenants with a checkout of the tenants repository)",
            exit_codes.INVALID_INPUT,
            as_json,
        )
    lines: list[str] = []
    try:
        plan = migrate_legacy_backups(data, stack, lives, dry_run=dry_run, progress=lines.append)
    except DataUnavailable as error:
        _fail(error.message, exit_codes.OPERATION_FAILED, as_json, code="backups_unavailable")
    moved = {commit: [r.id for r in records] for commit, records in plan.moves.items()}
    if as_json:
        document = {
            "dryRun": dry_run,
            "moved": moved,
            "current": [r.id for r in plan.current],
            "unattributed": [{"id": r.id, "reason": reason} for r, reason in plan.unattributed],
            "regrouped": [
                {"from": folder, "to": commit, "ids": [r.id for r in records]}
                for folder, moves in plan.regrouped.items()
                for commit, records in moves.items()
            ],
        }
        typer.echo(json.dumps(document, indent=2))
        return
    verb = "would move" if dry_run else "moved"
    for commit, ids in moved.items():
        typer.echo(f"{verb} {len(ids)} backup(s) to deleted incarnation {commit}: {', '.join(ids)}")
    for folder, moves in plan.regrouped.items():
        for commit, records in moves.items():
            listed = ", ".join(r.id for r in records)
            typer.echo(
                f"{verb} {len(records)} backup(s) from deleted incarnation {folder} to {commit}: {listed}"
            )
    typer.echo(f"{len(plan.current)} backup(s) are the current tenant's own and stay")
    for record, reason in plan.unattributed:
        typer.echo(f"left in place: {record.id}: {reason}")


def _retired_summary(backup: RetiredBackup) -> dict[str, str]:
    """As the API shows a deleted tenant's backup (``retired``)."""
    return {
        "incarnation": backup.owner.folder,
        "deleted": backup.owner.retired.isoformat(),
        "expires": backup.expires.isoformat(),
    }


def _path(stack: StackRef) -> str:
    return f"/environments/{stack.environment}/tenants/{stack.tenant}/qdrant"


def _qdrant_on(document: dict[str, Any], stack: StackRef, as_json: bool) -> None:
    qdrant = document.get("qdrant")
    if not (isinstance(qdrant, dict) and qdrant.get("enabled") is True):
        _fail(
            f"{stack.name} has no Qdrant (qdrant.enabled is off in tenants/{stack.environment}/"
            f"{stack.tenant}.yaml): nothing to back up or restore into",
            exit_codes.INVALID_INPUT,
            as_json,
            code="qdrant_not_enabled",
        )


def _bucket_or_fail(as_json: bool) -> Any:
    """The tenants' data as the local worker reaches it; exit 2 when no backup bucket is configured."""
    data = operations.make_tenant_data(None)
    if data is None:
        _fail(
            "no backup bucket configured: set TENANCY_SERVICE_BACKUP_BUCKET (and "
            "TENANCY_SERVICE_BACKUP_S3_ENDPOINT for a bucket outside AWS), or pass --url to go through "
            "the service, which reaches the platform's bucket",
            exit_codes.INVALID_INPUT,
            as_json,
            code="backups_unavailable",
        )
    return data


def _remote_operation(url: str, token: str | None, method: str, path: str, body: Any, as_json: bool) -> None:
    try:
        accepted = call(method, url, token, path, body)["operation"]
        assert token is not None  # call() refused without one
        finished = follow(url, token, accepted["id"], quiet=as_json)
    except RemoteFailure as failure:
        fail(failure, as_json)
    if as_json:
        typer.echo(json.dumps({"operation": finished}, indent=2))
    else:
        summary = finished.get("summary") or {}
        line = f"{finished['kind']} of {finished['environment']}.{finished['tenant']} {finished['status']}"
        if summary.get("error"):
            line += f": {summary['error']}"
        typer.echo(f"{line} (operation {finished['id']})")
    if finished["status"] != "succeeded":
        raise typer.Exit(exit_codes.OPERATION_FAILED)


def register(app: typer.Typer) -> None:
    app.command("backup")(backup)
    app.command("backups")(backups)
    app.command("restore")(restore)
