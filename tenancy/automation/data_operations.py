"""Backup and restore as operations: what the worker runs for ``backup`` and ``restore``.

The worker reaches a tenant's data through one narrow interface, ``TenantData``: the tenant's Qdrant
(its in-cluster endpoint and API key) and the tenant's prefix of the backup bucket. In the platform,
``StackTenantData`` reads the endpoint and key from the tenant stack's outputs (the engine decrypts
them with the stack's secrets provider: Vault transit in prod, the passphrase in dev; the key is the
same one Vault and the tenant's Secret hold) and writes under ``tenants/<env>/<tenant>/qdrant/`` of
the platform's backup bucket with the workers' object-store credentials. Tests hand the worker one
pointing at the Qdrant stand-in and moto's S3 server.

Parameters of a restore (``Operation.params``): ``backup`` (the id), ``source`` (the tenant whose
backup it is, same environment; the operation's own tenant when absent), ``retired`` (the folder of
the deleted incarnation of ``source`` the backup was set aside in, ``tenancy.dataops.retired``; the
live backups when absent) and ``collections`` (all when absent). The operation runs on the tenant
restored into, so nothing else runs on it meanwhile. Who may ask for which backup is the caller's
check (the API's rule); the worker refuses only what no one may restore: an expired backup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tenancy.automation.contract import EmitEvent, Engine, EngineResult, Operation, OperationKind, StackRef
from tenancy.automation.errors import AutomationError
from tenancy.dataops.backup import BackupError, BackupRecord, list_backups, restore_backup, take_backup
from tenancy.dataops.object_store import BackupBucket, ObjectStoreError
from tenancy.dataops.qdrant_api import QdrantCluster, QdrantError
from tenancy.dataops.retired import (
    RetiredBackup,
    RetiredIncarnation,
    purge_expired,
    retire_backups,
    retired_backups,
    retired_bucket,
    retired_folder,
)

_log = logging.getLogger(__name__)

BACKUP_PREFIX = "tenants/{environment}/{tenant}/qdrant"
# Beside the live prefix, outside what the tenant's backup job may reach: deleted incarnations' backups.
RETIRED_PREFIX = "tenants/{environment}/{tenant}/retired"


def backup_prefix(stack: StackRef) -> str:
    """The tenant's prefix in the backup bucket: the only keys its backups use."""
    return BACKUP_PREFIX.format(environment=stack.environment, tenant=stack.tenant)


def retired_prefix(stack: StackRef) -> str:
    return RETIRED_PREFIX.format(environment=stack.environment, tenant=stack.tenant)


class BackupFailed(AutomationError):
    code = "backup_failed"


class RestoreFailed(AutomationError):
    code = "restore_failed"


class BackupsNotSetAside(AutomationError):
    """The backups of a tenant being destroyed could not be moved out of its live prefix."""

    code = "backup_retire_failed"


class BackupExpired(AutomationError):
    code = "backup_expired"


class DataUnavailable(AutomationError):
    """The worker cannot reach the tenant's data (no Qdrant deployed, no backup bucket configured)."""

    code = "data_unavailable"


class TenantData(Protocol):
    """Where a tenant's data is, for the worker. Both raise ``DataUnavailable`` when it cannot say."""

    def qdrant(self, stack: StackRef) -> QdrantCluster:
        """A client for the tenant's Qdrant (the caller closes it)."""
        ...

    def bucket(self, stack: StackRef) -> BackupBucket:
        """The tenant's prefix of the backup bucket."""
        ...


