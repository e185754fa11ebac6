"""Back up, list and restore over HTTP: the real service (uvicorn, JWT, git, SQLite queue, its worker)
-> dataops against the Qdrant stand-in and moto's S3 server -> data verified in the stand-in."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from tenancy.automation.contract import StackRef
from tests.dataops.conftest import StandinData, s3, s3_endpoint  # noqa: F401 (fixtures)
from tests.dataops.qdrant_standin import ClusterState, qdrant_cluster
from tests.service.conftest import AppFactory, Issuer, LiveServer, create_tenant, wait_for

ACME, BETA = StackRef("dev", "acme"), StackRef("dev", "beta")
BASE = "/api/v1/environments/dev/tenants"


@pytest.fixture
def clusters(s3: Any) -> Iterator[tuple[ClusterState, ClusterState, StandinData]]:  # noqa: F811
    with qdrant_cluster(2) as (acme, acme_urls), qdrant_cluster(2) as (beta, beta_urls):
        acme.add_collection("docs", shards=2, replication_factor=2, points=24)
        acme.add_collection("faq", shards=1, replication_factor=1, points=4)
        beta.add_collection("docs", shards=1, replication_factor=1, points=1)
        urls = {ACME: next(iter(acme_urls.values())), BETA: next(iter(beta_urls.values()))}
        yield acme, beta, StandinData(urls, s3)


def test_back_up_list_and_restore_into_another_tenant_over_http(
    make_app: AppFactory,
    serve: Callable[[FastAPI], LiveServer],
    issuer: Issuer,
    clusters: tuple[ClusterState, ClusterState, StandinData],
) -> None:
    acme, beta, data = clusters
    app, _engine = make_app(data=data)
    for name in ("acme", "beta", "gamma"):
        create_tenant(app, name)
    server = serve(app)
    owner = server.client(issuer.admin_of("acme", "beta"))

    accepted = owner.post(f"{BASE}/acme/qdrant/snapshots")
    assert accepted.status_code == 202, accepted.text
    operation = accepted.json()["operation"]
    assert operation["kind"] == "backup" and accepted.headers["Location"].endswith(operation["id"])
    done = wait_for(owner, operation["id"])
    assert done["status"] == "succeeded", (done["summary"], done["events"])
    assert any("stored docs shard" in (e["message"] or "") for e in done["events"]), done["events"]

    listed = owner.get(f"{BASE}/acme/qdrant/snapshots")
    assert listed.status_code == 200, listed.text
    (backup,) = listed.json()["backups"]
    assert backup["collections"] == ["docs", "faq"] and backup["size"] > 0 and len(backup["checksum"]) == 64

    restore = owner.post(
        f"{BASE}/acme/qdrant/restore", json={"backup": backup["id"], "collections": ["docs"], "into": "beta"}
    )
    assert restore.status_code == 202, restore.text
    restored = wait_for(owner, restore.json()["operation"]["id"])
    assert restored["status"] == "succeeded", restored
    assert restored["tenant"] == "beta" and restored["kind"] == "restore"
    assert beta.all_points("docs") == acme.all_points("docs")
    assert "faq" not in beta.collections

    # Refusals: status, code and message.
    unknown = owner.post(f"{BASE}/acme/qdrant/restore", json={"backup": "20990101T000000Z-abcdef"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "backup_not_found")
    foreign = owner.post(f"{BASE}/acme/qdrant/restore", json={"backup": backup["id"], "into": "gamma"})
    assert (foreign.status_code, foreign.json()["error"]["code"]) == (404, "tenant_not_found")
    strict = owner.post(f"{BASE}/acme/qdrant/restore", json={"backup": backup["id"], "extra": 1})
    assert (strict.status_code, strict.json()["error"]["code"]) == (422, "invalid_request")
    viewer = server.client(issuer.viewer_of("acme"))
    assert viewer.get(f"{BASE}/acme/qdrant/snapshots").status_code == 200
    denied = viewer.post(f"{BASE}/acme/qdrant/snapshots")
    assert (denied.status_code, denied.json()["error"]["code"]) == (403, "forbidden")
    outsider = server.client(issuer.admin_of("gamma"))
    hidden = outsider.get(f"{BASE}/acme/qdrant/snapshots")
    assert (hidden.status_code, hidden.json()["error"]["code"]) == (404, "tenant_not_found")


def test_a_restore_is_refused_while_another_operation_runs_on_the_tenant(
    make_app: AppFactory,
    serve: Callable[[FastAPI], LiveServer],
    issuer: Issuer,
    clusters: tuple[ClusterState, ClusterState, StandinData],
) -> None:
    _acme, _beta, data = clusters
    app, engine = make_app(data=data)
    for name in ("acme", "beta"):
        create_tenant(app, name)
    server = serve(app)
    owner = server.client(issuer.admin_of("acme", "beta"))
    backup_op = owner.post(f"{BASE}/acme/qdrant/snapshots").json()["operation"]
    assert wait_for(owner, backup_op["id"])["status"] == "succeeded"
    (backup,) = owner.get(f"{BASE}/acme/qdrant/snapshots").json()["backups"]

    engine.pause()  # beta's update holds half-way: an operation runs on beta
    try:
        update = owner.patch(f"{BASE}/beta", json={"displayName": "Beta"})
        assert update.status_code == 202, update.text
        refused = owner.post(f"{BASE}/acme/qdrant/restore", json={"backup": backup["id"], "into": "beta"})
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "operation_in_progress"
        assert update.json()["operation"]["id"] in error["message"] and "wait for it" in error["message"]
    finally:
        engine.resume()
    assert wait_for(owner, update.json()["operation"]["id"])["status"] == "succeeded"
    again = owner.post(f"{BASE}/acme/qdrant/restore", json={"backup": backup["id"], "into": "beta"})
    assert again.status_code == 202, again.text
    assert wait_for(owner, again.json()["operation"]["id"])["status"] == "succeeded"


def test_backups_are_refused_clearly_without_a_backup_bucket(
    make_app: AppFactory, serve: Callable[[FastAPI], LiveServer], issuer: Issuer
) -> None:
    app, _ = make_app()
    create_tenant(app, "acme")
    server = serve(app)
    answer = server.client(issuer.admin_of("acme")).post(f"{BASE}/acme/qdrant/snapshots")
    assert (answer.status_code, answer.json()["error"]["code"]) == (503, "backups_unavailable")
    assert "TENANCY_SERVICE_BACKUP_BUCKET" in answer.json()["error"]["message"]


def test_a_destroy_whose_backup_fails_is_refused_unless_a_platform_admin_forces_it(
    make_app: AppFactory,
    serve: Callable[[FastAPI], LiveServer],
    issuer: Issuer,
    clusters: tuple[ClusterState, ClusterState, StandinData],
) -> None:
    acme, _beta, data = clusters
    app, engine = make_app(data=data)
    create_tenant(app, "acme")
    server = serve(app)
    owner = server.client(issuer.admin_of("acme"))
    (applied,) = owner.get(f"{BASE}/acme/operations").json()["operations"]  # the start-up reconcile's
    assert wait_for(owner, applied["id"])["status"] == "succeeded"
    acme.corrupt_download = True  # every snapshot now disagrees with its checksum: the backup fails

    deleted = owner.delete(f"{BASE}/acme")
    assert deleted.status_code == 202, deleted.text
    refused = wait_for(owner, deleted.json()["operation"]["id"])
    assert refused["status"] == "failed"
    assert refused["summary"]["code"] == "backup_failed"
    assert (
        "destroy of dev.acme refused: the automatic backup before the destroy failed"
        in (refused["summary"]["error"])
    )
    assert not [call for call in engine.calls_for(ACME) if call.kind.value == "destroy"]

    not_admin = owner.delete(f"{BASE}/acme", params={"force": "true"})
    assert not_admin.status_code == 403, not_admin.text
    assert not_admin.json()["error"]["code"] == "platform_admin_required"
    assert "force" in not_admin.json()["error"]["message"]

    admin = server.client(issuer.platform_admin(preferred_username="root"))
    forced = admin.delete(f"{BASE}/acme", params={"force": "true"})
    assert forced.status_code == 202, forced.text
    done = wait_for(admin, forced.json()["operation"]["id"])
    assert done["status"] == "succeeded", done["summary"]
    assert any("going on without a backup: forced by" in (e["message"] or "") for e in done["events"])
    audit = (app.state.backends.settings.state_dir / "audit.log").read_text()
    assert '"action": "tenant.delete.forced"' in audit or '"action":"tenant.delete.forced"' in audit


def test_tenantctl_backs_up_lists_and_restores_through_the_service(
    make_app: AppFactory,
    serve: Callable[[FastAPI], LiveServer],
    issuer: Issuer,
    clusters: tuple[ClusterState, ClusterState, StandinData],
) -> None:
    """The documented CLI against the real service: tenantctl -> HTTP (JWT) -> queue -> the service's
    worker -> the Qdrant stand-in and moto; progress followed over the operation's event stream."""
    from typer.testing import CliRunner

    from tenancy.cli import app as cli

    acme, beta, data = clusters
    app, _engine = make_app(data=data)
    for name in ("acme", "beta"):
        create_tenant(app, name)
    server = serve(app)
    runner = CliRunner()
    env = {"TENANCY_API_URL": server.url, "TENANCY_TOKEN": issuer.admin_of("acme", "beta")}

    taken = runner.invoke(cli, ["backup", "acme", "--env", "dev"], env=env)
    assert taken.exit_code == 0, taken.output
    assert taken.stdout.startswith("backup of dev.acme succeeded (operation ")
    assert "stored docs shard" in taken.stderr and "recorded: 2 collections" in taken.stderr

    listed = runner.invoke(cli, ["backups", "acme", "--env", "dev", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    (backup,) = json.loads(listed.stdout)["backups"]
    assert backup["collections"] == ["docs", "faq"] and len(backup["checksum"]) == 64
    table = runner.invoke(cli, ["backups", "acme", "--env", "dev"], env=env)
    assert backup["id"] in table.stdout and "docs, faq" in table.stdout

    restored = runner.invoke(
        cli,
        [
            "restore",
            "acme",
            "--env",
            "dev",
            "--backup",
            backup["id"],
            "--collection",
            "docs",
            "--into",
            "beta",
        ],
        env=env,
    )
    assert restored.exit_code == 0, restored.output
    assert restored.stdout.startswith("restore of dev.beta succeeded")
    assert beta.all_points("docs") == acme.all_points("docs") and "faq" not in beta.collections

    refused = runner.invoke(
        cli, ["restore", "acme", "--env", "dev", "--backup", "20990101T000000Z-abcdef", "--json"], env=env
    )
    assert refused.exit_code == 2, refused.output
    assert json.loads(refused.stdout)["error"]["code"] == "backup_not_found"
    viewer = {**env, "TENANCY_TOKEN": issuer.viewer_of("acme")}
    denied = runner.invoke(cli, ["backup", "acme", "--env", "dev"], env=viewer)
    assert denied.exit_code == 2 and denied.stderr.startswith("error: forbidden: ")
    tokenless = runner.invoke(cli, ["backups", "acme", "--env", "dev"], env={**env, "TENANCY_TOKEN": ""})
    assert tokenless.exit_code == 2 and "--token" in tokenless.stderr
