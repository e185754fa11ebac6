"""A tenant's first update creates the workers' RoleBinding in its new namespace, then writes there on
the strength of it. Each API server authorizes from its own cache of RoleBindings, which may not hold
a binding created a moment ago, and Pulumi's Kubernetes provider does not retry the 403: the worker runs
such an up again after a pause, a bounded number of times, and only for that refusal. Through the
worker, the engine double and the real tenant program (its RoleBinding's creation is an event of the
run, as the Pulumi engine reports it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tenancy.automation.contract import Operation, OperationKind, OperationStatus, StackRef
from tenancy.automation.errors import EngineFailed
from tenancy.automation.fake_engine import FakeEngine, TenantProgram
from tenancy.automation.queue import SqliteOperationQueue
from tenancy.automation.worker import Worker
from tenancy.builders.contract import NAMESPACES
from tenancy.builders.rbac import WORKER_BINDING
from tenancy.builders.selfservice import WORKER_NAME
from tenancy.spec.yaml_loading import load_yaml

from .conftest import PROJECT_DIR

ACME = StackRef("dev", "acme")
PAUSES = (0.0, 0.0)  # the worker's pauses, none in a test: two more runs at most


def refusal(*, account: str = WORKER_NAME, namespace: str = "tenant-acme") -> str:
    """The API server's RBAC refusal, as the provider reports it and PulumiEngine words the failure."""
    return (
        "pulumi up of stack dev.acme failed: resource tenant-acme/acme-quota was not successfully created "
        f'by the Kubernetes API server: resourcequotas is forbidden: User "system:serviceaccount:'
        f'{NAMESPACES.self_service}:{account}" cannot create resource "resourcequotas" in API group "" '
        f'in the namespace "{namespace}"'
    )


@pytest.fixture
def engine(tmp_path: Path) -> FakeEngine:
    program = TenantProgram(PROJECT_DIR, scratch_dir=tmp_path / "scratch", environ={})
    return FakeEngine(resources=0, program=program)


def run_up(queue: SqliteOperationQueue, engine: FakeEngine) -> Operation:
    spec = load_yaml((PROJECT_DIR / "tenants" / "dev" / "acme.yaml").read_text())
    submitted = queue.submit(ACME, OperationKind.up, spec=spec, requested_by="alice")
    Worker(queue, engine, max_parallel=1, rbac_settle_pauses=PAUSES).run_until_idle()
    finished = queue.get(submitted.id)
    assert finished is not None
    return finished


def warnings(queue: SqliteOperationQueue, operation: Operation) -> list[str]:
    return [
        event.message or ""
        for event in queue.events(operation.id)
        if event.kind == "diagnostic" and event.status == "warning"
    ]


def test_the_refusal_names_what_the_programs_fresh_binding_grants(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    """The refusal these tests stage is of the account and namespace the real program's binding names."""
    assert run_up(queue, engine).status is OperationStatus.succeeded
    assert engine.program is not None
    [binding] = [
        r.inputs
        for r in engine.program.runs[-1].declared
        if getattr(r, "kind", None) == "RoleBinding" and r.inputs["metadata"]["name"] == WORKER_BINDING
    ]
    [subject] = binding["subjects"]
    assert (subject["namespace"], subject["name"]) == (NAMESPACES.self_service, WORKER_NAME)
    assert f'in the namespace "{binding["metadata"]["namespace"]}"' in refusal()


@pytest.mark.parametrize("failure", ["raised", "returned"])
def test_a_first_update_refused_right_after_the_workers_binding_is_created_is_run_again(
    queue: SqliteOperationQueue, engine: FakeEngine, failure: str
) -> None:
    """PulumiEngine raises the failure; an engine may also return it (the double's str failure)."""
    engine.fail_next(ACME, EngineFailed(refusal()) if failure == "raised" else refusal())
    operation = run_up(queue, engine)
    assert operation.status is OperationStatus.succeeded, operation.summary
    assert len(engine.calls_for(ACME)) == 2
    assert engine.deployed_spec(ACME) is not None
    [warning] = warnings(queue, operation)
    assert "created their RoleBinding" in warning and "running the update again" in warning


def test_the_runs_again_are_bounded_and_the_refusal_is_reported(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    engine.fail_next(ACME, EngineFailed(refusal()), times=len(PAUSES) + 2)
    operation = run_up(queue, engine)
    assert operation.status is OperationStatus.failed
    assert operation.summary is not None and operation.summary.code == "engine_error"
    assert operation.summary.error == refusal()
    assert len(engine.calls_for(ACME)) == len(PAUSES) + 1
    assert len(warnings(queue, operation)) == len(PAUSES)


@pytest.mark.parametrize(
    ("what", "error"),
    [
        ("another account", refusal(account="someone-else")),
        ("another namespace", refusal(namespace="tenant-initech")),
        ("an admission refusal", 'rolebindings "x" is forbidden: ValidatingAdmissionPolicy denied request'),
        ("another failure", "pulumi up of stack dev.acme failed: quota exceeded"),
    ],
)
def test_other_failures_are_not_run_again(
    queue: SqliteOperationQueue, engine: FakeEngine, what: str, error: Any
) -> None:
    engine.fail_next(ACME, EngineFailed(error))
    operation = run_up(queue, engine)
    assert operation.status is OperationStatus.failed, what
    assert operation.summary is not None and operation.summary.error == error
    assert len(engine.calls_for(ACME)) == 1 and warnings(queue, operation) == []


def test_a_refusal_in_an_update_that_created_no_binding_is_not_run_again(
    queue: SqliteOperationQueue, engine: FakeEngine
) -> None:
    """The namespace and its binding exist from an earlier update: the refusal is not a cache's lag."""
    assert run_up(queue, engine).status is OperationStatus.succeeded
    engine.fail_next(ACME, EngineFailed(refusal()))
    spec = load_yaml((PROJECT_DIR / "tenants" / "dev" / "acme.yaml").read_text())
    changed = queue.submit(ACME, OperationKind.up, spec={**spec, "displayName": "Acme 2"}, requested_by="a")
    Worker(queue, engine, max_parallel=1, rbac_settle_pauses=PAUSES).run_until_idle()
    finished = queue.get(changed.id)
    assert finished is not None and finished.status is OperationStatus.failed
    assert finished.summary is not None and finished.summary.error == refusal()
    assert len(engine.calls_for(ACME)) == 2  # the first update, and this one once