@dataclass
class StackTenantData:
    """``TenantData`` from the tenant stack's outputs and the workers' object-store client.

    ``s3_client``: a boto3 S3 client (credentials as boto3 reads them: the workers' environment);
    ``bucket_name``: the platform's backup bucket; None when the platform has none (refused clearly).
    """

    engine: Engine | None  # None: only the bucket is needed (listing backups)
    s3_client_factory: Callable[[], Any] | None
    bucket_name: str | None
    http_port: int | None = 6333
    timeout: float = 60.0

    def qdrant(self, stack: StackRef) -> QdrantCluster:
        if self.engine is None:
            raise DataUnavailable(f"the Qdrant of {stack.name} cannot be reached without its stack")
        try:
            outputs = self.engine.outputs(stack, reveal_secrets=True)
        except AutomationError as error:
            raise DataUnavailable(f"the outputs of {stack.name} cannot be read: {error.message}") from None
        endpoint, key = outputs.get("qdrantEndpoint"), outputs.get("qdrantApiKey")
        if not isinstance(endpoint, str) or not isinstance(key, str):
            raise DataUnavailable(
                f"{stack.name} has no Qdrant deployed (no qdrantEndpoint/qdrantApiKey output); "
                "enable qdrant in its spec and apply it first"
            )
        namespace = outputs.get("namespace")
        return QdrantCluster(
            url=endpoint,
            api_key=key,
            http_port=self.http_port,
            timeout=self.timeout,
            # Peers report namespace-relative names; the worker runs in another namespace.
            peer_domain=f"{namespace}.svc.cluster.local" if isinstance(namespace, str) else None,
        )

    def bucket(self, stack: StackRef) -> BackupBucket:
        if self.bucket_name is None or self.s3_client_factory is None:
            raise DataUnavailable(
                "the platform has no backup bucket configured (objectStorage.backupBucket); "
                "ask the platform team"
            )
        return BackupBucket(self.s3_client_factory(), bucket=self.bucket_name, prefix=backup_prefix(stack))


class BackupStore(BaseSettings):
    """The platform's backup bucket, named as the service names it (``TENANCY_SERVICE_BACKUP_*``): the
    CLI, the service and its workers read the same variables. Credentials are not settings: boto3
    reads them from its own environment (the workers' Secret or Vault-injected file, never a value
    in a manifest)."""

    model_config = SettingsConfigDict(env_prefix="TENANCY_SERVICE_", extra="ignore", frozen=True)

    backup_bucket: str | None = Field(default=None, description="The bucket; unset: no backups.")
    backup_s3_endpoint: str | None = Field(default=None, description="S3 endpoint; unset: AWS's.")
    backup_s3_region: str = Field(default="us-east-1", description="Region of the bucket.")
    backup_s3_path_style: bool = Field(
        default=False, description="Path-style bucket addressing (MinIO, Ceph RGW)."
    )

    def tenant_data(self, engine: Engine | None) -> StackTenantData | None:
        """Tenants' data through ``engine`` (their stack outputs) and this bucket; None without one."""
        if not self.backup_bucket:
            return None
        endpoint, region = self.backup_s3_endpoint, self.backup_s3_region
        addressing = "path" if self.backup_s3_path_style else "auto"

        def s3_client() -> Any:
            import boto3  # only when a backup runs: boto3 costs a quarter of a second to import
            from botocore.config import Config

            return boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name=region,
                config=Config(s3={"addressing_style": addressing}),
            )

        return StackTenantData(engine=engine, s3_client_factory=s3_client, bucket_name=self.backup_bucket)


def _progress(emit: EmitEvent) -> Callable[[str], None]:
    def progress(message: str) -> None:
        emit(kind="diagnostic", status="done", message=message)

    return progress


def take_tenant_backup(
    data: TenantData, stack: StackRef, emit: EmitEvent, *, reason: str = "requested"
) -> BackupRecord:
    """Back up ``stack``'s Qdrant; ``BackupFailed``/``DataUnavailable`` say why it could not."""
    emit(kind="diagnostic", status="started", message=f"backing up the Qdrant of {stack.name} ({reason})")
    qdrant = data.qdrant(stack)
    try:
        return take_backup(qdrant, data.bucket(stack), now=datetime.now(UTC), progress=_progress(emit))
    except (BackupError, ObjectStoreError, QdrantError) as error:
        raise BackupFailed(f"the backup of {stack.name} failed: {error}") from None
    finally:
        qdrant.close()


def tenant_backups(data: TenantData, stack: StackRef) -> list[BackupRecord]:
    """The tenant's complete backups, newest first."""
    try:
        return list_backups(data.bucket(stack))
    except (BackupError, ObjectStoreError) as error:
        raise DataUnavailable(f"the backups of {stack.name} cannot be listed: {error}") from None


def retired_area(data: TenantData, stack: StackRef) -> BackupBucket:
    """Where the deleted incarnations of ``stack``'s name keep their backups (one folder each)."""
    return data.bucket(stack).relocated(retired_prefix(stack))


def tenant_retired_backups(data: TenantData, stack: StackRef) -> list[RetiredBackup]:
    """The backups deleted incarnations of ``stack``'s name left, expired ones too, newest first."""
    try:
        return retired_backups(retired_area(data, stack))
    except (BackupError, ObjectStoreError) as error:
        raise DataUnavailable(f"the backups of deleted {stack.name} cannot be listed: {error}") from None


