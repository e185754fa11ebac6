"""Restoring a deleted tenant's backups over HTTP: the real service (uvicorn, JWT, git, SQLite queue,
its worker) deletes a tenant (its backups set aside for their retention), the name is created again,
and the old backups are restored by whom the rule allows: a platform-admin, or the new tenant's
admins once a platform-admin handed them over. Data checked in the Qdrant stand-in; the bucket is
moto's S3 server; the CLI runs as documented against the same service."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from tenancy.automation.contract import StackRef
from tests.dataops.conftest import BUCKET, StandinData, s3, s3_endpoint  # noqa: F401 (fixtures)
from tests.dataops.qdrant_standin import ClusterState, qdrant_cluster
from tests.service.conftest import AppFactory, Issuer, LiveServer, create_tenant, spec, wait_for

ACME = StackRef("dev", "acme")
BASE = "/api/v1/environments/dev/tenants"


@pytest.fixture
def acme_cluster(s3: Any) -> Iterator[tuple[ClusterState, StandinData]]:  # noqa: F811
    with qdrant_cluster(2) as (acme, urls):
        acme.add_collection("docs", shards=2, replication_factor=2, points=24)
        yield acme, StandinData({ACME: next(iter(urls.values()))}, s3)


def _code(answer: Any) -> tuple[int, str]:
    return answer.status_code, answer.json()["error"]["code"]


def test_a_deleted_tenant_is_re_created_and_restored_from_its_old_backup(
    make_app: AppFactory,
    serve: Callable[[FastAPI], LiveServer],
    issuer: Issuer,
    acme_cluster: tuple[ClusterState, StandinData],
) -> None:
    from typer.testing import CliRunner

    from tenancy.cli import app as cli

    acme, data = acme_cluster
    before = acme.all_points("docs")
    app, _engine = make_app(data=data)
    create_tenant(app, "acme")
    server = serve(app)
    owner = server.client(issuer.admin_of("acme"))
    admin = server.client(issuer.platform_admin(preferred_username="root"))
    (applied,) = owner.get(f"{BASE}/acme/operations").json()["operations"]  # the start-up reconcile's
    assert wait_for(owner, applied["id"])["status"] == "succeeded"
    taken = wait_for(owner, owner.post(f"{BASE}/acme/qdrant/snapshots").json()["operation"]["id"])
    assert taken["status"] == "succeeded", taken["summary"]
    (backup_id,) = [b["id"] for b in owner.get(f"{BASE}/acme/qdrant/snapshots").json()["backups"]]

    # Delete: the destroy backs up once more and sets every backup aside; the tenant's roles lose them.
    deleted = owner.delete(f"{BASE}/acme")
    assert deleted.status_code == 202, deleted.text
    done = wait_for(owner, deleted.json()["operation"]["id"])
    assert done["status"] == "succeeded", done["summary"]
    assert _code(owner.get(f"{BASE}/acme/qdrant/snapshots")) == (404, "tenant_not_found")
    listed = admin.get(f"{BASE}/acme/qdrant/snapshots")
    assert listed.status_code == 200, listed.text
    old = listed.json()["backups"]
    assert len(old) == 2 and backup_id in {b["id"] for b in old}
    incarnation = old[0]["retired"]["incarnation"]
    assert all(b["retired"]["incarnation"] == incarnation for b in old) and len(incarnation) == 40
    assert all(b["retired"]["expires"] > b["created"] for b in old)

    # The name comes back (its admins re-create it): a new incarnation, with an empty Qdrant.
    created = owner.put(f"{BASE}/acme", json=spec("acme"), headers={"If-None-Match": "*"})
    assert created.status_code == 202, created.text
    assert wait_for(owner, created.json()["operation"]["id"])["status"] == "succeeded"
    with acme.lock:
        acme.collections.clear()
    assert owner.get(f"{BASE}/acme/qdrant/snapshots").json()["backups"] == [], "it starts with none"
    refused = owner.post(f"{BASE}/acme/qdrant/restore", json={"backup": backup_id})
    assert _code(refused) == (403, "backup_not_owned")
    assert "platform-admin may restore it or hand it over" in refused.json()["error"]["message"]
    assert _code(owner.post(f"{BASE}/acme/qdrant/restore", json={"backup": "20990101T000000Z-abcdef"})) == (
        404,
        "backup_not_found",
    )
    handover = f"{BASE}/acme/qdrant/retired/{incarnation}/handover"
    assert _code(owner.post(handover)) == (403, "platform_admin_required")

    # A platform-admin restores the old backup into the new tenant.
    restore = admin.post(f"{BASE}/acme/qdrant/restore", json={"backup": backup_id})
    assert restore.status_code == 202, restore.text
    restored = wait_for(admin, restore.json()["operation"]["id"])
    assert restored["status"] == "succeeded", restored
    assert acme.all_points("docs") == before

    # Or hands the old backups over (tenantctl, as the README shows): the new tenant's admins then
    # list and restore them themselves.
    runner = CliRunner()
    env = {"TENANCY_API_URL": server.url, "TENANCY_TOKEN": issuer.admin_of("acme")}
    as_admin = {**env, "TENANCY_TOKEN": issuer.platform_admin(preferred_username="root")}
    denied = runner.invoke(
        cli, ["backups", "acme", "--env", "dev", "--hand-over", incarnation, "--json"], env=env
    )
    assert denied.exit_code == 2 and json.loads(denied.stdout)["error"]["code"] == "platform_admin_required"
    handed = runner.invoke(
        cli, ["backups", "acme", "--env", "dev", "--hand-over", incarnation, "--json"], env=as_admin
    )
    assert handed.exit_code == 0, handed.output
    (new_incarnation,) = json.loads(handed.stdout)["handedTo"]
    assert new_incarnation.startswith("dev:") and new_incarnation != f"dev:{incarnation}"
    assert {b["id"] for b in owner.get(f"{BASE}/acme/qdrant/snapshots").json()["backups"]} == {
        b["id"] for b in old
    }
    audit = (app.state.backends.settings.state_dir / "audit.log").read_text()
    assert "qdrant.backups.handover" in audit

    # A hand-over of an incarnation the name never had (or has not set aside) is refused, recording
    # nothing; a hand-over can be taken back (and made again).
    unknown = f"{BASE}/acme/qdrant/retired/{'c' * 40}/handover"
    assert _code(admin.post(unknown)) == (404, "backup_not_found")
    assert _code(admin.delete(unknown)) == (404, "backup_not_found")
    retired_keys = data.s3.list_objects_v2(Bucket=BUCKET, Prefix="tenants/dev/acme/retired/")["Contents"]
    assert not [o["Key"] for o in retired_keys if "c" * 40 in o["Key"]]
    # Taken back with tenantctl, as the README shows (the API's DELETE on the hand-over).
    revoke = ["backups", "acme", "--env", "dev", "--revoke-hand-over", incarnation, "--json"]
    not_admin = runner.invoke(cli, revoke, env=env)
    assert (
        not_admin.exit_code == 2
        and json.loads(not_admin.stdout)["error"]["code"] == "platform_admin_required"
    )
    assert owner.get(f"{BASE}/acme/qdrant/snapshots").json()["backups"] != []  # still handed over
    both = runner.invoke(cli, [*revoke, "--hand-over", incarnation], env=as_admin)
    assert both.exit_code == 2 and json.loads(both.stdout)["error"]["code"] == "invalid_input"
    revoked = runner.invoke(cli, revoke, env=as_admin)
    assert revoked.exit_code == 0, revoked.output
    assert json.loads(revoked.stdout) == {"incarnation": incarnation, "handedTo": []}
    again = runner.invoke(cli, revoke[:-1], env=as_admin)  # idempotent, and said in words
    assert again.exit_code == 0 and "is taken back: dev.acme's roles no longer" in again.stdout
    assert _code(owner.delete(handover)) == (403, "platform_admin_required")
    assert owner.get(f"{BASE}/acme/qdrant/snapshots").json()["backups"] == []
    assert _code(owner.post(f"{BASE}/acme/qdrant/restore", json={"backup": backup_id})) == (
        403,
        "backup_not_owned",
    )
    audit = (app.state.backends.settings.state_dir / "audit.log").read_text()
    assert "qdrant.backups.handover.revoke" in audit
    assert admin.post(handover).json()["handedTo"] == [new_incarnation]
    bad = runner.invoke(cli, ["backups", "acme", "--env", "dev", "--hand-over", "../../x"], env=as_admin)
    assert bad.exit_code == 2 and "is not an incarnation" in bad.stderr
    table = runner.invoke(cli, ["backups", "acme", "--env", "dev"], env=env)
    assert table.exit_code == 0, table.output
    assert backup_id in table.stdout and "deleted " in table.stdout
    with acme.lock:
        acme.collections.clear()
    by_cli = runner.invoke(cli, ["restore", "acme", "--env", "dev", "--backup", backup_id], env=env)
    assert by_cli.exit_code == 0, by_cli.output
    assert by_cli.stdout.startswith("restore of dev.acme succeeded")
    assert acme.all_points("docs") == before

    # Past their retention they are refused, and no longer listed.
    key = f"tenants/dev/acme/retired/{incarnation}/incarnation.json"
    record = json.loads(data.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    data.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(record | {"maxAgeDays": 0}).encode())
    expired = runner.invoke(
        cli, ["restore", "acme", "--env", "dev", "--backup", backup_id, "--json"], env=env
    )
    assert expired.exit_code == 2, expired.output
    assert json.loads(expired.stdout)["error"]["code"] == "backup_expired"
    assert owner.get(f"{BASE}/acme/qdrant/snapshots").json()["backups"] == []


def test_a_tenant_that_merely_reuses_a_name_never_sees_the_old_backups(
    make_app: AppFactory,
    serve: Callable[[FastAPI], LiveServer],
    issuer: Issuer,
    acme_cluster: tuple[ClusterState, StandinData],
) -> None:
    _acme, data = acme_cluster
    app, _engine = make_app(data=data)
    create_tenant(app, "acme")
    create_tenant(app, "gamma")
    server = serve(app)
    first = server.client(issuer.admin_of("acme"))
    admin = server.client(issuer.platform_admin())
    (applied,) = first.get(f"{BASE}/acme/operations").json()["operations"]
    assert wait_for(first, applied["id"])["status"] == "succeeded"
    assert wait_for(first, first.delete(f"{BASE}/acme").json()["operation"]["id"])["status"] == "succeeded"
    (old,) = admin.get(f"{BASE}/acme/qdrant/snapshots").json()["backups"]  # the automatic one

    # Someone else is given the name (a platform-admin creates it for them).
    assert admin.put(f"{BASE}/acme", json=spec("acme", owners=["other@else.example"])).status_code == 202
    newcomer = server.client(issuer.admin_of("acme", "gamma"))
    assert newcomer.get(f"{BASE}/acme/qdrant/snapshots").json()["backups"] == []
    for body in ({"backup": old["id"]}, {"backup": old["id"], "into": "gamma"}):
        assert _code(newcomer.post(f"{BASE}/acme/qdrant/restore", json=body)) == (403, "backup_not_owned")
    outsider = server.client(issuer.admin_of("gamma"))
    assert _code(outsider.get(f"{BASE}/acme/qdrant/snapshots")) == (404, "tenant_not_found")
    audit = (app.state.backends.settings.state_dir / "audit.log").read_text()
    assert "backup_not_owned" in audit


def test_who_may_restore_a_deleted_incarnations_backups() -> None:
    from datetime import UTC, datetime

    from tenancy.dataops.retired import RetiredIncarnation
    from tenancy.service.api.routes.qdrant import may_restore_retired
    from tenancy.service.core.security import Principal, Role

    old, new = "dev:" + "1" * 40, "dev:" + "2" * 40
    owner = RetiredIncarnation("1" * 40, old, datetime.now(UTC), 14)
    tenant_admin = Principal("u", "u", None, "user", tenant_roles={"acme": Role.admin})
    platform_admin = Principal("r", "r", None, "user", platform_admin=True)
    assert may_restore_retired(platform_admin, owner, None), "also while no tenant has the name"
    assert may_restore_retired(tenant_admin, owner, old), "a destroy that kept the file: the same incarnation"
    assert not may_restore_retired(tenant_admin, owner, new), "a new incarnation under the name"
    assert not may_restore_retired(tenant_admin, owner, None)
    assert may_restore_retired(
        tenant_admin, RetiredIncarnation("1" * 40, old, owner.retired, 14, handed_to=(new,)), new
    )
    unknown = RetiredIncarnation("op-x", "dev:uncommitted", owner.retired, 14)
    assert not may_restore_retired(tenant_admin, unknown, "dev:uncommitted")


def test_the_service_deletes_kept_backups_past_their_retention_when_it_starts(
    make_app: AppFactory,
    serve: Callable[[FastAPI], LiveServer],
    acme_cluster: tuple[ClusterState, StandinData],
) -> None:
    import time
    from datetime import UTC, datetime, timedelta

    _acme, data = acme_cluster
    folder = f"tenants/dev/acme/retired/{'f' * 40}"
    record = {
        "version": 1,
        "folder": "f" * 40,
        "incarnation": f"dev:{'f' * 40}",
        "retired": (datetime.now(UTC) - timedelta(days=30)).isoformat(),
        "maxAgeDays": 14,
        "operation": "op-1",
        "handedTo": [],
    }
    manifest = {
        "version": 1,
        "id": "20261101T000000Z-abcdef",
        "created": (datetime.now(UTC) - timedelta(days=31)).isoformat(),
        "size": 0,
        "collections": [],
        "checksum": "0" * 64,
        "parameters": {},
        "shards": [],
    }
    data.s3.put_object(Bucket=BUCKET, Key=f"{folder}/incarnation.json", Body=json.dumps(record).encode())
    data.s3.put_object(
        Bucket=BUCKET, Key=f"{folder}/{manifest['id']}/manifest.json", Body=json.dumps(manifest)
    )
    app, _engine = make_app(data=data)
    serve(app)
    deadline = time.monotonic() + 10
    while data.s3.list_objects_v2(Bucket=BUCKET, Prefix="tenants/dev/acme/").get("KeyCount"):
        assert time.monotonic() < deadline, "the sweep at start did not delete the expired backup"
        time.sleep(0.05)
