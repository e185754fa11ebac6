"""What git holds is applied even across crashes: a change committed but never queued is queued when
the service starts, and an operation still running when the service stops runs again (after the
stack is recovered) when it starts."""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenancy.automation.contract import OperationKind, OperationStatus, StackRef
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.service.core.reconcile import (
    RunningReconcile,
    queue_changes_never_queued,
    queue_unapplied_changes,
)
from tenancy.service.core.security import Principal
from tenancy.service.core.tenants_repo import GitAuthor, TenantRepository
from tenancy.spec.tenant import parse_tenant
from tests.service.conftest import (
    AppFactory,
    Issuer,
    LiveServer,
    TenantEngine,
    commit_by_hand,
    spec,
    wait_for,
    write_on_first_read,
)

ACME = "/api/v1/environments/dev/tenants/acme"
STACK = StackRef("dev", "acme")


def _acme_document(display_name: str) -> dict[str, Any]:
    """acme's spec named ``display_name``, as an operation carries it (normal form)."""
    return parse_tenant(spec("acme", displayName=display_name), file="tenants/dev/acme.yaml").to_document()


def _ups(app: Any) -> list[Any]:
    return [op for op in app.state.backends.queue.recent(stack=STACK) if op.kind is OperationKind.up]


def test_a_change_committed_but_never_queued_is_queued_on_the_next_start(
    tmp_path: Path, make_app: AppFactory, issuer: Issuer
) -> None:
    state = tmp_path / "shared-state"
    first, _ = make_app(state_dir=state, workers=0)
    with LiveServer(first) as server, server.client(issuer.admin_of("acme")) as client:
        assert client.put(ACME, json=spec("acme")).status_code == 202
    # The process died between the commit and the submit: git has the change, the queue does not.
    changed = spec("acme", displayName="committed, never queued")
    first.state.backends.repository.write(
        "dev", "acme", changed, author=GitAuthor("A", "a@example.com"), message="Update tenant dev.acme"
    )

    second, _ = make_app(state_dir=state, workers=0)
    with LiveServer(second):
        ups = _ups(second)
    assert ups[0].status is OperationStatus.queued and ups[0].requested_by == "tenant-api:reconcile"
    assert ups[0].spec is not None and ups[0].spec["displayName"] == "committed, never queued"

    third, _ = make_app(state_dir=state, workers=0)
    with LiveServer(third):
        assert [op.id for op in _ups(third)] == [op.id for op in ups]  # queued once, not at every start


def test_a_tenant_whose_spec_is_applied_gets_nothing_queued_on_start(
    tmp_path: Path, make_app: AppFactory, issuer: Issuer
) -> None:
    state = tmp_path / "shared-state"
    first, _ = make_app(state_dir=state)
    with LiveServer(first) as server, server.client(issuer.admin_of("acme")) as client:
        wait_for(client, client.put(ACME, json=spec("acme")).json()["operation"]["id"])
    second, _ = make_app(state_dir=state, workers=0)
    with LiveServer(second):
        assert len(_ups(second)) == 1


def test_an_operation_running_at_shutdown_runs_again_after_recovery_on_the_next_start(
    tmp_path: Path, make_app: AppFactory, issuer: Issuer
) -> None:
    state = tmp_path / "shared-state"
    stuck = TenantEngine()
    first, _ = make_app(engine=stuck, state_dir=state, workers=1, shutdown_grace_seconds=0.2)
    stuck.pause()
    try:
        with LiveServer(first) as server, server.client(issuer.admin_of("acme")) as client:
            operation = client.put(ACME, json=spec("acme")).json()["operation"]["id"]
            deadline = time.monotonic() + 5
            while stuck.running(STACK) == 0:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        handed_back = first.state.backends.queue.get(operation)
        assert handed_back.status is OperationStatus.queued
        assert first.state.backends.queue.events(operation)[-1].status == "requeued"
    finally:
        stuck.resume()  # the old process's update winds down; its outcome is not recorded

    second, engine = make_app(state_dir=state, workers=1)
    with LiveServer(second) as server, server.client(issuer.admin_of("acme")) as client:
        finished = wait_for(client, operation)
    assert finished["status"] == "succeeded"
    assert finished["summary"]["recovered"] is True
    assert [call.operation_id for call in engine.calls_for(STACK)] == [operation]