def set_aside_backups(
    data: TenantData,
    stack: StackRef,
    emit: EmitEvent,
    *,
    incarnation: str | None,
    operation_id: str,
    max_age_days: int,
    now: datetime,
) -> list[str]:
    """Move the live backups of ``stack`` into its incarnation's retired folder (then delete the
    name's retired backups past their expiry); ``BackupsNotSetAside`` when the store refuses."""
    owner = RetiredIncarnation(
        folder=retired_folder(incarnation, operation_id),
        incarnation=incarnation,
        retired=now,
        max_age_days=max_age_days,
        operation=operation_id,
    )
    try:
        area = retired_area(data, stack)
        moved = retire_backups(data.bucket(stack), area, owner, progress=_progress(emit))
        purge_expired(area, now=now, progress=_progress(emit))
    except (BackupError, ObjectStoreError) as error:
        raise BackupsNotSetAside(f"the backups of {stack.name} could not be set aside: {error}") from None
    return moved


def sweep_retired_backups(data: TenantData, environments: tuple[str, ...], *, now: datetime) -> list[str]:
    """Delete every backup deleted tenants left that is past its retention, in every tenant folder of
    ``environments``; the ids deleted. A folder that fails is logged and left for the next sweep."""
    deleted: list[str] = []
    for environment in environments:
        root = data.bucket(StackRef(environment, "_")).relocated(f"tenants/{environment}")
        for name in root.folders():
            try:
                deleted += purge_expired(retired_area(data, StackRef(environment, name)), now=now)
            except (BackupError, ObjectStoreError, ValueError) as error:
                _log.error("sweeping the kept backups of %s.%s failed: %s", environment, name, error)
    return deleted


def _retired_source(data: TenantData, source: StackRef, folder: str, backup_id: str) -> BackupBucket:
    """The folder a restore reads a deleted incarnation's backup from; refused once it expired."""
    found = next(
        (
            b
            for b in tenant_retired_backups(data, source)
            if b.owner.folder == folder and b.record.id == backup_id
        ),
        None,
    )
    if found is None:
        raise RestoreFailed(f"{source.name} has no retired backup {backup_id} (incarnation {folder})")
    if found.expired(datetime.now(UTC)):
        raise BackupExpired(
            f"backup {backup_id} of deleted {source.name} expired at {found.expires.isoformat()} "
            "(its retention period); nothing was restored"
        )
    return retired_bucket(retired_area(data, source), folder)


def run_data_operation(operation: Operation, data: TenantData | None, emit: EmitEvent) -> EngineResult:
    """Run a ``backup`` or ``restore``; raises an ``AutomationError`` with a code on failure."""
    stack = operation.stack
    if data is None:
        raise DataUnavailable(
            "this worker has no access to tenant data (no backup bucket configured); ask the platform team"
        )
    if operation.kind is OperationKind.backup:
        record = take_tenant_backup(data, stack, emit)
        return EngineResult(succeeded=True, changes={"backup taken": 1}, outputs={"backup": record.summary()})
    if operation.kind is not OperationKind.restore:
        raise ValueError(f"{operation.kind.value} is not a data operation")
    params = operation.params or {}
    backup_id = params.get("backup")
    if not isinstance(backup_id, str) or not backup_id:
        raise RestoreFailed(f"the restore of {stack.name} names no backup id")
    source = StackRef(stack.environment, str(params.get("source") or stack.tenant))
    collections = params.get("collections") or None
    folder = params.get("retired")
    of = f"deleted incarnation {folder} of {source.name}" if folder else source.name
    emit(
        kind="diagnostic", status="started", message=f"restoring backup {backup_id} of {of} into {stack.name}"
    )
    bucket = _retired_source(data, source, str(folder), backup_id) if folder else data.bucket(source)
    qdrant = data.qdrant(stack)
    try:
        restored = restore_backup(
            qdrant, bucket, backup_id, collections=collections, progress=_progress(emit)
        )
    except (BackupError, ObjectStoreError, QdrantError) as error:
        raise RestoreFailed(f"the restore of {backup_id} into {stack.name} failed: {error}") from None
    finally:
        qdrant.close()
    return EngineResult(
        succeeded=True,
        changes={"collections restored": len(restored)},
        outputs={"restored": restored, "backup": backup_id, "source": source.tenant},
    )
