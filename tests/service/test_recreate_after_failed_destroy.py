"""A tenant whose destroy failed still has its stack (``<env>.<name>``, one per name): its resources
and the data in its Qdrant. A tenant created again under the name must not get them. The service
refuses the re-create (409 ``previous_incarnation_not_destroyed``, nothing committed or queued) until
the earlier destroy is retried and succeeds; the workers refuse any operation of a new incarnation on
such a stack, whoever queued it (a merged pull request, ``tenantctl``), and a destroy retried later
sets the backups aside for the incarnation that made them.

Journeys through the real service (uvicorn, JWT, git, SQLite queue, its workers), the Qdrant stand-in
and moto's S3 server, and through ``tenantctl`` on the service's queue and checkout."""

from __future__ import annotations

import json
import subprocess
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
from tenancy.cli import app as cli_app
from tenancy.service.app import create_app
from tests.conftest import PROJECT_DIR
from tests.dataops.conftest import StandinData, s3, s3_endpoint  # noqa: F401 (fixtures)
from tests.dataops.qdrant_standin import ClusterState, qdrant_cluster
from tests.service.conftest import (
    AppFactory,
    Issuer,
    LiveServer,
    TenantEngine,
    create_tenant,
    settings_for,
    spec,
    wait_for,
)

ACME = StackRef("dev", "acme")
BASE = "/api/v1/environments/dev/tenants"


@pytest.fixture
def acme_cluster(s3: Any) -> Iterator[tuple[ClusterState, StandinData]]:  # noqa: F811
    with qdrant_cluster(1) as (acme, urls):
        acme.add_collection("docs", shards=1, replication_factor=1, points=12)
        yield acme, StandinData({ACME: next(iter(urls.values()))}, s3)


def _head(app: FastAPI) -> str:
    return str(app.state.backends.repository._run("rev-parse", "HEAD").stdout.strip())


def test_a_name_whose_destroy_failed_is_created_again_only_once_that_destroy_succeeded(
    make_app: AppFactory,
    serve: Callable[[FastAPI], LiveServer],
    issuer: Issuer,
    acme_cluster: tuple[ClusterState, StandinData],
) -> None:
    _cluster, data = acme_cluster
    app, engine = make_app(data=data)
    create_tenant(app, "acme")
    server = serve(app)
    team_a = server.client(issuer.admin_of("acme", sub="team-a"))
    team_b = server.client(issuer.admin_of("acme", sub="team-b"))
    admin = server.client(issuer.platform_admin(preferred_username="root"))
    (applied,) = team_a.get(f"{BASE}/acme/operations").json()["operations"]
    assert wait_for(team_a, applied["id"])["status"] == "succeeded"

    # Team A deletes the tenant; the automatic backup is taken and set aside, then the destroy fails.
    engine.fail_next(ACME, "namespace tenant-acme is stuck on a finalizer")
    failed = wait_for(team_a, team_a.delete(f"{BASE}/acme").json()["operation"]["id"])
    assert failed["status"] == "failed" and ACME in engine.stacks()

    # Team B creates the name again: refused, naming the field and the way forward; nothing written.
    head, queued = _head(app), len(app.state.backends.queue.recent(stack=ACME))
    refused = team_b.put(f"{BASE}/acme", json=spec("acme"), headers={"If-None-Match": "*"})
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "previous_incarnation_not_destroyed"
    reason = "the earlier tenant named acme is not destroyed yet"
    assert error["details"] == [{"field": "name", "reason": reason}]
    assert failed["id"] in error["message"] and "DELETE acme again" in error["message"]
    assert "?force=true" in error["message"]
    assert (_head(app), len(app.state.backends.queue.recent(stack=ACME))) == (head, queued)
    assert [call.kind for call in engine.calls_for(ACME)] == [OperationKind.up, OperationKind.destroy]

    # A platform-admin retries the destroy; once it has succeeded, the name is free.
    retried = admin.delete(f"{BASE}/acme?force=true")
    assert retried.status_code == 202, retried.text
    assert wait_for(admin, retried.json()["operation"]["id"])["status"] == "succeeded"
    assert ACME not in engine.stacks()
    kept = admin.get(f"{BASE}/acme/qdrant/snapshots").json()["backups"]
    earlier = app.state.backends.queue.get(failed["id"]).incarnation
    assert kept and all(b["collections"] == ["docs"] for b in kept)  # the earlier tenant's data, kept
    assert {f"dev:{b['retired']['incarnation']}" for b in kept} == {earlier}

    created = team_b.put(f"{BASE}/acme", json=spec("acme"), headers={"If-None-Match": "*"})
    assert created.status_code == 202, created.text
    done = wait_for(team_b, created.json()["operation"]["id"])
    assert done["status"] == "succeeded", done["summary"]
    events = team_b.get(f"/api/v1/operations/{done['id']}/events").text
    assert '"op": "create"' in events or '"op":"create"' in events  # a new stack, not the old one updated
    assert team_b.get(f"{BASE}/acme/qdrant/snapshots").json()["backups"] == []


