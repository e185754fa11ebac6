"""Backups deleted tenants left in the live prefix before the retired/ layout: ``tenantctl backups
--migrate-legacy`` moves those git's history attributes safely into their incarnation's folder, leaves
the rest where they are with the reason, and moves nothing more when run again. The CLI as documented,
a git repository of tenant files with known commit times, moto's S3 server."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import tenancy.cli.operations as cli_operations
from tenancy.automation.contract import StackRef
from tenancy.automation.data_operations import tenant_backups, tenant_retired_backups
from tenancy.cli import app as cli_app
from tenancy.dataops.backup import BackupRecord
from tests.dataops.conftest import StandinData

ACME = StackRef("dev", "acme")
DAY = timedelta(days=1)


def _commit(repo: Path, when: datetime, message: str) -> str:
    stamp = f"@{int(when.timestamp())} +0000"
    environment = {**os.environ, "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
    for command in (
        ["add", "-A", "tenants"],
        ["-c", "user.name=P", "-c", "user.email=p@example.com", "commit", "-qm", message],
    ):
        subprocess.run(["git", "-C", str(repo), *command], check=True, env=environment)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    return head.stdout.strip()


def _backup(data: StandinData, backup_id: str, created: datetime) -> None:
    record = BackupRecord(backup_id, created, 1, ("docs",), "0" * 64, (), {})
    data.bucket(ACME).put_bytes(
        f"{backup_id}/manifest.json", json.dumps(record.to_json()).encode(), content_type="application/json"
    )


def test_legacy_backups_move_to_the_incarnation_that_took_them_once_and_only_when_attributable(
    tmp_path: Path, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = StandinData({}, s3)
    monkeypatch.setattr(cli_operations, "make_tenant_data", lambda engine: data)
    repo = tmp_path / "repo"
    file = repo / "tenants" / "dev" / "acme.yaml"
    file.parent.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    t0 = datetime.now(UTC).replace(microsecond=0) - 30 * DAY
    first_spec = {"name": "acme", "owners": ["a@team-a.example"], "plan": "small"}
    file.write_text(
        yaml.safe_dump({**first_spec, "qdrant": {"enabled": True, "snapshots": {"maxAgeDays": 10}}})
    )
    first = _commit(repo, t0, "Create acme for team A")
    file.unlink()
    _commit(repo, t0 + 10 * DAY, "Delete acme")
    file.write_text(
        yaml.safe_dump({**first_spec, "owners": ["b@team-b.example"], "qdrant": {"enabled": True}})
    )
    second = _commit(repo, t0 + 20 * DAY, "Create acme for team B")

    _backup(data, "20261101T000000Z-a00001", t0 + 2 * DAY)  # team A's, scheduled
    _backup(data, "20261101T000000Z-a00002", t0 + 10 * DAY + timedelta(minutes=30))  # A's destroy's
    _backup(data, "20261101T000000Z-b00001", t0 + 20 * DAY + timedelta(minutes=10))  # too near B's start
    _backup(data, "20261101T000000Z-b00002", t0 + 21 * DAY)  # team B's own
    _backup(data, "20261101T000000Z-x00001", t0 - 5 * DAY)  # before any file of the name

    def migrate(*extra: str) -> dict[str, Any]:
        args = ["backups", "acme", "--env", "dev", "--migrate-legacy", "--tenants", str(repo / "tenants")]
        result = CliRunner().invoke(cli_app, [*args, "--json", *extra])
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))

    planned = migrate("--dry-run")
    assert len(tenant_backups(data, ACME)) == 5, "a dry run moves nothing"
    done = migrate()
    assert planned | {"dryRun": False} == done
    assert done["moved"] == {first: ["20261101T000000Z-a00001", "20261101T000000Z-a00002"]}
    assert done["current"] == ["20261101T000000Z-b00002"]
    reasons = {item["id"]: item["reason"] for item in done["unattributed"]}
    assert reasons.keys() == {"20261101T000000Z-x00001", "20261101T000000Z-b00001"}
    assert "before any file of the name" in reasons["20261101T000000Z-x00001"]
    assert f"within 1 hour of the creation of incarnation {second[:12]}" in reasons["20261101T000000Z-b00001"]

    # The current tenant no longer sees team A's backups; they are kept as A's, with A's retention.
    assert sorted(r.id for r in tenant_backups(data, ACME)) == [
        "20261101T000000Z-b00001",
        "20261101T000000Z-b00002",
        "20261101T000000Z-x00001",
    ]
    kept = tenant_retired_backups(data, ACME)
    assert sorted(b.record.id for b in kept) == ["20261101T000000Z-a00001", "20261101T000000Z-a00002"]
    assert {(b.owner.folder, b.owner.incarnation, b.owner.max_age_days) for b in kept} == {
        (first, f"dev:{first}", 10)
    }
    assert {b.owner.retired for b in kept} == {t0 + 10 * DAY}  # when its file was deleted

    again = migrate()
    assert again["moved"] == {} and again["unattributed"] == done["unattributed"], "idempotent"
    assert len(tenant_retired_backups(data, ACME)) == 2

    no_history = CliRunner().invoke(
        cli_app,
        ["backups", "acme", "--env", "dev", "--migrate-legacy", "--tenants", str(tmp_path), "--json"],
    )
    assert no_history.exit_code == 2 and json.loads(no_history.stdout)["error"]["code"] == "invalid_input"