def test_a_failed_start_up_reconcile_logs_the_errors_own_words_without_a_secret(
    make_app: AppFactory, monkeypatch: Any, caplog: Any
) -> None:
    # What the error says is what lets someone fix it; a credential it echoes never reaches the log.
    secret = "s3cr3t-redis-password"
    monkeypatch.setenv("TENANCY_SERVICE_REDIS_PASSWORD", secret)

    def unreachable(*args: Any, **kwargs: Any) -> list[Any]:
        raise ConnectionError(
            f"Error 111 connecting to redis://:{secret}@redis-ha.redis.svc:6379. Connection refused."
        )

    monkeypatch.setattr("tenancy.service.backends.queue_unapplied_changes", unreachable)
    app, _ = make_app(workers=0)
    with caplog.at_level("ERROR", logger="tenancy.service"), LiveServer(app):
        pass
    said = [record.getMessage() for record in caplog.records]
    failed = [message for message in said if "reconciling the tenants repository" in message]
    assert failed == [
        "reconciling the tenants repository with the queue failed: ConnectionError: "
        "Error 111 connecting to redis://:[redacted]@redis-ha.redis.svc:6379. Connection refused."
    ]
    assert secret not in caplog.text


def test_a_file_whose_yaml_alias_contains_itself_is_reported_not_a_crash(
    tmp_path: Path, make_app: AppFactory, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    """A merged pull request whose tenant file holds ``&l {team: *l}``: PyYAML built a dict containing
    itself, so the next start's reconcile died with RecursionError and a PATCH answered 500."""
    state = tmp_path / "shared-state"
    first, _ = make_app(state_dir=state, workers=0)
    with LiveServer(first) as server, server.client(issuer.admin_of("acme")) as client:
        assert client.put(ACME, json=spec("acme")).status_code == 202
        assert client.get(ACME).json()["specProblem"] is None
        checkout = first.state.backends.repository.root
        file = checkout / "tenants" / "dev" / "acme.yaml"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(yaml.safe_dump(spec("acme")) + "labels: &l {team: *l}\n")
        for command in (
            ["reset", "-q"],  # the index as the branch is (the service commits without one)
            ["add", "tenants/dev/acme.yaml"],
            ["-c", "user.name=P", "-c", "user.email=p@example.com", "commit", "-qm", "A recursive alias"],
        ):
            subprocess.run(["git", "-C", str(checkout), *command], check=True)

        patched = client.patch(ACME, json={"displayName": "Acme"})
        assert patched.status_code == 422
        error = patched.json()["error"]
        assert error["code"] == "invalid_spec"
        [detail] = error["details"]
        assert detail["field"] == "(document)"
        assert detail["reason"].startswith("tenants/dev/acme.yaml: line ")
        assert (
            "a YAML alias refers to itself: the node anchored here holds the alias at labels.team"
            in (detail["reason"])
        )
        # Read with what is known (status, ETag for a PUT) and why the spec is {}.
        read = client.get(ACME)
        assert read.status_code == 200
        assert read.json()["spec"] == {}
        assert read.json()["specProblem"].startswith("tenants/dev/acme.yaml is not valid YAML: line ")
        assert "a YAML alias refers to itself" in read.json()["specProblem"]
        assert read.headers["ETag"]

    second, _ = make_app(state_dir=state, workers=0)
    with caplog.at_level(logging.WARNING, logger="tenancy.service"), LiveServer(second):
        assert len(_ups(second)) == 1  # the first PUT's; nothing queued from the broken file
    assert any(
        "tenants/dev/acme.yaml is not valid YAML (line " in record.getMessage()
        and "a YAML alias refers to itself" in record.getMessage()
        for record in caplog.records
    )


def _commit_by_hand(checkout: Path, text: str, message: str) -> None:
    """``tenants/dev/acme.yaml`` as ``text``, committed as a merged pull request would be."""
    commit_by_hand(checkout, "tenants/dev/acme.yaml", text, message)


def test_a_file_whose_yaml_is_not_a_mapping_says_so_on_every_path(
    tmp_path: Path, make_app: AppFactory, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    """Valid YAML that is no mapping (a list, a scalar, an empty file) read as ``spec: {}`` without a
    word: GET now names the file and the reason, PATCH (and a change request's patch) refuse with it,
    DELETE says to PUT, the start's reconcile logs it, and tenantctl validate words it the same."""
    from typer.testing import CliRunner

    from tenancy.cli import app as cli

    state = tmp_path / "shared-state"
    first, _ = make_app(state_dir=state, workers=0)
    holds = {"- a\n- b\n": "holds a list", "just words\n": "holds a string", "": "is empty"}
    with (
        LiveServer(first) as server,
        server.client(issuer.admin_of("acme")) as client,
        server.client(issuer.platform_admin()) as admin,
    ):
        assert client.put(ACME, json=spec("acme")).status_code == 202
        checkout = first.state.backends.repository.root
        for text, held in holds.items():
            _commit_by_hand(checkout, text, f"acme {held}")
            reason = f"a tenant file holds one YAML mapping, this one {held}"

            read = client.get(ACME)
            assert read.status_code == 200 and read.json()["spec"] == {}
            assert read.json()["specProblem"] == f"tenants/dev/acme.yaml is not a tenant document: {reason}"
            assert read.headers["ETag"]

            for patched in (
                client.patch(ACME, json={"displayName": "Acme"}),
                client.patch(ACME, json={"plan": "large"}),  # would need a platform-admin
                client.post(f"{ACME}/change-requests", json={"patch": {"plan": "large"}, "reason": "more"}),
            ):
                assert patched.status_code == 422, patched.text
                error = patched.json()["error"]
                assert error["code"] == "invalid_spec"
                assert error["message"].startswith(
                    "tenants/dev/acme.yaml in the tenants repository is not a tenant document, so a patch "
                )
                assert error["details"] == [
                    {"field": "(document)", "reason": f"tenants/dev/acme.yaml: {reason}"}
                ]

            deleted = admin.delete(ACME)
            assert deleted.status_code == 409 and deleted.json()["error"]["code"] == "deletion_protected"
            assert "is not a tenant document" in deleted.json()["error"]["message"]
            assert "PUT a whole spec with deletionProtection: false" in deleted.json()["error"]["message"]

            tree = tmp_path / f"tree-{len(text)}" / "tenants"
            (tree / "dev").mkdir(parents=True)
            (tree / "dev" / "acme.yaml").write_text(text)
            validated = CliRunner().invoke(cli, ["validate", "--tenants", str(tree)])
            assert validated.exit_code == 2
            assert f"acme.yaml: (file): {reason}" in validated.stderr
        # A whole spec replaces the file (with the ETag read), and reads again; from a tenant-admin it
        # is a change request, as the plan the file had cannot be read.
        _commit_by_hand(checkout, "- a\n", "acme holds a list again")
        etag = client.get(ACME).headers["ETag"]
        filed = client.put(ACME, json=spec("acme"), headers={"If-Match": etag})
        assert filed.status_code == 202 and filed.json()["changeRequest"]["needs"][0]["field"] == "plan"
        assert admin.put(ACME, json=spec("acme"), headers={"If-Match": etag}).status_code == 202
        assert client.get(ACME).json()["specProblem"] is None
        _commit_by_hand(checkout, "- a\n", "acme holds a list once more")

    second, _ = make_app(state_dir=state, workers=0)
    with caplog.at_level(logging.WARNING, logger="tenancy.service"), LiveServer(second):
        assert len(_ups(second)) == 2  # the two PUTs'; nothing queued from the broken file
    assert any(
        "reconcile: tenants/dev/acme.yaml is not a tenant document (a tenant file holds one YAML "
        "mapping, this one holds a list)" in record.getMessage()
        for record in caplog.records
    )


def test_the_start_s_reconcile_holds_each_tenant_so_a_change_committed_meanwhile_is_queued_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process sharing the checkout and the queue commits and queues a change while this one
    starts: the reconcile read the file before that commit, so its update must not be queued after
    that change's (it would supersede it, and the stack would end with the older spec git no longer
    has). It holds the tenant as the service's writes do, so the change waits for it."""
    repository = TenantRepository(tmp_path / "repo")
    repository.ensure()
    queue = SqliteOperationQueue(tmp_path / "queue.sqlite3")
    stack = StackRef("dev", "acme")
    author = GitAuthor("A", "a@example.com")
    document = _acme_document

    # Committed, never queued (a process died between the two).
    repository.write("dev", "acme", document("never queued"), author=author, message="Update")
    newer = document("newer")

    def change() -> None:  # what the service does: commit and queue under the tenant's lock
        with repository.locked(stack.name):
            repository.write("dev", "acme", newer, author=author, message="Update")
            queue.submit(stack, OperationKind.up, spec=newer, requested_by="other-process")

    writer = write_on_first_read(repository, monkeypatch, change, wait=1)
    read = repository.read
    queue_unapplied_changes(repository, queue)
    writer.join(10)

    assert read("dev", "acme") == newer
    queued = [op for op in queue.recent(stack=stack) if op.status is OperationStatus.queued]
    assert [op.spec for op in queued] == [newer]  # the last in line applies what git holds


def test_an_applied_tenant_gets_nothing_queued_on_start_however_many_previews_came_since(
    tmp_path: Path, make_app: AppFactory, issuer: Issuer
) -> None:
    """The start's reconcile looked for the last update among the stack's newest 50 operations only:
    after 60 previews it found none and queued the applied spec again at every start."""
    state = tmp_path / "shared-state"
    first, _ = make_app(state_dir=state)
    queue = first.state.backends.queue
    with LiveServer(first) as server, server.client(issuer.admin_of("acme")) as client:
        wait_for(client, client.put(ACME, json=spec("acme")).json()["operation"]["id"])
        incarnation = queue.recent(stack=STACK, limit=1)[0].incarnation
        for _ in range(60):
            queue.submit(
                STACK, OperationKind.preview, spec=spec("acme"), requested_by="ci", incarnation=incarnation
            )
    second, _ = make_app(state_dir=state, workers=0)
    with LiveServer(second):
        history = second.state.backends.queue.recent(stack=STACK, limit=1000)
    assert len(history) == 61
    assert [op.kind for op in history].count(OperationKind.up) == 1


def test_a_running_service_queues_a_change_it_committed_while_the_queue_was_unreachable(
    make_app: AppFactory, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the replica review: a PATCH committed while Redis was away is answered 503 "not queued",
    and only the next start's reconcile queued it; replicas that keep running never applied what git
    held. The running reconcile queues it (under the tenant's write lock), once."""
    app, _ = make_app(workers=0, reconcile_seconds=0.2)
    backends = app.state.backends
    with LiveServer(app) as server, server.client(issuer.admin_of("acme")) as client:
        assert client.put(ACME, json=spec("acme")).status_code == 202

        def unreachable(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("Error 111 connecting to redis-ha.redis.svc:6379. Connection refused.")

        monkeypatch.setattr(backends.queue, "submit", unreachable)
        monkeypatch.setattr(backends.queue, "submit_in_order", unreachable)
        answer = client.patch(ACME, json={"displayName": "committed while the queue was away"})
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "engine_unavailable"
        monkeypatch.undo()

        deadline = time.monotonic() + 10
        while _ups(app)[0].requested_by != "tenant-api:reconcile":
            assert time.monotonic() < deadline, "the running reconcile never queued the change"
            time.sleep(0.05)
        queued = _ups(app)[0]
        assert queued.spec is not None and queued.spec["displayName"] == "committed while the queue was away"
        time.sleep(0.6)  # three more runs: nothing more to queue
        assert len(_ups(app)) == 2


def test_the_running_reconcile_never_queues_a_failed_update_again(
    make_app: AppFactory, issuer: Issuer
) -> None:
    """A start retries failed updates; a running service must not, or a tenant whose update fails (a
    quota, a bad value the engine refuses) would be retried every few minutes for ever."""
    engine = TenantEngine()
    engine.fail_next(STACK, "quota exceeded")
    app, _ = make_app(engine=engine, workers=1)
    with LiveServer(app) as server, server.client(issuer.admin_of("acme")) as client:
        failed = wait_for(client, client.put(ACME, json=spec("acme")).json()["operation"]["id"])
        assert failed["status"] == "failed"
        assert queue_changes_never_queued(app.state.backends.changes) == []
    assert len(_ups(app)) == 1


def test_the_running_reconcile_reads_the_file_under_the_tenant_s_lock(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The running reconcile finds a change never queued, and before it holds the tenant another writer
    commits and queues a newer one: what it queues, if anything, is read under the lock, so the last
    update in line is what git holds and the newer one is not queued twice."""
    app, _ = make_app(workers=0)
    backends = app.state.backends
    changes, repository, queue = backends.changes, backends.repository, backends.queue
    author = GitAuthor("A", "a@example.com")
    document = _acme_document
    repository.write("dev", "acme", document("never queued"), author=author, message="Update")
    newer = document("newer")
    hold = changes.write_lock.hold

    def writer_first(stack: StackRef) -> Any:
        with hold(stack):  # another writer commits and queues, as the service does, just before
            repository.write("dev", "acme", newer, author=author, message="Update")
            queue.submit(stack, OperationKind.up, spec=newer, requested_by="other-replica")
        return hold(stack)

    monkeypatch.setattr(changes.write_lock, "hold", writer_first)
    assert queue_changes_never_queued(changes) == []
    assert [op.spec for op in _ups(app)] == [newer]


def test_the_running_reconcile_leaves_a_merged_pull_request_to_the_deploy_workflow(
    make_app: AppFactory,
) -> None:
    """Review of the running reconcile: it queued every git change this queue had no update for, so a
    merged pull request was applied by the service as well as by the deploy workflow's own queue,
    every few minutes, fighting over the stack's lock. It queues only what the service (or tenantctl)
    committed; a start still queues everything unapplied, as before."""
    app, _ = make_app(workers=0)
    changes = app.state.backends.changes
    repository = changes.repository
    checkout = repository.root
    repository.write(
        "dev",
        "acme",
        _acme_document("by the service"),
        author=GitAuthor("A", "a@x.example"),
        message="Update",
    )
    assert [op.spec["displayName"] for op in queue_changes_never_queued(changes)] == ["by the service"]
    merged = _acme_document("merged pull request")
    commit_by_hand(checkout, "tenants/dev/acme.yaml", yaml.safe_dump(merged), "Merge pull request #7")
    assert queue_changes_never_queued(changes) == []
    assert queue_unapplied_changes(repository, app.state.backends.queue)  # a start queues it


def test_the_running_reconcile_queues_a_service_deletion_of_a_tenant_it_once_left_alone(
    make_app: AppFactory,
) -> None:
    """Review of the running reconcile: once it had named a stack whose file a pull request removed, it
    skipped the name until a restart, so a later DELETE through the service whose destroy was never
    queued (the process died) was never repaired. It names a removal once, and looks again."""
    app, _ = make_app(workers=0)
    changes = app.state.backends.changes
    changes.stack_exists = lambda stack: True
    repository, author = changes.repository, GitAuthor("A", "a@example.com")
    admin = Principal("root", "root", "root@x.example", "user", platform_admin=True)
    changes.replace(STACK, spec("acme", deletionProtection=False), admin, if_match=None)
    document = repository.read("dev", "acme")
    assert document is not None
    reconcile = RunningReconcile(changes, interval=300, environments=["dev"])
    repository.delete("dev", "acme", author=author, message="Remove acme (pull request)")
    assert reconcile.run() == [] and reconcile.run() == []  # left alone (named in the log once)
    repository.write("dev", "acme", document, author=author, message="Restore acme (pull request)")
    reconcile.run()
    repository.delete("dev", "acme", author=author, message="Delete tenant dev.acme")  # died before queueing
    assert [op.kind for op in reconcile.run()] == [OperationKind.destroy]


def test_the_running_reconcile_ends_early_when_the_service_stops(make_app: AppFactory) -> None:
    """Review of the running reconcile: a run over thousands of tenants kept going after stop, and
    the service closed its queue under it."""
    app, _ = make_app(workers=0)
    changes = app.state.backends.changes
    for index in range(3):
        changes.repository.write(
            "dev", f"t{index}", spec(f"t{index}"), author=GitAuthor("A", "a@x.example"), message="Create"
        )
    looked: list[int] = []

    def stop_after_the_first() -> bool:
        looked.append(1)
        return len(looked) > 1

    assert len(queue_changes_never_queued(changes, stopping=stop_after_the_first)) == 1


def test_the_running_reconcile_looks_at_a_merged_change_once_not_at_every_run(make_app: AppFactory) -> None:
    """Review of the committer check: a tenant last changed by a merged pull request (applied by the
    deploy workflow's own queue) was held, fetched and looked up in git at every run. Found not the
    service's once, it is left alone until its file changes."""
    app, _ = make_app(workers=0)
    changes = app.state.backends.changes
    commit_by_hand(
        changes.repository.root, "tenants/dev/acme.yaml", yaml.safe_dump(_acme_document("merged")), "Merge #8"
    )
    held: list[str] = []
    hold = changes.write_lock.hold

    def counted(stack: StackRef) -> Any:
        held.append(stack.name)
        return hold(stack)

    changes.write_lock.hold = counted
    reconcile = RunningReconcile(changes, interval=300, environments=["dev"])
    assert reconcile.run() == [] and reconcile.run() == []
    assert held == []  # never held: the committer is looked up before the lock, once per version


def test_the_running_reconcile_does_not_ask_the_backend_again_about_a_stack_it_left_alone(
    make_app: AppFactory,
) -> None:
    """Review of the running reconcile: a stack whose file a pull request removed was looked at in full
    at every run (with the Pulumi engine, two `pulumi stack ls` each). Named once, it is skipped until
    its file is back."""
    app, _ = make_app(workers=0)
    changes = app.state.backends.changes
    asked: list[str] = []

    def exists(stack: StackRef) -> bool:
        asked.append(stack.name)
        return True

    changes.stack_exists = exists
    admin = Principal("root", "root", "root@x.example", "user", platform_admin=True)
    changes.replace(STACK, spec("acme", deletionProtection=False), admin, if_match=None)
    changes.repository.delete("dev", "acme", author=GitAuthor("A", "a@x.example"), message="Remove (PR)")
    reconcile = RunningReconcile(changes, interval=300, environments=["dev"])
    reconcile.run()
    asked.clear()
    reconcile.run()
    assert asked == []
