"""The entry point the tenant's backup CronJob (and a restore or drain Job) runs in the cluster.

``python -m tenancy.dataops.job backup|list|restore|drain|rebalance``; settings come from the
environment the job's manifest sets (see ``JobSettings``), the Qdrant key from a mounted file. Each
step prints one JSON line (``progress``), then one ``result`` or ``error`` line: the worker and the
API read the job's log, and no line ever carries a key.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

EXIT_INVALID = 2
EXIT_FAILED = 3


class JobSettings(BaseSettings):
    """What the job's manifest sets; object-store credentials come the way boto3 reads them."""

    model_config = SettingsConfigDict(env_prefix="BACKUP_", extra="ignore")

    qdrant_url: str = Field(description="Any peer's HTTP address, e.g. http://qdrant.tenant-acme.svc:6333")
    qdrant_api_key_file: Path = Field(
        description="File holding the tenant's Qdrant API key (a Secret volume)"
    )
    qdrant_http_port: int = 6333
    bucket: str
    prefix: str = Field(description="tenants/<env>/<tenant>/qdrant: the only keys the credentials reach")
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    s3_force_path_style: bool = False
    keep_last: int = Field(default=7, ge=1)
    max_age_days: int = Field(default=30, ge=1)
    # In the cluster the object-store credentials come from Vault (tenancy.dataops.vault_credentials);
    # without these the job uses whatever boto3 finds (the workers' environment, a developer's profile).
    vault_address: str | None = None
    vault_auth_path: str = "kubernetes"
    vault_role: str | None = None
    vault_credentials_path: str | None = None
    vault_token_file: Path = Path("/var/run/secrets/vault/token")

    @property
    def from_vault(self) -> bool:
        return bool(self.vault_address and self.vault_role and self.vault_credentials_path)


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}, sort_keys=True) + "\n")
    sys.stdout.flush()


def _progress(message: str) -> None:
    _emit("progress", message=message)


def _connect(settings: JobSettings) -> tuple[Any, Any]:
    import boto3
    from botocore.config import Config

    from tenancy.dataops.object_store import BackupBucket
    from tenancy.dataops.qdrant_api import QdrantCluster

    key = settings.qdrant_api_key_file.read_text().strip()
    credentials: dict[str, Any] = {}
    if settings.from_vault:
        from tenancy.dataops.vault_credentials import object_store_credentials

        assert settings.vault_address and settings.vault_role and settings.vault_credentials_path
        issued = object_store_credentials(
            address=settings.vault_address,
            auth_path=settings.vault_auth_path,
            role=settings.vault_role,
            credentials_path=settings.vault_credentials_path,
            token_file=settings.vault_token_file,
        )
        credentials = {
            "aws_access_key_id": issued.access_key_id,
            "aws_secret_access_key": issued.secret_access_key,
            "aws_session_token": issued.session_token,
        }
    qdrant = QdrantCluster(url=settings.qdrant_url, api_key=key, http_port=settings.qdrant_http_port)
    style = "path" if settings.s3_force_path_style else "auto"
    client = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        region_name=settings.s3_region,
        config=Config(s3={"addressing_style": style}, retries={"mode": "standard", "max_attempts": 5}),
        **credentials,
    )
    return qdrant, BackupBucket(client, bucket=settings.bucket, prefix=settings.prefix)


def run(argv: list[str], settings: JobSettings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tenancy.dataops.job")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("backup", help="take a backup, then apply retention")
    commands.add_parser("list", help="list complete backups, newest first")
    restore = commands.add_parser("restore", help="restore a backup (all collections, or --collection)")
    restore.add_argument("backup_id")
    restore.add_argument("--collection", action="append", dest="collections")
    drain = commands.add_parser("drain", help="empty the nodes a shrink to --replicas removes")
    drain.add_argument("--replicas", type=int, required=True)
    commands.add_parser("rebalance", help="replicate shards onto nodes that joined")
    args = parser.parse_args(argv)

    from tenancy.dataops.backup import (
        BackupError,
        Retention,
        apply_retention,
        list_backups,
        restore_backup,
        take_backup,
    )
    from tenancy.dataops.object_store import ObjectStoreError
    from tenancy.dataops.qdrant_api import QdrantError
    from tenancy.dataops.scaling import ScalingError, rebalance
    from tenancy.dataops.scaling import drain as drain_peers
    from tenancy.dataops.vault_credentials import VaultCredentialsError

    try:
        settings = settings or JobSettings()
        qdrant, bucket = _connect(settings)
    except VaultCredentialsError as error:
        _emit("error", code="vault_credentials", message=str(error))
        return EXIT_FAILED
    except ValidationError as error:
        problems = "; ".join(
            f"BACKUP_{str(e['loc'][0]).upper()}: {e['msg']}" for e in error.errors(include_url=False)
        )
        _emit("error", code="invalid_settings", message=problems)
        return EXIT_INVALID
    except (ValueError, OSError) as error:
        _emit("error", code="invalid_settings", message=f"{type(error).__name__}: {error}")
        return EXIT_INVALID
    try:
        now = datetime.now(UTC)
        if args.command == "backup":
            record = take_backup(qdrant, bucket, now=now, progress=_progress)
            retention = Retention(settings.keep_last, timedelta(days=settings.max_age_days))
            deleted = apply_retention(bucket, retention, now=now, progress=_progress)
            _emit("result", backup=record.summary(), deleted=deleted)
        elif args.command == "list":
            _emit("result", backups=[record.summary() for record in list_backups(bucket)])
        elif args.command == "restore":
            restored = restore_backup(
                qdrant, bucket, args.backup_id, collections=args.collections, progress=_progress
            )
            _emit("result", restored=restored, backup=args.backup_id)
        elif args.command == "drain":
            report = drain_peers(qdrant, replicas=args.replicas, progress=_progress)
            _emit("result", moved=report.moved, dropped=report.dropped, removedPeers=report.removed_peers)
        else:
            report = rebalance(qdrant, progress=_progress)
            _emit("result", replicated=report.replicated)
    except (BackupError, ObjectStoreError, QdrantError, ScalingError) as error:
        _emit("error", code=type(error).__name__, message=str(error))
        return EXIT_FAILED
    finally:
        qdrant.close()
    return 0


def main() -> None:
    raise SystemExit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
