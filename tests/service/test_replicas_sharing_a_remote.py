"""Several replicas, each with its own checkout of one tenants remote: what one replica commits is
readable on the others without them writing first, and an API key made on one works on the others."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import fakeredis
from fastapi import FastAPI

from tenancy.service.app import create_app
from tenancy.service.core.tenants_repo import TenantRepository
from tests.service.conftest import Issuer, LiveServer, TenantEngine, settings_for, spec

NEWCO = "/api/v1/environments/dev/tenants/newco"


def _remote(tmp_path: Path) -> str:
    origin = TenantRepository(tmp_path / "origin")
    origin.ensure()
    remote = tmp_path / "tenants.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(origin.root), str(remote)], check=True)
    return str(remote)


def _replica(tmp_path: Path, name: str, issuer: Issuer, remote: str, redis: Any, **settings: Any) -> FastAPI:
    return create_app(
        settings_for(
            tmp_path / name,
            issuer,
            workers=0,
            git_remote=remote,
            backend="redis",
            redis_url="redis://unused:6379/0",
            **settings,
        ),
        engine=TenantEngine(),
        redis=redis,
    )


def test_a_tenant_created_on_one_replica_is_readable_on_another(
    tmp_path: Path, serve: Any, issuer: Issuer
) -> None:
    remote = _remote(tmp_path)
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())  # keys and queue shared, as in production
    replica_a: LiveServer = serve(_replica(tmp_path, "a", issuer, remote, redis))
    replica_b: LiveServer = serve(_replica(tmp_path, "b", issuer, remote, redis, git_refresh_seconds=0))
    token = issuer.admin_of("newco")
    with replica_b.client(token) as b:
        assert b.get(NEWCO).status_code == 404  # B has read its checkout before the tenant exists
    with replica_a.client(token) as a:
        assert a.put(NEWCO, json=spec("newco")).status_code == 202
        key = a.post("/api/v1/tenants/newco/api-keys", json={"name": "ci"}).json()["key"]
        etag = a.get(NEWCO).json()["etag"]
    with replica_b.client(token) as b:
        read = b.get(NEWCO)
        listed = [t["name"] for t in b.get("/api/v1/tenants").json()["tenants"]]
    assert read.status_code == 200 and read.json()["etag"] == etag
    assert listed == ["newco"]
    with replica_b.client(key) as machine:
        assert machine.get(NEWCO).status_code == 200


def test_a_write_racing_a_merged_pull_request_on_its_file_answers_409_and_readiness_holds(
    tmp_path: Path, serve: Any, issuer: Issuer, monkeypatch: Any
) -> None:
    remote = _remote(tmp_path)
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    replica: LiveServer = serve(_replica(tmp_path, "a", issuer, remote, redis, git_refresh_seconds=0))
    repository = replica.app.state.backends.repository
    with replica.client(issuer.admin_of("newco")) as client:
        assert client.put(NEWCO, json=spec("newco")).status_code == 202
        head = repository.head()
        # A pull request changing the same file is merged after the service read the tenant and before
        # it pushed its own commit: the push is refused, and the rebuilt commit no longer applies.
        person = tmp_path / "person"
        subprocess.run(["git", "clone", "--quiet", remote, str(person)], check=True)
        publish = repository._publish

        def merged_meanwhile(change: Any) -> None:
            file = person / "tenants" / "dev" / "newco.yaml"
            file.write_text(file.read_text() + "displayName: from a pull request\n")
            for command in (
                ["add", "-A"],
                ["-c", "user.name=P", "-c", "user.email=p@example.com", "commit", "-qm", "PR"],
                ["push", "-q", "origin", "HEAD:main"],
            ):
                subprocess.run(["git", "-C", str(person), *command], check=True)
            monkeypatch.setattr(repository, "_publish", publish)  # once
            publish(change)

        monkeypatch.setattr(repository, "_publish", merged_meanwhile)
        answer = client.patch(NEWCO, json={"displayName": "from the API"})
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"] == {
            "code": "conflict_with_repository",
            "message": "dev.newco changed in the tenants repository while this change was being written (a "
            "merged pull request or another replica); nothing was committed or queued: read the tenant "
            "again and repeat the change on top of what it is now",
        }
        assert client.get("/readyz").status_code == 200  # a lost race is no fault of the repository
        read = client.get(NEWCO).json()
        assert read["spec"]["displayName"] == "from a pull request"
        assert repository.head() != head  # the merged commit, and nothing of the refused write
        assert repository.history("dev", "newco")[0].subject == "PR"
        retried = client.patch(
            NEWCO, json={"displayName": "from the API"}, headers={"If-Match": read["etag"]}
        )
        assert retried.status_code == 202, retried.text
