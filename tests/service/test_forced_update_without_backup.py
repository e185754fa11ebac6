"""An update that needs an automatic backup first (turning the Qdrant off, changing its version)
stops when that backup fails. The way forward is a platform-admin's, explicit and recorded: the
change repeated with ``?force=true`` (the service: 403 for anyone else, audited, a commit trailer,
the operation's events say who forced it) or ``tenantctl up --force`` (run here, you are the
platform). Journeys through the real service (uvicorn, JWT, git, SQLite queue, its worker) and the
CLI, against the Qdrant stand-in and moto's S3 server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from typer.testing import CliRunner

import tenancy.cli.operations as cli_operations
from tenancy.automation.contract import OperationKind, StackRef
from tenancy.automation.fake_engine import FakeEngine
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.cli import app as cli_app
from tests.conftest import PROJECT_DIR
from tests.dataops.conftest import StandinData, s3, s3_endpoint  # noqa: F401 (fixtures)
from tests.dataops.qdrant_standin import ClusterState, qdrant_cluster
from tests.service.conftest import AppFactory, Issuer, LiveServer, create_tenant, spec, wait_for

ACME = StackRef("dev", "acme")
BASE = "/api/v1/environments/dev/tenants"
QDRANT_OFF = {"qdrant": {"enabled": False}}


@pytest.fixture
def acme_cluster(s3: Any) -> Iterator[tuple[ClusterState, StandinData]]:  # noqa: F811
    with qdrant_cluster(1) as (acme, urls):
        acme.add_collection("docs", shards=1, replication_factor=1, points=6)
        acme.corrupt_download = True  # every snapshot disagrees with its checksum: backups fail
        yield acme, StandinData({ACME: next(iter(urls.values()))}, s3)


def _messages(operation: dict[str, Any]) -> list[str]:
    return [event["message"] or "" for event in operation["events"]]


def test_a_platform_admin_forces_an_update_whose_backup_fails_and_it_is_recorded(
    make_app: AppFactory,
    serve: Callable[[FastAPI], LiveServer],
    issuer: Issuer,
    acme_cluster: tuple[ClusterState, StandinData],
) -> None:
    _cluster, data = acme_cluster
    app, engine = make_app(data=data)
    create_tenant(app, "acme")
    server = serve(app)
    owner = server.client(issuer.admin_of("acme"))
    admin = server.client(issuer.platform_admin(sub="root"))
    (applied,) = owner.get(f"{BASE}/acme/operations").json()["operations"]
    assert wait_for(owner, applied["id"])["status"] == "succeeded"

    stopped = wait_for(owner, owner.patch(f"{BASE}/acme", json=QDRANT_OFF).json()["operation"]["id"])
    assert stopped["status"] == "failed" and stopped["summary"]["code"] == "backup_failed"
    assert "a platform-admin may force" in stopped["summary"]["error"]
    assert (engine.deployed_spec(ACME) or {})["qdrant"]["enabled"] is True  # nothing removed

    refused = owner.patch(f"{BASE}/acme", json={}, params={"force": "true"})
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "platform_admin_required"
    assert refused.json()["error"]["details"] == [
        {"field": "force", "reason": "needs the platform-admin role"}
    ]
    assert len(owner.get(f"{BASE}/acme/operations").json()["operations"]) == 2  # nothing queued
    bad = admin.patch(f"{BASE}/acme", json={}, params={"force": "maybe"})
    assert bad.status_code == 422 and "force" in bad.text

    forced = admin.patch(f"{BASE}/acme", json={}, params={"force": "true"})
    assert forced.status_code == 202, forced.text
    done = wait_for(admin, forced.json()["operation"]["id"])
    assert done["status"] == "succeeded", done["summary"]
    assert any("going on without a backup: forced by user:root" in m for m in _messages(done))
    assert not (engine.deployed_spec(ACME) or {}).get("qdrant", {}).get("enabled")  # now off
    audit = [json.loads(line) for line in (app.state.backends.settings.state_dir / "audit.log").open()]
    actions = [
        (entry["action"], entry["outcome"]) for entry in audit if entry["action"].startswith("tenant.patch")
    ]
    assert actions == [
        ("tenant.patch", "accepted"),
        ("tenant.patch.forced", "refused"),
        ("tenant.patch.forced", "accepted"),
    ]

    # A PUT takes it too, and a forced change that commits says so in git.
    whole = {**spec("acme"), "qdrant": {"enabled": False}, "displayName": "ACME"}
    put = admin.put(f"{BASE}/acme", json=whole, params={"force": "true"})
    assert put.status_code == 202, put.text
    message = app.state.backends.repository._run("log", "-1", "--format=%B").stdout
    assert "Forced-without-backup: true" in message and "Requested-by: " in message


def test_tenantctl_up_force_goes_on_without_the_failing_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, acme_cluster: tuple[ClusterState, StandinData]
) -> None:
    _cluster, data = acme_cluster
    engine = FakeEngine()
    engine.deploy(ACME, spec("acme"))  # deployed with its Qdrant on
    monkeypatch.setattr(cli_operations, "make_engine", lambda settings: engine)
    monkeypatch.setattr(cli_operations, "make_tenant_data", lambda engine: data)
    tenants = tmp_path / "tenants"
    (tenants / "dev").mkdir(parents=True)
    (tenants / "dev" / "acme.yaml").write_text(yaml.safe_dump({**spec("acme"), **QDRANT_OFF}))

    def up(*extra: str) -> Any:
        return CliRunner().invoke(
            cli_app,
            [
                "up",
                "acme",
                "--env",
                "dev",
                "--json",
                "--project",
                str(PROJECT_DIR),
                "--tenants",
                str(tenants),
                "--state-dir",
                str(tmp_path / "state"),
                *extra,
            ],
        )

    stopped = up()
    assert stopped.exit_code == 3, stopped.output
    assert json.loads(stopped.stdout)["operation"]["summary"]["code"] == "backup_failed"
    assert [call.kind for call in engine.calls_for(ACME)] == []

    forced = up("--force")
    assert forced.exit_code == 0, forced.output
    assert [call.kind for call in engine.calls_for(ACME)] == [OperationKind.up]
    assert not (engine.deployed_spec(ACME) or {}).get("qdrant", {}).get("enabled")
    queue = SqliteOperationQueue(tmp_path / "state" / "operations.sqlite3")
    try:
        operation_id = json.loads(forced.stdout)["operation"]["id"]
        events = [event.message or "" for event in queue.events(operation_id)]
        found = queue.get(operation_id)
        assert found is not None and found.params == {"force": True}  # the record of it
    finally:
        queue.close()
    assert any("going on without a backup: forced by" in message for message in events)
