"""A tenant's stack is never left deployed with its file gone and nothing to destroy it.

Found by an outside review: ``kill -9`` of ``tenantctl serve`` after a DELETE's commit was flushed
but before its destroy was queued left the file gone from git, no destroy queued (the start-up
reconcile left missing files alone), GET and DELETE answering 404, and the name free: the next tenant
of the name would have been given the earlier one's stack, its resources and the data in its Qdrant.

Now the start-up reconcile queues the destroy of a deletion the service committed, and, for a file
removed any other way (a merged pull request), the service refuses a new tenant of the name until its
stack is destroyed, which DELETE queues. The first journey kills real server processes."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tenancy.automation.contract import OperationKind, OperationStatus, StackRef
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.service.core.config import ServiceSettings
from tenancy.service.core.reconcile import RECONCILER
from tenancy.writer_turns import WriterTurns
from tests.service.conftest import (
    AppFactory,
    Issuer,
    LiveServer,
    TenantEngine,
    commit_by_hand,
    spec,
    wait_for,
)
from tests.service.test_crash_safety import git
from tests.service.test_processes import WITHIN_SECONDS, Service, _token

GONE = StackRef("dev", "gone")
URL = "/api/v1/environments/dev/tenants/gone"
UNPROTECTED = {"owners": ["o@example.test"], "plan": "small", "deletionProtection": False}


def _until(condition: Callable[[], bool], seconds: float = WITHIN_SECONDS) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _operations(state_dir: Path, stack: StackRef = GONE) -> list[Any]:
    queue = SqliteOperationQueue(state_dir / "operations.sqlite3")
    try:
        return queue.recent(stack=stack, limit=50)  # newest first
    finally:
        queue.close()


def _remove_by_pull_request(checkout: Path) -> None:
    commit_by_hand(checkout, "tenants/dev/gone.yaml", None, "Remove gone")


def test_a_kill_between_a_deletions_commit_and_its_destroy_queues_the_destroy_on_restart(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    settings = ServiceSettings(state_dir=state)
    first = Service(state, tmp_path / "server.log")
    try:
        first.ready()
        headers = {"Authorization": f"Bearer {_token(settings, 'admin')}"}
        created = httpx.put(f"{first.url}{URL}", json=UNPROTECTED, headers=headers, timeout=30)
        assert created.status_code == 202, created.text
        # Another holder of the queue's writer turn (a worker, the other process) keeps the DELETE
        # waiting between its commit and its destroy's place in the queue; the service dies there.
        turns = WriterTurns(state / "operations.sqlite3")
        descriptor = os.open(turns.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        answers: list[Any] = []

        def delete() -> None:
            try:
                answers.append(httpx.delete(f"{first.url}{URL}", headers=headers, timeout=WITHIN_SECONDS))
            except httpx.HTTPError as error:
                answers.append(error)

        deleting = threading.Thread(target=delete, daemon=True)
        deleting.start()
        repo = settings.tenants_repo
        assert _until(lambda: "Delete tenant dev.gone" in git(repo, "log", "--format=%s", check=False))
        first.stop()  # kill -9 of the whole group
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)
        deleting.join(WITHIN_SECONDS)
        assert answers and not isinstance(answers[0], httpx.Response)  # never answered
    finally:
        first.stop()
    assert [op.kind for op in _operations(state)] == [OperationKind.up]  # no destroy: the window

    second = Service(state, tmp_path / "server.log")
    try:
        second.ready()
        # Process 0 reconciles as it starts; the other may answer /readyz first.
        assert _until(lambda: _operations(state)[0].kind is OperationKind.destroy), _operations(state)
        operations = _operations(state)
        assert operations[0].requested_by == RECONCILER and operations[0].status is OperationStatus.queued
        headers = {"Authorization": f"Bearer {_token(settings, 'someone-else')}"}
        again = httpx.put(f"{second.url}{URL}", json=UNPROTECTED, headers=headers, timeout=30)
        assert again.status_code == 409, again.text
        assert again.json()["error"]["code"] == "previous_incarnation_not_destroyed"
        shown = httpx.get(f"{second.url}{URL}", headers=headers, timeout=30).json()
        assert shown["status"]["phase"] == "deleting"  # readable while its destroy waits, as after any DELETE
    finally:
        second.stop()

    third = Service(state, tmp_path / "server.log")
    try:
        third.ready()
        time.sleep(2)  # time for its reconcile, which must queue nothing more
        assert [op.kind for op in _operations(state)].count(OperationKind.destroy) == 1  # queued once
    finally:
        third.stop()


def test_a_file_removed_outside_the_service_holds_its_name_until_delete_destroys_its_stack(
    tmp_path: Path, make_app: AppFactory, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    engine = TenantEngine()
    first, _ = make_app(state_dir=state, engine=engine)
    with LiveServer(first) as server, server.client(issuer.platform_admin()) as admin:
        assert admin.put(URL, json=spec("gone", deletionProtection=False)).status_code == 202
        assert _until(lambda: _operations(state)[0].status is OperationStatus.succeeded)
    # A merged pull request removes the file: git no longer has it, the stack is still up.
    checkout = first.state.backends.settings.tenants_repo
    _remove_by_pull_request(checkout)

    second, _ = make_app(state_dir=state, engine=engine)
    with caplog.at_level(logging.WARNING, "tenancy.service"), LiveServer(second) as server:
        assert [op.kind for op in _operations(state)] == [OperationKind.up]  # never destroyed unasked
        assert "dev.gone has no file in git but its stack is up" in caplog.text
        other = server.client(issuer.admin_of("gone", sub="newcomer"))
        refused = other.put(URL, json=spec("gone"))
        assert refused.status_code == 409 and refused.json()["error"]["code"] == (
            "previous_incarnation_not_destroyed"
        ), refused.text
        assert "DELETE gone" in refused.json()["error"]["message"]
        admin = server.client(issuer.platform_admin())
        deleted = admin.delete(URL)
        assert deleted.status_code == 202, deleted.text
        assert wait_for(admin, deleted.json()["operation"]["id"])["status"] == "succeeded"
        # Protection came off in an update first (a protected stack cannot be destroyed), then the destroy.
        kinds = [
            (op.kind, (op.spec or {}).get("deletionProtection")) for op in _operations(tmp_path / "state")
        ]
        assert [kind for kind, _ in kinds[:2]] == [OperationKind.destroy, OperationKind.up], kinds
        assert kinds[1][1] is False, kinds
        assert admin.delete(URL).status_code == 404  # destroyed: nothing left to delete
        assert other.put(URL, json=spec("gone")).status_code == 202  # the name is free again


def test_a_protected_stack_whose_file_went_missing_is_destroyed_by_a_platform_admin_only(
    tmp_path: Path, make_app: AppFactory, issuer: Issuer
) -> None:
    """Found by a review of the change above: a file gone by mistake (a bad merge) let a tenant-admin's
    DELETE destroy a stack last applied with deletionProtection on, which with the file there is 409."""
    engine = TenantEngine()
    app, _ = make_app(state_dir=tmp_path / "state", engine=engine)
    with LiveServer(app) as server, server.client(issuer.platform_admin()) as admin:
        created = admin.put(URL, json=spec("gone", deletionProtection=True)).json()["operation"]["id"]
        assert wait_for(admin, created)["status"] == "succeeded"
        _remove_by_pull_request(app.state.backends.settings.tenants_repo)
        tenant_admin = server.client(issuer.admin_of("gone"))
        refused = tenant_admin.delete(URL)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "deletion_protected", (
            refused.text
        )
        assert [op.kind for op in _operations(tmp_path / "state")] == [OperationKind.up]  # nothing queued
        deleted = admin.delete(URL)
        assert deleted.status_code == 202, deleted.text
        assert wait_for(admin, deleted.json()["operation"]["id"])["status"] == "succeeded"


def test_a_stack_destroyed_outside_the_services_queue_frees_the_name(
    tmp_path: Path, make_app: AppFactory, issuer: Issuer
) -> None:
    """Found by a review of the change above: the deploy workflow's sync --prune destroys a removed
    tenant's stack through its own queue, so the service's history still showed it up and refused the
    name for good. The service asks the backend, where the engine can tell."""
    engine = TenantEngine()
    app, _ = make_app(state_dir=tmp_path / "state", engine=engine)
    with LiveServer(app) as server, server.client(issuer.platform_admin()) as admin:
        assert (
            wait_for(admin, admin.put(URL, json=spec("gone")).json()["operation"]["id"])["status"]
            == "succeeded"
        )
        _remove_by_pull_request(app.state.backends.settings.tenants_repo)
        assert admin.put(URL, json=spec("gone")).status_code == 409  # its stack is up
        engine.remove(GONE)  # what sync --prune did, through its own queue
        assert admin.put(URL, json=spec("gone")).status_code == 202
