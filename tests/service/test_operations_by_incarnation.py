"""Operations belong to a tenant incarnation (the commit that created its file), not to a time: a
tenant deleted and re-created within the same second, on either queue backend, shows its new owners
none of the earlier tenant's operations."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import yaml
from typer.testing import CliRunner

import tenancy.cli.operations as cli_operations
from tenancy.automation.contract import Operation, OperationKind, OperationStatus, StackRef
from tenancy.automation.fake_engine import FakeEngine
from tenancy.automation.incarnation import checkout_incarnations
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.automation.redis_queue import RedisOperationQueue
from tenancy.cli import app as cli_app
from tenancy.service.app import create_app
from tenancy.service.core.incarnation import TenantIncarnations
from tenancy.service.core.tenants_repo import Creation
from tests.conftest import PROJECT_DIR
from tests.service.conftest import Issuer, LiveServer, TenantEngine, settings_for, spec, wait_for

SEARCH = "/api/v1/environments/dev/tenants/search"
STACK = StackRef("dev", "search")


@pytest.fixture(params=["sqlite", "redis"])
def server(request: pytest.FixtureRequest, tmp_path: Path, issuer: Issuer) -> Iterator[LiveServer]:
    if request.param == "redis":
        settings = settings_for(
            tmp_path / "state", issuer, backend="redis", redis_url="redis://unused:6379/0"
        )
        redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        app = create_app(settings, engine=TenantEngine(), redis=redis)
    else:
        app = create_app(settings_for(tmp_path / "state", issuer), engine=TenantEngine())
    with LiveServer(app) as live:
        yield live


def test_a_tenant_recreated_within_the_same_second_sees_none_of_the_earlier_ones_operations(
    server: LiveServer, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every commit of this test carries one and the same time, a little before the operations are
    # queued: the earlier tenant's operations are all "after" the new tenant's creation by the clock.
    date = f"@{int(time.time())} +0000"
    monkeypatch.setenv("GIT_COMMITTER_DATE", date)
    monkeypatch.setenv("GIT_AUTHOR_DATE", date)
    with server.client(issuer.admin_of("search", sub="team-a")) as team_a:
        created = team_a.put(SEARCH, json=spec("search")).json()["operation"]["id"]
        wait_for(team_a, created)
        destroyed = team_a.delete(SEARCH).json()["operation"]["id"]
        wait_for(team_a, destroyed)
    with server.client(issuer.admin_of("search", sub="team-b")) as team_b:
        answer = team_b.put(SEARCH, json=spec("search", owners=["b@team-b.example"]))
        assert answer.status_code == 202, answer.text
        recreated = answer.json()["operation"]["id"]
        wait_for(team_b, recreated)
        listed = [op["id"] for op in team_b.get(f"{SEARCH}/operations").json()["operations"]]
        old = [team_b.get(f"/api/v1/operations/{op}") for op in (created, destroyed)]
        events = team_b.get(f"/api/v1/operations/{created}/events")
        tenant = team_b.get(SEARCH).json()

    history = [c.sha for c in _creations(server)]
    assert len(history) == 2 and _commit_times(server) == {int(date[1:-6])}  # one second for all
    assert listed == [recreated]
    for response in [*old, events]:
        assert response.status_code == 404
        assert response.json()["error"] == {
            "code": "operation_not_found",
            "message": f"there is no operation {response.url.path.split('/')[4]} that you can access",
        }
    assert tenant["lastOperation"]["id"] == recreated and tenant["status"]["phase"] == "ready"
    with server.client(issuer.platform_admin()) as platform:
        everything = [op["id"] for op in platform.get(f"{SEARCH}/operations").json()["operations"]]
        assert platform.get(f"/api/v1/operations/{created}").status_code == 200
    assert everything == [recreated, destroyed, created]  # the platform team still sees everything
    with server.client(issuer.admin_of("search", sub="team-a")) as team_a:  # as does nobody else
        assert team_a.get(f"/api/v1/operations/{created}").status_code == 404


def _creations(server: LiveServer) -> list[Creation]:
    repository = server.app.state.backends.repository
    output = repository._run("log", "--diff-filter=A", "--format=%H %ct", "--", "tenants/dev/search.yaml")
    return [Creation(sha, float(at)) for sha, at in (line.split() for line in output.stdout.splitlines())]


def _commit_times(server: LiveServer) -> set[int]:
    repository = server.app.state.backends.repository
    output = repository._run("log", "--format=%ct", "--", "tenants/dev/search.yaml").stdout
    return {int(line) for line in output.split()}


# --- the queues keep the incarnation ----------------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        sqlite = SqliteOperationQueue(tmp_path / "operations.sqlite3")
        yield sqlite
        sqlite.close()
    else:
        yield RedisOperationQueue(fakeredis.FakeRedis(server=fakeredis.FakeServer()), prefix="test:")


def test_every_queue_backend_records_the_incarnation_an_operation_belongs_to(queue: Any) -> None:
    stamped = queue.submit(STACK, OperationKind.up, spec={}, requested_by="a", incarnation="dev:abc")
    unstamped = queue.submit(STACK, OperationKind.destroy, spec=None, requested_by="cli")
    assert stamped.incarnation == "dev:abc" and unstamped.incarnation is None
    assert queue.get(stamped.id).incarnation == "dev:abc"
    assert [op.incarnation for op in queue.recent(stack=STACK)] == [None, "dev:abc"]
    claimed = queue.claim_next(worker_id="w")
    assert claimed.id == stamped.id and claimed.incarnation == "dev:abc"


def test_a_queue_database_from_before_incarnations_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "operations.sqlite3"
    with sqlite3.connect(path) as db:  # the table as earlier versions created it
        db.execute(
            "CREATE TABLE operations (position INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
            " environment TEXT NOT NULL, tenant TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,"
            " requested_by TEXT NOT NULL, created_at REAL NOT NULL, spec TEXT, started_at REAL,"
            " finished_at REAL, summary TEXT, superseded_by TEXT, claimed_by TEXT, heartbeat_at REAL)"
        )
        db.execute(
            "INSERT INTO operations (id, environment, tenant, kind, status, requested_by, created_at)"
            " VALUES ('old', 'dev', 'search', 'up', 'succeeded', 'x', 1.0)"
        )
    with SqliteOperationQueue(path) as queue:
        assert queue.get("old").incarnation is None
        new = queue.submit(STACK, OperationKind.up, spec={}, requested_by="a", incarnation="dev:abc")
        assert queue.get(new.id).incarnation == "dev:abc"


# --- operations tenantctl queues carry their incarnation too ------------------------------------------


def test_a_tenant_recreated_within_the_same_second_through_the_cli_sees_none_of_the_earlier_ones_operations(
    tmp_path: Path, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tenantctl runs on the service's own queue and tenants checkout (a person's commits there are what
    # merged pull requests are), every commit in one second, as in the service's test above.
    engine = FakeEngine()
    monkeypatch.setattr(cli_operations, "make_engine", lambda settings: engine)
    date = f"@{int(time.time())} +0000"
    monkeypatch.setenv("GIT_COMMITTER_DATE", date)
    monkeypatch.setenv("GIT_AUTHOR_DATE", date)
    state = tmp_path / "state"
    app = create_app(settings_for(state, issuer, workers=0), engine=TenantEngine())
    with LiveServer(app) as server:
        checkout = app.state.backends.repository.root

        def tenantctl(*args: str) -> None:
            result = CliRunner().invoke(
                cli_app,
                [
                    *args,
                    "--env",
                    "dev",
                    "--project",
                    str(PROJECT_DIR),
                    "--tenants",
                    str(checkout / "tenants"),
                    "--state-dir",
                    str(state),
                ],
            )
            assert result.exit_code == 0, result.output

        def commit(message: str) -> None:
            for command in (
                ["add", "-A", "tenants"],
                ["-c", "user.name=P", "-c", "user.email=p@example.com", "commit", "-qm", message],
            ):
                subprocess.run(["git", "-C", str(checkout), *command], check=True)

        file = checkout / "tenants" / "dev" / "search.yaml"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(yaml.safe_dump(spec("search")))
        commit("Create search for team A")
        tenantctl("up", "search")
        file.unlink()
        commit("Delete search")
        tenantctl("destroy", "search", "--yes")
        file.write_text(yaml.safe_dump(spec("search", owners=["b@team-b.example"])))
        commit("Create search for team B")
        tenantctl("up", "search")

        queue = app.state.backends.queue
        ups_and_destroys = queue.recent(stack=STACK)
        with server.client(issuer.admin_of("search", sub="team-b")) as team_b:
            listed = [op["id"] for op in team_b.get(f"{SEARCH}/operations").json()["operations"]]
            hidden = [team_b.get(f"/api/v1/operations/{op.id}").status_code for op in ups_and_destroys[1:]]
        with server.client(issuer.platform_admin()) as platform:
            everything = [op["id"] for op in platform.get(f"{SEARCH}/operations").json()["operations"]]

    creations = [c.sha for c in _creations(server)]
    assert len(creations) == 2 and _commit_times(server) == {int(date[1:-6])}  # one second for all
    assert [op.incarnation for op in ups_and_destroys] == [
        f"dev:{creations[0]}",
        *[f"dev:{creations[1]}"] * 2,
    ]
    assert [op.kind for op in ups_and_destroys] == [OperationKind.up, OperationKind.destroy, OperationKind.up]
    assert listed == [ups_and_destroys[0].id]  # team B sees its own up only
    assert hidden == [404, 404]
    assert everything == [op.id for op in ups_and_destroys]


def test_a_file_not_committed_belongs_to_no_incarnation(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants"
    (tenants / "dev").mkdir(parents=True)
    (tenants / "dev" / "new.yaml").write_text("name: new\n")
    assert checkout_incarnations(tenants, "dev", ["new", "gone"]) == {
        "new": "dev:uncommitted",  # no git repository at all
        "gone": "dev:uncommitted",
    }
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert checkout_incarnations(tenants, "dev", ["new"]) == {"new": "dev:uncommitted"}  # no commit


# --- records from before operations carried an incarnation -------------------------------------------


class _Repository:
    def __init__(self, creation: Creation | None) -> None:
        self._creation = creation

    def creation(self, environment: str, name: str) -> Creation | None:
        return self._creation


def _operation(created_at: float, incarnation: str | None) -> Operation:
    return Operation(
        id=f"{created_at}-{incarnation}",
        stack=STACK,
        kind=OperationKind.up,
        status=OperationStatus.succeeded,
        requested_by="x",
        created_at=created_at,
        incarnation=incarnation,
    )


def test_an_operation_without_an_incarnation_belongs_to_no_tenant_whatever_its_time() -> None:
    now = float(int(time.time()))
    incarnations = TenantIncarnations(_Repository(Creation("abc", now)))  # type: ignore[arg-type]
    operations = [
        _operation(now - 10, "dev:old"),  # an earlier incarnation's, whenever it ran
        _operation(now + 5, "dev:old"),
        _operation(now + 5, "dev:abc"),  # this incarnation's
        _operation(now - 10, "dev:abc"),  # (clocks disagree: the id decides)
        _operation(now + 0.5, None),  # records from before incarnations: read safely, owned by nobody
        _operation(now + 60, None),
    ]
    kept = incarnations.current(operations, STACK)
    assert [(op.created_at - now, op.incarnation) for op in kept] == [(5, "dev:abc"), (-10, "dev:abc")]
    assert incarnations.current(operations, StackRef("dev", "search")) != []
    never = TenantIncarnations(_Repository(None))  # type: ignore[arg-type]
    assert never.current(operations, STACK) == operations  # no file ever: nothing to hide from
