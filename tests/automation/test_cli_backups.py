"""``tenantctl backup|backups|restore`` run here (no --url): the CLI's queue and worker, the bucket named
by TENANCY_SERVICE_BACKUP_* on moto's S3 server, each tenant's Qdrant a stand-in cluster; the data
restored is checked in the stand-in. Refusals exit 2 with their code and run nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import tenancy.cli.operations as operations
from tenancy.automation.contract import OperationKind, StackRef
from tenancy.automation.fake_engine import FakeEngine
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.cli import app, exit_codes
from tenancy.dataops.object_store import BackupBucket
from tenancy.dataops.qdrant_api import QdrantCluster
from tests.dataops.conftest import BUCKET, StandinData, s3, s3_endpoint  # noqa: F401 (fixtures)
from tests.dataops.qdrant_standin import ClusterState, qdrant_cluster

runner = CliRunner()
ACME, BETA = StackRef("dev", "acme"), StackRef("dev", "beta")


@dataclass
class Clusters:
    acme: ClusterState
    beta: ClusterState


@dataclass
class BucketFromSettingsQdrantFromStandin:
    """The bucket exactly as the CLI builds it from TENANCY_SERVICE_BACKUP_*; Qdrant from the stand-in
    (the engine double has no Qdrant endpoint to reach)."""

    configured: Any
    standin: StandinData

    def qdrant(self, stack: StackRef) -> QdrantCluster:
        return self.standin.qdrant(stack)

    def bucket(self, stack: StackRef) -> BackupBucket:
        return self.configured.bucket(stack)  # type: ignore[no-any-return]


@pytest.fixture
def clusters(
    cli_project: Path,
    s3: Any,  # noqa: F811
    s3_endpoint: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Clusters]:
    beta_file = cli_project / "tenants" / "dev" / "beta.yaml"
    beta_file.write_text(
        (cli_project / "tenants" / "dev" / "acme.yaml").read_text().replace("name: acme", "name: beta")
    )
    monkeypatch.setattr(operations, "make_engine", lambda settings: FakeEngine())
    monkeypatch.setenv("TENANCY_SERVICE_BACKUP_BUCKET", BUCKET)
    monkeypatch.setenv("TENANCY_SERVICE_BACKUP_S3_ENDPOINT", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with qdrant_cluster(2) as (acme, acme_urls), qdrant_cluster(1) as (beta, beta_urls):
        acme.add_collection("docs", shards=2, replication_factor=2, points=12)
        acme.add_collection("faq", shards=1, replication_factor=1, points=3)
        beta.add_collection("docs", shards=1, replication_factor=1, points=1)
        standin = StandinData(
            {ACME: next(iter(acme_urls.values())), BETA: next(iter(beta_urls.values()))}, s3
        )
        real = operations.make_tenant_data

        def tenant_data(engine: Any) -> Any:
            configured = real(engine)
            return None if configured is None else BucketFromSettingsQdrantFromStandin(configured, standin)

        monkeypatch.setattr(operations, "make_tenant_data", tenant_data)
        yield Clusters(acme, beta)


def tenantctl(project: Path, *args: str) -> Result:
    return runner.invoke(app, [*args, "--env", "dev", "--project", str(project)])


def listed(project: Path, tenant: str) -> list[dict[str, Any]]:
    result = runner.invoke(app, ["backups", tenant, "--env", "dev", "--json"])
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout)["backups"])


def test_back_up_list_and_restore_named_collections_into_another_tenant(
    cli_project: Path, clusters: Clusters
) -> None:
    taken = tenantctl(cli_project, "backup", "acme", "--json")
    assert taken.exit_code == 0, taken.output
    operation = json.loads(taken.stdout)["operation"]
    assert (operation["kind"], operation["status"]) == ("backup", "succeeded")
    assert operation["summary"]["outputs"]["backup"]["collections"] == ["docs", "faq"]

    (record,) = listed(cli_project, "acme")
    assert record["collections"] == ["docs", "faq"] and record["size"] > 0 and len(record["checksum"]) == 64
    table = runner.invoke(app, ["backups", "acme", "--env", "dev"])
    assert table.exit_code == 0 and record["id"] in table.stdout and "docs, faq" in table.stdout

    before = clusters.beta.all_points("docs")
    restored = tenantctl(
        cli_project, "restore", "acme", "--backup", record["id"], "--collection", "docs", "--into", "beta"
    )
    assert restored.exit_code == 0, restored.output
    assert "restore" in restored.stdout and "succeeded" in restored.stdout
    assert clusters.beta.all_points("docs") == clusters.acme.all_points("docs") != before
    assert "faq" not in clusters.beta.collections  # only the named collection
    assert listed(cli_project, "beta") == []  # restoring writes no backup of the target


def test_refusals_exit_2_with_their_code_and_run_nothing(cli_project: Path, clusters: Clusters) -> None:
    assert tenantctl(cli_project, "backup", "acme").exit_code == 0
    (record,) = listed(cli_project, "acme")
    queue = SqliteOperationQueue(cli_project / ".tenancy" / "operations.sqlite3")
    try:
        ran = len(queue.recent(limit=100))
        cases = {
            "backup_not_found": ["restore", "acme", "--backup", "20990101T000000Z-abcdef", "--json"],
            "invalid_input": ["restore", "acme", "--backup", record["id"], "--collection", "nope", "--json"],
            "qdrant_not_enabled": [
                "restore",
                "acme",
                "--backup",
                record["id"],
                "--into",
                "initech",
                "--json",
            ],
        }
        for code, args in cases.items():
            result = tenantctl(cli_project, *args)
            assert result.exit_code == exit_codes.INVALID_INPUT, (code, result.output)
            assert json.loads(result.stdout)["error"]["code"] == code, result.stdout
        missing = tenantctl(cli_project, "restore", "acme", "--backup", record["id"], "--collection", "nope")
        assert "--collection: not in backup" in missing.stderr and "docs, faq" in missing.stderr

        # Something queued on the target: the restore waits for nobody, it is refused naming it.
        pending = queue.submit(BETA, OperationKind.up, spec={"name": "beta"}, requested_by="someone")
        busy = tenantctl(cli_project, "restore", "acme", "--backup", record["id"], "--into", "beta", "--json")
        assert busy.exit_code == exit_codes.INVALID_INPUT, busy.output
        error = json.loads(busy.stdout)["error"]
        assert error["code"] == "operation_in_progress" and pending.id in error["message"]
        assert len(queue.recent(limit=100)) == ran + 1  # only the test's own operation
    finally:
        queue.close()


def test_without_a_backup_bucket_the_commands_say_what_to_set(
    cli_project: Path, clusters: Clusters, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TENANCY_SERVICE_BACKUP_BUCKET")
    for args in (["backup", "acme", "--project", str(cli_project)], ["backups", "acme"]):
        result = runner.invoke(app, [*args, "--env", "dev"])
        assert result.exit_code == exit_codes.INVALID_INPUT, result.output
        assert "TENANCY_SERVICE_BACKUP_BUCKET" in result.stderr and "--url" in result.stderr


def test_a_tenant_name_that_is_no_dns_label_is_refused_before_anything(cli_project: Path) -> None:
    result = tenantctl(cli_project, "backup", "Not_A_Tenant")
    assert result.exit_code == exit_codes.INVALID_INPUT
    assert "is not a tenant name" in result.stderr


def test_a_deleted_tenants_backups_are_listed_and_restored_here_until_they_expire(
    cli_project: Path,
    clusters: Clusters,
    s3: Any,  # noqa: F811
) -> None:
    """Here the caller holds the bucket's credentials (the platform): a deleted incarnation's backups,
    set aside as its destroy does, are listed with where they came from and restore by id."""
    from datetime import UTC, datetime

    from tenancy.dataops.retired import RetiredIncarnation, retire_backups

    assert tenantctl(cli_project, "backup", "acme").exit_code == 0
    (record,) = listed(cli_project, "acme")
    live = BackupBucket(s3, bucket=BUCKET, prefix="tenants/dev/acme/qdrant")
    area = BackupBucket(s3, bucket=BUCKET, prefix="tenants/dev/acme/retired")
    owner = RetiredIncarnation("c" * 40, "dev:" + "c" * 40, datetime.now(UTC), 14)
    assert retire_backups(live, area, owner) == [record["id"]]

    (kept,) = listed(cli_project, "acme")
    assert kept["id"] == record["id"] and kept["retired"]["incarnation"] == "c" * 40
    table = runner.invoke(app, ["backups", "acme", "--env", "dev"])
    assert "deleted " in table.stdout and record["id"] in table.stdout
    restored = tenantctl(cli_project, "restore", "acme", "--backup", record["id"], "--into", "beta")
    assert restored.exit_code == 0, restored.output
    assert clusters.beta.all_points("docs") == clusters.acme.all_points("docs")

    expired = json.dumps(owner.to_json() | {"maxAgeDays": 0}).encode()
    area.put_bytes(f"{'c' * 40}/incarnation.json", expired, content_type="application/json")
    refused = tenantctl(cli_project, "restore", "acme", "--backup", record["id"], "--into", "beta", "--json")
    assert refused.exit_code == exit_codes.INVALID_INPUT, refused.output
    assert json.loads(refused.stdout)["error"]["code"] == "backup_expired"
    assert listed(cli_project, "acme") == []
