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
from tenancy.automation.data_operations import retired_area, tenant_backups, tenant_retired_backups
from tenancy.cli import app as cli_app
from tenancy.dataops.backup import BackupRecord
from tenancy.dataops.retired import RetiredIncarnation, retire_backups
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
    assert again["regrouped"] == []
    assert len(tenant_retired_backups(data, ACME)) == 2

    no_history = CliRunner().invoke(
        cli_app,
        ["backups", "acme", "--env", "dev", "--migrate-legacy", "--tenants", str(tmp_path), "--json"],
    )
    assert no_history.exit_code == 2 and json.loads(no_history.stdout)["error"]["code"] == "invalid_input"


def test_an_earlier_tenants_backups_a_later_destroy_set_aside_as_its_own_go_back_to_it(
    tmp_path: Path, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Team A's backups stayed live when A was deleted (before the layout); B, created then, was
    destroyed after the layout existed, and its destroy moved every live backup, A's too, into B's
    folder: B's roles (and a hand-over to B) reached A's data. The migration regroups them."""
    data = StandinData({}, s3)
    monkeypatch.setattr(cli_operations, "make_tenant_data", lambda engine: data)
    repo = tmp_path / "repo"
    file = repo / "tenants" / "dev" / "acme.yaml"
    file.parent.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    t0 = datetime.now(UTC).replace(microsecond=0) - 30 * DAY
    document = {"name": "acme", "owners": ["a@team-a.example"], "plan": "small", "qdrant": {"enabled": True}}
    file.write_text(yaml.safe_dump(document))
    first = _commit(repo, t0, "Create acme for team A")
    file.unlink()
    _commit(repo, t0 + 10 * DAY, "Delete acme")
    file.write_text(yaml.safe_dump({**document, "owners": ["b@team-b.example"]}))
    second = _commit(repo, t0 + 20 * DAY, "Create acme for team B")
    file.unlink()
    _commit(repo, t0 + 25 * DAY, "Delete acme")

    _backup(data, "20261101T000000Z-a00001", t0 + 2 * DAY)
    _backup(data, "20261101T000000Z-b00001", t0 + 22 * DAY)
    area = retired_area(data, ACME)
    destroyed = RetiredIncarnation(second, f"dev:{second}", t0 + 25 * DAY, 14, operation="op-b")
    assert len(retire_backups(data.bucket(ACME), area, destroyed)) == 2  # B's destroy, after the layout

    args = [
        "backups",
        "acme",
        "--env",
        "dev",
        "--migrate-legacy",
        "--tenants",
        str(repo / "tenants"),
        "--json",
    ]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["regrouped"] == [
        {"from": second, "to": first, "ids": ["20261101T000000Z-a00001"]}
    ]
    assert {b.record.id: b.owner.folder for b in tenant_retired_backups(data, ACME)} == {
        "20261101T000000Z-a00001": first,
        "20261101T000000Z-b00001": second,
    }
    again = CliRunner().invoke(cli_app, args)
    assert again.exit_code == 0 and json.loads(again.stdout)["regrouped"] == []