def test_tenantctl_and_merged_files_cannot_reuse_a_stack_whose_destroy_failed(
    tmp_path: Path, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tenantctl on the service's own queue and checkout: a person's commits there are what merged
    # pull requests are.
    engine = FakeEngine()
    monkeypatch.setattr(cli_operations, "make_engine", lambda settings: engine)
    state = tmp_path / "state"
    app = create_app(settings_for(state, issuer, workers=0), engine=TenantEngine())
    search = StackRef("dev", "search")
    with LiveServer(app):
        checkout = app.state.backends.repository.root
        file = checkout / "tenants" / "dev" / "search.yaml"

        def tenantctl(*args: str) -> Any:
            return CliRunner().invoke(
                cli_app,
                [
                    *args,
                    "--env",
                    "dev",
                    "--json",
                    "--project",
                    str(PROJECT_DIR),
                    "--tenants",
                    str(checkout / "tenants"),
                    "--state-dir",
                    str(state),
                ],
            )

        def commit(message: str) -> None:
            for command in (
                ["add", "-A", "tenants"],
                ["-c", "user.name=P", "-c", "user.email=p@example.com", "commit", "-qm", message],
            ):
                subprocess.run(["git", "-C", str(checkout), *command], check=True)

        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(yaml.safe_dump(spec("search")))
        commit("Create search for team A")
        assert tenantctl("up", "search").exit_code == 0
        file.unlink()
        commit("Delete search")
        engine.fail_next(search, "namespace tenant-search is stuck on a finalizer")
        assert tenantctl("destroy", "search", "--yes").exit_code == 3
        file.write_text(yaml.safe_dump(spec("search", owners=["b@team-b.example"])))
        commit("Create search for team B")

        refused = tenantctl("up", "search")
        assert refused.exit_code == 3, refused.output
        summary = json.loads(refused.stdout)["operation"]["summary"]
        assert summary["code"] == "previous_incarnation_not_destroyed"
        assert "tenantctl destroy search --env dev" in summary["error"]
        assert [call.kind for call in engine.calls_for(search)] == [OperationKind.up, OperationKind.destroy]

        # Retried, the destroy frees the stack (it is the earlier tenant's); then the new one is created.
        assert tenantctl("destroy", "search", "--yes").exit_code == 0
        created = tenantctl("up", "search")
        assert created.exit_code == 0, created.output
    assert [call.kind for call in engine.calls_for(search)] == [
        OperationKind.up,
        OperationKind.destroy,
        OperationKind.destroy,
        OperationKind.up,
    ]
    assert (engine.deployed_spec(search) or {})["owners"] == ["b@team-b.example"]


def _bury(queue: Any, stack: StackRef, incarnation: str | None, count: int = 50) -> None:
    """``count`` previews of the name queued after its failed destroy (a CI job previewing every push of
    a pull request does as much): the destroy is no longer among the stack's last 50 operations."""
    for _ in range(count):
        queue.submit(
            stack, OperationKind.preview, spec=spec(stack.tenant), requested_by="ci", incarnation=incarnation
        )


def test_a_failed_destroy_still_holds_the_name_after_fifty_later_operations(
    make_app: AppFactory,
    serve: Callable[[FastAPI], LiveServer],
    issuer: Issuer,
    acme_cluster: tuple[ClusterState, StandinData],
) -> None:
    """The service looked for the failed destroy among the stack's last 50 operations only: 50 more
    (previews of the name) and the re-create was accepted onto the earlier tenant's stack, and the
    destroy could no longer be retried (DELETE answered tenant_not_found)."""
    _cluster, data = acme_cluster
    app, engine = make_app(data=data)
    create_tenant(app, "acme")
    server = serve(app)
    team_a = server.client(issuer.admin_of("acme", sub="team-a"))
    team_b = server.client(issuer.admin_of("acme", sub="team-b"))
    (applied,) = team_a.get(f"{BASE}/acme/operations").json()["operations"]
    assert wait_for(team_a, applied["id"])["status"] == "succeeded"
    engine.fail_next(ACME, "namespace tenant-acme is stuck on a finalizer")
    failed = wait_for(team_a, team_a.delete(f"{BASE}/acme").json()["operation"]["id"])
    assert failed["status"] == "failed" and ACME in engine.stacks()

    _bury(app.state.backends.queue, ACME, app.state.backends.queue.get(failed["id"]).incarnation)
    refused = team_b.put(f"{BASE}/acme", json=spec("acme"), headers={"If-None-Match": "*"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "previous_incarnation_not_destroyed"
    assert failed["id"] in refused.json()["error"]["message"]


def test_the_workers_refuse_the_earlier_tenant_s_stack_however_many_operations_came_since(
    tmp_path: Path, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers' check read the stack's last 50 operations too: after 50 more, an update of the new
    tenant of the name ran on the earlier tenant's stack, its resources and its Qdrant's data."""
    engine = FakeEngine()
    monkeypatch.setattr(cli_operations, "make_engine", lambda settings: engine)
    state = tmp_path / "state"
    app = create_app(settings_for(state, issuer, workers=0), engine=TenantEngine())
    search = StackRef("dev", "search")
    with LiveServer(app):
        checkout = app.state.backends.repository.root
        file = checkout / "tenants" / "dev" / "search.yaml"

        def tenantctl(*args: str) -> Any:
            return CliRunner().invoke(
                cli_app,
                [
                    *args,
                    "--env",
                    "dev",
                    "--json",
                    "--project",
                    str(PROJECT_DIR),
                    "--tenants",
                    str(checkout / "tenants"),
                    "--state-dir",
                    str(state),
                ],
            )

        def commit(message: str) -> None:
            for command in (
                ["add", "-A", "tenants"],
                ["-c", "user.name=P", "-c", "user.email=p@example.com", "commit", "-qm", message],
            ):
                subprocess.run(["git", "-C", str(checkout), *command], check=True)

        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(yaml.safe_dump(spec("search")))
        commit("Create search for team A")
        assert tenantctl("up", "search").exit_code == 0
        file.unlink()
        commit("Delete search")
        engine.fail_next(search, "namespace tenant-search is stuck on a finalizer")
        assert tenantctl("destroy", "search", "--yes").exit_code == 3
        file.write_text(yaml.safe_dump(spec("search", owners=["b@team-b.example"])))
        commit("Create search for team B")

        created_b = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        _bury(app.state.backends.queue, search, f"dev:{created_b}")  # team B's previews
        refused = tenantctl("up", "search")
        assert refused.exit_code == 3, refused.output
        assert (
            json.loads(refused.stdout)["operation"]["summary"]["code"] == "previous_incarnation_not_destroyed"
        )
    assert [call.kind for call in engine.calls_for(search)] == [OperationKind.up, OperationKind.destroy]
